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

/// Holds each message until `target` are in its hands at once (or 10 s passed), and keeps the most it ever
/// held.
struct Gathering {
    target: usize,
    holding: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Provider for Gathering {
    fn name(&self) -> &'static str {
        "gathering"
    }

    async fn send(&self, _message: &Outgoing) -> Result<Accepted, SendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.holding.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while self.most.load(SeqCst) < self.target && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.holding.fetch_sub(1, SeqCst);
        Ok(Accepted {
            provider_message_id: None,
        })
    }
}

#[tokio::test]
async fn concurrency_messages_are_in_their_providers_hands_at_once_and_each_is_recorded_once() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.worker.concurrency = 4;
        s.gateway.worker.poll_interval_ms = 20;
    })
    .await;
    let provider = Arc::new(Gathering {
        target: 4,
        holding: Default::default(),
        most: Default::default(),
    });
    let delivery = delivery_with(&app, Channel::Sms, provider.clone());
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            enqueue(
                &app,
                &json!({"channel": "sms", "to": format!("+141555501{i:02}"), "template": "recovery_code", "data": {"code": "1"}}),
            )
            .await,
        );
    }
    let shutdown = reclaim_common::shutdown::Shutdown::default();
    let workers = delivery.spawn_workers(shutdown.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let message = get_message(&app, id).await;
            if message["status"] == "sent" {
                assert_eq!(message["attempts"], 1, "{message}");
                assert_eq!(
                    message["history"].as_array().map(Vec::len),
                    Some(1),
                    "{message}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not sent in time: {message}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown.trigger();
    for worker in workers {
        worker.await.expect("the supervisor never panics");
    }
    let most = provider.most.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        most, 4,
        "gateway.worker.concurrency messages at once, never more"
    );
}

/// Accepts every message; on `stolen` it first hands the message's lease to another worker, as when a
/// lease runs out during the call and another process takes the message over.
struct Stealing {
    db: reclaim_common::Db,
    stolen: String,
}

#[async_trait::async_trait]
impl Provider for Stealing {
    fn name(&self) -> &'static str {
        "stealing"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        use diesel::prelude::*;
        use reclaim_gateway::schema::gateway_messages::dsl as m;
        if message.message_id.to_string() == self.stolen {
            let id = self.stolen.clone();
            self.db
                .run(move |conn| {
                    diesel::update(m::gateway_messages.find(id))
                        .set(m::lease_owner.eq("another-worker"))
                        .execute(conn)
                        .map_err(reclaim_common::db::DbError::from)
                })
                .await
                .expect("take the lease over");
        }
        Ok(Accepted {
            provider_message_id: Some(format!("SM{}", message.message_id.simple())),
        })
    }
}

#[tokio::test]
async fn outcomes_recorded_together_are_each_kept_only_while_their_lease_holds() {
    let (app, _dir) = spawn_gateway(|s| s.gateway.worker.concurrency = 8).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            enqueue(
                &app,
                &json!({"channel": "sms", "to": format!("+141555502{i:02}"), "template": "recovery_code", "data": {"code": "1"}}),
            )
            .await,
        );
    }
    let stolen = ids[2].clone();
    let provider = Arc::new(Stealing {
        db: app.db.clone(),
        stolen: stolen.clone(),
    });
    let delivery = delivery_with(&app, Channel::Sms, provider);
    assert_eq!(
        delivery.drain().await.expect("drain"),
        5,
        "one claim of five"
    );
    for id in &ids {
        let message = get_message(&app, id).await;
        if *id == stolen {
            // Nothing of ours was written: the new holder's outcome will count.
            assert_eq!(message["status"], "sending", "{message}");
            assert_eq!(message["history"], json!([]), "{message}");
        } else {
            assert_eq!(message["status"], "sent", "{message}");
            assert_eq!(message["history"][0]["outcome"], "sent", "{message}");
            let sid = format!("SM{}", id.replace('-', ""));
            assert_eq!(message["history"][0]["provider_message_id"], sid.as_str());
        }
    }
}
