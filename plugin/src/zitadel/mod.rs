//! The ZITADEL adapter: Actions v2 `restCall` targets that ZITADEL calls on the request and the response of
//! the v2 user-service calls carrying a new password (`SetPassword`, `AddHumanUser`, `CreateUser`).
//!
//! `payload.rs` reads the signed envelope (`ContextInfoRequest` / `ContextInfoResponse`) and finds the new
//! password in it; `hooks.rs` holds the two handlers: the request hook checks the password and refuses with
//! ZITADEL's error forwarding or allows by returning the request message unchanged; the response hook (or the
//! request hook, under `plugin.zitadel.commit_on = "request"`) records the password in the history.
//!
//! What is not here: the signature scheme (`reclaim_common::auth::zitadel`) and the policy and history
//! (`crate::Passwords`). ZITADEL's HTTP SMS and email providers are gateway routes (`reclaim_gateway::zitadel`).

mod hooks;
mod payload;

pub use hooks::{routes, HooksDoc, ZitadelHooks};
