//! Abuse limits on sends: what every path that sends a code or notice (the verification API, the Kratos
//! courier adapter) asks before it queues a message.
//!
//! What lives here:
//! - `screen`: static screening of phone numbers for SMS and voice — the country allow-list and the refused
//!   number types (`[gateway.sms]`). Permanent refusals.
//! - `store`: the limits kept in the database — per destination (cooldown and sends per window), per client
//!   IP, per identity, per phone-number prefix — decided and recorded inside the caller's write transaction,
//!   exact across gateway instances on one database. Sliding windows.
//! - `front`: the in-process governor front that refuses floods without a database round trip, and never
//!   refuses what the database would allow.
//! - `keys`: what each limit counts by (IPv6 /64, number prefixes, email case); `refusal`: reason codes and
//!   the HTTP answer.
//!
//! What does not: HTTP handlers (they call [`Limits`] and answer with [`Refusal::error_response`]) and the
//! provider rate per channel (`providers::rate_limited`), which paces delivery rather than refusing requests.
//!
//! The database holds keyed digests (HMAC-SHA256 under the gateway's newest storage key) of destinations,
//! IPs, identities and prefixes, never the values; a key rotation therefore starts every count afresh.

mod front;
mod keys;
mod refusal;
mod screen;
mod store;

pub use refusal::{LimitScope, Reason, Refusal};

use crate::address::Destination;
use crate::channel::Channel;
use crate::metrics::GatewayMetrics;
use chrono::NaiveDateTime;
use front::Front;
use governor::clock::{Clock, DefaultClock};
use reclaim_common::db::{AnyConnection, DbError};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use screen::Screen;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Counted, Rule};

/// One intended send.
#[derive(Debug, Clone, Copy)]
pub struct SendAttempt<'a> {
    pub channel: Channel,
    /// Already validated for `channel` ([`Destination::parse`]).
    pub destination: &'a Destination,
    /// The end user's address as the caller saw it; `None` = not counted per IP.
    pub client_ip: Option<IpAddr>,
    /// The identity the send is for; `None` or empty = not counted per identity.
    pub identity_id: Option<&'a str>,
}

/// The abuse limits of one gateway process. Cheap to clone.
///
/// Call order for one send: [`Limits::screen`] while validating the request (permanent refusals),
/// [`Limits::precheck`] before opening a transaction (cheap), then [`Limits::admit`] inside the write
/// transaction that queues the message: it decides, and records the send when it allows it.
pub struct Limits<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for Limits<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C: Clock> {
    keyring: Keyring,
    /// `None` for a process that only peeks (the Kratos guard): its refusals are counted by its own metrics.
    metrics: Option<GatewayMetrics>,
    screen: Screen,
    destination: Vec<Rule>,
    ip: Vec<Rule>,
    identity: Vec<Rule>,
    prefix: Vec<Rule>,
    prefix_digits: u32,
    front: Front<C>,
}

impl Limits {
    /// Limits from `[gateway.limits]` and `[gateway.sms]`; `keyring` is the gateway's storage keyring (it
    /// keys the digests kept in the database).
    pub fn new(settings: &GatewaySettings, keyring: Keyring, metrics: GatewayMetrics) -> Self {
        Self::with_clock(settings, keyring, Some(metrics), DefaultClock::default())
    }

    /// Limits for a process outside the gateway that only asks [`Limits::peek`] (the Kratos guard): the
    /// same settings and storage keys give the same keys and windows; refusals are not counted here.
    pub fn for_peeking(settings: &GatewaySettings, keyring: Keyring) -> Self {
        Self::with_clock(settings, keyring, None, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// As [`Limits::new`], with the clock the in-process front measures time on (a fake one in tests).
    pub fn with_clock(
        settings: &GatewaySettings,
        keyring: Keyring,
        metrics: Option<GatewayMetrics>,
        clock: C,
    ) -> Self {
        let limits = &settings.limits;
        let seconds = Duration::from_secs;
        let mut destination = Vec::new();
        if limits.destination.enabled {
            if limits.destination.cooldown_seconds > 0 {
                destination.push(Rule {
                    reason: Reason::DestinationCooldown,
                    max_sends: 1,
                    window: seconds(limits.destination.cooldown_seconds),
                });
            }
            destination.push(Rule {
                reason: Reason::DestinationWindow,
                max_sends: limits.destination.max_sends,
                window: seconds(limits.destination.window_seconds),
            });
        }
        let window = |enabled: bool, reason, max_sends, window_seconds| {
            if enabled && max_sends > 0 {
                vec![Rule {
                    reason,
                    max_sends,
                    window: seconds(window_seconds),
                }]
            } else {
                Vec::new()
            }
        };
        let ip = window(
            limits.ip.enabled,
            Reason::IpWindow,
            limits.ip.max_sends,
            limits.ip.window_seconds,
        );
        let identity = window(
            limits.identity.enabled,
            Reason::IdentityWindow,
            limits.identity.max_sends,
            limits.identity.window_seconds,
        );
        let prefix = window(
            true,
            Reason::PrefixWindow,
            settings.sms.prefix_max_sends_per_hour,
            3600,
        );
        let front = Front::new(
            &[
                (LimitScope::Destination.as_str(), &destination[..]),
                (LimitScope::Ip.as_str(), &ip[..]),
                (LimitScope::Identity.as_str(), &identity[..]),
                (LimitScope::Prefix.as_str(), &prefix[..]),
            ],
            clock,
        );
        Self {
            inner: Arc::new(Inner {
                keyring,
                metrics,
                screen: Screen::new(&settings.sms),
                destination,
                ip,
                identity,
                prefix,
                prefix_digits: settings.sms.prefix_digits,
                front,
            }),
        }
    }

    /// Static screening of a destination for `channel`: the country allow-list and the refused number types
    /// (SMS and voice; email always passes). No database. Refusals are permanent.
    pub fn screen(&self, channel: Channel, destination: &Destination) -> Result<(), Refusal> {
        self.inner
            .screen
            .check(channel, destination)
            .inspect_err(|refusal| self.count(refusal))
    }

    /// The in-process front: refuses, without touching the database, a send that some limit would refuse
    /// given the sends this process has admitted. Passing it decides nothing: [`Limits::admit`] does.
    pub fn precheck(&self, attempt: &SendAttempt<'_>) -> Result<(), Refusal> {
        let counted = self.counted(attempt);
        match self.inner.front.check(&counted) {
            None => Ok(()),
            Some((reason, wait)) => Err(self.refuse(reason, Some(wait))),
        }
    }

    /// Decides every limit for `attempt` at `now` — the screening and each limit kept in the database — and,
    /// when all allow it, records the send so that it counts for the next attempts.
    ///
    /// Call it inside the write transaction that queues the message
    /// ([`reclaim_common::db::write_transaction`], READ COMMITTED on PostgreSQL), so that the decision and
    /// the message commit or roll back together; concurrent admits for the same destination, IP, identity
    /// or prefix, in this process or another on the same database, are decided one after the other.
    /// A transaction rolled back after an admit leaves the in-process front counting a send that never
    /// was, until its window passes.
    pub fn admit(
        &self,
        conn: &mut AnyConnection,
        attempt: &SendAttempt<'_>,
        now: NaiveDateTime,
    ) -> Result<Result<(), Refusal>, DbError> {
        if let Err(refusal) = self.screen(attempt.channel, attempt.destination) {
            return Ok(Err(refusal));
        }
        let counted = self.counted(attempt);
        match store::admit(conn, &counted, now, store::Record::Yes)? {
            Ok(()) => {
                self.inner.front.record(&counted);
                Ok(Ok(()))
            }
            Err((reason, wait)) => Ok(Err(self.refuse(reason, Some(wait)))),
        }
    }

    /// What [`Limits::admit`] would answer at `now`, recording nothing: for a front end that tells the user
    /// before the send is asked for (the Kratos guard, in front of Kratos's courier call, which the gateway
    /// then admits). Refusals are not counted in metrics here.
    pub fn peek(
        &self,
        conn: &mut AnyConnection,
        attempt: &SendAttempt<'_>,
        now: NaiveDateTime,
    ) -> Result<Result<(), Refusal>, DbError> {
        if let Err(refusal) = self
            .inner
            .screen
            .check(attempt.channel, attempt.destination)
        {
            return Ok(Err(refusal));
        }
        let counted = self.counted(attempt);
        Ok(
            store::admit(conn, &counted, now, store::Record::No)?.map_err(|(reason, wait)| {
                Refusal {
                    reason,
                    retry_after: Some(wait),
                }
            }),
        )
    }

    /// The counted scopes of `attempt` with the digests of their keys.
    fn counted(&self, attempt: &SendAttempt<'_>) -> Vec<Counted<'_>> {
        let inner = &*self.inner;
        let mut values = vec![(
            LimitScope::Destination,
            &inner.destination,
            keys::destination(attempt.destination),
        )];
        if let Some(ip) = attempt.client_ip {
            values.push((LimitScope::Ip, &inner.ip, keys::client_ip(ip)));
        }
        if let Some(identity) = attempt.identity_id.filter(|id| !id.is_empty()) {
            values.push((LimitScope::Identity, &inner.identity, identity.to_string()));
        }
        if attempt.channel.uses_phone_numbers() {
            let prefix = keys::number_prefix(attempt.destination.as_str(), inner.prefix_digits);
            values.push((LimitScope::Prefix, &inner.prefix, prefix));
        }
        values
            .into_iter()
            .filter(|(_, rules, _)| !rules.is_empty())
            .map(|(scope, rules, value)| Counted {
                scope: scope.as_str(),
                key: inner.keyring.digest(
                    &format!("gateway.limits.{}", scope.as_str()),
                    value.as_bytes(),
                ),
                rules,
            })
            .collect()
    }

    fn refuse(&self, reason: Reason, retry_after: Option<Duration>) -> Refusal {
        let refusal = Refusal {
            reason,
            retry_after,
        };
        self.count(&refusal);
        refusal
    }

    fn count(&self, refusal: &Refusal) {
        tracing::info!(
            limit.scope = refusal.scope().as_str(),
            limit.reason = refusal.reason.as_str(),
            limit.retry_after_seconds = refusal.retry_after_seconds(),
            "send refused by an abuse limit"
        );
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .limit_refusals
                .with_label_values(&[refusal.scope().as_str(), refusal.reason.as_str()])
                .inc();
        }
    }
}

/// Where one destination stands with the limits kept for it (`GET /admin/recipients/{address}/timeline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationStanding {
    /// Sends to it that still count, newest first.
    pub counted_sends: Vec<NaiveDateTime>,
    /// Each limit on the destination that would refuse a send at `now`, with when it lifts.
    pub refusals: Vec<(Reason, NaiveDateTime)>,
}

impl<C: Clock + Clone> Limits<C> {
    /// The key digest the destination's sends are counted under.
    fn destination_key(&self, destination: &Destination) -> String {
        let scope = LimitScope::Destination.as_str();
        self.inner.keyring.digest(
            &format!("gateway.limits.{scope}"),
            keys::destination(destination).as_bytes(),
        )
    }

    /// The sends to `destination` the per-destination limits count at `now`, and which of them would
    /// refuse one more send, until when. Records nothing.
    pub fn standing(
        &self,
        conn: &mut AnyConnection,
        destination: &Destination,
        now: NaiveDateTime,
    ) -> Result<DestinationStanding, DbError> {
        let rules = &self.inner.destination;
        let keep = rules.iter().map(|r| r.window).max().unwrap_or_default();
        let since = now - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        let counted_sends = store::sends(
            conn,
            LimitScope::Destination.as_str(),
            &self.destination_key(destination),
            since,
        )?;
        let refusals = rules
            .iter()
            .filter_map(|rule| {
                store::wait_for(rule, &counted_sends, now).map(|wait| {
                    let lifts = now + chrono::TimeDelta::from_std(wait).unwrap_or_default();
                    (rule.reason, lifts)
                })
            })
            .collect();
        Ok(DestinationStanding {
            counted_sends,
            refusals,
        })
    }

    /// Lifts every per-destination limit on `destination`: forgets its counted sends, in the database and
    /// in this process's front. Returns how many sends were forgotten. Other gateway processes' fronts may
    /// still refuse for a moment: they never refuse longer than the window they counted.
    pub fn lift(
        &self,
        conn: &mut AnyConnection,
        destination: &Destination,
    ) -> Result<usize, DbError> {
        let key = self.destination_key(destination);
        let scope = LimitScope::Destination.as_str();
        let forgotten = store::forget(conn, scope, &key)?;
        self.inner.front.forget(scope, &key);
        Ok(forgotten)
    }
}

/// Deletes limit records that no limit counts any more at `now` (the retention janitor calls it).
pub fn prune(conn: &mut AnyConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    store::prune(conn, now)
}
