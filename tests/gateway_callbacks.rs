//! Gateway: Twilio status callbacks, signed with `X-Twilio-Signature` over the public URL. Delivered marks
//! the message delivered; undelivered moves an SMS on to voice; a wrong or missing signature changes
//! nothing.

use crate::gateway_messages::{delivered, enqueue, get_message, spawn_gateway};
use crate::gateway_retries::delivery_with;
use crate::gateway_twilio_outbox::on_twilio;
use crate::support::twilio_callbacks::{
    callback, callback_at, form, sign, sign_at, signed_callbacks, PUBLIC_URL,
};
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::TestApp;
use reclaim_common::auth::twilio::compute_signature;
use reclaim_common::Secret;
use reclaim_gateway::channel::Channel;
use reclaim_gateway::providers::twilio::TwilioProvider;
use reclaim_gateway::providers::{Accepted, Outgoing, Provider, SendError};
use serde_json::json;
use std::sync::Arc;

async fn spawn() -> (TestApp, tempfile::TempDir) {
    spawn_gateway(signed_callbacks).await
}

/// Sends an SMS through the `file` provider and returns (message id, provider message id).
pub async fn sent_sms(app: &TestApp, dir: &tempfile::TempDir) -> (String, String) {
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
    // Our id rides in the callback URL, so a report that beats the worker's bookkeeping still finds it.
    assert_eq!(
        line["status_callback"],
        format!("{PUBLIC_URL}/providers/twilio/status?message={id}")
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
        ("ErrorCode", "30006"),
        ("AccountSid", "AC123"),
        ("To", "+14155550100"),
    ]);
    let response = callback(&app, &params, Some(sign(&params))).await;
    assert_eq!(response.status(), 204);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["channel"], "voice");
    assert_eq!(message["history"][0]["outcome"], "undelivered");
    assert_eq!(message["history"][0]["error_code"], "30006");

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

#[tokio::test]
async fn an_unreachable_handset_is_retried_but_a_blocked_number_falls_back_to_voice() {
    let (app, dir) = spawn().await;
    let mut outcomes = Vec::new();
    for error_code in ["30003", "30004"] {
        let (id, sid) = sent_sms(&app, &dir).await;
        let params = form(&[
            ("MessageSid", &sid),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", error_code),
        ]);
        let path = format!("/providers/twilio/status?message={id}");
        let response = callback_at(&app, &path, &params, Some(sign_at(&path, &params))).await;
        assert_eq!(response.status(), 204);
        let message = get_message(&app, &id).await;
        assert_eq!(message["history"][0]["outcome"], "undelivered");
        assert_eq!(message["history"][0]["error_code"], error_code);
        outcomes.push((message["status"].clone(), message["channel"].clone()));
    }
    // A switched-off handset may be back soon: the SMS is tried again. A blocked number never will be.
    assert_eq!(outcomes[0], (json!("queued"), json!("sms")));
    assert_eq!(outcomes[1], (json!("queued"), json!("voice")));
}

#[tokio::test]
async fn a_signature_over_another_message_id_is_refused() {
    let (app, dir) = spawn().await;
    let (id, sid) = sent_sms(&app, &dir).await;
    let params = form(&[("MessageSid", &sid), ("MessageStatus", "undelivered")]);
    let signed_for_other = sign_at("/providers/twilio/status?message=other", &params);
    let path = format!("/providers/twilio/status?message={id}");
    assert_eq!(
        callback_at(&app, &path, &params, Some(signed_for_other))
            .await
            .status(),
        401
    );
    assert_eq!(get_message(&app, &id).await["status"], "sent");
}

/// The real Twilio client, then Twilio's status callback for the new sid before the client's answer
/// reaches the worker: a report that beats our bookkeeping. No stand-in can time this on demand.
struct ReportsBeforeAnswering {
    twilio: TwilioProvider,
    gateway: String,
    client: reqwest::Client,
    report: Vec<(String, String)>,
}

#[async_trait::async_trait]
impl Provider for ReportsBeforeAnswering {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let accepted = self.twilio.send(message).await?;
        let url = message.status_callback.clone().expect("a callback URL");
        let path = url.strip_prefix(PUBLIC_URL).expect("our public URL");
        let sid = accepted.provider_message_id.clone().expect("a sid");
        let mut params = form(&[("MessageSid", &sid)]);
        params.extend(self.report.iter().cloned());
        let response = self
            .client
            .post(format!("{}{path}", self.gateway))
            .header("X-Twilio-Signature", sign_at(path, &params))
            .form(&params)
            .send()
            .await
            .expect("callback");
        assert_eq!(response.status(), 204);
        Ok(accepted)
    }
}

async fn early_report(report: &[(&str, &str)]) -> (TestApp, FaultyTwilio, String) {
    let twilio = FaultyTwilio::start(vec![
        Reply::created("SM0123456789abcdef0123456789abcdef"),
        Reply::created("CA0123456789abcdef0123456789abcdef"),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        signed_callbacks(s);
    })
    .await;
    let reporting = ReportsBeforeAnswering {
        twilio: TwilioProvider::new(&app.settings.gateway.twilio).expect("client"),
        gateway: app.gateway.clone(),
        client: reqwest::Client::new(),
        report: form(report),
    };
    let delivery = delivery_with(&app, Channel::Sms, Arc::new(reporting));
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "271828"}}),
    )
    .await;
    delivery.drain().await.expect("drain");
    (app, twilio, id)
}

#[tokio::test]
async fn a_failed_report_that_arrives_before_the_worker_recorded_the_sid_still_falls_back() {
    let (app, twilio, id) =
        early_report(&[("MessageStatus", "failed"), ("ErrorCode", "30006")]).await;
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "voice");
    let history = message["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{message}");
    assert_eq!(history[0]["channel"], "sms");
    assert_eq!(history[0]["outcome"], "undelivered");
    assert_eq!(history[0]["error_code"], "30006");
    assert_eq!(
        history[0]["provider_message_id"],
        "SM0123456789abcdef0123456789abcdef"
    );
    assert_eq!(history[1]["channel"], "voice");
    assert_eq!(history[1]["outcome"], "sent");
    let requests = twilio.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].path.ends_with("/Calls.json"));
}

#[tokio::test]
async fn a_delivered_report_that_arrives_before_the_worker_recorded_the_sid_marks_it_delivered() {
    let (app, twilio, id) = early_report(&[("MessageStatus", "delivered")]).await;
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "delivered", "{message}");
    assert_eq!(message["history"][0]["outcome"], "delivered");
    assert_eq!(twilio.requests().len(), 1);
}

#[tokio::test]
async fn a_late_report_about_an_earlier_attempt_is_recorded_on_it_and_moves_nothing() {
    let (app, dir) = spawn().await;
    let (id, first_sid) = sent_sms(&app, &dir).await;
    let path = format!("/providers/twilio/status?message={id}");
    let unreachable = form(&[
        ("MessageSid", &first_sid),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ]);
    let response = callback_at(
        &app,
        &path,
        &unreachable,
        Some(sign_at(&path, &unreachable)),
    )
    .await;
    assert_eq!(response.status(), 204);
    let retry_at = crate::gateway_messages::time(&get_message(&app, &id).await["next_attempt_at"]);
    app.delivery.drain_at(retry_at).await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    let second_sid = message["provider_message_id"].clone();
    assert_ne!(second_sid, first_sid.as_str());
    // Twilio's verdict on the first SMS, late: a permanent code that would move a waiting message to voice.
    let blocked = form(&[
        ("MessageSid", &first_sid),
        ("MessageStatus", "failed"),
        ("ErrorCode", "30006"),
    ]);
    let response = callback_at(&app, &path, &blocked, Some(sign_at(&path, &blocked))).await;
    assert_eq!(response.status(), 204);
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["channel"], "sms");
    assert_eq!(message["provider_message_id"], second_sid);
    assert_eq!(message["history"][0]["error_code"], "30006");
    assert_eq!(message["history"][1]["outcome"], "sent");
}
