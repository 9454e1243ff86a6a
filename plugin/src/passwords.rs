//! [`Passwords`]: the one facade adapters call (generic API, Kratos hooks and edge guard, ZITADEL, Supabase).
//!
//! It ties the pure policy engine to the history store and the state table: each method reads or changes them
//! through `history` and `state` (whose transitions and view live there) and logs and counts the outcome.
//! Database work runs through `Db::run` (blocking pool), KDF work through the bounded [`Kdf`] pool; neither
//! blocks an HTTP worker.

use crate::history::{self, foreign, store, Kdf, KdfError, KdfParams, PasswordDigest};
use crate::identity::{Identity, IdentityId};
use crate::metrics::PluginMetrics;
use crate::notices::{self, Cause, NoticeQueue};
use crate::password::Password;
use crate::policy::{
    ChangeContext, Decision, Locale, LoginOutcome, LoginStatus, MustChangeReason, Policy, Profile,
};
use crate::state::{
    self, apply_change, change_facts, change_row, login_facts, refresh_identity, resolve_in, view,
    StateRow,
};
use crate::verdicts::{self, FlowId};
use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use reclaim_common::clock::Clock;
use reclaim_common::db::{write_transaction, AnyConnection, DbError};
use reclaim_common::idempotency::{self, Claim, Remembered};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::Environment;
use reclaim_common::{Db, Settings};
use std::sync::Arc;
use std::time::Duration;

mod legacy;
pub use crate::state::PasswordState;
mod reported;
mod staging;
pub use legacy::{LegacyIdentifier, LegacyImported, LegacyMigration};
pub use reported::Reported;
pub use staging::Submission;

#[derive(Debug, thiserror::Error)]
pub enum PasswordsError {
    /// Every KDF slot stayed busy for `plugin.history.max_queue_ms`; try again after `retry_after`.
    #[error("the password hashing pool is saturated")]
    Saturated { retry_after: Duration },
    #[error("no profile named `{0}`")]
    UnknownProfile(String),
    #[error("the hash cannot be imported: {0}")]
    UnsupportedHash(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<KdfError> for PasswordsError {
    fn from(error: KdfError) -> Self {
        match error {
            KdfError::Saturated { retry_after } => Self::Saturated { retry_after },
            KdfError::Failed(message) => Self::Unexpected(anyhow::anyhow!(message)),
        }
    }
}

impl From<DbError> for PasswordsError {
    fn from(error: DbError) -> Self {
        Self::Unexpected(anyhow::Error::new(error).context("database"))
    }
}

/// What makes a record idempotent: its key, claimed in the record's own transaction (see
/// [`reclaim_common::idempotency`]).
pub type Receipt = idempotency::Request;

/// The outcome of [`Passwords::record_once`].
#[derive(Debug, Clone)]
pub enum Recorded {
    /// Recorded now; the new state.
    New(PasswordState),
    /// The receipt was seen before: its first answer (check `same_request` for a reused key).
    Replay(Remembered),
}

/// How a check is asked.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Only a voluntary change is held to the minimum age.
    pub context: ChangeContext,
    /// Use this profile instead of selecting one.
    pub profile: Option<String>,
    /// Language of messages; `None` = `plugin.policy.default_locale`.
    pub locale: Option<Locale>,
}

/// The verdict on a change whose plaintext the plugin never sees (Kratos's settings hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnseenChange {
    pub decision: Decision,
    /// When the new password will expire under the identity's profile.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Salt of the throwaway KDF run for identities without history.
const UNKNOWN_IDENTITY_SALT: [u8; history::kdf::SALT_LEN] = [0x5a; history::kdf::SALT_LEN];

/// The facade. Clone it freely: it holds shared handles.
#[derive(Clone)]
pub struct Passwords {
    db: Db,
    policy: Arc<Policy>,
    kdf: Kdf,
    metrics: PluginMetrics,
    foreign_memory_cap_kib: u32,
    /// Seals imported foreign hashes (`plugin.storage.keys`).
    keyring: Keyring,
    /// Every "now" the facade decides by; tests move it instead of editing stored times.
    clock: Clock,
    /// The security notices changes queue (`plugin.notices`).
    notices: NoticeQueue,
}

impl Passwords {
    /// Builds the facade on the system clock; metrics are registered on `registry`.
    pub fn new(
        settings: &Settings,
        db: Db,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        Self::with_clock(settings, db, registry, Clock::system())
    }

    /// [`Passwords::new`] deciding by `clock`.
    pub fn with_clock(
        settings: &Settings,
        db: Db,
        registry: &prometheus::Registry,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let metrics = PluginMetrics::register(registry).context("registering plugin metrics")?;
        let history = &settings.plugin.history;
        let pepper = if history.pepper.is_empty() {
            anyhow::ensure!(
                settings.environment != Environment::Production,
                "plugin.history.pepper is required in production"
            );
            tracing::warn!(
                "plugin.history.pepper is empty: using the public development pepper; set one before storing real history"
            );
            history::kdf::development_pepper()
        } else {
            history.pepper.expose().as_bytes().to_vec()
        };
        let slots = match history.max_concurrent_kdf {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let params = KdfParams {
            m_kib: history.argon2.m_kib,
            t: history.argon2.t,
            p: history.argon2.p,
        };
        let kdf = Kdf::new(
            &pepper,
            params,
            slots,
            Duration::from_millis(history.max_queue_ms),
            metrics.clone(),
        );
        let policy = Policy::from_settings(&settings.plugin.policy);
        let notices = NoticeQueue::new(&settings.plugin.notices, policy.default_locale().as_str());
        Ok(Self {
            db,
            policy: Arc::new(policy),
            kdf,
            metrics,
            foreign_memory_cap_kib: history.argon2.m_kib,
            keyring: Keyring::from_settings(
                "plugin.storage.keys",
                &settings.plugin.storage.keys,
                settings.environment != Environment::Production,
            )?,
            clock,
            notices,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy, shared (the notice worker's expiry scan reads the profiles).
    pub fn shared_policy(&self) -> Arc<Policy> {
        self.policy.clone()
    }

    /// The notices changes queue, for the worker that delivers them.
    pub fn notices(&self) -> &NoticeQueue {
        &self.notices
    }

    /// The database, for callers that keep their own records next to a change (idempotency answers).
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn metrics(&self) -> &PluginMetrics {
        &self.metrics
    }

    /// The bounded KDF pool every argon2 run goes through.
    pub fn kdf(&self) -> &Kdf {
        &self.kdf
    }

    /// The clock the facade decides by; adapters take their "now" from it too.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The idempotency scope of `record` requests for an identity, so erasure can forget them too.
    pub fn record_scope(identity_id: &IdentityId) -> String {
        format!("plugin.record:{identity_id}")
    }

    /// May `identity` change its password to `password`? An identity the plugin never saw has no history
    /// and is allowed.
    pub async fn check(
        &self,
        identity: &Identity,
        password: &Password,
        options: &CheckOptions,
    ) -> Result<Decision, PasswordsError> {
        let locale = options.locale.unwrap_or(self.policy.default_locale());
        if let Some(name) = &options.profile {
            self.named_profile(name)?;
        }
        let id = identity.id.as_str().to_string();
        let keyring = self.keyring.clone();
        let (row, entries) = self
            .db
            .run(move |conn| {
                let row = state::find(conn, &id)?;
                let entries = match &row {
                    Some(_) => store::entries(conn, &id, &keyring)?,
                    None => Vec::new(),
                };
                Ok((row, entries))
            })
            .await?;
        let now = self.clock.now();
        let profile = self.resolve(options.profile.as_deref(), identity, row.as_ref())?;
        let (facts, reuse) = match &row {
            Some(row) if !entries.is_empty() => {
                let findings =
                    history::find(&self.kdf, &row.history_salt, &entries, password, now).await?;
                if let (false, Some(digest)) = (findings.rekey.is_empty(), &findings.current) {
                    self.rekey(identity.id.as_str(), findings.rekey.clone(), digest.clone())
                        .await?;
                }
                (change_facts(row), findings.reuse)
            }
            _ => {
                // An identity without history costs one KDF run like one with history, so the answer's
                // timing does not tell whether the plugin knows it.
                self.kdf
                    .digest(password, &UNKNOWN_IDENTITY_SALT, self.kdf.params())
                    .await?;
                (row.as_ref().map(change_facts).unwrap_or_default(), None)
            }
        };
        let decision = profile.check_change(&facts, options.context, reuse, now, locale);
        let codes = self.count_change_decision(&decision);
        tracing::info!(
            identity.id = %identity.id,
            profile = %profile.name,
            decision.allowed = decision.allowed,
            decision.codes = ?codes,
            "password change checked"
        );
        Ok(decision)
    }

    /// Records a new password: adds it to the history, prunes, and resets expiry, must-change and grace.
    pub async fn record(
        &self,
        identity: &Identity,
        password: &Password,
        changed_at: Option<DateTime<Utc>>,
        reason: ChangeContext,
    ) -> Result<PasswordState, PasswordsError> {
        match self
            .record_inner(identity, password, changed_at, reason, None, Notify::Yes)
            .await?
        {
            Recorded::New(state) => Ok(state),
            Recorded::Replay(_) => Err(PasswordsError::Unexpected(anyhow::anyhow!(
                "a record without a receipt cannot be a replay"
            ))),
        }
    }

    /// [`Passwords::record`] for a password that was not changed, only seen (a legacy hash verified at first
    /// login): history and clock as `record`, no "password changed" notice.
    pub(crate) async fn record_unchanged(
        &self,
        identity: &Identity,
        password: &Password,
        changed_at: DateTime<Utc>,
    ) -> Result<(), PasswordsError> {
        self.record_inner(
            identity,
            password,
            Some(changed_at),
            ChangeContext::Voluntary,
            None,
            Notify::No,
        )
        .await?;
        Ok(())
    }

    /// [`Passwords::record`] exactly once per receipt (an `Idempotency-Key`, a webhook trigger id): the answer
    /// is remembered in the same transaction as the change, so a retry, even a concurrent one, gets
    /// [`Recorded::Replay`] with the first answer and changes nothing.
    pub async fn record_once(
        &self,
        identity: &Identity,
        password: &Password,
        changed_at: Option<DateTime<Utc>>,
        reason: ChangeContext,
        receipt: Receipt,
    ) -> Result<Recorded, PasswordsError> {
        self.record_inner(
            identity,
            password,
            changed_at,
            reason,
            Some(receipt),
            Notify::Yes,
        )
        .await
    }

    async fn record_inner(
        &self,
        identity: &Identity,
        password: &Password,
        changed_at: Option<DateTime<Utc>>,
        reason: ChangeContext,
        receipt: Option<Receipt>,
        notify: Notify,
    ) -> Result<Recorded, PasswordsError> {
        let salt = self.ensure_salt(identity).await?;
        let params = self.kdf.params();
        let digest = self.kdf.digest(password, &salt, params).await?;
        let changed_at = changed_at.unwrap_or_else(|| self.clock.now());
        let recorded = self
            .write_entry(
                identity.clone(),
                params,
                digest,
                changed_at,
                receipt,
                notify,
            )
            .await?;
        if let Recorded::New(_) = recorded {
            tracing::info!(identity.id = %identity.id, change.reason = ?reason, "password change recorded");
        }
        Ok(recorded)
    }

    /// May the identity change its password now, when the plugin cannot see the new one? The minimum age and
    /// pending marks decide here; the history was checked by the edge guard, which says so by staging a digest.
    pub async fn check_change_without_password(
        &self,
        identity: &Identity,
        context: ChangeContext,
        now: DateTime<Utc>,
        locale: Option<Locale>,
    ) -> Result<UnseenChange, PasswordsError> {
        let locale = locale.unwrap_or(self.policy.default_locale());
        let id = identity.id.as_str().to_string();
        let row = self.db.run(move |conn| state::find(conn, &id)).await?;
        let profile = resolve_in(&self.policy, None, identity, row.as_ref());
        let facts = row.as_ref().map(change_facts).unwrap_or_default();
        let decision = profile.check_change(&facts, context, None, now, locale);
        self.count_change_decision(&decision);
        Ok(UnseenChange {
            decision,
            expires_at: profile.expires_at(now),
        })
    }

    /// The IdP saved a new password: the digest the edge guard staged for this flow and identity, when the
    /// pre-persist hook accepted one, becomes the current history entry; either way the clock restarts and
    /// marks and grace logins are cleared.
    pub async fn password_changed(
        &self,
        identity: &Identity,
        changed_at: DateTime<Utc>,
        flow: Option<&FlowId>,
    ) -> Result<PasswordState, PasswordsError> {
        let saved = identity.clone();
        let flow = flow.cloned();
        let notices = self.notices.clone();
        let state = self
            .change_state(identity.clone(), move |c, row, profile, now| {
                let staged = match &flow {
                    Some(flow) => verdicts::take_accepted(c, flow, saved.id.as_str())?,
                    None => None,
                };
                if let Some(staged) = &staged {
                    store::insert_keyed(
                        c,
                        saved.id.as_str(),
                        staged.params,
                        &staged.digest,
                        changed_at,
                    )?;
                }
                apply_change(row, profile, &saved, changed_at);
                queue_changed(&notices, c, row, changed_at, now)?;
                Ok(())
            })
            .await?;
        self.notices.wake();
        tracing::info!(identity.id = %state.identity_id, history.entries = state.history_entries, "password change saved by the identity provider");
        Ok(state)
    }

    /// Registration: starts the password's clock without a history entry (the IdP gave no plaintext).
    /// An identity already known keeps its history and clock; its schema and contacts are refreshed.
    pub async fn initialise(
        &self,
        identity: &Identity,
        changed_at: DateTime<Utc>,
    ) -> Result<PasswordState, PasswordsError> {
        let known = identity.clone();
        self.change_state(identity.clone(), move |_, row, profile, _| {
            refresh_identity(row, profile, &known);
            if row.changed_at.is_none() {
                row.changed_at = Some(changed_at.naive_utc());
                row.expires_at = profile.expires_at(changed_at).map(|e| e.naive_utc());
            }
            Ok(())
        })
        .await
    }

    /// Stores a hash imported from another system as a history entry set at `changed_at`. It is verified on
    /// its own at each check and re-keyed into the identity's group once its plaintext is seen.
    pub async fn import_foreign_hash(
        &self,
        identity: &Identity,
        hash: &str,
        changed_at: DateTime<Utc>,
    ) -> Result<PasswordState, PasswordsError> {
        let scheme = foreign::inspect(hash, self.foreign_memory_cap_kib)
            .map_err(PasswordsError::UnsupportedHash)?;
        let known = identity.clone();
        let hash = hash.to_string();
        let keyring = self.keyring.clone();
        self.change_state(identity.clone(), move |c, row, profile, _| {
            store::insert_foreign(
                c,
                known.id.as_str(),
                scheme.as_str(),
                &hash,
                changed_at,
                &keyring,
            )?;
            refresh_identity(row, profile, &known);
            if row.changed_at.is_none_or(|c| c < changed_at.naive_utc()) {
                row.changed_at = Some(changed_at.naive_utc());
                row.expires_at = profile.expires_at(changed_at).map(|e| e.naive_utc());
            }
            Ok(())
        })
        .await
    }

    /// The identity's password state, or `None` if the plugin never heard of it.
    pub async fn state(
        &self,
        identity_id: &IdentityId,
    ) -> Result<Option<PasswordState>, PasswordsError> {
        let policy = self.policy.clone();
        let id = identity_id.clone();
        let clock = self.clock.clone();
        Ok(self
            .db
            .run(move |conn| match state::find(conn, id.as_str())? {
                Some(row) => Ok(Some(view(&policy, conn, row, clock.now())?)),
                None => Ok(None),
            })
            .await?)
    }

    /// Requires a change at the next login (`admin` or `compromised`); an unknown identity gets a state row
    /// so the mark holds when it first shows up.
    pub async fn force_change(
        &self,
        identity_id: &IdentityId,
        reason: MustChangeReason,
    ) -> Result<PasswordState, PasswordsError> {
        let notices = self.notices.clone();
        let state = self
            .change_state(Identity::new(identity_id.clone()), move |c, row, _, now| {
                let before = row.must_change_reason.replace(reason.as_str().to_string());
                // A mark repeated (an administrator clicking twice) is one notice.
                if before.as_deref() != Some(reason.as_str()) {
                    notices.queue(c, row, &Cause::MustChange { reason, at: now }, now)?;
                }
                Ok(())
            })
            .await?;
        self.notices.wake();
        tracing::info!(identity.id = %identity_id, must_change.reason = reason.as_str(), "password change required");
        Ok(state)
    }

    /// The identity recovered its account: the next change is not held to the minimum age, and under a
    /// profile with `change_after_recovery` the password must be changed. A stronger pending reason stays.
    pub async fn mark_recovered(
        &self,
        identity_id: &IdentityId,
    ) -> Result<PasswordState, PasswordsError> {
        self.update_state(identity_id, |row| {
            if row.must_change_reason.is_none() {
                row.must_change_reason = Some(MustChangeReason::Recovery.as_str().to_string());
            }
        })
        .await
    }

    /// What a login with the current password gets; a grace login is counted.
    pub async fn on_login(
        &self,
        identity: &Identity,
        now: DateTime<Utc>,
        locale: Option<Locale>,
    ) -> Result<LoginOutcome, PasswordsError> {
        let locale = locale.unwrap_or(self.policy.default_locale());
        let policy = self.policy.clone();
        let identity = identity.clone();
        let outcome = self
            .db
            .run(move |conn| {
                // Decided on the locked row, so that two concurrent logins cannot both take the last grace
                // login and no concurrent change overwrites the count.
                write_transaction(conn, |c| {
                    let row = state::find_for_update(c, identity.id.as_str())?;
                    let profile = resolve_in(&policy, None, &identity, row.as_ref());
                    let facts = row.as_ref().map(login_facts).unwrap_or_default();
                    let outcome = profile.on_login(&facts, now, locale);
                    if outcome.consumes_grace_login {
                        use crate::schema::password_states::dsl as s;
                        diesel::update(s::password_states.find(identity.id.as_str()))
                            .set((
                                s::grace_logins_used.eq(s::grace_logins_used + 1),
                                s::updated_at.eq(now.naive_utc()),
                            ))
                            .execute(c)?;
                    }
                    Ok(outcome)
                })
            })
            .await?;
        let code = outcome.notice.as_ref().map(|n| n.code.as_str());
        let decision = match (outcome.status, outcome.allowed) {
            (LoginStatus::Allowed, _) => "allowed",
            (_, true) => "warned",
            (_, false) => "refused",
        };
        self.metrics.count_decision(decision, code.as_slice());
        Ok(outcome)
    }

    /// Right to erasure: deletes the identity's history, state and every remembered answer about it (generic
    /// API records, Kratos hooks). True when anything was there.
    pub async fn erase(&self, identity_id: &IdentityId) -> Result<bool, PasswordsError> {
        let id = identity_id.clone();
        let scope = Self::record_scope(identity_id);
        let deleted = self
            .db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    let history = store::erase(c, id.as_str())?;
                    let states = state::erase(c, id.as_str())?;
                    let staged = verdicts::erase(c, id.as_str())?;
                    let notices = notices::erase(c, id.as_str())?;
                    let answers = idempotency::forget_subject(c, id.as_str())?
                        // Answers remembered before they named their identity.
                        + idempotency::forget_scope(c, &scope)?;
                    Ok(history + states + staged + notices + answers)
                })
            })
            .await?;
        tracing::info!(identity.id = %identity_id, rows = deleted, "identity erased");
        Ok(deleted > 0)
    }

    /// Counts a change decision in the metrics; returns its violation codes.
    fn count_change_decision(&self, decision: &Decision) -> Vec<&'static str> {
        let codes: Vec<&'static str> = decision
            .violations
            .iter()
            .map(|v| v.code.as_str())
            .collect();
        let outcome = if decision.allowed {
            "allowed"
        } else {
            "refused"
        };
        self.metrics.count_decision(outcome, &codes);
        codes
    }

    fn named_profile(&self, name: &str) -> Result<&Profile, PasswordsError> {
        self.policy
            .profile(name)
            .ok_or_else(|| PasswordsError::UnknownProfile(name.to_string()))
    }

    fn resolve(
        &self,
        explicit: Option<&str>,
        identity: &Identity,
        row: Option<&StateRow>,
    ) -> Result<&Profile, PasswordsError> {
        match explicit {
            Some(name) => self.named_profile(name),
            None => Ok(resolve_in(&self.policy, None, identity, row)),
        }
    }

    async fn ensure_salt(&self, identity: &Identity) -> Result<Vec<u8>, PasswordsError> {
        let id = identity.id.as_str().to_string();
        let clock = self.clock.clone();
        Ok(self
            .db
            .run(move |conn| Ok(state::ensure(conn, &id, clock.now())?.history_salt))
            .await?)
    }

    async fn write_entry(
        &self,
        identity: Identity,
        params: KdfParams,
        digest: PasswordDigest,
        changed_at: DateTime<Utc>,
        receipt: Option<Receipt>,
        notify: Notify,
    ) -> Result<Recorded, PasswordsError> {
        let policy = self.policy.clone();
        let clock = self.clock.clone();
        let notices = self.notices.clone();
        let recorded = self
            .db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    let now = clock.now();
                    if let Some(r) = &receipt {
                        match idempotency::claim(c, r, now.naive_utc())? {
                            Claim::Claimed => {}
                            Claim::Answered(first) => return Ok(Recorded::Replay(first)),
                            // Records claim and answer in one transaction: a pending claim in this scope
                            // cannot be seen by another record.
                            Claim::Pending { .. } => {
                                return Err(DbError::Task("a record's key is pending".into()))
                            }
                        }
                    }
                    let state = change_row(c, &policy, &identity, now, |c, row, profile, _| {
                        store::insert_keyed(c, identity.id.as_str(), params, &digest, changed_at)?;
                        // An identity's first password (a new user) is not a change to warn about.
                        let first = row.changed_at.is_none();
                        apply_change(row, profile, &identity, changed_at);
                        if first || notify == Notify::No {
                            return Ok(());
                        }
                        queue_changed(&notices, c, row, changed_at, now)
                    })?;
                    if let Some(r) = &receipt {
                        let answer = serde_json::to_string(&state)
                            .map_err(|e| DbError::Task(e.to_string()))?;
                        idempotency::complete(c, r, 200, &answer)?;
                    }
                    Ok(Recorded::New(state))
                })
            })
            .await?;
        self.notices.wake();
        Ok(recorded)
    }

    async fn rekey(
        &self,
        identity_id: &str,
        entries: Vec<i64>,
        digest: PasswordDigest,
    ) -> Result<(), PasswordsError> {
        let id = identity_id.to_string();
        let params = self.kdf.params();
        self.db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    for entry in entries {
                        store::rekey(c, &id, entry, params, &digest)?;
                    }
                    Ok(())
                })
            })
            .await?;
        tracing::info!(identity.id = identity_id, "imported history entry re-keyed");
        Ok(())
    }

    async fn update_state(
        &self,
        identity_id: &IdentityId,
        change: impl FnOnce(&mut StateRow) + Send + 'static,
    ) -> Result<PasswordState, PasswordsError> {
        self.change_state(Identity::new(identity_id.clone()), move |_, row, _, _| {
            change(row);
            Ok(())
        })
        .await
    }

    /// Runs [`change_row`] in its own write transaction on the blocking pool.
    async fn change_state<F>(
        &self,
        identity: Identity,
        change: F,
    ) -> Result<PasswordState, PasswordsError>
    where
        F: FnOnce(
                &mut AnyConnection,
                &mut StateRow,
                &Profile,
                DateTime<Utc>,
            ) -> Result<(), DbError>
            + Send
            + 'static,
    {
        let policy = self.policy.clone();
        let clock = self.clock.clone();
        Ok(self
            .db
            .run(move |conn| {
                write_transaction(conn, |c| {
                    change_row(c, &policy, &identity, clock.now(), change)
                })
            })
            .await?)
    }
}

/// Whether a recorded password is a change to tell the person about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notify {
    Yes,
    /// A password moved into the history without being changed (a legacy hash verified at first login).
    No,
}

/// How old a committed change may be and still be news: a change recorded with an earlier `changed_at` (a
/// backfill, an import) gets no "your password was changed" notice.
const CHANGE_NOTICE_HORIZON: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Inside a change's transaction: queues "your password was changed" for a change made within the horizon.
fn queue_changed(
    notices: &NoticeQueue,
    c: &mut AnyConnection,
    row: &StateRow,
    changed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if changed_at >= now - CHANGE_NOTICE_HORIZON {
        notices.queue(c, row, &Cause::Changed { at: changed_at }, now)?;
    }
    Ok(())
}
