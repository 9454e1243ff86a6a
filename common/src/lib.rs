//! Plumbing shared by both Reclaim services.
//!
//! What lives here: configuration loading and validation (`settings`), the database layer over SQLite and
//! PostgreSQL (`db`), telemetry, the per-service metrics registry and HTTP metrics (`metrics`), the HTTP
//! server bootstrap with health and metrics endpoints (`http`), webhook and API authentication (`auth`),
//! JSON body parsing with field-naming errors (`json`), secret handling (`secret`), encryption at rest
//! (`sealed`), what every OpenAPI document shares (`openapi`), request idempotency records (`idempotency`) and the clock the plugin decides by, which tests
//! can move (`clock`).
//!
//! What does not: any password policy (in `reclaim-plugin`) or message delivery (in `reclaim-gateway`).

pub mod auth;
pub mod clock;
pub mod db;
pub mod http;
pub mod idempotency;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod schema;
pub mod sealed;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use db::Db;
pub use secret::Secret;
pub use settings::Settings;
