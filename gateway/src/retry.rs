//! When to try again: exponential backoff with full jitter, never sooner than the provider asked
//! (`Retry-After`), never after the message expires, never more than `max_attempts` times, never more than
//! [`MAX_WAIT`] away.

use chrono::{NaiveDateTime, TimeDelta};
use rand::Rng;
use reclaim_common::settings::RetrySettings;
use std::time::Duration;

/// The longest wait before any retry, whatever `Retry-After` or `retry.max_ms` say: a provider's huge
/// `Retry-After` must not overflow the clock arithmetic, nor park a message for years.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The longest wait before retry number `retry` (1 = the first retry): `min(max_ms, base_ms * 2^(retry-1))`.
pub fn ceiling(settings: &RetrySettings, retry: u32) -> Duration {
    let factor = 1u64
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u64::MAX);
    Duration::from_millis(settings.base_ms.saturating_mul(factor).min(settings.max_ms))
        .min(MAX_WAIT)
}

/// Full jitter: a uniformly random wait in `[0, ceiling]`, so retries of many messages spread out instead of
/// hitting a recovering provider together.
pub fn jittered(settings: &RetrySettings, retry: u32, rng: &mut impl Rng) -> Duration {
    let cap = ceiling(settings, retry).as_millis() as u64;
    Duration::from_millis(rng.gen_range(0..=cap))
}

/// What happens to a message whose attempt failed transiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    RetryAt(NaiveDateTime),
    /// The retry would come after the message's expiry: it is not sent at all.
    Expired,
    /// `max_attempts` reached.
    Exhausted,
}

/// Decides the next step after `attempts` attempts, the last of which failed transiently.
pub fn after_transient_failure(
    settings: &RetrySettings,
    attempts: u32,
    jitter: Duration,
    retry_after: Option<Duration>,
    now: NaiveDateTime,
    expires_at: Option<NaiveDateTime>,
) -> Next {
    if attempts >= settings.max_attempts {
        return Next::Exhausted;
    }
    let wait = retry_after
        .map_or(jitter, |asked| asked.max(jitter))
        .min(MAX_WAIT);
    let at = TimeDelta::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(NaiveDateTime::MAX);
    match expires_at {
        Some(expiry) if at >= expiry => Next::Expired,
        _ => Next::RetryAt(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn settings() -> RetrySettings {
        RetrySettings {
            base_ms: 100,
            max_ms: 1_000,
            max_attempts: 5,
        }
    }

    fn t0() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .expect("time")
            .naive_utc()
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let s = settings();
        let ceilings: Vec<u128> = (1..=6).map(|n| ceiling(&s, n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(ceiling(&s, 200).as_millis(), 1000);
    }

    #[test]
    fn jittered_waits_stay_under_the_ceiling_and_grow_on_average() {
        let s = settings();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut means = Vec::new();
        for retry in 1..=4 {
            let samples: Vec<u128> = (0..2_000)
                .map(|_| jittered(&s, retry, &mut rng).as_millis())
                .collect();
            assert!(samples.iter().all(|d| *d <= ceiling(&s, retry).as_millis()));
            means.push(samples.iter().sum::<u128>() / samples.len() as u128);
        }
        assert!(means.windows(2).all(|w| w[1] > w[0]), "{means:?}");
    }

    #[test]
    fn retry_after_is_a_floor_and_expiry_a_limit() {
        let s = settings();
        let jitter = Duration::from_millis(50);
        assert_eq!(
            after_transient_failure(&s, 1, jitter, Some(Duration::from_secs(30)), t0(), None),
            Next::RetryAt(t0() + TimeDelta::seconds(30))
        );
        assert_eq!(
            after_transient_failure(&s, 1, jitter, None, t0(), None),
            Next::RetryAt(t0() + TimeDelta::milliseconds(50))
        );
        assert_eq!(
            after_transient_failure(
                &s,
                1,
                jitter,
                Some(Duration::from_secs(30)),
                t0(),
                Some(t0() + TimeDelta::seconds(10))
            ),
            Next::Expired
        );
        assert_eq!(
            after_transient_failure(&s, 5, jitter, None, t0(), None),
            Next::Exhausted
        );
    }

    #[test]
    fn a_huge_retry_after_or_max_ms_is_capped_instead_of_overflowing() {
        let s = RetrySettings {
            base_ms: u64::MAX,
            max_ms: u64::MAX,
            max_attempts: 5,
        };
        let day = MAX_WAIT;
        let cap = TimeDelta::from_std(day).expect("a day fits");
        let endless = Duration::from_secs(u64::MAX);
        assert_eq!(
            after_transient_failure(&s, 1, Duration::ZERO, Some(endless), t0(), None),
            Next::RetryAt(t0() + cap)
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let jitter = jittered(&s, 64, &mut rng);
        assert!(jitter <= day, "{jitter:?}");
        assert_eq!(ceiling(&s, 64), day);
        // Near the end of time the retry lands on the last representable instant rather than panicking.
        let last = NaiveDateTime::MAX;
        assert_eq!(
            after_transient_failure(&s, 1, Duration::ZERO, Some(endless), last, None),
            Next::RetryAt(last)
        );
    }
}
