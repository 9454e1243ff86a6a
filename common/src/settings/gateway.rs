//! The `[gateway]` section: the code and notice delivery service.

use super::{
    check_listen, check_range, AdminSettings, ApiSettings, Environment, KratosAuth, LimitsSettings,
    Problem, SmsSettings, StorageSettings, TwilioSettings, VerificationSettings, MAX_TIMEOUT_MS,
};
use crate::auth::HookCredentials;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Where the gateway's HTTP API, IdP courier adapters and provider callbacks listen.
    pub listen: String,
    /// The gateway's address as providers reach it (`https://gateway.example.com`), used to build status
    /// callback URLs and to check their signatures. Empty = no status callbacks are requested.
    pub public_url: String,
    /// Folder of message templates: `<templates_dir>/<template>/<locale>.toml`.
    pub templates_dir: String,
    pub api: ApiSettings,
    pub admin: AdminSettings,
    pub storage: StorageSettings,
    pub messages: MessageSettings,
    pub worker: WorkerSettings,
    pub retry: RetrySettings,
    pub retention: RetentionSettings,
    /// Abuse limits on sends per destination, client IP and identity.
    pub limits: LimitsSettings,
    /// Which phone numbers SMS and voice may reach, and the cap per number prefix.
    pub sms: SmsSettings,
    pub channels: ChannelsSettings,
    pub smtp: SmtpSettings,
    pub file: FileProviderSettings,
    /// The Twilio REST client used by the SMS and voice channels.
    pub twilio: TwilioSettings,
    pub verifications: VerificationSettings,
    /// Kratos's HTTP courier (`POST /hooks/kratos/courier`).
    pub kratos: CourierKratosSettings,
    /// Supabase Auth's send-sms and send-email hooks (`/hooks/supabase/send-sms`, `/send-email`).
    pub supabase: super::GatewaySupabaseSettings,
    /// ZITADEL's HTTP SMS and email providers (`/hooks/zitadel/sms`, `/hooks/zitadel/email`).
    pub zitadel: super::GatewayZitadelSettings,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4471".into(),
            public_url: String::new(),
            templates_dir: "config/templates".into(),
            api: ApiSettings::default(),
            admin: AdminSettings::default(),
            storage: StorageSettings::default(),
            messages: MessageSettings::default(),
            worker: WorkerSettings::default(),
            retry: RetrySettings::default(),
            retention: RetentionSettings::default(),
            limits: LimitsSettings::default(),
            sms: SmsSettings::default(),
            channels: ChannelsSettings::default(),
            smtp: SmtpSettings::default(),
            file: FileProviderSettings::default(),
            twilio: TwilioSettings::default(),
            verifications: VerificationSettings::default(),
            kratos: CourierKratosSettings::default(),
            supabase: super::GatewaySupabaseSettings::default(),
            zitadel: super::GatewayZitadelSettings::default(),
        }
    }
}

/// The `[gateway.kratos]` section: how Kratos's courier authenticates to `/hooks/kratos/courier` and what is
/// sent for its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CourierKratosSettings {
    /// How Kratos authenticates (its `request_config.auth`): `api_key` (a header) or `basic` (HTTP Basic).
    pub auth: KratosAuth,
    /// Header carrying the API key (Kratos `auth.config.name` with `in: header`).
    pub api_key_header: String,
    /// Accepted API keys (several, so keys can be rotated); empty = every courier call is refused with 401.
    /// Secret: also as api_keys_file.
    pub api_keys: Vec<Secret>,
    /// User for `auth = "basic"`.
    pub basic_user: String,
    /// Password for `auth = "basic"`. Secret: also as basic_password_file.
    pub basic_password: Secret,
    /// Send our own templates (`gateway.templates_dir`) for the Kratos template types we have one for; false =
    /// send the subject and body Kratos rendered. Voice calls always use our own templates.
    pub use_own_templates: bool,
    /// A courier call with the same recipient, template type and code (or link, or body) as one queued this
    /// recently is Kratos retrying it: answered 2xx, nothing queued. At most
    /// `gateway.retention.idempotency_hours`.
    pub dedupe_window_seconds: u64,
}

impl Default for CourierKratosSettings {
    fn default() -> Self {
        Self {
            auth: KratosAuth::ApiKey,
            api_key_header: "X-Reclaim-Key".into(),
            api_keys: Vec::new(),
            basic_user: "kratos".into(),
            basic_password: Secret::default(),
            use_own_templates: true,
            dedupe_window_seconds: 3_600,
        }
    }
}

impl CourierKratosSettings {
    /// The credentials Kratos's courier must present.
    pub fn credentials(&self) -> HookCredentials {
        HookCredentials {
            scheme: self.auth,
            api_key_header: self.api_key_header.clone(),
            api_keys: self.api_keys.clone(),
            basic_user: self.basic_user.clone(),
            basic_password: self.basic_password.clone(),
        }
    }

    fn validate(&self, retention: &RetentionSettings, problems: &mut Vec<Problem>) {
        if actix_web::http::header::HeaderName::from_bytes(self.api_key_header.as_bytes()).is_err()
        {
            problems.push(Problem::new(
                "gateway.kratos.api_key_header",
                "is not a valid header name",
            ));
        }
        if self.auth == KratosAuth::Basic && self.basic_password.is_empty() {
            problems.push(Problem::new(
                "gateway.kratos.basic_password",
                "is required when auth = \"basic\"",
            ));
        }
        // The dedupe record is an idempotency record: the janitor deletes it after idempotency_hours.
        let longest = u64::from(retention.idempotency_hours) * 3_600;
        if self.dedupe_window_seconds == 0 || self.dedupe_window_seconds > longest {
            problems.push(Problem::new(
                "gateway.kratos.dedupe_window_seconds",
                format!(
                    "must be between 1 and {longest} (gateway.retention.idempotency_hours, in seconds)"
                ),
            ));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSettings {
    /// Locale used when a request names none, and when a template lacks the requested one.
    pub default_locale: String,
    /// Longest `expires_in` a request may ask for.
    pub max_expires_in_seconds: u64,
}

impl Default for MessageSettings {
    fn default() -> Self {
        Self {
            default_locale: "en".into(),
            max_expires_in_seconds: 7 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Messages delivered at the same time by one process.
    pub concurrency: usize,
    /// How long a claimed message stays reserved for its worker; after that (a crashed worker) another
    /// worker may take it. Must exceed `send_timeout_ms`.
    pub lease_seconds: u64,
    /// How often an idle worker looks for due messages.
    pub poll_interval_ms: u64,
    /// A provider call taking longer counts as a transient failure.
    pub send_timeout_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease_seconds: 60,
            poll_interval_ms: 500,
            send_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Exponential backoff with full jitter: the n-th retry waits a random time in
    /// `[0, min(max_ms, base_ms * 2^(n-1))]`, and at least what the provider asked for (`Retry-After`).
    pub base_ms: u64,
    pub max_ms: u64,
    /// Attempts per fallback step (one channel and address) before the message moves to its next fallback
    /// step, or fails. Also the number of claims without an outcome (workers that died on the message) after
    /// which it fails.
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 300_000,
            max_attempts: 8,
        }
    }
}

/// What the retention janitor of `serve gateway` deletes, and how often it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Finished messages (sent, delivered, undelivered, failed, expired, canceled) are deleted, with their
    /// attempts, this many days after their last change; verifications this many days after they expired.
    pub message_days: u32,
    /// Idempotency records (remembered answers to retried requests) are deleted this many hours after the
    /// first request.
    pub idempotency_hours: u32,
    /// How often the janitor runs.
    pub interval_seconds: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            message_days: 30,
            idempotency_hours: 24,
            interval_seconds: 3_600,
        }
    }
}

/// Which provider delivers each channel, and where a message goes when its channel fails for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsSettings {
    pub email: ChannelSettings,
    pub sms: ChannelSettings,
    pub voice: ChannelSettings,
}

impl Default for ChannelsSettings {
    fn default() -> Self {
        Self {
            email: ChannelSettings::default(),
            sms: ChannelSettings {
                provider: ProviderKind::Console,
                fallback: vec!["voice".into()],
                max_per_second: 0,
            },
            voice: ChannelSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    pub provider: ProviderKind,
    /// Channels tried next, to the same phone number, after a permanent failure or an undelivered report.
    pub fallback: Vec<String>,
    /// Most sends per second on this channel from one process; 0 = no limit.
    pub max_per_second: u32,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Console,
            fallback: Vec::new(),
            max_per_second: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Smtp,
    Twilio,
    /// Development: logs a masked summary and the rendered message.
    Console,
    /// Development and tests: one JSON line per message in `gateway.file.dir`.
    File,
    /// Benchmarks only: accepts and drops every message.
    Discard,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Smtp => "smtp",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Console => "console",
            ProviderKind::File => "file",
            ProviderKind::Discard => "discard",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Empty = no authentication.
    pub username: String,
    pub password: Secret,
    /// Sender, e.g. `Example <no-reply@example.com>`.
    pub from: String,
    /// Connect and per-command timeout.
    pub timeout_ms: u64,
    /// Connections kept open to the server.
    pub pool_max_size: u32,
    /// DKIM signing: all three set = sign. The key file holds an RSA (PKCS#1 PEM) key.
    pub dkim_selector: String,
    pub dkim_domain: String,
    pub dkim_key_file: String,
    /// PEM file of CA certificates trusted for the server's certificate besides the built-in roots (a
    /// private CA); empty = the built-in roots only.
    pub ca_file: String,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: String::new(),
            password: Secret::default(),
            from: "Reclaim <no-reply@localhost>".into(),
            timeout_ms: 10_000,
            pool_max_size: 4,
            dkim_selector: String::new(),
            dkim_domain: String::new(),
            dkim_key_file: String::new(),
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileProviderSettings {
    /// Folder for `messages.jsonl` of the `file` provider (created if missing).
    pub dir: String,
}

impl Default for FileProviderSettings {
    fn default() -> Self {
        Self {
            dir: "var/outbox".into(),
        }
    }
}

const CHANNELS: &[&str] = &["email", "sms", "voice"];

impl GatewaySettings {
    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        check_listen("gateway.listen", &self.listen, problems);
        self.admin.validate("gateway.admin", problems);
        self.storage
            .validate("gateway.storage.keys", environment, problems);
        if !self.public_url.is_empty() {
            match url::Url::parse(&self.public_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(Problem::new(
                    "gateway.public_url",
                    "must be an absolute http(s) URL such as https://gateway.example.com",
                )),
            }
        }
        if self.templates_dir.is_empty() {
            problems.push(Problem::new("gateway.templates_dir", "must not be empty"));
        }
        if self.messages.default_locale.is_empty() {
            problems.push(Problem::new(
                "gateway.messages.default_locale",
                "must not be empty",
            ));
        }
        check_range(
            "gateway.messages.max_expires_in_seconds",
            self.messages.max_expires_in_seconds,
            1..=365 * 24 * 3600,
            problems,
        );
        let w = &self.worker;
        check_range(
            "gateway.worker.concurrency",
            w.concurrency,
            1..=256,
            problems,
        );
        check_range(
            "gateway.worker.lease_seconds",
            w.lease_seconds,
            1..=24 * 3600,
            problems,
        );
        check_range(
            "gateway.worker.poll_interval_ms",
            w.poll_interval_ms,
            1..=60_000,
            problems,
        );
        check_range(
            "gateway.worker.send_timeout_ms",
            w.send_timeout_ms,
            1..=MAX_TIMEOUT_MS,
            problems,
        );
        if w.lease_seconds.saturating_mul(1000) <= w.send_timeout_ms {
            problems.push(Problem::new(
                "gateway.worker.lease_seconds",
                "must be longer than gateway.worker.send_timeout_ms",
            ));
        }
        let r = &self.retry;
        // A day, as the retry schedule's own cap on any wait.
        check_range(
            "gateway.retry.max_ms",
            r.max_ms,
            1..=24 * 3600 * 1000,
            problems,
        );
        if r.base_ms == 0 || r.max_ms < r.base_ms {
            problems.push(Problem::new(
                "gateway.retry.base_ms",
                "must be at least 1 and at most gateway.retry.max_ms",
            ));
        }
        check_range(
            "gateway.retry.max_attempts",
            r.max_attempts,
            1..=100,
            problems,
        );
        let k = &self.retention;
        check_range(
            "gateway.retention.message_days",
            k.message_days,
            1..=3_650,
            problems,
        );
        check_range(
            "gateway.retention.idempotency_hours",
            k.idempotency_hours,
            1..=8_760,
            problems,
        );
        check_range(
            "gateway.retention.interval_seconds",
            k.interval_seconds,
            1..=86_400,
            problems,
        );
        self.limits.validate(problems);
        self.sms.validate(problems);
        for (name, channel) in [
            ("email", &self.channels.email),
            ("sms", &self.channels.sms),
            ("voice", &self.channels.voice),
        ] {
            check_range(
                &format!("gateway.channels.{name}.max_per_second"),
                channel.max_per_second,
                0..=100_000,
                problems,
            );
            let key = format!("gateway.channels.{name}.provider");
            let fits = match channel.provider {
                ProviderKind::Smtp => name == "email",
                ProviderKind::Twilio => name != "email",
                ProviderKind::Console | ProviderKind::File | ProviderKind::Discard => true,
            };
            if !fits {
                problems.push(Problem::new(
                    &key,
                    format!("`{}` cannot deliver {name}", channel.provider.name()),
                ));
            }
            if environment == Environment::Production
                && matches!(
                    channel.provider,
                    ProviderKind::Console | ProviderKind::File | ProviderKind::Discard
                )
            {
                problems.push(Problem::new(
                    &key,
                    format!(
                        "`{}` is for development; production needs a real provider",
                        channel.provider.name()
                    ),
                ));
            }
            for (i, next) in channel.fallback.iter().enumerate() {
                let key = format!("gateway.channels.{name}.fallback[{i}]");
                if !CHANNELS.contains(&next.as_str()) {
                    problems.push(Problem::new(key, "must be email, sms or voice"));
                } else if (name == "email") != (next == "email") {
                    problems.push(Problem::new(
                        key,
                        "a configured fallback reuses the address, so email falls back only to email \
                         (give an alternate address per message) and sms/voice only to sms/voice",
                    ));
                } else if next == name {
                    problems.push(Problem::new(key, "must differ from the channel itself"));
                }
            }
        }
        check_range("gateway.smtp.port", self.smtp.port, 1..=u16::MAX, problems);
        check_range(
            "gateway.smtp.timeout_ms",
            self.smtp.timeout_ms,
            1..=MAX_TIMEOUT_MS,
            problems,
        );
        check_range(
            "gateway.smtp.pool_max_size",
            self.smtp.pool_max_size,
            1..=100,
            problems,
        );
        if self.smtp.host.is_empty() {
            problems.push(Problem::new("gateway.smtp.host", "must not be empty"));
        }
        // Fully parsed by the SMTP provider at start-up; this catches the obvious mistake early.
        if !self.smtp.from.contains('@') {
            problems.push(Problem::new(
                "gateway.smtp.from",
                "must be an address such as `Example <no-reply@example.com>`",
            ));
        }
        if !self.smtp.ca_file.is_empty() && self.smtp.security == SmtpSecurity::None {
            problems.push(Problem::new(
                "gateway.smtp.ca_file",
                "is used only with security = \"starttls\" or \"tls\"",
            ));
        }
        let dkim = [
            &self.smtp.dkim_selector,
            &self.smtp.dkim_domain,
            &self.smtp.dkim_key_file,
        ];
        if dkim.iter().any(|v| v.is_empty()) && dkim.iter().any(|v| !v.is_empty()) {
            problems.push(Problem::new(
                "gateway.smtp.dkim_key_file",
                "DKIM needs dkim_selector, dkim_domain and dkim_key_file together",
            ));
        }
        if self.file.dir.is_empty() {
            problems.push(Problem::new("gateway.file.dir", "must not be empty"));
        }
        self.twilio.validate(environment, problems);
        self.verifications.validate(problems);
        self.kratos.validate(&self.retention, problems);
        self.supabase.validate(problems);
        self.zitadel
            .validate(self.retention.idempotency_hours, problems);
        let sms_twilio = self.channels.sms.provider == ProviderKind::Twilio;
        let voice_twilio = self.channels.voice.provider == ProviderKind::Twilio;
        if sms_twilio {
            self.twilio.require_complete(problems);
        }
        if voice_twilio {
            self.twilio.require_voice(problems);
        }
        if (sms_twilio || voice_twilio) && self.public_url.is_empty() {
            problems.push(Problem::new(
                "gateway.public_url",
                "is needed for Twilio status callbacks (delivery reports, and sms → voice fallback when an SMS \
                 is undelivered)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::from_value;
    use serde_json::json;

    fn problems(value: serde_json::Value) -> Vec<String> {
        from_value(value)
            .err()
            .map(|e| e.problems.into_iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn providers_must_suit_their_channel_and_production_refuses_development_ones() {
        assert_eq!(
            problems(json!({"gateway": {"channels": {"sms": {"provider": "smtp"}}}})),
            vec!["gateway.channels.sms.provider".to_string()]
        );
        let production = problems(json!({"environment": "production"}));
        for channel in ["email", "sms", "voice"] {
            assert!(
                production.contains(&format!("gateway.channels.{channel}.provider")),
                "{production:?}"
            );
        }
    }

    #[test]
    fn fallbacks_leases_and_callbacks_are_checked() {
        assert_eq!(
            problems(json!({"gateway": {"channels": {"email": {"fallback": ["sms"]}}}})),
            vec!["gateway.channels.email.fallback[0]".to_string()]
        );
        assert_eq!(
            problems(
                json!({"gateway": {"worker": {"lease_seconds": 10, "send_timeout_ms": 30000}}})
            ),
            vec!["gateway.worker.lease_seconds".to_string()]
        );
        let twilio_without_url = problems(json!({"gateway": {
            "channels": {"sms": {"provider": "twilio"}},
            "twilio": {"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t", "from": "+14155552671"},
        }}));
        assert_eq!(twilio_without_url, vec!["gateway.public_url".to_string()]);
    }

    #[test]
    fn a_ca_file_needs_a_tls_security_mode() {
        assert_eq!(
            problems(json!({"gateway": {"smtp": {"security": "none", "ca_file": "ca.pem"}}})),
            vec!["gateway.smtp.ca_file".to_string()]
        );
        assert!(problems(json!({"gateway": {"smtp": {"ca_file": "ca.pem"}}})).is_empty());
    }

    #[test]
    fn kratos_courier_keys_are_checked() {
        assert_eq!(
            problems(json!({"gateway": {"kratos": {
                "auth": "basic", "api_key_header": "bad header", "dedupe_window_seconds": 90000,
            }}})),
            vec![
                "gateway.kratos.api_key_header".to_string(),
                "gateway.kratos.basic_password".to_string(),
                "gateway.kratos.dedupe_window_seconds".to_string(),
            ]
        );
        assert!(problems(json!({"gateway": {
            "kratos": {"dedupe_window_seconds": 90000}, "retention": {"idempotency_hours": 25},
        }}))
        .is_empty());
    }

    #[test]
    fn retention_bounds_are_checked() {
        assert_eq!(
            problems(json!({"gateway": {"retention": {
                "message_days": 0, "idempotency_hours": 9000, "interval_seconds": 0,
            }}})),
            vec![
                "gateway.retention.message_days".to_string(),
                "gateway.retention.idempotency_hours".to_string(),
                "gateway.retention.interval_seconds".to_string(),
            ]
        );
        assert!(problems(json!({"gateway": {"retention": {"message_days": 3650}}})).is_empty());
    }
}
