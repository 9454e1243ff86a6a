//! The Supabase Auth adapter: the password-verification-attempt hook
//! (`POST /hooks/supabase/password-verification`), which Supabase calls after it compared a password at
//! sign-in and before it issues tokens.
//!
//! Supabase never sends a password (plaintext or hash) to any hook, so this adapter enforces what needs
//! none: expiry and must-change marks, decided by the same rules as Kratos's login hook
//! ([`crate::Passwords::on_login`]). Password history cannot be enforced for Supabase.
//!
//! - `payload.rs`: what Supabase sends and what it parses back.
//! - `decide.rs`: the decision for one verification attempt (domain, no HTTP).
//! - `hook.rs`: the handler: signature (Standard Webhooks, `reclaim_common::auth::standard_webhooks`),
//!   parse, decide, answer; errors in Supabase's `{"error":{"http_code","message"}}` shape.

mod decide;
mod hook;
pub mod payload;

pub use decide::{decide, Attempt};
pub use hook::{routes, HookDoc, SupabaseHooks};
