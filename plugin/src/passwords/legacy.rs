//! Passwords whose hash lives in another system until the user's first login (`reclaim import hashes` and
//! Kratos's password migration hook).
//!
//! An imported hash is an ordinary `foreign` history entry ([`Passwords::import_foreign_hash`]) stored under
//! its *holder*: the Kratos identity id when the row named one, else a `legacy:` placeholder identity.
//! `legacy_passwords` maps the login identifier to that holder. When the migration hook brings a matching
//! plaintext, the plaintext is recorded through [`Passwords::record`] for the real identity (a keyed digest
//! in its salt group) and the foreign entry is dropped.

use super::{Passwords, PasswordsError, UNKNOWN_IDENTITY_SALT};
use crate::history::{foreign, store};
use crate::identity::{Identity, IdentityId};
use crate::password::Password;
use crate::schema::legacy_passwords::dsl as l;
use crate::state;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use reclaim_common::db::write_transaction;

/// Prefix of the placeholder identity that holds a hash imported by login identifier.
const PLACEHOLDER: &str = "legacy:";

/// Who an imported hash belongs to: a Kratos identity id (a UUID) or a login identifier (an email...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyIdentifier(String);

impl LegacyIdentifier {
    /// Same limits as an identity id; a UUID is kept in its canonical lower-case form so that it matches the
    /// id Kratos sends.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        IdentityId::parse(value)?;
        match uuid::Uuid::parse_str(value) {
            Ok(uuid) => Ok(Self(uuid.hyphenated().to_string())),
            Err(_) => Ok(Self(value.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_identity_id(&self) -> bool {
        uuid::Uuid::parse_str(&self.0).is_ok()
    }
}

/// The outcome of [`Passwords::import_legacy_hash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyImported {
    New,
    /// The identifier was imported before (and possibly migrated since): nothing changed.
    AlreadyImported,
}

/// The outcome of [`Passwords::migrate_legacy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyMigration {
    /// The password matched the imported hash; the hash is gone and the password is in the history.
    Matched,
    /// No imported hash for this identity, or the password does not match it.
    Refused,
}

impl Passwords {
    /// Imports `hash` (a PHC string) for `identifier`, set at `changed_at`. Importing an identifier a second
    /// time changes nothing.
    pub async fn import_legacy_hash(
        &self,
        identifier: &LegacyIdentifier,
        hash: &str,
        changed_at: DateTime<Utc>,
    ) -> Result<LegacyImported, PasswordsError> {
        foreign::inspect(hash, self.foreign_memory_cap_kib)
            .map_err(PasswordsError::UnsupportedHash)?;
        let key = identifier.as_str().to_string();
        let known = self
            .db
            .run(move |conn| {
                Ok(l::legacy_passwords
                    .find(&key)
                    .select(l::identifier)
                    .first::<String>(conn)
                    .optional()?)
            })
            .await?;
        if known.is_some() {
            return Ok(LegacyImported::AlreadyImported);
        }
        let holder = if identifier.is_identity_id() {
            identifier.as_str().to_string()
        } else {
            format!("{PLACEHOLDER}{}", uuid::Uuid::new_v4())
        };
        let holder_id = IdentityId::parse(&holder).map_err(|e| anyhow::anyhow!(e))?;
        self.import_foreign_hash(&Identity::new(holder_id), hash, changed_at)
            .await?;
        let key = identifier.as_str().to_string();
        let now = self.clock.now();
        self.db
            .run(move |conn| {
                diesel::insert_into(l::legacy_passwords)
                    .values((
                        l::identifier.eq(key),
                        l::holder.eq(holder),
                        l::migrated_at.eq(None::<chrono::NaiveDateTime>),
                        l::created_at.eq(now.naive_utc()),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .await?;
        Ok(LegacyImported::New)
    }

    /// Kratos's password migration hook: does `password` match the hash imported for this identity (by
    /// `identity_id` when given, else by `identifier`)? On a match the password becomes the identity's current
    /// history entry (set when the imported one was) and the imported hash is dropped. Unknown identities cost
    /// one KDF run, like known ones.
    pub async fn migrate_legacy(
        &self,
        identifier: &LegacyIdentifier,
        identity_id: Option<&IdentityId>,
        password: &Password,
    ) -> Result<LegacyMigration, PasswordsError> {
        let key = identifier.as_str().to_string();
        let by_id = identity_id.map(|id| id.as_str().to_string());
        let keyring = self.keyring.clone();
        let found = self
            .db
            .run(move |conn| {
                let pending = l::legacy_passwords.filter(l::migrated_at.is_null());
                let mut row: Option<(String, String)> = match &by_id {
                    Some(id) => pending
                        .filter(l::holder.eq(id))
                        .select((l::identifier, l::holder))
                        .first(conn)
                        .optional()?,
                    None => None,
                };
                if row.is_none() {
                    row = pending
                        .filter(l::identifier.eq(&key))
                        .select((l::identifier, l::holder))
                        .first(conn)
                        .optional()?;
                }
                let Some((identifier, holder)) = row else {
                    return Ok(None);
                };
                let foreign: Vec<store::Entry> = store::entries(conn, &holder, &keyring)?
                    .into_iter()
                    .filter(|e| e.kind == store::FOREIGN && e.foreign_hash.is_some())
                    .collect();
                Ok(Some((identifier, holder, foreign)))
            })
            .await?;
        let Some((identifier, holder, entries)) = found.filter(|(_, _, e)| !e.is_empty()) else {
            self.kdf
                .digest(password, &UNKNOWN_IDENTITY_SALT, self.kdf.params())
                .await?;
            return Ok(LegacyMigration::Refused);
        };
        let mut matched = None;
        for entry in entries {
            let Some(hash) = entry.foreign_hash.clone() else {
                continue;
            };
            let candidate = password.clone();
            if self
                .kdf
                .run(move || foreign::verify(&hash, candidate.expose().as_bytes()))
                .await?
            {
                matched = Some(entry);
                break;
            }
        }
        let Some(entry) = matched else {
            tracing::info!(identity.id = %holder, "legacy password did not match");
            return Ok(LegacyMigration::Refused);
        };
        let placeholder = holder.starts_with(PLACEHOLDER);
        let target = match identity_id {
            Some(id) => Some(id.clone()),
            None if !placeholder => {
                Some(IdentityId::parse(&holder).map_err(|e| anyhow::anyhow!(e))?)
            }
            None => None,
        };
        if let Some(target) = &target {
            self.record_unchanged(&Identity::new(target.clone()), password, entry.created_at)
                .await?;
        } else {
            tracing::warn!(
                "legacy password matched without an identity id: no history seeded (send identity_id)"
            );
        }
        let entry_id = entry.id;
        let dropped_holder = holder.clone();
        let clock = self.clock.clone();
        self.db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    use crate::schema::password_history::dsl as h;
                    diesel::delete(
                        h::password_history
                            .filter(h::id.eq(entry_id))
                            .filter(h::identity_id.eq(&dropped_holder)),
                    )
                    .execute(c)?;
                    if placeholder {
                        store::erase(c, &dropped_holder)?;
                        state::erase(c, &dropped_holder)?;
                    }
                    diesel::update(l::legacy_passwords.find(&identifier))
                        .set(l::migrated_at.eq(Some(clock.now().naive_utc())))
                        .execute(c)?;
                    Ok(())
                })
            })
            .await?;
        tracing::info!(
            identity.id = target.as_ref().map_or(holder.as_str(), |t| t.as_str()),
            "legacy password migrated into the history"
        );
        Ok(LegacyMigration::Matched)
    }
}
