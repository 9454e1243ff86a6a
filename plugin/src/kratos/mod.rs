//! The Ory Kratos adapter: web hooks Kratos calls during registration, login, recovery and settings, and a
//! client for Kratos's admin API.
//!
//! Kratos never sends a password to a web hook, so these hooks enforce what needs no password (expiry,
//! must-change, minimum age) and commit the history verdicts that the edge guard stages in front of Kratos.
//! The wiring an integrator copies is in `config/kratos/`.
//!
//! - `payload.rs`: what Kratos sends; `response.rs`: the answers Kratos parses; `messages.rs`: our UI
//!   message ids; `hooks.rs`: the handlers; `admin.rs`: the admin API client.

pub mod admin;
mod hooks;
pub mod messages;
pub mod payload;
pub mod response;

pub use hooks::{routes, KratosHooks};
