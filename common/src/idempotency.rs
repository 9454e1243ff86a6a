//! Remembered answers to requests that carry an idempotency key (`Idempotency-Key`, Kratos's
//! `Ory-Webhook-Trigger-ID`, a courier message id), so that a retry gets the first answer and changes nothing.

use crate::db::{AnyConnection, DbError};
use crate::schema::idempotency_keys::dsl;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

/// What was answered the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub status_code: u16,
    pub response_body: String,
    /// False when the same key came with a different request body: the caller reused a key by mistake.
    pub same_request: bool,
}

/// Digest of a request body, to tell a true retry from a reused key.
pub fn request_digest(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// The answer stored for `(scope, key)`, if any.
pub fn lookup(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_digest: &[u8],
) -> Result<Option<Remembered>, DbError> {
    let row: Option<(Vec<u8>, i32, String)> = dsl::idempotency_keys
        .filter(dsl::scope.eq(scope))
        .filter(dsl::key.eq(key))
        .select((dsl::request_digest, dsl::status_code, dsl::response_body))
        .first(conn)
        .optional()?;
    Ok(row.map(|(digest, status, body)| Remembered {
        status_code: u16::try_from(status).unwrap_or(500),
        response_body: body,
        same_request: crate::secret::constant_time_eq(&digest, request_digest),
    }))
}

/// Stores the answer; call it in the same transaction as the change it describes. Returns false when another
/// request stored one first (the caller should then answer with [`lookup`]'s result).
pub fn remember(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    request_digest: &[u8],
    status_code: u16,
    response_body: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    let row = (
        dsl::scope.eq(scope),
        dsl::key.eq(key),
        dsl::request_digest.eq(request_digest),
        dsl::status_code.eq(i32::from(status_code)),
        dsl::response_body.eq(response_body),
        dsl::created_at.eq(now),
    );
    let inserted = crate::per_backend!(conn, |c| diesel::insert_into(dsl::idempotency_keys)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Forgets answers older than `before`.
pub fn prune(conn: &mut AnyConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::delete(dsl::idempotency_keys.filter(dsl::created_at.lt(before))).execute(conn)?)
}
