//! The delivery worker: claim due messages with a lease, render each, hand it to its channel's provider, then
//! record the outcome (sent, retry later, fall back, fail, expire). The claim is committed before the
//! provider call and the outcome written after it: no transaction spans the network. One claim and one
//! record cover every message that is due or done at that moment, so their cost is shared under load. Also
//! here: what a failure leads to ([`after_failure`]), used for the worker's own attempts and for providers'
//! reports.

use crate::channel::Channel;
use crate::metrics::GatewayMetrics;
use crate::outbox::{
    self, AttemptOutcome, AttemptRow, MessageRow, MessageStatus, Outcome, ProviderReport, Recorded,
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

    /// Delivers every message due now, `gateway.worker.concurrency` at a time, until none is due; returns
    /// how many claims were made. For tests and one-off runs: nothing sleeps.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        self.drain_at(Utc::now()).await
    }

    /// Like [`Delivery::drain`] with the clock set to `now`, so tests can reach a scheduled retry or an
    /// expiry without waiting for it.
    pub async fn drain_at(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let owner = format!("drain-{}", uuid::Uuid::new_v4().simple());
        let now = now.naive_utc();
        let mut claims = 0;
        loop {
            let messages = self.claim(&owner, now, self.capacity(), true).await?;
            if messages.is_empty() {
                return Ok(claims);
            }
            claims += messages.len();
            let sends: Vec<_> = messages
                .into_iter()
                .map(|message| tokio::spawn(self.clone().attempt_in_span(message, now)))
                .collect();
            let mut outcomes = Vec::with_capacity(sends.len());
            let mut failed = None;
            for send in sends {
                match send.await {
                    Ok(Ok(outcome)) => outcomes.push(outcome),
                    Ok(Err(error)) => {
                        failed.get_or_insert(error);
                    }
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(error) => return Err(error.into()),
                }
            }
            self.record(&owner, outcomes, now).await?;
            if let Some(error) = failed {
                return Err(error);
            }
        }
    }

    /// Starts delivery in the background until `shutdown` is triggered: one supervised dispatcher that
    /// keeps up to `gateway.worker.concurrency` messages in the hands of their providers. Messages it
    /// holds when `shutdown` comes are finished (each provider call is bounded by `send_timeout_ms`) and
    /// recorded before it stops.
    pub fn spawn_workers(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let delivery = self.clone();
        vec![tokio::spawn(
            async move { delivery.supervise(shutdown).await },
        )]
    }

    fn capacity(&self) -> usize {
        self.inner.settings.worker.concurrency.max(1)
    }

    /// Runs the dispatcher in its own task and starts a new one when it panics or its recorder stops.
    /// Messages it held keep their lease until the lease runs out, then any worker takes them again, as
    /// after a crash.
    async fn supervise(self, shutdown: Shutdown) {
        loop {
            let dispatcher = tokio::spawn(self.clone().dispatch(shutdown.clone()));
            match dispatcher.await {
                Ok(Ok(())) => return,
                Ok(Err(stopped)) => {
                    tracing::error!(
                        error = %stopped,
                        "delivery worker panicked (its recorder); starting it again"
                    );
                    self.inner.metrics.worker_restarts.inc();
                }
                Err(error) if error.is_panic() => {
                    // The panic hook has printed the panic itself; its text may hold message data.
                    tracing::error!("delivery worker panicked (its dispatcher); starting it again");
                    self.inner.metrics.worker_restarts.inc();
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
            // A dispatcher that stops before it claims anything would otherwise spin.
            let pause = Duration::from_millis(self.inner.settings.worker.poll_interval_ms);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Claims as many due messages as it has free places (one statement) and hands each to its provider in a
    /// task of its own; a recorder task beside it writes the outcomes that are in, whenever it comes round
    /// (one transaction). A place is free again once its message's outcome is written, so a process never
    /// holds more than `gateway.worker.concurrency` leases. Claims, provider calls and records overlap, and
    /// under load each claim and each record covers many messages; a lone message waits for nothing.
    async fn dispatch(self, shutdown: Shutdown) -> Result<(), RecorderStopped> {
        let owner = format!("worker-{}", uuid::Uuid::new_v4().simple());
        let idle = Duration::from_millis(self.inner.settings.worker.poll_interval_ms);
        let places = Places::new(self.capacity());
        let mut sending: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let (done, recorder) = self.start_recorder(&owner, places.clone());
        let mut last_abandoned_look: Option<Instant> = None;
        loop {
            while let Some(joined) = sending.try_join_next() {
                self.count_panic(joined, &places);
            }
            if recorder.is_finished() {
                // Dropping `sending` stops the provider calls; their messages wait for their lease.
                return Err(RecorderStopped);
            }
            let stopping = shutdown.is_triggered();
            if stopping && places.held() == 0 {
                drop(done);
                // Ends once every outcome is written.
                let _ = recorder.await;
                return Ok(());
            }
            let free = if stopping { 0 } else { places.free() };
            if free > 0 {
                let now = Utc::now().naive_utc();
                // A lease runs out only after `lease_seconds`: looking for one once per poll interval
                // spares a statement on every claim under load.
                let abandoned = last_abandoned_look.is_none_or(|at| at.elapsed() >= idle);
                if abandoned {
                    last_abandoned_look = Some(Instant::now());
                }
                match self.claim(&owner, now, free, abandoned).await {
                    Ok(messages) => {
                        let claimed = messages.len();
                        places.take(claimed);
                        for message in messages {
                            let attempt = self.clone().attempt_in_span(message, now);
                            let (done, places) = (done.clone(), places.clone());
                            sending.spawn(async move {
                                match attempt.await {
                                    Ok(outcome) => {
                                        if done.send(outcome).is_err() {
                                            // The recorder stopped: the dispatcher ends too.
                                            places.give_back(1);
                                        }
                                    }
                                    Err(error) => {
                                        places.give_back(1);
                                        tracing::warn!(error = %format!("{error:#}"), "delivery worker error")
                                    }
                                }
                            });
                        }
                        if claimed == free {
                            // More may be due.
                            continue;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "delivery worker error")
                    }
                }
            }
            tokio::select! {
                Some(joined) = sending.join_next() => self.count_panic(joined, &places),
                _ = places.freed() => {}
                _ = tokio::time::sleep(idle), if free > 0 => {}
                _ = self.inner.doorbell.wait(), if free > 0 => {}
                _ = shutdown.wait(), if !stopping => {}
            }
        }
    }

    /// A task that writes the outcomes sent to it as `owner`'s, all that are in at once, and frees their
    /// places; it ends when every sender is gone.
    fn start_recorder(
        &self,
        owner: &str,
        places: Places,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<Outcome>,
        tokio::task::JoinHandle<()>,
    ) {
        let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let delivery = self.clone();
        let owner = owner.to_string();
        let recorder = tokio::spawn(async move {
            // No more than the places wait here.
            let mut batch = Vec::new();
            while outcomes.recv_many(&mut batch, usize::MAX).await > 0 {
                let count = batch.len();
                let now = Utc::now().naive_utc();
                if let Err(error) = delivery
                    .record(&owner, std::mem::take(&mut batch), now)
                    .await
                {
                    tracing::warn!(error = %format!("{error:#}"), "delivery worker error");
                }
                places.give_back(count);
            }
        });
        (done, recorder)
    }

    /// Counts a provider call that panicked and frees its place; its message stays leased.
    fn count_panic(&self, joined: Result<(), tokio::task::JoinError>, places: &Places) {
        if let Err(error) = joined {
            if error.is_panic() {
                // The panic hook has printed the panic itself; its text may hold message data.
                tracing::error!(
                    "delivery worker panicked on a message: it waits for its lease to run out; the next message takes its place"
                );
                self.inner.metrics.worker_restarts.inc();
                places.give_back(1);
            }
        }
    }

    /// Leases up to `limit` due messages to `owner`; with `abandoned`, messages whose lease ran out first.
    async fn claim(
        &self,
        owner: &str,
        now: NaiveDateTime,
        limit: usize,
        abandoned: bool,
    ) -> anyhow::Result<Vec<MessageRow>> {
        let lease = TimeDelta::seconds(
            i64::try_from(self.inner.settings.worker.lease_seconds).unwrap_or(i64::MAX / 1000),
        );
        let owner = owner.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .inner
            .db
            .run(move |conn| outbox::claim(conn, &owner, now, lease, limit, abandoned))
            .await?)
    }

    /// One attempt at a claimed message, in a span that names it.
    async fn attempt_in_span(
        self,
        message: MessageRow,
        now: NaiveDateTime,
    ) -> anyhow::Result<Outcome> {
        let span = tracing::info_span!(
            "deliver",
            message.id = %message.id,
            message.channel = %message.channel,
            attempt = message.attempts
        );
        tracing::Instrument::instrument(self.attempt(message, now), span).await
    }

    /// Sends a claimed message (unless it is spent already) and says where it goes next.
    async fn attempt(&self, message: MessageRow, now: NaiveDateTime) -> anyhow::Result<Outcome> {
        let inner = &self.inner;
        let without_attempt = |transition: Transition| Outcome {
            message_id: message.id.clone(),
            expires_at: message.expires_at,
            attempt: None,
            transition,
            unreadable: false,
        };
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
            return Ok(without_attempt(Transition::Final {
                status: MessageStatus::Expired,
                error: "expired before it could be sent".into(),
            }));
        }
        // Claims that never recorded an outcome mean the worker died on this message each time (attempts
        // with an outcome reset the count). Stop instead of crashing forever.
        let unrecorded = u32::try_from(message.unrecorded_claims).unwrap_or(0);
        if unrecorded > inner.settings.retry.max_attempts {
            return Ok(without_attempt(Transition::Final {
                status: MessageStatus::Failed,
                error: format!(
                    "claimed {unrecorded} times without an outcome (a worker stopped on it each time)"
                ),
            }));
        }
        let Some(provider) = inner.providers.for_channel(channel).cloned() else {
            anyhow::bail!("no provider for {channel}");
        };
        let data: serde_json::Value = match message.open_data(&inner.keyring) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(error) => {
                // Sealed with a key that is no longer configured: no retry can open it.
                return Ok(Outcome {
                    unreadable: true,
                    ..without_attempt(Transition::Final {
                        status: MessageStatus::Failed,
                        error: format!("cannot open the message data: {error}"),
                    })
                });
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
                    return Ok(without_attempt(Transition::Final {
                        status: MessageStatus::Failed,
                        error: format!("cannot render: {}: {}", error.field, error.message),
                    }));
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
        Ok(Outcome {
            attempt: Some(attempt),
            ..without_attempt(transition)
        })
    }

    /// Records the outcomes of claims `owner` holds, in one transaction, then applies the provider reports
    /// that came before their sends were recorded.
    async fn record(
        &self,
        owner: &str,
        outcomes: Vec<Outcome>,
        now: NaiveDateTime,
    ) -> anyhow::Result<()> {
        let owner = owner.to_string();
        let ids: Vec<String> = outcomes.iter().map(|o| o.message_id.clone()).collect();
        let recorded = self
            .inner
            .db
            .run(move |conn| outbox::record(conn, &owner, outcomes, now))
            .await?;
        for (id, recorded) in ids.iter().zip(recorded) {
            match recorded {
                // Our lease ran out and another worker took the message over; its attempt counts, not ours.
                Recorded::LeaseLost => {
                    tracing::warn!(message.id = %id, "lease lost before the outcome was recorded")
                }
                Recorded::Done {
                    early_report: Some(report),
                } => {
                    tracing::info!(
                        message.id = %id,
                        "applying the provider's report that came before the send was recorded"
                    );
                    let inner = &self.inner;
                    apply_report(&inner.db, &inner.settings, &inner.metrics, report, now).await?;
                }
                Recorded::Done { early_report: None } => {}
            }
        }
        Ok(())
    }
}

/// The recorder of a dispatcher stopped (it panicked): the dispatcher is started again.
#[derive(Debug, thiserror::Error)]
#[error("the delivery recorder stopped")]
struct RecorderStopped;

/// A dispatcher's places: messages it holds a lease on, claimed and not yet written back.
#[derive(Clone)]
struct Places(Arc<PlacesInner>);

struct PlacesInner {
    capacity: usize,
    held: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
}

impl Places {
    fn new(capacity: usize) -> Self {
        Self(Arc::new(PlacesInner {
            capacity,
            held: Default::default(),
            freed: tokio::sync::Notify::new(),
        }))
    }

    fn held(&self) -> usize {
        self.0.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn free(&self) -> usize {
        self.0.capacity.saturating_sub(self.held())
    }

    fn take(&self, count: usize) {
        self.0
            .held
            .fetch_add(count, std::sync::atomic::Ordering::SeqCst);
    }

    fn give_back(&self, count: usize) {
        self.0
            .held
            .fetch_sub(count, std::sync::atomic::Ordering::SeqCst);
        // Stored when the dispatcher is not waiting yet, so no wake-up is lost.
        self.0.freed.notify_one();
    }

    async fn freed(&self) {
        self.0.freed.notified().await
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
