//! Gateway crash test: 2,000 queued messages, a real worker process (`reclaim serve gateway --worker-only`,
//! `file` provider) killed with SIGKILL mid-run, then restarted. Every message must be delivered, and the
//! only duplicates allowed are messages that were in flight when the process died.
//!
//! Nothing here depends on how fast the machine is: progress is read from the database, the kill happens
//! while the test holds the outbox's write lock (so the worker is frozen mid-run, whatever its speed), the
//! delivery file is read only when no worker is alive to append to it, and every wait is a bounded wait
//! for an event with a deadline far above what the event needs.

use crate::support::messages::queued_sms;
use crate::support::{peer, TestDatabase};
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use reclaim_common::db::{write_transaction, AnyConnection};
use reclaim_common::Db;
use reclaim_gateway::outbox;
use reclaim_gateway::schema::gateway_messages;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: usize = 2_000;
const CONCURRENCY: usize = 4;

/// Far above what any wait below needs; it only turns a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(300);

fn worker(database_url: &str, dir: &Path) -> Child {
    worker_command(database_url, dir)
        .env("RECLAIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("RECLAIM__TELEMETRY__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker process")
}

fn worker_command(database_url: &str, dir: &Path) -> Command {
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
        .env("RECLAIM__HTTP__SHUTDOWN_TIMEOUT_SECONDS", "1");
    command
}

/// Message id → how many times the `file` provider wrote it. Read only while no worker runs.
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

fn ids_with_status(conn: &mut AnyConnection, status: &str) -> HashSet<String> {
    gateway_messages::table
        .filter(gateway_messages::status.eq(status))
        .select(gateway_messages::id)
        .load::<String>(conn)
        .expect("ids")
        .into_iter()
        .collect()
}

/// Takes the outbox's write lock on `conn` until [`unlock`]: the worker can still read, but can neither
/// claim nor mark a message, so the outbox stands still whatever the worker does meanwhile.
fn lock_outbox(conn: &mut AnyConnection) {
    let sql = match conn {
        AnyConnection::Sqlite(_) => "BEGIN IMMEDIATE",
        AnyConnection::Postgresql(_) => "BEGIN; LOCK TABLE gateway_messages IN EXCLUSIVE MODE",
    };
    conn.batch_execute(sql).expect("lock the outbox");
}

fn unlock(conn: &mut AnyConnection) {
    conn.batch_execute("COMMIT").expect("unlock the outbox");
}

/// Polls `done` until it holds; fails after [`DEADLINE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
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
                    &queued_sms(id, "verification_code", "123456", now),
                    &keyring,
                )?;
            }
            Ok(())
        })
        .expect("queue 2,000 messages");
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut conn = db.get().expect("conn");

    let mut first = worker(&database.url, dir.path());
    // Wait for 500 sends, checked under the lock: once seen, the lock is kept, so the worker is stopped
    // with 500 or a few more sent, never all of them.
    let mut sent_before = HashSet::new();
    wait_until("the first worker to send 500 messages", || {
        lock_outbox(&mut conn);
        sent_before = ids_with_status(&mut conn, "sent");
        if sent_before.len() >= 500 {
            return true;
        }
        unlock(&mut conn);
        false
    });
    let in_flight = ids_with_status(&mut conn, "sending");
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    unlock(&mut conn);
    assert!(
        sent_before.len() < MESSAGES,
        "the worker was stopped at {} sent",
        sent_before.len()
    );
    assert!(
        in_flight.len() <= CONCURRENCY,
        "{} in flight",
        in_flight.len()
    );
    let delivered_before = deliveries(dir.path());
    assert!(
        sent_before
            .iter()
            .all(|id| delivered_before.contains_key(id)),
        "a message marked sent was never written"
    );

    let mut second = worker(&database.url, dir.path());
    wait_until("every message to be sent", || {
        ids_with_status(&mut conn, "sent").len() == MESSAGES
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
    // Port 0: the worker binds its own port and logs it; the test reads it there.
    let mut child = worker_command(&database.url, dir.path())
        .env("RECLAIM__GATEWAY__LISTEN", "127.0.0.1:0")
        .env("RECLAIM__TELEMETRY__LEVEL", "info")
        .env("RECLAIM__TELEMETRY__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker process");
    const LISTENING: &str = "gateway listening on http://127.0.0.1:";
    let logs = child.stderr.take().expect("stderr");
    let line = peer::wait_for_line("the worker", &mut child, logs, DEADLINE, |l| {
        l.contains(LISTENING)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let port: u16 = line
        .split_once(LISTENING)
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    wait_until("the worker to answer /health/alive", || alive(port));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop within {DEADLINE:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}

/// Whether `GET /health/alive` on the port answers 200.
fn alive(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /health/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
