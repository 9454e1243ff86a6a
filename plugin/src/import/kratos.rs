//! `reclaim import kratos`: walks Kratos's admin identity list page by page and stores each identity's current
//! password hash as its first history entry (sealed with `plugin.storage.keys`), so that the password in use
//! when Reclaim was wired in counts as reused from the first change on, without waiting for the identity's
//! first hook call.
//!
//! Idempotent: an identity the plugin already holds history for is skipped, so a rerun imports nothing twice.
//! Resumable: once a page is imported the token of the next one is saved (`import_checkpoints`), so a run that
//! stopped (Ctrl-C, a crash, Kratos failing) goes on from the first page it had not finished; a restart starts
//! from the first page.

use super::checkpoint;
use crate::identity::Identity;
use crate::kratos::admin::{AdminError, KratosAdmin, ListedIdentity};
use crate::kratos::call::identity_of;
use crate::passwords::{Passwords, PasswordsError};
use crate::policy::check_change_time;
use chrono::{DateTime, Utc};
use reclaim_common::db::DbError;
use reclaim_common::settings::KratosSettings;
use reclaim_common::{Db, Settings};
use serde_json::Value;

/// Kratos's own default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 250;

/// How to walk the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KratosImportOptions {
    /// Identities per page, 1..=500 (Kratos's cap).
    pub page_size: u32,
    /// Ignore (and drop) the checkpoint of an earlier run and start from the first page.
    pub restart: bool,
}

impl Default for KratosImportOptions {
    fn default() -> Self {
        Self {
            page_size: DEFAULT_PAGE_SIZE,
            restart: false,
        }
    }
}

/// An identity that was not imported, and why (never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedIdentity {
    pub id: String,
    pub problem: String,
}

/// What a run did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KratosImportSummary {
    /// The run went on from the checkpoint of an earlier one.
    pub resumed: bool,
    pub pages: usize,
    pub imported: usize,
    /// Identities the plugin held history for already.
    pub already_known: usize,
    /// Identities without a password credential, or with one that holds no hash.
    pub without_password: usize,
    pub failed: Vec<FailedIdentity>,
}

impl KratosImportSummary {
    /// Identities looked at.
    pub fn identities(&self) -> usize {
        self.imported + self.already_known + self.without_password + self.failed.len()
    }
}

impl std::fmt::Display for KratosImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {}, already known {}, without password {}, failed {}",
            self.imported,
            self.already_known,
            self.without_password,
            self.failed.len()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KratosImportError {
    #[error("plugin.kratos.admin_url is not set: point it at Kratos's admin API (e.g. http://kratos:4434)")]
    NoAdminUrl,
    #[error("plugin.kratos.admin_url is not usable: {0}")]
    BadAdminUrl(String),
    #[error("Kratos's admin API at {url} (plugin.kratos.admin_url) is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Kratos's admin API at {url} refused the request ({status}): check plugin.kratos.admin_token")]
    Refused { url: String, status: u16 },
    #[error("Kratos's admin API answered {status} for a page; run the import again to go on from that page")]
    Status { status: u16 },
    #[error("Kratos's admin API answered a page that is not an identity list: {0}")]
    Malformed(String),
    #[error("the password store failed: {0}")]
    Passwords(#[from] PasswordsError),
    #[error("the checkpoint could not be read or saved: {0}")]
    Checkpoint(#[from] DbError),
}

/// What became of one identity.
enum Outcome {
    Imported,
    AlreadyKnown,
    WithoutPassword,
    Failed(String),
}

/// One import run; [`KratosImport::summary`] tells what it did, also after an error.
pub struct KratosImport {
    passwords: Passwords,
    admin: KratosAdmin,
    settings: KratosSettings,
    options: KratosImportOptions,
    /// Names the Kratos a checkpoint belongs to, so that a token is never sent to another one.
    source: String,
    summary: KratosImportSummary,
}

impl KratosImport {
    /// An import from the Kratos at `plugin.kratos.admin_url`.
    pub fn new(
        passwords: Passwords,
        settings: &KratosSettings,
        options: KratosImportOptions,
    ) -> Result<Self, KratosImportError> {
        let admin = KratosAdmin::from_settings(settings)
            .map_err(|e| KratosImportError::BadAdminUrl(e.to_string()))?
            .ok_or(KratosImportError::NoAdminUrl)?;
        let source = format!("kratos:{}", admin.base_url());
        Ok(Self {
            passwords,
            admin,
            settings: settings.clone(),
            options,
            source,
            summary: KratosImportSummary::default(),
        })
    }

    pub fn summary(&self) -> &KratosImportSummary {
        &self.summary
    }

    /// Imports every page from the checkpoint (or the first page) to the last, calling `progress` after each
    /// identity. On an error the checkpoint names the first page not fully imported.
    pub async fn run(
        &mut self,
        mut progress: impl FnMut(&KratosImportSummary),
    ) -> Result<(), KratosImportError> {
        let source = self.source.clone();
        let restart = self.options.restart;
        let mut token = self
            .passwords
            .db()
            .run(move |conn| {
                if restart {
                    checkpoint::clear(conn, &source)?;
                    Ok(None)
                } else {
                    checkpoint::load(conn, &source)
                }
            })
            .await?;
        self.summary.resumed = token.is_some();
        progress(&self.summary);
        loop {
            let page = self
                .admin
                .list_identities(token.as_deref(), self.options.page_size)
                .await
                .map_err(|e| self.admin_error(e))?;
            for listed in page.identities {
                let id = listed.identity.id.clone();
                match self.import_one(listed).await? {
                    Outcome::Imported => self.summary.imported += 1,
                    Outcome::AlreadyKnown => self.summary.already_known += 1,
                    Outcome::WithoutPassword => self.summary.without_password += 1,
                    Outcome::Failed(problem) => {
                        tracing::warn!(identity.id = %id, problem = %problem, "identity not imported");
                        self.summary.failed.push(FailedIdentity { id, problem });
                    }
                }
                progress(&self.summary);
            }
            self.summary.pages += 1;
            let source = self.source.clone();
            match page.next_page_token {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(KratosImportError::Malformed(
                        "the next page's token is the current page's".into(),
                    ));
                }
                Some(next) => {
                    let saved = next.clone();
                    let now = self.passwords.clock().now();
                    self.passwords
                        .db()
                        .run(move |conn| checkpoint::save(conn, &source, &saved, now))
                        .await?;
                    token = Some(next);
                }
                None => {
                    self.passwords
                        .db()
                        .run(move |conn| checkpoint::clear(conn, &source))
                        .await?;
                    break;
                }
            }
        }
        let summary = &self.summary;
        tracing::info!(
            pages = summary.pages,
            imported = summary.imported,
            already_known = summary.already_known,
            without_password = summary.without_password,
            failed = summary.failed.len(),
            "Kratos identities imported"
        );
        Ok(())
    }

    async fn import_one(&self, listed: ListedIdentity) -> Result<Outcome, KratosImportError> {
        let identity = match identity_of(&listed.identity, &self.settings) {
            Ok(identity) => identity,
            Err(problem) => return Ok(Outcome::Failed(format!("id {problem}"))),
        };
        let Some(hash) = listed.hashed_password.as_deref() else {
            return Ok(Outcome::WithoutPassword);
        };
        if self.has_history(&identity).await? {
            return Ok(Outcome::AlreadyKnown);
        }
        let changed_at = change_time(&listed, self.passwords.clock().now());
        match self
            .passwords
            .import_foreign_hash(&identity, hash, changed_at)
            .await
        {
            Ok(_) => Ok(Outcome::Imported),
            Err(PasswordsError::UnsupportedHash(problem)) => {
                Ok(Outcome::Failed(format!("hashed_password {problem}")))
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn has_history(&self, identity: &Identity) -> Result<bool, KratosImportError> {
        Ok(self
            .passwords
            .state(&identity.id)
            .await?
            .is_some_and(|state| state.history_entries > 0))
    }

    fn admin_error(&self, error: AdminError) -> KratosImportError {
        let url = self.admin.base_url();
        match error {
            AdminError::Unreachable(reason) => KratosImportError::Unreachable { url, reason },
            AdminError::Status {
                status: status @ (401 | 403),
            } => KratosImportError::Refused { url, status },
            AdminError::Status { status } => KratosImportError::Status { status },
            AdminError::Malformed(problem) => KratosImportError::Malformed(problem),
        }
    }
}

/// When the identity's current password was set, which Kratos does not record: the first of these that is a
/// time a change can have happened (`check_change_time`), else `now`:
/// 1. `metadata_public.password_changed_at`, which Reclaim's settings hook stamps;
/// 2. the password credential's `updated_at`, its last write, at or after the last password change;
/// 3. the identity's `updated_at`, then its `created_at`.
pub fn change_time(listed: &ListedIdentity, now: DateTime<Utc>) -> DateTime<Utc> {
    let stamped = listed
        .identity
        .metadata_public_object()
        .get("password_changed_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    [
        stamped,
        listed.password_updated_at,
        listed.updated_at,
        listed.created_at,
    ]
    .into_iter()
    .flatten()
    .find_map(|at| check_change_time(at, now).ok())
    .unwrap_or(now)
}

/// What the CLI runs: an import into the configured database (migrated first) from the configured Kratos.
pub async fn prepare(
    settings: &Settings,
    options: KratosImportOptions,
) -> anyhow::Result<KratosImport> {
    // Checked before connecting, so a missing URL is the message rather than a database problem.
    if settings.plugin.kratos.admin_url.is_empty() {
        return Err(KratosImportError::NoAdminUrl.into());
    }
    let db = {
        let settings = settings.database.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Db> {
            let db = Db::connect(&settings)?;
            db.migrate()?;
            Ok(db)
        })
        .await??
    };
    let passwords = Passwords::new(settings, db, &prometheus::Registry::new())?;
    Ok(KratosImport::new(
        passwords,
        &settings.plugin.kratos,
        options,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kratos::payload::KratosIdentity;

    fn listed(metadata_public: Value, times: [Option<&str>; 3]) -> ListedIdentity {
        let time = |t: Option<&str>| {
            t.map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .expect("time")
                    .with_timezone(&Utc)
            })
        };
        ListedIdentity {
            identity: serde_json::from_value::<KratosIdentity>(serde_json::json!({
                "id": "a251ebc2-880c-4f76-a8f3-38e6940eab0e",
                "metadata_public": metadata_public,
            }))
            .expect("identity"),
            hashed_password: None,
            password_updated_at: time(times[0]),
            updated_at: time(times[1]),
            created_at: time(times[2]),
        }
    }

    #[test]
    fn the_change_time_is_the_first_valid_of_stamp_credential_identity_and_now() {
        let now = Utc::now();
        let all = [
            Some("2024-03-01T00:00:00Z"),
            Some("2024-04-01T00:00:00Z"),
            Some("2024-01-01T00:00:00Z"),
        ];
        let stamped = serde_json::json!({"password_changed_at": "2024-02-01T00:00:00Z"});
        assert_eq!(
            change_time(&listed(stamped, all), now).to_rfc3339(),
            "2024-02-01T00:00:00+00:00"
        );
        // A stamp that cannot be a change time (Kratos's zero time, the future) is passed over.
        for bad in ["0001-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "yesterday"] {
            let stamped = serde_json::json!({"password_changed_at": bad});
            assert_eq!(
                change_time(&listed(stamped, all), now).to_rfc3339(),
                "2024-03-01T00:00:00+00:00",
                "{bad}"
            );
        }
        let credential_zero = [Some("0001-01-01T00:00:00Z"), all[1], all[2]];
        assert_eq!(
            change_time(&listed(Value::Null, credential_zero), now).to_rfc3339(),
            "2024-04-01T00:00:00+00:00"
        );
        assert_eq!(
            change_time(&listed(Value::Null, [None, None, all[2]]), now).to_rfc3339(),
            "2024-01-01T00:00:00+00:00"
        );
        assert_eq!(change_time(&listed(Value::Null, [None; 3]), now), now);
    }
}
