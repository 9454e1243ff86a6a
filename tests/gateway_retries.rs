//! Gateway: the worker's handling of provider behaviour that no real provider or stand-in can be made to show
//! on demand: a provider call that never returns (the worker's own `send_timeout_ms`, not the HTTP client's
//! timeout) and a provider that panics (worker supervision). Test providers stand in for those; the outbox,
//! worker and database are real. Retries, `Retry-After` and fallback through the real Twilio client are in
//! `gateway_twilio_outbox.rs`.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway};
use crate::support::TestApp;
use reclaim_gateway::channel::Channel;
use reclaim_gateway::metrics::GatewayMetrics;
use reclaim_gateway::providers::{Accepted, Outgoing, Provider, Providers, SendError};
use reclaim_gateway::templates::Templates;
use reclaim_gateway::Delivery;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

pub fn delivery_with(app: &TestApp, channel: Channel, provider: Arc<dyn Provider>) -> Delivery {
    delivery_with_all(app, &[(channel, provider)], &prometheus::Registry::new())
}

/// The app's delivery pipeline with `overrides` in charge of their channels, its metrics on `registry`.
pub fn delivery_with_all(
    app: &TestApp,
    overrides: &[(Channel, Arc<dyn Provider>)],
    registry: &prometheus::Registry,
) -> Delivery {
    let settings = &app.settings;
    let templates = Templates::load(
        Path::new(&settings.gateway.templates_dir),
        &settings.gateway.messages.default_locale,
    )
    .expect("templates");
    let metrics = GatewayMetrics::register(registry, app.db.clone()).expect("metrics");
    let mut providers = Providers::from_settings(settings).expect("providers");
    for (channel, provider) in overrides {
        providers = providers.with(*channel, provider.clone());
    }
    Delivery::new(
        app.db.clone(),
        Arc::new(templates),
        providers,
        settings.gateway.clone(),
        metrics,
        reclaim_common::sealed::Keyring::from_settings(
            "gateway.storage.keys",
            &settings.gateway.storage.keys,
            true,
        )
        .expect("keyring"),
    )
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

/// Panics on every message. No real provider or stand-in can be made to panic, so a test provider does.
struct Panicking;

#[async_trait::async_trait]
impl Provider for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        panic!("a provider bug");
    }
}

/// Accepts every message and tells the test which one it was handed.
struct Announcing(tokio::sync::mpsc::UnboundedSender<String>);

#[async_trait::async_trait]
impl Provider for Announcing {
    fn name(&self) -> &'static str {
        "announcing"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let _ = self.0.send(message.message_id.to_string());
        Ok(Accepted {
            provider_message_id: None,
        })
    }
}

#[tokio::test]
async fn a_worker_that_panics_is_counted_and_restarted_and_delivers_the_next_message() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.worker.concurrency = 1;
        s.gateway.worker.poll_interval_ms = 20;
    })
    .await;
    let (sent, mut announced) = tokio::sync::mpsc::unbounded_channel();
    let registry = prometheus::Registry::new();
    let delivery = delivery_with_all(
        &app,
        &[
            (Channel::Sms, Arc::new(Panicking)),
            (Channel::Email, Arc::new(Announcing(sent))),
        ],
        &registry,
    );
    // Claimed in this order: the only worker dies on the first.
    let doomed = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    let next = enqueue(
        &app,
        &json!({"channel": "email", "to": "someone@example.com", "template": "recovery_code", "data": {"code": "2"}}),
    )
    .await;
    let shutdown = reclaim_common::shutdown::Shutdown::default();
    let workers = delivery.spawn_workers(shutdown.clone());
    let delivered = tokio::time::timeout(Duration::from_secs(20), announced.recv())
        .await
        .expect("the restarted worker delivers the next message")
        .expect("an announcement");
    assert_eq!(delivered, next);
    shutdown.trigger();
    for worker in workers {
        worker.await.expect("the supervisor itself never panics");
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("metrics text");
    let restarts = text
        .lines()
        .find_map(|line| line.strip_prefix("reclaim_gateway_worker_restarts_total "))
        .unwrap_or("missing");
    assert_eq!(restarts, "1", "{text}");
    // The message the worker died on keeps its lease until it runs out, like after a crash.
    let message = get_message(&app, &doomed).await;
    assert_eq!(message["status"], "sending", "{message}");
    assert_eq!(message["attempts"], 1);
}
