//! The `[plugin.kratos]` section: how Ory Kratos reaches our hooks and how we reach Kratos's admin API.

use super::{check_listen, check_range, Environment, Problem, MAX_TIMEOUT_MS};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KratosSettings {
    /// How Kratos authenticates to our hooks: `api_key` (a header) or `basic` (HTTP Basic).
    pub auth: KratosAuth,
    /// Header carrying the API key (Kratos `auth.config.name` with `in: header`).
    pub api_key_header: String,
    /// Accepted API keys (several, so keys can be rotated). Secret: also as api_keys_file.
    pub api_keys: Vec<Secret>,
    /// User for `auth = "basic"`.
    pub basic_user: String,
    /// Password for `auth = "basic"`. Secret: also as basic_password_file.
    pub basic_password: Secret,
    /// Kratos admin API base URL (e.g. http://kratos:4434). Empty = do not call Kratos (no hash import).
    pub admin_url: String,
    /// Bearer token for the admin API (Ory Network API key); empty for a self-hosted admin port.
    pub admin_token: Secret,
    pub admin_timeout_ms: u64,
    /// At first contact with an identity, import its current password hash as the first history entry.
    pub import_password_hash: bool,
    /// JSON pointers into `traits` for the addresses that security notices go to.
    pub email_pointer: String,
    pub phone_pointer: String,
    /// Refuse a settings password change when the edge guard staged no history verdict for it (set true once
    /// the guard fronts Kratos, so a change that bypassed it is refused).
    pub require_staged_verdict: bool,
    /// What each hook answers when our database is unavailable: `open` lets the flow go on, `closed` refuses it.
    pub on_error: KratosOnError,
    /// Kratos's public API base URL (e.g. http://kratos:4433): where the edge guard forwards requests and asks
    /// `/sessions/whoami`. Required when `guard.listen` is set.
    pub public_url: String,
    /// The edge guard: a reverse proxy in front of Kratos's public API that checks password submissions.
    pub guard: GuardSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// Where the guard listens (clients and the UI talk to it instead of Kratos). Empty = no guard.
    pub listen: String,
    /// `reclaim serve guard` only: where the guard's own /health and /metrics listen (with `serve all` they
    /// are on the plugin's listener).
    pub ops_listen: String,
    /// How long a staged verdict can be used: at least as long as Kratos can resume a paused settings
    /// submission (privileged session refresh).
    pub verdict_ttl_seconds: u64,
    /// The largest password submission body the guard reads to find the password; larger ones are passed
    /// through unchecked and Kratos's settings hook decides by `require_staged_verdict`.
    pub max_submission_bytes: u64,
    /// Time allowed for Kratos to answer a forwarded request (and `/sessions/whoami`).
    pub upstream_timeout_ms: u64,
    /// Your recovery UI page (Kratos's `selfservice.flows.recovery.ui_url`): a browser whose code send the
    /// limits refused is sent back there with `?flow=<id>`. Empty = such browsers get the flow as JSON.
    pub recovery_ui_url: String,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            listen: String::new(),
            ops_listen: "127.0.0.1:4473".into(),
            verdict_ttl_seconds: 3_600,
            max_submission_bytes: 64 * 1024,
            upstream_timeout_ms: 30_000,
            recovery_ui_url: String::new(),
        }
    }
}

impl Default for KratosSettings {
    fn default() -> Self {
        Self {
            auth: KratosAuth::ApiKey,
            api_key_header: "X-Reclaim-Key".into(),
            api_keys: Vec::new(),
            basic_user: "kratos".into(),
            basic_password: Secret::default(),
            admin_url: String::new(),
            admin_token: Secret::default(),
            admin_timeout_ms: 5_000,
            import_password_hash: true,
            email_pointer: "/email".into(),
            phone_pointer: "/phone".into(),
            require_staged_verdict: false,
            on_error: KratosOnError::default(),
            public_url: String::new(),
            guard: GuardSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KratosAuth {
    #[default]
    ApiKey,
    Basic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KratosOnError {
    pub registration: FailurePolicy,
    pub login: FailurePolicy,
    pub recovery: FailurePolicy,
    pub settings: FailurePolicy,
}

impl Default for KratosOnError {
    fn default() -> Self {
        Self {
            registration: FailurePolicy::Open,
            login: FailurePolicy::Open,
            recovery: FailurePolicy::Open,
            settings: FailurePolicy::Closed,
        }
    }
}

impl KratosSettings {
    /// The credentials Kratos's web hooks must present.
    pub fn credentials(&self) -> crate::auth::HookCredentials {
        crate::auth::HookCredentials {
            scheme: self.auth,
            api_key_header: self.api_key_header.clone(),
            api_keys: self.api_keys.clone(),
            basic_user: self.basic_user.clone(),
            basic_password: self.basic_password.clone(),
        }
    }

    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        check_range(
            "plugin.kratos.admin_timeout_ms",
            self.admin_timeout_ms,
            1..=MAX_TIMEOUT_MS,
            problems,
        );
        if !self.admin_url.is_empty() {
            match url::Url::parse(&self.admin_url) {
                Err(_) => problems.push(Problem::new("plugin.kratos.admin_url", "is not a URL")),
                // The admin API answers with password hashes (and takes admin_token): never in clear over
                // a network in production.
                Ok(url)
                    if environment == Environment::Production
                        && url.scheme() == "http"
                        && !is_loopback(&url) =>
                {
                    problems.push(Problem::new(
                        "plugin.kratos.admin_url",
                        "must use https:// in production unless the host is loopback (127.0.0.1, ::1, \
                         localhost): the admin API returns password hashes",
                    ))
                }
                Ok(_) => {}
            }
        }
        if actix_web::http::header::HeaderName::from_bytes(self.api_key_header.as_bytes()).is_err()
        {
            problems.push(Problem::new(
                "plugin.kratos.api_key_header",
                "is not a valid header name",
            ));
        }
        for (key, pointer) in [
            ("plugin.kratos.email_pointer", &self.email_pointer),
            ("plugin.kratos.phone_pointer", &self.phone_pointer),
        ] {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                problems.push(Problem::new(key, "must be a JSON pointer starting with /"));
            }
        }
        self.validate_guard(problems);
        if self.auth == KratosAuth::Basic && self.basic_password.is_empty() {
            problems.push(Problem::new(
                "plugin.kratos.basic_password",
                "is required when auth = \"basic\"",
            ));
        }
    }
}

impl KratosSettings {
    fn validate_guard(&self, problems: &mut Vec<Problem>) {
        let guard = &self.guard;
        check_range(
            "plugin.kratos.guard.verdict_ttl_seconds",
            guard.verdict_ttl_seconds,
            // Kratos resumes a paused settings submission for up to 15 minutes; a day is plenty.
            900..=86_400,
            problems,
        );
        check_range(
            "plugin.kratos.guard.max_submission_bytes",
            guard.max_submission_bytes,
            1_024..=1_048_576,
            problems,
        );
        check_range(
            "plugin.kratos.guard.upstream_timeout_ms",
            guard.upstream_timeout_ms,
            1..=MAX_TIMEOUT_MS,
            problems,
        );
        if !guard.recovery_ui_url.is_empty() {
            match url::Url::parse(&guard.recovery_ui_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(Problem::new(
                    "plugin.kratos.guard.recovery_ui_url",
                    "must be an absolute http(s) URL such as https://app.example.com/recovery",
                )),
            }
        }
        if !guard.listen.is_empty() {
            check_listen("plugin.kratos.guard.listen", &guard.listen, problems);
            if self.public_url.is_empty() {
                problems.push(Problem::new(
                    "plugin.kratos.public_url",
                    "is required when plugin.kratos.guard.listen is set",
                ));
            }
        }
        check_listen(
            "plugin.kratos.guard.ops_listen",
            &guard.ops_listen,
            problems,
        );
        if !self.public_url.is_empty() {
            match url::Url::parse(&self.public_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => problems.push(Problem::new(
                    "plugin.kratos.public_url",
                    "is not an http(s) URL",
                )),
            }
        }
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::from_value;
    use serde_json::json;

    fn admin_url_problems(environment: &str, admin_url: &str) -> Vec<String> {
        from_value(
            json!({"environment": environment, "plugin": {"kratos": {"admin_url": admin_url}}}),
        )
        .err()
        .map(|e| e.problems.into_iter().map(|p| p.key).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k == "plugin.kratos.admin_url")
        .collect()
    }

    #[test]
    fn production_refuses_a_plain_http_admin_url_unless_it_is_loopback() {
        assert_eq!(
            admin_url_problems("production", "http://kratos:4434"),
            vec!["plugin.kratos.admin_url".to_string()]
        );
        for allowed in [
            "https://kratos:4434",
            "http://127.0.0.1:4434",
            "http://[::1]:4434",
            "http://localhost:4434",
        ] {
            assert!(
                admin_url_problems("production", allowed).is_empty(),
                "{allowed}"
            );
        }
        assert!(admin_url_problems("development", "http://kratos:4434").is_empty());
    }
}
