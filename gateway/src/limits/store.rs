//! The limits kept in the database: a log of admitted sends (`gateway_limit_sends`, one row per scope and
//! send) counted over sliding windows, decided and written inside the caller's write transaction.
//!
//! Exact across processes: on PostgreSQL every key of an attempt is locked with a transaction-scoped
//! advisory lock (taken in one global order, so two attempts sharing keys cannot deadlock) before its rows
//! are counted, so a second instance counting the same key waits for the first to commit or roll back, and
//! then sees its row (READ COMMITTED takes a fresh snapshot per statement). On SQLite the caller's
//! `BEGIN IMMEDIATE` transaction already excludes every other writer.

use super::refusal::Reason;
use crate::schema::gateway_limit_sends as s;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use reclaim_common::db::{AnyConnection, DbError};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// One counted limit of a scope: at most `max_sends` in any `window`. A cooldown is a window that allows
/// one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub reason: Reason,
    pub max_sends: u32,
    pub window: Duration,
}

/// The rules of one scope applied to one key of an attempt.
#[derive(Debug, Clone)]
pub(crate) struct Counted<'a> {
    pub scope: &'static str,
    /// A keyed digest: the table never holds the value itself.
    pub key: String,
    pub rules: &'a [Rule],
}

impl Counted<'_> {
    /// How long a row of this scope still counts: its longest window.
    fn keep(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.window)
            .max()
            .unwrap_or_default()
    }

    fn lock_id(&self) -> i64 {
        let digest = Sha256::new()
            .chain_update(b"reclaim.gateway.limits\0")
            .chain_update(self.scope.as_bytes())
            .chain_update([0])
            .chain_update(self.key.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// Whether an admitted send is recorded (it counts from now on) or the call only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Yes,
    No,
}

/// Decides every counted limit of one attempt at `now` and, when all allow it, records the send under each
/// key. Refused: the reason whose wait is the longest, with that wait (the time until every limit allows a
/// send). Must run inside a write transaction ([`reclaim_common::db::write_transaction`]) at READ COMMITTED
/// (PostgreSQL's default).
pub(crate) fn admit(
    conn: &mut AnyConnection,
    counted: &[Counted<'_>],
    now: NaiveDateTime,
    record: Record,
) -> Result<Result<(), (Reason, Duration)>, DbError> {
    // A look that records nothing needs no lock: it may be a moment stale, and the send it precedes is
    // admitted for real where it is queued.
    if let (AnyConnection::Postgresql(pg), Record::Yes) = (&mut *conn, record) {
        let mut ids: Vec<i64> = counted.iter().map(Counted::lock_id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(id)
                .execute(pg)?;
        }
    }
    let mut refusal: Option<(Reason, Duration)> = None;
    for item in counted {
        let fetch = item.rules.iter().map(|r| r.max_sends).max().unwrap_or(0);
        let since = now - delta(item.keep());
        let recent: Vec<NaiveDateTime> = s::table
            .filter(s::scope.eq(item.scope))
            .filter(s::key_digest.eq(&item.key))
            .filter(s::sent_at.gt(since))
            .order(s::sent_at.desc())
            .limit(i64::from(fetch))
            .select(s::sent_at)
            .load(conn)?;
        for rule in item.rules {
            if let Some(wait) = wait_for(rule, &recent, now) {
                if refusal.is_none_or(|(_, longest)| wait > longest) {
                    refusal = Some((rule.reason, wait));
                }
            }
        }
    }
    if let Some(refused) = refusal {
        return Ok(Err(refused));
    }
    if record == Record::No {
        return Ok(Ok(()));
    }
    for item in counted {
        diesel::insert_into(s::table)
            .values((
                s::id.eq(uuid::Uuid::now_v7().to_string()),
                s::scope.eq(item.scope),
                s::key_digest.eq(&item.key),
                s::sent_at.eq(now),
                s::expires_at.eq(now + delta(item.keep())),
            ))
            .execute(conn)?;
    }
    Ok(Ok(()))
}

/// How long until `rule` allows a send, given the key's sends newest first (at least the rule's
/// `max_sends` newest, when there are that many), or `None` when it allows one at `now`. Sliding window:
/// a send at `t` counts while `now - window < t`, so with `max_sends` sends in the window the next is
/// allowed when the oldest of the newest `max_sends` leaves it.
pub(crate) fn wait_for(
    rule: &Rule,
    newest_first: &[NaiveDateTime],
    now: NaiveDateTime,
) -> Option<Duration> {
    let max = usize::try_from(rule.max_sends).ok()?;
    let window = delta(rule.window);
    let in_window = newest_first
        .iter()
        .take_while(|sent| **sent > now - window)
        .count();
    if in_window < max || max == 0 {
        return None;
    }
    let frees_at = *newest_first.get(max - 1)? + window;
    // Positive: that send lies inside the window. `to_std` fails only on a negative span.
    (frees_at - now).to_std().ok()
}

/// The sends counted under one key of one scope after `since`, newest first.
pub(crate) fn sends(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    since: NaiveDateTime,
) -> Result<Vec<NaiveDateTime>, DbError> {
    Ok(s::table
        .filter(s::scope.eq(scope))
        .filter(s::key_digest.eq(key))
        .filter(s::sent_at.gt(since))
        .order(s::sent_at.desc())
        .select(s::sent_at)
        .load(conn)?)
}

/// Deletes every send counted under one key of one scope; returns how many.
pub(crate) fn forget(conn: &mut AnyConnection, scope: &str, key: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(
        s::table
            .filter(s::scope.eq(scope))
            .filter(s::key_digest.eq(key)),
    )
    .execute(conn)?)
}

/// Deletes rows no limit counts any more at `now`.
pub(crate) fn prune(conn: &mut AnyConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::delete(s::table.filter(s::expires_at.le(now))).execute(conn)?)
}

/// Windows are bounded by settings validation (30 days), so the conversion never saturates in practice.
fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(seconds: i64) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 29)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("date")
            + TimeDelta::seconds(seconds)
    }

    fn rule(max_sends: u32, window_seconds: u64) -> Rule {
        Rule {
            reason: Reason::DestinationWindow,
            max_sends,
            window: Duration::from_secs(window_seconds),
        }
    }

    #[test]
    fn a_full_window_waits_until_its_oldest_counted_send_leaves_it() {
        let five_per_hour = rule(5, 3600);
        let sends = [at(600), at(500), at(400), at(300), at(100)];
        assert_eq!(
            wait_for(&five_per_hour, &sends, at(700)),
            Some(Duration::from_secs(3600 + 100 - 700))
        );
        // The moment the send at 100 leaves the window, one more is allowed.
        assert_eq!(wait_for(&five_per_hour, &sends, at(3700)), None);
        assert_eq!(wait_for(&five_per_hour, &sends[..4], at(700)), None);
    }

    #[test]
    fn with_more_sends_than_allowed_the_wait_follows_the_newest_ones() {
        // The limit was lowered from 5 to 2: the send at 500 must leave the window first.
        let two_per_hour = rule(2, 3600);
        let sends = [at(600), at(500), at(400)];
        assert_eq!(
            wait_for(&two_per_hour, &sends, at(700)),
            Some(Duration::from_secs(3600 + 500 - 700))
        );
    }

    #[test]
    fn a_cooldown_is_a_window_of_one_send() {
        let cooldown = rule(1, 30);
        assert_eq!(
            wait_for(&cooldown, &[at(0)], at(12)),
            Some(Duration::from_secs(18))
        );
        assert_eq!(wait_for(&cooldown, &[at(0)], at(30)), None);
        assert_eq!(wait_for(&cooldown, &[], at(0)), None);
    }

    #[test]
    fn sends_stamped_after_now_by_a_clock_ahead_still_count() {
        assert_eq!(
            wait_for(&rule(1, 30), &[at(10)], at(0)),
            Some(Duration::from_secs(40))
        );
    }
}
