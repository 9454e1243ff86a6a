//! The verification tables. Every change of a verification is a compare-and-set on its counters, so two
//! processes racing on one verification (on PostgreSQL, where transactions run concurrently) cannot both
//! act on the same state: the loser sees zero rows changed and starts over from the new state.

use crate::schema::{gateway_verification_sends, gateway_verifications};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = gateway_verifications)]
pub struct VerificationRow {
    pub id: String,
    pub purpose: String,
    pub channel: String,
    pub destination: String,
    pub locale: String,
    pub kind: String,
    pub secret_digest: String,
    pub secret_sealed: String,
    /// JSON array of the digests of links that a resend replaced.
    pub superseded_digests: String,
    pub link_url: Option<String>,
    pub identity_id: Option<String>,
    pub known: bool,
    pub status: String,
    pub checks: i32,
    pub sends: i32,
    pub last_sent_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = gateway_verification_sends)]
pub struct SendRow {
    pub verification_id: String,
    pub number: i32,
    pub channel: String,
    pub message_id: Option<String>,
    pub created_at: NaiveDateTime,
}

pub fn insert(conn: &mut AnyConnection, row: &VerificationRow) -> Result<(), DbError> {
    diesel::insert_into(gateway_verifications::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: &str) -> Result<Option<VerificationRow>, DbError> {
    Ok(gateway_verifications::table
        .find(id)
        .select(VerificationRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn insert_send(conn: &mut AnyConnection, send: &SendRow) -> Result<(), DbError> {
    diesel::insert_into(gateway_verification_sends::table)
        .values(send)
        .execute(conn)?;
    Ok(())
}

pub fn sends(conn: &mut AnyConnection, id: &str) -> Result<Vec<SendRow>, DbError> {
    use gateway_verification_sends::dsl as s;
    Ok(s::gateway_verification_sends
        .filter(s::verification_id.eq(id))
        .order(s::number.asc())
        .select(SendRow::as_select())
        .load(conn)?)
}

/// What a change writes; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct Change<'a> {
    pub status: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub secret_digest: Option<&'a str>,
    pub secret_sealed: Option<&'a str>,
    pub superseded_digests: Option<&'a str>,
    pub checks: Option<i32>,
    pub sends: Option<i32>,
    pub last_sent_at: Option<NaiveDateTime>,
}

#[derive(AsChangeset)]
#[diesel(table_name = gateway_verifications)]
struct ChangeSet<'a> {
    status: Option<&'a str>,
    channel: Option<&'a str>,
    secret_digest: Option<&'a str>,
    secret_sealed: Option<&'a str>,
    superseded_digests: Option<&'a str>,
    checks: Option<i32>,
    sends: Option<i32>,
    last_sent_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

/// Applies `change` if the row still is as `seen` left it (same status, checks and sends). Returns whether
/// it did.
pub fn change_if_unchanged(
    conn: &mut AnyConnection,
    seen: &VerificationRow,
    change: Change<'_>,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    use gateway_verifications::dsl as v;
    let changed = diesel::update(
        v::gateway_verifications.filter(
            v::id
                .eq(&seen.id)
                .and(v::status.eq(&seen.status))
                .and(v::checks.eq(seen.checks))
                .and(v::sends.eq(seen.sends)),
        ),
    )
    .set(ChangeSet {
        status: change.status,
        channel: change.channel,
        secret_digest: change.secret_digest,
        secret_sealed: change.secret_sealed,
        superseded_digests: change.superseded_digests,
        checks: change.checks,
        sends: change.sends,
        last_sent_at: change.last_sent_at,
        updated_at: now,
    })
    .execute(conn)?;
    Ok(changed == 1)
}

/// Deletes verifications (and their sends) that expired before `before`.
pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    use gateway_verifications::dsl as v;
    let ids: Vec<String> = v::gateway_verifications
        .filter(v::expires_at.lt(before))
        .select(v::id)
        .load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::delete(
        gateway_verification_sends::table
            .filter(gateway_verification_sends::verification_id.eq_any(&ids)),
    )
    .execute(conn)?;
    Ok(diesel::delete(v::gateway_verifications.filter(v::id.eq_any(&ids))).execute(conn)?)
}
