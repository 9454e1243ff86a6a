//! reclaim-gateway: delivery of one-time codes and notices by email, SMS and voice.
//!
//! What lives here: the outbox (`outbox`, `schema`), the delivery worker (`delivery`, `retry`), the
//! retention janitor (`retention`), providers (`providers`), templates (`templates`), destination validation
//! (`address`), configured fallback chains (`fallback`), verifications (`verifications`: codes and links with
//! a lifecycle), identity provider couriers (`kratos`, `zitadel`, `supabase`, queued once by `handoff`), the
//! HTTP handlers (`routes`) and metrics (`metrics`). The service is built by
//! [`Application::build`] and served by
//! [`Application::run_until_stopped`].

pub mod address;
pub mod channel;
pub mod delivery;
pub mod fallback;
pub mod handoff;
pub mod intake;
pub mod kratos;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod providers;
pub mod retention;
pub mod retry;
mod routes;
pub mod schema;
mod startup;
pub mod supabase;
pub mod templates;
pub mod timeline;
pub mod verifications;
pub mod zitadel;

pub use delivery::Delivery;
pub use startup::{Application, RunMode};
