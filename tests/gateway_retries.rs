//! Gateway: the worker's handling of provider answers that the real providers in the other tests cannot be
//! made to give on demand: `Retry-After` from a rate-limited HTTP API, and a provider that never answers.
//! A fault-injecting provider stands in for the remote service; the outbox, worker and database are real.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway, time};
use crate::support::TestApp;
use chrono::Duration as TimeDelta;
use reclaim_gateway::channel::Channel;
use reclaim_gateway::metrics::GatewayMetrics;
use reclaim_gateway::providers::{Accepted, Outgoing, Provider, Providers, SendError};
use reclaim_gateway::templates::Templates;
use reclaim_gateway::Delivery;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers like an HTTP API under rate limiting: 429 with `Retry-After` the first `refusals` times.
struct RateLimited {
    refusals: u32,
    retry_after: Duration,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Provider for RateLimited {
    fn name(&self) -> &'static str {
        "rate-limited"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.refusals {
            return Err(SendError::Transient {
                code: Some("429".into()),
                message: "too many requests".into(),
                retry_after: Some(self.retry_after),
            });
        }
        Ok(Accepted {
            provider_message_id: Some("SM-test".into()),
        })
    }
}

/// Never answers.
struct Silent;

#[async_trait::async_trait]
impl Provider for Silent {
    fn name(&self) -> &'static str {
        "silent"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        std::future::pending().await
    }
}

fn delivery_with(app: &TestApp, channel: Channel, provider: Arc<dyn Provider>) -> Delivery {
    let settings = &app.settings;
    let templates = Templates::load(
        Path::new(&settings.gateway.templates_dir),
        &settings.gateway.messages.default_locale,
    )
    .expect("templates");
    let metrics =
        GatewayMetrics::register(&prometheus::Registry::new(), app.db.clone()).expect("metrics");
    let providers = Providers::from_settings(settings)
        .expect("providers")
        .with(channel, provider);
    Delivery::new(
        app.db.clone(),
        Arc::new(templates),
        providers,
        settings.gateway.clone(),
        metrics,
    )
}

#[tokio::test]
async fn retry_after_is_honoured_even_when_it_exceeds_the_backoff() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.retry.base_ms = 1_000;
        s.gateway.retry.max_ms = 2_000;
    })
    .await;
    let provider = Arc::new(RateLimited {
        refusals: 2,
        retry_after: Duration::from_secs(30),
        calls: AtomicU32::new(0),
    });
    let delivery = delivery_with(&app, Channel::Sms, provider.clone());
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    let mut clock = chrono::Utc::now();
    for retry in 0..2 {
        delivery.drain_at(clock).await.expect("drain");
        let message = get_message(&app, &id).await;
        assert_eq!(message["status"], "queued", "{message}");
        let attempt = &message["history"][retry];
        assert_eq!(attempt["error_code"], "429");
        let wait = time(&message["next_attempt_at"]) - time(&attempt["started_at"]);
        // The jitter ceiling (2 s) is below Retry-After (30 s), so Retry-After is the wait.
        assert_eq!(wait, TimeDelta::seconds(30));
        // Nothing is due before the provider's time.
        assert_eq!(
            delivery
                .drain_at(clock + TimeDelta::seconds(29))
                .await
                .expect("drain"),
            0
        );
        clock = time(&message["next_attempt_at"]);
    }
    delivery.drain_at(clock).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_as_a_transient_failure() {
    let (app, _dir) = spawn_gateway(|s| s.gateway.worker.send_timeout_ms = 200).await;
    let delivery = delivery_with(&app, Channel::Voice, Arc::new(Silent));
    let id = enqueue(
        &app,
        &json!({"channel": "voice", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["history"][0]["outcome"], "timeout");
    assert_eq!(message["history"][0]["provider"], "silent");
}

/// Refuses every message the way Twilio refuses a number that cannot receive SMS.
struct NotAMobile;

#[async_trait::async_trait]
impl Provider for NotAMobile {
    fn name(&self) -> &'static str {
        "not-a-mobile"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        Err(SendError::Permanent {
            code: Some("21614".into()),
            message: "'To' number is not a valid mobile number".into(),
        })
    }
}

#[tokio::test]
async fn a_permanent_sms_failure_falls_back_to_a_voice_call_by_default() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let delivery = delivery_with(&app, Channel::Sms, Arc::new(NotAMobile));
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "verification_code", "data": {"code": "8812"}}),
    )
    .await;
    delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "voice");
    let history = message["history"].as_array().expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["outcome"], "permanent");
    assert_eq!(history[0]["error_code"], "21614");
    assert_eq!(history[1]["channel"], "voice");
    assert_eq!(history[1]["outcome"], "sent");
    let calls = crate::gateway_messages::delivered(dir.path());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["content"]["digits"], "8812");
}

#[tokio::test]
async fn an_empty_fallback_list_turns_the_configured_chain_off() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let delivery = delivery_with(&app, Channel::Sms, Arc::new(NotAMobile));
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "verification_code", "data": {"code": "8812"}, "fallback": []}),
    )
    .await;
    delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert!(crate::gateway_messages::delivered(dir.path()).is_empty());
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_to_a_day() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let provider = Arc::new(RateLimited {
        refusals: 1,
        retry_after: Duration::from_secs(u64::MAX),
        calls: AtomicU32::new(0),
    });
    let delivery = delivery_with(&app, Channel::Sms, provider.clone());
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    delivery.drain_at(chrono::Utc::now()).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    let wait = time(&message["next_attempt_at"]) - time(&message["history"][0]["started_at"]);
    assert_eq!(wait, TimeDelta::days(1));
    delivery
        .drain_at(time(&message["next_attempt_at"]))
        .await
        .expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}
