//! ZITADEL Actions v2 targets `/hooks/zitadel/set-password` and `/hooks/zitadel/set-password/response`,
//! driven with the contract payloads (../shared/contracts/zitadel), signed as ZITADEL signs them.

use crate::support::plugin::{new_id, post_json};
use crate::support::{spawn_app_with, TestApp, API_TOKEN};
use reclaim_common::auth::zitadel::signature_header;
use reclaim_common::settings::ZitadelCommitOn;
use reclaim_common::Secret;
use serde_json::{json, Value};

const KEY: &str = "zitadel-target-signing-key";

fn contract(name: &str) -> Value {
    let path = format!("../shared/contracts/zitadel/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("contract is JSON")
}

/// A contract request envelope for user `id` (the end user whose password is set).
fn for_user(name: &str, id: &str) -> Value {
    let mut envelope = contract(name);
    envelope["request"]["userId"] = Value::String(id.to_string());
    envelope
}

/// The response execution's envelope for the same call: the request plus SetPassword's response.
fn response_of(request_envelope: &Value) -> Value {
    let mut envelope = request_envelope.clone();
    if let Some(map) = envelope.as_object_mut() {
        map.remove("headers");
    }
    envelope["response"] = json!({"details": {"sequence": "7", "changeDate": "2026-01-01T10:00:00.123Z", "resourceOwner": "336392597046099971"}});
    envelope
}

async fn zitadel_app(commit_on: ZitadelCommitOn) -> TestApp {
    spawn_app_with(|settings| {
        settings.plugin.zitadel.signing_keys = vec![Secret::new("an-old-key"), Secret::new(KEY)];
        settings.plugin.zitadel.commit_on = commit_on;
    })
    .await
}

/// Posts `body` (compact JSON, as ZITADEL sends it) with `signature` as the header, if any.
async fn send(app: &TestApp, path: &str, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.plugin_url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("ZITADEL-Signature", signature);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Posts `envelope` signed with the target's key, now.
async fn signed(app: &TestApp, path: &str, envelope: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(envelope).expect("json");
    let now = chrono::Utc::now().timestamp();
    let signature = signature_header(&[Secret::new(KEY)], now, &body);
    send(app, path, &body, Some(signature)).await
}

/// The identity's history size and must-change reason; (0, None) when the plugin never saw it.
async fn history(app: &TestApp, id: &str) -> (i64, Option<String>) {
    let response = app
        .client
        .get(app.plugin_url(&format!("/v1/identities/{id}/password")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("state");
    if response.status().as_u16() == 404 {
        return (0, None);
    }
    let state: Value = response.json().await.expect("state json");
    (
        state["history_entries"].as_i64().expect("history_entries"),
        state["must_change_reason"].as_str().map(str::to_string),
    )
}

async fn record(app: &TestApp, id: &str, password: &str) {
    let (status, body) = post_json(
        app,
        "/v1/passwords/record",
        json!({"identity_id": id, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_reused_password_is_refused_with_zitadel_error_forwarding() {
    let app = zitadel_app(ZitadelCommitOn::Response).await;
    let id = new_id();
    record(&app, &id, "Secr3tP4ssw0rd!").await;
    let envelope = for_user("actions-v2-request-setpassword-current-password.json", &id);
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["forwardedStatusCode"], 400, "{body}");
    let message = body["forwardedErrorMessage"].as_str().expect("message");
    assert!(message.contains("used"), "{message}");
    assert_eq!(body.as_object().map(|m| m.len()), Some(2), "{body}");
    assert_eq!(history(&app, &id).await, (1, None));
}

#[tokio::test]
async fn an_allowed_password_returns_the_request_and_is_committed_on_the_response() {
    let app = zitadel_app(ZitadelCommitOn::Response).await;
    let id = new_id();
    record(&app, &id, "0ld-Secr3tP4ssw0rd!").await;
    let envelope = for_user("actions-v2-request-setpassword-current-password.json", &id);
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    let mut expected = contract("actions-v2-call-response-allow.json");
    expected["userId"] = Value::String(id.clone());
    assert_eq!(body, expected);
    // Allowed, not yet saved by ZITADEL: nothing recorded.
    assert_eq!(history(&app, &id).await, (1, None));

    let response = response_of(&envelope);
    let (status, body) = signed(&app, "/hooks/zitadel/set-password/response", &response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, response["response"]);
    assert_eq!(history(&app, &id).await, (2, None));
    // ZITADEL retrying the response call (same body, new signature) records nothing more.
    let (status, _) = signed(&app, "/hooks/zitadel/set-password/response", &response).await;
    assert_eq!(status, 200);
    assert_eq!(history(&app, &id).await, (2, None));

    // The password is now in the history: setting it again is refused.
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["forwardedStatusCode"], 400, "{body}");
}

#[tokio::test]
async fn commit_on_request_records_an_allowed_password_at_once() {
    let app = zitadel_app(ZitadelCommitOn::Request).await;
    let id = new_id();
    let envelope = for_user("actions-v2-request-setpassword-verification-code.json", &id);
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, envelope["request"]);
    assert_eq!(history(&app, &id).await, (1, None));
    // The response execution, if configured anyway, does not record it twice.
    let (status, _) = signed(
        &app,
        "/hooks/zitadel/set-password/response",
        &response_of(&envelope),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(history(&app, &id).await, (1, None));
}

#[tokio::test]
async fn an_admin_set_with_change_required_marks_the_user_must_change() {
    let app = zitadel_app(ZitadelCommitOn::Response).await;
    let id = new_id();
    let envelope = for_user(
        "actions-v2-request-setpassword-admin-change-required.json",
        &id,
    );
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["newPassword"]["changeRequired"], true, "{body}");
    let (status, _) = signed(
        &app,
        "/hooks/zitadel/set-password/response",
        &response_of(&envelope),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(history(&app, &id).await, (1, Some("admin".to_string())));
}

#[tokio::test]
async fn a_payload_without_a_new_password_passes_untouched() {
    let app = zitadel_app(ZitadelCommitOn::Request).await;
    let envelope = contract("actions-v2-request-createuser.docs-example.json");
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, envelope["request"]);
    let id = envelope["userID"].as_str().expect("caller");
    assert_eq!(history(&app, id).await, (0, None));
}

#[tokio::test]
async fn missing_wrong_or_stale_signatures_are_refused_and_change_nothing() {
    let app = zitadel_app(ZitadelCommitOn::Request).await;
    let id = new_id();
    let envelope = for_user("actions-v2-request-setpassword-current-password.json", &id);
    let body = serde_json::to_vec(&envelope).expect("json");
    let now = chrono::Utc::now().timestamp();
    let path = "/hooks/zitadel/set-password";
    for signature in [
        None,
        Some(signature_header(&[Secret::new("not-the-key")], now, &body)),
        Some(signature_header(&[Secret::new(KEY)], now - 301, &body)),
        Some("t=abc,v1=00".to_string()),
    ] {
        let (status, answer) = send(&app, path, &body, signature.clone()).await;
        assert_eq!(status, 401, "{signature:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
    }
    // A body altered after signing.
    let signature = signature_header(&[Secret::new(KEY)], now, &body);
    let mut altered = body.clone();
    altered.push(b' ');
    let (status, _) = send(&app, path, &altered, Some(signature)).await;
    assert_eq!(status, 401);
    assert_eq!(history(&app, &id).await, (0, None));
    // The same call, signed with the (rotated) old key, goes through: the checks above were not vacuous.
    let signature = signature_header(&[Secret::new("an-old-key")], now, &body);
    let (status, _) = send(&app, path, &body, Some(signature)).await;
    assert_eq!(status, 200);
    assert_eq!(history(&app, &id).await, (1, None));
}

#[tokio::test]
async fn malformed_payloads_are_refused_naming_the_field() {
    let app = zitadel_app(ZitadelCommitOn::Request).await;
    let now = chrono::Utc::now().timestamp();
    let path = "/hooks/zitadel/set-password";
    let body = b"{not json".to_vec();
    let signature = signature_header(&[Secret::new(KEY)], now, &body);
    let (status, answer) = send(&app, path, &body, Some(signature)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "body", "{answer}");

    let id = new_id();
    let mut envelope = for_user("actions-v2-request-setpassword-current-password.json", &id);
    envelope["request"]["newPassword"]["password"] = json!(7);
    let (status, answer) = signed(&app, path, &envelope).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["field"], "request.newPassword.password",
        "{answer}"
    );
    let mut envelope = for_user("actions-v2-request-setpassword-current-password.json", "");
    envelope["request"]
        .as_object_mut()
        .map(|m| m.remove("userId"));
    let (status, answer) = signed(&app, path, &envelope).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "request.userId", "{answer}");
    assert_eq!(history(&app, &id).await, (0, None));
}

#[tokio::test]
async fn a_created_users_first_password_is_recorded_on_the_response() {
    let app = zitadel_app(ZitadelCommitOn::Response).await;
    let id = new_id();
    let mut envelope = contract("actions-v2-request-createuser.docs-example.json");
    envelope["fullMethod"] = json!("/zitadel.user.v2.UserService/AddHumanUser");
    envelope["request"] = json!({"username": "minnie", "profile": {"givenName": "Minnie", "familyName": "Mouse"},
        "email": {"email": "mini1@mouse.com"}, "password": {"password": "A-first-P4ssw0rd"}});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, envelope["request"]);
    envelope["response"] = json!({"userId": id, "details": {"sequence": "1"}});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password/response", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, envelope["response"]);
    assert_eq!(history(&app, &id).await, (1, None));
}

/// The identity's stored contacts (`email`, `phone`), read from its `password_states` row: the API never
/// answers with them.
async fn contacts(app: &TestApp, id: &str) -> (Option<String>, Option<String>) {
    let id = id.to_string();
    let row = app
        .db
        .run(move |c| reclaim_plugin::state::find(c, &id))
        .await
        .expect("state row")
        .expect("the identity has a state row");
    (row.email, row.phone)
}

#[tokio::test]
async fn a_created_users_email_and_phone_are_kept_and_survive_a_set_password() {
    let app = zitadel_app(ZitadelCommitOn::Response).await;
    let id = new_id();
    let mut envelope = contract("actions-v2-request-createuser.docs-example.json");
    envelope["fullMethod"] = json!("/zitadel.user.v2.UserService/AddHumanUser");
    envelope["request"] = json!({"username": "minnie", "profile": {"givenName": "Minnie", "familyName": "Mouse"},
        "email": {"email": " mini1@mouse.com ", "isVerified": true}, "phone": {"phone": "+41791234567"},
        "password": {"password": "A-first-P4ssw0rd"}});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    // The user id is only in the response; the contacts come from the request part of the same envelope.
    envelope["response"] = json!({"userId": id, "details": {"sequence": "1"}});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password/response", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(history(&app, &id).await, (1, None));
    let created = (
        Some("mini1@mouse.com".to_string()),
        Some("+41791234567".to_string()),
    );
    assert_eq!(contacts(&app, &id).await, created);

    // SetPassword carries no contacts: the password is recorded, the contacts stay.
    let set = for_user(
        "actions-v2-request-setpassword-admin-change-required.json",
        &id,
    );
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &set).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = signed(
        &app,
        "/hooks/zitadel/set-password/response",
        &response_of(&set),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(history(&app, &id).await, (2, Some("admin".to_string())));
    assert_eq!(contacts(&app, &id).await, created);
}

#[tokio::test]
async fn commit_on_request_keeps_the_contacts_of_a_user_created_with_its_id() {
    let app = zitadel_app(ZitadelCommitOn::Request).await;
    let id = new_id();
    let mut envelope = contract("actions-v2-request-createuser.docs-example.json");
    envelope["request"]["userId"] = json!(id);
    envelope["request"]["human"]["password"] = json!({"password": "A-first-P4ssw0rd"});
    envelope["request"]["human"]["phone"] = json!({"phone": "079 123 45 67"});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &envelope).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, envelope["request"]);
    assert_eq!(history(&app, &id).await, (1, None));
    // The email of the docs example is kept; a phone not in E.164 is not.
    assert_eq!(
        contacts(&app, &id).await,
        (Some("mini1@mouse.com".to_string()), None)
    );
}

#[tokio::test]
async fn a_password_set_through_zitadel_sends_one_changed_notice_to_the_users_email() {
    use crate::plugin_notices::{deliver, mails_to, notice_app, notices_of, subjects};
    let server = crate::support::smtp::SmtpServer::start();
    let app = notice_app(&server, |settings| {
        settings.plugin.zitadel.signing_keys = vec![Secret::new(KEY)];
        settings.plugin.zitadel.commit_on = ZitadelCommitOn::Response;
    })
    .await;
    let id = new_id();
    // The user is created with an email: a first password, no notice.
    let mut created = contract("actions-v2-request-createuser.docs-example.json");
    created["fullMethod"] = json!("/zitadel.user.v2.UserService/AddHumanUser");
    created["request"] = json!({"userId": id, "username": "minnie",
        "profile": {"givenName": "Minnie", "familyName": "Mouse"},
        "email": {"email": "minnie@mouse.example"}, "password": {"password": "A-first-P4ssw0rd"}});
    created["response"] = json!({"userId": id, "details": {"sequence": "1"}});
    let (status, body) = signed(&app, "/hooks/zitadel/set-password/response", &created).await;
    assert_eq!(status, 200, "{body}");
    deliver(&app, &app.notices).await;
    assert!(mails_to(&server, "minnie@mouse.example").is_empty());

    // The user changes it (response execution, retried once by ZITADEL): one notice.
    let change = for_user("actions-v2-request-setpassword-current-password.json", &id);
    let (status, body) = signed(&app, "/hooks/zitadel/set-password", &change).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (status, body) = signed(
            &app,
            "/hooks/zitadel/set-password/response",
            &response_of(&change),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    deliver(&app, &app.notices).await;
    assert_eq!(
        subjects(&mails_to(&server, "minnie@mouse.example")),
        vec!["Your password was changed".to_string()]
    );
    assert_eq!(notices_of(&app.db, &id).await.len(), 1);
}
