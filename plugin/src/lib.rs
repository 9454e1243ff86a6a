//! reclaim-plugin: password history and expiry policy behind identity-provider webhooks.
//!
//! - [`policy`]: the pure policy engine (profiles, decisions with stable codes, expiry).
//!
//! The service is built by [`Application::build`] and served by [`Application::run_until_stopped`].

pub mod policy;
mod startup;

pub use startup::Application;
