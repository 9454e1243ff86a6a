//! The Kratos edge guard between a client and a recording stand-in of Kratos's public API: password
//! submissions in every encoding Kratos accepts are checked and their verdicts used by the real hooks (bodies
//! rendered by our jsonnet template), registration seeds the history, and everything else passes through as
//! it came.

use crate::support::kratos::{self, call_hook, contract, for_identity, settings_hook};
use crate::support::plugin::{check_password, new_id, post_json};
use crate::support::upstream::Upstream;
use crate::support::{spawn_app_with, TestApp};
use reclaim_common::Settings;
use serde_json::{json, Value};

const REUSED: u64 = 4_470_001;

/// Kratos hooks and the guard in front of `upstream`; no minimum age, so a test can change a password twice
/// in a row.
async fn guarded(upstream: &Upstream) -> TestApp {
    guarded_with(upstream, |_| {}).await
}

async fn guarded_with(upstream: &Upstream, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let url = upstream.url.clone();
    spawn_app_with(move |s| {
        kratos::kratos_settings(s);
        if let Some(default) = s.plugin.policy.profiles.get_mut("default") {
            default.min_age_minutes = 0;
        }
        s.plugin.kratos.public_url = url;
        s.plugin.kratos.guard.listen = "127.0.0.1:0".into();
        customize(s);
    })
    .await
}

fn guard_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.guard.as_deref().expect("the guard runs"))
}

fn kratos_identity(id: &str) -> Value {
    json!({
        "id": id,
        "schema_id": "default",
        "traits": {"email": format!("user-{}@example.org", &id[..8])},
        "metadata_public": null,
    })
}

/// An identity with three passwords recorded days ago (older than the default profile's minimum age) and a
/// Kratos session `token` at the stand-in.
async fn identity_with_history(app: &TestApp, upstream: &Upstream) -> (String, String) {
    let id = new_id();
    for (i, password) in ["first pass", "second pass", "third pass"]
        .iter()
        .enumerate()
    {
        let at = chrono::Utc::now() - chrono::Duration::days(30 - i64::try_from(i).unwrap_or(0));
        let (status, body) = post_json(
            app,
            "/v1/passwords/record",
            json!({"identity_id": id, "password": password, "changed_at": at.to_rfc3339()}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let token = format!("token-{id}");
    upstream.add_session(&token, kratos_identity(&id), &["password"]);
    (id, token)
}

/// Kratos's settings hook context for this identity and flow.
fn settings_ctx(id: &str, flow: &str) -> Value {
    let mut ctx = for_identity(contract("webhook-settings-password.json"), id, "default");
    ctx["flow"]["id"] = Value::String(flow.to_string());
    ctx
}

/// Kratos saved the password of `flow`: its settings post-persist hook.
async fn saved(app: &TestApp, id: &str, flow: &str) {
    call_hook(
        app,
        "/hooks/kratos/settings/password/after",
        &settings_ctx(id, flow),
        &new_id(),
    )
    .await
    .assert_proceeds();
}

/// The plugin's `/metrics` text (the guard's metrics are registered there).
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

#[derive(Clone, Copy, Debug)]
enum Format {
    Json,
    Form,
    Multipart,
    Get,
}

/// Submits `password` to the settings flow `flow` through the guard in `format`; answers the body the stand-in
/// received (byte for byte what the client sent).
async fn submit(
    app: &TestApp,
    upstream: &Upstream,
    format: Format,
    token: &str,
    flow: &str,
    password: &str,
) -> Vec<u8> {
    let path = format!("/self-service/settings?flow={flow}");
    let request = match format {
        Format::Json => app
            .client
            .post(guard_url(app, &path))
            .header("content-type", "application/json")
            .body(json!({"method": "password", "password": password}).to_string()),
        Format::Form => app
            .client
            .post(guard_url(app, &path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("csrf_token", "abc")
                    .append_pair("method", "password")
                    .append_pair("password", password)
                    .finish(),
            ),
        Format::Multipart => {
            let boundary = "reclaimboundary7";
            let body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\npassword\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{password}\r\n--{boundary}--\r\n"
            );
            app.client
                .post(guard_url(app, &path))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
        }
        Format::Get => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("flow", flow)
                .append_pair("method", "password")
                .append_pair("password", password)
                .finish();
            app.client
                .get(guard_url(app, &format!("/self-service/settings?{query}")))
        }
    };
    let before = upstream.seen("/self-service/settings").len();
    let sent = request
        .header("x-session-token", token)
        .send()
        .await
        .expect("through the guard");
    assert_eq!(
        sent.status(),
        200,
        "the stand-in answered through the guard"
    );
    let seen = upstream.seen("/self-service/settings");
    assert_eq!(seen.len(), before + 1, "forwarded once");
    let last = seen.last().expect("seen").clone();
    if let Format::Get = format {
        assert!(
            last.path_and_query.contains("method=password"),
            "query forwarded"
        );
    }
    last.body
}

#[tokio::test]
async fn settings_submissions_in_every_format_are_checked_and_the_hooks_follow_the_verdict() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    for format in [Format::Json, Format::Form, Format::Multipart, Format::Get] {
        // One of the last passwords: Kratos's pre-persist hook shows our refusal on the password field.
        let flow = new_id();
        submit(&app, &upstream, format, &token, &flow, "second pass").await;
        let answer = settings_hook(&app, &settings_ctx(&id, &flow)).await;
        assert_eq!(answer.status, 400, "{format:?}: {}", answer.body);
        assert_eq!(
            answer.message_ids(),
            vec![("#/password".to_string(), REUSED)],
            "{format:?}"
        );
        // The refusal was used: the same flow without a new submission has no verdict left.
        let again = settings_hook(&app, &settings_ctx(&id, &flow)).await;
        again.assert_proceeds();

        // A fresh one: allowed, and committed by the post-persist hook once Kratos saved it.
        let flow = new_id();
        let fresh = format!("fresh {format:?} passphrase");
        submit(&app, &upstream, format, &token, &flow, &fresh).await;
        settings_hook(&app, &settings_ctx(&id, &flow))
            .await
            .assert_proceeds();
        saved(&app, &id, &flow).await;
        let check = check_password(&app, &id, &fresh).await;
        assert_eq!(
            check["allowed"], false,
            "{format:?}: the committed password is history: {check}"
        );
    }
}

#[tokio::test]
async fn the_body_reaches_kratos_byte_for_byte() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (_, token) = identity_with_history(&app, &upstream).await;
    let flow = new_id();
    let body = submit(
        &app,
        &upstream,
        Format::Form,
        &token,
        &flow,
        "ünïcode & spaces+plus",
    )
    .await;
    let expected = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf_token", "abc")
        .append_pair("method", "password")
        .append_pair("password", "ünïcode & spaces+plus")
        .finish();
    assert_eq!(body, expected.as_bytes());
}

#[tokio::test]
async fn a_verdict_is_not_usable_for_another_flow_or_identity() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    let (other, _) = identity_with_history(&app, &upstream).await;
    let flow = new_id();
    submit(&app, &upstream, Format::Json, &token, &flow, "second pass").await;
    // Another identity on the same flow id, and the same identity on another flow: no verdict.
    settings_hook(&app, &settings_ctx(&other, &flow))
        .await
        .assert_proceeds();
    settings_hook(&app, &settings_ctx(&id, &new_id()))
        .await
        .assert_proceeds();
    // The verdict is still there for its own flow and identity.
    let answer = settings_hook(&app, &settings_ctx(&id, &flow)).await;
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), REUSED)]
    );

    // An allowed verdict commits only for its identity: the other identity's post-persist hook on that flow
    // records no entry for anyone.
    let flow = new_id();
    submit(
        &app,
        &upstream,
        Format::Json,
        &token,
        &flow,
        "a brand new one",
    )
    .await;
    settings_hook(&app, &settings_ctx(&id, &flow))
        .await
        .assert_proceeds();
    saved(&app, &other, &flow).await;
    assert_eq!(
        check_password(&app, &other, "a brand new one").await["allowed"],
        true
    );
    assert_eq!(
        check_password(&app, &id, "a brand new one").await["allowed"],
        true,
        "not committed yet"
    );
    saved(&app, &id, &flow).await;
    assert_eq!(
        check_password(&app, &id, "a brand new one").await["allowed"],
        false
    );
}

#[tokio::test]
async fn with_require_staged_verdict_a_change_that_bypassed_the_guard_is_refused() {
    let upstream = Upstream::start().await;
    let app = guarded_with(&upstream, |s| s.plugin.kratos.require_staged_verdict = true).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    let answer = settings_hook(&app, &settings_ctx(&id, &new_id())).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), 4_470_012)]
    );
    let flow = new_id();
    submit(
        &app,
        &upstream,
        Format::Multipart,
        &token,
        &flow,
        "checked by the guard",
    )
    .await;
    settings_hook(&app, &settings_ctx(&id, &flow))
        .await
        .assert_proceeds();
}

#[tokio::test]
async fn registration_through_the_guard_commits_the_first_history_entry() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let flow = new_id();
    let sent = app
        .client
        .post(guard_url(&app, &format!("/self-service/registration?flow={flow}")))
        .json(&json!({"method": "password", "password": "my very first", "traits": {"email": "new@example.org"}}))
        .send()
        .await
        .expect("registration");
    assert_eq!(sent.status(), 200);
    // Kratos stores the identity and calls the post-persist hook of the same flow.
    let id = new_id();
    let mut ctx = for_identity(
        contract("webhook-registration-password.json"),
        &id,
        "default",
    );
    ctx["flow"]["id"] = Value::String(flow.clone());
    call_hook(&app, "/hooks/kratos/registration/after", &ctx, &new_id())
        .await
        .assert_proceeds();
    let state = crate::support::plugin::password_state(&app, &id).await;
    assert_eq!(state["history_entries"], 1, "{state}");
    let check = check_password(&app, &id, "my very first").await;
    assert_eq!(check["allowed"], false, "{check}");
    assert_eq!(
        check_password(&app, &id, "something else").await["allowed"],
        true
    );
}

#[tokio::test]
async fn everything_else_passes_through_as_it_came() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    // Redirects are not followed; every Set-Cookie arrives.
    let answer = app
        .client
        .get(guard_url(&app, "/redirect"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/self-service/settings/browser?return_to=x"
    );
    let cookies: Vec<_> = answer.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2);

    // A large upload and download stream through unchanged.
    let upload: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let answer = app
        .client
        .put(guard_url(&app, "/admin-like/path?x=1&y=%20z"))
        .header("cookie", "ory_kratos_session=abc; other=1")
        .header("x-session-token", "tok")
        .header("connection", "close, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.0.0.1")
        .header("accept-language", "es")
        .body(upload.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-upstream"], "kratos-stand-in");
    let seen = upstream.seen("/admin-like/path").pop().expect("forwarded");
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path_and_query, "/admin-like/path?x=1&y=%20z");
    assert_eq!(seen.body, upload);
    assert_eq!(
        seen.header("cookie"),
        Some("ory_kratos_session=abc; other=1")
    );
    assert_eq!(seen.header("x-session-token"), Some("tok"));
    assert_eq!(seen.header("accept-language"), Some("es"));
    assert_eq!(
        seen.header("x-hop"),
        None,
        "named by Connection: hop-by-hop"
    );
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let guard_host = app
        .guard
        .as_deref()
        .expect("guard")
        .trim_start_matches("http://")
        .to_string();
    assert_eq!(seen.header("x-forwarded-host"), Some(guard_host.as_str()));

    let download = app
        .client
        .get(guard_url(&app, "/large"))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert_eq!(download.len(), 64 * 64 * 1024);
    assert!(download
        .chunks(64 * 1024)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));

    // Kratos down (nothing listens at public_url): 502 from the guard, counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nobody = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let down = spawn_app_with(move |s| {
        kratos::kratos_settings(s);
        s.plugin.kratos.public_url = nobody;
        s.plugin.kratos.guard.listen = "127.0.0.1:0".into();
    })
    .await;
    let answer = down
        .client
        .get(guard_url(&down, "/self-service/login/browser"))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 502);
    let metrics = metrics(&down).await;
    assert!(
        metrics.contains(
            r#"reclaim_guard_requests_total{outcome="kratos_unreachable",route="other"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("reclaim_guard_proxy_seconds_bucket"));
}

#[tokio::test]
async fn refusals_are_counted_by_code() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (_, token) = identity_with_history(&app, &upstream).await;
    submit(
        &app,
        &upstream,
        Format::Json,
        &token,
        &new_id(),
        "third pass",
    )
    .await;
    submit(
        &app,
        &upstream,
        Format::Json,
        &token,
        &new_id(),
        "never used before",
    )
    .await;
    // No session: Kratos will refuse; the guard passes it on unchecked.
    submit(
        &app,
        &upstream,
        Format::Json,
        "no-such-session",
        &new_id(),
        "whatever",
    )
    .await;
    let metrics = metrics(&app).await;
    for line in [
        r#"reclaim_guard_verdicts_total{code="password_reused"} 1"#,
        r#"reclaim_guard_verdicts_total{code="allowed"} 1"#,
        r#"reclaim_guard_requests_total{outcome="refused",route="settings"} 1"#,
        r#"reclaim_guard_requests_total{outcome="allowed",route="settings"} 1"#,
        r#"reclaim_guard_requests_total{outcome="unchecked",route="settings"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// Holds the plugin's only KDF slot until the returned sender is dropped or sent to.
async fn occupy_the_kdf(
    app: &TestApp,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (taken, slot_taken) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let kdf = app.kdf.clone();
    let holder = tokio::spawn(async move {
        let _ = kdf
            .run(move || {
                let _ = taken.send(());
                let _ = released.recv();
            })
            .await;
    });
    slot_taken
        .await
        .expect("the holding job runs in the only slot");
    (release, holder)
}

#[tokio::test]
async fn when_the_password_cannot_be_checked_on_error_settings_decides() {
    for (policy, forwarded) in [("closed", false), ("open", true)] {
        let upstream = Upstream::start().await;
        let app = guarded_with(&upstream, |s| {
            s.plugin.history.max_concurrent_kdf = 1;
            s.plugin.history.max_queue_ms = 50;
            s.plugin.kratos.on_error.settings = if policy == "open" {
                reclaim_common::settings::FailurePolicy::Open
            } else {
                reclaim_common::settings::FailurePolicy::Closed
            };
        })
        .await;
        let (_, token) = identity_with_history(&app, &upstream).await;
        let (release, holder) = occupy_the_kdf(&app).await;
        let answer = app
            .client
            .post(guard_url(
                &app,
                &format!("/self-service/settings?flow={}", new_id()),
            ))
            .header("x-session-token", &token)
            .json(&json!({"method": "password", "password": "cannot be checked now"}))
            .send()
            .await
            .expect("answer");
        let _ = release.send(());
        holder.await.expect("join");
        let reached = !upstream.seen("/self-service/settings").is_empty();
        assert_eq!(reached, forwarded, "{policy}");
        if forwarded {
            assert_eq!(answer.status(), 200, "{policy}");
        } else {
            assert_eq!(answer.status(), 503, "{policy}");
            let body: Value = answer.json().await.expect("json");
            assert_eq!(body["error"]["code"], 503, "{body}");
        }
    }
}

#[tokio::test]
async fn first_contact_through_the_guard_imports_the_current_kratos_hash() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
    let hash = argon2::Argon2::default()
        .hash_password(b"the kratos password", &salt)
        .expect("hash")
        .to_string();
    let admin = kratos::kratos_admin_stand_in(&hash).await;
    let upstream = Upstream::start().await;
    let admin_url = admin.url.clone();
    let app = guarded_with(&upstream, move |s| s.plugin.kratos.admin_url = admin_url).await;
    // Reclaim never saw this identity: no history, no state.
    let id = new_id();
    let token = format!("token-{id}");
    upstream.add_session(&token, kratos_identity(&id), &["password"]);
    let flow = new_id();
    submit(
        &app,
        &upstream,
        Format::Json,
        &token,
        &flow,
        "the kratos password",
    )
    .await;
    let answer = settings_hook(&app, &settings_ctx(&id, &flow)).await;
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), REUSED)],
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_submission_larger_than_the_limit_passes_unchecked_and_whole() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    let flow = new_id();
    let padding = "x".repeat(100 * 1024);
    let body =
        json!({"method": "password", "password": "second pass", "padding": padding}).to_string();
    let answer = app
        .client
        .post(guard_url(
            &app,
            &format!("/self-service/settings?flow={flow}"),
        ))
        .header("x-session-token", &token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    let seen = upstream
        .seen("/self-service/settings")
        .pop()
        .expect("forwarded");
    assert_eq!(seen.body, body.as_bytes());
    // No verdict: the hook decides without one (require_staged_verdict is off here).
    settings_hook(&app, &settings_ctx(&id, &flow))
        .await
        .assert_proceeds();
}

#[tokio::test]
async fn reclaim_serve_guard_runs_the_guard_alone_with_its_own_health_and_metrics() {
    use std::io::BufRead;
    let upstream = Upstream::start().await;
    let database = crate::support::TestDatabase::fresh();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("reclaim.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[plugin.kratos]\npublic_url = \"{}\"\n[plugin.kratos.guard]\n\
             listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n",
            database.url, upstream.url
        ),
    )
    .expect("config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reclaim"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let mut child = command
        .arg("--config")
        .arg(&config)
        .args(["serve", "guard"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start reclaim serve guard");
    // The log goes to stderr.
    let stdout = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains("Kratos edge guard listening on") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("reclaim serve guard did not say where it listens: {e}");
            }
        }
    };
    let number_after = |marker: &str| -> u16 {
        let rest = &line[line.find(marker).expect("marker") + marker.len()..];
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("port")
    };
    let guard = number_after("http://127.0.0.1:");
    let ops = number_after("health and metrics on port ");
    let client = reqwest::Client::new();
    let through = client
        .get(format!(
            "http://127.0.0.1:{guard}/self-service/login/browser?x=1"
        ))
        .send()
        .await
        .expect("through the guard");
    assert_eq!(through.status(), 200);
    assert_eq!(upstream.seen("/self-service/login/browser").len(), 1);
    let ready = client
        .get(format!("http://127.0.0.1:{ops}/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("http://127.0.0.1:{ops}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"reclaim_guard_requests_total{outcome="passed",route="other"} 1"#),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_paused_settings_submission_completed_ten_minutes_later_uses_its_verdict() {
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    // Kratos pauses a submission whose privileged session is too old, sends the user to log in again and
    // completes the change later, without the password: the hooks come with the same flow id.
    let refused = new_id();
    submit(
        &app,
        &upstream,
        Format::Form,
        &token,
        &refused,
        "first pass",
    )
    .await;
    let allowed = new_id();
    submit(
        &app,
        &upstream,
        Format::Form,
        &token,
        &allowed,
        "worth the wait",
    )
    .await;
    app.clock.advance(chrono::Duration::minutes(10));
    let answer = settings_hook(&app, &settings_ctx(&id, &refused)).await;
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), REUSED)]
    );
    settings_hook(&app, &settings_ctx(&id, &allowed))
        .await
        .assert_proceeds();
    saved(&app, &id, &allowed).await;
    assert_eq!(
        check_password(&app, &id, "worth the wait").await["allowed"],
        false
    );
}

#[tokio::test]
async fn a_verdict_older_than_its_ttl_is_gone() {
    let upstream = Upstream::start().await;
    let app = guarded_with(&upstream, |s| s.plugin.kratos.require_staged_verdict = true).await;
    let (id, token) = identity_with_history(&app, &upstream).await;
    let flow = new_id();
    submit(
        &app,
        &upstream,
        Format::Json,
        &token,
        &flow,
        "too late to use",
    )
    .await;
    let ttl = i64::try_from(app.settings.plugin.kratos.guard.verdict_ttl_seconds).expect("ttl");
    app.clock.advance(chrono::Duration::seconds(ttl + 1));
    let answer = settings_hook(&app, &settings_ctx(&id, &flow)).await;
    assert_eq!(
        answer.message_ids(),
        vec![("#/password".to_string(), 4_470_012)]
    );
}

#[tokio::test]
async fn a_failing_whoami_is_a_check_that_cannot_be_made() {
    use crate::support::upstream::WHOAMI_FAILS;
    let upstream = Upstream::start().await;
    let app = guarded(&upstream).await;
    let answer = app
        .client
        .post(guard_url(
            &app,
            &format!("/self-service/settings?flow={}", new_id()),
        ))
        .header("x-session-token", WHOAMI_FAILS)
        .json(&json!({"method": "password", "password": "whoever I am"}))
        .send()
        .await
        .expect("answer");
    // on_error.settings is closed by default: nothing reaches Kratos.
    assert_eq!(answer.status(), 503);
    assert!(upstream.seen("/self-service/settings").is_empty());
}
