//! Supabase Auth's password-verification-attempt hook, driven with the contract payloads signed the way
//! Supabase signs them, on the test backend.

use crate::support::plugin::{new_id, password_state, post_json};
use crate::support::supabase::{contract, send, send_signed, Signing, HOOK_SECRET, OTHER_SECRET};
use crate::support::{spawn_app_with, TestApp, API_TOKEN};
use reclaim_common::settings::SelectRule;
use reclaim_common::Secret;
use serde_json::{json, Value};

const HOOK: &str = "/hooks/supabase/password-verification";

/// Supabase users get the `staff` profile (passwords expire after 90 days) and a refusal logs them out.
async fn supabase_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.plugin.supabase.hook_secrets = vec![Secret::new(HOOK_SECRET)];
        settings.plugin.supabase.logout_on_reject = true;
        settings.plugin.policy.select.insert(
            0,
            SelectRule {
                profile: "staff".into(),
                schema_id: "supabase".into(),
                ..SelectRule::default()
            },
        );
    })
    .await
}

/// The contract's attempt for `user_id`, correct password or not, as a new invocation (Supabase gives each
/// call its own `metadata.uuid`; its retries of one call keep it).
fn attempt(user_id: &str, valid: bool) -> Value {
    let name = if valid {
        "password-verification-hook.request.json"
    } else {
        "password-verification-hook.request-invalid.json"
    };
    let mut body = contract(name);
    body["user_id"] = json!(user_id);
    body["metadata"]["uuid"] = json!(uuid::Uuid::new_v4().to_string());
    body
}

async fn call(app: &TestApp, body: &Value) -> (u16, Value) {
    send_signed(&app.client, &app.plugin_url(HOOK), body).await
}

/// The status of `GET /v1/identities/{id}/password`: 404 while the identity is unknown.
async fn state_status(app: &TestApp, id: &str) -> u16 {
    app.client
        .get(app.plugin_url(&format!("/v1/identities/{id}/password")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("state request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_correct_password_continues_and_the_user_is_tracked_from_then() {
    let app = supabase_app().await;
    let id = new_id();
    assert_eq!(state_status(&app, &id).await, 404);
    let (status, body) = call(&app, &attempt(&id, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        contract("password-verification-hook.response-continue.json")
    );
    let state = password_state(&app, &id).await;
    assert!(state["changed_at"].is_string(), "{state}");
    assert_eq!(state["profile"], "staff", "{state}");
}

#[tokio::test]
async fn an_expired_password_is_rejected_with_a_message_and_a_logout() {
    let app = supabase_app().await;
    let id = new_id();
    let (status, body) = call(&app, &attempt(&id, true)).await;
    assert_eq!((status, &body["decision"]), (200, &json!("continue")));
    app.clock.advance(chrono::Duration::days(91));
    let (status, body) = call(&app, &attempt(&id, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "reject", "{body}");
    assert_eq!(body["should_logout_user"], json!(true), "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("expired"), "{message}");
    // A wrong password is Supabase's to refuse: the hook lets it through untouched.
    let (status, body) = call(&app, &attempt(&id, false)).await;
    assert_eq!((status, body), (200, json!({"decision": "continue"})));
    let metrics = plugin_metrics(&app).await;
    for line in [
        r#"reclaim_plugin_supabase_hook_total{hook="password-verification",outcome="continue"} 2"#,
        r#"reclaim_plugin_supabase_hook_total{hook="password-verification",outcome="reject"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

async fn plugin_metrics(app: &TestApp) -> String {
    app.client
        .get(app.plugin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test]
async fn a_forced_change_rejects_the_next_sign_in() {
    let app = supabase_app().await;
    let id = new_id();
    let (status, _) = call(&app, &attempt(&id, true)).await;
    assert_eq!(status, 200);
    let (status, body) = post_json(
        &app,
        &format!("/admin/identities/{id}/force-change"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&app, &attempt(&id, true)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "reject", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn missing_wrong_and_stale_signatures_get_401_and_change_nothing() {
    let app = supabase_app().await;
    let id = new_id();
    let url = app.plugin_url(HOOK);
    let bytes = serde_json::to_vec(&attempt(&id, true)).expect("json");
    for signing in [
        Signing::Unsigned,
        Signing::With(&[OTHER_SECRET]),
        Signing::At(&[HOOK_SECRET], -301),
        Signing::At(&[HOOK_SECRET], 301),
    ] {
        let (status, body) = send(&app.client, &url, &bytes, signing).await;
        assert_eq!(status, 401, "{signing:?}: {body}");
        assert_eq!(body["error"]["http_code"], 401, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(state_status(&app, &id).await, 404);
    // A signature over other bytes (a tampered body) is refused too.
    let mut tampered = bytes.clone();
    tampered.push(b' ');
    let id_header = "msg_tampered";
    let now = chrono::Utc::now().timestamp();
    let signature = reclaim_common::auth::standard_webhooks::SigningKey::parse(HOOK_SECRET)
        .expect("secret")
        .sign(id_header, now, &bytes);
    let response = app
        .client
        .post(&url)
        .header("webhook-id", id_header)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(tampered)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(state_status(&app, &id).await, 404);
    // Within the tolerance, and with Supabase's ", "-joined signatures of two secrets, it is let in.
    let (status, body) = send(
        &app.client,
        &url,
        &bytes,
        Signing::At(&[OTHER_SECRET, HOOK_SECRET], -290),
    )
    .await;
    assert_eq!((status, body), (200, json!({"decision": "continue"})));
}

#[tokio::test]
async fn malformed_payloads_get_400_in_supabase_shape_naming_the_field() {
    let app = supabase_app().await;
    let url = app.plugin_url(HOOK);
    let cases: [(&[u8], &str); 4] = [
        (b"not json", "body"),
        (br#"{"valid": true}"#, "user_id"),
        (br#"{"user_id": "u1", "valid": "true"}"#, "valid"),
        (br#"{"user_id": "", "valid": true}"#, "user_id"),
    ];
    for (bytes, field) in cases {
        let (status, body) = send(&app.client, &url, bytes, Signing::With(&[HOOK_SECRET])).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["http_code"], 400, "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{field}: {message}");
    }
    assert_eq!(state_status(&app, "u1").await, 404);
    let metrics = plugin_metrics(&app).await;
    let line =
        r#"reclaim_plugin_supabase_hook_total{hook="password-verification",outcome="invalid"} 4"#;
    assert!(metrics.contains(line), "{metrics}");
}

#[tokio::test]
async fn a_retried_call_gets_the_first_answer_and_takes_no_second_grace_login() {
    let app = spawn_app_with(|settings| {
        settings.plugin.supabase.hook_secrets = vec![Secret::new(HOOK_SECRET)];
        let staff = settings
            .plugin
            .policy
            .profiles
            .get_mut("staff")
            .expect("staff profile");
        staff.grace_logins = 2;
        settings.plugin.policy.select.insert(
            0,
            SelectRule {
                profile: "staff".into(),
                schema_id: "supabase".into(),
                ..SelectRule::default()
            },
        );
    })
    .await;
    let id = new_id();
    assert_eq!(call(&app, &attempt(&id, true)).await.0, 200);
    app.clock.advance(chrono::Duration::days(91));
    // One sign-in past expiry, which Supabase sends three times (new webhook-id and signature each time,
    // the same metadata.uuid): one grace login is used, and every retry gets the first answer.
    let sign_in = attempt(&id, true);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(call(&app, &sign_in).await);
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].1["decision"], "continue", "a grace login");
    let state = password_state(&app, &id).await;
    assert_eq!(state["grace_logins_used"], 1, "{state}");
    // The next sign-in is a new call: the last grace login, then a refusal.
    assert_eq!(
        call(&app, &attempt(&id, true)).await.1["decision"],
        "continue"
    );
    assert_eq!(
        call(&app, &attempt(&id, true)).await.1["decision"],
        "reject"
    );
}
