//! The `[plugin.zitadel]` section (Actions v2 targets, `/hooks/zitadel/set-password*`) and the
//! `[gateway.zitadel]` section (HTTP SMS and email providers, `/hooks/zitadel/sms` and `/email`), both
//! authenticated by the `ZITADEL-Signature` header (see [`crate::auth::zitadel`]).

use super::{check_range, Problem};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Longest signature tolerance accepted: an hour; ZITADEL's own default is 300 s.
const MAX_TOLERANCE_SECONDS: u64 = 3_600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginZitadelSettings {
    /// Signing keys of the ZITADEL targets that call the set-password hooks (ZITADEL shows a target's key once,
    /// when it is created); several allow rotation. Empty = every call is refused with 401. Secret: also as
    /// signing_keys_file.
    pub signing_keys: Vec<Secret>,
    /// A signature older than this is refused (401) as a replay; newer timestamps are accepted.
    pub signature_tolerance_seconds: u64,
    /// When an allowed new password enters the history: `response` (the response execution
    /// `/hooks/zitadel/set-password/response`, called only after ZITADEL saved the password) or `request` (at
    /// once, when the request is allowed; a call ZITADEL then fails still counts as used).
    pub commit_on: ZitadelCommitOn,
}

impl Default for PluginZitadelSettings {
    fn default() -> Self {
        Self {
            signing_keys: Vec::new(),
            signature_tolerance_seconds: 300,
            commit_on: ZitadelCommitOn::Response,
        }
    }
}

/// When the plugin records a password ZITADEL is asked to set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZitadelCommitOn {
    #[default]
    Response,
    Request,
}

impl PluginZitadelSettings {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        check_range(
            "plugin.zitadel.signature_tolerance_seconds",
            self.signature_tolerance_seconds,
            1..=MAX_TOLERANCE_SECONDS,
            problems,
        );
    }
}

/// `[gateway.zitadel]`: ZITADEL's HTTP SMS and email providers (`POST /hooks/zitadel/sms`, `/hooks/zitadel/email`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayZitadelSettings {
    /// Signing keys of the ZITADEL HTTP providers that call the hooks (ZITADEL returns a provider's key once,
    /// when it is created); several allow rotation and one SMS plus one email provider. Empty = every call is
    /// refused with 401. Secret: also as signing_keys_file.
    pub signing_keys: Vec<Secret>,
    /// A signature older than this is refused (401) as a replay; newer timestamps are accepted.
    pub signature_tolerance_seconds: u64,
    /// Send our own templates (`gateway.templates_dir`, in `gateway.messages.default_locale`: ZITADEL sends no
    /// language) for the ZITADEL events we have one for and that carry a code; false = send the text ZITADEL
    /// rendered.
    pub use_own_templates: bool,
    /// A call with the same recipient, event type and code (or text) as one queued this recently is ZITADEL
    /// retrying it: answered 2xx, nothing queued. At most `gateway.retention.idempotency_hours`.
    pub dedupe_window_seconds: u64,
}

impl Default for GatewayZitadelSettings {
    fn default() -> Self {
        Self {
            signing_keys: Vec::new(),
            signature_tolerance_seconds: 300,
            use_own_templates: true,
            dedupe_window_seconds: 3_600,
        }
    }
}

impl GatewayZitadelSettings {
    pub(crate) fn validate(&self, idempotency_hours: u32, problems: &mut Vec<Problem>) {
        check_range(
            "gateway.zitadel.signature_tolerance_seconds",
            self.signature_tolerance_seconds,
            1..=MAX_TOLERANCE_SECONDS,
            problems,
        );
        // The dedupe record is an idempotency record: the janitor deletes it after idempotency_hours.
        let longest = u64::from(idempotency_hours) * 3_600;
        check_range(
            "gateway.zitadel.dedupe_window_seconds",
            self.dedupe_window_seconds,
            1..=longest.max(1),
            problems,
        );
    }
}
