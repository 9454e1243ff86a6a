//! The `[plugin]` section: the password-policy service.

use super::{
    check_listen, check_range, AdminSettings, ApiSettings, Environment, KratosSettings,
    PluginZitadelSettings, Problem, StorageSettings,
};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Deepest history a profile may keep; a check costs the same at any depth, storage grows linearly.
pub const MAX_HISTORY_DEPTH: u32 = 64;

/// Longest period any `*_days` key of a profile accepts: ten years.
pub const MAX_POLICY_DAYS: u32 = 3_650;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Where the plugin's HTTP API and webhooks listen.
    pub listen: String,
    pub api: ApiSettings,
    pub admin: AdminSettings,
    pub storage: StorageSettings,
    pub kratos: KratosSettings,
    /// Supabase Auth's password-verification-attempt hook.
    pub supabase: super::PluginSupabaseSettings,
    /// ZITADEL Actions v2 targets (`/hooks/zitadel/set-password`).
    pub zitadel: PluginZitadelSettings,
    pub policy: PolicySettings,
    pub history: HistorySettings,
    /// Security notices through the gateway.
    pub notices: super::NoticeSettings,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4470".into(),
            api: ApiSettings::default(),
            admin: AdminSettings::default(),
            storage: StorageSettings::default(),
            kratos: KratosSettings::default(),
            supabase: super::PluginSupabaseSettings::default(),
            zitadel: PluginZitadelSettings::default(),
            policy: PolicySettings::default(),
            history: HistorySettings::default(),
            notices: super::NoticeSettings::default(),
        }
    }
}

/// `[plugin.policy]`: profiles, how an identity gets one, and the language of messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Language of violation messages when the request's `Accept-Language` names none we have: `en` or `es`.
    pub default_locale: String,
    /// Named profiles; `default` must exist and applies when no selection rule matches.
    pub profiles: BTreeMap<String, ProfileSettings>,
    /// Selection rules, first match wins.
    pub select: Vec<SelectRule>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        let mut profiles = BTreeMap::new();
        profiles.insert("default".to_string(), ProfileSettings::default());
        profiles.insert(
            "staff".to_string(),
            ProfileSettings {
                history_depth: 24,
                expiry: ExpiryMode::MaxAge,
                max_age_days: 90,
                warn_before_days: 14,
                ..ProfileSettings::default()
            },
        );
        Self {
            default_locale: "en".into(),
            profiles,
            select: vec![SelectRule {
                profile: "staff".into(),
                schema_id: "staff".into(),
                metadata_key: String::new(),
                metadata_value: String::new(),
            }],
        }
    }
}

/// One policy profile, `[plugin.policy.profiles.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileSettings {
    /// How many of the latest passwords (the current one included) may not be used again, 0..=64.
    pub history_depth: u32,
    /// Refuse any password in use within this many days, whatever the depth; 0 = off.
    pub reuse_window_days: u32,
    /// Refuse a voluntary change sooner than this after the last one; 0 = off. Never applied to a change
    /// after recovery or a forced change.
    pub min_age_minutes: u32,
    /// `off` (never forced), `on_compromise` (forced change when marked compromised), `max_age` (also expires).
    pub expiry: ExpiryMode,
    /// `max_age` only: days a password lives.
    pub max_age_days: u32,
    /// `max_age` only: logins warn this many days before expiry.
    pub warn_before_days: u32,
    /// `max_age` only: logins still allowed after expiry, each one warned.
    pub grace_logins: u32,
    /// After an account recovery the password must be changed.
    pub change_after_recovery: bool,
    /// `block`: an expired or must-change password refuses login; `warn`: login goes through with a notice.
    pub on_expired: OnExpired,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            history_depth: 5,
            reuse_window_days: 0,
            min_age_minutes: 0,
            expiry: ExpiryMode::OnCompromise,
            max_age_days: 90,
            warn_before_days: 14,
            grace_logins: 0,
            change_after_recovery: true,
            on_expired: OnExpired::Block,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryMode {
    Off,
    #[default]
    OnCompromise,
    MaxAge,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpired {
    #[default]
    Block,
    Warn,
}

/// `[[plugin.policy.select]]`: gives `profile` to identities with this schema id and/or this metadata value.
/// Empty fields are not compared; at least one of `schema_id` and `metadata_key` must be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectRule {
    pub profile: String,
    pub schema_id: String,
    pub metadata_key: String,
    pub metadata_value: String,
}

/// `[plugin.history]`: how history entries are derived and how much KDF work may run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Server secret keying every history digest (HMAC-SHA256). Required in production; changing it makes
    /// all existing history unmatchable.
    pub pepper: Secret,
    pub argon2: Argon2Settings,
    /// Argon2 runs allowed at once; 0 = one per core.
    pub max_concurrent_kdf: usize,
    /// How long a check may wait for a KDF slot before it is refused with 503 and `Retry-After`.
    pub max_queue_ms: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            pepper: Secret::default(),
            argon2: Argon2Settings::default(),
            max_concurrent_kdf: 0,
            max_queue_ms: 2_000,
        }
    }
}

/// Argon2id parameters for new history entries (OWASP: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Settings {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl PluginSettings {
    pub(crate) fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        check_listen("plugin.listen", &self.listen, problems);
        self.admin.validate("plugin.admin", problems);
        self.storage
            .validate("plugin.storage.keys", environment, problems);
        self.kratos.validate(environment, problems);
        self.supabase.validate(problems);
        self.zitadel.validate(problems);
        self.policy.validate(problems);
        self.history.validate(environment, problems);
        self.notices.validate(problems);
    }
}

impl PolicySettings {
    fn validate(&self, problems: &mut Vec<Problem>) {
        if !matches!(self.default_locale.as_str(), "en" | "es") {
            problems.push(Problem::new(
                "plugin.policy.default_locale",
                "must be `en` or `es`",
            ));
        }
        if !self.profiles.contains_key("default") {
            problems.push(Problem::new(
                "plugin.policy.profiles",
                "a profile named `default` is required",
            ));
        }
        for (name, profile) in &self.profiles {
            profile.validate(&format!("plugin.policy.profiles.{name}"), problems);
        }
        for (i, rule) in self.select.iter().enumerate() {
            let key = format!("plugin.policy.select[{i}]");
            if !self.profiles.contains_key(&rule.profile) {
                problems.push(Problem::new(
                    format!("{key}.profile"),
                    format!("no profile named `{}`", rule.profile),
                ));
            }
            if rule.schema_id.is_empty() && rule.metadata_key.is_empty() {
                problems.push(Problem::new(
                    key.clone(),
                    "set schema_id, metadata_key or both",
                ));
            }
            if !rule.metadata_key.is_empty() && rule.metadata_value.is_empty() {
                problems.push(Problem::new(
                    format!("{key}.metadata_value"),
                    "is required with metadata_key",
                ));
            }
        }
    }
}

impl ProfileSettings {
    fn validate(&self, key: &str, problems: &mut Vec<Problem>) {
        if self.history_depth > MAX_HISTORY_DEPTH {
            problems.push(Problem::new(
                format!("{key}.history_depth"),
                format!("must be at most {MAX_HISTORY_DEPTH}"),
            ));
        }
        for (name, value) in [
            ("reuse_window_days", self.reuse_window_days),
            ("max_age_days", self.max_age_days),
            ("warn_before_days", self.warn_before_days),
        ] {
            check_range(
                &format!("{key}.{name}"),
                value,
                0..=MAX_POLICY_DAYS,
                problems,
            );
        }
        check_range(
            &format!("{key}.min_age_minutes"),
            self.min_age_minutes,
            0..=525_600,
            problems,
        );
        check_range(
            &format!("{key}.grace_logins"),
            self.grace_logins,
            0..=100,
            problems,
        );
        if self.expiry == ExpiryMode::MaxAge && self.max_age_days <= MAX_POLICY_DAYS {
            if self.max_age_days == 0 {
                problems.push(Problem::new(
                    format!("{key}.max_age_days"),
                    "must be at least 1 with expiry = \"max_age\"",
                ));
            } else if self.warn_before_days >= self.max_age_days {
                problems.push(Problem::new(
                    format!("{key}.warn_before_days"),
                    "must be less than max_age_days",
                ));
            }
        }
    }
}

impl HistorySettings {
    fn validate(&self, environment: Environment, problems: &mut Vec<Problem>) {
        let pepper = self.pepper.expose();
        if pepper.is_empty() && environment == Environment::Production {
            problems.push(Problem::new(
                "plugin.history.pepper",
                "is required in production (at least 32 random characters)",
            ));
        } else if !pepper.is_empty() && pepper.len() < 32 {
            problems.push(Problem::new(
                "plugin.history.pepper",
                "must be at least 32 characters",
            ));
        }
        if self.max_concurrent_kdf > 256 {
            // Each slot may hold m_kib of memory at once.
            problems.push(Problem::new(
                "plugin.history.max_concurrent_kdf",
                "must be at most 256 (0 = one per core)",
            ));
        }
        if self.max_queue_ms > 60_000 {
            problems.push(Problem::new(
                "plugin.history.max_queue_ms",
                "must be at most 60000",
            ));
        }
        let a = &self.argon2;
        // Argon2 needs 8 KiB per lane; 4 GiB is the most one run may hold.
        check_range(
            "plugin.history.argon2.m_kib",
            a.m_kib,
            8 * a.p.clamp(1, 16)..=4 * 1024 * 1024,
            problems,
        );
        check_range("plugin.history.argon2.t", a.t, 1..=64, problems);
        check_range("plugin.history.argon2.p", a.p, 1..=16, problems);
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::from_value;
    use serde_json::json;

    fn problem_keys(value: serde_json::Value) -> Vec<String> {
        from_value(value)
            .err()
            .map(|e| e.problems.into_iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn production_requires_a_pepper_and_storage_keys() {
        // Production also requires real gateway providers; only the plugin's keys matter here.
        let plugin_keys = |value| -> Vec<String> {
            problem_keys(value)
                .into_iter()
                .filter(|k| k.starts_with("plugin."))
                .collect()
        };
        assert_eq!(
            plugin_keys(json!({"environment": "production"})),
            vec![
                "plugin.storage.keys".to_string(),
                "plugin.history.pepper".to_string()
            ]
        );
        let pepper = "p".repeat(32);
        let key = format!("k1:{}", "0a".repeat(32));
        assert!(plugin_keys(json!({
            "environment": "production",
            "plugin": {"history": {"pepper": pepper}, "storage": {"keys": [key]}},
        }))
        .is_empty());
        assert_eq!(
            plugin_keys(json!({"plugin": {"storage": {"keys": ["k1:tooshort"]}}})),
            vec!["plugin.storage.keys[0]".to_string()]
        );
        assert_eq!(
            plugin_keys(json!({"plugin": {"history": {"pepper": "short"}}})),
            vec!["plugin.history.pepper".to_string()]
        );
    }

    #[test]
    fn admin_named_profiles_are_checked_key_by_key() {
        let keys = problem_keys(json!({"plugin": {"policy": {"profiles": {
            "default": {"history_depth": 65},
            "gold": {"expiry": "max_age", "max_age_days": 0, "colour": "gold"},
        }}}}));
        assert!(
            keys.contains(&"plugin.policy.profiles.gold.colour".to_string()),
            "{keys:?}"
        );
        let keys = problem_keys(json!({"plugin": {"policy": {
            "profiles": {
                "default": {"history_depth": 65},
                "gold": {"expiry": "max_age", "max_age_days": 0},
            },
            "select": [{"profile": "gold", "schema_id": "vip"}],
        }}}));
        assert_eq!(
            keys,
            vec![
                "plugin.policy.profiles.default.history_depth".to_string(),
                "plugin.policy.profiles.gold.max_age_days".to_string(),
            ]
        );
    }

    #[test]
    fn selection_rules_must_name_an_existing_profile_and_a_criterion() {
        let keys = problem_keys(json!({"plugin": {"policy": {
            "profiles": {"default": {}},
            "select": [{"profile": "staff", "schema_id": "staff"}, {"profile": "default"}],
        }}}));
        assert_eq!(
            keys,
            vec![
                "plugin.policy.select[0].profile".to_string(),
                "plugin.policy.select[1]".to_string(),
            ]
        );
        let keys =
            problem_keys(json!({"plugin": {"policy": {"profiles": {"gold": {}}, "select": []}}}));
        assert_eq!(keys, vec!["plugin.policy.profiles".to_string()]);
    }
}
