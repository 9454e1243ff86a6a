//! Security notices end to end: a change committed through an adapter → the plugin's notice outbox → the
//! gateway's `POST /v1/messages` → a real SMTP server. Exactly one "changed" notice per change, one
//! "must change" per mark, one expiry warning per identity and expiry date across two instances and a
//! restart, and notices that wait while the gateway is down.

use crate::gateway_smtp::use_smtp;
use crate::support::kratos::{call_hook, contract, for_identity, kratos_settings, registered};
use crate::support::plugin::{new_id, post_json};
use crate::support::ports::closed_port;
use crate::support::smtp::{ReceivedMail, SmtpServer};
use crate::support::{spawn_app_in, TestApp, ADMIN_TOKEN, API_TOKEN};
use chrono::TimeDelta;
use reclaim_common::settings::{ExpiryMode, ProfileSettings, Settings};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{Db, Secret};
use reclaim_gateway::RunMode;
use reclaim_plugin::notices::{self, NoticeRow, NoticeWorker};
use serde_json::{json, Value};
use std::time::Duration;

/// Notices on, email through the SMTP server, a `max_age` profile for schema `staff` (the default settings'
/// `staff`: 90 days, warned 14 days before). The gateway delivers only when the test drains it.
pub(crate) async fn notice_app(
    server: &SmtpServer,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_in(RunMode::ApiOnly, |settings| {
        use_smtp(settings, server);
        settings.plugin.notices.enabled = true;
        // The background worker wakes on every queued notice; rounds and scans on a timer stay out of the way.
        settings.plugin.notices.poll_interval_ms = 60_000;
        settings.plugin.notices.scan_interval_seconds = 86_400;
        customize(settings);
    })
    .await
}

/// The notices of `identity` as the plugin keeps them.
pub(crate) async fn notices_of(db: &Db, identity: &str) -> Vec<NoticeRow> {
    let identity = identity.to_string();
    db.run(move |c| notices::of_identity(c, &identity))
        .await
        .expect("notices")
}

/// Hands every due notice to the gateway (the background worker may take some first), then lets the gateway
/// deliver what it queued.
pub(crate) async fn deliver(app: &TestApp, worker: &NoticeWorker) {
    for _ in 0..200 {
        worker.deliver_due().await.expect("deliver notices");
        let pending: i64 = {
            use diesel::dsl::count_star;
            use diesel::prelude::*;
            use reclaim_plugin::schema::notices::dsl;
            app.db
                .run(|c| {
                    Ok(dsl::notices
                        .filter(dsl::status.eq("pending"))
                        .select(count_star())
                        .first(c)?)
                })
                .await
                .expect("count")
        };
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    app.delivery.drain().await.expect("drain the gateway");
}

pub(crate) fn mails_to(server: &SmtpServer, to: &str) -> Vec<ReceivedMail> {
    server
        .messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .collect()
}

/// Subjects, with RFC 2047 encoded words (`=?utf-8?b?…?=`, what lettre writes for non-ASCII) decoded.
pub(crate) fn subjects(mails: &[ReceivedMail]) -> Vec<String> {
    use base64::Engine;
    let decode = |word: &str| -> String {
        let lower = word.to_ascii_lowercase();
        match (lower.starts_with("=?utf-8?b?"), word.strip_suffix("?=")) {
            (true, Some(word)) => base64::engine::general_purpose::STANDARD
                .decode(&word["=?utf-8?b?".len()..])
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_else(|| word.to_string()),
            _ => word.to_string(),
        }
    };
    mails
        .iter()
        .map(|m| {
            let subject = m.header("Subject").unwrap_or_default();
            let words: Vec<String> = subject.split_whitespace().map(decode).collect();
            // Adjacent encoded words join without the space between them (RFC 2047 §6.2).
            let mut out = String::new();
            let raw: Vec<&str> = subject.split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                let encoded = raw[i].starts_with("=?");
                let previous_encoded = i > 0 && raw[i - 1].starts_with("=?");
                if i > 0 && !(encoded && previous_encoded) {
                    out.push(' ');
                }
                out.push_str(word);
            }
            out
        })
        .collect()
}

/// The gateway's view of the message a notice became.
pub(crate) async fn gateway_message(app: &TestApp, notice: &NoticeRow) -> Value {
    let id = notice
        .gateway_message_id
        .clone()
        .expect("handed to the gateway");
    app.client
        .get(app.gateway_url(&format!("/v1/messages/{id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("message")
        .json()
        .await
        .expect("json")
}

async fn record(app: &TestApp, body: Value) -> Value {
    let (status, answer) = post_json(app, "/v1/passwords/record", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test]
async fn a_change_recorded_through_the_api_sends_one_changed_notice_by_email() {
    let server = SmtpServer::start();
    let app = notice_app(&server, |_| {}).await;
    let id = new_id();
    let email = format!("{id}@example.com");
    let first = json!({"identity_id": id, "password": "first secret", "email": email});
    record(&app, first).await;
    deliver(&app, &app.notices).await;
    assert!(
        mails_to(&server, &email).is_empty(),
        "an identity's first password is no change to warn about"
    );

    // A change, sent twice with one Idempotency-Key (a client retry): one notice.
    let change = json!({"identity_id": id, "password": "second secret"});
    for _ in 0..2 {
        let answer = app
            .client
            .post(app.plugin_url("/v1/passwords/record"))
            .bearer_auth(API_TOKEN)
            .header("Idempotency-Key", "change-1")
            .json(&change)
            .send()
            .await
            .expect("record");
        assert_eq!(answer.status(), 200);
    }
    deliver(&app, &app.notices).await;
    let mails = mails_to(&server, &email);
    assert_eq!(
        subjects(&mails),
        vec!["Your password was changed".to_string()]
    );
    let rows = notices_of(&app.db, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "sent");
    assert_ne!(rows[0].recipient, email, "the address is masked once sent");
    assert!(rows[0].gateway_message_id.is_some());

    // A backfilled change (recorded with a time days ago) is not news.
    let backfill = json!({"identity_id": id, "password": "third secret",
        "changed_at": (app.clock.now() - TimeDelta::days(3)).to_rfc3339()});
    record(&app, backfill).await;
    deliver(&app, &app.notices).await;
    assert_eq!(mails_to(&server, &email).len(), 1);
}

#[tokio::test]
async fn a_kratos_settings_change_sends_one_changed_notice_even_when_kratos_retries_the_hook() {
    let server = SmtpServer::start();
    let app = notice_app(&server, kratos_settings).await;
    let id = new_id();
    registered(&app, &id, "default").await;
    let settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    let email = settings["identity"]["traits"]["email"]
        .as_str()
        .expect("the contract identity has an email")
        .to_string();
    let before = mails_to(&server, &email).len();
    let trigger = new_id();
    for _ in 0..2 {
        let answer = call_hook(
            &app,
            "/hooks/kratos/settings/password/after",
            &settings,
            &trigger,
        )
        .await;
        answer.assert_proceeds();
    }
    deliver(&app, &app.notices).await;
    let rows = notices_of(&app.db, &id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].kind, "password_changed");
    let mails = mails_to(&server, &email);
    assert_eq!(mails.len(), before + 1);
    assert_eq!(
        mails.last().and_then(|m| m.header("Subject")).as_deref(),
        Some("Your password was changed")
    );
}

#[tokio::test]
async fn a_forced_change_or_compromise_mark_sends_one_must_change_notice_in_the_configured_language(
) {
    let server = SmtpServer::start();
    let app = notice_app(&server, |s| s.plugin.policy.default_locale = "es".into()).await;
    let id = new_id();
    let email = format!("{id}@example.com");
    record(
        &app,
        json!({"identity_id": id, "password": "first secret", "email": email}),
    )
    .await;
    let mark = |path: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            let answer = app
                .client
                .post(app.plugin_url(&format!("/admin/identities/{id}/{path}")))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({}))
                .send()
                .await
                .expect("admin");
            assert_eq!(answer.status(), 200, "{path}");
        }
    };
    mark("force-change").await;
    mark("force-change").await;
    deliver(&app, &app.notices).await;
    assert_eq!(
        subjects(&mails_to(&server, &email)),
        vec!["Tienes que cambiar tu contraseña".to_string()]
    );
    mark("compromised").await;
    deliver(&app, &app.notices).await;
    assert_eq!(mails_to(&server, &email).len(), 2);
    let rows = notices_of(&app.db, &id).await;
    assert_eq!(rows[0].data, r#"{"reason":"compromised"}"#);
    let message = gateway_message(&app, &rows[0]).await;
    assert_eq!(message["template"], "password_change_required", "{message}");
    assert_eq!(message["locale"], "es", "{message}");
    assert_eq!(message["status"], "sent", "{message}");
}

#[tokio::test]
async fn an_identity_with_only_a_phone_gets_its_notice_by_sms() {
    let server = SmtpServer::start();
    let app = notice_app(&server, |_| {}).await;
    let id = new_id();
    record(
        &app,
        json!({"identity_id": id, "password": "first secret", "phone": "+14155550123"}),
    )
    .await;
    record(
        &app,
        json!({"identity_id": id, "password": "second secret"}),
    )
    .await;
    deliver(&app, &app.notices).await;
    let rows = notices_of(&app.db, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].channel.as_str(), rows[0].status.as_str()),
        ("sms", "sent")
    );
    let message = gateway_message(&app, &rows[0]).await;
    assert_eq!(message["template"], "password_changed", "{message}");
    assert_eq!(message["channel"], "sms", "{message}");
    assert_eq!(message["status"], "sent", "{message}");
}

#[tokio::test]
async fn notices_wait_while_the_gateway_is_down_and_are_delivered_once_it_is_back() {
    let server = SmtpServer::start();
    let hole = closed_port();
    let down = format!("http://127.0.0.1:{}", hole.port);
    let app = notice_app(&server, |s| {
        s.plugin.notices.gateway_url = down.clone();
        s.plugin.notices.gateway_token = Secret::new(API_TOKEN);
    })
    .await;
    let id = new_id();
    let email = format!("{id}@example.com");
    record(
        &app,
        json!({"identity_id": id, "password": "first secret", "email": email}),
    )
    .await;
    // The hook answers at once while the gateway is unreachable.
    record(
        &app,
        json!({"identity_id": id, "password": "second secret"}),
    )
    .await;
    // Tried (by the test's round or the background worker's, which may hold the lease) and kept.
    let mut rows = Vec::new();
    for _ in 0..200 {
        app.notices.deliver_due().await.expect("a round");
        rows = notices_of(&app.db, &id).await;
        if rows.iter().all(|n| n.last_error.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "pending");
    assert!(rows[0].attempts >= 1, "{rows:?}");
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{rows:?}"
    );

    // The gateway comes back on the address the plugin was given.
    let port = hole.port;
    drop(hole);
    let mut settings = app.settings.clone();
    settings.gateway.listen = format!("127.0.0.1:{port}");
    let gateway = reclaim_gateway::Application::build_with_clock(
        &settings,
        app.db.clone(),
        RunMode::ApiOnly,
        app.clock.clone(),
    )
    .await
    .expect("the gateway starts on the address the plugin waits for");
    let delivery = gateway.delivery();
    tokio::spawn(gateway.run_until_stopped(Shutdown::default()));

    // Nothing is taken before its retry is due; after the backoff it goes through.
    app.clock.advance(TimeDelta::seconds(700));
    deliver(&app, &app.notices).await;
    delivery.drain().await.expect("drain");
    let rows = notices_of(&app.db, &id).await;
    assert_eq!(rows[0].status, "sent", "{rows:?}");
    assert_eq!(
        subjects(&mails_to(&server, &email)),
        vec!["Your password was changed".to_string()]
    );
}

/// A second plugin instance on the same database (its own pool), linked to the app's gateway.
async fn another_instance(app: &TestApp) -> NoticeWorker {
    let db = Db::connect(&app.settings.database).expect("connect");
    let plugin =
        reclaim_plugin::Application::build_with_clock(&app.settings, db, app.clock.clone())
            .await
            .expect("another plugin instance");
    plugin.link_gateway(app.gateway.clone(), Secret::new(API_TOKEN));
    plugin.notice_worker()
}

#[tokio::test]
async fn expiry_warnings_go_out_once_per_identity_and_expiry_date_across_two_instances_and_a_restart(
) {
    let server = SmtpServer::start();
    let app = notice_app(&server, |s| {
        // Only `staff` expires (90 days, warned 14 days before); `default` never does.
        s.plugin.policy.profiles.insert(
            "default".into(),
            ProfileSettings {
                expiry: ExpiryMode::OnCompromise,
                ..ProfileSettings::default()
            },
        );
    })
    .await;
    let staff: Vec<String> = (0..3).map(|_| new_id()).collect();
    for id in &staff {
        record(
            &app,
            json!({"identity_id": id, "password": "first secret", "schema_id": "staff",
                "email": format!("{id}@example.com")}),
        )
        .await;
    }
    let ordinary = new_id();
    record(
        &app,
        json!({"identity_id": ordinary, "password": "first secret", "email": format!("{ordinary}@example.com")}),
    )
    .await;

    let (a, b) = (another_instance(&app).await, another_instance(&app).await);
    // Outside the window: nothing.
    assert_eq!(a.scan_expiring().await.expect("scan"), 0);
    // 80 days on: 10 days left, inside the 14-day window. Both instances scan at once.
    app.clock.advance(TimeDelta::days(80));
    let (found_a, found_b) = tokio::join!(a.scan_expiring(), b.scan_expiring());
    assert_eq!(found_a.expect("scan a") + found_b.expect("scan b"), 3);
    // A restarted instance, and later scans before the same expiry date: nothing more.
    let restarted = another_instance(&app).await;
    assert_eq!(restarted.scan_expiring().await.expect("scan"), 0);
    app.clock.advance(TimeDelta::days(2));
    assert_eq!(a.scan_expiring().await.expect("scan"), 0);
    deliver(&app, &b).await;
    for id in &staff {
        let mails = mails_to(&server, &format!("{id}@example.com"));
        assert_eq!(
            subjects(&mails),
            vec!["Your password expires in 10 days".to_string()],
            "{id}"
        );
        assert!(mails[0].data.contains("expires on"), "{}", mails[0].data);
    }
    assert!(mails_to(&server, &format!("{ordinary}@example.com")).is_empty());

    // A new password is a new expiry date: one more warning when it comes near, for that identity only.
    record(
        &app,
        json!({"identity_id": staff[0], "password": "second secret"}),
    )
    .await;
    app.clock.advance(TimeDelta::days(85));
    assert_eq!(restarted.scan_expiring().await.expect("scan"), 1);
    assert_eq!(a.scan_expiring().await.expect("scan"), 0);
    deliver(&app, &a).await;
    let mut seen = subjects(&mails_to(&server, &format!("{}@example.com", staff[0])));
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "Your password expires in 10 days".to_string(),
            "Your password expires in 5 days".to_string(),
            "Your password was changed".to_string(),
        ]
    );
}

#[tokio::test]
async fn erasing_an_identity_erases_its_notices_and_addresses() {
    let server = SmtpServer::start();
    let hole = closed_port();
    let down = format!("http://127.0.0.1:{}", hole.port);
    let app = notice_app(&server, |s| s.plugin.notices.gateway_url = down.clone()).await;
    let id = new_id();
    record(
        &app,
        json!({"identity_id": id, "password": "first secret", "email": format!("{id}@example.com")}),
    )
    .await;
    record(
        &app,
        json!({"identity_id": id, "password": "second secret"}),
    )
    .await;
    assert_eq!(notices_of(&app.db, &id).await.len(), 1);
    let answer = app
        .client
        .delete(app.plugin_url(&format!("/admin/identities/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("erase");
    assert!(answer.status().is_success(), "{}", answer.status());
    assert!(notices_of(&app.db, &id).await.is_empty());
}
