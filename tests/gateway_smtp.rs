//! Gateway email through a real SMTP server (aiosmtpd on loopback): delivery, 4xx retried with growing
//! delays, 5xx falling back to an alternate address, retries stopped by expiry and by max_attempts.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway, time};
use crate::support::dkim;
use crate::support::smtp::SmtpServer;
use crate::support::TestApp;
use chrono::{Duration, Utc};
use reclaim_common::settings::{ProviderKind, Settings, SmtpSecurity};
use serde_json::{json, Value};

pub fn use_smtp(settings: &mut Settings, server: &SmtpServer) {
    settings.gateway.channels.email.provider = ProviderKind::Smtp;
    settings.gateway.smtp.host = "127.0.0.1".into();
    settings.gateway.smtp.port = server.port;
    settings.gateway.smtp.security = SmtpSecurity::None;
    settings.gateway.smtp.from = "Reclaim <no-reply@reclaim.test>".into();
    settings.gateway.smtp.timeout_ms = 5_000;
}

async fn email(app: &TestApp, to: &str, extra: Value) -> String {
    let mut body = json!({"channel": "email", "to": to, "template": "recovery_code", "data": {"code": "314159"}});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    enqueue(app, &body).await
}

#[tokio::test]
async fn email_is_delivered_through_smtp_as_multipart_with_message_id_and_auto_submitted() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| use_smtp(s, &server)).await;
    let id = email(&app, "jane@example.com", json!({"locale": "es"})).await;
    app.delivery.drain().await.expect("drain");

    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["history"][0]["provider"], "smtp");
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    let mail = &mail[0];
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    assert_eq!(mail.from, "no-reply@reclaim.test");
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{id}@reclaim.test>"))
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|v| v.starts_with("multipart/alternative")),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("text/html"), "{}", mail.data);
    assert!(mail.data.contains("314159"), "{}", mail.data);
}

#[tokio::test]
async fn a_4xx_reply_is_retried_with_growing_delays_until_accepted() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| {
        use_smtp(s, &server);
        s.gateway.retry.base_ms = 1_000;
        s.gateway.retry.max_ms = 60_000;
    })
    .await;
    // Full jitter makes one wait random in [0, base * 2^(retry-1)], so one message cannot show growth.
    // Across many messages the longest n-th wait must pass the (n-1)-th ceiling; a gateway whose
    // ceiling did not grow fails that with certainty, a correct one with probability 2^-MESSAGES.
    const MESSAGES: usize = 20;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        ids.push(email(&app, &format!("tempfail-3-{i}@example.com"), json!({})).await);
    }
    let mut clock = Utc::now();
    let mut pending = ids.clone();
    for retry in 1..=3u32 {
        app.delivery.drain_at(clock).await.expect("drain");
        let ceiling = Duration::milliseconds(1_000 << (retry - 1));
        let mut longest = Duration::zero();
        let mut still_queued = Vec::new();
        for id in &pending {
            let message = get_message(&app, id).await;
            let attempt = &message["history"][retry as usize - 1];
            assert_eq!(attempt["outcome"], "transient", "{message}");
            assert_eq!(attempt["error_code"], "451", "{message}");
            // Attempts are stamped with the drain's instant, so the gap between two of them is exactly the
            // wait the gateway drew. Full jitter can draw 0 ms: the next attempt was then due at the same
            // instant and this drain already made it (and may have scheduled the one after).
            let following = &message["history"][retry as usize];
            let wait = if following["started_at"].is_string() {
                time(&following["started_at"]) - time(&attempt["started_at"])
            } else {
                time(&message["next_attempt_at"]) - time(&attempt["started_at"])
            };
            if message["status"] == "queued" {
                clock = clock.max(time(&message["next_attempt_at"]));
                still_queued.push(id.clone());
            }
            assert!(
                wait >= Duration::zero() && wait <= ceiling,
                "retry {retry}: {wait} outside [0, {ceiling}]"
            );
            longest = longest.max(wait);
        }
        pending = still_queued;
        if retry > 1 {
            let previous = Duration::milliseconds(1_000 << (retry - 2));
            assert!(
                longest > previous,
                "retry {retry}: no wait of {MESSAGES} passed the previous ceiling {previous}"
            );
        }
    }
    // Only the messages whose last retry drew no wait are delivered yet.
    assert_eq!(server.messages().len(), MESSAGES - pending.len());
    app.delivery.drain_at(clock).await.expect("drain");
    for id in &ids {
        let message = get_message(&app, id).await;
        assert_eq!(message["status"], "sent", "{message}");
        assert_eq!(message["attempts"], 4);
    }
    assert_eq!(server.messages().len(), MESSAGES);
}

#[tokio::test]
async fn a_5xx_reply_falls_back_to_the_alternate_address() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| use_smtp(s, &server)).await;
    let id = email(
        &app,
        "reject@example.com",
        json!({"fallback": [{"channel": "email", "to": "jane.alt@example.org"}]}),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    let history = message["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{message}");
    assert_eq!(history[0]["outcome"], "permanent");
    assert_eq!(history[0]["error_code"], "550");
    assert_eq!(history[1]["outcome"], "sent");
    assert_eq!(message["fallback_position"], 1);
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to, vec!["jane.alt@example.org".to_string()]);
}

#[tokio::test]
async fn a_5xx_reply_without_fallback_fails_the_message() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| use_smtp(s, &server)).await;
    let id = email(&app, "reject@example.com", json!({})).await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert!(
        message["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("550")),
        "{message}"
    );
}

#[tokio::test]
async fn retries_stop_at_the_expiry_and_nothing_is_sent_late() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| {
        use_smtp(s, &server);
        s.gateway.retry.base_ms = 60_000;
        s.gateway.retry.max_ms = 60_000;
    })
    .await;
    let id = email(&app, "tempfail-1@example.com", json!({"expires_in": 30})).await;
    app.delivery.drain().await.expect("drain");
    // Whether the retry fell before the expiry or not, at +40 s the message must be expired and unsent.
    app.delivery
        .drain_at(Utc::now() + Duration::seconds(40))
        .await
        .expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "expired", "{message}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| {
        use_smtp(s, &server);
        s.gateway.retry.max_attempts = 2;
    })
    .await;
    let id = email(&app, "tempfail-9@example.com", json!({})).await;
    app.delivery.drain().await.expect("drain");
    app.delivery
        .drain_at(Utc::now() + Duration::hours(1))
        .await
        .expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert_eq!(message["attempts"], 2);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_transient_failure() {
    let closed = crate::support::ports::closed_port();
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.channels.email.provider = ProviderKind::Smtp;
        s.gateway.smtp.host = "127.0.0.1".into();
        s.gateway.smtp.port = closed.port;
        s.gateway.smtp.security = SmtpSecurity::None;
    })
    .await;
    let id = email(&app, "jane@example.com", json!({})).await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["history"][0]["outcome"], "transient", "{message}");
}

#[tokio::test]
async fn email_is_dkim_signed_when_a_key_is_configured() {
    let server = SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| {
        use_smtp(s, &server);
        s.gateway.smtp.dkim_selector = "mail2026".into();
        s.gateway.smtp.dkim_domain = "reclaim.test".into();
        s.gateway.smtp.dkim_key_file = "tests/fixtures/dkim-test-key.pem".into();
    })
    .await;
    email(&app, "jane@example.com", json!({})).await;
    app.delivery.drain().await.expect("drain");
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    let signature = mail[0].header("DKIM-Signature").unwrap_or_default();
    assert!(signature.contains("d=reclaim.test"), "{}", mail[0].data);
    assert!(signature.contains("s=mail2026"), "{}", mail[0].data);
    // dkimpy, with the test key's public half published for mail2026._domainkey.reclaim.test.
    let verify = |message: &str| {
        dkim::verify(
            message,
            "tests/fixtures/dkim-test-key.pem",
            "mail2026",
            "reclaim.test",
        )
    };
    if let Err(reasons) = verify(&mail[0].data) {
        panic!("dkimpy refuses the signature: {reasons}\n{}", mail[0].data);
    }
    // The same verifier refuses the message once its signed body changes.
    assert!(mail[0].data.contains("314159"), "{}", mail[0].data);
    assert!(verify(&mail[0].data.replace("314159", "271828")).is_err());
}
