//! Decisions on a password change: stable violation codes, localized messages, the numbers a UI needs.

use super::expiry::MustChangeReason;
use super::{later, Locale, Profile};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Stable codes; integrators match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViolationCode {
    /// The password is one of the last N or was used within the reuse window.
    PasswordReused,
    /// A voluntary change came sooner than the profile's minimum age.
    PasswordTooYoung,
    /// The password is past its maximum age (login).
    PasswordExpired,
    /// Recovery, compromise or an admin requires a new password (login).
    PasswordChangeRequired,
    /// The password expired, but this login is one of the grace logins (login, allowed).
    GraceLogin,
    /// The password expires within the warning period (login, allowed).
    PasswordExpiresSoon,
}

impl ViolationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReused => "password_reused",
            Self::PasswordTooYoung => "password_too_young",
            Self::PasswordExpired => "password_expired",
            Self::PasswordChangeRequired => "password_change_required",
            Self::GraceLogin => "grace_login",
            Self::PasswordExpiresSoon => "password_expires_soon",
        }
    }
}

/// One reason a change is refused, or one notice on a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    pub code: ViolationCode,
    /// For the end user, in the negotiated language.
    pub message: String,
    /// `password_too_young`: the earliest time a voluntary change is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime<Utc>>,
    /// `password_expires_soon`: whole days until expiry, rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// `grace_login`: logins still allowed after this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_logins_left: Option<u32>,
    /// `password_change_required`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<MustChangeReason>,
    /// `password_reused`: the profile's history depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_depth: Option<u32>,
    /// `password_reused` within the reuse window: its length in days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_window_days: Option<i64>,
}

impl Violation {
    fn bare(code: ViolationCode, message: String) -> Self {
        Self {
            code,
            message,
            available_at: None,
            days_left: None,
            grace_logins_left: None,
            reason: None,
            history_depth: None,
            reuse_window_days: None,
        }
    }

    pub fn reused_in_history(depth: u32, locale: Locale) -> Self {
        let message = match locale {
            Locale::En => format!(
                "You cannot reuse any of your last {depth} passwords. Choose a password you have not used before."
            ),
            Locale::Es => format!(
                "No puede reutilizar ninguna de sus últimas {depth} contraseñas. Elija una contraseña que no haya usado antes."
            ),
        };
        Self {
            history_depth: Some(depth),
            ..Self::bare(ViolationCode::PasswordReused, message)
        }
    }

    pub fn reused_in_window(days: i64, locale: Locale) -> Self {
        let message = match locale {
            Locale::En => format!(
                "You used this password within the last {days} days. Choose a password you have not used before."
            ),
            Locale::Es => format!(
                "Usó esta contraseña en los últimos {days} días. Elija una contraseña que no haya usado antes."
            ),
        };
        Self {
            reuse_window_days: Some(days),
            ..Self::bare(ViolationCode::PasswordReused, message)
        }
    }

    pub fn too_young(available_at: DateTime<Utc>, locale: Locale) -> Self {
        let when = available_at.format("%Y-%m-%d %H:%M UTC");
        let message = match locale {
            Locale::En => {
                format!("Your password was changed recently. You can change it again from {when}.")
            }
            Locale::Es => format!(
                "Su contraseña se cambió hace poco. Podrá cambiarla de nuevo a partir de {when}."
            ),
        };
        Self {
            available_at: Some(available_at),
            ..Self::bare(ViolationCode::PasswordTooYoung, message)
        }
    }

    pub fn expired(locale: Locale) -> Self {
        let message = match locale {
            Locale::En => "Your password has expired. Set a new one through account recovery.",
            Locale::Es => "Su contraseña ha caducado. Establezca una nueva mediante la recuperación de la cuenta.",
        };
        Self::bare(ViolationCode::PasswordExpired, message.into())
    }

    pub fn change_required(reason: MustChangeReason, locale: Locale) -> Self {
        let message = match (reason, locale) {
            (MustChangeReason::Recovery, Locale::En) => {
                "You recovered your account. Choose a new password to continue."
            }
            (MustChangeReason::Recovery, Locale::Es) => {
                "Ha recuperado su cuenta. Elija una contraseña nueva para continuar."
            }
            (MustChangeReason::Compromised, Locale::En) => {
                "Your password may have been exposed. Choose a new password to continue."
            }
            (MustChangeReason::Compromised, Locale::Es) => {
                "Su contraseña puede haber quedado expuesta. Elija una contraseña nueva para continuar."
            }
            (MustChangeReason::Admin, Locale::En) => {
                "An administrator requires you to change your password."
            }
            (MustChangeReason::Admin, Locale::Es) => {
                "Un administrador le exige cambiar su contraseña."
            }
        };
        Self {
            reason: Some(reason),
            ..Self::bare(ViolationCode::PasswordChangeRequired, message.into())
        }
    }

    pub fn grace_login(left: u32, locale: Locale) -> Self {
        let message = match (locale, left) {
            (Locale::En, 0) => "Your password has expired. This is your last sign-in before you must change it.".to_string(),
            (Locale::En, 1) => "Your password has expired. You can sign in 1 more time before you must change it.".to_string(),
            (Locale::En, n) => format!("Your password has expired. You can sign in {n} more times before you must change it."),
            (Locale::Es, 0) => "Su contraseña ha caducado. Este es su último inicio de sesión antes de tener que cambiarla.".to_string(),
            (Locale::Es, 1) => "Su contraseña ha caducado. Puede iniciar sesión 1 vez más antes de tener que cambiarla.".to_string(),
            (Locale::Es, n) => format!("Su contraseña ha caducado. Puede iniciar sesión {n} veces más antes de tener que cambiarla."),
        };
        Self {
            grace_logins_left: Some(left),
            ..Self::bare(ViolationCode::GraceLogin, message)
        }
    }

    pub fn expires_soon(days_left: i64, locale: Locale) -> Self {
        let message = match (locale, days_left) {
            (Locale::En, 1) => "Your password expires in 1 day. Please change it.".to_string(),
            (Locale::En, n) => format!("Your password expires in {n} days. Please change it."),
            (Locale::Es, 1) => "Su contraseña caduca en 1 día. Cámbiela, por favor.".to_string(),
            (Locale::Es, n) => format!("Su contraseña caduca en {n} días. Cámbiela, por favor."),
        };
        Self {
            days_left: Some(days_left),
            ..Self::bare(ViolationCode::PasswordExpiresSoon, message)
        }
    }
}

/// The answer to "may this identity change its password to this one?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub allowed: bool,
    pub violations: Vec<Violation>,
}

/// Why a change happens: only a voluntary change is held to the minimum age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeContext {
    #[default]
    Voluntary,
    /// The change that completes an account recovery.
    Recovery,
    /// A change the user was made to do (expiry, compromise, admin).
    Forced,
}

/// What the state store knows about the identity's current password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeFacts {
    pub changed_at: Option<DateTime<Utc>>,
    pub must_change: Option<MustChangeReason>,
}

/// The newest history entry the candidate matched: `rank` 0 is the current password, 1 the one before...;
/// `last_used_at` is when it stopped being the current password (now, for the current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseMatch {
    pub rank: u32,
    pub last_used_at: DateTime<Utc>,
}

impl Profile {
    /// Decides on a password change. `reuse` is what the history store found for the candidate.
    pub fn check_change(
        &self,
        facts: &ChangeFacts,
        context: ChangeContext,
        reuse: Option<ReuseMatch>,
        now: DateTime<Utc>,
        locale: Locale,
    ) -> Decision {
        let mut violations = Vec::new();
        if let Some(found) = reuse {
            if found.rank < self.history_depth {
                violations.push(Violation::reused_in_history(self.history_depth, locale));
            } else if let Some(window) = self.reuse_window {
                if later(found.last_used_at, window) > now {
                    violations.push(Violation::reused_in_window(window.num_days(), locale));
                }
            }
        }
        let forced = context != ChangeContext::Voluntary || facts.must_change.is_some();
        if let (Some(min_age), Some(changed_at), false) = (self.min_age, facts.changed_at, forced) {
            let available_at = later(changed_at, min_age);
            if available_at > now {
                violations.push(Violation::too_young(available_at, locale));
            }
        }
        Decision {
            allowed: violations.is_empty(),
            violations,
        }
    }

    /// Whether a history entry is still needed: it is among the latest `history_depth`, or it was in use
    /// within the reuse window.
    pub fn keeps(&self, rank: u32, last_used_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        rank < self.history_depth
            || self
                .reuse_window
                .is_some_and(|w| later(last_used_at, w) > now)
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

    fn profile(settings: ProfileSettings) -> Profile {
        Profile::from_settings("test", &settings)
    }

    fn codes(decision: &Decision) -> Vec<&'static str> {
        decision
            .violations
            .iter()
            .map(|v| v.code.as_str())
            .collect()
    }

    #[test]
    fn a_password_among_the_last_n_is_refused_and_the_n_plus_first_is_allowed() {
        let p = profile(ProfileSettings {
            history_depth: 5,
            ..Default::default()
        });
        let at = |rank| ReuseMatch {
            rank,
            last_used_at: now() - Duration::days(400),
        };
        let facts = ChangeFacts::default();
        let refused = p.check_change(
            &facts,
            ChangeContext::Voluntary,
            Some(at(4)),
            now(),
            Locale::En,
        );
        assert_eq!(codes(&refused), vec!["password_reused"]);
        assert!(!refused.allowed);
        assert_eq!(refused.violations[0].history_depth, Some(5));
        let allowed = p.check_change(
            &facts,
            ChangeContext::Voluntary,
            Some(at(5)),
            now(),
            Locale::En,
        );
        assert!(allowed.allowed, "{allowed:?}");
        let fresh = p.check_change(&facts, ChangeContext::Voluntary, None, now(), Locale::En);
        assert!(fresh.allowed);
    }

    #[test]
    fn the_reuse_window_refuses_old_ranks_used_recently() {
        let p = profile(ProfileSettings {
            history_depth: 1,
            reuse_window_days: 365,
            ..Default::default()
        });
        let recent = ReuseMatch {
            rank: 7,
            last_used_at: now() - Duration::days(364),
        };
        let old = ReuseMatch {
            rank: 7,
            last_used_at: now() - Duration::days(366),
        };
        let facts = ChangeFacts::default();
        let refused = p.check_change(
            &facts,
            ChangeContext::Voluntary,
            Some(recent),
            now(),
            Locale::Es,
        );
        assert_eq!(codes(&refused), vec!["password_reused"]);
        assert_eq!(refused.violations[0].reuse_window_days, Some(365));
        assert!(refused.violations[0].message.contains("365 días"));
        assert!(
            p.check_change(
                &facts,
                ChangeContext::Voluntary,
                Some(old),
                now(),
                Locale::En
            )
            .allowed
        );
        assert!(p.keeps(7, recent.last_used_at, now()));
        assert!(!p.keeps(7, old.last_used_at, now()));
        assert!(p.keeps(0, old.last_used_at, now()));
    }

    #[test]
    fn a_voluntary_change_before_the_minimum_age_is_refused_with_the_time_it_becomes_possible() {
        let p = profile(ProfileSettings {
            min_age_minutes: 60,
            ..Default::default()
        });
        let facts = ChangeFacts {
            changed_at: Some(now() - Duration::minutes(10)),
            must_change: None,
        };
        let refused = p.check_change(&facts, ChangeContext::Voluntary, None, now(), Locale::En);
        assert_eq!(codes(&refused), vec!["password_too_young"]);
        assert_eq!(
            refused.violations[0].available_at,
            Some(now() + Duration::minutes(50))
        );
        assert!(refused.violations[0]
            .message
            .contains("2026-11-22 12:50 UTC"));
        let later = p.check_change(
            &facts,
            ChangeContext::Voluntary,
            None,
            now() + Duration::minutes(51),
            Locale::En,
        );
        assert!(later.allowed);
    }

    #[test]
    fn the_minimum_age_is_not_applied_after_recovery_or_to_a_forced_change() {
        let p = profile(ProfileSettings {
            min_age_minutes: 60,
            ..Default::default()
        });
        let facts = ChangeFacts {
            changed_at: Some(now() - Duration::minutes(1)),
            must_change: None,
        };
        for context in [ChangeContext::Recovery, ChangeContext::Forced] {
            assert!(
                p.check_change(&facts, context, None, now(), Locale::En)
                    .allowed
            );
        }
        let pending = ChangeFacts {
            must_change: Some(MustChangeReason::Compromised),
            ..facts
        };
        assert!(
            p.check_change(&pending, ChangeContext::Voluntary, None, now(), Locale::En)
                .allowed
        );
    }

    #[test]
    fn reuse_is_refused_even_after_recovery() {
        let p = profile(ProfileSettings::default());
        let found = ReuseMatch {
            rank: 0,
            last_used_at: now(),
        };
        let decision = p.check_change(
            &ChangeFacts::default(),
            ChangeContext::Recovery,
            Some(found),
            now(),
            Locale::En,
        );
        assert_eq!(codes(&decision), vec!["password_reused"]);
    }

    #[test]
    fn every_message_reads_exactly_as_the_readme_documents_in_english_and_spanish() {
        let at = now();
        let cases = [
            (
                Violation::reused_in_history(5, Locale::Es),
                "No puede reutilizar ninguna de sus últimas 5 contraseñas. Elija una contraseña que no haya usado antes.",
            ),
            (
                Violation::reused_in_history(5, Locale::En),
                "You cannot reuse any of your last 5 passwords. Choose a password you have not used before.",
            ),
            (
                Violation::reused_in_window(30, Locale::Es),
                "Usó esta contraseña en los últimos 30 días. Elija una contraseña que no haya usado antes.",
            ),
            (
                Violation::reused_in_window(30, Locale::En),
                "You used this password within the last 30 days. Choose a password you have not used before.",
            ),
            (
                Violation::too_young(at, Locale::Es),
                "Su contraseña se cambió hace poco. Podrá cambiarla de nuevo a partir de 2026-11-22 12:00 UTC.",
            ),
            (
                Violation::too_young(at, Locale::En),
                "Your password was changed recently. You can change it again from 2026-11-22 12:00 UTC.",
            ),
            (
                Violation::expired(Locale::Es),
                "Su contraseña ha caducado. Establezca una nueva mediante la recuperación de la cuenta.",
            ),
            (
                Violation::expired(Locale::En),
                "Your password has expired. Set a new one through account recovery.",
            ),
            (
                Violation::change_required(MustChangeReason::Recovery, Locale::Es),
                "Ha recuperado su cuenta. Elija una contraseña nueva para continuar.",
            ),
            (
                Violation::change_required(MustChangeReason::Recovery, Locale::En),
                "You recovered your account. Choose a new password to continue.",
            ),
            (
                Violation::change_required(MustChangeReason::Compromised, Locale::Es),
                "Su contraseña puede haber quedado expuesta. Elija una contraseña nueva para continuar.",
            ),
            (
                Violation::change_required(MustChangeReason::Compromised, Locale::En),
                "Your password may have been exposed. Choose a new password to continue.",
            ),
            (
                Violation::change_required(MustChangeReason::Admin, Locale::Es),
                "Un administrador le exige cambiar su contraseña.",
            ),
            (
                Violation::change_required(MustChangeReason::Admin, Locale::En),
                "An administrator requires you to change your password.",
            ),
            (
                Violation::grace_login(3, Locale::Es),
                "Su contraseña ha caducado. Puede iniciar sesión 3 veces más antes de tener que cambiarla.",
            ),
            (
                Violation::grace_login(1, Locale::Es),
                "Su contraseña ha caducado. Puede iniciar sesión 1 vez más antes de tener que cambiarla.",
            ),
            (
                Violation::grace_login(0, Locale::Es),
                "Su contraseña ha caducado. Este es su último inicio de sesión antes de tener que cambiarla.",
            ),
            (
                Violation::grace_login(3, Locale::En),
                "Your password has expired. You can sign in 3 more times before you must change it.",
            ),
            (
                Violation::grace_login(1, Locale::En),
                "Your password has expired. You can sign in 1 more time before you must change it.",
            ),
            (
                Violation::grace_login(0, Locale::En),
                "Your password has expired. This is your last sign-in before you must change it.",
            ),
            (
                Violation::expires_soon(5, Locale::Es),
                "Su contraseña caduca en 5 días. Cámbiela, por favor.",
            ),
            (
                Violation::expires_soon(1, Locale::Es),
                "Su contraseña caduca en 1 día. Cámbiela, por favor.",
            ),
            (
                Violation::expires_soon(5, Locale::En),
                "Your password expires in 5 days. Please change it.",
            ),
            (
                Violation::expires_soon(1, Locale::En),
                "Your password expires in 1 day. Please change it.",
            ),
        ];
        for (violation, text) in cases {
            assert_eq!(violation.message, text, "{:?}", violation.code);
        }
    }
}
