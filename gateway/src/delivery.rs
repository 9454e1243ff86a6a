//! The delivery worker: claim a due message with a lease, render it, hand it to its channel's provider, then
//! record the outcome (sent, retry later, fall back, fail, expire). The claim is committed before the
//! provider call and the outcome written after it: no transaction spans the network.

use crate::channel::Channel;
use crate::metrics::GatewayMetrics;
use crate::outbox::{self, status, AttemptRow, MessageRow, Transition};
use crate::providers::{Outgoing, Providers, SendError};
use crate::retry::{self, Next};
use crate::templates::Templates;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::GatewaySettings;
use reclaim_common::shutdown::Shutdown;
use reclaim_common::Db;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            }),
        }
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

    /// Starts `gateway.worker.concurrency` workers that run until `shutdown` is triggered. A worker busy
    /// with a message finishes it (the provider call is bounded by `send_timeout_ms`) before it stops.
    pub fn spawn_workers(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.inner.settings.worker.concurrency)
            .map(|index| {
                let delivery = self.clone();
                let shutdown = shutdown.clone();
                let owner = format!("worker-{index}-{}", uuid::Uuid::new_v4().simple());
                tokio::spawn(async move { delivery.work(owner, shutdown).await })
            })
            .collect()
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
        if message.expires_at.is_some_and(|expiry| expiry <= now) {
            inner
                .metrics
                .messages
                .with_label_values(&[channel.as_str(), "none", "expired"])
                .inc();
            let transition = Transition::Final {
                status: status::EXPIRED,
                error: "expired before it could be sent".into(),
            };
            self.record(owner, None, &message, transition, now).await?;
            return Ok(());
        }
        // Each claim counts as an attempt. More claims than the retry budget means earlier claims never
        // recorded an outcome: the worker died on this message each time. Stop instead of crashing forever.
        if attempt_number > inner.settings.retry.max_attempts {
            let transition = Transition::Final {
                status: status::FAILED,
                error: format!(
                    "claimed {attempt_number} times without an outcome (a worker stopped on it each time)"
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
                    status: status::FAILED,
                    error: format!("cannot open the message data: {error}"),
                };
                self.record(owner, None, &message, transition, now).await?;
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
                        status: status::FAILED,
                        error: format!("cannot render: {}: {}", error.field, error.message),
                    };
                    self.record(owner, None, &message, transition, now).await?;
                    return Ok(());
                }
            };
        let status_callback = (!inner.settings.public_url.is_empty() && channel != Channel::Email)
            .then(|| {
                format!(
                    "{}/providers/twilio/status",
                    inner.settings.public_url.trim_end_matches('/')
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
            outcome: "sent".into(),
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
                }
            }
            Err(SendError::Transient {
                code,
                message: error,
                retry_after,
            }) => {
                attempt.outcome = if code.as_deref() == Some("timeout") {
                    "timeout".into()
                } else {
                    "transient".into()
                };
                attempt.error_code = code;
                attempt.error_message = Some(error.clone());
                let jitter = retry::jittered(
                    &inner.settings.retry,
                    attempt_number,
                    &mut rand::thread_rng(),
                );
                match retry::after_transient_failure(
                    &inner.settings.retry,
                    attempt_number,
                    jitter,
                    retry_after,
                    now,
                    message.expires_at,
                ) {
                    Next::RetryAt(at) => {
                        tracing::info!(provider = provider.name(), error = %error, "transient failure, retry scheduled");
                        inner
                            .metrics
                            .retries
                            .with_label_values(&[channel.as_str()])
                            .inc();
                        Transition::Retry { at, error }
                    }
                    Next::Expired => Transition::Final {
                        status: status::EXPIRED,
                        error: format!(
                            "{error}; the next retry would come after the message expires"
                        ),
                    },
                    Next::Exhausted => self.fall_back_or_fail(
                        &message,
                        channel,
                        format!("{error}; attempts exhausted"),
                    ),
                }
            }
            Err(SendError::Permanent {
                code,
                message: error,
            }) => {
                tracing::info!(provider = provider.name(), error = %error, "permanent failure");
                attempt.outcome = "permanent".into();
                attempt.error_code = code;
                attempt.error_message = Some(error.clone());
                self.fall_back_or_fail(&message, channel, error)
            }
        };
        inner
            .metrics
            .messages
            .with_label_values(&[channel.as_str(), provider.name(), &attempt.outcome])
            .inc();
        self.record(owner, Some(attempt), &message, transition, now)
            .await
    }

    fn fall_back_or_fail(
        &self,
        message: &MessageRow,
        channel: Channel,
        error: String,
    ) -> Transition {
        match message.next_fallback() {
            Some(step) => {
                self.inner
                    .metrics
                    .fallbacks
                    .with_label_values(&[channel.as_str(), step.channel.as_str()])
                    .inc();
                tracing::info!(fallback.channel = %step.channel, "falling back");
                Transition::Fallback {
                    step,
                    position: message.fallback_position + 1,
                    error,
                }
            }
            None => Transition::Final {
                status: status::FAILED,
                error,
            },
        }
    }

    async fn record(
        &self,
        owner: &str,
        attempt: Option<AttemptRow>,
        message: &MessageRow,
        transition: Transition,
        now: NaiveDateTime,
    ) -> anyhow::Result<()> {
        let owner = owner.to_string();
        let id = message.id.clone();
        let kept = self
            .inner
            .db
            .run(move |conn| outbox::record(conn, &owner, attempt, &id, transition, now))
            .await?;
        if !kept {
            // Our lease ran out and another worker took the message over; its attempt counts, not ours.
            tracing::warn!("lease lost before the outcome was recorded");
        }
        Ok(())
    }
}
