//! The in-process front of the limits: one keyed governor (GCRA) per counted rule, refusing floods before
//! they open a database transaction.
//!
//! It never refuses what the database would allow. Each rule of N sends per window W becomes a governor
//! quota of a burst of N replenished one per W/N, which allows at least what the sliding window allows over
//! any sequence of sends that itself respects that window. To keep to that, the governor counts only sends
//! the database admitted: [`Front::check`] looks without taking a cell (a custom state store that writes only
//! for keys marked `record`), and [`Front::record`] takes the cells after the database said yes. Sends other
//! instances made are unknown here, so the front lets through what the database then refuses; it exists for
//! cheapness, the database for exactness.

use super::refusal::Reason;
use super::store::{Counted, Rule};
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Keys below this many per rule are never pruned; above, pruning runs when the count has doubled.
const PRUNE_FLOOR: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FrontKey {
    key: String,
    /// `false`: only measure (the state is left as it was); `true`: take the cell.
    record: bool,
}

type Tats = Arc<Mutex<HashMap<String, u64>>>;

/// GCRA states (theoretical arrival times, in nanoseconds since the limiter started) by key.
#[derive(Default)]
pub(crate) struct FrontStore {
    tats: Tats,
}

impl StateStore for FrontStore {
    type Key = FrontKey;

    fn measure_and_replace<T, F, E>(&self, key: &FrontKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // A panic elsewhere while the lock was held leaves complete values behind: each write is one insert.
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = tats.get(&key.key).map(|tat| Nanos::from(*tat));
        let (outcome, next) = f(previous)?;
        if key.record {
            tats.insert(key.key.clone(), next.into());
        }
        Ok(outcome)
    }
}

struct RuleFront<C: Clock> {
    scope: &'static str,
    reason: Reason,
    limiter: RateLimiter<FrontKey, FrontStore, C, NoOpMiddleware<C::Instant>>,
    tats: Tats,
    /// Prune when the map holds more keys than this.
    prune_above: AtomicUsize,
}

pub(crate) struct Front<C: Clock> {
    clock: C,
    /// Taken after every limiter was created, so never before any limiter's own start: a key whose time is
    /// below `now - start` is also past due for its limiter.
    start: C::Instant,
    rules: Vec<RuleFront<C>>,
}

impl<C: Clock + Clone> Front<C> {
    /// One limiter per rule of each scope; `scopes` pairs a scope name with its rules.
    pub(crate) fn new(scopes: &[(&'static str, &[Rule])], clock: C) -> Self {
        let mut rules = Vec::new();
        for (scope, scope_rules) in scopes {
            for rule in *scope_rules {
                let Some(quota) = quota(rule) else {
                    continue;
                };
                let store = FrontStore::default();
                let tats = store.tats.clone();
                rules.push(RuleFront {
                    scope,
                    reason: rule.reason,
                    limiter: RateLimiter::new(quota, store, clock.clone()),
                    tats,
                    prune_above: AtomicUsize::new(PRUNE_FLOOR),
                });
            }
        }
        let start = clock.now();
        Self {
            clock,
            start,
            rules,
        }
    }

    /// The reason with the longest wait among the rules that would refuse one more send now, without
    /// counting anything.
    pub(crate) fn check(&self, counted: &[Counted<'_>]) -> Option<(Reason, Duration)> {
        let now = self.clock.now();
        let mut longest: Option<(Reason, Duration)> = None;
        for (rule, key) in self.applicable(counted) {
            let probe = FrontKey {
                key: key.to_string(),
                record: false,
            };
            if let Err(not_until) = rule.limiter.check_key(&probe) {
                let wait = not_until.wait_time_from(now);
                if longest.is_none_or(|(_, w)| wait > w) {
                    longest = Some((rule.reason, wait));
                }
            }
        }
        longest
    }

    /// Counts a send the database admitted.
    pub(crate) fn record(&self, counted: &[Counted<'_>]) {
        for (rule, key) in self.applicable(counted) {
            let cell = FrontKey {
                key: key.to_string(),
                record: true,
            };
            // Refused here only when this clock and the caller's `now` disagree; then the front stays
            // more lenient than the database, which is the safe side.
            let _ = rule.limiter.check_key(&cell);
            self.prune(rule);
        }
    }

    /// Forgets every send counted under `key` in `scope`: the key starts afresh.
    pub(crate) fn forget(&self, scope: &str, key: &str) {
        for rule in self.rules.iter().filter(|r| r.scope == scope) {
            rule.tats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
        }
    }

    fn applicable<'c>(
        &'c self,
        counted: &'c [Counted<'_>],
    ) -> impl Iterator<Item = (&'c RuleFront<C>, &'c str)> + 'c {
        self.rules.iter().filter_map(move |rule| {
            counted
                .iter()
                .find(|c| c.scope == rule.scope)
                .map(|c| (rule, c.key.as_str()))
        })
    }

    /// Drops keys whose state is back to that of a key never seen, so the map grows with the keys active
    /// within a window, not with every key ever seen.
    fn prune(&self, rule: &RuleFront<C>) {
        let mut tats = rule.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if tats.len() <= rule.prune_above.load(Ordering::Relaxed) {
            return;
        }
        let elapsed: u64 = self.clock.now().duration_since(self.start).into();
        tats.retain(|_, tat| *tat > elapsed);
        rule.prune_above
            .store((tats.len() * 2).max(PRUNE_FLOOR), Ordering::Relaxed);
    }

    #[cfg(test)]
    fn keys_held(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.tats.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// A burst of `max_sends`, one more every `window / max_sends` (rounded down: never stricter than the
/// window).
fn quota(rule: &Rule) -> Option<Quota> {
    let burst = NonZeroU32::new(rule.max_sends)?;
    let period = rule.window / rule.max_sends;
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const COOLDOWN: Rule = Rule {
        reason: Reason::DestinationCooldown,
        max_sends: 1,
        window: Duration::from_secs(30),
    };
    const WINDOW: Rule = Rule {
        reason: Reason::DestinationWindow,
        max_sends: 3,
        window: Duration::from_secs(3600),
    };

    fn counted(key: &str) -> Vec<Counted<'static>> {
        vec![Counted {
            scope: "destination",
            key: key.into(),
            rules: &[],
        }]
    }

    #[test]
    fn checking_counts_nothing_and_recording_counts_admitted_sends() {
        let clock = FakeRelativeClock::default();
        let rules = [COOLDOWN, WINDOW];
        let front = Front::new(&[("destination", &rules[..])], clock.clone());
        let a = counted("a");
        for _ in 0..10 {
            assert_eq!(front.check(&a), None);
        }
        front.record(&a);
        assert_eq!(
            front.check(&a),
            Some((Reason::DestinationCooldown, Duration::from_secs(30)))
        );
        assert_eq!(front.check(&counted("b")), None);
        clock.advance(Duration::from_secs(30));
        assert_eq!(front.check(&a), None);
        front.record(&a);
        clock.advance(Duration::from_secs(30));
        front.record(&a);
        clock.advance(Duration::from_secs(30));
        // Three sends in 60 s: the window (3 per hour, one more every 20 min) refuses for longer than the
        // cooldown, and says so.
        let (reason, wait) = front.check(&a).expect("refused");
        assert_eq!(reason, Reason::DestinationWindow);
        assert_eq!(wait, Duration::from_secs(1200 - 90));
    }

    #[test]
    fn idle_keys_are_pruned_once_many_are_held() {
        let clock = FakeRelativeClock::default();
        let rules = [COOLDOWN];
        let front = Front::new(&[("destination", &rules[..])], clock.clone());
        for i in 0..PRUNE_FLOOR {
            front.record(&counted(&i.to_string()));
        }
        assert_eq!(front.keys_held(), PRUNE_FLOOR);
        clock.advance(Duration::from_secs(31));
        front.record(&counted("new"));
        assert_eq!(front.keys_held(), 1);
    }
}
