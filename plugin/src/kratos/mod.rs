//! The Ory Kratos adapter: web hooks Kratos calls during registration, login, recovery and settings, and a
//! client for Kratos's admin API.
//!
//! Kratos never sends a password to a web hook, so these hooks enforce what needs no password (expiry,
//! must-change, minimum age) and commit a history digest when one was staged (by the edge guard in front of
//! Kratos, which is not built yet).
//! The wiring an integrator copies is in `config/kratos/`.
//!
//! - `payload.rs`: what Kratos sends; `response.rs`: the answers Kratos parses; `messages.rs`: our UI
//!   message ids.
//! - `call.rs`: a hook call authenticated (Kratos's API key or basic auth) and parsed into our identity,
//!   locale and trigger id; `HookError` for calls that cannot be handled.
//! - `hooks.rs`: the handlers, each decided once per trigger id.
//! - `sync.rs`: the admin-API side of a hook: first contact with an identity (`ensure_known`, importing its
//!   current hash) and the state mirrored into `metadata_admin` (`publish_state`).
//! - `migration.rs`: the password migration hook (hashes imported by `reclaim import hashes`).
//! - `admin.rs`: the admin API client (also the identity list `reclaim import kratos` walks).

pub mod admin;
pub(crate) mod call;
pub mod guard;
mod hooks;
pub mod messages;
mod migration;
pub mod payload;
pub mod response;
mod sync;

pub use hooks::{routes, HooksDoc, KratosHooks};
