//! The `password_states` table: one row per identity with its history salt and the state of its current
//! password (changed, expires, must change and why, grace logins used, profile, contacts).

use crate::history::kdf::SALT_LEN;
use crate::schema::password_states::{self, dsl};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use rand::RngCore;
use reclaim_common::db::{AnyConnection, DbError};

#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset, Identifiable,
)]
#[diesel(table_name = password_states, primary_key(identity_id), treat_none_as_null = true)]
pub struct StateRow {
    pub identity_id: String,
    pub history_salt: Vec<u8>,
    pub profile: Option<String>,
    pub schema_id: Option<String>,
    pub changed_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub must_change_reason: Option<String>,
    pub grace_logins_used: i32,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl StateRow {
    fn fresh(identity_id: &str, now: DateTime<Utc>) -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self {
            identity_id: identity_id.to_string(),
            history_salt: salt,
            profile: None,
            schema_id: None,
            changed_at: None,
            expires_at: None,
            must_change_reason: None,
            grace_logins_used: 0,
            email: None,
            phone: None,
            created_at: now.naive_utc(),
            updated_at: now.naive_utc(),
        }
    }
}

pub fn find(conn: &mut AnyConnection, identity_id: &str) -> Result<Option<StateRow>, DbError> {
    Ok(dsl::password_states
        .find(identity_id)
        .select(StateRow::as_select())
        .first(conn)
        .optional()?)
}

/// The identity's row for a read-modify-write, locked until the transaction ends, so that no concurrent
/// change (a grace login, a compromise mark) is overwritten by a write of stale columns. PostgreSQL locks the
/// row (`FOR UPDATE`); on SQLite the caller's [`write_transaction`](reclaim_common::db::write_transaction)
/// already holds the database's write lock.
pub fn find_for_update(
    conn: &mut AnyConnection,
    identity_id: &str,
) -> Result<Option<StateRow>, DbError> {
    let query = dsl::password_states.find(identity_id);
    Ok(match conn {
        AnyConnection::Postgresql(c) => query
            .select(StateRow::as_select())
            .for_update()
            .first(c)
            .optional()?,
        AnyConnection::Sqlite(c) => query.select(StateRow::as_select()).first(c).optional()?,
    })
}

/// The identity's row, locked as by [`find_for_update`], created (with a new random history salt) if it does
/// not exist yet. Safe under concurrency: a row inserted by another request first is the one returned.
pub fn ensure(
    conn: &mut AnyConnection,
    identity_id: &str,
    now: DateTime<Utc>,
) -> Result<StateRow, DbError> {
    if let Some(row) = find_for_update(conn, identity_id)? {
        return Ok(row);
    }
    let fresh = StateRow::fresh(identity_id, now);
    reclaim_common::per_backend!(&mut *conn, |c| diesel::insert_into(dsl::password_states)
        .values(&fresh)
        .on_conflict_do_nothing()
        .execute(c))?;
    find_for_update(conn, identity_id)?.ok_or(DbError::Query(diesel::result::Error::NotFound))
}

pub fn save(conn: &mut AnyConnection, row: &StateRow) -> Result<(), DbError> {
    diesel::update(dsl::password_states.find(&row.identity_id))
        .set(row)
        .execute(conn)?;
    Ok(())
}

pub fn erase(conn: &mut AnyConnection, identity_id: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::password_states.find(identity_id)).execute(conn)?)
}
