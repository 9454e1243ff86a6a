//! The gateway's metrics, all in one struct registered on the service's registry. The outbox gauges are
//! computed from the database when Prometheus scrapes (on the blocking pool: see `reclaim_common::metrics::expose`).

use crate::channel::Channel;
use crate::limits::Reason;
use crate::outbox::{self, MessageStatus, Transition};
use chrono::Utc;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use reclaim_common::Db;

/// What happened to a verification, as `reclaim_gateway_verifications_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationOutcome {
    /// Started, and its first message queued.
    Started,
    /// Started for a destination the caller said no account has: nothing was sent.
    StartedUnknown,
    /// The right code or link token was checked.
    Approved,
    /// A wrong (or superseded) code or token was checked; checks are left.
    Wrong,
    /// A wrong one was checked and it was the last check.
    MaxChecksReached,
    /// Canceled by the caller.
    Canceled,
}

impl VerificationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationOutcome::Started => "started",
            VerificationOutcome::StartedUnknown => "started_unknown",
            VerificationOutcome::Approved => "approved",
            VerificationOutcome::Wrong => "wrong",
            VerificationOutcome::MaxChecksReached => "max_checks_reached",
            VerificationOutcome::Canceled => "canceled",
        }
    }
}

#[derive(Clone)]
pub struct GatewayMetrics {
    /// Delivery attempts by channel, provider and outcome (`sent`, `transient`, `permanent`, `timeout`,
    /// `expired`, `failed`).
    pub messages: IntCounterVec,
    /// Time a provider took to accept or refuse one attempt.
    pub attempt_duration: HistogramVec,
    /// Retries scheduled after a transient failure, by channel.
    pub retries: IntCounterVec,
    /// Messages moved to their next fallback step, by channel left and channel taken.
    pub fallbacks: IntCounterVec,
    /// Deliveries (or the dispatcher that starts them) that panicked; the place is used again.
    pub worker_restarts: IntCounter,
    /// Kratos courier calls by template type (`unknown` before it is read) and outcome (`queued`,
    /// `duplicate`, `refused`, `invalid`).
    pub kratos_courier: IntCounterVec,
    /// ZITADEL HTTP provider calls by hook (`sms`, `email`) and outcome (`queued`, `duplicate`, `throttled`,
    /// `refused`, `invalid`).
    pub zitadel_provider: IntCounterVec,
    /// Supabase send-hook calls by hook (`send-sms`, `send-email`) and outcome (`queued`, `duplicate`,
    /// `throttled`, `unauthorized`, `invalid`, `error`).
    pub supabase_hooks: IntCounterVec,
    /// Password changes from Supabase's `password_changed_notification` reported to the plugin, by outcome
    /// (`reported`, `unavailable`, `refused`, `off`: no plugin linked).
    pub supabase_change_reports: IntCounterVec,
    /// Rows deleted by the retention janitor, by kind (`messages`, `idempotency_records`, `verifications`,
    /// `limit_records`).
    pub retention_deleted: IntCounterVec,
    /// Sends refused by the abuse limits, by scope (`destination`, `ip`, `identity`, `prefix`, `country`,
    /// `number_type`) and reason code.
    pub limit_refusals: IntCounterVec,
    /// Verifications by channel and outcome: `started` (a code or link queued), `started_unknown` (the caller
    /// said no account has the destination, so nothing was sent), `approved`, `wrong`, `max_checks_reached`
    /// and `canceled`. `approved` over `started` is the conversion.
    pub verifications: IntCounterVec,
}

impl GatewayMetrics {
    pub fn register(registry: &Registry, db: Db) -> prometheus::Result<Self> {
        let messages = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_messages_total",
                "Delivery attempts by channel, provider and outcome",
            ),
            &["channel", "provider", "outcome"],
        )?;
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "reclaim_gateway_attempt_duration_seconds",
                "Time a provider took to accept or refuse one delivery attempt",
            )
            .buckets(reclaim_common::metrics::LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_retries_total",
                "Retries scheduled after a transient failure",
            ),
            &["channel"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_fallbacks_total",
                "Messages moved on to their next fallback channel or address",
            ),
            &["from", "to"],
        )?;
        let worker_restarts = IntCounter::with_opts(Opts::new(
            "reclaim_gateway_worker_restarts_total",
            "Deliveries, or their dispatcher, that panicked and whose place was used again",
        ))?;
        let retention_deleted = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_retention_deleted_total",
                "Rows deleted by the retention janitor, by kind",
            ),
            &["kind"],
        )?;
        let kratos_courier = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_kratos_courier_total",
                "Kratos courier calls by template type and outcome",
            ),
            &["template_type", "outcome"],
        )?;
        registry.register(Box::new(kratos_courier.clone()))?;
        let zitadel_provider = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_zitadel_provider_total",
                "ZITADEL HTTP provider calls by hook and outcome",
            ),
            &["hook", "outcome"],
        )?;
        registry.register(Box::new(zitadel_provider.clone()))?;
        let supabase_hooks = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_supabase_hook_total",
                "Supabase send-hook calls by hook and outcome",
            ),
            &["hook", "outcome"],
        )?;
        registry.register(Box::new(supabase_hooks.clone()))?;
        let supabase_change_reports = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_supabase_change_reports_total",
                "Supabase password changes reported to the plugin, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(supabase_change_reports.clone()))?;
        let limit_refusals = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_limit_refusals_total",
                "Sends refused by the abuse limits, by scope and reason code",
            ),
            &["scope", "reason"],
        )?;
        // Every series exists from the start at 0, so a dashboard's rate() sees the first refusal.
        for reason in Reason::ALL {
            limit_refusals.with_label_values(&[reason.scope().as_str(), reason.as_str()]);
        }
        let verifications = IntCounterVec::new(
            Opts::new(
                "reclaim_gateway_verifications_total",
                "Verifications by channel and outcome (started, started_unknown, approved, wrong, \
                 max_checks_reached, canceled)",
            ),
            &["channel", "outcome"],
        )?;
        // Started and approved exist from the start at 0 on every channel, so the conversion is defined from
        // the first verification on.
        for channel in Channel::ALL {
            for outcome in [VerificationOutcome::Started, VerificationOutcome::Approved] {
                verifications.with_label_values(&[channel.as_str(), outcome.as_str()]);
            }
        }
        registry.register(Box::new(verifications.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(limit_refusals.clone()))?;
        registry.register(Box::new(worker_restarts.clone()))?;
        registry.register(Box::new(retention_deleted.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(OutboxCollector::new(db)?))?;
        Ok(Self {
            messages,
            attempt_duration,
            retries,
            fallbacks,
            worker_restarts,
            retention_deleted,
            kratos_courier,
            zitadel_provider,
            supabase_hooks,
            supabase_change_reports,
            limit_refusals,
            verifications,
        })
    }

    /// Counts one verification event on `channel`.
    pub fn count_verification(&self, channel: &str, outcome: VerificationOutcome) {
        self.verifications
            .with_label_values(&[channel, outcome.as_str()])
            .inc();
    }

    /// Counts a retry or a fallback of a message that was on channel `from`.
    pub fn count_transition(&self, from: &str, transition: &Transition) {
        match transition {
            Transition::Retry { .. } => self.retries.with_label_values(&[from]).inc(),
            Transition::Fallback { step, .. } => {
                tracing::info!(fallback.channel = %step.channel, "falling back");
                self.fallbacks
                    .with_label_values(&[from, step.channel.as_str()])
                    .inc()
            }
            _ => {}
        }
    }
}

/// `reclaim_gateway_outbox{status}` and `reclaim_gateway_oldest_due_message_age_seconds`, read from the
/// database at scrape time so every instance reports the shared outbox.
struct OutboxCollector {
    db: Db,
    outbox: IntGaugeVec,
    oldest_due: Gauge,
}

impl OutboxCollector {
    fn new(db: Db) -> prometheus::Result<Self> {
        Ok(Self {
            db,
            outbox: IntGaugeVec::new(
                Opts::new("reclaim_gateway_outbox", "Messages in the outbox by status"),
                &["status"],
            )?,
            oldest_due: Gauge::with_opts(Opts::new(
                "reclaim_gateway_oldest_due_message_age_seconds",
                "How long the longest-waiting due message has been due (0 when none is)",
            ))?,
        })
    }

    fn refresh(&self) -> Result<(), reclaim_common::db::DbError> {
        let mut conn = self.db.get()?;
        let counts = outbox::count_by_status(&mut conn)?;
        for status in MessageStatus::ALL {
            let count = counts
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, c)| *c);
            self.outbox.with_label_values(&[status.as_str()]).set(count);
        }
        let now = Utc::now().naive_utc();
        let age = outbox::oldest_due(&mut conn, now)?.map_or(0.0, |due| {
            (now - due).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.oldest_due.set(age);
        Ok(())
    }
}

impl Collector for OutboxCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.outbox.desc();
        descs.extend(self.oldest_due.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Err(error) = self.refresh() {
            // Better no outbox gauges than stale ones.
            tracing::warn!(error = %error, "cannot read the outbox for metrics");
            return Vec::new();
        }
        let mut families = self.outbox.collect();
        families.extend(self.oldest_due.collect());
        families
    }
}
