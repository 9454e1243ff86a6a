//! Configuration: one struct per section, each key declared once with its default.
//!
//! Layers, later wins: the code's defaults → the TOML file (`config/reclaim.toml` or `--config`) → environment
//! variables `RECLAIM__SECTION__KEY`. Any secret key also accepts `<key>_file`, a path whose content (trimmed)
//! becomes the value. Unknown keys, values of the wrong type and values out of range are reported together,
//! each with its key path and the environment variable that sets it.
//!
//! The plugin's and the gateway's sections live in `plugin.rs` and `gateway.rs`.

mod gateway;
mod kratos;
mod load;
mod plugin;
mod twilio;

pub use gateway::*;
pub use kratos::*;
pub use load::{env_var_for, from_value, load, ConfigError, Problem};
pub use plugin::*;
pub use twilio::*;

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `development` allows insecure conveniences (generated pepper, console delivery); `production` refuses
    /// to start without the secrets a real deployment needs.
    pub environment: Environment,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub http: HttpSettings,
    pub plugin: PluginSettings,
    pub gateway: GatewaySettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` (embedded) or `postgres://user:password@host:port/db` (production).
    pub url: DatabaseUrl,
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
    /// SQLite only: how long a writer waits for the lock before giving up.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://var/reclaim.db".into()),
            pool_size: 8,
            connect_timeout_ms: 5_000,
            busy_timeout_ms: 5_000,
        }
    }
}

/// A database URL; its password is masked wherever it is shown.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `pretty` for a terminal, `json` for log shippers.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,reclaim_gateway=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// HTTP worker threads per service; 0 = one per core.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout_seconds: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_048_576,
            workers: 0,
            shutdown_timeout_seconds: 30,
        }
    }
}

/// Bearer tokens accepted by a service's API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Bearer tokens accepted on the API; empty = the API refuses every request (401).
    pub tokens: Vec<Secret>,
}

/// Bearer tokens accepted on a service's `/admin` endpoints, kept apart from the API tokens so that an
/// integration's token cannot erase identities or re-seal storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer tokens accepted on `/admin`; empty = every admin request is refused (401).
    pub tokens: Vec<Secret>,
}

/// Encryption at rest of a service's sensitive columns (see [`crate::sealed`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `<key id>:<key>` entries, the key as 64 hex digits or base64 of 32 bytes; the last entry seals new
    /// values, every entry opens. Empty = the public development key (refused in production).
    pub keys: Vec<Secret>,
}

impl StorageSettings {
    pub(crate) fn validate(
        &self,
        key: &str,
        environment: Environment,
        problems: &mut Vec<Problem>,
    ) {
        if self.keys.is_empty() {
            if environment == Environment::Production {
                problems.push(Problem::new(
                    key,
                    "is required in production (at least one `<key id>:<32-byte key>`)",
                ));
            }
            return;
        }
        if let Err(errors) = crate::sealed::Keyring::from_entries(&self.keys) {
            for error in errors {
                problems.push(Problem::new(
                    format!("{key}[{}]", error.index),
                    error.message,
                ));
            }
        }
    }
}

impl Settings {
    /// Checks what types alone cannot: ranges, required secrets, combinations. Every problem is returned.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(Problem::new(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.database.pool_size == 0 {
            problems.push(Problem::new("database.pool_size", "must be at least 1"));
        }
        if self.http.max_body_bytes < 1024 {
            problems.push(Problem::new("http.max_body_bytes", "must be at least 1024"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.level) {
            problems.push(Problem::new(
                "telemetry.level",
                format!("is not a valid filter: {e}"),
            ));
        }
        self.plugin.validate(self.environment, &mut problems);
        self.gateway.validate(self.environment, &mut problems);
        problems
    }
}

/// Checks that a listen address parses as `host:port`.
pub(crate) fn check_listen(key: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.parse::<std::net::SocketAddr>().is_err() {
        problems.push(Problem::new(
            key,
            format!("`{value}` is not an address like 127.0.0.1:4470"),
        ));
    }
}
