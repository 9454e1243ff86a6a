//! Legacy password hashes: `reclaim import hashes FILE.csv` (the real binary, and the library function it
//! wraps) and Kratos's password migration hook `/hooks/kratos/password-migration`.

use crate::support::kratos::KRATOS_KEY;
use crate::support::plugin::{check_password, new_id, password_state};
use crate::support::{spawn_app_with, TestApp};
use reclaim_common::Secret;
use reclaim_plugin::import::import_hashes;
use reclaim_plugin::Passwords;
use serde_json::{json, Value};
use std::process::Command;

const HOOK: &str = "/hooks/kratos/password-migration";

/// An argon2id PHC string of `password` at a cost cheap enough for tests.
fn legacy_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"legacy-test-salt").expect("salt");
    let params = argon2::Params::new(8_192, 1, 1, None).expect("params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

async fn import_app() -> TestApp {
    spawn_app_with(|settings| {
        settings.plugin.kratos.api_keys = vec![Secret::new(KRATOS_KEY)];
    })
    .await
}

/// Imports `csv` through the library function the CLI wraps.
async fn import(app: &TestApp, csv: &str) -> reclaim_plugin::import::ImportSummary {
    let passwords = Passwords::new(&app.settings, app.db.clone(), &prometheus::Registry::new())
        .expect("passwords");
    import_hashes(&passwords, csv.as_bytes())
        .await
        .expect("import")
}

async fn migrate(app: &TestApp, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = app.client.post(app.plugin_url(HOOK)).json(&body);
    if let Some(key) = key {
        request = request.header("x-reclaim-key", key);
    }
    let response = request.send().await.expect("hook request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// KDF runs so far, from the plugin's `/metrics`.
async fn kdf_runs(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(app.plugin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix("reclaim_plugin_kdf_duration_seconds_count")?
                .strip_prefix(' ')
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
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

#[tokio::test]
async fn the_import_command_names_bad_rows_by_line_and_a_second_run_imports_nothing_new() {
    let app = import_app().await;
    let id = new_id();
    let hash = legacy_hash("legacy passphrase one");
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("hashes.csv");
    std::fs::write(
        &csv,
        format!(
            "identifier,phc_hash,changed_at\n\
             {id},{hash},2025-06-01T00:00:00Z\n\
             ,{hash}\n\
             someone@example.org,not-a-phc-string\n\
             someone@example.org,{hash},2025-13-45\n\
             someone@example.org,{hash}\n"
        ),
    )
    .expect("write csv");
    let config = dir.path().join("reclaim.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"{}\"\n", app.database.url),
    )
    .expect("write config");

    let run = || {
        let output = reclaim()
            .arg("--config")
            .arg(&config)
            .args(["import", "hashes"])
            .arg(&csv)
            .output()
            .expect("run reclaim");
        assert!(output.status.success(), "{output:?}");
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (stdout, stderr) = run();
    assert!(
        stdout.contains("imported 2, skipped 0 (already imported), errors 3"),
        "{stdout}"
    );
    let csv_name = csv.display().to_string();
    for (line, problem) in [(3, "identifier"), (4, "phc_hash"), (5, "changed_at")] {
        assert!(
            stderr.contains(&format!("{csv_name}:{line}: {problem}")),
            "line {line}: {stderr}"
        );
    }
    assert!(!stderr.contains(&hash), "no hash in the report: {stderr}");
    assert!(!stdout.contains(&hash), "no hash in the report: {stdout}");

    let (stdout, _) = run();
    assert!(
        stdout.contains("imported 0, skipped 2 (already imported), errors 3"),
        "{stdout}"
    );
    let state = password_state(&app, &id).await;
    assert_eq!(state["history_entries"], 1, "{state}");
    assert_eq!(state["changed_at"], "2025-06-01T00:00:00Z", "{state}");
}

#[tokio::test]
async fn a_matching_password_migrates_by_identity_id_and_is_then_refused_as_reused() {
    let app = import_app().await;
    let id = new_id();
    let summary = import(
        &app,
        &format!(
            "{id},{},2025-06-01T00:00:00Z\n",
            legacy_hash("legacy passphrase one")
        ),
    )
    .await;
    assert_eq!((summary.imported, summary.errors.len()), (1, 0));

    let body = json!({"identifier": "user@example.org", "identity_id": id, "password": "legacy passphrase one"});
    let (status, answer) = migrate(&app, body.clone(), Some(KRATOS_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"status": "password_match"}));

    let reused = check_password(&app, &id, "legacy passphrase one").await;
    assert_eq!(reused["allowed"], false, "{reused}");
    assert_eq!(reused["violations"][0]["code"], "password_reused");
    let state = password_state(&app, &id).await;
    assert_eq!(
        state["history_entries"], 1,
        "the foreign entry was replaced: {state}"
    );
    assert_eq!(
        state["changed_at"], "2025-06-01T00:00:00Z",
        "dated as imported: {state}"
    );
    // The legacy hash is gone: Kratos stores the password itself now, and a second call matches nothing.
    let (status, _) = migrate(&app, body, Some(KRATOS_KEY)).await;
    assert_eq!(status, 403);
    // Importing the file again does not bring the dropped hash back.
    let again = import(
        &app,
        &format!("{id},{}\n", legacy_hash("legacy passphrase one")),
    )
    .await;
    assert_eq!((again.imported, again.skipped), (0, 1));
}

#[tokio::test]
async fn a_hash_imported_by_login_identifier_is_attached_to_the_identity_the_hook_names() {
    let app = import_app().await;
    let id = new_id();
    let summary = import(
        &app,
        &format!(
            "Someone@Example.org,{}\n",
            legacy_hash("legacy passphrase two")
        ),
    )
    .await;
    assert_eq!((summary.imported, summary.errors.clone()), (1, vec![]));
    let (status, answer) = migrate(
        &app,
        json!({"identifier": "Someone@Example.org", "identity_id": id, "password": "legacy passphrase two"}),
        Some(KRATOS_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let reused = check_password(&app, &id, "legacy passphrase two").await;
    assert_eq!(
        reused["violations"][0]["code"], "password_reused",
        "{reused}"
    );
    // The placeholder that held the hash is gone with it.
    let placeholders: i64 = app
        .db
        .run(|conn| {
            use diesel::prelude::*;
            use reclaim_plugin::schema::password_states::dsl as s;
            Ok(s::password_states
                .filter(s::identity_id.like("legacy:%"))
                .count()
                .get_result(conn)?)
        })
        .await
        .expect("count");
    assert_eq!(placeholders, 0);
}

#[tokio::test]
async fn a_wrong_password_or_an_unknown_identifier_gets_403_and_the_hash_stays() {
    let app = import_app().await;
    let id = new_id();
    import(
        &app,
        &format!("{id},{}\n", legacy_hash("legacy passphrase one")),
    )
    .await;
    for body in [
        json!({"identifier": id, "password": "not the passphrase"}),
        json!({"identifier": "nobody@example.org", "password": "legacy passphrase one"}),
        json!({"identifier": "nobody@example.org", "identity_id": new_id(), "password": "legacy passphrase one"}),
    ] {
        let before = kdf_runs(&app).await;
        let (status, answer) = migrate(&app, body.clone(), Some(KRATOS_KEY)).await;
        assert_eq!(status, 403, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "password_mismatch");
        // Known or not, a refusal costs one KDF run, so its timing does not tell which it was.
        assert_eq!(kdf_runs(&app).await - before, 1.0, "{body}");
    }
    let (status, _) = migrate(
        &app,
        json!({"identifier": id, "password": "legacy passphrase one"}),
        Some(KRATOS_KEY),
    )
    .await;
    assert_eq!(status, 200, "the hash survived the wrong attempts");
}

#[tokio::test]
async fn a_migration_call_with_a_wrong_key_gets_401_and_changes_nothing() {
    let app = import_app().await;
    let id = new_id();
    import(
        &app,
        &format!("{id},{}\n", legacy_hash("legacy passphrase one")),
    )
    .await;
    let body = json!({"identifier": id, "password": "legacy passphrase one"});
    for key in [None, Some("wrong-key")] {
        let (status, answer) = migrate(&app, body.clone(), key).await;
        assert_eq!(status, 401, "{answer}");
    }
    let allowed = check_password(&app, &id, "a brand new passphrase").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let (status, _) = migrate(&app, body, Some(KRATOS_KEY)).await;
    assert_eq!(
        status, 200,
        "the hash is still there after the refused calls"
    );
}

#[tokio::test]
async fn a_malformed_migration_body_gets_400_naming_the_field() {
    let app = import_app().await;
    for (body, field) in [
        (json!({"identifier": "someone@example.org"}), "password"),
        (json!({"password": "legacy passphrase one"}), "identifier"),
        (json!({"identifier": "", "password": "x"}), "identifier"),
        (json!({"identifier": "a", "password": ""}), "password"),
        (
            json!({"identifier": "a", "password": "x", "identity_id": "a\u{0}b"}),
            "identity_id",
        ),
    ] {
        let (status, answer) = migrate(&app, body.clone(), Some(KRATOS_KEY)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
}

#[tokio::test]
async fn a_login_identifier_match_without_identity_id_passes_once_and_seeds_no_history() {
    let app = import_app().await;
    import(
        &app,
        &format!(
            "someone@example.org,{}\n",
            legacy_hash("legacy passphrase three")
        ),
    )
    .await;
    let body = json!({"identifier": "someone@example.org", "password": "legacy passphrase three"});
    let (status, answer) = migrate(&app, body.clone(), Some(KRATOS_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = migrate(&app, body, Some(KRATOS_KEY)).await;
    assert_eq!(status, 403, "the hash was deleted");
    let entries: i64 = app
        .db
        .run(|conn| {
            use diesel::prelude::*;
            use reclaim_plugin::schema::password_history::dsl as h;
            Ok(h::password_history.count().get_result(conn)?)
        })
        .await
        .expect("count");
    assert_eq!(entries, 0, "no history without an identity id");
}
