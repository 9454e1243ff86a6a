//! The generic plugin API over HTTP: check, record (idempotent), state, admin actions, auth, bad input,
//! body limits, saturation (503 + Retry-After), metrics and OpenAPI.

use crate::plugin_passwords::fast_kdf;
use crate::support::plugin::post;
use crate::support::{spawn_app, spawn_app_with, TestApp, ADMIN_TOKEN, API_TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn fast_app() -> TestApp {
    spawn_app_with(fast_kdf).await
}

async fn record(app: &TestApp, id: &str, password: &str) -> Value {
    let response = post(
        app,
        "/v1/passwords/record",
        json!({"identity_id": id, "password": password}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

async fn check(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let response = post(app, "/v1/passwords/check", body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_reused_password_is_refused_with_a_localized_message() {
    let app = fast_app().await;
    record(&app, "u1", "first secret").await;
    let response = app
        .client
        .post(app.plugin_url("/v1/passwords/check"))
        .bearer_auth(API_TOKEN)
        .header("Accept-Language", "es-ES, en;q=0.5")
        .json(&json!({"identity_id": "u1", "password": "first secret"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["allowed"], false);
    assert_eq!(body["violations"][0]["code"], "password_reused");
    assert_eq!(body["violations"][0]["history_depth"], 5);
    let message = body["violations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.starts_with("No puede reutilizar"), "{message}");

    let (status, english) = check(
        &app,
        json!({"identity_id": "u1", "password": "first secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(english["violations"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("You cannot reuse"));
    let (_, fresh) = check(
        &app,
        json!({"identity_id": "u1", "password": "second secret"}),
    )
    .await;
    assert_eq!(fresh, json!({"allowed": true, "violations": []}));
}

#[tokio::test]
async fn an_unknown_identity_is_allowed_with_no_history() {
    let app = fast_app().await;
    let (status, body) = check(&app, json!({"identity_id": "stranger", "password": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"allowed": true, "violations": []}));
}

#[tokio::test]
async fn bad_input_gets_a_400_naming_the_field() {
    let app = fast_app().await;
    let cases = [
        (json!({"identity_id": "u", "password": ""}), "password"),
        (
            json!({"identity_id": "u", "password": "x".repeat(1025)}),
            "password",
        ),
        (json!({"password": "x"}), "identity_id"),
        (json!({"identity_id": "", "password": "x"}), "identity_id"),
        (json!({"identity_id": "u", "password": 5}), "password"),
        (
            json!({"identity_id": "u", "password": "x", "profile": "nope"}),
            "profile",
        ),
        (
            json!({"identity_id": "u", "password": "x", "context": "sideways"}),
            "context",
        ),
        (
            json!({"identity_id": "u", "password": "x", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = check(&app, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    for raw in [
        b"{not json".to_vec(),
        br#"{"identity_id":"u","password":"\ud800"}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
    ] {
        let response = app
            .client
            .post(app.plugin_url("/v1/passwords/check"))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let answer: Value = response.json().await.expect("json");
        assert!(answer["error"]["field"].is_string(), "{answer}");
    }
    let response = post(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": "u", "password": "ok", "changed_at": "yesterday"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["field"], "changed_at");
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let app = fast_app().await;
    let paths = [
        ("POST", "/v1/passwords/check"),
        ("POST", "/v1/passwords/record"),
        ("GET", "/v1/identities/u/password"),
        ("POST", "/admin/identities/u/force-change"),
        ("POST", "/admin/identities/u/compromised"),
        ("DELETE", "/admin/identities/u"),
    ];
    for (method, path) in paths {
        for token in [None, Some("wrong")] {
            let mut request = app
                .client
                .request(method.parse().expect("method"), app.plugin_url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .json(&json!({"identity_id": "u", "password": "x"}))
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            let answer: Value = response.json().await.expect("json");
            assert_eq!(answer["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_on_check() {
    let app = spawn_app_with(|s| {
        fast_kdf(s);
        s.http.max_body_bytes = 2048;
    })
    .await;
    let (status, answer) = check(
        &app,
        json!({"identity_id": "u", "password": "x".repeat(4096)}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn record_is_idempotent_with_an_idempotency_key() {
    let app = fast_app().await;
    let send = |body: Value| {
        app.client
            .post(app.plugin_url("/v1/passwords/record"))
            .bearer_auth(API_TOKEN)
            .header("Idempotency-Key", "change-42")
            .json(&body)
            .send()
    };
    let body = json!({"identity_id": "u2", "password": "p1", "changed_at": "2026-11-01T10:00:00Z"});
    let first = send(body.clone()).await.expect("request");
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["history_entries"], 1);
    assert_eq!(first["changed_at"], "2026-11-01T10:00:00Z");
    let again = send(body).await.expect("request");
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let state: Value = app
        .client
        .get(app.plugin_url("/v1/identities/u2/password"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(state["history_entries"], 1, "the retry changed nothing");
    let other = send(json!({"identity_id": "u2", "password": "p2"}))
        .await
        .expect("request");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_record_the_password_once() {
    let app = fast_app().await;
    let body = json!({"identity_id": "u3", "password": "p1"});
    let requests = (0..4).map(|_| {
        app.client
            .post(app.plugin_url("/v1/passwords/record"))
            .bearer_auth(API_TOKEN)
            .header("Idempotency-Key", "same-key")
            .json(&body)
            .send()
    });
    let mut answers = Vec::new();
    for response in futures_util::future::join_all(requests).await {
        let response = response.expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        answers.push(response.json::<Value>().await.expect("json"));
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let state: Value = app
        .client
        .get(app.plugin_url("/v1/identities/u3/password"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(state["history_entries"], 1);
}

#[tokio::test]
async fn the_state_endpoint_shows_expiry_and_must_change() {
    let app = fast_app().await;
    let response = post(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": "s1", "password": "p", "schema_id": "staff",
               "changed_at": (chrono::Utc::now() - chrono::Duration::days(80)).to_rfc3339()}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let get = |id: &'static str| {
        app.client
            .get(app.plugin_url(&format!("/v1/identities/{id}/password")))
            .bearer_auth(API_TOKEN)
            .send()
    };
    let state: Value = get("s1")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(state["profile"], "staff");
    assert_eq!(state["days_left"], 10);
    assert_eq!(state["expired"], false);
    assert_eq!(state["must_change"], false);
    assert!(state.get("email").is_none());

    let marked = post(&app, "/admin/identities/s1/compromised", json!({})).await;
    assert_eq!(marked.status(), StatusCode::OK);
    let state: Value = get("s1")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(state["must_change"], true);
    assert_eq!(state["must_change_reason"], "compromised");

    let unknown = get("nobody").await.expect("request");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_admin_can_force_a_change_and_erase_an_identity() {
    let app = fast_app().await;
    record(&app, "a1", "p").await;
    let forced = app
        .client
        .post(app.plugin_url("/admin/identities/a1/force-change"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(forced.status(), StatusCode::OK);
    let forced: Value = forced.json().await.expect("json");
    assert_eq!(forced["must_change_reason"], "admin");
    let bad = post(
        &app,
        "/admin/identities/a1/force-change",
        json!({"reason": "boredom"}),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let erased = app
        .client
        .delete(app.plugin_url("/admin/identities/a1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    let gone = app
        .client
        .get(app.plugin_url("/v1/identities/a1/password"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let (_, after) = check(&app, json!({"identity_id": "a1", "password": "p"})).await;
    assert_eq!(after["allowed"], true, "no history is left");
}

/// One KDF slot and no queueing: while the slot is taken, a check is refused with 503 and Retry-After
/// instead of waiting; once it is free, the same check runs. The test holds the slot itself (a job that
/// waits for the test's signal), so the overlap does not depend on how fast argon2 runs.
#[tokio::test]
async fn checks_beyond_the_kdf_pool_get_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.plugin.history.max_concurrent_kdf = 1;
        s.plugin.history.max_queue_ms = 0;
    })
    .await;
    assert_eq!(app.settings.plugin.history.argon2.m_kib, 19_456);
    record(&app, "busy", "p").await;
    let check = || {
        app.client
            .post(app.plugin_url("/v1/passwords/check"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"identity_id": "busy", "password": "p"}))
            .send()
    };

    let (taken, slot_taken) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let kdf = app.kdf.clone();
    let holder = tokio::spawn(async move {
        kdf.run(move || {
            let _ = taken.send(());
            let _ = released.recv();
        })
        .await
    });
    slot_taken
        .await
        .expect("the holding job runs in the only slot");

    for _ in 0..3 {
        let response = check().await.expect("request");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["code"], "busy");
    }

    release.send(()).expect("release the slot");
    holder
        .await
        .expect("join")
        .expect("the holding job ends normally");
    let response = check().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["allowed"], false, "the recorded password: {answer}");

    let metrics = app
        .client
        .get(app.plugin_url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("reclaim_plugin_kdf_rejections_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn decisions_and_kdf_latency_are_in_the_metrics() {
    let app = fast_app().await;
    // Distinctive passwords, so that finding one in the metrics or an error body means it leaked there
    // (tests/logs.rs searches the logs of the real binary for passwords).
    let (old, new) = ("Metrics-Old-Passphrase-51d7", "Metrics-New-Passphrase-e03a");
    record(&app, "m1", old).await;
    check(&app, json!({"identity_id": "m1", "password": old})).await;
    check(&app, json!({"identity_id": "m1", "password": new})).await;
    let (status, error) = check(&app, json!({"identity_id": "", "password": new})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "identity_id", "{error}");
    assert!(!error.to_string().contains(new), "{error}");
    let metrics = app
        .client
        .get(app.plugin_url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"reclaim_plugin_decisions_total{code="password_reused",decision="refused"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reclaim_plugin_decisions_total{code="none",decision="allowed"} 1"#));
    assert!(metrics.contains("reclaim_plugin_kdf_duration_seconds_count 3"));
    assert!(
        !metrics.contains(old) && !metrics.contains(new),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_generic_api() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.plugin_url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    for path in [
        "/v1/passwords/check",
        "/v1/passwords/record",
        "/v1/identities/{id}/password",
        "/admin/identities/{id}/force-change",
        "/admin/identities/{id}/compromised",
        "/admin/identities/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Decision"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn a_change_time_far_in_the_past_or_future_is_refused_naming_changed_at() {
    // A max_age profile, so that the expiry arithmetic runs on whatever time is accepted.
    let app = spawn_app_with(|settings| {
        fast_kdf(settings);
        if let Some(default) = settings.plugin.policy.profiles.get_mut("default") {
            default.expiry = reclaim_common::settings::ExpiryMode::MaxAge;
        }
    })
    .await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for changed_at in [
        "+262142-12-31T23:59:59Z",
        "-262143-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        tomorrow.as_str(),
    ] {
        let response = post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": "u", "password": "p1", "changed_at": changed_at}),
        )
        .await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changed_at}: {answer}");
        assert_eq!(answer["error"]["field"], "changed_at", "{changed_at}");
    }
    let state = app
        .client
        .get(app.plugin_url("/v1/identities/u/password"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("state");
    assert_eq!(
        state.status(),
        StatusCode::NOT_FOUND,
        "nothing was recorded"
    );
    let response = post(
        &app,
        "/v1/passwords/record",
        json!({"identity_id": "u", "password": "p1", "changed_at": "1970-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}
