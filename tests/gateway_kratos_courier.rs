//! Kratos's HTTP courier through the gateway (`POST /hooks/kratos/courier`): the contract payloads of
//! `shared/contracts/kratos/courier-*.json` delivered by email through the real SMTP server and by SMS and
//! voice through Prism serving Twilio's spec; Kratos's retries deduplicated within the window; our templates
//! or Kratos's rendering; 401 and 400 with nothing queued; and the `reclaim` binary's logs free of codes and
//! full recipients.

use crate::gateway_messages::{
    count_messages, delivered, gateway_metrics, get_message, idle_gateway,
    sent_before_the_next_poll, spawn_gateway,
};
use crate::gateway_smtp::use_smtp;
use crate::logs::Reclaim;
use crate::support::prism::RecordingPrism;
use crate::support::smtp::{ReceivedMail, SmtpServer};
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::{TestApp, TestDatabase};
use base64::Engine;
use chrono::Duration;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reclaim_common::settings::{KratosAuth, ProviderKind, Settings, TwilioSettings};
use reclaim_common::Secret;
use reclaim_gateway::schema::gateway_messages;
use serde_json::{json, Value};

const COURIER_KEY: &str = "courier-test-key";
/// A real number in place of the contracts' fictional 555-01XX one, which the gateway holds invalid.
const PHONE: &str = "+14155550100";
const EMAIL: &str = "jane.doe@example.com";

/// A contract payload, its fictional number replaced by [`PHONE`].
fn contract(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("../shared/contracts/kratos/{name}"))
        .expect("contract")
        .replace("+15555550123", PHONE);
    serde_json::from_str(&text).expect("contract is JSON")
}

fn with_key(settings: &mut Settings) {
    settings.gateway.kratos.api_keys = vec![Secret::new(COURIER_KEY)];
}

/// Accepts the courier key. These tests send several messages to one address within seconds, which the
/// limits per destination would refuse: they are off here, and on in
/// `a_courier_message_over_a_limit_is_answered_2xx_and_not_sent`.
fn courier_settings(settings: &mut Settings) {
    with_key(settings);
    settings.gateway.limits.destination.enabled = false;
}

/// A gateway with [`courier_settings`], then `customize`.
async fn courier_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    spawn_gateway(|s| {
        courier_settings(s);
        customize(s);
    })
    .await
}

async fn post_courier(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.gateway_url("/hooks/kratos/courier"))
        .header("X-Reclaim-Key", COURIER_KEY)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Posts and expects it queued; returns the message id.
async fn queue(app: &TestApp, body: &Value) -> String {
    let response = post_courier(app, body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    answer["id"].as_str().expect("id").to_string()
}

/// The mail's text with quoted-printable soft breaks and `=3D` undone, so long links read whole.
pub fn readable(mail: &ReceivedMail) -> String {
    mail.data
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

pub fn on_prism(settings: &mut Settings, prism: &RecordingPrism) {
    settings.gateway.twilio = TwilioSettings {
        base_url: prism.url.clone(),
        account_sid: "AC0123456789abcdef0123456789abcdef".into(),
        auth_token: Secret::new("twilio-test-auth-token"),
        from: "+14155552671".into(),
        timeout_ms: 10_000,
        ..TwilioSettings::default()
    };
    settings.gateway.public_url = "https://gateway.example.test".into();
    settings.gateway.channels.sms.provider = ProviderKind::Twilio;
    settings.gateway.channels.voice.provider = ProviderKind::Twilio;
}

#[tokio::test]
async fn kratos_email_payloads_arrive_through_the_smtp_server_with_their_code_or_link() {
    let server = SmtpServer::start();
    let (app, _dir) = courier_app(|s| use_smtp(s, &server)).await;
    let cases = [
        (
            "courier-email-recovery_code_valid.json",
            "482913",
            "Your account recovery code",
        ),
        (
            "courier-email-recovery_valid.json",
            "token=lFQDhv8YeaLFaypOvVdHgajYyRWKj2CK",
            "Recover your account",
        ),
        (
            "courier-email-verification_code_valid.json",
            "715304",
            "Your verification code",
        ),
    ];
    let mut ids = Vec::new();
    for (file, _, _) in cases {
        ids.push(queue(&app, &contract(file)).await);
    }
    app.delivery.drain().await.expect("drain");
    for id in &ids {
        let message = get_message(&app, id).await;
        assert_eq!(message["status"], "sent");
        // Kratos's expires_in_minutes (60) bounds the message's life.
        let lifetime = crate::gateway_messages::time(&message["expires_at"])
            - crate::gateway_messages::time(&message["created_at"]);
        assert_eq!(lifetime, Duration::minutes(60), "{message}");
    }
    let mail = server.messages();
    assert_eq!(mail.len(), cases.len());
    // The worker sends them at the same time: they arrive in any order, each under its own subject.
    for (file, secret, subject) in &cases {
        let mail = mail
            .iter()
            .find(|m| m.header("Subject").as_deref() == Some(*subject))
            .unwrap_or_else(|| panic!("{file}: no mail with the subject {subject}"));
        assert_eq!(mail.to, vec![EMAIL.to_string()], "{file}");
        assert_eq!(mail.header("Subject").as_deref(), Some(*subject), "{file}");
        assert!(readable(mail).contains(secret), "{file}: {}", mail.data);
    }
}

#[tokio::test]
async fn kratos_sms_payloads_reach_twilio_through_prism_with_their_code() {
    let prism = RecordingPrism::start().await;
    let (app, _dir) = courier_app(|s| on_prism(s, &prism)).await;
    let cases = [
        ("courier-sms-recovery_code_valid.json", "205718"),
        ("courier-sms-login_code_valid.json", "390514"),
    ];
    let mut ids = Vec::new();
    for (file, _) in cases {
        ids.push(queue(&app, &contract(file)).await);
    }
    app.delivery.drain().await.expect("drain");
    for id in &ids {
        let message = get_message(&app, id).await;
        assert_eq!(
            message["status"],
            "sent",
            "{message}\n{}",
            prism.prism.log()
        );
        assert!(
            message["provider_message_id"]
                .as_str()
                .is_some_and(|sid| sid.starts_with("SM")),
            "{message}"
        );
    }
    let requests = prism.requests();
    assert_eq!(requests.len(), cases.len());
    // Sent at the same time: they arrive in any order, each with its own code.
    for (file, code) in &cases {
        let request = requests
            .iter()
            .find(|r| r.field("Body").is_some_and(|b| b.contains(code)))
            .unwrap_or_else(|| panic!("{file}: no request with its code"));
        assert!(request.path.ends_with("/Messages.json"), "{file}");
        assert_eq!(request.field("To"), Some(PHONE), "{file}");
        assert!(
            request.field("Body").is_some_and(|b| b.contains(code)),
            "{file}: {request:?}"
        );
    }
}

#[tokio::test]
async fn a_voice_delivery_places_a_call_that_reads_the_code_digit_by_digit() {
    let prism = RecordingPrism::start().await;
    // Voice uses our own template even when Kratos's rendering is sent otherwise.
    let (app, _dir) = courier_app(|s| {
        on_prism(s, &prism);
        s.gateway.kratos.use_own_templates = false;
    })
    .await;
    let mut payload = contract("courier-sms-login_code_valid.json");
    payload["template_data"]["transient_payload"] = json!({"delivery": "voice"});
    let id = queue(&app, &payload).await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(
        message["status"],
        "sent",
        "{message}\n{}",
        prism.prism.log()
    );
    assert_eq!(message["channel"], "voice");
    let requests = prism.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].path.ends_with("/Calls.json"),
        "{:?}",
        requests[0]
    );
    assert_eq!(requests[0].field("To"), Some(PHONE));
    let twiml = requests[0].field("Twiml").expect("inline TwiML");
    assert!(twiml.contains("sign-in code"), "{twiml}");
    let spoken: String = twiml
        .split("</Say>")
        .filter_map(|part| part.rsplit('>').next())
        .filter(|said| said.len() == 1 && said.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert!(spoken.starts_with("390514"), "{twiml}");
}

#[tokio::test]
async fn a_kratos_retry_is_answered_with_the_first_id_and_queues_nothing_until_the_window_passes() {
    let (app, _dir) = courier_app(|s| s.gateway.kratos.dedupe_window_seconds = 600).await;
    let payload = contract("courier-sms-login_code_valid.json");
    let first = queue(&app, &payload).await;
    let retry = post_courier(&app, &payload).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(
        retry
            .headers()
            .get("Idempotent-Replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let answer: Value = retry.json().await.expect("json");
    assert_eq!(answer["id"], first.as_str());
    assert_eq!(count_messages(&app), 1);

    // Another code for the same person is another message.
    let mut other = payload.clone();
    other["template_data"]["login_code"] = json!("111222");
    let second = queue(&app, &other).await;
    assert_ne!(second, first);
    assert_eq!(count_messages(&app), 2);

    // Past the window the same body is queued again.
    app.clock.advance(Duration::seconds(601));
    let late = queue(&app, &payload).await;
    assert_ne!(late, first);
    assert_eq!(count_messages(&app), 3);
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    let codes: Vec<String> = delivered(_dir.path())
        .iter()
        .map(|line| {
            line["content"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(codes.len(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|b| b.contains("390514")).count(), 2);
}

#[tokio::test]
async fn without_own_templates_kratos_subject_and_bodies_are_sent_as_rendered() {
    let server = SmtpServer::start();
    let (app, dir) = courier_app(|s| {
        use_smtp(s, &server);
        s.gateway.kratos.use_own_templates = false;
    })
    .await;
    let email = contract("courier-email-recovery_valid.json");
    let sms = contract("courier-sms-recovery_code_valid.json");
    queue(&app, &email).await;
    queue(&app, &sms).await;
    app.delivery.drain().await.expect("drain");
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0].header("Subject").as_deref(),
        email["subject"].as_str()
    );
    let text = readable(&mail[0]);
    assert!(
        text.contains("Recover access to your account by clicking the following link"),
        "{text}"
    );
    // Kratos's HTML goes out as Kratos escaped it: once.
    assert!(
        text.contains("<a href=\"https://auth.example.com/self-service/recovery?flow="),
        "{text}"
    );
    assert!(text.contains("&amp;token="), "{text}");
    assert!(
        !text.contains("&amp;amp;") && !text.contains("&lt;a"),
        "{text}"
    );
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["content"]["body"].as_str(),
        sms["body"].as_str().map(str::trim)
    );
}

#[tokio::test]
async fn kratos_test_stub_is_sent_as_kratos_rendered_it_even_with_own_templates() {
    let (app, dir) = courier_app(|_| {}).await;
    let stub = json!({
        "recipient": EMAIL, "subject": "stub subject", "body": "stub body", "message_type": "email",
        "template_type": "stub", "template_data": {"to": EMAIL, "body": "stub body"}, "request_headers": {},
    });
    queue(&app, &stub).await;
    app.delivery.drain().await.expect("drain");
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["content"]["subject"], "stub subject");
    assert_eq!(sent[0]["content"]["text"], "stub body");
}

#[tokio::test]
async fn wrong_or_missing_kratos_credentials_are_refused_with_401_and_nothing_is_queued() {
    let (app, _dir) = courier_app(|_| {}).await;
    let payload = contract("courier-email-recovery_code_valid.json");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("kratos:courier-test-key")
    );
    for header in [
        None,
        Some(("X-Reclaim-Key", "wrong")),
        Some(("Authorization", basic.as_str())),
    ] {
        let mut request = app
            .client
            .post(app.gateway_url("/hooks/kratos/courier"))
            .json(&payload);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{header:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(count_messages(&app), 0);

    // No keys configured: even the harness's key is refused.
    let (closed, _dir) = spawn_gateway(|_| {}).await;
    assert_eq!(post_courier(&closed, &payload).await.status(), 401);
    assert_eq!(count_messages(&closed), 0);

    // Basic auth, as Kratos's `basic_auth` sends it.
    let (basic_app, _dir) = spawn_gateway(|s| {
        s.gateway.kratos.auth = KratosAuth::Basic;
        s.gateway.kratos.basic_password = Secret::new("courier-test-key");
    })
    .await;
    let accepted = basic_app
        .client
        .post(basic_app.gateway_url("/hooks/kratos/courier"))
        .header("Authorization", basic)
        .json(&payload)
        .send()
        .await
        .expect("request");
    assert_eq!(accepted.status(), 202);
    assert_eq!(count_messages(&basic_app), 1);
}

#[tokio::test]
async fn unmappable_payloads_are_refused_with_400_naming_the_field_and_nothing_is_queued() {
    let (app, _dir) = courier_app(|_| {}).await;
    let email = contract("courier-email-recovery_code_valid.json");
    let sms = contract("courier-sms-login_code_valid.json");
    let edit = |base: &Value, change: &dyn Fn(&mut Value)| {
        let mut body = base.clone();
        change(&mut body);
        body
    };
    let fictional: Value = serde_json::from_str(
        &std::fs::read_to_string("../shared/contracts/kratos/courier-sms-login_code_valid.json")
            .expect("contract"),
    )
    .expect("json");
    let cases = [
        (
            edit(&email, &|b| b["message_type"] = json!("fax")),
            "message_type",
        ),
        (
            edit(&email, &|b| b["template_type"] = json!("recovery_code")),
            "template_type",
        ),
        (
            edit(&email, &|b| {
                b["recipient"] = json!("Jane <jane@example.com>")
            }),
            "recipient",
        ),
        (
            edit(&sms, &|b| b["recipient"] = json!("jane.doe@example.com")),
            "recipient",
        ),
        (fictional, "recipient"),
        (
            edit(&email, &|b| {
                b["template_data"]
                    .as_object_mut()
                    .map(|d| d.remove("recovery_code"));
            }),
            "template_data.recovery_code",
        ),
        (
            edit(&sms, &|b| b["template_data"]["login_code"] = json!("")),
            "template_data.login_code",
        ),
        (
            edit(&email, &|b| {
                b["template_data"]["transient_payload"] = json!({"delivery": "voice"})
            }),
            "template_data.transient_payload.delivery",
        ),
        (
            edit(&sms, &|b| {
                b["template_data"]["transient_payload"] = json!({"delivery": "pigeon"})
            }),
            "template_data.transient_payload.delivery",
        ),
        (edit(&email, &|b| b["recipient"] = json!(42)), "recipient"),
        (
            edit(&sms, &|b| {
                b["template_type"] = json!("verifiable_address_changed");
                b["template_data"]["transient_payload"] = json!({"delivery": "voice"});
            }),
            "template_data.transient_payload.delivery",
        ),
    ];
    for (body, field) in &cases {
        let response = post_courier(&app, body).await;
        assert_eq!(response.status(), 400, "{field}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["field"], *field, "{answer}");
    }
    let not_json = app
        .client
        .post(app.gateway_url("/hooks/kratos/courier"))
        .header("X-Reclaim-Key", COURIER_KEY)
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), 400);
    let answer: Value = not_json.json().await.expect("json");
    assert_eq!(answer["error"]["field"], "body");
    assert_eq!(count_messages(&app), 0);
}

#[tokio::test]
async fn courier_calls_are_counted_by_template_type_and_outcome() {
    let (app, _dir) = courier_app(|_| {}).await;
    let payload = contract("courier-sms-recovery_code_valid.json");
    queue(&app, &payload).await;
    assert_eq!(post_courier(&app, &payload).await.status(), 202);
    let refused = app
        .client
        .post(app.gateway_url("/hooks/kratos/courier"))
        .json(&payload)
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let metrics = gateway_metrics(&app).await;
    for (template_type, outcome) in [
        ("recovery_code_valid", "queued"),
        ("recovery_code_valid", "duplicate"),
        ("unknown", "refused"),
    ] {
        let line = format!(
            "reclaim_gateway_kratos_courier_total{{outcome=\"{outcome}\",template_type=\"{template_type}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

/// `reclaim serve` with Kratos's courier on (see `support::delivery_binary_config`).
fn binary_config(database_url: &str, smtp: &SmtpServer, twilio_url: &str) -> String {
    crate::support::delivery_binary_config(
        database_url,
        smtp.port,
        twilio_url,
        &format!("[gateway.kratos]\napi_keys = [\"{COURIER_KEY}\"]"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_no_courier_code_or_full_recipient() {
    let database = TestDatabase::fresh();
    let smtp = SmtpServer::start();
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let mut reclaim = Reclaim::start(&binary_config(&database.url, &smtp, &twilio.url)).await;
    let client = reqwest::Client::new();
    let (email, email_code) = ("courier.logs.jane@example.org", "8051937");
    let (phone, sms_code) = ("+14155550142", "6620418");
    let mut email_payload = contract("courier-email-recovery_code_valid.json");
    email_payload["recipient"] = json!(email);
    email_payload["template_data"]["recovery_code"] = json!(email_code);
    let mut sms_payload = contract("courier-sms-login_code_valid.json");
    sms_payload["recipient"] = json!(phone);
    sms_payload["template_data"]["login_code"] = json!(sms_code);
    let bad_recipient = "not-an-address.courier.logs@";
    let mut invalid = email_payload.clone();
    invalid["recipient"] = json!(bad_recipient);
    let post = |body: &Value, key: &str| {
        client
            .post(format!("{}/hooks/kratos/courier", reclaim.gateway))
            .header("X-Reclaim-Key", key)
            .json(body)
            .send()
    };
    let mut ids = Vec::new();
    for body in [&email_payload, &sms_payload] {
        let response = post(body, COURIER_KEY).await.expect("request");
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.expect("json");
        ids.push(answer["id"].as_str().expect("id").to_string());
    }
    assert_eq!(
        post(&email_payload, COURIER_KEY)
            .await
            .expect("retry")
            .status(),
        202
    );
    assert_eq!(
        post(&invalid, COURIER_KEY).await.expect("invalid").status(),
        400
    );
    assert_eq!(
        post(&sms_payload, "wrong-key")
            .await
            .expect("refused")
            .status(),
        401
    );
    for id in &ids {
        reclaim
            .wait_for("message sent", |l| {
                l.contains("message sent") && l.contains(id.as_str())
            })
            .await;
    }
    reclaim.terminate();
    assert!(reclaim.exit().await.success());
    assert_eq!(smtp.messages().len(), 1);
    assert!(smtp.messages()[0].data.contains(email_code));
    assert!(twilio.requests()[0]
        .field("Body")
        .is_some_and(|b| b.contains(sms_code)));

    let lines = reclaim.lines();
    assert!(
        lines.iter().any(|l| l.contains("Kratos courier retry")),
        "the retry is logged"
    );
    for (what, secret) in [
        ("a code", email_code),
        ("a code", sms_code),
        ("an address", email),
        ("a phone number", &phone[1..]),
        ("a refused recipient", bad_recipient),
        ("the courier key", COURIER_KEY),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} ({secret}) is logged:\n{leaks:#?}");
    }
}

#[tokio::test]
async fn the_queued_message_holds_no_code_or_address_outside_its_sealed_data() {
    let (app, _dir) = courier_app(|_| {}).await;
    let id = queue(&app, &contract("courier-email-recovery_code_valid.json")).await;
    let mut conn = app.db.get().expect("conn");
    let data: String = gateway_messages::table
        .filter(gateway_messages::id.eq(&id))
        .select(gateway_messages::data)
        .first(&mut conn)
        .expect("row");
    assert!(!data.contains("482913"), "{data}");
    let keys: Vec<String> = reclaim_common::schema::idempotency_keys::table
        .select(reclaim_common::schema::idempotency_keys::key)
        .load(&mut conn)
        .expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(
        !keys[0].contains("482913") && !keys[0].contains(EMAIL),
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_courier_message_over_a_limit_is_answered_2xx_and_not_sent() {
    let (app, dir) = courier_app(|s| {
        s.gateway.limits.destination.enabled = true;
        s.gateway.limits.destination.cooldown_seconds = 30;
    })
    .await;
    let payload = contract("courier-sms-login_code_valid.json");
    let first = queue(&app, &payload).await;
    // Another code to the same number seconds later: within the cooldown.
    let mut again = payload.clone();
    again["template_data"]["login_code"] = json!("111222");
    let response = post_courier(&app, &again).await;
    assert_eq!(
        response.status(),
        202,
        "Kratos must not retry a throttled send"
    );
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer,
        json!({"id": null, "throttled": "destination_cooldown"})
    );
    assert_eq!(count_messages(&app), 1);
    // Kratos's retry of it gets the same answer.
    let retry: Value = post_courier(&app, &again).await.json().await.expect("json");
    assert_eq!(retry, answer);
    // After the cooldown a send goes out again.
    app.clock.advance(Duration::seconds(31));
    let mut later = payload.clone();
    later["template_data"]["login_code"] = json!("333444");
    let third = queue(&app, &later).await;
    assert_ne!(third, first);
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    assert_eq!(delivered(dir.path()).len(), 2);
    let metrics = gateway_metrics(&app).await;
    assert!(
        metrics.contains(
            r#"reclaim_gateway_kratos_courier_total{outcome="throttled",template_type="login_code_valid"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"reclaim_gateway_limit_refusals_total{reason="destination_cooldown",scope="destination"} 1"#
        ),
        "{metrics}"
    );
}

/// A message Kratos's courier queues wakes this process's idle workers: sent at once, not at their next poll.
#[tokio::test]
async fn a_courier_message_wakes_idle_workers() {
    let (app, dir) = idle_gateway(courier_settings).await;
    queue(&app, &contract("courier-email-recovery_code_valid.json")).await;
    sent_before_the_next_poll(dir.path(), 1).await;
}
