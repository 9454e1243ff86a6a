//! Configuration: one struct per section, each key declared once with its default.
//!
//! Layers, later wins: the code's defaults → the TOML file (`config/reclaim.toml` or `--config`) → environment
//! variables `RECLAIM__SECTION__KEY`. Any secret key also accepts `<key>_file`, a path whose content (trimmed)
//! becomes the value. Unknown keys, values of the wrong type and values out of range are reported together,
//! each with its key path and the environment variable that sets it.
//!
//! The plugin's and the gateway's sections live in `plugin.rs` and `gateway.rs`.

mod dev_tokens;
mod gateway;
mod kratos;
mod limits;
mod load;
mod notices;
mod plugin;
mod supabase;
mod twilio;
mod verifications;
mod zitadel;

pub use dev_tokens::{
    development_tokens_notice, generate_development_tokens, GeneratedToken, ServedApis,
};
pub use gateway::*;
pub use kratos::*;
pub use limits::*;
pub use load::{env_var_for, from_value, load, ConfigError, Problem};
pub use notices::*;
pub use plugin::*;
pub use supabase::*;
pub use twilio::*;
pub use verifications::*;
pub use zitadel::*;

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
    /// Bearer tokens accepted on the API; empty = the API refuses every request (401), except that in
    /// `development` `reclaim serve` fills an empty list with a generated token ([`generate_development_tokens`]).
    pub tokens: Vec<Secret>,
}

/// Bearer tokens accepted on a service's `/admin` endpoints, kept apart from the API tokens so that an
/// integration's token cannot erase identities or re-seal storage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer tokens accepted on `/admin`; empty = every admin request is refused (401), except that in
    /// `development` `reclaim serve` fills an empty list with a generated token ([`generate_development_tokens`]).
    /// Each is operator `admin` in the log.
    pub tokens: Vec<Secret>,
    /// Named admin tokens (`[[gateway.admin.operators]]`): every admin call is logged with the name of the
    /// operator whose token it carried.
    pub operators: Vec<OperatorSettings>,
}

/// One named admin token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorSettings {
    /// Who the token belongs to, as logs name them: 1 to 64 printable characters, unique.
    pub name: String,
    pub token: Secret,
}

/// The operator name the plain `tokens` of an admin section stand for.
pub const DEFAULT_OPERATOR: &str = "admin";

impl AdminSettings {
    /// Every accepted admin token with its operator's name (`admin` for the plain `tokens`).
    pub fn operators(&self) -> Vec<(String, Secret)> {
        self.tokens
            .iter()
            .map(|t| (DEFAULT_OPERATOR.to_string(), t.clone()))
            .chain(
                self.operators
                    .iter()
                    .map(|o| (o.name.clone(), o.token.clone())),
            )
            .collect()
    }

    /// Names 1..=64 printable characters and unique, tokens not empty; `key` is `gateway.admin` or
    /// `plugin.admin`.
    pub(crate) fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        let mut seen = std::collections::HashSet::new();
        for (i, operator) in self.operators.iter().enumerate() {
            let entry = format!("{key}.operators[{i}]");
            let length = operator.name.chars().count();
            if !(1..=64).contains(&length) || operator.name.chars().any(char::is_control) {
                problems.push(Problem::new(
                    format!("{entry}.name"),
                    "must be 1 to 64 printable characters",
                ));
            } else if !seen.insert(operator.name.as_str()) {
                problems.push(Problem::new(
                    format!("{entry}.name"),
                    format!("`{}` is used by another operator", operator.name),
                ));
            }
            if operator.token.expose().is_empty() {
                problems.push(Problem::new(format!("{entry}.token"), "must not be empty"));
            }
        }
    }
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
        let (db, http) = (&self.database, &self.http);
        check_range("database.pool_size", db.pool_size, 1..=256, &mut problems);
        check_range(
            "database.connect_timeout_ms",
            db.connect_timeout_ms,
            1..=MAX_TIMEOUT_MS,
            &mut problems,
        );
        check_range(
            "database.busy_timeout_ms",
            db.busy_timeout_ms,
            0..=MAX_TIMEOUT_MS,
            &mut problems,
        );
        check_range(
            "http.max_body_bytes",
            http.max_body_bytes,
            1024..=64 * 1024 * 1024,
            &mut problems,
        );
        check_range("http.workers", http.workers, 0..=1024, &mut problems);
        check_range(
            "http.shutdown_timeout_seconds",
            http.shutdown_timeout_seconds,
            0..=3600,
            &mut problems,
        );
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

/// Longest timeout any `*_timeout_ms` key accepts: ten minutes.
pub(crate) const MAX_TIMEOUT_MS: u64 = 600_000;

/// Reports `key` when `value` lies outside `range`. Every numeric key has bounds, so that no value can
/// overflow the date and duration arithmetic it feeds, nor ask for absurd memory or time.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    problems: &mut Vec<Problem>,
) {
    if !range.contains(&value) {
        problems.push(Problem::new(
            key,
            format!(
                "must be between {} and {} (is {value})",
                range.start(),
                range.end()
            ),
        ));
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

#[cfg(test)]
mod tests {
    use super::from_value;
    use serde_json::{json, Value};

    fn problem_keys(value: &Value) -> Vec<String> {
        from_value(value.clone())
            .err()
            .map(|e| e.problems.into_iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn admin_operators_need_a_printable_unique_name_and_a_token() {
        let operators = |entries: Value| {
            json!({"gateway": {"admin": {"operators": entries.clone()}},
                   "plugin": {"admin": {"operators": entries}}})
        };
        assert!(problem_keys(&operators(json!([
            {"name": "ana", "token": "t1"}, {"name": "Luis Pérez", "token": "t2"}
        ])))
        .is_empty());
        for (entries, key) in [
            (json!([{"name": "", "token": "t"}]), "operators[0].name"),
            (
                json!([{"name": "x".repeat(65), "token": "t"}]),
                "operators[0].name",
            ),
            (
                json!([{"name": "a\u{7}b", "token": "t"}]),
                "operators[0].name",
            ),
            (json!([{"name": "ana", "token": ""}]), "operators[0].token"),
            (
                json!([{"name": "ana", "token": "a"}, {"name": "ana", "token": "b"}]),
                "operators[1].name",
            ),
        ] {
            let keys = problem_keys(&operators(entries));
            for service in ["gateway", "plugin"] {
                let expected = format!("{service}.admin.{key}");
                assert!(keys.contains(&expected), "{expected} not in {keys:?}");
            }
        }
    }

    /// One value just past a bound for every numeric key, with the key that must be named (and, where two
    /// keys are judged together, the other one too).
    fn out_of_range() -> Vec<(Value, &'static str)> {
        let max_age = |key: &str, value: u64| {
            json!({"plugin": {"policy": {"profiles": {
                "default": {"expiry": "max_age", key: value},
            }}}})
        };
        vec![
            (
                json!({"database": {"pool_size": 257}}),
                "database.pool_size",
            ),
            (
                json!({"database": {"connect_timeout_ms": 0}}),
                "database.connect_timeout_ms",
            ),
            (
                json!({"database": {"connect_timeout_ms": 600_001}}),
                "database.connect_timeout_ms",
            ),
            (
                json!({"database": {"busy_timeout_ms": 600_001}}),
                "database.busy_timeout_ms",
            ),
            (
                json!({"http": {"max_body_bytes": 67_108_865}}),
                "http.max_body_bytes",
            ),
            (json!({"http": {"workers": 1025}}), "http.workers"),
            (
                json!({"http": {"shutdown_timeout_seconds": 3601}}),
                "http.shutdown_timeout_seconds",
            ),
            (
                max_age("max_age_days", 1_000_000),
                "plugin.policy.profiles.default.max_age_days",
            ),
            (
                max_age("max_age_days", 3651),
                "plugin.policy.profiles.default.max_age_days",
            ),
            (
                max_age("reuse_window_days", 3651),
                "plugin.policy.profiles.default.reuse_window_days",
            ),
            (
                max_age("warn_before_days", u64::from(u32::MAX)),
                "plugin.policy.profiles.default.warn_before_days",
            ),
            (
                max_age("min_age_minutes", 525_601),
                "plugin.policy.profiles.default.min_age_minutes",
            ),
            (
                max_age("grace_logins", 101),
                "plugin.policy.profiles.default.grace_logins",
            ),
            (
                json!({"plugin": {"history": {"argon2": {"m_kib": 4_194_305}}}}),
                "plugin.history.argon2.m_kib",
            ),
            (
                json!({"plugin": {"history": {"argon2": {"t": 65}}}}),
                "plugin.history.argon2.t",
            ),
            (
                json!({"plugin": {"history": {"argon2": {"p": 17}}}}),
                "plugin.history.argon2.p",
            ),
            (
                json!({"plugin": {"history": {"max_queue_ms": 60_001}}}),
                "plugin.history.max_queue_ms",
            ),
            (
                json!({"plugin": {"history": {"max_concurrent_kdf": 257}}}),
                "plugin.history.max_concurrent_kdf",
            ),
            (
                json!({"plugin": {"kratos": {"admin_timeout_ms": 0}}}),
                "plugin.kratos.admin_timeout_ms",
            ),
            (
                json!({"plugin": {"kratos": {"admin_timeout_ms": 600_001}}}),
                "plugin.kratos.admin_timeout_ms",
            ),
            (
                json!({"gateway": {"messages": {"max_expires_in_seconds": 0}}}),
                "gateway.messages.max_expires_in_seconds",
            ),
            (
                json!({"gateway": {"zitadel": {"signature_tolerance_seconds": 0}}}),
                "gateway.zitadel.signature_tolerance_seconds",
            ),
            (
                json!({"gateway": {"zitadel": {"dedupe_window_seconds": 0}}}),
                "gateway.zitadel.dedupe_window_seconds",
            ),
            (
                json!({"gateway": {"zitadel": {"dedupe_window_seconds": 7 * 24 * 3600}}}),
                "gateway.zitadel.dedupe_window_seconds",
            ),
            (
                json!({"gateway": {"messages": {"max_expires_in_seconds": 31_536_001}}}),
                "gateway.messages.max_expires_in_seconds",
            ),
            (
                json!({"gateway": {"worker": {"lease_seconds": u64::MAX}}}),
                "gateway.worker.lease_seconds",
            ),
            (
                json!({"gateway": {"worker": {"lease_seconds": 86_401}}}),
                "gateway.worker.lease_seconds",
            ),
            (
                json!({"gateway": {"worker": {"poll_interval_ms": 60_001}}}),
                "gateway.worker.poll_interval_ms",
            ),
            (
                json!({"gateway": {"worker": {"send_timeout_ms": 0}}}),
                "gateway.worker.send_timeout_ms",
            ),
            (
                json!({"gateway": {"worker": {"send_timeout_ms": 600_001, "lease_seconds": 86_400}}}),
                "gateway.worker.send_timeout_ms",
            ),
            (
                json!({"gateway": {"retry": {"max_ms": 86_400_001}}}),
                "gateway.retry.max_ms",
            ),
            (
                json!({"gateway": {"retry": {"max_ms": u64::MAX}}}),
                "gateway.retry.max_ms",
            ),
            (
                json!({"gateway": {"retry": {"max_attempts": 101}}}),
                "gateway.retry.max_attempts",
            ),
            (
                json!({"gateway": {"channels": {"sms": {"max_per_second": 100_001}}}}),
                "gateway.channels.sms.max_per_second",
            ),
            (
                json!({"gateway": {"smtp": {"port": 0}}}),
                "gateway.smtp.port",
            ),
            (
                json!({"gateway": {"smtp": {"timeout_ms": 0}}}),
                "gateway.smtp.timeout_ms",
            ),
            (
                json!({"gateway": {"smtp": {"timeout_ms": 600_001}}}),
                "gateway.smtp.timeout_ms",
            ),
            (
                json!({"gateway": {"smtp": {"pool_max_size": 101}}}),
                "gateway.smtp.pool_max_size",
            ),
            (
                json!({"gateway": {"twilio": {"timeout_ms": 600_001}}}),
                "gateway.twilio.timeout_ms",
            ),
        ]
    }

    #[test]
    fn every_numeric_key_out_of_range_is_refused_naming_the_key_and_its_env_var() {
        for (value, key) in out_of_range() {
            let error = from_value(value.clone()).err().map(|e| e.to_string());
            let env = super::env_var_for(key);
            assert!(
                error
                    .as_ref()
                    .is_some_and(|e| e.contains(&format!("{key} ({env}): must be"))),
                "{value} → {error:?}"
            );
        }
    }

    #[test]
    fn numeric_bounds_accept_their_edges() {
        let edges = json!({
            "database": {"pool_size": 256, "connect_timeout_ms": 600_000, "busy_timeout_ms": 600_000},
            "http": {"max_body_bytes": 67_108_864, "workers": 1024, "shutdown_timeout_seconds": 3600},
            "plugin": {
                "policy": {"select": [], "profiles": {"default": {
                    "expiry": "max_age", "max_age_days": 3650, "warn_before_days": 3649,
                    "reuse_window_days": 3650, "min_age_minutes": 525_600, "grace_logins": 100,
                }}},
                "history": {"argon2": {"m_kib": 4_194_304, "t": 64, "p": 16}, "max_queue_ms": 60_000},
                "kratos": {"admin_timeout_ms": 600_000},
            },
            "gateway": {
                "messages": {"max_expires_in_seconds": 31_536_000},
                "worker": {"lease_seconds": 86_400, "poll_interval_ms": 60_000, "send_timeout_ms": 600_000},
                "retry": {"base_ms": 86_400_000, "max_ms": 86_400_000, "max_attempts": 100},
                "channels": {"sms": {"max_per_second": 100_000}},
                "smtp": {"port": 65_535, "timeout_ms": 600_000, "pool_max_size": 100},
                "twilio": {"timeout_ms": 600_000},
            },
        });
        assert_eq!(problem_keys(&edges), Vec::<String>::new());
    }
}
