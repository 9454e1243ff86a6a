//! Secrets and personal data at rest and on the wire: message data sealed and wiped, key rotation, imported
//! hashes sealed, masked error texts, 400 bodies without secret values, admin tokens apart from API tokens.

use crate::gateway_callbacks::sent_sms;
use crate::gateway_messages::{delivered, enqueue, spawn_gateway};
use crate::support::captured_logs::CapturedLogs;
use crate::support::messages::queued_sms;
use crate::support::twilio_callbacks::{callback, sign, signed_callbacks};
use crate::support::{spawn_app_with, TestApp, ADMIN_TOKEN, API_TOKEN};
use chrono::Utc;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reclaim_common::db::write_transaction;
use reclaim_common::sealed::Keyring;
use reclaim_common::Secret;
use reclaim_gateway::outbox;
use reclaim_gateway::schema::gateway_messages;
use serde_json::json;

pub fn key(id: &str, byte: u8) -> Secret {
    Secret::new(format!("{id}:{}", "ab".repeat(31) + &format!("{byte:02x}")))
}

/// The `data` column as stored, bypassing the application.
pub fn raw_data(app: &TestApp, id: &str) -> String {
    let mut conn = app.db.get().expect("conn");
    gateway_messages::table
        .filter(gateway_messages::id.eq(id))
        .select(gateway_messages::data)
        .first(&mut conn)
        .expect("message row")
}

fn raw_status(app: &TestApp, id: &str) -> String {
    let mut conn = app.db.get().expect("conn");
    gateway_messages::table
        .filter(gateway_messages::id.eq(id))
        .select(gateway_messages::status)
        .first(&mut conn)
        .expect("message row")
}

#[tokio::test]
async fn codes_and_links_are_sealed_in_the_database_and_wiped_once_sent() {
    let (app, dir) = spawn_gateway(|s| s.gateway.storage.keys = vec![key("k1", 1)]).await;
    let code = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
                "data": {"code": "918273"}, "fallback": []}),
    )
    .await;
    // The configured chain sms → voice, but no status callback is configured (no `gateway.public_url`):
    // no report can come back to fall back on, so its code goes at `sent` too.
    let with_fallback = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "464646"}}),
    )
    .await;
    let link = enqueue(
        &app,
        &json!({"channel": "email", "to": "jane@example.com", "template": "recovery_link",
                "data": {"link": "https://id.example.com/recover?token=s3cr3t-t0ken"}}),
    )
    .await;
    let stored = raw_data(&app, &code);
    assert!(stored.starts_with("v1:k1:"), "{stored}");
    assert!(!stored.contains("918273"), "{stored}");
    let stored = raw_data(&app, &link);
    assert!(stored.starts_with("v1:k1:"), "{stored}");
    assert!(!stored.contains("s3cr3t-t0ken"), "{stored}");

    app.delivery.drain().await.expect("drain");
    let sent = serde_json::to_string(&delivered(dir.path())).expect("json");
    assert!(
        sent.contains("918273") && sent.contains("s3cr3t-t0ken"),
        "{sent}"
    );
    for id in [&code, &link] {
        assert_eq!(raw_status(&app, id), "sent");
        assert_eq!(
            raw_data(&app, id),
            "",
            "data of {id} kept after it was sent"
        );
    }
    assert_eq!(raw_status(&app, &with_fallback), "sent");
    assert_eq!(raw_data(&app, &with_fallback), "");
}

#[tokio::test]
async fn an_expired_message_loses_its_data() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
                "data": {"code": "555123"}, "expires_in": 60}),
    )
    .await;
    assert!(raw_data(&app, &id).starts_with("v1:dev:"));
    app.delivery
        .drain_at(Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("drain");
    assert_eq!(raw_status(&app, &id), "expired");
    assert_eq!(raw_data(&app, &id), "");
    assert!(delivered(dir.path()).is_empty());
}

/// Stores a message as a gateway configured with `keyring` would have.
fn store_message(app: &TestApp, keyring: &Keyring, code: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let message = queued_sms(&id, "recovery_code", code, Utc::now().naive_utc());
    let mut conn = app.db.get().expect("conn");
    write_transaction(&mut conn, |conn| outbox::insert(conn, &message, keyring)).expect("insert");
    id
}

#[tokio::test]
async fn after_a_key_rotation_old_messages_still_open_and_new_ones_use_the_new_key() {
    let (app, dir) =
        spawn_gateway(|s| s.gateway.storage.keys = vec![key("2026-01", 1), key("2026-06", 2)])
            .await;
    let old_ring = Keyring::from_entries(&[key("2026-01", 1)]).expect("old keyring");
    let old = store_message(&app, &old_ring, "111111");
    assert!(raw_data(&app, &old).starts_with("v1:2026-01:"));
    let new = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "222222"}}),
    )
    .await;
    assert!(raw_data(&app, &new).starts_with("v1:2026-06:"));
    // A key that is no longer configured cannot open what it sealed: that message fails, named.
    let gone_ring = Keyring::from_entries(&[key("2025-01", 9)]).expect("retired keyring");
    let orphan = store_message(&app, &gone_ring, "333333");

    app.delivery.drain().await.expect("drain");
    let sent = serde_json::to_string(&delivered(dir.path())).expect("json");
    assert!(sent.contains("111111") && sent.contains("222222"), "{sent}");
    assert!(!sent.contains("333333"), "{sent}");
    assert_eq!(raw_status(&app, &orphan), "failed");
    assert_eq!(raw_data(&app, &orphan), "");
}

#[tokio::test]
async fn a_reseal_moves_every_message_to_the_newest_key() {
    let (app, dir) =
        spawn_gateway(|s| s.gateway.storage.keys = vec![key("k_old", 1), key("k_new", 2)]).await;
    let old_ring = Keyring::from_entries(&[key("k_old", 1)]).expect("old keyring");
    let ids: Vec<String> = (0..3)
        .map(|i| store_message(&app, &old_ring, &format!("70000{i}")))
        .collect();
    let reseal = |token: &'static str| {
        app.client
            .post(app.gateway_url("/admin/storage/reseal"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(reseal(API_TOKEN).await.expect("request").status(), 401);
    let answer = reseal(ADMIN_TOKEN).await.expect("request");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(
        answer,
        json!({"key_id": "k_new", "resealed": 3, "unreadable": 0})
    );
    for id in &ids {
        assert!(raw_data(&app, id).starts_with("v1:k_new:"));
    }
    // Only the new key is needed from now on.
    let new_ring = Keyring::from_entries(&[key("k_new", 2)]).expect("new keyring");
    let mut conn = app.db.get().expect("conn");
    let rows: Vec<(String, String)> = gateway_messages::table
        .select((gateway_messages::id, gateway_messages::data))
        .load(&mut conn)
        .expect("rows");
    for (id, data) in rows {
        let opened = new_ring
            .open_text(&format!("gateway_messages.data:{id}"), &data)
            .expect("opens with the new key alone");
        assert!(opened.contains("70000"), "{opened}");
    }
    app.delivery.drain().await.expect("drain");
    assert_eq!(delivered(dir.path()).len(), 3);
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn admin_endpoints_take_admin_tokens_and_the_api_takes_api_tokens() {
    let app = spawn_app_with(|_| {}).await;
    let plugin_admin = || {
        app.client
            .post(app.plugin_url("/admin/identities/i1/compromised"))
    };
    let plugin_api = || {
        app.client
            .post(app.plugin_url("/v1/passwords/check"))
            .json(&json!({"identity_id": "i1", "password": "x"}))
    };
    assert_eq!(status_of(plugin_admin().bearer_auth(API_TOKEN)).await, 401);
    assert_eq!(
        status_of(plugin_admin().bearer_auth(ADMIN_TOKEN)).await,
        200
    );
    assert_eq!(status_of(plugin_api().bearer_auth(ADMIN_TOKEN)).await, 401);
    let gateway_api = || {
        app.client
            .get(app.gateway_url(&format!("/v1/messages/{}", uuid::Uuid::now_v7())))
    };
    assert_eq!(status_of(gateway_api().bearer_auth(ADMIN_TOKEN)).await, 401);
    assert_eq!(status_of(gateway_api().bearer_auth(API_TOKEN)).await, 404);
    let gateway_admin = || app.client.post(app.gateway_url("/admin/storage/reseal"));
    assert_eq!(status_of(gateway_admin().bearer_auth(API_TOKEN)).await, 401);
    assert_eq!(
        status_of(gateway_admin().bearer_auth(ADMIN_TOKEN)).await,
        200
    );
}

#[tokio::test]
async fn without_admin_tokens_every_admin_request_is_refused() {
    let app = spawn_app_with(|s| {
        s.plugin.admin.tokens.clear();
        s.gateway.admin.tokens.clear();
    })
    .await;
    for token in [API_TOKEN, ADMIN_TOKEN, ""] {
        let plugin = app
            .client
            .delete(app.plugin_url("/admin/identities/i1"))
            .bearer_auth(token);
        assert_eq!(status_of(plugin).await, 401, "plugin, token {token:?}");
        let gateway = app
            .client
            .post(app.gateway_url("/admin/storage/reseal"))
            .bearer_auth(token);
        assert_eq!(status_of(gateway).await, 401, "gateway, token {token:?}");
    }
}

#[tokio::test]
async fn the_gateway_checks_the_token_before_reading_the_body() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = 1024).await;
    let oversized = json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
                           "data": {"code": "1", "padding": "x".repeat(4096)}});
    let unauthenticated = app
        .client
        .post(app.gateway_url("/v1/messages"))
        .json(&oversized);
    assert_eq!(status_of(unauthenticated).await, 401);
    let authenticated = app
        .client
        .post(app.gateway_url("/v1/messages"))
        .bearer_auth(API_TOKEN)
        .json(&oversized);
    assert_eq!(status_of(authenticated).await, 413);
}

#[tokio::test]
async fn imported_password_hashes_are_sealed_in_the_database_and_still_match() {
    use reclaim_plugin::policy::ChangeContext;
    use reclaim_plugin::schema::password_history;
    use reclaim_plugin::{CheckOptions, Identity, IdentityId, Password, Passwords};
    let app = spawn_app_with(|s| {
        crate::plugin_passwords::fast_kdf(s);
        s.plugin.storage.keys = vec![key("p1", 7)];
    })
    .await;
    let passwords = Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new())
        .expect("facade");
    // bcrypt of "correct horse battery" (cost 4).
    let bcrypt = "$2b$04$KBCwKxOzLha2MUDgW0PjXeOnqNNq3deK4NrdZyiBfE/Q2Z/7EruyW";
    let who = Identity::new(IdentityId::parse("imported-sealed").expect("id"));
    passwords
        .import_foreign_hash(&who, bcrypt, Utc::now() - chrono::Duration::days(1))
        .await
        .expect("import");
    let stored: Option<String> = {
        let mut conn = app.db.get().expect("conn");
        password_history::table
            .filter(password_history::identity_id.eq("imported-sealed"))
            .select(password_history::foreign_hash)
            .first(&mut conn)
            .expect("history row")
    };
    let stored = stored.expect("foreign hash");
    assert!(stored.starts_with("v1:p1:"), "{stored}");
    assert!(!stored.contains("KBCwKxOzLha2MUDgW0PjXe"), "{stored}");
    let decision = passwords
        .check(
            &who,
            &Password::parse("correct horse battery".to_string()).expect("password"),
            &CheckOptions {
                context: ChangeContext::Voluntary,
                ..CheckOptions::default()
            },
        )
        .await
        .expect("check");
    assert!(!decision.allowed, "the sealed hash must still match");
}

#[tokio::test]
async fn an_smtp_refusal_quoting_the_address_is_masked_in_storage_the_api_and_the_logs() {
    let server = crate::support::smtp::SmtpServer::start();
    let (app, _dir) = spawn_gateway(|s| crate::gateway_smtp::use_smtp(s, &server)).await;
    let address = "reject.jane@example.com";
    let id = enqueue(
        &app,
        &json!({"channel": "email", "to": address, "template": "recovery_code", "data": {"code": "271828"}}),
    )
    .await;
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        app.delivery.drain().await.expect("drain");
    }
    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logged.contains("permanent failure"), "{logged}");
    assert!(
        !logged.contains(address),
        "logs hold the address:\n{logged}"
    );

    let last_error: Option<String> = {
        let mut conn = app.db.get().expect("conn");
        gateway_messages::table
            .filter(gateway_messages::id.eq(&id))
            .select(gateway_messages::last_error)
            .first(&mut conn)
            .expect("row")
    };
    let last_error = last_error.expect("last_error");
    assert!(last_error.contains("550"), "{last_error}");
    assert!(last_error.contains("r***@example.com"), "{last_error}");
    assert!(!last_error.contains(address), "{last_error}");
    let view = crate::gateway_messages::get_message(&app, &id).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(!view.to_string().contains(address), "{view}");
    assert!(
        view["history"][0]["error_message"]
            .as_str()
            .is_some_and(|e| e.contains("r***@example.com")),
        "{view}"
    );
}

#[tokio::test]
async fn a_400_names_the_field_but_never_echoes_a_password_or_code() {
    let app = spawn_app_with(|_| {}).await;
    for (body, field) in [
        (
            json!({"identity_id": "u1", "password": 918273645}),
            "password",
        ),
        (
            json!({"identity_id": "u1", "password": "p", "context": "918273645"}),
            "context",
        ),
    ] {
        let response = app
            .client
            .post(app.plugin_url("/v1/passwords/check"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400);
        let text = response.text().await.expect("body");
        assert!(!text.contains("918273645"), "{text}");
        let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(answer["error"]["field"], field, "{text}");
    }
}

#[tokio::test]
async fn request_logs_never_hold_bodies() {
    // nextest runs each test in its own process, so this test may own the global subscriber, which the
    // services' worker threads log to.
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let password = "body-secret-71f3";
    let checked = app
        .client
        .post(app.plugin_url("/v1/passwords/check"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"identity_id": "logged-1", "password": password}))
        .send()
        .await
        .expect("request");
    assert_eq!(checked.status(), 200);
    enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "551199"}}),
    )
    .await;
    let logged = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logged.contains("/v1/passwords/check"), "{logged}");
    assert!(logged.contains("/v1/messages"), "{logged}");
    for secret in [password, "551199", "+14155550100", API_TOKEN] {
        assert!(!logged.contains(secret), "logs hold {secret:?}:\n{logged}");
    }
}

#[tokio::test]
async fn a_sent_sms_keeps_its_sealed_data_for_the_fallback_until_it_is_reported_delivered() {
    let (app, dir) = spawn_gateway(signed_callbacks).await;
    let (id, sid) = sent_sms(&app, &dir).await;
    assert_eq!(raw_status(&app, &id), "sent");
    assert!(
        raw_data(&app, &id).starts_with("v1:dev:"),
        "kept for sms → voice"
    );
    let params = vec![
        ("MessageSid".to_string(), sid.clone()),
        ("MessageStatus".to_string(), "delivered".to_string()),
    ];
    let response = callback(&app, &params, Some(sign(&params))).await;
    assert_eq!(response.status(), 204);
    assert_eq!(raw_status(&app, &id), "delivered");
    assert_eq!(raw_data(&app, &id), "");
}
