//! `reclaim admin`: the real binary against the services of a running test app — every command as a table
//! and as `--json`, the listen addresses of `--config` as default URLs, and the errors an operator meets
//! (service unreachable, token refused, not found, bad input).

use crate::gateway_messages::enqueue;
use crate::support::{spawn_app_with, TestApp, ADMIN_TOKEN, API_TOKEN};
use serde_json::{json, Value};
use std::process::Output;
use tokio::process::Command;

const TO: &str = "+14155550100";

/// The binary with no configuration from the environment; tokio's process API, so the test's own services
/// keep answering while it runs.
fn reclaim() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
    command.env_remove("RECLAIM_CONFIG");
    command.env_remove("RECLAIM_ADMIN_TOKEN");
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM__") {
            command.env_remove(key);
        }
    }
    command
}

async fn admin(app: &TestApp, args: &[&str]) -> Output {
    reclaim()
        .arg("admin")
        .args(["--gateway", &app.gateway, "--plugin", &app.plugin])
        .args(args)
        .env("RECLAIM_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("run reclaim admin")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    String::from_utf8(output.stderr.clone()).expect("utf-8")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).expect("json")
}

async fn record(app: &TestApp, id: &str) {
    let response = app
        .client
        .post(app.plugin_url("/v1/passwords/record"))
        .bearer_auth(API_TOKEN)
        .json(
            &json!({"identity_id": id, "password": "correct horse battery staple 1",
                       "email": "jane@example.com"}),
        )
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn every_command_prints_a_table_or_the_apis_json() {
    let dir = tempfile::tempdir().expect("dir");
    let files = dir.path().to_string_lossy().into_owned();
    let app = spawn_app_with(move |s| {
        s.gateway.file.dir = files;
        for channel in [
            &mut s.gateway.channels.email,
            &mut s.gateway.channels.sms,
            &mut s.gateway.channels.voice,
        ] {
            channel.provider = reclaim_common::settings::ProviderKind::File;
        }
    })
    .await;
    let id = enqueue(
        &app,
        &json!({"channel": "sms", "to": TO, "template": "recovery_code", "data": {"code": "482913"}}),
    )
    .await;
    app.delivery.drain().await.expect("drain");

    let table = stdout(&admin(&app, &["timeline", TO]).await);
    assert!(
        table.starts_with(&format!("timeline of {TO} since ")),
        "{table}"
    );
    assert!(
        table.contains(&id) && table.contains("recovery_code"),
        "{table}"
    );
    assert!(table.contains("attempt 1 at"), "{table}");
    assert!(
        table.contains(" sms via file: sent — handed to the provider; no delivery report yet\n"),
        "{table}"
    );
    assert!(
        table.contains(&format!("    fallback voice to {TO}: not taken\n")),
        "{table}"
    );
    assert!(table.contains("limits: "), "{table}");
    let timeline = json_of(
        &admin(
            &app,
            &["--json", "timeline", TO, "--since", "2020-01-01T00:00:00Z"],
        )
        .await,
    );
    assert_eq!(timeline["address"], TO);
    assert_eq!(timeline["entries"][0]["id"], id.as_str());

    // A sent message is not retried: the API's 409 and its message, exit 1.
    let refused = failure(&admin(&app, &["retry", &id]).await);
    assert!(
        refused.contains("409") && refused.contains("only failed"),
        "{refused}"
    );
    let unknown = failure(&admin(&app, &["retry", &uuid::Uuid::now_v7().to_string()]).await);
    assert!(unknown.contains("not found"), "{unknown}");

    let lifted = stdout(&admin(&app, &["unthrottle", TO]).await);
    assert_eq!(lifted, format!("limits on {TO} lifted\n"));
    assert_eq!(
        json_of(&admin(&app, &["--json", "unthrottle", TO]).await),
        json!({})
    );

    record(&app, "cli-1").await;
    let identity = stdout(&admin(&app, &["identity", "cli-1"]).await);
    assert!(
        identity.contains("profile            default"),
        "{identity}"
    );
    assert!(identity.contains("history entries    1"), "{identity}");
    assert!(
        identity.contains("email              j***@example.com"),
        "{identity}"
    );
    assert!(!identity.contains("jane@example.com"), "{identity}");
    let identity = json_of(&admin(&app, &["--json", "identity", "cli-1"]).await);
    assert_eq!(identity["state"]["must_change"], false);

    let forced = stdout(&admin(&app, &["force-change", "cli-1", "--reason", "compromised"]).await);
    assert!(forced.contains("must change        true"), "{forced}");
    assert!(
        forced.contains("must change reason compromised"),
        "{forced}"
    );
    let forced = json_of(&admin(&app, &["--json", "force-change", "cli-1"]).await);
    assert_eq!(forced["must_change_reason"], "admin");

    let erased = stdout(&admin(&app, &["erase", "cli-1"]).await);
    assert_eq!(erased, "identity cli-1 erased\n");
    let gone = failure(&admin(&app, &["identity", "cli-1"]).await);
    assert!(
        gone.contains("not found: the plugin has no record of this identity"),
        "{gone}"
    );
    record(&app, "cli-2").await;
    assert_eq!(
        json_of(&admin(&app, &["--json", "erase", "cli-2"]).await),
        json!({})
    );

    let bad = failure(&admin(&app, &["timeline", "jane"]).await);
    assert!(
        bad.contains("400") && bad.contains("field `address`"),
        "{bad}"
    );
}

#[tokio::test]
async fn urls_default_to_the_configured_listen_addresses() {
    let app = spawn_app_with(|_| {}).await;
    let port = |url: &str| url.rsplit(':').next().expect("port").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("reclaim.toml");
    std::fs::write(
        &config,
        format!(
            "[plugin]\nlisten = \"0.0.0.0:{}\"\n\n[gateway]\nlisten = \"127.0.0.1:{}\"\n",
            port(&app.plugin),
            port(&app.gateway)
        ),
    )
    .expect("config");
    record(&app, "cli-3").await;
    let output = reclaim()
        .arg("--config")
        .arg(&config)
        .args(["admin", "--token", ADMIN_TOKEN, "identity", "cli-3"])
        .output()
        .await
        .expect("run");
    assert!(stdout(&output).contains("identity           cli-3"));
    let output = reclaim()
        .arg("--config")
        .arg(&config)
        .args([
            "admin",
            "--token",
            ADMIN_TOKEN,
            "timeline",
            "jane@example.com",
        ])
        .output()
        .await
        .expect("run");
    assert!(stdout(&output).contains("timeline of jane@example.com"));
}

#[tokio::test]
async fn an_unreachable_service_a_refused_token_and_a_missing_token_are_clear_errors() {
    let app = spawn_app_with(|_| {}).await;
    // A port nothing listens on: bound, then released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        free.local_addr().expect("addr").port()
    );
    drop(free);
    let output = reclaim()
        .args([
            "admin",
            "--gateway",
            &url,
            "--token",
            ADMIN_TOKEN,
            "timeline",
            TO,
        ])
        .output()
        .await
        .expect("run");
    let error = failure(&output);
    assert!(
        error.contains(&format!(
            "cannot reach the gateway at {url}: connection refused"
        )),
        "{error}"
    );
    let output = reclaim()
        .args([
            "admin",
            "--plugin",
            &url,
            "--token",
            ADMIN_TOKEN,
            "erase",
            "x",
        ])
        .output()
        .await
        .expect("run");
    assert!(failure(&output).contains(&format!("cannot reach the plugin at {url}")));

    for (service, args) in [
        ("gateway", vec!["timeline", TO]),
        ("plugin", vec!["identity", "someone"]),
    ] {
        let output = reclaim()
            .arg("admin")
            .args(["--gateway", &app.gateway, "--plugin", &app.plugin])
            .args(["--token", "not-the-admin-token"])
            .args(&args)
            .output()
            .await
            .expect("run");
        let error = failure(&output);
        assert!(
            error.contains(&format!("the admin token was refused by the {service}")),
            "{error}"
        );
        assert!(!error.contains("not-the-admin-token"), "{error}");
    }
    let output = reclaim()
        .args(["admin", "--gateway", &app.gateway, "timeline", TO])
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("RECLAIM_ADMIN_TOKEN"));
}
