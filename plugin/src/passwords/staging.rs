//! Changes whose plaintext the identity provider never shows us (Kratos): an edge guard in front of the IdP
//! sees the submitted password, checks it here and stages a verdict under the IdP's flow id
//! (`crate::verdicts`); the IdP's hooks then refuse or commit by that verdict.

use super::{change_facts, Passwords, PasswordsError};
use crate::history::{self, kdf::SALT_LEN, store};
use crate::identity::{Identity, IdentityId};
use crate::password::Password;
use crate::policy::{ChangeContext, Decision, Locale};
use crate::state;
use crate::verdicts::{self, FlowId, StagedDigest, Verdict};
use chrono::Utc;
use rand::RngCore;

/// The guard's finding on one submitted password.
#[derive(Debug)]
pub struct Submission {
    pub decision: Decision,
    /// The candidate's keyed digest under the identity's salt, to commit if Kratos saves it.
    pub staged: StagedDigest,
}

impl Passwords {
    /// Checks a password submitted for `identity` (its row is created if the plugin never saw it) and
    /// computes the digest to commit: one KDF run, the same one the history comparison needs.
    pub async fn check_submission(
        &self,
        identity: &Identity,
        password: &Password,
        context: ChangeContext,
        locale: Option<Locale>,
    ) -> Result<Submission, PasswordsError> {
        let locale = locale.unwrap_or(self.policy.default_locale());
        let salt = self.ensure_salt(identity).await?;
        let id = identity.id.as_str().to_string();
        let keyring = self.keyring.clone();
        let (row, entries) = self
            .db
            .run(move |conn| {
                let row = state::find(conn, &id)?;
                Ok((row, store::entries(conn, &id, &keyring)?))
            })
            .await?;
        let now = self.clock.now();
        let profile = self.resolve(None, identity, row.as_ref())?;
        let findings = history::find(&self.kdf, &salt, &entries, password, now).await?;
        let params = self.kdf.params();
        let digest = match findings.current {
            Some(digest) => digest,
            // No entry under today's parameters: the digest to keep costs its own run.
            None => self.kdf.digest(password, &salt, params).await?,
        };
        if !findings.rekey.is_empty() {
            self.rekey(identity.id.as_str(), findings.rekey.clone(), digest.clone())
                .await?;
        }
        let facts = row.as_ref().map(change_facts).unwrap_or_default();
        let decision = profile.check_change(&facts, context, findings.reuse, now, locale);
        let codes = self.count_change_decision(&decision);
        tracing::info!(
            identity.id = %identity.id,
            profile = %profile.name,
            decision.allowed = decision.allowed,
            decision.codes = ?codes,
            "submitted password checked"
        );
        Ok(Submission {
            decision,
            staged: StagedDigest { digest, params },
        })
    }

    /// Keeps the verdict on a settings submission for the IdP's hooks, replacing an earlier one of the flow.
    pub async fn stage_settings_verdict(
        &self,
        flow: &FlowId,
        identity_id: &IdentityId,
        verdict: Verdict,
        ttl: chrono::Duration,
    ) -> Result<(), PasswordsError> {
        let flow = flow.clone();
        let id = identity_id.as_str().to_string();
        let now = self.clock.now();
        self.db
            .run(move |conn| verdicts::stage_settings(conn, &flow, &id, &verdict, now, ttl))
            .await?;
        Ok(())
    }

    /// A registration's password, for an identity that does not exist yet: its digest under a new salt, kept
    /// under the flow id until the registration post-persist hook makes it the first history entry.
    pub async fn stage_registration(
        &self,
        flow: &FlowId,
        password: &Password,
        ttl: chrono::Duration,
    ) -> Result<(), PasswordsError> {
        let mut salt = vec![0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let params = self.kdf.params();
        let digest = self.kdf.digest(password, &salt, params).await?;
        let flow = flow.clone();
        let now = self.clock.now();
        self.db
            .run(move |conn| {
                let staged = StagedDigest { digest, params };
                verdicts::stage_registration(conn, &flow, &staged, &salt, now, ttl)
            })
            .await?;
        Ok(())
    }

    /// The settings pre-persist hook's verdict for this flow and identity (used once; see
    /// [`verdicts::take_for_settings`]).
    pub async fn take_settings_verdict(
        &self,
        flow: &FlowId,
        identity_id: &IdentityId,
    ) -> Result<Option<Verdict>, PasswordsError> {
        let flow = flow.clone();
        let id = identity_id.as_str().to_string();
        let now = self.clock.now();
        Ok(self
            .db
            .run(move |conn| {
                reclaim_common::db::write_transaction(conn, |c| {
                    verdicts::take_for_settings(c, &flow, &id, now)
                })
            })
            .await?)
    }

    /// The registration post-persist hook: the digest the guard staged for this flow becomes the new
    /// identity's first history entry, under the salt it was made with. `false` when nothing was staged, or
    /// when the identity already has history (then the staged salt cannot be its own).
    pub async fn commit_registration(
        &self,
        flow: &FlowId,
        identity: &Identity,
        changed_at: chrono::DateTime<Utc>,
    ) -> Result<bool, PasswordsError> {
        let flow = flow.clone();
        let id = identity.id.as_str().to_string();
        let keyring = self.keyring.clone();
        let policy = self.policy.clone();
        let identity = identity.clone();
        let now = self.clock.now();
        Ok(self
            .db
            .run(move |conn| {
                reclaim_common::db::write_transaction(conn, |c| {
                    let Some((staged, salt)) = verdicts::take_registration(c, &flow, now)? else {
                        return Ok(false);
                    };
                    let mut row = state::ensure(c, &id, now)?;
                    if !store::entries(c, &id, &keyring)?.is_empty() {
                        return Ok(false);
                    }
                    row.history_salt = salt;
                    state::save(c, &row)?;
                    store::insert_keyed(c, &id, staged.params, &staged.digest, changed_at)?;
                    let profile = super::resolve_in(&policy, None, &identity, Some(&row));
                    store::prune(c, &id, profile, now)?;
                    Ok(true)
                })
            })
            .await?)
    }
}
