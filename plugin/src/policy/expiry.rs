//! Expiry: when a password stops being good, and what a login sees.

use super::{later, Locale, Profile, Violation};
use chrono::{DateTime, Utc};
use reclaim_common::settings::{ExpiryMode, OnExpired};
use serde::{Deserialize, Serialize};

/// Why a password must be changed before it can be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MustChangeReason {
    /// The identity recovered its account (and the profile asks for a change after recovery).
    Recovery,
    /// The password was reported as exposed.
    Compromised,
    /// An administrator asked for a change.
    Admin,
}

impl MustChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovery => "recovery",
            Self::Compromised => "compromised",
            Self::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "recovery" => Some(Self::Recovery),
            "compromised" => Some(Self::Compromised),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// What the state store knows at login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginFacts {
    /// `None` when the password was never recorded: nothing can be said about its age.
    pub changed_at: Option<DateTime<Utc>>,
    pub must_change: Option<MustChangeReason>,
    pub grace_logins_used: u32,
}

/// The kind of answer a login gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginStatus {
    Allowed,
    /// Allowed, expiry is near.
    Warn,
    /// Expired, but within the grace logins.
    Grace,
    Expired,
    MustChange,
}

/// What a login gets: the status, whether it may proceed under the profile's `on_expired`, and the notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LoginOutcome {
    pub status: LoginStatus,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<Violation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// True when this login uses up one grace login (the caller records it).
    #[serde(skip)]
    pub consumes_grace_login: bool,
}

impl Profile {
    /// When a password set at `changed_at` expires under this profile; `None` = never by age.
    pub fn expires_at(&self, changed_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.expiry == ExpiryMode::MaxAge).then(|| later(changed_at, self.max_age))
    }

    /// Whether a pending must-change mark is enforced under this profile. Admin requests always are;
    /// recovery only with `change_after_recovery`; compromise unless expiry is `off`.
    pub fn enforces(&self, reason: MustChangeReason) -> bool {
        match reason {
            MustChangeReason::Admin => true,
            MustChangeReason::Recovery => self.change_after_recovery,
            MustChangeReason::Compromised => self.expiry != ExpiryMode::Off,
        }
    }

    /// Whole days until `expires_at`, rounded up (0 once expired).
    pub fn days_left(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
        let seconds = (expires_at - now).num_seconds();
        if seconds <= 0 {
            0
        } else {
            (seconds + 86_399) / 86_400
        }
    }

    /// Decides what a login with the current password gets.
    pub fn on_login(&self, facts: &LoginFacts, now: DateTime<Utc>, locale: Locale) -> LoginOutcome {
        let expires_at = facts.changed_at.and_then(|c| self.expires_at(c));
        let blocking = self.on_expired == OnExpired::Block;
        let outcome = |status, allowed, notice| LoginOutcome {
            status,
            allowed,
            notice,
            expires_at,
            consumes_grace_login: status == LoginStatus::Grace,
        };
        if let Some(reason) = facts.must_change.filter(|r| self.enforces(*r)) {
            return outcome(
                LoginStatus::MustChange,
                !blocking,
                Some(Violation::change_required(reason, locale)),
            );
        }
        let Some(expires_at) = expires_at else {
            return outcome(LoginStatus::Allowed, true, None);
        };
        if now >= expires_at {
            if facts.grace_logins_used < self.grace_logins {
                let left = self.grace_logins - facts.grace_logins_used - 1;
                return outcome(
                    LoginStatus::Grace,
                    true,
                    Some(Violation::grace_login(left, locale)),
                );
            }
            return outcome(
                LoginStatus::Expired,
                !blocking,
                Some(Violation::expired(locale)),
            );
        }
        if later(now, self.warn_before) >= expires_at {
            let days = Self::days_left(expires_at, now);
            return outcome(
                LoginStatus::Warn,
                true,
                Some(Violation::expires_soon(days, locale)),
            );
        }
        outcome(LoginStatus::Allowed, true, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use reclaim_common::settings::ProfileSettings;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    fn max_age(grace_logins: u32, on_expired: OnExpired) -> Profile {
        Profile::from_settings(
            "staff",
            &ProfileSettings {
                expiry: ExpiryMode::MaxAge,
                max_age_days: 90,
                warn_before_days: 14,
                grace_logins,
                on_expired,
                ..ProfileSettings::default()
            },
        )
    }

    fn changed(days_ago: i64) -> LoginFacts {
        LoginFacts {
            changed_at: Some(now() - Duration::days(days_ago)),
            ..LoginFacts::default()
        }
    }

    #[test]
    fn max_age_passwords_expire_after_max_age_days() {
        let p = max_age(0, OnExpired::Block);
        assert_eq!(p.expires_at(now()), Some(now() + Duration::days(90)));
        let fresh = p.on_login(&changed(10), now(), Locale::En);
        assert_eq!(fresh.status, LoginStatus::Allowed);
        assert!(fresh.allowed && fresh.notice.is_none());
        let expired = p.on_login(&changed(90), now(), Locale::En);
        assert_eq!(expired.status, LoginStatus::Expired);
        assert!(!expired.allowed);
        assert_eq!(
            expired.notice.map(|n| n.code.as_str()),
            Some("password_expired")
        );
    }

    #[test]
    fn logins_within_the_warning_period_are_told_the_days_left() {
        let p = max_age(0, OnExpired::Block);
        let warned = p.on_login(&changed(80), now(), Locale::Es);
        assert_eq!(warned.status, LoginStatus::Warn);
        assert!(warned.allowed);
        let notice = warned.notice.expect("notice");
        assert_eq!(notice.days_left, Some(10));
        assert!(notice.message.contains("10 días"));
        let edge = p.on_login(&changed(75), now(), Locale::En);
        assert_eq!(edge.status, LoginStatus::Allowed);
        let half_day = LoginFacts {
            changed_at: Some(now() - Duration::days(90) + Duration::hours(12)),
            ..LoginFacts::default()
        };
        assert_eq!(
            p.on_login(&half_day, now(), Locale::En)
                .notice
                .and_then(|n| n.days_left),
            Some(1)
        );
    }

    #[test]
    fn grace_logins_are_counted_down_then_the_login_is_blocked() {
        let p = max_age(2, OnExpired::Block);
        let mut facts = changed(100);
        let first = p.on_login(&facts, now(), Locale::En);
        assert_eq!(first.status, LoginStatus::Grace);
        assert!(first.allowed && first.consumes_grace_login);
        assert_eq!(first.notice.and_then(|n| n.grace_logins_left), Some(1));
        facts.grace_logins_used = 1;
        let last = p.on_login(&facts, now(), Locale::En);
        assert_eq!(last.notice.and_then(|n| n.grace_logins_left), Some(0));
        facts.grace_logins_used = 2;
        let blocked = p.on_login(&facts, now(), Locale::En);
        assert_eq!(blocked.status, LoginStatus::Expired);
        assert!(!blocked.allowed && !blocked.consumes_grace_login);
    }

    #[test]
    fn a_warn_profile_lets_expired_logins_through_with_the_notice() {
        let p = max_age(0, OnExpired::Warn);
        let outcome = p.on_login(&changed(120), now(), Locale::En);
        assert_eq!(outcome.status, LoginStatus::Expired);
        assert!(outcome.allowed);
    }

    #[test]
    fn on_compromise_never_expires_by_age_but_enforces_a_compromise_mark() {
        let p = Profile::from_settings("default", &ProfileSettings::default());
        assert_eq!(p.expires_at(now()), None);
        let old = p.on_login(&changed(3650), now(), Locale::En);
        assert_eq!(old.status, LoginStatus::Allowed);
        let marked = LoginFacts {
            must_change: Some(MustChangeReason::Compromised),
            ..changed(1)
        };
        let outcome = p.on_login(&marked, now(), Locale::En);
        assert_eq!(outcome.status, LoginStatus::MustChange);
        assert!(!outcome.allowed);
        let notice = outcome.notice.expect("notice");
        assert_eq!(notice.code.as_str(), "password_change_required");
        assert_eq!(notice.reason, Some(MustChangeReason::Compromised));
    }

    #[test]
    fn expiry_off_ignores_compromise_marks_but_not_admin_or_recovery() {
        let p = Profile::from_settings(
            "lenient",
            &ProfileSettings {
                expiry: ExpiryMode::Off,
                ..ProfileSettings::default()
            },
        );
        assert_eq!(p.expires_at(now()), None);
        let with = |reason| LoginFacts {
            must_change: Some(reason),
            ..changed(1)
        };
        assert_eq!(
            p.on_login(&with(MustChangeReason::Compromised), now(), Locale::En)
                .status,
            LoginStatus::Allowed
        );
        assert_eq!(
            p.on_login(&with(MustChangeReason::Admin), now(), Locale::En)
                .status,
            LoginStatus::MustChange
        );
        assert_eq!(
            p.on_login(&with(MustChangeReason::Recovery), now(), Locale::En)
                .status,
            LoginStatus::MustChange
        );
    }

    #[test]
    fn recovery_forces_a_change_only_when_the_profile_asks_for_it() {
        let p = Profile::from_settings(
            "relaxed",
            &ProfileSettings {
                change_after_recovery: false,
                ..ProfileSettings::default()
            },
        );
        let facts = LoginFacts {
            must_change: Some(MustChangeReason::Recovery),
            ..changed(1)
        };
        assert_eq!(
            p.on_login(&facts, now(), Locale::En).status,
            LoginStatus::Allowed
        );
    }

    #[test]
    fn an_identity_never_recorded_logs_in_without_notice() {
        let p = max_age(0, OnExpired::Block);
        let outcome = p.on_login(&LoginFacts::default(), now(), Locale::En);
        assert_eq!(outcome.status, LoginStatus::Allowed);
        assert_eq!(outcome.expires_at, None);
    }

    #[test]
    fn date_arithmetic_at_the_edges_of_time_saturates_instead_of_panicking() {
        // Bounds come from `check-config`; this profile bypasses them on purpose.
        let p = Profile::from_settings(
            "unbounded",
            &ProfileSettings {
                expiry: ExpiryMode::MaxAge,
                max_age_days: u32::MAX,
                warn_before_days: u32::MAX,
                reuse_window_days: u32::MAX,
                min_age_minutes: u32::MAX,
                ..ProfileSettings::default()
            },
        );
        let (first, last) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        for at in [first, now(), last] {
            let facts = LoginFacts {
                changed_at: Some(at),
                ..LoginFacts::default()
            };
            p.on_login(&facts, now(), Locale::En);
            p.on_login(&facts, last, Locale::En);
            let change = crate::policy::ChangeFacts {
                changed_at: Some(at),
                must_change: None,
            };
            let reuse = crate::policy::ReuseMatch {
                rank: 99,
                last_used_at: at,
            };
            p.check_change(
                &change,
                crate::policy::ChangeContext::Voluntary,
                Some(reuse),
                now(),
                Locale::En,
            );
            p.keeps(99, at, last);
        }
        // Saturated at the end of time: such a password is not expired, and still inside every window.
        assert_eq!(p.expires_at(now()), Some(last));
        assert_eq!(
            p.on_login(&changed(1), now(), Locale::En).status,
            LoginStatus::Warn
        );
        assert!(p.keeps(99, now(), now()));
    }
}
