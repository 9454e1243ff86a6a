//! reclaim-plugin: password history and expiry policy behind identity-provider webhooks.
//!
//! The service is built by [`Application::build`] and served by [`Application::run_until_stopped`].

mod startup;

pub use startup::Application;
