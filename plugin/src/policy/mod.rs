//! The policy engine: pure functions from profile, stored facts and a clock to a decision. No I/O here.
//!
//! - `profile`: profiles built from `[plugin.policy]` and the rules choosing one for an identity.
//! - `decision`: what a password change or a login gets: stable codes, localized messages and the numbers a
//!   UI needs (`available_at`, `days_left`, `grace_logins_left`).
//! - `expiry`: when a password expires and what a login sees (allowed, warn, grace, expired, must change).
//! - `locale`: the languages of messages (English, Spanish) and `Accept-Language` negotiation.
//! - `clock`: date arithmetic that saturates instead of panicking, and the change times a caller may name.
//!
//! What is not here: the history digests and their storage (`crate::history`), the per-identity state table
//! (`crate::state`), and HTTP (`crate::routes`).

mod clock;
mod decision;
mod expiry;
mod locale;
mod profile;

pub use clock::{check_change_time, later, EARLIEST_CHANGE, MAX_CLOCK_SKEW};
pub use decision::{ChangeContext, ChangeFacts, Decision, ReuseMatch, Violation, ViolationCode};
pub use expiry::{LoginFacts, LoginOutcome, LoginStatus, MustChangeReason};
pub use locale::Locale;
pub use profile::{IdentityTraits, Policy, Profile};
