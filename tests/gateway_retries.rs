//! Gateway: the worker's handling of provider behaviour that no real provider or stand-in can be made to show
//! on demand: a provider call that never returns (the worker's own `send_timeout_ms`, not the HTTP client's
//! timeout). A test provider stands in for it; the outbox, worker and database are real. Retries, `Retry-After` and fallback through the real Twilio client are in
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
