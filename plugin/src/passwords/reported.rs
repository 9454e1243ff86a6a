//! Changes an identity provider reports after the fact, without the plaintext (Supabase's
//! `password_changed_notification`, relayed by the gateway to `POST /v1/identities/{id}/password/changed`).
//!
//! The clock restarts, marks and grace logins are cleared and contacts refreshed, as for
//! [`Passwords::password_changed`], but no history entry is written (there is no digest) and no "password
//! changed" notice is queued: the identity provider mails its own. A report older than the stored change
//! time changes nothing.

use super::{Passwords, PasswordsError, Receipt};
use crate::identity::{Identity, IdentityId};
use crate::state::{apply_change, change_row, refresh_identity, PasswordState};
use chrono::{DateTime, Utc};
use reclaim_common::db::{write_transaction, DbError};
use reclaim_common::idempotency::{self, Claim, Remembered};

/// The outcome of [`Passwords::report_change`].
#[derive(Debug, Clone)]
pub enum Reported {
    /// Applied now (`restarted` false: the report was older than the stored change, nothing but contacts
    /// changed); the state after it.
    New {
        state: PasswordState,
        restarted: bool,
    },
    /// The receipt was seen before: its first answer (check `same_request` for a reused key).
    Replay(Remembered),
}

impl Passwords {
    /// The idempotency scope of reported changes for an identity (answers name the identity, so erasure
    /// forgets them).
    pub fn report_scope(identity_id: &IdentityId) -> String {
        format!("plugin.reported:{identity_id}")
    }

    /// The identity provider saved a new password at `changed_at` (default now) whose plaintext Reclaim never
    /// saw. Applied exactly once per receipt: the key is claimed and the answer remembered in the change's
    /// own transaction.
    pub async fn report_change(
        &self,
        identity: &Identity,
        changed_at: Option<DateTime<Utc>>,
        receipt: Receipt,
    ) -> Result<Reported, PasswordsError> {
        let policy = self.policy.clone();
        let clock = self.clock.clone();
        let reported = identity.clone();
        let outcome = self
            .db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    let now = clock.now();
                    match idempotency::claim(c, &receipt, now.naive_utc())? {
                        Claim::Claimed => {}
                        Claim::Answered(first) => return Ok(Reported::Replay(first)),
                        // Claimed and answered in one transaction: a pending claim cannot be seen here.
                        Claim::Pending { .. } => {
                            return Err(DbError::Task("a reported change's key is pending".into()))
                        }
                    }
                    let changed_at = changed_at.unwrap_or(now);
                    let mut restarted = false;
                    let state = change_row(c, &policy, &reported, now, |_, row, profile, _| {
                        let newer = row
                            .changed_at
                            .is_none_or(|stored| stored <= changed_at.naive_utc());
                        if newer {
                            apply_change(row, profile, &reported, changed_at);
                            restarted = true;
                        } else {
                            refresh_identity(row, profile, &reported);
                        }
                        Ok(())
                    })?;
                    let answer =
                        serde_json::to_string(&state).map_err(|e| DbError::Task(e.to_string()))?;
                    idempotency::complete(c, &receipt, 200, &answer)?;
                    Ok(Reported::New { state, restarted })
                })
            })
            .await?;
        match &outcome {
            Reported::New { restarted, .. } => tracing::info!(
                identity.id = %identity.id,
                change.applied = *restarted,
                "password change reported by the identity provider"
            ),
            Reported::Replay(_) => tracing::info!(
                identity.id = %identity.id,
                "reported password change: a retry, already answered"
            ),
        }
        Ok(outcome)
    }
}
