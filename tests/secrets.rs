//! Secrets and personal data at rest and on the wire: message data sealed and wiped, key rotation, imported
//! hashes sealed, masked error texts, 400 bodies without secret values, admin tokens apart from API tokens.

use crate::gateway_messages::{delivered, enqueue, spawn_gateway};
use crate::support::TestApp;
use chrono::Utc;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reclaim_common::db::write_transaction;
use reclaim_common::sealed::Keyring;
use reclaim_common::Secret;
use reclaim_gateway::outbox::{self, NewMessage};
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
    // The configured chain sms → voice: an `undelivered` report may still need the code after `sent`.
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
    let kept = raw_data(&app, &with_fallback);
    assert!(
        kept.starts_with("v1:k1:") && !kept.contains("464646"),
        "{kept}"
    );
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
    let now = Utc::now().naive_utc();
    let message = NewMessage {
        id: id.clone(),
        channel: "sms".into(),
        destination: "+14155550100".into(),
        template: "recovery_code".into(),
        locale: "en".into(),
        data: json!({ "code": code }).to_string(),
        status: "queued".into(),
        attempts: 0,
        next_attempt_at: now,
        expires_at: None,
        fallback: "[]".into(),
        fallback_position: 0,
        idempotency_key: None,
        created_at: now,
        updated_at: now,
    };
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
