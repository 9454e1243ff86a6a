//! The spine: health, metrics, errors, configuration and migrations on both backends.

use crate::support::{expected_backend, spawn_app, TestDatabase};
use reclaim_common::settings::{self, Settings};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::Db;
use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn both_services_are_ready_on_the_test_backend() {
    let app = spawn_app().await;
    for base in [&app.plugin, &app.gateway] {
        let response = app
            .client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("json");
        // What the server's connection is, against what the environment asked for (not the harness's choice).
        assert_eq!(
            body["database"],
            expected_backend(),
            "TEST_DATABASE_URL asks for {}: {body}",
            expected_backend()
        );
        // CI names the backend each of its two runs is for, so a run that meant SQLite but inherited a
        // PostgreSQL URL fails here.
        if let Some(wanted) = std::env::var("TEST_EXPECT_BACKEND")
            .ok()
            .filter(|b| !b.is_empty())
        {
            assert_eq!(
                body["database"], wanted,
                "this run is for {wanted} (TEST_EXPECT_BACKEND): {body}"
            );
        }
        let alive = app
            .client
            .get(format!("{base}/health/alive"))
            .send()
            .await
            .expect("request");
        assert_eq!(alive.status(), 200);
    }
}

#[tokio::test]
async fn readiness_is_503_until_the_database_is_migrated() {
    let database = TestDatabase::fresh();
    let settings = crate::support::test_settings(&database.url);
    let db = Db::connect(&settings.database).expect("connect");
    let plugin = reclaim_plugin::Application::build(&settings, db.clone())
        .await
        .expect("build");
    let url = format!("http://127.0.0.1:{}/health/ready", plugin.port());
    tokio::spawn(plugin.run_until_stopped(Shutdown::default()));
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(&url).send().await.expect("request").status(),
        503
    );
    tokio::task::spawn_blocking(move || db.migrate())
        .await
        .expect("join")
        .expect("migrate");
    assert_eq!(
        client.get(&url).send().await.expect("request").status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_requests_in_prometheus_text_format() {
    let app = spawn_app().await;
    for base in [&app.plugin, &app.gateway] {
        app.client
            .get(format!("{base}/health/alive"))
            .send()
            .await
            .expect("request");
        let response = app
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        assert!(response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
        let text = response.text().await.expect("text");
        assert!(
            text.contains(
                r#"reclaim_http_requests_total{method="GET",route="/health/alive",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("reclaim_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_get_a_json_404_with_a_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.gateway_url("/no/such/route"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn each_service_publishes_its_openapi_document() {
    let app = spawn_app().await;
    for base in [&app.plugin, &app.gateway] {
        let doc: serde_json::Value = app
            .client
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{doc}"
        );
    }
}

#[test]
fn both_backends_have_the_same_migration_folders() {
    let names = |backend: &str| {
        let mut names: Vec<String> = std::fs::read_dir(Path::new("migrations").join(backend))
            .expect("migrations folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sqlite = names("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("postgres"));
}

#[test]
fn the_shipped_config_file_lists_the_code_defaults() {
    let shipped =
        settings::load(Path::new("config/reclaim.toml"), true).expect("shipped config loads");
    assert_eq!(shipped, Settings::default());
}

fn reclaim() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
    command.env_remove("RECLAIM_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM__") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn check_config_names_unknown_keys_and_bad_values_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("reclaim.toml");
    std::fs::write(
        &path,
        "[database]\npool_size = \"lots\"\n\n[gateway]\nlisten_port = 1\n",
    )
    .expect("write");
    let output = reclaim()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("RECLAIM__HTTP__MAX_BODY_BYTES", "12")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("gateway.listen_port (RECLAIM__GATEWAY__LISTEN_PORT): unknown key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("database.pool_size (RECLAIM__DATABASE__POOL_SIZE)"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_out_of_range_values_from_the_environment() {
    let output = reclaim()
        .args(["--config", "config/reclaim.toml", "check-config"])
        .env("RECLAIM__HTTP__MAX_BODY_BYTES", "12")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http.max_body_bytes (RECLAIM__HTTP__MAX_BODY_BYTES)"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let output = reclaim()
        .args(["--config", "config/reclaim.toml", "check-config"])
        .env("RECLAIM__PLUGIN__API__TOKENS", "very-secret-token")
        .env(
            "RECLAIM__DATABASE__URL",
            "postgres://reclaim:db-password@db.internal:5432/reclaim",
        )
        .output()
        .expect("run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tokens = [\"***\"]"), "{stdout}");
    assert!(!stdout.contains("very-secret-token"), "{stdout}");
    assert!(!stdout.contains("db-password"), "{stdout}");
}

#[test]
fn an_unreachable_database_is_a_clear_error_not_a_panic() {
    let output = reclaim()
        .args(["--config", "config/reclaim.toml", "migrate"])
        .env(
            "RECLAIM__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/nowhere",
        )
        .env("RECLAIM__DATABASE__CONNECT_TIMEOUT_MS", "500")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn three_instances_migrating_at_once_do_not_race() {
    let database = TestDatabase::fresh();
    let settings = crate::support::test_settings(&database.url);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let settings = settings.database.clone();
            std::thread::spawn(move || Db::connect(&settings).and_then(|db| db.migrate()))
        })
        .collect();
    let mut applied = 0;
    for handle in handles {
        applied += handle.join().expect("thread").expect("migrate").len();
    }
    let expected = std::fs::read_dir("migrations/sqlite").expect("dir").count();
    assert_eq!(
        applied, expected,
        "each migration applied exactly once on {}",
        database.backend
    );
}
