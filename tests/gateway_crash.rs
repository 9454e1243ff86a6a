//! Gateway crash test: 2,000 queued messages, a real worker process (`reclaim serve gateway --worker-only`,
//! `file` provider) killed with SIGKILL mid-run, then restarted. Every message must be delivered, and the
//! only duplicates allowed are messages that were in flight when the process died.

use crate::support::TestDatabase;
use chrono::Utc;
use diesel::prelude::*;
use reclaim_common::db::write_transaction;
use reclaim_common::Db;
use reclaim_gateway::outbox::{self, NewMessage};
use reclaim_gateway::schema::gateway_messages;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: usize = 2_000;
const CONCURRENCY: usize = 4;

fn worker(database_url: &str, dir: &Path, listen: &str) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RECLAIM") {
            command.env_remove(key);
        }
    }
    command
        .args([
            "--config",
            "config/reclaim.toml",
            "serve",
            "gateway",
            "--worker-only",
        ])
        .env("RECLAIM__DATABASE__URL", database_url)
        .env("RECLAIM__GATEWAY__LISTEN", listen)
        .env("RECLAIM__GATEWAY__CHANNELS__SMS__PROVIDER", "file")
        .env("RECLAIM__GATEWAY__FILE__DIR", dir)
        .env(
            "RECLAIM__GATEWAY__WORKER__CONCURRENCY",
            CONCURRENCY.to_string(),
        )
        // A short lease so the restarted worker takes over the dead one's messages quickly.
        .env("RECLAIM__GATEWAY__WORKER__LEASE_SECONDS", "2")
        .env("RECLAIM__GATEWAY__WORKER__SEND_TIMEOUT_MS", "1000")
        .env("RECLAIM__GATEWAY__WORKER__POLL_INTERVAL_MS", "50")
        .env("RECLAIM__TELEMETRY__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker process")
}

/// Message id → how many times the `file` provider wrote it.
fn deliveries(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(dir.join("messages.jsonl"))
        .unwrap_or_default()
        .lines()
    {
        let value: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
        let id = value["message_id"]
            .as_str()
            .expect("message_id")
            .to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

fn ids_with_status(db: &Db, status: &str) -> HashSet<String> {
    let mut conn = db.get().expect("conn");
    gateway_messages::table
        .filter(gateway_messages::status.eq(status))
        .select(gateway_messages::id)
        .load::<String>(&mut *conn)
        .expect("ids")
        .into_iter()
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_mid_run_loses_nothing_and_duplicates_only_what_was_in_flight() {
    let database = TestDatabase::fresh();
    let settings = crate::support::test_settings(&database.url);
    let db = Db::connect(&settings.database).expect("connect");
    db.migrate().expect("migrate");
    let keyring = reclaim_common::sealed::Keyring::from_settings(
        "gateway.storage.keys",
        &settings.gateway.storage.keys,
        true,
    )
    .expect("keyring");
    let now = Utc::now().naive_utc();
    let ids: Vec<String> = (0..MESSAGES)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    {
        let mut conn = db.get().expect("conn");
        write_transaction(&mut conn, |conn| {
            for id in &ids {
                outbox::insert(
                    conn,
                    &NewMessage {
                        id: id.clone(),
                        channel: "sms".into(),
                        destination: "+14155550100".into(),
                        template: "verification_code".into(),
                        locale: "en".into(),
                        data: r#"{"code":"123456"}"#.into(),
                        status: "queued".into(),
                        attempts: 0,
                        next_attempt_at: now,
                        expires_at: None,
                        fallback: "[]".into(),
                        fallback_position: 0,
                        idempotency_key: None,
                        created_at: now,
                        updated_at: now,
                    },
                    &keyring,
                )?;
            }
            Ok(())
        })
        .expect("queue 2,000 messages");
    }
    let dir = tempfile::tempdir().expect("dir");

    let mut first = worker(&database.url, dir.path(), "127.0.0.1:0");
    wait_until(
        "the first worker to deliver 500 messages",
        Duration::from_secs(120),
        || deliveries(dir.path()).len() >= 500,
    );
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let in_flight = ids_with_status(&db, "sending");
    let delivered_before = deliveries(dir.path()).len();
    assert!(
        delivered_before < MESSAGES,
        "the kill came too late to test anything"
    );
    assert!(
        in_flight.len() <= CONCURRENCY,
        "{} in flight",
        in_flight.len()
    );

    let mut second = worker(&database.url, dir.path(), "127.0.0.1:0");
    wait_until("every message to be sent", Duration::from_secs(180), || {
        ids_with_status(&db, "sent").len() == MESSAGES
    });
    second.kill().expect("stop");
    second.wait().expect("reap");

    let counts = deliveries(dir.path());
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} messages never delivered",
        missing.len()
    );
    let duplicated: HashSet<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        duplicated.is_subset(&in_flight),
        "duplicates outside the in-flight set: {:?}",
        duplicated.difference(&in_flight).collect::<Vec<_>>()
    );
    assert!(counts.values().all(|n| *n <= 2));
}

#[test]
fn a_worker_process_stops_cleanly_on_sigterm() {
    let database = TestDatabase::fresh();
    let settings = crate::support::test_settings(&database.url);
    Db::connect(&settings.database)
        .and_then(|db| db.migrate())
        .expect("migrate");
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = worker(&database.url, dir.path(), &format!("127.0.0.1:{port}"));
    wait_until(
        "the worker to serve /health/alive",
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}
