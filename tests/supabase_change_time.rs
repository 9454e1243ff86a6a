//! The plugin learns when a Supabase user changed their password: Supabase's signed
//! `password_changed_notification` (send-email hook) reaches the gateway, which reports it to the plugin's
//! `POST /v1/identities/{id}/password/changed` (`Idempotency-Key: supabase:<metadata.uuid>`) before queueing
//! the email. The clock restarts at `user.updated_at`, marks are cleared, the password-verification hook
//! decides by the new time; a retry changes nothing more; a plugin that cannot be told means nothing queued
//! (503 with `retry-after` when Supabase should retry, 500 for a wrong token); no Reclaim "password changed"
//! notice for a change Supabase mails itself.

use crate::gateway_messages::{count_messages, gateway_metrics, spawn_gateway};
use crate::logs::Reclaim;
use crate::support::captured_logs::CapturedLogs;
use crate::support::plugin::{drop_password_tables, new_id, password_state, post_json};
use crate::support::ports::closed_port;
use crate::support::smtp::SmtpServer;
use crate::support::supabase::{contract, post, send, send_signed, Signing, HOOK_SECRET};
use crate::support::{TestApp, TestDatabase, ADMIN_TOKEN, API_TOKEN};
use chrono::{DateTime, SubsecRound, Utc};
use reclaim_common::settings::{SelectRule, Settings};
use reclaim_common::Secret;
use serde_json::{json, Value};

const SEND_EMAIL: &str = "/hooks/supabase/send-email";
const VERIFICATION: &str = "/hooks/supabase/password-verification";

/// Both Supabase hooks on, Supabase users under `staff` (passwords expire after 90 days), the gateway linked
/// to the in-process plugin (as `reclaim serve all` does) unless `customize` says otherwise.
async fn supabase_app(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    spawn_gateway(|s| {
        s.gateway.supabase.hook_secrets = vec![Secret::new(HOOK_SECRET)];
        s.gateway.limits.destination.enabled = false;
        s.plugin.supabase.hook_secrets = vec![Secret::new(HOOK_SECRET)];
        s.plugin.policy.select.insert(
            0,
            SelectRule {
                profile: "staff".into(),
                schema_id: "supabase".into(),
                ..SelectRule::default()
            },
        );
        customize(s);
    })
    .await
}

/// The password-changed contract for `user_id`, saved by Supabase at `updated_at`, as a new invocation.
fn notification(user_id: &str, updated_at: DateTime<Utc>) -> Value {
    let mut body = contract("send-email-hook.password_changed_notification.request.json");
    body["user"]["id"] = json!(user_id);
    body["user"]["updated_at"] = json!(updated_at.to_rfc3339());
    body["metadata"]["uuid"] = json!(uuid::Uuid::new_v4().to_string());
    body
}

/// Sends a send-email call signed with [`HOOK_SECRET`] and a fresh `webhook-id`, as each Supabase attempt is.
async fn send_email(app: &TestApp, body: &Value) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).expect("serialise");
    post(
        &app.client,
        &app.gateway_url(SEND_EMAIL),
        &bytes,
        Signing::With(&[HOOK_SECRET]),
    )
    .await
}

/// The verification hook's decision for a correct password of `user_id`.
async fn login_decision(app: &TestApp, user_id: &str) -> Value {
    let mut body = contract("password-verification-hook.request.json");
    body["user_id"] = json!(user_id);
    body["metadata"]["uuid"] = json!(uuid::Uuid::new_v4().to_string());
    let (status, answer) = send_signed(&app.client, &app.plugin_url(VERIFICATION), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["decision"].clone()
}

async fn force_change(app: &TestApp, id: &str) {
    let (status, body) = post_json(
        app,
        &format!("/admin/identities/{id}/force-change"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["must_change"], json!(true), "{body}");
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

/// `POST /v1/identities/{id}/password/changed` with `key` (none: no header) and `token`.
async fn report(
    app: &TestApp,
    id: &str,
    key: Option<&str>,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.plugin_url(&format!("/v1/identities/{id}/password/changed")))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// The send-email hook's count of calls with `outcome` (`reclaim_gateway_supabase_hook_total`).
fn hook_count(metrics: &str, outcome: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("reclaim_gateway_supabase_hook_total")
                && l.contains("hook=\"send-email\"")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

fn metric_line(metrics: &str, outcome: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("reclaim_gateway_supabase_change_reports_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .map(str::to_string)
}

#[tokio::test]
async fn a_password_changed_notification_restarts_the_plugin_clock_once_and_the_email_is_queued_once(
) {
    let (app, _dir) = supabase_app(|_| {}).await;
    let id = new_id();
    // Supabase's first verification starts tracking the user; 91 days on the password has expired.
    assert_eq!(login_decision(&app, &id).await, json!("continue"));
    force_change(&app, &id).await;
    app.clock.advance(chrono::Duration::days(91));
    assert_eq!(login_decision(&app, &id).await, json!("reject"));
    let before = password_state(&app, &id).await;
    assert_eq!(before["expired"], json!(true), "{before}");

    // The user changed the password a second ago; Supabase mails its notification through the gateway.
    let changed_at = (app.clock.now() - chrono::Duration::seconds(1)).trunc_subsecs(6);
    let body = notification(&id, changed_at);
    let response = send_email(&app, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({}));

    let state = password_state(&app, &id).await;
    assert_eq!(time(&state["changed_at"]), changed_at, "{state}");
    assert_eq!(
        time(&state["expires_at"]),
        changed_at + chrono::Duration::days(90),
        "{state}"
    );
    assert_eq!(state["must_change"], json!(false), "{state}");
    assert_eq!(state["expired"], json!(false), "{state}");
    // No plaintext, no history entry.
    assert_eq!(
        state["history_entries"], before["history_entries"],
        "{state}"
    );
    assert_eq!(login_decision(&app, &id).await, json!("continue"));
    assert_eq!(count_messages(&app), 1);

    // An administrator marks the password again; Supabase's retry of the same call (same metadata.uuid,
    // new webhook-id and signature) must not clear that mark nor queue a second email.
    force_change(&app, &id).await;
    let retry = send_email(&app, &body).await;
    assert_eq!(retry.status(), 200);
    let after = password_state(&app, &id).await;
    assert_eq!(after["must_change"], json!(true), "{after}");
    assert_eq!(time(&after["changed_at"]), changed_at, "{after}");
    assert_eq!(count_messages(&app), 1);

    let metrics = gateway_metrics(&app).await;
    assert_eq!(
        metric_line(&metrics, "reported").as_deref(),
        Some("reclaim_gateway_supabase_change_reports_total{outcome=\"reported\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_plugin_unreachable_answers_503_with_retry_after_and_queues_nothing() {
    let closed = closed_port();
    let (app, _dir) = supabase_app(|s| {
        s.gateway.supabase.plugin_url = format!("http://127.0.0.1:{}", closed.port);
        s.gateway.supabase.plugin_token = Secret::new(API_TOKEN);
    })
    .await;
    let id = new_id();
    let response = send_email(&app, &notification(&id, Utc::now())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["http_code"], json!(503), "{body}");
    assert_eq!(count_messages(&app), 0);
    // Only password changes need the plugin: another notification is queued as before.
    let mut other = notification(&id, Utc::now());
    other["email_data"]["email_action_type"] = json!("phone_changed_notification");
    assert_eq!(send_email(&app, &other).await.status(), 200);
    assert_eq!(count_messages(&app), 1);
    let metrics = gateway_metrics(&app).await;
    assert!(
        metric_line(&metrics, "unavailable").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(
        hook_count(&metrics, "plugin_unavailable").as_deref(),
        Some("1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_wrong_plugin_token_answers_500_queues_nothing_and_logs_the_key_not_the_token() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let (app, _dir) = supabase_app(|s| {
        s.gateway.supabase.plugin_token = Secret::new("not-a-plugin-token");
    })
    .await;
    let id = new_id();
    let response = send_email(&app, &notification(&id, Utc::now())).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["http_code"], json!(500), "{body}");
    assert_eq!(count_messages(&app), 0);
    let metrics = gateway_metrics(&app).await;
    assert!(
        metric_line(&metrics, "refused").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(
        hook_count(&metrics, "plugin_refused").as_deref(),
        Some("1"),
        "{metrics}"
    );
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(text.contains("gateway.supabase.plugin_token"), "{text}");
    assert!(!text.contains("not-a-plugin-token"), "{text}");
}

#[tokio::test]
async fn the_plugin_endpoint_needs_a_key_a_token_and_a_valid_time_and_replays_its_first_answer() {
    let (app, _dir) = supabase_app(|_| {}).await;
    let id = new_id();
    let at = (Utc::now() - chrono::Duration::days(2)).trunc_subsecs(6);
    let body = json!({"changed_at": at, "email": "jane@example.com", "phone": "+14155550100"});

    let missing = report(&app, &id, None, Some(API_TOKEN), &body).await;
    assert_eq!(missing.status(), 400);
    let error: Value = missing.json().await.expect("json");
    assert_eq!(error["error"]["field"], json!("Idempotency-Key"), "{error}");

    for (bad, why) in [
        (json!({"changed_at": "yesterday"}), "not a time"),
        (
            json!({"changed_at": Utc::now() + chrono::Duration::hours(1)}),
            "in the future",
        ),
    ] {
        let response = report(&app, &id, Some("k-bad"), Some(API_TOKEN), &bad).await;
        assert_eq!(response.status(), 400, "{why}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(
            error["error"]["field"],
            json!("changed_at"),
            "{why}: {error}"
        );
    }
    let phone = report(
        &app,
        &id,
        Some("k-phone"),
        Some(API_TOKEN),
        &json!({"phone": "0155"}),
    )
    .await;
    assert_eq!(phone.status(), 400);
    let error: Value = phone.json().await.expect("json");
    assert_eq!(error["error"]["field"], json!("phone"), "{error}");

    for token in [None, Some(ADMIN_TOKEN)] {
        let response = report(&app, &id, Some("k1"), token, &body).await;
        assert_eq!(response.status(), 401, "{token:?}");
    }

    let first = report(&app, &id, Some("k1"), Some(API_TOKEN), &body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("json");
    assert_eq!(time(&first["changed_at"]), at, "{first}");
    assert_eq!(first["history_entries"], json!(0), "{first}");

    // A later change, then the first request again: its first answer, and the later change stays.
    let later = Utc::now().trunc_subsecs(6);
    let second = report(
        &app,
        &id,
        Some("k2"),
        Some(API_TOKEN),
        &json!({"changed_at": later}),
    )
    .await;
    assert_eq!(second.status(), 200);
    let replay = report(&app, &id, Some("k1"), Some(API_TOKEN), &body).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(replay.json::<Value>().await.expect("json"), first);
    assert_eq!(time(&password_state(&app, &id).await["changed_at"]), later);

    // The same key with another body is a mistake, refused naming the header.
    let reused = report(&app, &id, Some("k1"), Some(API_TOKEN), &json!({})).await;
    assert_eq!(reused.status(), 422);

    // An older report than the stored change changes nothing but is answered with the state.
    force_change(&app, &id).await;
    let older = report(
        &app,
        &id,
        Some("k3"),
        Some(API_TOKEN),
        &json!({"changed_at": at}),
    )
    .await;
    assert_eq!(older.status(), 200);
    let older: Value = older.json().await.expect("json");
    assert_eq!(time(&older["changed_at"]), later, "{older}");
    assert_eq!(older["must_change"], json!(true), "{older}");
}

#[tokio::test]
async fn a_reported_change_queues_no_reclaim_notice() {
    let (app, _dir) = supabase_app(|s| {
        s.plugin.notices.enabled = true;
        s.plugin.notices.poll_interval_ms = 60_000;
        s.plugin.notices.scan_interval_seconds = 86_400;
    })
    .await;
    let id = new_id();
    let notices_of = |id: String| {
        let db = app.db.clone();
        async move {
            db.run(move |c| reclaim_plugin::notices::of_identity(c, &id))
                .await
                .expect("notices")
        }
    };
    // A first password (no notice: a new user), then Supabase's report of a change.
    let (status, body) = post_json(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": id, "password": "a first password 1", "email": "jane.doe@example.com",
            "changed_at": Utc::now() - chrono::Duration::days(3)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response = send_email(&app, &notification(&id, Utc::now())).await;
    assert_eq!(response.status(), 200);
    assert!(notices_of(id.clone()).await.is_empty());
    // A change Reclaim records itself does get its notice: the check above could fail.
    let (status, body) = post_json(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": id, "password": "a second password 2", "email": "jane.doe@example.com"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(notices_of(id.clone()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_serve_links_the_gateway_to_the_plugin_it_runs() {
    const TOKEN: &str = "serve-all-plugin-token-4Rt8";
    let database = TestDatabase::fresh();
    let smtp = SmtpServer::start();
    // No gateway.supabase.plugin_url nor plugin_token: the first of plugin.api.tokens reaches the plugin.
    let config = crate::support::delivery_binary_config(
        &database.url,
        smtp.port,
        "http://127.0.0.1:9",
        &format!(
            "[plugin.api]\ntokens = [\"{TOKEN}\"]\n\n[gateway.supabase]\nhook_secrets = [\"{HOOK_SECRET}\"]"
        ),
    );
    let reclaim = Reclaim::start(&config).await;
    let client = reqwest::Client::new();
    let id = new_id();
    let changed_at = (Utc::now() - chrono::Duration::seconds(1)).trunc_subsecs(6);
    let bytes = serde_json::to_vec(&notification(&id, changed_at)).expect("json");
    let (status, body) = send(
        &client,
        &format!("{}{SEND_EMAIL}", reclaim.gateway),
        &bytes,
        Signing::With(&[HOOK_SECRET]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state: Value = client
        .get(format!("{}/v1/identities/{id}/password", reclaim.plugin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(time(&state["changed_at"]), changed_at, "{state}");
}

/// Expects Supabase's retry answer: 503, `retry-after: 2`, Supabase's error shape.
async fn asks_to_retry(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["http_code"], json!(503), "{body}");
}

#[tokio::test]
async fn a_plugin_that_fails_or_never_answers_gets_a_503_with_retry_after_and_nothing_queued() {
    // A listener that accepts connections (the kernel's backlog) and never answers: the report times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let (app, _dir) = supabase_app(|s| {
        s.gateway.supabase.plugin_url = format!("http://127.0.0.1:{silent_port}");
        s.gateway.supabase.plugin_token = Secret::new(API_TOKEN);
    })
    .await;
    asks_to_retry(send_email(&app, &notification(&new_id(), Utc::now())).await).await;
    assert_eq!(count_messages(&app), 0);
    drop(silent);

    // The linked in-process plugin answering 500: its tables are gone.
    let (app, _dir) = supabase_app(|_| {}).await;
    drop_password_tables(&app).await;
    asks_to_retry(send_email(&app, &notification(&new_id(), Utc::now())).await).await;
    assert_eq!(count_messages(&app), 0);
    let metrics = gateway_metrics(&app).await;
    assert!(
        metric_line(&metrics, "unavailable").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
}
