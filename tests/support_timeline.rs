//! Support: the gateway's timeline of one address (`GET /admin/recipients/{address}/timeline`) answering the
//! help page's cases — a wrong number (a permanent Twilio error with its meaning), a delay (transient
//! failures, then success and the delivery report), an expired link, a throttled resend (the refusal and
//! when it lifts, then `DELETE /admin/limits?to=`) — sending a failed message again
//! (`POST /admin/messages/{id}/retry`), the plugin's `GET /admin/identities/{id}`, the operator's name in
//! the log, and the 401s and 400s.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway, time};
use crate::gateway_twilio_outbox::on_twilio;
use crate::secrets::raw_data;
use crate::support::captured_logs::CapturedLogs;
use crate::support::twilio_callbacks::{callback_at, form, sign_at};
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::{spawn_app_with, TestApp, ADMIN_TOKEN, API_TOKEN};
use chrono::{Duration as TimeDelta, Utc};
use reclaim_common::settings::OperatorSettings;
use reclaim_common::Secret;
use reclaim_gateway::metrics::GatewayMetrics;
use reclaim_gateway::retention::Janitor;
use serde_json::{json, Value};

const TO: &str = "+14155550100";
const SMS_SID: &str = "SM0123456789abcdef0123456789abcdef";

async fn admin_get(app: &TestApp, url: String, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn timeline(app: &TestApp, address: &str) -> Value {
    let (status, body) = admin_get(
        app,
        app.gateway_url(&format!("/admin/recipients/{address}/timeline")),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn retry(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.gateway_url(&format!("/admin/messages/{id}/retry")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_api(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.gateway_url(path))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sms_code(expires_in: u64) -> Value {
    json!({"channel": "sms", "to": TO, "template": "verification_code", "data": {"code": "482913"},
           "expires_in": expires_in})
}

fn entry<'a>(timeline: &'a Value, id: &str) -> &'a Value {
    timeline["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no entry {id} in {timeline}"))
}

#[tokio::test]
async fn a_wrong_number_shows_the_permanent_error_and_its_meaning_and_a_retry_appends_an_attempt() {
    let twilio = FaultyTwilio::start(vec![
        Reply::twilio_error(400, 21211),
        Reply::created(SMS_SID),
    ])
    .await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.channels.sms.fallback = vec![];
    })
    .await;
    let id = enqueue(&app, &sms_code(1200)).await;
    app.delivery.drain().await.expect("drain");

    let view = timeline(&app, TO).await;
    assert_eq!(view["address"], TO);
    let message = entry(&view, &id);
    assert_eq!(message["kind"], "message");
    assert_eq!(message["template"], "verification_code");
    assert_eq!(message["status"], "failed", "{message}");
    assert_eq!(message["to"], TO, "the asked address is shown in full");
    let attempts = message["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{message}");
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[0]["provider"], "twilio");
    assert_eq!(attempts[0]["error_code"], "21211");
    assert_eq!(
        attempts[0]["meaning"],
        "the number is not a valid phone number"
    );

    // Sent again by an operator (the number was fixed on the provider's side): a second attempt is appended.
    let (status, queued) = retry(&app, &id).await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(queued["status"], "queued");
    app.delivery.drain().await.expect("drain");
    let sent = get_message(&app, &id).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    let history = sent["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{sent}");
    assert_eq!(history[1]["number"], 2);
    assert_eq!(history[1]["outcome"], "sent");

    // Only failed, undelivered or expired messages go again; unknown ones are 404.
    let (status, body) = retry(&app, &id).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_retriable")),
        "{body}"
    );
    let (status, _) = retry(&app, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(status, 404);
    let (status, _) = retry(&app, "not-a-message").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_fallback_to_another_address_is_masked_and_listed_under_both_addresses() {
    let twilio = FaultyTwilio::start(vec![Reply::twilio_error(400, 21211)]).await;
    let (app, _dir) = spawn_gateway(|s| on_twilio(s, &twilio)).await;
    let mut body = sms_code(1200);
    body["fallback"] = json!([{"channel": "email", "to": "Jane@Example.com"}]);
    let id = enqueue(&app, &body).await;
    app.delivery.drain().await.expect("drain");
    app.delivery.drain().await.expect("drain");

    let by_number = timeline(&app, TO).await;
    let message = entry(&by_number, &id);
    assert_eq!(message["channel"], "email", "{message}");
    assert_eq!(message["to"], "J***@Example.com", "{message}");
    assert_eq!(
        message["fallbacks"],
        json!([{"channel": "email", "to": "J***@Example.com", "taken": true}])
    );
    let by_email = timeline(&app, "jane@example.com").await;
    let message = entry(&by_email, &id);
    assert_eq!(message["to"], "jane@example.com", "{message}");
    assert_eq!(message["fallbacks"][0]["to"], "jane@example.com");
    assert!(!by_email.to_string().contains(TO), "{by_email}");
    assert!(
        !by_number.to_string().contains("Jane@Example.com"),
        "{by_number}"
    );
}

#[tokio::test]
async fn a_message_past_its_expiry_cannot_be_sent_again() {
    let twilio = FaultyTwilio::start(vec![Reply::twilio_error(400, 21610)]).await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.channels.sms.fallback = vec![];
    })
    .await;
    let id = enqueue(&app, &sms_code(60)).await;
    app.delivery.drain().await.expect("drain");
    let view = timeline(&app, TO).await;
    assert!(
        entry(&view, &id)["attempts"][0]["meaning"]
            .as_str()
            .is_some_and(|m| m.contains("STOP")),
        "{view}"
    );
    // Failed before its expiry: the sealed data is kept for a retry, never in clear.
    let sealed = raw_data(&app, &id);
    assert!(sealed.starts_with("v1:"), "{sealed}");
    assert!(!sealed.contains("482913"));

    app.clock.advance(TimeDelta::minutes(2));
    let (status, body) = retry(&app, &id).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("spent")),
        "{body}"
    );
    // Once expired, the retention janitor empties it.
    let registry = prometheus::Registry::new();
    let metrics = GatewayMetrics::register(&registry, app.db.clone()).expect("metrics");
    let janitor = Janitor::new(
        app.db.clone(),
        app.settings.gateway.retention.clone(),
        metrics,
    );
    janitor
        .run_once(Utc::now() + TimeDelta::minutes(2))
        .await
        .expect("janitor");
    assert_eq!(raw_data(&app, &id), "");
}

#[tokio::test]
async fn a_delay_shows_each_retry_with_its_time_and_the_delivery_report() {
    // Twilio asks for a second's pause: each retry is due after the drain that failed, never within it.
    let mut replies = vec![Reply::twilio_error(503, 20503).header("Retry-After", "1"); 2];
    replies.push(Reply::created(SMS_SID));
    let twilio = FaultyTwilio::start(replies).await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.retry.max_attempts = 5;
        s.gateway.retry.base_ms = 100;
        s.gateway.retry.max_ms = 1_000;
    })
    .await;
    let id = enqueue(&app, &sms_code(1200)).await;
    let mut clock = Utc::now();
    for _ in 0..10 {
        app.delivery.drain_at(clock).await.expect("drain");
        if get_message(&app, &id).await["status"] != "queued" {
            break;
        }
        clock += TimeDelta::seconds(2);
    }
    let path = format!("/providers/twilio/status?message={id}");
    let report = form(&[("MessageSid", SMS_SID), ("MessageStatus", "delivered")]);
    let signature = sign_at(&path, &report);
    let answered = callback_at(&app, &path, &report, Some(signature)).await;
    assert!(answered.status().is_success(), "{}", answered.status());

    let view = timeline(&app, TO).await;
    let message = entry(&view, &id);
    assert_eq!(message["status"], "delivered", "{message}");
    assert!(message["delivered_at"].is_string(), "{message}");
    let attempts = message["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        ["transient", "transient", "delivered"],
        "{message}"
    );
    assert_eq!(attempts[0]["meaning"], "the provider had an internal error");
    let times: Vec<_> = attempts.iter().map(|a| time(&a["started_at"])).collect();
    assert!(times[0] < times[1] && times[1] < times[2], "{times:?}");
}

#[tokio::test]
async fn an_expired_link_shows_as_expired() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let (status, started) = post_api(
        &app,
        "/v1/verifications",
        json!({"channel": "email", "to": "Jane@Example.com", "purpose": "recovery",
               "link_url": "https://app.example.com/recover"}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().expect("id").to_string();
    app.delivery.drain_at(app.clock.now()).await.expect("drain");
    let before = timeline(&app, "jane@example.com").await;
    assert_eq!(entry(&before, &id)["status"], "pending");

    app.clock.advance(TimeDelta::hours(25));
    // Any case of the address finds the same mailbox.
    let view = timeline(&app, "JANE@example.com").await;
    let verification = entry(&view, &id);
    assert_eq!(verification["kind"], "verification");
    assert_eq!(verification["purpose"], "recovery");
    assert_eq!(verification["status"], "expired", "{verification}");
    let sends = verification["sends"].as_array().expect("sends");
    assert_eq!(sends.len(), 1);
    let message_id = sends[0]["message_id"].as_str().expect("message id");
    let message = entry(&view, message_id);
    assert_eq!(message["template"], "recovery_link");
    assert_eq!(message["status"], "sent");

    // `since` leaves older entries out.
    let later = (app.clock.now() - TimeDelta::hours(1)).to_rfc3339();
    let (status, recent) = admin_get(
        &app,
        format!(
            "{}?since={}",
            app.gateway_url("/admin/recipients/jane@example.com/timeline"),
            later.replace('+', "%2B")
        ),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{recent}");
    assert_eq!(recent["entries"], json!([]), "{recent}");
}

#[tokio::test]
async fn a_throttled_resend_shows_the_refusal_and_when_it_lifts_until_an_operator_lifts_it() {
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.verifications.resend_interval_seconds = 0;
        s.gateway.limits.destination.cooldown_seconds = 60;
    })
    .await;
    let (status, started) = post_api(
        &app,
        "/v1/verifications",
        json!({"channel": "sms", "to": TO, "purpose": "recovery"}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().expect("id").to_string();
    let resend_path = format!("/v1/verifications/{id}/resend");
    let (status, refused) = post_api(&app, &resend_path, json!({})).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "destination_cooldown");

    let view = timeline(&app, &TO.replace('+', "%2B")).await;
    let refusals = view["limits"]["refusals"].as_array().expect("refusals");
    assert_eq!(refusals.len(), 1, "{view}");
    assert_eq!(refusals[0]["limit"], "destination_cooldown");
    let sent_at = time(&entry(&view, &id)["sends"][0]["sent_at"]);
    assert_eq!(
        time(&refusals[0]["lifts_at"]),
        sent_at + TimeDelta::seconds(60)
    );
    assert_eq!(
        view["limits"]["counted_sends"].as_array().map(Vec::len),
        Some(1)
    );

    let lifted = app
        .client
        .delete(app.gateway_url("/admin/limits"))
        .query(&[("to", TO)])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(lifted.status(), 204);
    let view = timeline(&app, TO).await;
    assert_eq!(view["limits"]["refusals"], json!([]), "{view}");
    let (status, resent) = post_api(&app, &resend_path, json!({})).await;
    assert_eq!(status, 200, "{resent}");
}

#[tokio::test]
async fn admin_calls_need_an_admin_token_and_name_bad_fields() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let url = app.gateway_url(&format!("/admin/recipients/{TO}/timeline"));
    let bare = app.client.get(&url).send().await.expect("request");
    assert_eq!(bare.status(), 401);
    for token in ["wrong-token", API_TOKEN] {
        let (status, _) = admin_get(&app, url.clone(), token).await;
        assert_eq!(status, 401, "{token}");
    }
    let retry_401 = app
        .client
        .post(app.gateway_url(&format!("/admin/messages/{}/retry", uuid::Uuid::now_v7())))
        .bearer_auth("wrong-token")
        .send()
        .await
        .expect("request");
    assert_eq!(retry_401.status(), 401);

    for (path, field) in [
        ("/admin/recipients/4155550100/timeline", "address"),
        ("/admin/recipients/+999123/timeline", "address"),
        ("/admin/recipients/jane@/timeline", "address"),
        (
            "/admin/recipients/+14155550100/timeline?since=yesterday",
            "since",
        ),
    ] {
        let (status, body) = admin_get(&app, app.gateway_url(path), ADMIN_TOKEN).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{path}: {body}"
        );
    }
    for query in ["", "?to=", "?to=jane"] {
        let response = app
            .client
            .delete(app.gateway_url(&format!("/admin/limits{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["field"], "to", "{query}");
    }
}

#[tokio::test]
async fn each_admin_call_is_logged_with_the_operators_name_and_never_the_token_or_address() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let app = spawn_app_with(|s| {
        for admin in [&mut s.gateway.admin, &mut s.plugin.admin] {
            admin.operators = vec![OperatorSettings {
                name: "ana.support".into(),
                token: Secret::new("ana-secret-token-9f2"),
            }];
        }
    })
    .await;
    let address = "jane.doe@example.com";
    let (status, body) = admin_get(
        &app,
        app.gateway_url(&format!("/admin/recipients/{address}/timeline")),
        "ana-secret-token-9f2",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The plain admin tokens still work, as operator `admin`.
    let (status, _) = admin_get(
        &app,
        app.gateway_url(&format!("/admin/recipients/{TO}/timeline")),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin_get(
        &app,
        app.plugin_url("/admin/identities/never-seen"),
        "ana-secret-token-9f2",
    )
    .await;
    assert_eq!(status, 404);

    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    let timeline_lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("support timeline read"))
        .collect();
    assert_eq!(timeline_lines.len(), 2, "{logged}");
    assert!(
        timeline_lines[0].contains("operator=ana.support"),
        "{logged}"
    );
    assert!(
        timeline_lines[0].contains(&reclaim_common::secret::mask_address(address)),
        "{logged}"
    );
    assert!(timeline_lines[1].contains("operator=admin"), "{logged}");
    assert!(
        logged.lines().any(|l| l.contains("admin call")
            && l.contains("/admin/identities/{id}")
            && l.contains("ana.support")),
        "{logged}"
    );
    for secret in [address, TO, "ana-secret-token-9f2", ADMIN_TOKEN] {
        assert!(!logged.contains(secret), "logs hold {secret:?}:\n{logged}");
    }
}

#[tokio::test]
async fn the_plugin_shows_an_identity_with_masked_contacts_and_never_digests() {
    let app = spawn_app_with(|_| {}).await;
    let recorded = app
        .client
        .post(app.plugin_url("/v1/passwords/record"))
        .bearer_auth(API_TOKEN)
        .json(
            &json!({"identity_id": "support-1", "password": "correct horse battery staple 1",
                       "email": "jane@example.com"}),
        )
        .send()
        .await
        .expect("request");
    assert!(recorded.status().is_success(), "{}", recorded.status());
    let forced = app
        .client
        .post(app.plugin_url("/admin/identities/support-1/force-change"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "compromised"}))
        .send()
        .await
        .expect("request");
    assert_eq!(forced.status(), 200);

    let (status, view) = admin_get(
        &app,
        app.plugin_url("/admin/identities/support-1"),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"]["identity_id"], "support-1");
    assert_eq!(view["state"]["profile"], "default");
    assert_eq!(view["state"]["must_change"], true, "{view}");
    assert_eq!(view["state"]["must_change_reason"], "compromised");
    assert_eq!(view["state"]["history_entries"], 1);
    assert!(view["state"]["changed_at"].is_string());
    assert_eq!(
        view["email"],
        reclaim_common::secret::mask_address("jane@example.com")
    );
    assert!(view["pending_notices"].as_u64().is_some(), "{view}");
    let text = view.to_string();
    for hidden in ["jane@example.com", "digest", "salt"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }

    let (status, _) = admin_get(
        &app,
        app.plugin_url("/admin/identities/nobody"),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin_get(
        &app,
        app.plugin_url("/admin/identities/support-1"),
        API_TOKEN,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = admin_get(
        &app,
        app.plugin_url(&format!("/admin/identities/{}", "x".repeat(300))),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("id")),
        "{body}"
    );
}

#[tokio::test]
async fn the_openapi_documents_name_every_status_of_the_support_endpoints() {
    let app = spawn_app_with(|_| {}).await;
    let document = |url: String| {
        let client = app.client.clone();
        async move {
            let response = client.get(url).send().await.expect("request");
            response.json::<Value>().await.expect("json")
        }
    };
    let gateway = document(app.gateway_url("/openapi.json")).await;
    let plugin = document(app.plugin_url("/openapi.json")).await;
    for (doc, path, method, statuses) in [
        (
            &gateway,
            "/admin/recipients/{address}/timeline",
            "get",
            &["200", "400", "401"][..],
        ),
        (
            &gateway,
            "/admin/messages/{id}/retry",
            "post",
            &["200", "401", "404", "409"][..],
        ),
        (
            &gateway,
            "/admin/limits",
            "delete",
            &["204", "400", "401"][..],
        ),
        (
            &plugin,
            "/admin/identities/{id}",
            "get",
            &["200", "400", "401", "404"][..],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        let mut documented: Vec<&str> = responses
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        // Every status the endpoint answers is documented (the shared ones, 404 for an empty path segment and
        // 500, come on top).
        for status in statuses {
            assert!(
                documented.contains(status),
                "{method} {path}: {status} not in {documented:?}"
            );
        }
    }
}
