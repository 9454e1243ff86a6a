//! The `[gateway.verifications]` section: one-time codes and links sent through `/v1/verifications`.

use super::{check_range, Problem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The purposes a verification may name (`purpose` in `POST /v1/verifications`).
pub const VERIFICATION_PURPOSES: [&str; 4] = ["recovery", "verification", "login", "device"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationSettings {
    /// Digits in a code.
    pub code_length: u32,
    /// Checks a verification takes; a wrong one at the limit ends it (`max_checks_reached`).
    pub max_checks: u32,
    /// Sends per verification, the first included.
    pub max_sends: u32,
    /// Shortest time between two sends of one verification.
    pub resend_interval_seconds: u64,
    pub ttl_seconds: VerificationTtl,
    /// Lifetimes per purpose that replace `ttl_seconds` for every channel, e.g. `login = 600`.
    pub purpose_ttl_seconds: BTreeMap<String, u64>,
}

/// How long a code or link stays valid, per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationTtl {
    /// An email carrying a link (the request gave `link_url`).
    pub email_link: u64,
    /// An email carrying a code.
    pub email_code: u64,
    pub sms: u64,
    pub voice: u64,
}

impl Default for VerificationSettings {
    fn default() -> Self {
        Self {
            code_length: 6,
            max_checks: 5,
            max_sends: 5,
            resend_interval_seconds: 30,
            ttl_seconds: VerificationTtl::default(),
            purpose_ttl_seconds: BTreeMap::new(),
        }
    }
}

impl Default for VerificationTtl {
    fn default() -> Self {
        Self {
            email_link: 24 * 3600,
            email_code: 20 * 60,
            sms: 20 * 60,
            voice: 20 * 60,
        }
    }
}

const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;

impl VerificationSettings {
    pub(crate) fn validate(&self, problems: &mut Vec<Problem>) {
        let key = "gateway.verifications";
        check_range(
            &format!("{key}.code_length"),
            self.code_length,
            4..=10,
            problems,
        );
        check_range(
            &format!("{key}.max_checks"),
            self.max_checks,
            1..=20,
            problems,
        );
        check_range(
            &format!("{key}.max_sends"),
            self.max_sends,
            1..=20,
            problems,
        );
        check_range(
            &format!("{key}.resend_interval_seconds"),
            self.resend_interval_seconds,
            0..=3600,
            problems,
        );
        let ttl = &self.ttl_seconds;
        for (name, value) in [
            ("email_link", ttl.email_link),
            ("email_code", ttl.email_code),
            ("sms", ttl.sms),
            ("voice", ttl.voice),
        ] {
            check_range(
                &format!("{key}.ttl_seconds.{name}"),
                value,
                60..=MAX_TTL_SECONDS,
                problems,
            );
        }
        for (purpose, value) in &self.purpose_ttl_seconds {
            let entry = format!("{key}.purpose_ttl_seconds.{purpose}");
            if !VERIFICATION_PURPOSES.contains(&purpose.as_str()) {
                problems.push(Problem::new(
                    entry,
                    format!(
                        "is not a purpose; use one of {}",
                        VERIFICATION_PURPOSES.join(", ")
                    ),
                ));
                continue;
            }
            check_range(&entry, *value, 60..=MAX_TTL_SECONDS, problems);
        }
    }
}
