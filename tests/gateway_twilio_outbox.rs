//! Retries and fallback end to end: `POST /v1/messages` → outbox → worker → the real Twilio client → the
//! fault-injecting stand-in that speaks Twilio's wire format (`support::twilio_faults`). Prism serves only
//! what Twilio's spec documents as success, so the failures (429 with `Retry-After`, Twilio error codes, 5xx)
//! come from the stand-in; the success path through Prism is in `gateway_twilio.rs`.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway, time};
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::TestApp;
use chrono::{Duration as TimeDelta, Utc};
use reclaim_common::settings::{ProviderKind, Settings, TwilioSettings};
use reclaim_common::Secret;
use serde_json::{json, Value};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const TO: &str = "+14155550100";

/// Both phone channels on the real Twilio client, pointed at `twilio`.
pub fn on_twilio(settings: &mut Settings, twilio: &FaultyTwilio) {
    settings.gateway.twilio = TwilioSettings {
        base_url: twilio.url.clone(),
        account_sid: ACCOUNT_SID.into(),
        auth_token: Secret::new("twilio-test-auth-token"),
        from: "+14155552671".into(),
        timeout_ms: 5_000,
        ..TwilioSettings::default()
    };
    settings.gateway.public_url = "https://gateway.example.test".into();
    settings.gateway.channels.sms.provider = ProviderKind::Twilio;
    settings.gateway.channels.voice.provider = ProviderKind::Twilio;
}

async fn enqueue_code(app: &TestApp, extra: Value) -> String {
    let mut body = json!({
        "channel": "sms", "to": TO, "template": "verification_code", "data": {"code": "482913"},
        "expires_in": 1200,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    enqueue(app, &body).await
}

/// Drains at a clock that moves forward `step` at a time until the message leaves the queue (at most
/// `rounds` drains), and returns the message.
async fn drain_until_settled(app: &TestApp, id: &str, step: TimeDelta, rounds: usize) -> Value {
    let mut clock = Utc::now();
    for _ in 0..rounds {
        app.delivery.drain_at(clock).await.expect("drain");
        let message = get_message(app, id).await;
        if message["status"] != "queued" {
            return message;
        }
        clock += step;
    }
    get_message(app, id).await
}

#[tokio::test]
async fn an_sms_failing_transiently_max_attempts_times_then_falls_back_to_a_voice_call() {
    let mut replies = vec![Reply::twilio_error(500, 20500); 3];
    replies.push(Reply::created(CALL_SID));
    let twilio = FaultyTwilio::start(replies).await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.retry.max_attempts = 3;
        s.gateway.retry.base_ms = 100;
        s.gateway.retry.max_ms = 1_000;
    })
    .await;
    let id = enqueue_code(&app, json!({})).await;
    let message = drain_until_settled(&app, &id, TimeDelta::seconds(2), 10).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "voice");
    assert_eq!(message["provider_message_id"], CALL_SID);
    let history = message["history"].as_array().expect("history");
    assert_eq!(history.len(), 4, "{message}");
    for attempt in &history[..3] {
        assert_eq!(attempt["channel"], "sms");
        assert_eq!(attempt["outcome"], "transient");
        assert_eq!(attempt["error_code"], "20500");
    }
    assert_eq!(history[3]["channel"], "voice");
    assert_eq!(history[3]["outcome"], "sent");
    let requests = twilio.requests();
    let paths: Vec<&str> = requests
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "Messages.json",
            "Messages.json",
            "Messages.json",
            "Calls.json"
        ]
    );
    let twiml = requests[3].field("Twiml").expect("inline TwiML");
    assert!(twiml.contains(">4</Say>"), "{twiml}");
}

#[tokio::test]
async fn a_twilio_429_with_retry_after_delays_the_retry_by_that_long() {
    let twilio = FaultyTwilio::start(vec![
        Reply::twilio_error(429, 20429).header("Retry-After", "30"),
        Reply::created(SMS_SID),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        // The jitter ceiling (2 s) is below Retry-After (30 s), so Retry-After is the wait.
        s.gateway.retry.base_ms = 1_000;
        s.gateway.retry.max_ms = 2_000;
    })
    .await;
    let id = enqueue_code(&app, json!({})).await;
    let clock = Utc::now();
    assert_eq!(app.delivery.drain_at(clock).await.expect("drain"), 1);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["history"][0]["outcome"], "transient");
    assert_eq!(message["history"][0]["error_code"], "20429");
    let retry_at = time(&message["next_attempt_at"]);
    assert_eq!(
        retry_at - time(&message["history"][0]["started_at"]),
        TimeDelta::seconds(30)
    );
    assert_eq!(
        app.delivery
            .drain_at(clock + TimeDelta::seconds(29))
            .await
            .expect("drain"),
        0
    );
    assert_eq!(twilio.requests().len(), 1);
    app.delivery.drain_at(retry_at).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "sms");
    assert_eq!(message["provider_message_id"], SMS_SID);
    assert_eq!(twilio.requests().len(), 2);
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_to_a_day() {
    let twilio = FaultyTwilio::start(vec![
        Reply::twilio_error(429, 20429).header("Retry-After", &u64::MAX.to_string()),
        Reply::created(SMS_SID),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| on_twilio(s, &twilio)).await;
    // No expiry, so only the cap stands between the retry and the end of time.
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": TO, "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    app.delivery.drain_at(Utc::now()).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    let retry_at = time(&message["next_attempt_at"]);
    assert_eq!(
        retry_at - time(&message["history"][0]["started_at"]),
        TimeDelta::days(1)
    );
    app.delivery.drain_at(retry_at).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(twilio.requests().len(), 2);
}

#[tokio::test]
async fn a_permanent_twilio_error_moves_the_sms_to_a_voice_call() {
    let twilio = FaultyTwilio::start(vec![
        Reply::twilio_error(400, 21614),
        Reply::created(CALL_SID),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| on_twilio(s, &twilio)).await;
    let id = enqueue_code(&app, json!({})).await;
    assert_eq!(app.delivery.drain().await.expect("drain"), 2);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "voice");
    assert_eq!(message["provider_message_id"], CALL_SID);
    let history = message["history"].as_array().expect("history");
    assert_eq!(history[0]["outcome"], "permanent");
    assert_eq!(history[0]["error_code"], "21614");
    assert!(
        !history[0]["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("5005550001"),
        "{message}"
    );
    assert_eq!(history[1]["channel"], "voice");
    assert_eq!(history[1]["outcome"], "sent");
    let requests = twilio.requests();
    assert!(requests[0].path.ends_with("/Messages.json"));
    assert!(requests[1].path.ends_with("/Calls.json"));
    assert_eq!(requests[1].field("To"), Some(TO));
}

#[tokio::test]
async fn a_permanent_twilio_error_without_a_fallback_fails_the_message() {
    let twilio = FaultyTwilio::start(vec![Reply::twilio_error(400, 21614)]).await;
    let (app, _dir) = spawn_gateway(|s| on_twilio(s, &twilio)).await;
    let id = enqueue_code(&app, json!({"fallback": []})).await;
    assert_eq!(app.delivery.drain().await.expect("drain"), 1);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert_eq!(twilio.requests().len(), 1);
}

#[tokio::test]
async fn a_transient_twilio_error_is_retried_on_the_same_channel_and_then_sent() {
    let twilio = FaultyTwilio::start(vec![
        Reply::twilio_error(400, 30001),
        Reply::new(503, "Service Unavailable"),
        Reply::created(SMS_SID),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.retry.base_ms = 100;
        s.gateway.retry.max_ms = 1_000;
    })
    .await;
    let id = enqueue_code(&app, json!({})).await;
    let message = drain_until_settled(&app, &id, TimeDelta::seconds(2), 5).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "sms");
    let codes: Vec<&Value> = message["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|a| &a["error_code"])
        .collect();
    assert_eq!(codes, [&json!("30001"), &json!("http_503"), &Value::Null]);
    assert_eq!(message["provider_message_id"], SMS_SID);
    assert_eq!(twilio.requests().len(), 3);
}

#[tokio::test]
async fn a_code_twilio_refuses_as_expired_ends_expired_without_trying_the_fallback() {
    let twilio = FaultyTwilio::start(vec![Reply::created(SMS_SID)]).await;
    let (app, _dir) = spawn_gateway(|s| on_twilio(s, &twilio)).await;
    // Less than a second left when the worker takes it: the client will not send a code that cannot arrive
    // in time (`ValidityPeriod` needs at least a second), and a voice call could not arrive in time either.
    let id = enqueue_code(&app, json!({"expires_in": 1})).await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "expired", "{message}");
    assert!(
        message["history"]
            .as_array()
            .expect("history")
            .iter()
            .all(|a| a["channel"] == "sms"),
        "{message}"
    );
    assert!(twilio.requests().is_empty());
}
