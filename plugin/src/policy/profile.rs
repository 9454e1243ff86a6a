//! Profiles and the rules that choose one for an identity.

use super::Locale;
use chrono::Duration;
use reclaim_common::settings::{
    ExpiryMode, OnExpired, PolicySettings, ProfileSettings, SelectRule,
};
use std::collections::BTreeMap;

/// One validated profile, with durations ready for arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub history_depth: u32,
    /// `None` = no reuse window.
    pub reuse_window: Option<Duration>,
    /// `None` = no minimum age.
    pub min_age: Option<Duration>,
    pub expiry: ExpiryMode,
    pub max_age: Duration,
    pub warn_before: Duration,
    pub grace_logins: u32,
    pub change_after_recovery: bool,
    pub on_expired: OnExpired,
}

impl Profile {
    pub fn from_settings(name: &str, settings: &ProfileSettings) -> Self {
        let days = |d: u32| Duration::days(i64::from(d));
        Self {
            name: name.to_string(),
            history_depth: settings.history_depth,
            reuse_window: (settings.reuse_window_days > 0)
                .then(|| days(settings.reuse_window_days)),
            min_age: (settings.min_age_minutes > 0)
                .then(|| Duration::minutes(i64::from(settings.min_age_minutes))),
            expiry: settings.expiry,
            max_age: days(settings.max_age_days),
            warn_before: days(settings.warn_before_days),
            grace_logins: settings.grace_logins,
            change_after_recovery: settings.change_after_recovery,
            on_expired: settings.on_expired,
        }
    }
}

/// What profile selection looks at: the identity's schema and metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityTraits<'a> {
    pub schema_id: Option<&'a str>,
    /// Flat string view of the identity's metadata (adapters flatten what their IdP holds).
    pub metadata: Option<&'a BTreeMap<String, String>>,
}

/// All profiles, the selection rules and the message language fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    profiles: BTreeMap<String, Profile>,
    rules: Vec<SelectRule>,
    default_locale: Locale,
}

impl Policy {
    /// Builds the policy from settings already validated by `Settings::validate` (a `default` profile exists).
    pub fn from_settings(settings: &PolicySettings) -> Self {
        let mut profiles: BTreeMap<String, Profile> = settings
            .profiles
            .iter()
            .map(|(name, p)| (name.clone(), Profile::from_settings(name, p)))
            .collect();
        // Validation guarantees `default`; this keeps a hand-built settings value from panicking later.
        profiles
            .entry("default".to_string())
            .or_insert_with(|| Profile::from_settings("default", &ProfileSettings::default()));
        Self {
            profiles,
            rules: settings.select.clone(),
            default_locale: Locale::parse(&settings.default_locale).unwrap_or(Locale::En),
        }
    }

    pub fn default_locale(&self) -> Locale {
        self.default_locale
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// A profile by name, for callers that name one explicitly.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The profile of the first matching rule, else `default`.
    pub fn select(&self, identity: &IdentityTraits<'_>) -> &Profile {
        self.rules
            .iter()
            .find(|rule| matches(rule, identity))
            .and_then(|rule| self.profiles.get(&rule.profile))
            .unwrap_or_else(|| self.default_profile())
    }

    /// The profile named `name` if it still exists, else a fresh selection: a stored profile name may outlive
    /// a configuration change.
    pub fn stored_or_select(&self, name: Option<&str>, identity: &IdentityTraits<'_>) -> &Profile {
        name.and_then(|n| self.profiles.get(n))
            .unwrap_or_else(|| self.select(identity))
    }

    fn default_profile(&self) -> &Profile {
        // `from_settings` always inserts `default`; the fallback only satisfies the type.
        self.profiles
            .get("default")
            .or_else(|| self.profiles.values().next())
            .unwrap_or(&FALLBACK)
    }
}

static FALLBACK: std::sync::LazyLock<Profile> =
    std::sync::LazyLock::new(|| Profile::from_settings("default", &ProfileSettings::default()));

fn matches(rule: &SelectRule, identity: &IdentityTraits<'_>) -> bool {
    let schema_ok =
        rule.schema_id.is_empty() || identity.schema_id == Some(rule.schema_id.as_str());
    let metadata_ok = rule.metadata_key.is_empty()
        || identity
            .metadata
            .and_then(|m| m.get(&rule.metadata_key))
            .is_some_and(|v| *v == rule.metadata_value);
    (!rule.schema_id.is_empty() || !rule.metadata_key.is_empty()) && schema_ok && metadata_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mut settings = PolicySettings::default();
        settings.profiles.insert(
            "gold".into(),
            ProfileSettings {
                history_depth: 10,
                ..ProfileSettings::default()
            },
        );
        settings.select.push(SelectRule {
            profile: "gold".into(),
            metadata_key: "tier".into(),
            metadata_value: "gold".into(),
            ..SelectRule::default()
        });
        Policy::from_settings(&settings)
    }

    #[test]
    fn the_staff_schema_selects_the_staff_profile() {
        let policy = policy();
        let profile = policy.select(&IdentityTraits {
            schema_id: Some("staff"),
            metadata: None,
        });
        assert_eq!(profile.name, "staff");
        assert_eq!(profile.history_depth, 24);
        assert_eq!(profile.expiry, ExpiryMode::MaxAge);
        assert_eq!(profile.max_age, Duration::days(90));
    }

    #[test]
    fn a_metadata_value_selects_its_profile() {
        let policy = policy();
        let metadata = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
        let traits = IdentityTraits {
            schema_id: Some("customer"),
            metadata: Some(&metadata),
        };
        assert_eq!(policy.select(&traits).name, "gold");
        let other = BTreeMap::from([("tier".to_string(), "silver".to_string())]);
        let traits = IdentityTraits {
            schema_id: Some("customer"),
            metadata: Some(&other),
        };
        assert_eq!(policy.select(&traits).name, "default");
    }

    #[test]
    fn identities_matching_no_rule_get_the_default_profile() {
        let policy = policy();
        let profile = policy.select(&IdentityTraits::default());
        assert_eq!(profile.name, "default");
        assert_eq!(profile.history_depth, 5);
        assert_eq!(profile.expiry, ExpiryMode::OnCompromise);
    }

    #[test]
    fn a_stored_profile_that_no_longer_exists_falls_back_to_selection() {
        let policy = policy();
        let traits = IdentityTraits {
            schema_id: Some("staff"),
            metadata: None,
        };
        assert_eq!(policy.stored_or_select(Some("gone"), &traits).name, "staff");
        assert_eq!(policy.stored_or_select(Some("gold"), &traits).name, "gold");
    }
}
