//! History rows: read newest first, insert, re-key, prune, erase.
//!
//! Foreign hashes are stored sealed with `plugin.storage.keys` (they can be attacked offline, unlike keyed
//! digests, which need the pepper), and opened when read.

use super::kdf::{KdfParams, PasswordDigest};
use crate::policy::Profile;
use crate::schema::password_history::dsl;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::sealed::Keyring;

pub const KEYED: &str = "keyed";
pub const FOREIGN: &str = "foreign";

/// One earlier password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub kind: String,
    /// Keyed entries: their [`KdfParams`] in stored form; foreign entries: the scheme name.
    pub params: String,
    pub digest: Option<Vec<u8>>,
    pub foreign_hash: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The authenticated context of a sealed foreign hash: it opens only for its own identity.
fn foreign_context(identity_id: &str) -> String {
    format!("password_history.foreign_hash:{identity_id}")
}

/// Opens a stored foreign hash; `None` (with a warning) when no configured key opens it.
fn open_foreign(keyring: &Keyring, identity_id: &str, stored: String) -> Option<String> {
    if stored.starts_with('$') {
        // Imported before hashes were sealed.
        return Some(stored);
    }
    match keyring.open_text(&foreign_context(identity_id), &stored) {
        Ok(hash) => Some(hash),
        Err(error) => {
            tracing::warn!(identity.id = identity_id, error = %error, "imported hash skipped: it does not open");
            None
        }
    }
}

/// An identity's entries, newest first (rank 0 = the current password); foreign hashes opened.
pub fn entries(
    conn: &mut AnyConnection,
    identity_id: &str,
    keyring: &Keyring,
) -> Result<Vec<Entry>, DbError> {
    let mut entries = stored_entries(conn, identity_id)?;
    for entry in &mut entries {
        entry.foreign_hash = entry
            .foreign_hash
            .take()
            .and_then(|h| open_foreign(keyring, identity_id, h));
    }
    Ok(entries)
}

/// The entries as stored, foreign hashes still sealed.
fn stored_entries(conn: &mut AnyConnection, identity_id: &str) -> Result<Vec<Entry>, DbError> {
    type Row = (
        i64,
        String,
        String,
        Option<Vec<u8>>,
        Option<String>,
        NaiveDateTime,
    );
    let rows: Vec<Row> = dsl::password_history
        .filter(dsl::identity_id.eq(identity_id))
        .order((dsl::created_at.desc(), dsl::id.desc()))
        .select((
            dsl::id,
            dsl::kind,
            dsl::params,
            dsl::digest,
            dsl::foreign_hash,
            dsl::created_at,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, kind, params, digest, foreign_hash, created_at)| Entry {
                id,
                kind,
                params,
                digest,
                foreign_hash,
                created_at: created_at.and_utc(),
            },
        )
        .collect())
}

pub fn insert_keyed(
    conn: &mut AnyConnection,
    identity_id: &str,
    params: KdfParams,
    digest: &PasswordDigest,
    created_at: DateTime<Utc>,
) -> Result<(), DbError> {
    diesel::insert_into(dsl::password_history)
        .values((
            dsl::identity_id.eq(identity_id),
            dsl::kind.eq(KEYED),
            dsl::params.eq(params.encode()),
            dsl::digest.eq(Some(digest.as_bytes().to_vec())),
            dsl::foreign_hash.eq(None::<String>),
            dsl::created_at.eq(created_at.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Stores a foreign hash sealed with the newest key of `keyring`.
pub fn insert_foreign(
    conn: &mut AnyConnection,
    identity_id: &str,
    scheme: &str,
    hash: &str,
    created_at: DateTime<Utc>,
    keyring: &Keyring,
) -> Result<(), DbError> {
    let sealed = keyring.seal(&foreign_context(identity_id), hash.as_bytes());
    diesel::insert_into(dsl::password_history)
        .values((
            dsl::identity_id.eq(identity_id),
            dsl::kind.eq(FOREIGN),
            dsl::params.eq(scheme),
            dsl::digest.eq(None::<Vec<u8>>),
            dsl::foreign_hash.eq(Some(sealed)),
            dsl::created_at.eq(created_at.naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Replaces a foreign entry by the keyed digest of the same password; the foreign hash is dropped.
pub fn rekey(
    conn: &mut AnyConnection,
    identity_id: &str,
    entry_id: i64,
    params: KdfParams,
    digest: &PasswordDigest,
) -> Result<(), DbError> {
    diesel::update(
        dsl::password_history
            .filter(dsl::id.eq(entry_id))
            .filter(dsl::identity_id.eq(identity_id))
            .filter(dsl::kind.eq(FOREIGN)),
    )
    .set((
        dsl::kind.eq(KEYED),
        dsl::params.eq(params.encode()),
        dsl::digest.eq(Some(digest.as_bytes().to_vec())),
        dsl::foreign_hash.eq(None::<String>),
    ))
    .execute(conn)?;
    Ok(())
}

/// When each entry stopped being current: now for rank 0, else the time the next newer one was set.
pub fn last_used(entries: &[Entry], now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if i == 0 {
                now
            } else {
                entries[i - 1].created_at
            }
        })
        .collect()
}

/// Deletes the entries the profile no longer needs (beyond the depth and outside the reuse window).
pub fn prune(
    conn: &mut AnyConnection,
    identity_id: &str,
    profile: &Profile,
    now: DateTime<Utc>,
) -> Result<usize, DbError> {
    let all = stored_entries(conn, identity_id)?;
    let used = last_used(&all, now);
    let doomed: Vec<i64> = all
        .iter()
        .zip(used)
        .enumerate()
        .filter(|(rank, (_, last_used_at))| {
            !profile.keeps(u32::try_from(*rank).unwrap_or(u32::MAX), *last_used_at, now)
        })
        .map(|(_, (entry, _))| entry.id)
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(dsl::password_history.filter(dsl::id.eq_any(doomed))).execute(conn)?)
}

pub fn erase(conn: &mut AnyConnection, identity_id: &str) -> Result<usize, DbError> {
    Ok(
        diesel::delete(dsl::password_history.filter(dsl::identity_id.eq(identity_id)))
            .execute(conn)?,
    )
}
