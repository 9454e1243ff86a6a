//! [`Clock`]: the time the plugin decides by. Production reads the system clock; tests move it forward
//! (`advance`) to see a password expire or a staged verdict age without sleeping or editing stored times.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The system clock plus an offset that only [`Clock::advance`] changes; clones share the offset.
#[derive(Clone, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, offset 0: what production uses.
    pub fn system() -> Self {
        Self {
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The system time plus the offset; held at the end of time rather than overflowing.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        let now = Utc::now();
        now.checked_add_signed(offset)
            .unwrap_or(if offset < chrono::Duration::zero() {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            })
    }

    /// Moves this clock and every clone of it by `by` (negative moves it back). Only tests do this.
    pub fn advance(&self, by: chrono::Duration) {
        let by_ms = by.num_milliseconds();
        // `fetch_update` with saturation: an absurd offset pins time at its end instead of wrapping around.
        let _ = self
            .offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ms| {
                // -i64::MAX, not i64::MIN: chrono's durations are symmetric.
                Some(ms.saturating_add(by_ms).max(-i64::MAX))
            });
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = Utc::now();
        let now = Clock::system().now();
        let after = Utc::now();
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    #[test]
    fn advancing_a_clock_moves_every_clone_and_only_them() {
        let clock = Clock::default();
        let clone = clock.clone();
        let other = Clock::system();
        clone.advance(Duration::days(91));
        clock.advance(Duration::minutes(10));
        let expected = Utc::now() + Duration::days(91) + Duration::minutes(10);
        for shared in [&clock, &clone] {
            let drift = (shared.now() - expected).num_milliseconds().abs();
            assert!(drift < 5_000, "drift {drift} ms");
        }
        assert!((other.now() - Utc::now()).num_seconds().abs() < 5);
    }

    #[test]
    fn a_clock_moved_back_reads_earlier() {
        let clock = Clock::system();
        clock.advance(Duration::hours(-2));
        let behind = Utc::now() - clock.now();
        assert!(
            behind >= Duration::hours(2) - Duration::seconds(5),
            "{behind}"
        );
        assert!(
            behind <= Duration::hours(2) + Duration::seconds(5),
            "{behind}"
        );
    }

    #[test]
    fn an_absurd_advance_saturates_instead_of_panicking() {
        let clock = Clock::system();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
        let back = Clock::system();
        back.advance(Duration::MIN);
        back.advance(Duration::MIN);
        assert_eq!(back.now(), DateTime::<Utc>::MIN_UTC);
    }
}
