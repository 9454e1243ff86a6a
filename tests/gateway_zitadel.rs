//! ZITADEL's HTTP SMS and email providers through the gateway (`POST /hooks/zitadel/sms`, `/email`): the
//! contract payloads of `shared/contracts/zitadel/http-*.json`, signed with `ZITADEL-Signature`, delivered
//! by SMS through Prism serving Twilio's spec and by email through the real SMTP server; our templates for
//! code events, ZITADEL's text otherwise; ZITADEL's retries deduplicated within the window; the abuse limits
//! answered 2xx; 401 and 400 with nothing queued; calls counted by hook and outcome; no code, recipient or
//! key in the `reclaim` binary's logs; the code sealed in the database, and not in the dedupe record.

use crate::gateway_kratos_courier::{on_prism, readable};
use crate::gateway_messages::{
    count_messages, delivered, gateway_metrics, get_message, idle_gateway,
    sent_before_the_next_poll, spawn_gateway,
};
use crate::gateway_smtp::use_smtp;
use crate::logs::Reclaim;
use crate::support::prism::RecordingPrism;
use crate::support::smtp::SmtpServer;
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::{TestApp, TestDatabase};
use chrono::Duration;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reclaim_common::auth::zitadel::signature_header;
use reclaim_common::settings::Settings;
use reclaim_common::Secret;
use reclaim_gateway::schema::gateway_messages;
use serde_json::{json, Value};

/// The provider's signing key, as ZITADEL returns it when the provider is created.
const KEY: &str = "zitadel-provider-test-signing-key";
const PHONE: &str = "+41791234567";
const EMAIL: &str = "example@zitadel.com";

fn contract(name: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("../shared/contracts/zitadel/{name}")).expect("contract");
    serde_json::from_str(&text).expect("contract is JSON")
}

fn sms_contract() -> Value {
    contract("http-sms-provider-password-code.json")
}

fn email_contract() -> Value {
    contract("http-email-provider.docs-example.json")
}

/// Accepts [`KEY`]. Several messages go to one recipient within seconds, which the limits per destination
/// would refuse: they are off, and on in `a_notification_over_a_limit_...`.
fn zitadel_settings(settings: &mut Settings) {
    settings.gateway.zitadel.signing_keys = vec![Secret::new(KEY)];
    settings.gateway.limits.destination.enabled = false;
}

/// A gateway with [`zitadel_settings`], then `customize`.
async fn zitadel_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    spawn_gateway(|s| {
        zitadel_settings(s);
        customize(s);
    })
    .await
}

/// Posts `body` to `/hooks/zitadel/<hook>` with the signature header `signature` (none when `None`).
async fn post_raw(
    app: &TestApp,
    hook: &str,
    body: &[u8],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.gateway_url(&format!("/hooks/zitadel/{hook}")))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("ZITADEL-Signature", signature);
    }
    request.send().await.expect("request")
}

/// Posts `body` signed with [`KEY`] at the gateway's current time, as ZITADEL does.
async fn post_signed(app: &TestApp, hook: &str, body: &Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).expect("json");
    let signature = signature_header(&[Secret::new(KEY)], app.clock.now().timestamp(), &bytes);
    post_raw(app, hook, &bytes, Some(signature)).await
}

/// Posts signed and expects it queued; returns the message id.
async fn queue(app: &TestApp, hook: &str, body: &Value) -> String {
    let response = post_signed(app, hook, body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    answer["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn the_zitadel_sms_contract_reaches_twilio_through_prism_with_its_code() {
    let prism = RecordingPrism::start().await;
    let (app, _dir) = zitadel_app(|s| on_prism(s, &prism)).await;
    let id = queue(&app, "sms", &sms_contract()).await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(
        message["status"],
        "sent",
        "{message}\n{}",
        prism.prism.log()
    );
    assert_eq!(message["channel"], "sms");
    assert_eq!(message["template"], "recovery_code");
    let requests = prism.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].path.ends_with("/Messages.json"));
    assert_eq!(requests[0].field("To"), Some(PHONE));
    let body = requests[0].field("Body").expect("Body");
    // Our recovery template, carrying ZITADEL's code.
    assert_eq!(
        body,
        "Your recovery code is K3NQ7P. Do not share it with anyone."
    );
}

#[tokio::test]
async fn without_own_templates_zitadel_sms_text_is_sent_as_rendered() {
    let (app, dir) = zitadel_app(|s| s.gateway.zitadel.use_own_templates = false).await;
    let payload = sms_contract();
    queue(&app, "sms", &payload).await;
    app.delivery.drain().await.expect("drain");
    let sent = delivered(dir.path());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["content"]["body"], payload["templateData"]["text"]);
}

#[tokio::test]
async fn zitadel_email_contracts_arrive_through_the_smtp_server_with_their_code() {
    let server = SmtpServer::start();
    let (app, _dir) = zitadel_app(|s| use_smtp(s, &server)).await;
    // An initialization code: no template of ours, so ZITADEL's texts go out.
    let init = email_contract();
    // A password reset code by email: our template.
    let mut reset = email_contract();
    reset["contextInfo"]["eventType"] = json!("user.human.password.code.added");
    reset["args"]["code"] = json!("P7X2QM");
    let ids = [
        queue(&app, "email", &init).await,
        queue(&app, "email", &reset).await,
    ];
    app.delivery.drain().await.expect("drain");
    for id in &ids {
        assert_eq!(get_message(&app, id).await["status"], "sent");
    }
    let mail = server.messages();
    assert_eq!(mail.len(), 2);
    assert!(mail.iter().all(|m| m.to == vec![EMAIL.to_string()]));
    // Sent at the same time: they arrive in any order.
    let with_subject = |subject: &str| {
        mail.iter()
            .find(|m| m.header("Subject").as_deref() == Some(subject))
            .unwrap_or_else(|| panic!("no mail with the subject {subject}"))
    };
    let init_mail = with_subject("Initialize User");
    let text = readable(init_mail);
    assert!(text.contains("Hello GivenName FamilyName,"), "{text}");
    assert!(text.contains("(Code 0M53RF)"), "{text}");
    assert!(
        text.contains("Finish initialization: http://example.zitadel.com/ui/login/user/init?authRequestID=&code=0M53RF&loginname=Username"),
        "{text}"
    );
    let reset_mail = with_subject("Your account recovery code");
    assert!(
        readable(reset_mail).contains("P7X2QM"),
        "{}",
        reset_mail.data
    );
}

#[tokio::test]
async fn a_zitadel_retry_is_answered_with_the_first_id_and_queues_nothing_until_the_window_passes()
{
    let (app, dir) = zitadel_app(|s| s.gateway.zitadel.dedupe_window_seconds = 600).await;
    let payload = sms_contract();
    let first = queue(&app, "sms", &payload).await;
    let retry = post_signed(&app, "sms", &payload).await;
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
    other["args"]["code"] = json!("AB12CD");
    assert_ne!(queue(&app, "sms", &other).await, first);
    assert_eq!(count_messages(&app), 2);

    // Past the window the same body is queued again.
    app.clock.advance(Duration::seconds(601));
    assert_ne!(queue(&app, "sms", &payload).await, first);
    assert_eq!(count_messages(&app), 3);
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    let bodies: Vec<String> = delivered(dir.path())
        .iter()
        .map(|l| {
            l["content"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| b.contains("K3NQ7P")).count(), 2);
}

#[tokio::test]
async fn a_zitadel_notification_over_a_limit_is_answered_2xx_and_not_queued() {
    let (app, dir) = zitadel_app(|s| {
        s.gateway.limits.destination.enabled = true;
        s.gateway.limits.destination.cooldown_seconds = 30;
    })
    .await;
    let payload = sms_contract();
    queue(&app, "sms", &payload).await;
    let mut again = payload.clone();
    again["args"]["code"] = json!("AB12CD");
    let response = post_signed(&app, "sms", &again).await;
    assert_eq!(
        response.status(),
        202,
        "ZITADEL must not retry a throttled send"
    );
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer,
        json!({"id": null, "throttled": "destination_cooldown"})
    );
    assert_eq!(count_messages(&app), 1);
    // ZITADEL's retry of it gets the same answer.
    let retry: Value = post_signed(&app, "sms", &again)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(retry, answer);
    app.clock.advance(Duration::seconds(31));
    let mut later = payload.clone();
    later["args"]["code"] = json!("EF34GH");
    queue(&app, "sms", &later).await;
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    assert_eq!(delivered(dir.path()).len(), 2);
    assert!(gateway_metrics(&app)
        .await
        .contains(r#"reclaim_gateway_zitadel_provider_total{hook="sms",outcome="throttled"} 1"#));
}

#[tokio::test]
async fn a_missing_wrong_or_stale_signature_is_refused_with_401_and_nothing_is_queued() {
    let (app, _dir) = zitadel_app(|s| {
        // The first key is an old one kept during a rotation.
        s.gateway.zitadel.signing_keys = vec![Secret::new("an-old-key"), Secret::new(KEY)];
    })
    .await;
    let body = serde_json::to_vec(&sms_contract()).expect("json");
    let now = app.clock.now().timestamp();
    let tampered = String::from_utf8(body.clone())
        .expect("utf8")
        .replace(PHONE, "+41791234568");
    let cases: [(&[u8], Option<String>); 6] = [
        (&body, None),
        (&body, Some(String::new())),
        (&body, Some("t=abc,v1=456".into())),
        (
            &body,
            Some(signature_header(&[Secret::new("not-the-key")], now, &body)),
        ),
        (
            &body,
            Some(signature_header(&[Secret::new(KEY)], now - 301, &body)),
        ),
        (
            tampered.as_bytes(),
            Some(signature_header(&[Secret::new(KEY)], now, &body)),
        ),
    ];
    for (index, (bytes, signature)) in cases.into_iter().enumerate() {
        let response = post_raw(&app, "sms", bytes, signature).await;
        assert_eq!(response.status(), 401, "case {index}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    assert_eq!(count_messages(&app), 0);
    // Either accepted key signs.
    let old = signature_header(&[Secret::new("an-old-key")], now, &body);
    assert_eq!(post_raw(&app, "sms", &body, Some(old)).await.status(), 202);
    assert_eq!(count_messages(&app), 1);

    // No key configured: every call is refused.
    let (closed, _dir) = spawn_gateway(|_| {}).await;
    assert_eq!(
        post_signed(&closed, "email", &email_contract())
            .await
            .status(),
        401
    );
    assert_eq!(count_messages(&closed), 0);
}

#[tokio::test]
async fn malformed_notifications_are_refused_with_400_naming_the_field_and_nothing_is_queued() {
    let (app, _dir) = zitadel_app(|s| s.gateway.zitadel.use_own_templates = false).await;
    let sms = sms_contract();
    let email = email_contract();
    let edit = |base: &Value, change: &dyn Fn(&mut Value)| {
        let mut body = base.clone();
        change(&mut body);
        body
    };
    let cases = [
        ("sms", json!({"templateData": {}}), "contextInfo"),
        (
            "sms",
            edit(&sms, &|b| {
                b["contextInfo"]
                    .as_object_mut()
                    .map(|c| c.remove("eventType"));
            }),
            "contextInfo.eventType",
        ),
        (
            "sms",
            edit(&sms, &|b| b["contextInfo"]["eventType"] = json!(" ")),
            "contextInfo.eventType",
        ),
        // An email provider's body sent to the SMS hook, and the other way round.
        ("sms", email.clone(), "contextInfo.recipientPhoneNumber"),
        ("email", sms.clone(), "contextInfo.recipientEmailAddress"),
        (
            "sms",
            edit(&sms, &|b| {
                b["contextInfo"]["recipientPhoneNumber"] = json!("0791234567")
            }),
            "contextInfo.recipientPhoneNumber",
        ),
        (
            "email",
            edit(&email, &|b| {
                b["contextInfo"]["recipientEmailAddress"] = json!("Jane <jane@example.com>")
            }),
            "contextInfo.recipientEmailAddress",
        ),
        (
            "sms",
            edit(&sms, &|b| {
                b["contextInfo"]["recipientPhoneNumber"] = json!(41791234567_u64)
            }),
            "contextInfo.recipientPhoneNumber",
        ),
        (
            "sms",
            edit(&sms, &|b| b["templateData"]["text"] = json!("")),
            "templateData.text",
        ),
        (
            "email",
            edit(&email, &|b| b["templateData"]["subject"] = json!("")),
            "templateData.subject",
        ),
    ];
    for (hook, body, field) in &cases {
        let response = post_signed(&app, hook, body).await;
        assert_eq!(response.status(), 400, "{field}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["field"], *field, "{answer}");
    }
    let not_json = b"{not json";
    let signature = signature_header(&[Secret::new(KEY)], app.clock.now().timestamp(), not_json);
    let response = post_raw(&app, "email", not_json, Some(signature)).await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["field"], "body");
    assert_eq!(count_messages(&app), 0);
}

#[tokio::test]
async fn zitadel_calls_are_counted_by_hook_and_outcome() {
    let (app, _dir) = zitadel_app(|_| {}).await;
    queue(&app, "sms", &sms_contract()).await;
    assert_eq!(
        post_signed(&app, "sms", &sms_contract()).await.status(),
        202
    );
    queue(&app, "email", &email_contract()).await;
    assert_eq!(post_raw(&app, "email", b"{}", None).await.status(), 401);
    assert_eq!(post_signed(&app, "email", &json!({})).await.status(), 400);
    let metrics = gateway_metrics(&app).await;
    for (hook, outcome) in [
        ("sms", "queued"),
        ("sms", "duplicate"),
        ("email", "queued"),
        ("email", "refused"),
        ("email", "invalid"),
    ] {
        let line = format!(
            "reclaim_gateway_zitadel_provider_total{{hook=\"{hook}\",outcome=\"{outcome}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

/// `reclaim serve` with ZITADEL's providers on (see `support::delivery_binary_config`).
fn binary_config(database_url: &str, smtp: &SmtpServer, twilio_url: &str) -> String {
    crate::support::delivery_binary_config(
        database_url,
        smtp.port,
        twilio_url,
        &format!("[gateway.zitadel]\nsigning_keys = [\"{KEY}\"]"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_no_zitadel_code_recipient_or_signing_key() {
    let database = TestDatabase::fresh();
    let smtp = SmtpServer::start();
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let mut reclaim = Reclaim::start(&binary_config(&database.url, &smtp, &twilio.url)).await;
    let client = reqwest::Client::new();
    let (email, email_code) = ("zitadel.logs.jane@example.org", "Q8W3ZR");
    let (phone, sms_code) = ("+41791234599", "T5K9MX");
    let mut email_payload = email_contract();
    email_payload["contextInfo"]["recipientEmailAddress"] = json!(email);
    email_payload["contextInfo"]["eventType"] = json!("user.human.email.code.added");
    email_payload["args"]["code"] = json!(email_code);
    let mut sms_payload = sms_contract();
    sms_payload["contextInfo"]["recipientPhoneNumber"] = json!(phone);
    sms_payload["args"]["code"] = json!(sms_code);
    let bad_recipient = "not-an-address.zitadel.logs@";
    let mut invalid = email_payload.clone();
    invalid["contextInfo"]["recipientEmailAddress"] = json!(bad_recipient);
    let post = |hook: &str, body: &Value, key: &str| {
        let bytes = serde_json::to_vec(body).expect("json");
        let signature =
            signature_header(&[Secret::new(key)], chrono::Utc::now().timestamp(), &bytes);
        client
            .post(format!("{}/hooks/zitadel/{hook}", reclaim.gateway))
            .header("ZITADEL-Signature", signature)
            .header("Content-Type", "application/json")
            .body(bytes)
            .send()
    };
    let mut ids = Vec::new();
    for (hook, body) in [("email", &email_payload), ("sms", &sms_payload)] {
        let response = post(hook, body, KEY).await.expect("request");
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.expect("json");
        ids.push(answer["id"].as_str().expect("id").to_string());
    }
    let retry = post("email", &email_payload, KEY).await.expect("retry");
    assert_eq!(retry.status(), 202);
    assert_eq!(
        post("email", &invalid, KEY)
            .await
            .expect("invalid")
            .status(),
        400
    );
    let refused = post("sms", &sms_payload, "wrong-key")
        .await
        .expect("refused");
    assert_eq!(refused.status(), 401);
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
        lines
            .iter()
            .any(|l| l.contains("ZITADEL notification retry")),
        "the retry is logged"
    );
    for (what, secret) in [
        ("a code", email_code),
        ("a code", sms_code),
        ("an address", email),
        ("a phone number", &phone[1..]),
        ("a refused recipient", bad_recipient),
        ("the signing key", KEY),
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} ({secret}) is logged:\n{leaks:#?}");
    }
}

#[tokio::test]
async fn the_queued_zitadel_code_is_sealed_and_the_dedupe_record_holds_no_code_or_number() {
    let (app, _dir) = zitadel_app(|_| {}).await;
    let id = queue(&app, "sms", &sms_contract()).await;
    let mut conn = app.db.get().expect("conn");
    let data: String = gateway_messages::table
        .filter(gateway_messages::id.eq(&id))
        .select(gateway_messages::data)
        .first(&mut conn)
        .expect("row");
    assert!(!data.contains("K3NQ7P"), "{data}");
    let keys: Vec<String> = reclaim_common::schema::idempotency_keys::table
        .select(reclaim_common::schema::idempotency_keys::key)
        .load(&mut conn)
        .expect("keys");
    assert_eq!(keys.len(), 1);
    assert!(
        !keys[0].contains("K3NQ7P") && !keys[0].contains(&PHONE[1..]),
        "{keys:?}"
    );
}

/// A notification ZITADEL hands over wakes this process's idle workers: sent at once, not at their next poll.
#[tokio::test]
async fn a_zitadel_notification_wakes_idle_workers() {
    let (app, dir) = idle_gateway(zitadel_settings).await;
    queue(&app, "email", &email_contract()).await;
    sent_before_the_next_poll(dir.path(), 1).await;
}
