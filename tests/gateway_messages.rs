//! Gateway: enqueueing templated messages, validation, idempotency, delivery through the `file` provider,
//! expiry, workers and metrics. Shared helpers for the other gateway test files live here too.

use crate::support::{spawn_app_in, TestApp, API_TOKEN};
use chrono::{DateTime, Duration, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use reclaim_common::settings::{ProviderKind, Settings};
use reclaim_gateway::schema::gateway_messages;
use reclaim_gateway::RunMode;
use serde_json::{json, Value};
use std::path::Path;

/// A gateway without background workers (tests drain the outbox themselves), every channel on the `file`
/// provider in a fresh folder.
pub async fn spawn_gateway(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    spawn_gateway_in(RunMode::ApiOnly, customize).await
}

pub async fn spawn_gateway_in(
    mode: RunMode,
    customize: impl FnOnce(&mut Settings),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_string_lossy().into_owned();
    let app = spawn_app_in(mode, |settings| {
        settings.gateway.file.dir = path;
        for channel in [
            &mut settings.gateway.channels.email,
            &mut settings.gateway.channels.sms,
            &mut settings.gateway.channels.voice,
        ] {
            channel.provider = ProviderKind::File;
        }
        customize(settings);
    })
    .await;
    (app, dir)
}

pub async fn post_message(app: &TestApp, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.gateway_url("/v1/messages"))
        .bearer_auth(API_TOKEN)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

/// Enqueues and returns the new message's id.
pub async fn enqueue(app: &TestApp, body: &Value) -> String {
    let response = post_message(app, body, None).await;
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.expect("json");
    view["id"].as_str().expect("id").to_string()
}

pub async fn get_message(app: &TestApp, id: &str) -> Value {
    let response = app
        .client
        .get(app.gateway_url(&format!("/v1/messages/{id}")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// What the `file` provider wrote.
pub fn delivered(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("messages.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

pub fn count_messages(app: &TestApp) -> i64 {
    let mut conn = app.db.get().expect("conn");
    gateway_messages::table
        .count()
        .get_result(&mut *conn)
        .expect("count")
}

/// The gateway's `/metrics` text.
pub async fn gateway_metrics(app: &TestApp) -> String {
    app.client
        .get(app.gateway_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

pub fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

#[tokio::test]
async fn a_queued_sms_is_delivered_by_the_file_provider_and_shows_its_attempt() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "482913"}}),
    )
    .await;
    let queued = get_message(&app, &id).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(
        queued["to"], "+141******00",
        "addresses are masked in answers"
    );

    assert_eq!(app.delivery.drain().await.expect("drain"), 1);

    let sent = get_message(&app, &id).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["provider"], "file");
    assert_eq!(sent["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["history"][0]["outcome"], "sent");
    assert_eq!(sent["history"][0]["channel"], "sms");
    let lines = delivered(dir.path());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message_id"], id);
    assert_eq!(lines[0]["to"], "+14155550100");
    assert_eq!(
        lines[0]["content"]["body"],
        "Your recovery code is 482913. Do not share it with anyone."
    );
    assert_eq!(
        app.delivery.drain().await.expect("drain"),
        0,
        "nothing is sent twice"
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_queued() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let cases = [
        (
            json!({"channel": "sms", "to": "4155550100", "template": "recovery_code", "data": {"code": "1"}}),
            "to",
        ),
        (
            json!({"channel": "sms", "to": "+999123", "template": "recovery_code", "data": {"code": "1"}}),
            "to",
        ),
        (
            json!({"channel": "email", "to": "Jane <jane@example.com>", "template": "recovery_code", "data": {"code": "1"}}),
            "to",
        ),
        (
            json!({"channel": "email", "to": "jane@", "template": "recovery_code", "data": {"code": "1"}}),
            "to",
        ),
        (
            json!({"channel": "fax", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
            "channel",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "no_such", "data": {}}),
            "template",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {}}),
            "data.code",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "locale": "e n", "data": {"code": "1"}}),
            "locale",
        ),
        (
            json!({"channel": "voice", "to": "+14155550100", "template": "recovery_link", "data": {"link": "https://x.test"}}),
            "channel",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}, "expires_in": 0}),
            "expires_in",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}, "colour": "red"}),
            "colour",
        ),
        (
            json!({"channel": "email", "to": "jane@example.com", "template": "recovery_code", "data": {"code": "1"}, "fallback": [{"channel": "email"}]}),
            "fallback[0].to",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_link", "data": {"link": "https://x.test"}, "fallback": [{"channel": "voice"}]}),
            "fallback[0].channel",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}, "fallback": [{"channel": "voice", "to": "+14155550101"}]}),
            "fallback[0].to",
        ),
        (
            json!({"channel": "email", "to": "jane@example.com", "template": "recovery_code", "data": {"code": "1"}, "fallback": [{"channel": "sms", "to": "+14155550101"}]}),
            "fallback[0].to",
        ),
        (
            json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}, "fallback": [{"channel": "voice"}, {"channel": "sms"}, {"channel": "voice"}, {"channel": "sms"}]}),
            "fallback",
        ),
    ];
    for (body, field) in cases {
        let response = post_message(&app, &body, None).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["field"], field, "{body} -> {error}");
    }
    let broken = app
        .client
        .post(app.gateway_url("/v1/messages"))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(broken.status(), 400);
    let oversized = app
        .client
        .post(app.gateway_url("/v1/messages"))
        .bearer_auth(API_TOKEN)
        .json(
            &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
            "data": {"code": "1", "pad": "x".repeat(2_000_000)}}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(oversized.status(), 413);
    assert_eq!(count_messages(&app), 0);
}

#[tokio::test]
async fn the_messages_api_requires_a_bearer_token() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let body = json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}});
    for token in [None, Some("wrong")] {
        let mut request = app.client.post(app.gateway_url("/v1/messages")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401);
    }
    let get = app
        .client
        .get(app.gateway_url(&format!("/v1/messages/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .expect("request");
    assert_eq!(get.status(), 401);
    assert_eq!(count_messages(&app), 0);
}

#[tokio::test]
async fn the_same_idempotency_key_gets_the_first_answer_and_queues_once() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let body = json!({"channel": "email", "to": "jane@example.com", "template": "verification_code", "data": {"code": "1234"}});
    let first = post_message(&app, &body, Some("k-1")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let again = post_message(&app, &body, Some("k-1")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(count_messages(&app), 1);

    let other = json!({"channel": "email", "to": "joe@example.com", "template": "verification_code", "data": {"code": "1234"}});
    let reused = post_message(&app, &other, Some("k-1")).await;
    assert_eq!(reused.status(), 422);
    let error: Value = reused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    assert_eq!(count_messages(&app), 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_queue_one_message() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let body = json!({"channel": "sms", "to": "+14155550100", "template": "verification_code", "data": {"code": "1234"}});
    let answers = futures_join(&app, &body).await;
    let ids: std::collections::HashSet<String> = answers.into_iter().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count_messages(&app), 1);
}

/// Concurrent requests share transactions (`gateway/src/intake.rs`): each still gets its own answer, equal to
/// what a later GET reads back, a shared key still queues one message, and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_requests_is_stored_whole_each_with_its_own_answer() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    const REQUESTS: usize = 96;
    let sends = (0..REQUESTS).map(|i| {
        let client = app.client.clone();
        let url = app.gateway_url("/v1/messages");
        async move {
            // A third without a key, a third with a key of its own, a third sharing one key.
            let key = match i % 3 {
                0 => None,
                1 => Some(format!("own-{i}")),
                _ => Some("shared".to_string()),
            };
            let code = if i % 3 == 2 { 7 } else { i };
            let mut request = client.post(url).bearer_auth(API_TOKEN).json(&json!({
                "channel": "sms", "to": "+14155550100", "template": "verification_code",
                "data": {"code": format!("{code:06}")}
            }));
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), 202);
            let view: Value = response.json().await.expect("json");
            (i % 3 == 2, view)
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let shared: std::collections::HashSet<String> = answers
        .iter()
        .filter(|(shared, _)| *shared)
        .map(|(_, view)| view["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "one message for the shared key: {shared:?}"
    );
    let own: std::collections::HashSet<String> = answers
        .iter()
        .filter(|(shared, _)| !*shared)
        .map(|(_, view)| view["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        own.len(),
        REQUESTS / 3 * 2,
        "every other request has its own message"
    );
    assert!(own.is_disjoint(&shared));
    assert_eq!(count_messages(&app), (REQUESTS / 3 * 2 + 1) as i64);
    for (_, answer) in answers.iter().step_by(7) {
        let read_back = get_message(&app, answer["id"].as_str().expect("id")).await;
        assert_eq!(&read_back, answer, "the 202 answer is the stored message");
    }
}

/// A queued message wakes this process's idle workers: with a poll interval of a minute, a message and a
/// verification's code are still sent at once, not at the next poll.
#[tokio::test]
async fn queueing_wakes_idle_workers_instead_of_waiting_for_their_poll() {
    let (app, dir) = idle_gateway(|_| {}).await;
    enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "verification_code", "data": {"code": "1"}}),
    )
    .await;
    let response = app
        .client
        .post(app.gateway_url("/v1/verifications"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"channel": "sms", "to": "+14155550101", "purpose": "recovery"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    sent_before_the_next_poll(dir.path(), 2).await;
}

/// A gateway whose workers poll once a minute, for the wake-up tests; `customize` as for
/// [`spawn_gateway`]. Returns once the workers' first look at the empty outbox is over and they are idle.
pub async fn idle_gateway(customize: impl FnOnce(&mut Settings)) -> (TestApp, tempfile::TempDir) {
    let (app, dir) = spawn_gateway_in(RunMode::All, |s| {
        customize(s);
        s.gateway.worker.poll_interval_ms = 60_000;
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    (app, dir)
}

/// Waits until the `file` provider in `dir` wrote `count` messages, far sooner than the minute's poll of
/// [`idle_gateway`] (20 s: generous for a loaded machine).
pub async fn sent_before_the_next_poll(dir: &Path, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while delivered(dir).len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers were not woken: {} of {count} sent",
            delivered(dir).len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A batch whose transaction fails is stored again message by message: the one bad message is refused, its
/// neighbours are stored.
#[tokio::test]
async fn one_bad_message_in_a_batch_does_not_refuse_its_neighbours() {
    use reclaim_gateway::intake::{Intake, Stored, Submission};
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let taken = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "verification_code", "data": {"code": "1"}}),
    )
    .await;
    let now = Utc::now().naive_utc();
    let message =
        |id: &str| crate::support::messages::queued_sms(id, "verification_code", "2", now);
    let intake = Intake::new(app.db.clone(), Default::default());
    // On this single-threaded runtime every submission is queued before the writer first runs, so the
    // ten of them meet in one batch, and the reused id fails that batch's transaction.
    let ids: Vec<String> = (0..10)
        .map(|i| {
            if i == 4 {
                taken.clone()
            } else {
                uuid::Uuid::now_v7().to_string()
            }
        })
        .collect();
    let results = futures_util::future::join_all(ids.iter().map(|id| {
        intake.submit(Submission {
            message: message(id),
            once: None,
            answer: String::new(),
        })
    }))
    .await;
    for (i, result) in results.iter().enumerate() {
        if i == 4 {
            assert!(result.is_err(), "the message with a taken id is refused");
        } else {
            assert!(matches!(result, Ok(Stored::New)), "{i}: {result:?}");
        }
    }
    assert_eq!(count_messages(&app), 10);
}

async fn futures_join(app: &TestApp, body: &Value) -> Vec<String> {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = app.gateway_url("/v1/messages");
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(API_TOKEN)
                .header("Idempotency-Key", "same")
                .json(&body)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 202);
            let view: Value = response.json().await.expect("json");
            view["id"].as_str().expect("id").to_string()
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await.expect("join"));
    }
    ids
}

#[tokio::test]
async fn an_expired_message_is_never_sent() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}, "expires_in": 60}),
    )
    .await;
    app.delivery
        .drain_at(Utc::now() + Duration::seconds(120))
        .await
        .expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "expired", "{message}");
    assert_eq!(message["history"].as_array().map(Vec::len), Some(0));
    assert!(delivered(dir.path()).is_empty());
}

#[tokio::test]
async fn a_message_its_workers_keep_dying_on_fails_instead_of_looping() {
    let (app, dir) = spawn_gateway(|s| s.gateway.retry.max_attempts = 3).await;
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    // As after three claims whose workers were killed before recording anything: still `sending`, the
    // last lease run out.
    {
        use reclaim_gateway::schema::gateway_messages::dsl as m;
        let mut conn = app.db.get().expect("conn");
        diesel::update(m::gateway_messages.find(&id))
            .set((
                m::status.eq("sending"),
                m::attempts.eq(3),
                m::unrecorded_claims.eq(3),
                m::lease_owner.eq("dead-worker"),
                m::lease_until.eq((Utc::now() - Duration::seconds(5)).naive_utc()),
            ))
            .execute(&mut *conn)
            .expect("update");
    }
    app.delivery.drain().await.expect("drain");
    let message = get_message(&app, &id).await;
    assert_eq!(message["status"], "failed", "{message}");
    assert!(delivered(dir.path()).is_empty());
}

#[tokio::test]
async fn locales_fall_back_to_the_language_then_to_english() {
    let (app, dir) = spawn_gateway(|_| {}).await;
    for locale in ["es-MX", "de"] {
        enqueue(
            &app,
            &json!({"channel": "email", "to": "jane@example.com", "template": "verification_code", "locale": locale, "data": {"code": "77"}}),
        )
        .await;
    }
    app.delivery.drain().await.expect("drain");
    let subjects: Vec<Value> = delivered(dir.path())
        .iter()
        .map(|l| l["content"]["subject"].clone())
        .collect();
    assert!(
        subjects.contains(&json!("Tu código de verificación")),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&json!("Your verification code")),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn background_workers_deliver_without_help() {
    let (app, dir) =
        spawn_gateway_in(RunMode::All, |s| s.gateway.worker.poll_interval_ms = 20).await;
    let id = enqueue(
        &app,
        &json!({"channel": "voice", "to": "+14155550100", "template": "verification_code", "data": {"code": "905"}}),
    )
    .await;
    // A bounded wait for the delivery; the limit is far above what it takes and only turns a hang into a
    // failure on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if get_message(&app, &id).await["status"] == "sent" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered within 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let lines = delivered(dir.path());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["content"]["digits"], "905");
}

#[tokio::test]
async fn a_worker_only_gateway_serves_health_and_metrics_but_no_api() {
    let (app, _dir) = spawn_gateway_in(RunMode::WorkerOnly, |_| {}).await;
    let body = json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}});
    assert_eq!(post_message(&app, &body, None).await.status(), 404);
    for path in ["/health/ready", "/metrics"] {
        let response = app
            .client
            .get(app.gateway_url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_attempts_and_show_the_outbox() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    enqueue(
        &app,
        &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code", "data": {"code": "1"}}),
    )
    .await;
    let scrape = || async {
        app.client
            .get(app.gateway_url("/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    };
    let before = scrape().await;
    assert!(
        before.contains(r#"reclaim_gateway_outbox{status="queued"} 1"#),
        "{before}"
    );
    assert!(
        before.contains("reclaim_gateway_oldest_due_message_age_seconds"),
        "{before}"
    );
    app.delivery.drain().await.expect("drain");
    let after = scrape().await;
    assert!(
        after.contains(r#"reclaim_gateway_outbox{status="queued"} 0"#),
        "{after}"
    );
    assert!(
        after.contains(r#"reclaim_gateway_outbox{status="sent"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(
            r#"reclaim_gateway_messages_total{channel="sms",outcome="sent",provider="file"} 1"#
        ),
        "{after}"
    );
    assert!(
        after.contains(r#"reclaim_gateway_attempt_duration_seconds_count{provider="file"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(r#"reclaim_gateway_oldest_due_message_age_seconds 0"#),
        "{after}"
    );
}

#[tokio::test]
async fn a_broken_template_stops_the_gateway_naming_the_file() {
    let templates = tempfile::tempdir().expect("dir");
    std::fs::create_dir(templates.path().join("greeting")).expect("mkdir");
    std::fs::write(
        templates.path().join("greeting/en.toml"),
        "sms = \"Hi {{ name\"\n",
    )
    .expect("write");
    let database = crate::support::TestDatabase::fresh();
    let mut settings = crate::support::test_settings(&database.url);
    settings.gateway.templates_dir = templates.path().to_string_lossy().into_owned();
    let db = reclaim_common::Db::connect(&settings.database).expect("connect");
    let error = reclaim_gateway::Application::build(&settings, db, RunMode::All)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("greeting/en.toml"), "{error}");
}

#[tokio::test]
async fn the_openapi_document_describes_the_messages_api() {
    let (app, _dir) = spawn_gateway(|_| {}).await;
    let doc: Value = app
        .client
        .get(app.gateway_url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(doc["paths"]["/v1/messages"]["post"].is_object(), "{doc}");
    assert!(
        doc["paths"]["/v1/messages/{id}"]["get"].is_object(),
        "{doc}"
    );
    assert!(
        doc["components"]["schemas"]["MessageRequest"].is_object(),
        "{doc}"
    );
}
