//! The `[plugin.notices]` section: the security notices the plugin sends through the gateway ("your password
//! was changed", "your password expires in N days", "you must change your password").

use super::{check_range, Problem};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoticeSettings {
    /// Send notices at all. Off by default: the gateway needs a working email (or SMS) provider first.
    pub enabled: bool,
    /// The gateway's base URL, e.g. `http://127.0.0.1:4471`. Empty: `reclaim serve all` uses the gateway it
    /// runs; a plugin on its own keeps its notices queued until this is set.
    pub gateway_url: String,
    /// A bearer token the gateway accepts (one of `gateway.api.tokens`). Empty: `serve all` uses the first of
    /// `gateway.api.tokens`. Secret: also as gateway_token_file.
    pub gateway_token: Secret,
    /// "Your password was changed" after every committed change.
    pub password_changed: bool,
    /// "You must change your password" when an administrator forces a change or marks it compromised.
    pub must_change: bool,
    /// "Your password expires in N days" once per identity and expiry date, for `max_age` profiles, from
    /// `warn_before_days` before the expiry.
    pub expiry_warnings: bool,
    /// How often the plugin looks for identities entering their warning window.
    pub scan_interval_seconds: u64,
    /// How often the plugin looks for notices due to be handed to the gateway.
    pub poll_interval_ms: u64,
    /// Longest wait between two tries of one notice while the gateway is unreachable.
    pub max_retry_seconds: u64,
}

impl Default for NoticeSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            gateway_url: String::new(),
            gateway_token: Secret::default(),
            password_changed: true,
            must_change: true,
            expiry_warnings: true,
            scan_interval_seconds: 3_600,
            poll_interval_ms: 1_000,
            max_retry_seconds: 600,
        }
    }
}

impl NoticeSettings {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        if !self.gateway_url.is_empty() {
            match url::Url::parse(&self.gateway_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => problems.push(Problem::new(
                    "plugin.notices.gateway_url",
                    "must be an http(s) URL such as http://127.0.0.1:4471",
                )),
            }
        }
        check_range(
            "plugin.notices.scan_interval_seconds",
            self.scan_interval_seconds,
            1..=86_400,
            problems,
        );
        check_range(
            "plugin.notices.poll_interval_ms",
            self.poll_interval_ms,
            10..=60_000,
            problems,
        );
        check_range(
            "plugin.notices.max_retry_seconds",
            self.max_retry_seconds,
            1..=86_400,
            problems,
        );
    }
}
