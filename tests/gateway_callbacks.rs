//! Gateway: Twilio status callbacks, signed with `X-Twilio-Signature` over the public URL. Delivered marks
//! the message delivered; undelivered moves an SMS on to voice; a wrong or missing signature changes
//! nothing.

use crate::gateway_messages::{delivered, enqueue, get_message, spawn_gateway};
use crate::support::TestApp;
use reclaim_common::auth::twilio::compute_signature;
use reclaim_common::Secret;
use serde_json::json;

const PUBLIC_URL: &str = "https://gateway.example.test";
const AUTH_TOKEN: &str = "twilio-test-auth-token";

async fn spawn() -> (TestApp, tempfile::TempDir) {
    spawn_gateway(|s| {
        s.gateway.public_url = PUBLIC_URL.into();
        s.gateway.twilio.auth_token = Secret::new(AUTH_TOKEN);
    })
    .await
}

fn form(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn callback(
    app: &TestApp,
    params: &[(String, String)],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.gateway_url("/providers/twilio/status"))
        .form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.expect("request")
}

fn sign(params: &[(String, String)]) -> String {
    compute_signature(
        &Secret::new(AUTH_TOKEN),
        &format!("{PUBLIC_URL}/providers/twilio/status"),
        params,
    )
}

/// Sends an SMS through the `file` provider and returns (message id, provider message id).
async fn sent_sms(app: &TestApp, dir: &tempfile::TempDir) -> (String, String) {
    let id = enqueue(
        app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "271828"}}),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    let line = delivered(dir.path())
        .into_iter()
        .find(|l| l["message_id"] == id)
        .expect("delivered");
    assert_eq!(
        line["status_callback"],
        format!("{PUBLIC_URL}/providers/twilio/status")
    );
    (
        id,
        line["provider_message_id"]
            .as_str()
            .expect("sid")
            .to_string(),
    )
}

#[tokio::test]
async fn an_undelivered_sms_falls_back_to_a_voice_call() {
    let (app, dir) = spawn().await;
    let (id, sid) = sent_sms(&app, &dir).await;
    let params = form(&[
        ("MessageSid", &sid),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", "AC123"),
        ("To", "+14155550100"),
    ]);
    let response = callback(&app, &params, Some(sign(&params))).await;
    assert_eq!(response.status(), 204);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["channel"], "voice");
    assert_eq!(message["history"][0]["outcome"], "undelivered");
    assert_eq!(message["history"][0]["error_code"], "30003");

    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["history"][1]["channel"], "voice");
    let call = delivered(dir.path())
        .into_iter()
        .find(|l| l["channel"] == "voice")
        .expect("a voice call was placed");
    assert_eq!(call["content"]["digits"], "271828");
    assert_eq!(call["to"], "+14155550100");
}

#[tokio::test]
async fn a_delivered_report_marks_the_message_delivered() {
    let (app, dir) = spawn().await;
    let (id, sid) = sent_sms(&app, &dir).await;
    for status in ["sent", "delivered"] {
        let params = form(&[
            ("MessageSid", &sid),
            ("MessageStatus", status),
            ("SmsSid", &sid),
        ]);
        assert_eq!(
            callback(&app, &params, Some(sign(&params))).await.status(),
            204
        );
    }
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "delivered", "{message}");
    assert_eq!(message["provider_message_id"], sid.as_str());
    assert_eq!(message["history"][0]["outcome"], "delivered");
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_and_changes_nothing() {
    let (app, dir) = spawn().await;
    let (id, sid) = sent_sms(&app, &dir).await;
    let signed = form(&[("MessageSid", &sid), ("MessageStatus", "delivered")]);
    let signature = sign(&signed);
    let altered = form(&[("MessageSid", &sid), ("MessageStatus", "undelivered")]);
    assert_eq!(
        callback(&app, &altered, Some(signature)).await.status(),
        401
    );
    assert_eq!(callback(&app, &signed, None).await.status(), 401);
    let other_token = compute_signature(
        &Secret::new("another-token"),
        &format!("{PUBLIC_URL}/providers/twilio/status"),
        &signed,
    );
    assert_eq!(
        callback(&app, &signed, Some(other_token)).await.status(),
        401
    );
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["history"][0]["outcome"], "sent");
}

#[tokio::test]
async fn an_unanswered_call_without_fallback_is_undelivered() {
    let (app, dir) = spawn().await;
    let id = enqueue(
        &app,
        &json!({"channel": "voice", "to": "+14155550100", "template": "recovery_code", "data": {"code": "5"}}),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    let sid = delivered(dir.path())[0]["provider_message_id"]
        .as_str()
        .expect("sid")
        .to_string();
    let params = form(&[("CallSid", &sid), ("CallStatus", "no-answer")]);
    assert_eq!(
        callback(&app, &params, Some(sign(&params))).await.status(),
        204
    );
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "undelivered", "{message}");
    // A repeated report changes nothing.
    assert_eq!(
        callback(&app, &params, Some(sign(&params))).await.status(),
        204
    );
    assert_eq!(get_message(&app, &id).await["status"], "undelivered");
}
