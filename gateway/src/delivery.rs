//! The delivery worker: claim a due message with a lease, render it, hand it to its channel's provider, then
//! record the outcome (sent, retry later, fall back, fail, expire). The claim is committed before the
//! provider call and the outcome written after it: no transaction spans the network. Also here: what a
//! failure leads to ([`after_failure`]), used for the worker's own attempts and for providers' reports.

use crate::channel::Channel;
use crate::metrics::GatewayMetrics;
use crate::outbox::{
    self, AttemptOutcome, AttemptRow, MessageRow, MessageStatus, ProviderReport, Recorded,
    ReportOutcome, Transition,
};
use crate::providers::classify::ErrorClass;
use crate::providers::{Outgoing, Providers, SendError};
use crate::retry::{self, Next};
use crate::templates::Templates;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::{GatewaySettings, RetrySettings};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::Db;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The error code of a provider's [`SendError::Permanent`] that refuses a message because it expired before
/// it could be handed over (the provider checks the expiry against its own clock, just before the call).
pub const EXPIRED_CODE: &str = "expired";

/// Wakes this process's idle delivery workers when a message was queued, so that it is sent now rather than
/// at their next poll (`gateway.worker.poll_interval_ms`). Ring it after the commit that queued the message.
/// Workers of other processes still find it by polling. Cheap to clone.
#[derive(Clone, Default)]
pub struct Doorbell(Arc<tokio::sync::Notify>);

impl Doorbell {
    pub fn ring(&self) {
        // Every idle worker wakes; a worker between its last claim and its sleep finds the stored permit.
        self.0.notify_waiters();
        self.0.notify_one();
    }

    async fn wait(&self) {
        self.0.notified().await
    }
}

/// Cheap to clone; the workers and tests share one.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    templates: Arc<Templates>,
    providers: Providers,
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    keyring: Keyring,
    doorbell: Doorbell,
}

impl Delivery {
    pub fn new(
        db: Db,
        templates: Arc<Templates>,
        providers: Providers,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        keyring: Keyring,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                templates,
                providers,
                settings,
                metrics,
                keyring,
                doorbell: Doorbell::default(),
            }),
        }
    }

    /// What wakes these workers when a message was queued.
    pub fn doorbell(&self) -> Doorbell {
        self.inner.doorbell.clone()
    }

    /// Delivers every message due now, one after the other, until none is due; returns how many attempts
    /// were made. For tests and one-off runs: nothing sleeps.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        self.drain_at(Utc::now()).await
    }

    /// Like [`Delivery::drain`] with the clock set to `now`, so tests can reach a scheduled retry or an
    /// expiry without waiting for it.
    pub async fn drain_at(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let owner = format!("drain-{}", uuid::Uuid::new_v4().simple());
        let mut attempts = 0;
        while self.deliver_one(&owner, now.naive_utc()).await? {
            attempts += 1;
        }
        Ok(attempts)
    }

    /// Starts `gateway.worker.concurrency` supervised workers that run until `shutdown` is triggered. A
    /// worker busy with a message finishes it (the provider call is bounded by `send_timeout_ms`) before it
    /// stops; a worker that panics is logged, counted and started again.
    pub fn spawn_workers(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.inner.settings.worker.concurrency)
            .map(|index| {
                let delivery = self.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { delivery.supervise(index, shutdown).await })
            })
            .collect()
    }

    /// Runs worker `index` in its own task and starts a new one when it panics. The message it died on
    /// keeps its lease until the lease runs out, then any worker takes it again, as after a crash.
    async fn supervise(self, index: usize, shutdown: Shutdown) {
        loop {
            let owner = format!("worker-{index}-{}", uuid::Uuid::new_v4().simple());
            let worker = tokio::spawn(self.clone().work(owner, shutdown.clone()));
            match worker.await {
                Ok(()) => return,
                Err(error) if error.is_panic() => {
                    // The panic hook has printed the panic itself; its text may hold message data.
                    tracing::error!(
                        worker = index,
                        "delivery worker panicked; starting it again"
                    );
                    self.inner.metrics.worker_restarts.inc();
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
            // A worker that panics before it claims anything would otherwise spin.
            let pause = Duration::from_millis(self.inner.settings.worker.poll_interval_ms);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn work(self, owner: String, shutdown: Shutdown) {
        let idle = Duration::from_millis(self.inner.settings.worker.poll_interval_ms);
        while !shutdown.is_triggered() {
            match self.deliver_one(&owner, Utc::now().naive_utc()).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "delivery worker error")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = self.inner.doorbell.wait() => {}
                _ = shutdown.wait() => {}
            }
        }
    }

    /// Claims one due message and makes one attempt; false when nothing was due.
    async fn deliver_one(&self, owner: &str, now: NaiveDateTime) -> anyhow::Result<bool> {
        let lease = TimeDelta::seconds(
            i64::try_from(self.inner.settings.worker.lease_seconds).unwrap_or(i64::MAX / 1000),
        );
        let claim_owner = owner.to_string();
        let Some(message) = self
            .inner
            .db
            .run(move |conn| outbox::claim(conn, &claim_owner, now, lease))
            .await?
        else {
            return Ok(false);
        };
        let span = tracing::info_span!(
            "deliver",
            message.id = %message.id,
            message.channel = %message.channel,
            attempt = message.attempts
        );
        tracing::Instrument::instrument(self.attempt(owner, message, now), span).await?;
        Ok(true)
    }

    async fn attempt(
        &self,
        owner: &str,
        message: MessageRow,
        now: NaiveDateTime,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let channel = Channel::parse(&message.channel)
            .ok_or_else(|| anyhow::anyhow!("unknown channel {}", message.channel))?;
        let attempt_number = u32::try_from(message.attempts).unwrap_or(0);
        // This attempt's place in its step's retry budget.
        let step_attempt = u32::try_from(message.step_attempts)
            .unwrap_or(0)
            .saturating_add(1);
        if message.expires_at.is_some_and(|expiry| expiry <= now) {
            inner
                .metrics
                .messages
                .with_label_values(&[channel.as_str(), "none", "expired"])
                .inc();
            let transition = Transition::Final {
                status: MessageStatus::Expired,
                error: "expired before it could be sent".into(),
            };
            self.record(owner, None, &message, transition, now).await?;
            return Ok(());
        }
        // Claims that never recorded an outcome mean the worker died on this message each time (attempts
        // with an outcome reset the count). Stop instead of crashing forever.
        let unrecorded = u32::try_from(message.unrecorded_claims).unwrap_or(0);
        if unrecorded > inner.settings.retry.max_attempts {
            let transition = Transition::Final {
                status: MessageStatus::Failed,
                error: format!(
                    "claimed {unrecorded} times without an outcome (a worker stopped on it each time)"
                ),
            };
            self.record(owner, None, &message, transition, now).await?;
            return Ok(());
        }
        let Some(provider) = inner.providers.for_channel(channel).cloned() else {
            anyhow::bail!("no provider for {channel}");
        };
        let data: serde_json::Value = match message.open_data(&inner.keyring) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(error) => {
                // Sealed with a key that is no longer configured: no retry can open it.
                let transition = Transition::Final {
                    status: MessageStatus::Failed,
                    error: format!("cannot open the message data: {error}"),
                };
                self.record(owner, None, &message, transition, now).await?;
                let id = message.id.clone();
                inner
                    .db
                    .run(move |conn| outbox::wipe_data(conn, &id))
                    .await?;
                return Ok(());
            }
        };
        let content =
            match inner
                .templates
                .render(&message.template, &message.locale, channel, &data)
            {
                Ok(content) => content,
                Err(error) => {
                    // The template changed since the message was accepted; no retry can fix that.
                    let transition = Transition::Final {
                        status: MessageStatus::Failed,
                        error: format!("cannot render: {}: {}", error.field, error.message),
                    };
                    self.record(owner, None, &message, transition, now).await?;
                    return Ok(());
                }
            };
        // Our id in the URL (covered by the provider's signature) finds the message even when the report
        // comes before we have recorded the provider's id for it.
        let status_callback = (!inner.settings.public_url.is_empty() && channel != Channel::Email)
            .then(|| {
                format!(
                    "{}/providers/twilio/status?message={}",
                    inner.settings.public_url.trim_end_matches('/'),
                    message.id
                )
            });
        let outgoing = Outgoing {
            message_id: message.id.parse()?,
            attempt: attempt_number,
            channel,
            to: message.destination.clone(),
            content,
            locale: message.locale.clone(),
            expires_at: message.expires_at.map(|e| e.and_utc()),
            status_callback,
        };
        let started = Instant::now();
        let timeout = Duration::from_millis(inner.settings.worker.send_timeout_ms);
        let result = match tokio::time::timeout(timeout, provider.send(&outgoing)).await {
            // Before anything logs or stores the provider's text, which may quote the recipient.
            Ok(result) => result.map_err(SendError::masked),
            Err(_) => Err(SendError::Transient {
                code: Some("timeout".into()),
                message: format!("no answer within {} ms", timeout.as_millis()),
                retry_after: None,
            }),
        };
        let latency = started.elapsed();
        inner
            .metrics
            .attempt_duration
            .with_label_values(&[provider.name()])
            .observe(latency.as_secs_f64());
        let mut attempt = AttemptRow {
            message_id: message.id.clone(),
            number: message.attempts,
            channel: channel.as_str().into(),
            provider: provider.name().into(),
            outcome: AttemptOutcome::Sent,
            error_code: None,
            error_message: None,
            provider_message_id: None,
            latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
            started_at: now,
        };
        let transition = match result {
            Ok(accepted) => {
                attempt.provider_message_id = accepted.provider_message_id.clone();
                tracing::info!(provider = provider.name(), "message sent");
                Transition::Sent {
                    provider: provider.name().into(),
                    provider_message_id: accepted.provider_message_id,
                    awaits_report: outgoing.status_callback.is_some(),
                }
            }
            Err(SendError::Transient {
                code,
                message: error,
                retry_after,
            }) => {
                tracing::info!(provider = provider.name(), error = %error, "transient failure");
                attempt.outcome = if code.as_deref() == Some("timeout") {
                    AttemptOutcome::Timeout
                } else {
                    AttemptOutcome::Transient
                };
                attempt.error_code = code;
                attempt.error_message = Some(error.clone());
                let failure = Failure {
                    class: ErrorClass::Transient,
                    retry_after,
                    error,
                    final_status: MessageStatus::Failed,
                };
                after_failure(&inner.settings.retry, &message, step_attempt, failure, now)
            }
            Err(SendError::Permanent {
                code,
                message: error,
            }) => {
                tracing::info!(provider = provider.name(), error = %error, "permanent failure");
                attempt.outcome = AttemptOutcome::Permanent;
                let expired = code.as_deref() == Some(EXPIRED_CODE);
                attempt.error_code = code;
                attempt.error_message = Some(error.clone());
                if expired {
                    // The provider refused a code with (almost) no time left: no other channel can still
                    // deliver it in time, so it ends `expired` as if our own check had caught it.
                    Transition::Final {
                        status: MessageStatus::Expired,
                        error,
                    }
                } else {
                    let failure = Failure {
                        class: ErrorClass::Permanent,
                        retry_after: None,
                        error,
                        final_status: MessageStatus::Failed,
                    };
                    after_failure(&inner.settings.retry, &message, step_attempt, failure, now)
                }
            }
        };
        inner
            .metrics
            .messages
            .with_label_values(&[channel.as_str(), provider.name(), attempt.outcome.as_str()])
            .inc();
        inner
            .metrics
            .count_transition(channel.as_str(), &transition);
        if let Recorded::Done {
            early_report: Some(report),
        } = self
            .record(owner, Some(attempt), &message, transition, now)
            .await?
        {
            tracing::info!("applying the provider's report that came before the send was recorded");
            apply_report(&inner.db, &inner.settings, &inner.metrics, report, now).await?;
        }
        Ok(())
    }

    async fn record(
        &self,
        owner: &str,
        attempt: Option<AttemptRow>,
        message: &MessageRow,
        transition: Transition,
        now: NaiveDateTime,
    ) -> anyhow::Result<Recorded> {
        let owner = owner.to_string();
        let id = message.id.clone();
        let recorded = self
            .inner
            .db
            .run(move |conn| outbox::record(conn, &owner, attempt, &id, transition, now))
            .await?;
        if recorded == Recorded::LeaseLost {
            // Our lease ran out and another worker took the message over; its attempt counts, not ours.
            tracing::warn!("lease lost before the outcome was recorded");
        }
        Ok(recorded)
    }
}

/// A failed attempt, or a provider's report that an accepted one was not delivered.
pub struct Failure {
    pub class: ErrorClass,
    /// The provider's `Retry-After`, a floor for the backoff.
    pub retry_after: Option<Duration>,
    pub error: String,
    /// Where the message ends when neither a retry nor a fallback step is left.
    pub final_status: MessageStatus,
}

/// What a failure on the message's current step leads to. Transient: a retry of the step after a jittered
/// backoff (never before `Retry-After`, never after the expiry), until the step has had `max_attempts`
/// attempts (`step_attempts`, this one included). Permanent, or the step's budget spent: the next fallback
/// step, else `final_status`.
pub fn after_failure(
    settings: &RetrySettings,
    message: &MessageRow,
    step_attempts: u32,
    failure: Failure,
    now: NaiveDateTime,
) -> Transition {
    let Failure {
        class,
        retry_after,
        error,
        final_status,
    } = failure;
    if class == ErrorClass::Permanent {
        return message.fall_back_or(final_status, error);
    }
    let jitter = retry::jittered(settings, step_attempts, &mut rand::thread_rng());
    match retry::after_transient_failure(
        settings,
        step_attempts,
        jitter,
        retry_after,
        now,
        message.expires_at,
    ) {
        Next::RetryAt(at) => Transition::Retry { at, error },
        Next::Expired => Transition::Final {
            status: MessageStatus::Expired,
            error: format!("{error}; the next retry would come after the message expires"),
        },
        Next::Exhausted => {
            message.fall_back_or(final_status, format!("{error}; attempts exhausted"))
        }
    }
}

/// Applies a provider's report on a sent message (a status callback, or one that came before the worker
/// recorded the send): `delivered`; or undelivered, which is a failure of the message's current step.
pub async fn apply_report(
    db: &Db,
    settings: &GatewaySettings,
    metrics: &GatewayMetrics,
    report: ProviderReport,
    now: NaiveDateTime,
) -> anyhow::Result<ReportOutcome> {
    let retry = settings.retry.clone();
    let error_code = report.error_code.clone();
    let outcome = db
        .run(move |conn| {
            outbox::report_delivery(conn, &report, now, |message, transient| {
                let failure = Failure {
                    class: if transient {
                        ErrorClass::Transient
                    } else {
                        ErrorClass::Permanent
                    },
                    retry_after: None,
                    error: format!(
                        "provider reported undelivered{}",
                        error_code.map(|c| format!(" ({c})")).unwrap_or_default()
                    ),
                    final_status: MessageStatus::Undelivered,
                };
                // The undelivered attempt was counted when its send was recorded.
                let attempts = u32::try_from(message.step_attempts).unwrap_or(0);
                after_failure(&retry, message, attempts, failure, now)
            })
        })
        .await?;
    if let ReportOutcome::Moved {
        message,
        transition,
    } = &outcome
    {
        metrics.count_transition(&message.channel, transition);
    }
    Ok(outcome)
}
