//! The `notices` table: insert once per dedupe key, take due rows with a lease, record each outcome.

use crate::schema::notices::{self, dsl};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = notices)]
pub struct NoticeRow {
    pub id: String,
    pub identity_id: String,
    pub kind: String,
    pub dedupe_key: String,
    pub channel: String,
    pub recipient: String,
    pub locale: String,
    pub data: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub gateway_message_id: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

pub(crate) const PENDING: &str = "pending";
pub(crate) const SENT: &str = "sent";
pub(crate) const FAILED: &str = "failed";

/// The parts of a new notice that vary.
pub(crate) struct NewNotice<'a> {
    pub identity_id: &'a str,
    pub kind: &'static str,
    pub dedupe_key: String,
    pub channel: &'static str,
    pub recipient: String,
    pub locale: &'static str,
    pub data: serde_json::Value,
}

impl NoticeRow {
    pub(crate) fn pending(new: NewNotice<'_>, now: DateTime<Utc>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            identity_id: new.identity_id.to_string(),
            kind: new.kind.to_string(),
            dedupe_key: new.dedupe_key,
            channel: new.channel.to_string(),
            recipient: new.recipient,
            locale: new.locale.to_string(),
            data: new.data.to_string(),
            status: PENDING.to_string(),
            attempts: 0,
            next_attempt_at: now.naive_utc(),
            last_error: None,
            gateway_message_id: None,
            created_at: now.naive_utc(),
            sent_at: None,
        }
    }
}

/// Inserts `notice` unless one with its dedupe key exists; true when it was inserted.
pub(crate) fn insert_new(c: &mut AnyConnection, notice: &NoticeRow) -> Result<bool, DbError> {
    let inserted = reclaim_common::per_backend!(&mut *c, |c| diesel::insert_into(dsl::notices)
        .values(notice)
        .on_conflict(dsl::dedupe_key)
        .do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Takes up to `limit` pending notices due at `now`: each is leased (its next attempt pushed to `lease_until`
/// and its attempts counted) by a compare-and-set on the time it was due, so two workers never take the same
/// row at once. A worker that dies holding one loses the lease and another takes it after `lease_until`.
pub(crate) fn take_due(
    c: &mut AnyConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<NoticeRow>, DbError> {
    let due: Vec<NoticeRow> = dsl::notices
        .filter(dsl::status.eq(PENDING))
        .filter(dsl::next_attempt_at.le(now.naive_utc()))
        .order(dsl::next_attempt_at.asc())
        .limit(limit)
        .select(NoticeRow::as_select())
        .load(c)?;
    let mut taken = Vec::with_capacity(due.len());
    for mut notice in due {
        let updated = diesel::update(
            dsl::notices
                .find(&notice.id)
                .filter(dsl::status.eq(PENDING))
                .filter(dsl::next_attempt_at.eq(notice.next_attempt_at)),
        )
        .set((
            dsl::next_attempt_at.eq(lease_until.naive_utc()),
            dsl::attempts.eq(dsl::attempts + 1),
        ))
        .execute(c)?;
        if updated == 1 {
            notice.attempts += 1;
            notice.next_attempt_at = lease_until.naive_utc();
            taken.push(notice);
        }
    }
    Ok(taken)
}

/// The gateway accepted it: sent, with the gateway's message id; the address is kept masked only.
pub(crate) fn mark_sent(
    c: &mut AnyConnection,
    notice: &NoticeRow,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    diesel::update(dsl::notices.find(&notice.id))
        .set((
            dsl::status.eq(SENT),
            dsl::gateway_message_id.eq(message_id),
            dsl::recipient.eq(reclaim_common::secret::mask_address(&notice.recipient)),
            dsl::sent_at.eq(now.naive_utc()),
            dsl::last_error.eq(None::<String>),
        ))
        .execute(c)?;
    Ok(())
}

/// Not now: try again after `wait`.
pub(crate) fn retry_later(
    c: &mut AnyConnection,
    notice: &NoticeRow,
    error: &str,
    now: DateTime<Utc>,
    wait: TimeDelta,
) -> Result<(), DbError> {
    diesel::update(dsl::notices.find(&notice.id))
        .set((
            dsl::next_attempt_at.eq((now + wait).naive_utc()),
            dsl::last_error.eq(error),
        ))
        .execute(c)?;
    Ok(())
}

/// The gateway refused it for good (an address it cannot deliver to): failed, the address masked.
pub(crate) fn mark_failed(
    c: &mut AnyConnection,
    notice: &NoticeRow,
    error: &str,
) -> Result<(), DbError> {
    diesel::update(dsl::notices.find(&notice.id))
        .set((
            dsl::status.eq(FAILED),
            dsl::recipient.eq(reclaim_common::secret::mask_address(&notice.recipient)),
            dsl::last_error.eq(error),
        ))
        .execute(c)?;
    Ok(())
}

/// Every notice of an identity, newest first (tests and support).
pub fn of_identity(c: &mut AnyConnection, identity_id: &str) -> Result<Vec<NoticeRow>, DbError> {
    Ok(dsl::notices
        .filter(dsl::identity_id.eq(identity_id))
        .order(dsl::created_at.desc())
        .select(NoticeRow::as_select())
        .load(c)?)
}

pub(crate) fn erase(c: &mut AnyConnection, identity_id: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::notices.filter(dsl::identity_id.eq(identity_id))).execute(c)?)
}
