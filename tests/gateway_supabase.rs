//! Supabase Auth's send hooks through the gateway (`POST /hooks/supabase/send-sms` and `/send-email`): the
//! contract payloads of `shared/contracts/supabase/send-*.json`, signed the way Supabase signs them, delivered
//! by SMS through Prism serving Twilio's spec and by email through the real SMTP server; a retry (same
//! `metadata.uuid`, new `webhook-id`) answered the same and queued once; an abuse limit answered with
//! Supabase's 429 error document; 401 and 400 in Supabase's error shape with nothing queued.

use crate::gateway_messages::{
    count_messages, gateway_metrics, idle_gateway, sent_before_the_next_poll, spawn_gateway,
};
use crate::gateway_smtp::use_smtp;
use crate::support::captured_logs::CapturedLogs;
use crate::support::prism::RecordingPrism;
use crate::support::smtp::SmtpServer;
use crate::support::supabase::{post, send, Signing, HOOK_SECRET, OTHER_SECRET};
use crate::support::TestApp;
use chrono::Duration;
use reclaim_common::auth::standard_webhooks::SigningKey;
use reclaim_common::settings::{ProviderKind, Settings, TwilioSettings};
use reclaim_common::Secret;
use serde_json::{json, Value};

const SEND_SMS: &str = "/hooks/supabase/send-sms";
const SEND_EMAIL: &str = "/hooks/supabase/send-email";
/// A real number in place of the contracts' fictional 555-01XX one, which the gateway holds invalid.
const PHONE: &str = "+14155550100";
const EMAIL: &str = "jane.doe@example.com";

/// A contract payload, its fictional number (sent without `+`, as GoTrue sends numbers) replaced.
fn contract(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("../shared/contracts/supabase/{name}"))
        .expect("contract")
        .replace("15555550123", PHONE.trim_start_matches('+'));
    serde_json::from_str(&text).expect("contract is JSON")
}

/// Accepts [`HOOK_SECRET`]. Several sends go to one address within seconds here, which the limits per
/// destination would refuse: they are off, and on in `an_abuse_limit_...`.
fn supabase_settings(settings: &mut Settings) {
    settings.gateway.supabase.hook_secrets = vec![Secret::new(HOOK_SECRET)];
    settings.gateway.limits.destination.enabled = false;
}

/// A gateway with [`supabase_settings`], then `customize`.
async fn supabase_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    spawn_gateway(|s| {
        supabase_settings(s);
        customize(s);
    })
    .await
}

fn on_prism(settings: &mut Settings, prism: &RecordingPrism) {
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
}

/// Posts `body` compact (as Go's encoding/json sends it), signed with [`HOOK_SECRET`].
async fn call(app: &TestApp, hook: &str, body: &Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).expect("serialise");
    post(
        &app.client,
        &app.gateway_url(hook),
        &bytes,
        Signing::With(&[HOOK_SECRET]),
    )
    .await
}

/// Calls and expects Supabase's success: `200 {}` as application/json.
async fn queued(app: &TestApp, hook: &str, body: &Value) {
    let response = call(app, hook, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(response.json::<Value>().await.expect("json"), json!({}));
}

#[tokio::test]
async fn send_sms_contracts_reach_twilio_through_prism_with_their_code() {
    let prism = RecordingPrism::start().await;
    let (app, _dir) = supabase_app(|s| on_prism(s, &prism)).await;
    let cases = [
        ("send-sms-hook.request.json", "561166", "verification code"),
        ("send-sms-hook.mfa.request.json", "804127", "sign-in code"),
    ];
    for (file, _, _) in cases {
        queued(&app, SEND_SMS, &contract(file)).await;
    }
    app.delivery.drain().await.expect("drain");
    let requests = prism.requests();
    assert_eq!(requests.len(), cases.len(), "{}", prism.prism.log());
    // Sent at the same time: they arrive in any order, each with its own code.
    for (file, code, wording) in &cases {
        let request = requests
            .iter()
            .find(|r| r.field("Body").is_some_and(|b| b.contains(code)))
            .unwrap_or_else(|| panic!("{file}: no request with its code"));
        assert!(request.path.ends_with("/Messages.json"), "{file}");
        // GoTrue sent the number without `+`; Twilio gets E.164.
        assert_eq!(request.field("To"), Some(PHONE), "{file}");
        let body = request.field("Body").unwrap_or_default();
        assert!(body.contains(code), "{file}: {request:?}");
        assert!(body.contains(wording), "{file}: {body}");
    }
}

/// The password-changed contract turned into another account-change notification, its detail field set.
fn notification(kind: &str, field: &str, value: &str) -> Value {
    let mut body = contract("send-email-hook.password_changed_notification.request.json");
    body["email_data"]["email_action_type"] = json!(kind);
    body["email_data"][field] = json!(value);
    body["metadata"]["uuid"] = json!(uuid::Uuid::new_v4().to_string());
    body
}

#[tokio::test]
async fn send_email_contracts_arrive_through_the_smtp_server() {
    let server = SmtpServer::start();
    let (app, _dir) = supabase_app(|s| use_smtp(s, &server)).await;
    // The documentation example predates `metadata`; with it added it is a signup confirmation.
    let mut signup = contract("send-email-hook.docs-example.json");
    signup["metadata"] =
        json!({"uuid": "0c3c7d5e-5a52-4c56-9d7c-1f1b3f1e2a10", "name": "send-email"});
    let cases = [
        (
            contract("send-email-hook.recovery.request.json"),
            EMAIL,
            "Your account recovery code",
            Some("305805"),
        ),
        (
            contract("send-email-hook.password_changed_notification.request.json"),
            EMAIL,
            "Your password was changed",
            None,
        ),
        (
            signup,
            "john@soupbase.io",
            "Your verification code",
            Some("305805"),
        ),
        (
            notification(
                "email_changed_notification",
                "old_email",
                "jane.old@example.com",
            ),
            "jane.old@example.com",
            "An address of your account changed",
            None,
        ),
        (
            notification("mfa_factor_enrolled_notification", "factor_type", "totp"),
            EMAIL,
            "A sign-in factor was added to your account",
            Some("(totp)"),
        ),
    ];
    for (body, _, _, _) in &cases {
        queued(&app, SEND_EMAIL, body).await;
    }
    app.delivery.drain().await.expect("drain");
    let mail = server.messages();
    assert_eq!(mail.len(), cases.len());
    // The worker sends them at the same time: they arrive in any order, each under its own subject.
    for (body, to, subject, code) in &cases {
        let kind = &body["email_data"]["email_action_type"];
        let mail = mail
            .iter()
            .find(|m| m.header("Subject").as_deref() == Some(*subject))
            .unwrap_or_else(|| panic!("{kind}: no mail with the subject {subject}"));
        assert_eq!(mail.to, vec![to.to_string()], "{kind}");
        assert_eq!(mail.header("Subject").as_deref(), Some(*subject), "{kind}");
        if let Some(code) = code {
            assert!(mail.data.contains(code), "{kind}: {}", mail.data);
        }
        // Codes only: no link built from token_hash.
        let token_hash = body["email_data"]["token_hash"].as_str().unwrap_or("");
        assert!(
            token_hash.is_empty() || !mail.data.contains(token_hash),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn with_email_links_a_recovery_email_carries_supabase_verify_link_and_no_code() {
    let server = SmtpServer::start();
    let (app, _dir) = supabase_app(|s| {
        use_smtp(s, &server);
        s.gateway.supabase.email_links = true;
    })
    .await;
    queued(
        &app,
        SEND_EMAIL,
        &contract("send-email-hook.recovery.request.json"),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0].header("Subject").as_deref(),
        Some("Recover your account")
    );
    // Quoted-printable soft breaks and `=3D` undone, so the link reads whole.
    let text = mail[0]
        .data
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let link = "https://abcdefghijklmnopqrst.supabase.co/auth/v1/verify?\
        token=b043a287982303bde2d463f552806e72aca8f0c5cf443875c14b8e3d&type=recovery&\
        redirect_to=https%3A%2F%2Fapp.example.com%2Faccount%2Fupdate-password";
    assert!(text.contains(link), "{text}");
    assert!(!text.contains("305805"), "{text}");
}

#[tokio::test]
async fn a_retry_with_the_same_metadata_uuid_is_answered_the_same_and_queued_once() {
    let (app, _dir) = supabase_app(|_| {}).await;
    let body = contract("send-sms-hook.request.json");
    queued(&app, SEND_SMS, &body).await;
    // Supabase's retry: same body, new webhook-id and signature.
    let retry = call(&app, SEND_SMS, &body).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(
        retry
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(retry.json::<Value>().await.expect("json"), json!({}));
    assert_eq!(count_messages(&app), 1);
    // The same invocation id under the other hook is another call.
    let mut email = contract("send-email-hook.recovery.request.json");
    email["metadata"]["uuid"] = body["metadata"]["uuid"].clone();
    queued(&app, SEND_EMAIL, &email).await;
    assert_eq!(count_messages(&app), 2);
    let metrics = gateway_metrics(&app).await;
    for line in [
        r#"reclaim_gateway_supabase_hook_total{hook="send-sms",outcome="queued"} 1"#,
        r#"reclaim_gateway_supabase_hook_total{hook="send-sms",outcome="duplicate"} 1"#,
        r#"reclaim_gateway_supabase_hook_total{hook="send-email",outcome="queued"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn an_abuse_limit_answers_supabase_429_error_document_and_queues_nothing() {
    let (app, _dir) = supabase_app(|s| {
        s.gateway.limits.destination.enabled = true;
        s.gateway.limits.destination.cooldown_seconds = 30;
    })
    .await;
    let first = contract("send-sms-hook.request.json");
    queued(&app, SEND_SMS, &first).await;
    // Another code to the same number seconds later: within the cooldown.
    let mut again = first.clone();
    again["metadata"]["uuid"] = json!("5f0d8a7e-2b1c-4e3f-9a8b-7c6d5e4f3a21");
    again["sms"]["otp"] = json!("111222");
    let response = call(&app, SEND_SMS, &again).await;
    assert_eq!(
        response.status(),
        200,
        "Supabase reads the error from a 2xx"
    );
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["http_code"], 429, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    assert_eq!(count_messages(&app), 1);
    // Supabase's retry of it gets the same answer, still nothing queued.
    let (status, retry) = send(
        &app.client,
        &app.gateway_url(SEND_SMS),
        &serde_json::to_vec(&again).expect("serialise"),
        Signing::With(&[HOOK_SECRET]),
    )
    .await;
    assert_eq!((status, &retry), (200, &answer));
    assert_eq!(count_messages(&app), 1);
    // After the cooldown a new send goes out.
    app.clock.advance(Duration::seconds(31));
    let mut later = first.clone();
    later["metadata"]["uuid"] = json!("9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4");
    queued(&app, SEND_SMS, &later).await;
    assert_eq!(count_messages(&app), 2);
    assert!(gateway_metrics(&app)
        .await
        .contains(r#"reclaim_gateway_supabase_hook_total{hook="send-sms",outcome="throttled"} 1"#));
}

#[tokio::test]
async fn missing_wrong_and_stale_signatures_get_401_and_queue_nothing() {
    let (app, _dir) = supabase_app(|_| {}).await;
    let body = serde_json::to_vec(&contract("send-sms-hook.request.json")).expect("serialise");
    for signing in [
        Signing::Unsigned,
        Signing::With(&[OTHER_SECRET]),
        Signing::At(&[HOOK_SECRET], -301),
        Signing::At(&[HOOK_SECRET], 301),
    ] {
        for hook in [SEND_SMS, SEND_EMAIL] {
            let (status, answer) = send(&app.client, &app.gateway_url(hook), &body, signing).await;
            assert_eq!(status, 401, "{signing:?} {hook}");
            assert_eq!(answer["error"]["http_code"], 401, "{answer}");
        }
    }
    // The body signed, then changed in transit.
    let tampered = String::from_utf8(body.clone())
        .expect("utf8")
        .replace("561166", "000000");
    let timestamp = chrono::Utc::now().timestamp();
    let signature =
        SigningKey::parse(HOOK_SECRET)
            .expect("secret")
            .sign("msg_tampered", timestamp, &body);
    let response = app
        .client
        .post(app.gateway_url(SEND_SMS))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_tampered")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(tampered)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(count_messages(&app), 0);
    // With a second secret configured (rotation) the same body, signed with both, is accepted.
    let (rotated, _dir2) = supabase_app(|s| {
        s.gateway.supabase.hook_secrets = vec![Secret::new(OTHER_SECRET), Secret::new(HOOK_SECRET)];
    })
    .await;
    let (status, answer) = send(
        &rotated.client,
        &rotated.gateway_url(SEND_SMS),
        &body,
        Signing::With(&[OTHER_SECRET, HOOK_SECRET]),
    )
    .await;
    assert_eq!((status, answer), (200, json!({})));
    assert!(gateway_metrics(&app).await.contains(
        r#"reclaim_gateway_supabase_hook_total{hook="send-sms",outcome="unauthorized"} 5"#
    ));
}

#[tokio::test]
async fn malformed_payloads_get_400_naming_the_field_and_queue_nothing() {
    let (app, _dir) = supabase_app(|_| {}).await;
    let sms = contract("send-sms-hook.request.json");
    let email = contract("send-email-hook.recovery.request.json");
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (SEND_SMS, b"{not json".to_vec(), "body"),
        (
            SEND_SMS,
            serde_json::to_vec(&contract("send-sms-hook.docs-example.json")).expect("json"),
            "metadata",
        ),
    ];
    let mut edit =
        |hook: &'static str, base: &Value, change: &dyn Fn(&mut Value), field: &'static str| {
            let mut body = base.clone();
            change(&mut body);
            cases.push((hook, serde_json::to_vec(&body).expect("json"), field));
        };
    edit(SEND_SMS, &sms, &|b| b["sms"]["otp"] = json!(""), "sms.otp");
    edit(
        SEND_SMS,
        &sms,
        &|b| b["sms"]["phone"] = json!("12"),
        "sms.phone",
    );
    edit(
        SEND_SMS,
        &sms,
        &|b| {
            b["sms"].as_object_mut().expect("sms").remove("phone");
            b["user"]["phone"] = json!("");
        },
        "user.phone",
    );
    edit(
        SEND_SMS,
        &sms,
        &|b| b["metadata"]["uuid"] = json!("not-a-uuid"),
        "metadata.uuid",
    );
    edit(SEND_SMS, &sms, &|b| b["user"]["id"] = json!(""), "user.id");
    edit(
        SEND_EMAIL,
        &email,
        &|b| b["email_data"]["email_action_type"] = json!("email_change"),
        "email_data.email_action_type",
    );
    edit(
        SEND_EMAIL,
        &email,
        &|b| b["email_data"]["token"] = json!(""),
        "email_data.token",
    );
    edit(
        SEND_EMAIL,
        &email,
        &|b| b["user"]["email"] = json!("not an address"),
        "user.email",
    );
    for (hook, body, field) in cases {
        let (status, answer) = send(
            &app.client,
            &app.gateway_url(hook),
            &body,
            Signing::With(&[HOOK_SECRET]),
        )
        .await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["error"]["http_code"], 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{field} not named in {message}");
    }
    assert_eq!(count_messages(&app), 0);
}

#[tokio::test]
async fn the_logs_hold_no_code_and_no_full_recipient() {
    // nextest runs each test in its own process, so this test may own the global subscriber, which the
    // services' worker threads log to.
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let (app, _dir) = supabase_app(|_| {}).await;
    let sms = contract("send-sms-hook.request.json");
    queued(&app, SEND_SMS, &sms).await;
    call(&app, SEND_SMS, &sms).await;
    queued(
        &app,
        SEND_EMAIL,
        &contract("send-email-hook.recovery.request.json"),
    )
    .await;
    let mut bad = contract("send-email-hook.recovery.request.json");
    bad["email_data"]["email_action_type"] = json!("email_change");
    call(&app, SEND_EMAIL, &bad).await;
    app.delivery.drain().await.expect("drain");
    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logged.contains("Supabase send hook message queued"),
        "{logged}"
    );
    assert!(logged.contains("already answered"), "{logged}");
    for secret in ["561166", "305805", "4155550100", EMAIL, HOOK_SECRET] {
        assert!(!logged.contains(secret), "logs hold {secret:?}:\n{logged}");
    }
}

/// A message Supabase's send hook queues wakes this process's idle workers: sent at once, not at their next
/// poll.
#[tokio::test]
async fn a_send_hook_message_wakes_idle_workers() {
    let (app, dir) = idle_gateway(supabase_settings).await;
    queued(
        &app,
        SEND_EMAIL,
        &contract("send-email-hook.recovery.request.json"),
    )
    .await;
    sent_before_the_next_poll(dir.path(), 1).await;
}
