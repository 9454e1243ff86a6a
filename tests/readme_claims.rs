//! Behaviours the README promises that no other test pinned down: `require_staged_verdict`, failing open
//! for registration and recovery, the full body of every Kratos refusal, the warn-profile login's answer, an
//! unknown identity costing one argon2 run, marking an identity not yet seen, import caps at their
//! boundaries, Kratos messages in the user's language, the minimum-age exemptions, Kratos over HTTP Basic,
//! and SMTP with STARTTLS and authentication against the real test server.

use crate::gateway_messages::{enqueue, get_message, spawn_gateway};
use crate::plugin_passwords::fast_kdf;
use crate::support::kratos::{
    self, call_hook, contract, for_identity, pre_persist, registered, send_raw, settings_hook,
    KRATOS_KEY,
};
use crate::support::plugin::{
    changed_days_ago, drop_password_tables, new_id, password_state, post_json,
};
use crate::support::smtp::SmtpServer;
use crate::support::{spawn_app_with, TestApp};
use chrono::{DateTime, Utc};
use reclaim_common::settings::{FailurePolicy, ProviderKind, Settings, SmtpSecurity};
use reclaim_common::Secret;
use reclaim_plugin::policy::ChangeContext;
use reclaim_plugin::{CheckOptions, Identity, IdentityId, Password, Passwords};
use serde_json::{json, Value};

/// The shared Kratos settings with a fast KDF.
fn kratos_settings(settings: &mut Settings) {
    fast_kdf(settings);
    kratos::kratos_settings(settings);
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.plugin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of one sample line of the Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A Kratos interrupt with one message, as `shared/contracts/kratos/webhook-interrupt-response*.json` have it.
fn interrupt(pointer: &str, id: u64, text: &str, context: Option<Value>) -> Value {
    let mut message = json!({"id": id, "text": text, "type": "error"});
    if let Some(context) = context {
        message["context"] = context;
    }
    json!({"messages": [{"instance_ptr": pointer, "messages": [message]}]})
}

/// When a refused change becomes possible, from a Kratos interrupt's first message.
fn available_at(body: &Value) -> DateTime<Utc> {
    body["messages"][0]["messages"][0]["context"]["available_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .expect("available_at")
        .with_timezone(&Utc)
}

/// Every key our interrupt uses is one Kratos's documented interrupt example uses, at the same place.
fn assert_kratos_keys(body: &Value) {
    let reference = contract("webhook-interrupt-response.docs-example.json");
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(body), keys(&reference));
    assert_eq!(keys(&body["messages"][0]), keys(&reference["messages"][0]));
    let ours = keys(&body["messages"][0]["messages"][0]);
    let theirs = keys(&reference["messages"][0]["messages"][0]);
    assert!(ours.iter().all(|k| theirs.contains(k)), "{ours:?}");
}

#[tokio::test]
async fn every_kratos_refusal_has_its_full_body_in_kratos_interrupt_shape() {
    let app = spawn_app_with(kratos_settings).await;

    // 1. A voluntary change within the minimum age: under the password field, with when it becomes possible.
    let young = new_id();
    registered(&app, &young, "default").await;
    let settings = for_identity(
        contract("webhook-settings-password.json"),
        &young,
        "default",
    );
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let available_at = available_at(&answer.body);
    let minutes = (available_at - Utc::now()).num_minutes();
    assert!((58..=60).contains(&minutes), "{minutes}");
    let when = available_at.format("%Y-%m-%d %H:%M UTC");
    assert_eq!(
        answer.body,
        interrupt(
            "#/password",
            4_470_002,
            &format!("Your password was changed recently. You can change it again from {when}."),
            Some(
                json!({"code": "password_too_young", "available_at": answer.body["messages"][0]["messages"][0]["context"]["available_at"]})
            ),
        )
    );
    assert_kratos_keys(&answer.body);

    // 2. A login after max_age on a blocking profile: a global message.
    let staff = new_id();
    registered(&app, &staff, "staff").await;
    changed_days_ago(&app, &staff, 91).await;
    let login = for_identity(contract("webhook-login-password.json"), &staff, "staff");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(
        answer.body,
        interrupt(
            "#/",
            4_470_003,
            "Your password has expired. Set a new one through account recovery.",
            Some(json!({"code": "password_expired"})),
        )
    );
    assert_kratos_keys(&answer.body);

    // 3. A login after a recovery: the change is required, with the reason.
    let recovered = new_id();
    registered(&app, &recovered, "default").await;
    let recovery = for_identity(contract("webhook-recovery.json"), &recovered, "default");
    call_hook(&app, "/hooks/kratos/recovery", &recovery, &new_id())
        .await
        .assert_proceeds();
    let login = for_identity(
        contract("webhook-login-password.json"),
        &recovered,
        "default",
    );
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(
        answer.body,
        interrupt(
            "#/",
            4_470_004,
            "You recovered your account. Choose a new password to continue.",
            Some(json!({"code": "password_change_required", "reason": "recovery"})),
        )
    );
    assert_kratos_keys(&answer.body);

    // 4. A body that cannot be understood: a global message, no context.
    let answer = send_raw(
        &app,
        "/hooks/kratos/login",
        b"[]".to_vec(),
        Some(KRATOS_KEY),
        &new_id(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.body,
        interrupt(
            "#/",
            4_470_010,
            "The request could not be processed. Please try again.",
            None,
        )
    );
    assert_kratos_keys(&answer.body);

    // 5. The database is gone and settings fail closed.
    drop_password_tables(&app).await;
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.body,
        interrupt(
            "#/",
            4_470_011,
            "We cannot check your password right now. Please try again in a few minutes.",
            None,
        )
    );
    assert_kratos_keys(&answer.body);
}

#[tokio::test]
async fn with_require_staged_verdict_a_change_nobody_staged_is_refused() {
    let app = spawn_app_with(|s| {
        kratos_settings(s);
        s.plugin.kratos.require_staged_verdict = true;
        if let Some(default) = s.plugin.policy.profiles.get_mut("default") {
            default.min_age_minutes = 0;
        }
    })
    .await;
    let id = new_id();
    registered(&app, &id, "default").await;
    let settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.body,
        interrupt(
            "#/password",
            4_470_012,
            "The new password could not be checked. Reload the page and try again.",
            None,
        )
    );

    // A change the guard checked passes: tests/kratos_guard.rs shows it with the guard in front.
}

#[tokio::test]
async fn without_require_staged_verdict_an_unstaged_change_passes() {
    let app = spawn_app_with(|s| {
        kratos_settings(s);
        if let Some(default) = s.plugin.policy.profiles.get_mut("default") {
            default.min_age_minutes = 0;
        }
    })
    .await;
    assert!(!app.settings.plugin.kratos.require_staged_verdict);
    let id = new_id();
    registered(&app, &id, "default").await;
    let settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn with_the_database_down_registration_and_recovery_fail_open() {
    let app = spawn_app_with(kratos_settings).await;
    assert_eq!(
        app.settings.plugin.kratos.on_error.registration,
        FailurePolicy::Open
    );
    assert_eq!(
        app.settings.plugin.kratos.on_error.recovery,
        FailurePolicy::Open
    );
    let id = new_id();
    registered(&app, &id, "default").await;
    drop_password_tables(&app).await;
    let other = new_id();
    let pre = pre_persist(&other, "default");
    let post = for_identity(
        contract("webhook-registration-password.json"),
        &other,
        "default",
    );
    let recovery = for_identity(contract("webhook-recovery.json"), &id, "default");
    for (path, ctx) in [
        ("/hooks/kratos/registration", &pre),
        ("/hooks/kratos/registration/after", &post),
        ("/hooks/kratos/recovery", &recovery),
    ] {
        let answer = call_hook(&app, path, ctx, &new_id()).await;
        // Open: the flow goes on (no interrupt); the pre-persist hook still stamps the new password's times.
        answer.assert_proceeds();
        assert!(
            answer.body.get("messages").is_none(),
            "{path}: {}",
            answer.body
        );
    }
}

#[tokio::test]
async fn a_warn_profile_login_after_expiry_passes_with_no_body_and_counts_a_warning() {
    let app = spawn_app_with(kratos_settings).await;
    let id = new_id();
    registered(&app, &id, "contractor").await;
    changed_days_ago(&app, &id, 31).await;
    let login = for_identity(contract("webhook-login-password.json"), &id, "contractor");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    // Kratos shows nothing on an allowed login: 204 and no body is all it gets.
    assert_eq!(answer.status, 204, "{}", answer.body);
    assert_eq!(answer.body, Value::Null);
    let text = metrics(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"reclaim_plugin_decisions_total{code="password_expired",decision="warned"}"#
        ),
        1.0,
        "{text}"
    );
    let state = password_state(&app, &id).await;
    assert_eq!(state["expired"], true, "{state}");
}

#[tokio::test]
async fn a_check_for_an_unknown_identity_costs_exactly_one_argon2_run() {
    let app = spawn_app_with(fast_kdf).await;
    let runs = |text: &str| sample(text, "reclaim_plugin_kdf_duration_seconds_count");
    let before = runs(&metrics(&app).await);
    let (status, body) = post_json(
        &app,
        "/v1/passwords/check",
        json!({"identity_id": "never-seen", "password": "whatever it is"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"allowed": true, "violations": []}));
    assert_eq!(runs(&metrics(&app).await) - before, 1.0);
    // And a known identity with one entry costs the same one run.
    post_json(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": "seen", "password": "first"}),
    )
    .await;
    let before = runs(&metrics(&app).await);
    post_json(
        &app,
        "/v1/passwords/check",
        json!({"identity_id": "seen", "password": "second"}),
    )
    .await;
    assert_eq!(runs(&metrics(&app).await) - before, 1.0);
}

#[tokio::test]
async fn marking_an_identity_not_yet_seen_holds_at_its_first_login() {
    let app = spawn_app_with(kratos_settings).await;
    let id = new_id();
    let (status, state) = post_json(
        &app,
        &format!("/admin/identities/{id}/compromised"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["must_change"], true, "{state}");
    assert_eq!(state["must_change_reason"], "compromised", "{state}");
    let login = for_identity(contract("webhook-login-password.json"), &id, "default");
    let answer = call_hook(&app, "/hooks/kratos/login", &login, &new_id()).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.message_ids(), vec![("#/".to_string(), 4_470_004)]);
    assert_eq!(
        answer.body["messages"][0]["messages"][0]["context"]["reason"],
        "compromised"
    );
}

#[tokio::test]
async fn imports_are_refused_just_above_each_work_cap_and_accepted_at_it() {
    let app = spawn_app_with(fast_kdf).await;
    let passwords = Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new())
        .expect("facade");
    let who = Identity::new(IdentityId::parse("imported").expect("id"));
    let salt = "MDEyMzQ1Njc4OWFiY2RlZg";
    let digest = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    // fast_kdf's m_kib is far below Kratos's 131072, so the cap is 131072 KiB.
    let argon = |m: u32| format!("$argon2id$v=19$m={m},t=1,p=1${salt}${digest}");
    let bcrypt =
        |cost: u32| format!("$2b${cost:02}$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    let pbkdf2 = |rounds: u64| format!("$pbkdf2-sha256$i={rounds},l=32${salt}${digest}");
    let scrypt = |ln: u32, r: u32| format!("$scrypt$ln={ln},r={r},p=1${salt}${digest}");
    for (accepted, refused) in [
        (argon(131_072), argon(131_073)),
        (bcrypt(16), bcrypt(17)),
        (pbkdf2(10_000_000), pbkdf2(10_000_001)),
        // scrypt memory is 128 · r · 2^ln bytes: r = 8, ln = 17 is exactly 131072 KiB.
        (scrypt(17, 8), scrypt(17, 9)),
    ] {
        passwords
            .import_foreign_hash(&who, &accepted, Utc::now())
            .await
            .unwrap_or_else(|e| panic!("{accepted}: {e}"));
        let error = passwords
            .import_foreign_hash(&who, &refused, Utc::now())
            .await
            .expect_err(&refused);
        assert!(
            error.to_string().contains("cap")
                || error.to_string().contains("at most")
                || error.to_string().contains("4..=16"),
            "{refused}: {error}"
        );
    }
    // Above Kratos's default, the cap is plugin.history.argon2.m_kib itself (no argon2 runs here).
    let mut larger = app.settings.clone();
    larger.plugin.history.argon2.m_kib = 262_144;
    let passwords =
        Passwords::new(&larger, app.db.clone(), &prometheus::Registry::new()).expect("facade");
    passwords
        .import_foreign_hash(&who, &argon(262_144), Utc::now())
        .await
        .expect("at the configured m_kib");
    passwords
        .import_foreign_hash(&who, &argon(262_145), Utc::now())
        .await
        .expect_err("above the configured m_kib");
}

#[tokio::test]
async fn email_goes_through_starttls_with_authentication_trusting_the_configured_ca() {
    let mut server = SmtpServer::start_secure("reclaim-mailer", "smtp-test-password");
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.channels.email.provider = ProviderKind::Smtp;
        s.gateway.smtp.host = "127.0.0.1".into();
        s.gateway.smtp.port = server.port;
        s.gateway.smtp.security = SmtpSecurity::Starttls;
        s.gateway.smtp.ca_file = server.ca_file.display().to_string();
        s.gateway.smtp.username = server.user.clone();
        s.gateway.smtp.password = Secret::new(&server.password);
        s.gateway.smtp.from = "Reclaim <no-reply@reclaim.test>".into();
        s.gateway.smtp.timeout_ms = 10_000;
    })
    .await;
    let id = enqueue(
        &app,
        &json!({"channel": "email", "to": "jane@example.com", "template": "recovery_code", "locale": "es", "data": {"code": "271828"}}),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    assert_eq!(server.next_event("ACCEPTED").await, "jane@example.com");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "sent", "{message}");
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].tls, "the message came over TLS");
    assert_eq!(mail[0].auth.as_deref(), Some("reclaim-mailer"));
    assert!(mail[0].data.contains("271828"));
    assert!(
        mail[0]
            .data
            .lines()
            .any(|l| l.eq_ignore_ascii_case("Content-Language: es")),
        "{}",
        mail[0].data
    );
}

#[tokio::test]
async fn without_the_ca_file_the_test_servers_certificate_is_not_trusted() {
    let server = SmtpServer::start_secure("reclaim-mailer", "smtp-test-password");
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.channels.email.provider = ProviderKind::Smtp;
        s.gateway.smtp.host = "127.0.0.1".into();
        s.gateway.smtp.port = server.port;
        s.gateway.smtp.security = SmtpSecurity::Starttls;
        s.gateway.smtp.username = server.user.clone();
        s.gateway.smtp.password = Secret::new(&server.password);
        s.gateway.smtp.from = "Reclaim <no-reply@reclaim.test>".into();
    })
    .await;
    let id = enqueue(
        &app,
        &json!({"channel": "email", "to": "jane@example.com", "template": "recovery_code", "data": {"code": "271828"}}),
    )
    .await;
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "queued", "{message}");
    assert_eq!(message["history"][0]["outcome"], "transient", "{message}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn kratos_messages_follow_the_users_accept_language() {
    let app = spawn_app_with(kratos_settings).await;
    let id = new_id();
    registered(&app, &id, "default").await;
    let mut settings = for_identity(contract("webhook-settings-password.json"), &id, "default");
    settings["request_headers"]["Accept-Language"] = json!(["es-ES,es;q=0.9,en;q=0.5"]);
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let message = &answer.body["messages"][0]["messages"][0];
    let available_at = available_at(&answer.body);
    assert_eq!(
        message["text"],
        format!(
            "Su contraseña se cambió hace poco. Podrá cambiarla de nuevo a partir de {}.",
            available_at.format("%Y-%m-%d %H:%M UTC")
        )
    );
}

#[tokio::test]
async fn a_change_from_a_link_recovery_session_or_a_required_change_skips_the_minimum_age() {
    let app = spawn_app_with(kratos_settings).await;
    // A session made by a recovery link (the older recovery method) is exempt like a code recovery.
    let linked = new_id();
    registered(&app, &linked, "default").await;
    let mut settings = for_identity(
        contract("webhook-settings-password.json"),
        &linked,
        "default",
    );
    settings["session"]["authentication_methods"] = json!([{"aal": "aal1", "completed_at": "2026-07-30T09:58:40.501226Z", "method": "link_recovery"}]);
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // An administrator requires a change: the user may make it at once, from an ordinary session.
    let forced = new_id();
    registered(&app, &forced, "default").await;
    let (status, state) = post_json(
        &app,
        &format!("/admin/identities/{forced}/force-change"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    let settings = for_identity(
        contract("webhook-settings-password.json"),
        &forced,
        "default",
    );
    let answer = settings_hook(&app, &settings).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn kratos_can_authenticate_with_http_basic() {
    let app = spawn_app_with(|s| {
        kratos_settings(s);
        s.plugin.kratos.auth = reclaim_common::settings::KratosAuth::Basic;
        s.plugin.kratos.basic_user = "kratos".into();
        s.plugin.kratos.basic_password = Secret::new("basic-test-password");
    })
    .await;
    let id = new_id();
    let login = crate::support::kratos::render_body(&for_identity(
        contract("webhook-login-password.json"),
        &id,
        "default",
    ));
    let mut statuses = Vec::new();
    for password in ["basic-test-password", "wrong-password"] {
        let response = app
            .client
            .post(app.plugin_url("/hooks/kratos/login"))
            .basic_auth("kratos", Some(password))
            .header("ory-webhook-trigger-id", new_id())
            .json(&login)
            .send()
            .await
            .expect("hook");
        statuses.push(response.status().as_u16());
    }
    // The API key alone no longer opens the door.
    let answer = send_raw(
        &app,
        "/hooks/kratos/login",
        login.to_string().into_bytes(),
        Some(KRATOS_KEY),
        &new_id(),
    )
    .await;
    statuses.push(answer.status);
    assert_eq!(statuses, vec![204, 401, 401]);
}

#[tokio::test]
async fn another_pepper_makes_the_stored_history_unmatchable() {
    let app = spawn_app_with(fast_kdf).await;
    let who = Identity::new(IdentityId::parse("peppered").expect("id"));
    let password = Password::parse("a peppered passphrase".into()).expect("pw");
    let facade = |settings: &Settings| {
        Passwords::new(settings, app.db.clone(), &prometheus::Registry::new()).expect("facade")
    };
    facade(&app.settings)
        .record(&who, &password, None, ChangeContext::Voluntary)
        .await
        .expect("record");
    let options = CheckOptions::default();
    let same = facade(&app.settings).check(&who, &password, &options).await;
    assert!(
        !same.expect("check").allowed,
        "the same pepper finds the reuse"
    );
    let mut other = app.settings.clone();
    other.plugin.history.pepper = Secret::new("y".repeat(32));
    let repeppered = facade(&other).check(&who, &password, &options).await;
    assert!(
        repeppered.expect("check").allowed,
        "another pepper matches nothing"
    );
}
