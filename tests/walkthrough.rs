//! The README's walk-through ("The first five minutes"), run as a person would: the binary started as
//! `cargo run --release` starts it (no arguments, so `serve all` with the shipped `config/reclaim.toml` in
//! `development`, pretty logs), the tokens it printed exported, and the README's fenced block after
//! `<!-- walkthrough -->` fed to `bash` as written. Only these are substituted, and nothing else:
//!
//! - the database: `RECLAIM__DATABASE__URL` names a fresh one (SQLite, or PostgreSQL with `TEST_DATABASE_URL`);
//! - the ports: the services listen on port 0 (`RECLAIM__PLUGIN__LISTEN`, `RECLAIM__GATEWAY__LISTEN`), so
//!   `http://127.0.0.1:4470` and `http://127.0.0.1:4471` in the block become the URLs the services print;
//! - the code: the block's `CODE=123456` line gets the code the console provider printed, as a person
//!   types it in.

use crate::logs::Reclaim;
use crate::support::TestDatabase;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bound of every wait on an event: far above any normal run, so reaching it means the event never came.
const EVENT_BOUND: Duration = Duration::from_secs(60);

const README: &str = include_str!("../README.md");
const PLUGIN_URL: &str = "http://127.0.0.1:4470";
const GATEWAY_URL: &str = "http://127.0.0.1:4471";
/// What the console provider prints of the `verification_code` template, before the code.
const CODE_MARKER: &str = "Your verification code is ";

/// The commands of the fenced block that follows `<!-- walkthrough -->` in the README.
fn walkthrough() -> &'static str {
    let after = README
        .split_once("<!-- walkthrough -->")
        .expect("the README marks its walk-through")
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block right after the marker");
    block.split_once("\n```").expect("the block's end").0
}

/// The block in two parts around its `CODE=` line: what runs before the code is known, and the rest.
fn split_at_code(block: &str) -> (String, String) {
    let lines: Vec<&str> = block.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("CODE="))
        .expect("a CODE= line");
    (
        lines[..at].join("\n") + "\n",
        lines[at + 1..].join("\n") + "\n",
    )
}

/// The digits after [`CODE_MARKER`] in a console line.
fn code_in(line: &str) -> String {
    let start = line.find(CODE_MARKER).expect("marker") + CODE_MARKER.len();
    line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// Waits (bounded) until the gateway's `/metrics` has a line starting with `series`; the delivery worker
/// counts the attempt just after the console provider printed the message.
async fn wait_for_metric(gateway: &str, series: &str) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + EVENT_BOUND;
    loop {
        let text = client
            .get(format!("{gateway}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text.lines().any(|l| l.starts_with(series)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {series} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_against_a_fresh_start() {
    let database = TestDatabase::fresh();
    let mut command = Reclaim::command();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RECLAIM__DATABASE__URL", &database.url)
        .env("RECLAIM__PLUGIN__LISTEN", "127.0.0.1:0")
        .env("RECLAIM__GATEWAY__LISTEN", "127.0.0.1:0");
    let dir = tempfile::tempdir().expect("dir");
    let mut reclaim = Reclaim::spawn(command, dir).await;

    // One token per API, printed once on stdout and never logged.
    let tokens = reclaim.development_tokens().await;
    let names: Vec<&str> = tokens.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "RECLAIM_PLUGIN_TOKEN",
            "RECLAIM_PLUGIN_ADMIN_TOKEN",
            "RECLAIM_GATEWAY_TOKEN",
            "RECLAIM_GATEWAY_ADMIN_TOKEN"
        ],
        "{:#?}",
        reclaim.lines()
    );

    let block = walkthrough();
    assert!(
        block.contains(PLUGIN_URL) && block.contains(GATEWAY_URL),
        "{block}"
    );
    let block = block
        .replace(PLUGIN_URL, &reclaim.plugin)
        .replace(GATEWAY_URL, &reclaim.gateway);
    let (before_code, after_code) = split_at_code(&block);

    let mut shell = Command::new("bash");
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM") {
            shell.env_remove(key);
        }
    }
    let mut shell = shell
        .arg("-s")
        .envs(tokens.iter().map(|(name, token)| (name, token)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut stdin = shell.stdin.take().expect("stdin");
    stdin
        .write_all(before_code.as_bytes())
        .expect("the commands up to the code");
    stdin.flush().expect("flush");

    // The person reads the code in the first terminal: the console provider's output.
    let line = reclaim
        .wait_for("the code on the console", |l| l.contains(CODE_MARKER))
        .await;
    let code = code_in(&line);
    assert_eq!(code.len(), 6, "{line}");
    wait_for_metric(&reclaim.gateway, "reclaim_gateway_messages_total{").await;
    stdin
        .write_all(format!("CODE={code}\n{after_code}").as_bytes())
        .expect("the rest");
    drop(stdin);
    let output = tokio::time::timeout(
        EVENT_BOUND,
        tokio::task::spawn_blocking(move || shell.wait_with_output()),
    )
    .await
    .expect("the walk-through finished")
    .expect("join")
    .expect("bash output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}:\n{stdout}\n{stderr}",
        output.status
    );

    // The reuse is refused.
    assert!(stdout.contains(r#""identity_id":"alice""#), "{stdout}");
    assert!(
        stdout.contains(r#""allowed":false"#) && stdout.contains(r#""code":"password_reused""#),
        "{stdout}"
    );
    // The verification started, and the code from the console approved it.
    assert!(stdout.contains(r#""status":"pending""#), "{stdout}");
    assert!(stdout.contains(r#""status":"approved""#), "{stdout}");
    // Both services counted it.
    let metric = |name: &str, labels: &[&str]| {
        stdout
            .lines()
            .any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
    };
    assert!(
        metric(
            "reclaim_plugin_decisions_total{",
            &[r#"code="password_reused""#, r#"decision="refused""#]
        ),
        "{stdout}"
    );
    assert!(
        metric(
            "reclaim_gateway_messages_total{",
            &[
                r#"channel="email""#,
                r#"provider="console""#,
                r#"outcome="sent""#
            ]
        ),
        "{stdout}"
    );

    reclaim.terminate();
    let status = reclaim.exit().await;
    assert!(status.success(), "{status}");
    let logs = reclaim.log_lines();
    for (name, token) in &tokens {
        let leaks: Vec<&String> = logs.iter().filter(|l| l.contains(token)).collect();
        assert!(leaks.is_empty(), "{name} is logged:\n{leaks:#?}");
    }
}

/// With notices on and no token anywhere, `serve all` links the plugin's notices to its gateway with the
/// gateway's generated token: a recorded password's "password changed" notice is delivered by the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_all_hands_notices_to_its_gateway_with_the_generated_token() {
    let database = TestDatabase::fresh();
    let mut command = Reclaim::command();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RECLAIM__DATABASE__URL", &database.url)
        .env("RECLAIM__PLUGIN__LISTEN", "127.0.0.1:0")
        .env("RECLAIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("RECLAIM__PLUGIN__NOTICES__ENABLED", "true")
        .env("RECLAIM__PLUGIN__NOTICES__POLL_INTERVAL_MS", "50");
    let dir = tempfile::tempdir().expect("dir");
    let mut reclaim = Reclaim::spawn(command, dir).await;
    let tokens = reclaim.development_tokens().await;
    let plugin_token = tokens
        .iter()
        .find(|(name, _)| name == "RECLAIM_PLUGIN_TOKEN")
        .map(|(_, token)| token.clone())
        .expect("a generated plugin token");

    // An identity's first password is no change to tell about; its second is.
    let client = reqwest::Client::new();
    for password in ["the first long password", "the second long password"] {
        let response = client
            .post(format!("{}/v1/passwords/record", reclaim.plugin))
            .bearer_auth(&plugin_token)
            .json(&serde_json::json!({
                "identity_id": "bob",
                "password": password,
                "email": "bob@example.com",
            }))
            .send()
            .await
            .expect("record");
        assert_eq!(response.status(), 200);
    }
    // The gateway accepted the notice (a wrong token would be a 401, retried, never delivered) and the
    // console provider delivered it.
    reclaim
        .wait_for("the notice on the console", |l| {
            l.contains("Subject: Your password was changed")
        })
        .await;
    reclaim.terminate();
    let status = reclaim.exit().await;
    assert!(status.success(), "{status}");
}
