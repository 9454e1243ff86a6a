//! The `[gateway.twilio]` section: credentials and defaults of the Twilio REST client (SMS and voice).
//!
//! Every key is optional here because a deployment that delivers through email only never talks to Twilio.
//! Values that are set are checked for their format; whether they are complete is checked by the gateway,
//! which knows which channels use Twilio, through [`TwilioSettings::require_complete`] and
//! [`TwilioSettings::require_voice`].

use super::{check_range, Environment, Problem, MAX_TIMEOUT_MS};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Twilio's own bounds for `ValidityPeriod` on `Messages.json`, in seconds.
pub const TWILIO_VALIDITY_PERIOD_SECONDS: std::ops::RangeInclusive<u32> = 1..=36_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioSettings {
    /// Root of Twilio's REST API; a regional edge such as `https://api.dublin.ie1.twilio.com`, or a local
    /// mock in tests.
    pub base_url: String,
    /// The account that sends (`AC…`).
    pub account_sid: String,
    /// The account's auth token: the Basic auth password when no API key is set, and the key that signs
    /// status callbacks.
    pub auth_token: Secret,
    /// An API key (`SK…`) used for Basic auth instead of the auth token when set.
    pub api_key_sid: String,
    pub api_key_secret: Secret,
    /// Sender of SMS (E.164). Ignored when `messaging_service_sid` is set.
    pub from: String,
    /// A Messaging Service (`MG…`) that picks the sender from its pool; wins over `from`.
    pub messaging_service_sid: String,
    /// Caller id of voice calls (E.164); empty = `from`.
    pub voice_from: String,
    /// Whole-request timeout towards Twilio; a slower answer is a transient failure.
    pub timeout_ms: u64,
    /// Upper bound of the SMS `ValidityPeriod`; the message's own expiry lowers it further.
    pub max_validity_period_seconds: u32,
    /// `<Say voice="…">` of voice calls (`man`, `woman`, `Polly.Lucia`, `Google.es-ES-Standard-A`, …);
    /// empty = Twilio's default voice for the language.
    pub voice_name: String,
    /// Silence between two digits of a spoken code.
    pub voice_digit_pause_seconds: u32,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            api_key_sid: String::new(),
            api_key_secret: Secret::default(),
            from: String::new(),
            messaging_service_sid: String::new(),
            voice_from: String::new(),
            timeout_ms: 10_000,
            max_validity_period_seconds: 36_000,
            voice_name: String::new(),
            voice_digit_pause_seconds: 1,
        }
    }
}

impl TwilioSettings {
    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        let base_url = url::Url::parse(&self.base_url);
        let https = match &base_url {
            Ok(url) if url.scheme() == "https" || url.scheme() == "http" => url.scheme() == "https",
            _ => {
                problems.push(Problem::new(
                    "gateway.twilio.base_url",
                    "must be an absolute URL like https://api.twilio.com",
                ));
                true
            }
        };
        if !https && environment == Environment::Production {
            problems.push(Problem::new(
                "gateway.twilio.base_url",
                "must use https:// in production (http:// is for local mocks)",
            ));
        }
        if let Some((host, replacement)) = base_url.as_ref().ok().and_then(legacy_edge_replacement)
        {
            problems.push(Problem::new(
                "gateway.twilio.base_url",
                format!("Twilio retired `{host}` on 2026-04-28; use https://{replacement}"),
            ));
        }
        check_sid(
            "gateway.twilio.account_sid",
            &self.account_sid,
            "AC",
            problems,
        );
        check_sid(
            "gateway.twilio.api_key_sid",
            &self.api_key_sid,
            "SK",
            problems,
        );
        check_sid(
            "gateway.twilio.messaging_service_sid",
            &self.messaging_service_sid,
            "MG",
            problems,
        );
        check_e164("gateway.twilio.from", &self.from, problems);
        check_e164("gateway.twilio.voice_from", &self.voice_from, problems);
        if !self.api_key_sid.is_empty() && self.api_key_secret.is_empty() {
            problems.push(Problem::new(
                "gateway.twilio.api_key_secret",
                "is required when api_key_sid is set",
            ));
        }
        if self.api_key_sid.is_empty() && !self.api_key_secret.is_empty() {
            problems.push(Problem::new(
                "gateway.twilio.api_key_sid",
                "is required when api_key_secret is set",
            ));
        }
        check_range(
            "gateway.twilio.timeout_ms",
            self.timeout_ms,
            1..=MAX_TIMEOUT_MS,
            problems,
        );
        if !TWILIO_VALIDITY_PERIOD_SECONDS.contains(&self.max_validity_period_seconds) {
            problems.push(Problem::new(
                "gateway.twilio.max_validity_period_seconds",
                "must be between 1 and 36000 (Twilio's limits)",
            ));
        }
        if self.voice_digit_pause_seconds > 10 {
            problems.push(Problem::new(
                "gateway.twilio.voice_digit_pause_seconds",
                "must be at most 10",
            ));
        }
        if self.voice_name.chars().any(|c| c.is_control()) {
            problems.push(Problem::new(
                "gateway.twilio.voice_name",
                "must not contain control characters",
            ));
        }
    }

    /// Adds a problem for each setting that sending SMS through Twilio needs and that is missing: the
    /// account, a credential, and a sender (`from` or `messaging_service_sid`).
    pub fn require_complete(&self, problems: &mut Vec<Problem>) {
        self.require_credentials(problems);
        if self.from.is_empty() && self.messaging_service_sid.is_empty() {
            problems.push(Problem::new(
                "gateway.twilio.from",
                "is required to send SMS through Twilio (or set messaging_service_sid)",
            ));
        }
    }

    /// Adds a problem for each setting that placing calls through Twilio needs and that is missing: the
    /// account, a credential, and a caller id (`voice_from` or `from`; a Messaging Service cannot call).
    pub fn require_voice(&self, problems: &mut Vec<Problem>) {
        self.require_credentials(problems);
        if self.voice_caller().is_none() {
            problems.push(Problem::new(
                "gateway.twilio.voice_from",
                "is required to place calls through Twilio (or set from)",
            ));
        }
    }

    fn require_credentials(&self, problems: &mut Vec<Problem>) {
        if self.account_sid.is_empty() {
            problems.push(Problem::new(
                "gateway.twilio.account_sid",
                "is required to deliver through Twilio",
            ));
        }
        if self.auth_token.is_empty() && self.api_key_sid.is_empty() {
            problems.push(Problem::new(
                "gateway.twilio.auth_token",
                "is required to deliver through Twilio (or set api_key_sid and api_key_secret)",
            ));
        }
    }

    /// The caller id of voice calls: `voice_from`, else `from`.
    pub fn voice_caller(&self) -> Option<&str> {
        [&self.voice_from, &self.from]
            .into_iter()
            .find(|n| !n.is_empty())
            .map(String::as_str)
    }
}

/// Twilio's retired `api.<legacy-edge>.twilio.com` hostnames and the hostname that replaced each.
fn legacy_edge_replacement(url: &url::Url) -> Option<(String, &'static str)> {
    let host = url.host_str()?.to_ascii_lowercase();
    let replacement = match host.as_str() {
        "api.ie1.twilio.com" => Some("api.dublin.ie1.twilio.com"),
        "api.au1.twilio.com" => Some("api.sydney.au1.twilio.com"),
        "api.br1.twilio.com" | "api.de1.twilio.com" | "api.jp1.twilio.com"
        | "api.sg1.twilio.com" | "api.us2.twilio.com" => Some("api.twilio.com"),
        _ => None,
    }?;
    Some((host, replacement))
}

/// Twilio SIDs are two letters and 32 hexadecimal digits.
fn check_sid(key: &str, value: &str, prefix: &str, problems: &mut Vec<Problem>) {
    if value.is_empty() {
        return;
    }
    let valid = value.len() == 34
        && value.starts_with(prefix)
        && value[2..].chars().all(|c| c.is_ascii_hexdigit());
    if !valid {
        problems.push(Problem::new(
            key,
            format!("must be `{prefix}` followed by 32 hexadecimal digits"),
        ));
    }
}

fn check_e164(key: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.is_empty() {
        return;
    }
    let valid = value.starts_with('+')
        && phonenumber::parse(None, value)
            .map(|number| {
                phonenumber::is_valid(&number)
                    && number.format().mode(phonenumber::Mode::E164).to_string() == value
            })
            .unwrap_or(false);
    if !valid {
        problems.push(Problem::new(
            key,
            format!("`{value}` is not a phone number in E.164 form like +14155552671"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(settings: &TwilioSettings, environment: Environment) -> Vec<String> {
        let mut problems = Vec::new();
        settings.validate(environment, &mut problems);
        problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn the_defaults_are_valid_and_incomplete() {
        let settings = TwilioSettings::default();
        assert!(keys(&settings, Environment::Production).is_empty());
        let mut problems = Vec::new();
        settings.require_complete(&mut problems);
        let missing: Vec<_> = problems.into_iter().map(|p| p.key).collect();
        assert_eq!(
            missing,
            [
                "gateway.twilio.account_sid",
                "gateway.twilio.auth_token",
                "gateway.twilio.from"
            ]
        );
    }

    #[test]
    fn sids_numbers_and_ranges_are_checked_when_set() {
        let settings = TwilioSettings {
            base_url: "api.twilio.com".into(),
            account_sid: "SK0123456789abcdef0123456789abcdef".into(),
            api_key_sid: "SK0123456789abcdef0123456789abcdeg".into(),
            api_key_secret: Secret::new("s"),
            messaging_service_sid: "MG123".into(),
            from: "4155552671".into(),
            voice_from: "+1415555267".into(),
            timeout_ms: 0,
            max_validity_period_seconds: 36_001,
            voice_digit_pause_seconds: 11,
            ..TwilioSettings::default()
        };
        assert_eq!(
            keys(&settings, Environment::Development),
            [
                "gateway.twilio.base_url",
                "gateway.twilio.account_sid",
                "gateway.twilio.api_key_sid",
                "gateway.twilio.messaging_service_sid",
                "gateway.twilio.from",
                "gateway.twilio.voice_from",
                "gateway.twilio.timeout_ms",
                "gateway.twilio.max_validity_period_seconds",
                "gateway.twilio.voice_digit_pause_seconds",
            ]
        );
    }

    #[test]
    fn a_complete_api_key_configuration_passes() {
        let settings = TwilioSettings {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            api_key_sid: "SK0123456789abcdef0123456789abcdef".into(),
            api_key_secret: Secret::new("secret"),
            messaging_service_sid: "MG0123456789abcdef0123456789abcdef".into(),
            voice_from: "+14155552671".into(),
            ..TwilioSettings::default()
        };
        assert!(keys(&settings, Environment::Production).is_empty());
        let mut problems = Vec::new();
        settings.require_complete(&mut problems);
        settings.require_voice(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn an_api_key_needs_its_secret_and_voice_needs_a_caller_id() {
        let settings = TwilioSettings {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            api_key_sid: "SK0123456789abcdef0123456789abcdef".into(),
            messaging_service_sid: "MG0123456789abcdef0123456789abcdef".into(),
            ..TwilioSettings::default()
        };
        assert_eq!(
            keys(&settings, Environment::Development),
            ["gateway.twilio.api_key_secret"]
        );
        let mut problems = Vec::new();
        settings.require_voice(&mut problems);
        let missing: Vec<_> = problems.into_iter().map(|p| p.key).collect();
        assert_eq!(missing, ["gateway.twilio.voice_from"]);
    }

    #[test]
    fn retired_legacy_edge_hostnames_are_refused_with_their_replacement() {
        let legacy = TwilioSettings {
            base_url: "https://api.ie1.twilio.com".into(),
            ..TwilioSettings::default()
        };
        let mut problems = Vec::new();
        legacy.validate(Environment::Production, &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .message
                .contains("https://api.dublin.ie1.twilio.com"),
            "{}",
            problems[0].message
        );
        let current = TwilioSettings {
            base_url: "https://api.sydney.au1.twilio.com".into(),
            ..TwilioSettings::default()
        };
        assert!(keys(&current, Environment::Production).is_empty());
    }

    #[test]
    fn plain_http_is_refused_in_production_only() {
        let settings = TwilioSettings {
            base_url: "http://127.0.0.1:4010".into(),
            ..TwilioSettings::default()
        };
        assert!(keys(&settings, Environment::Development).is_empty());
        assert_eq!(
            keys(&settings, Environment::Production),
            ["gateway.twilio.base_url"]
        );
    }
}
