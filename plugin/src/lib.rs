//! reclaim-plugin: password history and expiry policy behind identity-provider webhooks.
//!
//! What adapters use, without HTTP:
//! - [`Passwords`] (`passwords`): the facade — `check`, `record` (`record_once` with a [`Receipt`] for
//!   idempotency), `initialise`, `check_submission`/`stage_settings_verdict`/`stage_registration`
//!   (the Kratos edge guard's verdicts, `verdicts`),
//!   `import_foreign_hash`, `import_legacy_hash`/`migrate_legacy` (passwords kept elsewhere until first
//!   login), `state`, `force_change`, `mark_recovered`, `on_login`, `erase`.
//! - Domain types: [`IdentityId`] and [`Identity`] (`identity`), [`Password`] (`password`, 1..=1024 bytes
//!   of UTF-8, `Debug` masked), [`PasswordDigest`] (`history`).
//! - [`policy`]: the pure engine (profiles, selection, decisions with stable codes, expiry, en/es messages).
//! - [`history`]: keyed digests, the bounded KDF pool, foreign hashes, history rows.
//! - [`state`]: the per-identity `password_states` row, how it changes (transitions inside a write
//!   transaction, the profile an identity falls under) and [`PasswordState`], the view callers get.
//! - [`supabase`]: the Supabase Auth adapter (the password-verification-attempt hook).
//! - [`kratos`]: the Ory Kratos adapter (hook calls authenticated and parsed, handlers, admin-API sync, the
//!   password migration hook).
//! - [`zitadel`]: the ZITADEL adapter (Actions v2 set-password targets).
//! - [`import`]: `reclaim import hashes`.
//! - [`notices`]: "password changed", "expires soon" and "must change" notices, queued with the change and
//!   delivered through the gateway by [`notices::NoticeWorker`].
//!
//! The HTTP service (generic API in `routes`) is built by [`Application::build`] and served by
//! [`Application::run_until_stopped`]. Every "now" the plugin decides by comes from the facade's
//! [`Clock`](reclaim_common::clock::Clock) (`Passwords::clock`); `Application::build_with_clock` and
//! `Passwords::with_clock` take one that tests can advance.

pub mod history;
pub mod identity;
pub mod import;
pub mod kratos;
pub mod metrics;
pub mod notices;
pub mod password;
pub mod passwords;
pub mod policy;
mod routes;
pub mod schema;
mod startup;
pub mod state;
pub mod supabase;
pub mod verdicts;
pub mod zitadel;

pub use history::PasswordDigest;
pub use identity::{Identity, IdentityId};
pub use password::Password;
pub use passwords::{
    CheckOptions, LegacyIdentifier, LegacyImported, LegacyMigration, PasswordState, Passwords,
    PasswordsError, Receipt, Recorded, Reported, UnseenChange,
};
pub use startup::{Application, GuardApplication};
