//! reclaim-gateway: delivery of one-time codes and notices by email, SMS and voice.
//!
//! The service is built by [`Application::build`] and served by [`Application::run_until_stopped`].

pub mod providers;
mod startup;

pub use startup::{Application, RunMode};
