//! Date arithmetic that cannot panic, and the change times a caller may name.
//!
//! chrono panics when `DateTime + TimeDelta` leaves its range (about ±262,000 years). Profile durations are
//! bounded by `check-config` and request times by [`check_change_time`], so saturation below is a second
//! line for hand-built settings and stored times, not a path normal traffic takes.

use chrono::{DateTime, TimeDelta, Utc};

/// The earliest change time a request may name: no identity provider has passwords older than Unix time,
/// and PostgreSQL cannot store the far past chrono can parse.
pub const EARLIEST_CHANGE: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

/// How far ahead of our clock a caller's clock may run (as for webhook timestamps).
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// `at + delta`, held at the end of time instead of overflowing.
pub fn later(at: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Accepts a change time a caller gave (e.g. `changed_at`) when it lies between [`EARLIEST_CHANGE`] and
/// `now` plus [`MAX_CLOCK_SKEW`]; the message says which end was crossed.
pub fn check_change_time(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if at < EARLIEST_CHANGE {
        return Err(format!(
            "must not be before {}",
            EARLIEST_CHANGE.to_rfc3339()
        ));
    }
    if at > later(now, MAX_CLOCK_SKEW) {
        return Err(format!(
            "must not be in the future (more than {} minutes ahead of the server's clock)",
            MAX_CLOCK_SKEW.num_minutes()
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_times_are_accepted_from_unix_time_to_a_few_minutes_ahead() {
        let now = Utc::now();
        assert!(check_change_time(EARLIEST_CHANGE, now).is_ok());
        assert!(check_change_time(now + MAX_CLOCK_SKEW, now).is_ok());
        assert!(
            check_change_time(EARLIEST_CHANGE - TimeDelta::seconds(1), now)
                .is_err_and(|m| m.contains("before 1970"))
        );
        assert!(
            check_change_time(now + MAX_CLOCK_SKEW + TimeDelta::seconds(1), now)
                .is_err_and(|m| m.contains("future"))
        );
        assert!(check_change_time(DateTime::<Utc>::MIN_UTC, now).is_err());
        assert!(check_change_time(DateTime::<Utc>::MAX_UTC, now).is_err());
    }

    #[test]
    fn later_saturates_at_the_end_of_time() {
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(later(last, TimeDelta::days(1)), last);
        assert_eq!(later(last - TimeDelta::days(1), TimeDelta::MAX), last);
        let now = Utc::now();
        assert_eq!(later(now, TimeDelta::days(1)), now + TimeDelta::days(1));
    }
}
