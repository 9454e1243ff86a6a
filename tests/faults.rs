//! Fault suites: the gateway's delivery under a misbehaving provider, an SMTP server that is down for a while,
//! and a SQLite database on a disk that refuses writes. Every part is real except the fault itself: the
//! real Twilio client against a stand-in that answers at random (`support::twilio_faults`), the real SMTP
//! client against aiosmtpd that is simply not there yet, the real database made read-only or full. Waits
//! between retries pass on a simulated clock (`Delivery::drain_at`), never by sleeping.

use crate::gateway_messages::{count_messages, enqueue, get_message, spawn_gateway, time};
use crate::gateway_twilio_outbox::on_twilio;
use crate::support::ports::closed_port;
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::twilio_faults::{FaultyTwilio, Recorded, Reply};
use crate::support::TestApp;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use rand::{Rng, SeedableRng};
use reclaim_gateway::schema::gateway_messages;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages queued in the chaos run.
const CHAOS_MESSAGES: usize = 150;
/// Every fifth message expires this soon, so some run out of time while they wait for a retry.
const SHORT_EXPIRY_SECONDS: u64 = 3;
/// What the stand-in's 429s ask for: longer than a short message lives.
const RETRY_AFTER_SECONDS: i64 = 5;
/// The seed when `FAULTS_SEED` does not set one; the run prints the seed it used.
const DEFAULT_SEED: u64 = 13;

/// What the chaotic stand-in answered one request with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    ServerError,
    Throttled,
    /// Accepted, but answered long after the gateway's timeout: the gateway cannot know it was accepted.
    Hang,
    Accepted(String),
}

/// Our message id, from the status callback URL the gateway puts on every Twilio request.
fn message_of(request: &Recorded) -> String {
    request
        .field("StatusCallback")
        .and_then(|url| url.split_once("message="))
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| panic!("no message id in {request:?}"))
}

fn count_unsettled(app: &TestApp) -> i64 {
    let mut conn = app.db.get().expect("conn");
    gateway_messages::table
        .filter(gateway_messages::status.eq_any(["queued", "sending"]))
        .count()
        .get_result(&mut *conn)
        .expect("count")
}

/// Drains at a simulated clock that moves `step` per round until nothing is queued or sending; panics after
/// `rounds` rounds.
async fn drain_until_nothing_queued(app: &TestApp, step: TimeDelta, rounds: usize) {
    let mut clock: DateTime<Utc> = Utc::now();
    for _ in 0..rounds {
        app.delivery.drain_at(clock).await.expect("drain");
        if count_unsettled(app) == 0 {
            return;
        }
        clock += step;
    }
    panic!(
        "{} messages still queued or sending after {rounds} rounds",
        count_unsettled(app)
    );
}

/// Provider chaos: the Twilio stand-in answers 30% 5xx, 10% 429 with `Retry-After`, 5% hangs past the
/// gateway's provider timeout (300 ms here) and accepts the rest, at random from a seeded RNG
/// (`FAULTS_SEED`, printed; the seed fixes the sequence of answers, while which retry meets which answer also
/// depends on the gateway's retry jitter). 150 messages, every fifth living only 3 s. Every message ends `sent`, or
/// `expired` when its time ran out first; none is left queued or sending, none is lost, and the provider
/// accepted no message twice — except where the gateway timed out on an attempt (every hang, or an answer
/// slower than the timeout on a busy machine): it gave up on an answer that never came in time, so it
/// retried a message the provider may have taken (DESIGN allows a duplicate only when a timeout or crash
/// falls between the provider's acceptance and our commit).
#[tokio::test]
async fn provider_chaos_ends_with_every_message_sent_or_expired_and_none_lost() {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("provider chaos seed: {seed} (FAULTS_SEED sets it)");
    let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(seed));
    let answers: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let log = answers.clone();
    let twilio = FaultyTwilio::start_with(Arc::new(move |request: &Recorded| {
        let roll: f64 = rng.lock().expect("lock").gen();
        let mut log = log.lock().expect("lock");
        let sid = format!("SM{:032x}", log.len());
        let (answer, reply) = if roll < 0.30 {
            (Answer::ServerError, Reply::twilio_error(503, 20503))
        } else if roll < 0.40 {
            let retry_after = RETRY_AFTER_SECONDS.to_string();
            let reply = Reply::twilio_error(429, 20429).header("Retry-After", &retry_after);
            (Answer::Throttled, reply)
        } else if roll < 0.45 {
            (
                Answer::Hang,
                Reply::created(&sid).after(Duration::from_secs(2)),
            )
        } else {
            (Answer::Accepted(sid.clone()), Reply::created(&sid))
        };
        log.push((message_of(request), answer));
        reply
    }))
    .await;
    let (app, _dir) = spawn_gateway(|s| {
        on_twilio(s, &twilio);
        s.gateway.twilio.timeout_ms = 300;
        s.gateway.retry.max_attempts = 8;
        s.gateway.retry.base_ms = 500;
        s.gateway.retry.max_ms = 4_000;
    })
    .await;
    let mut short_lived = Vec::new();
    let mut ids = Vec::new();
    for i in 0..CHAOS_MESSAGES {
        let short = i % 5 == 0;
        let id = enqueue(
            &app,
            &json!({
                "channel": "sms", "to": format!("+1415555{:04}", 100 + i), "template": "verification_code",
                "data": {"code": format!("{:06}", i)},
                "expires_in": if short { SHORT_EXPIRY_SECONDS } else { 600 },
            }),
        )
        .await;
        if short {
            short_lived.push(id.clone());
        }
        ids.push(id);
    }

    drain_until_nothing_queued(&app, TimeDelta::seconds(2), 300).await;

    assert_eq!(
        count_messages(&app),
        CHAOS_MESSAGES as i64,
        "a message was lost"
    );
    let answers = answers.lock().expect("lock").clone();
    let mut by_message: HashMap<&str, Vec<&Answer>> = HashMap::new();
    for (id, answer) in &answers {
        by_message.entry(id.as_str()).or_default().push(answer);
    }
    let mut expired = 0;
    for id in &ids {
        let message = get_message(&app, id).await;
        let seen = by_message.get(id.as_str()).cloned().unwrap_or_default();
        let accepted: Vec<&String> = seen
            .iter()
            .filter_map(|a| match a {
                Answer::Accepted(sid) => Some(sid),
                _ => None,
            })
            .collect();
        let hangs = seen.iter().filter(|a| **a == &Answer::Hang).count();
        let history = message["history"].as_array().expect("history");
        // Attempts the gateway gave up on: every hang, and any answer that came too late on a busy machine.
        let timeouts = history.iter().filter(|a| a["outcome"] == "timeout").count();
        assert!(hangs <= timeouts, "{message} vs {seen:?}");
        // The provider took the message more than once only where the gateway timed out on an attempt.
        assert!(
            accepted.len() + hangs <= 1 + timeouts,
            "the provider took {id} more than once without a timeout: {seen:?} {message}"
        );
        match message["status"].as_str() {
            Some("sent" | "delivered") => {
                let sid = message["provider_message_id"].as_str().unwrap_or_default();
                assert!(
                    accepted.iter().any(|a| a.as_str() == sid),
                    "{message} vs {seen:?}"
                );
            }
            Some("expired") => {
                expired += 1;
                assert!(short_lived.contains(id), "{message}");
                assert!(accepted.len() <= timeouts, "{message} vs {seen:?}");
            }
            _ => panic!("neither sent nor expired: {message}"),
        }
        // A 429's `Retry-After` is honoured: the next attempt on that channel comes no sooner.
        for pair in history.windows(2) {
            if pair[0]["error_code"] == "20429" && pair[0]["channel"] == pair[1]["channel"] {
                assert!(
                    time(&pair[1]["started_at"]) - time(&pair[0]["started_at"])
                        >= TimeDelta::seconds(RETRY_AFTER_SECONDS),
                    "{message}"
                );
            }
        }
    }
    // The run saw every kind of fault, and some codes ran out of time.
    let kinds = |wanted: fn(&Answer) -> bool| answers.iter().filter(|(_, a)| wanted(a)).count();
    let (errors, throttled, hangs) = (
        kinds(|a| *a == Answer::ServerError),
        kinds(|a| *a == Answer::Throttled),
        kinds(|a| *a == Answer::Hang),
    );
    println!(
        "{} requests: {errors} 5xx, {throttled} 429, {hangs} hangs; {expired} expired",
        answers.len()
    );
    assert!(errors > 0 && throttled > 0 && hangs > 0, "seed {seed}");
    assert!(expired > 0, "seed {seed}: no message expired");
    assert_eq!(twilio.requests().len(), answers.len());
}

/// The SMTP server is down (its port refuses connections) while mail is queued, then comes up on that port:
/// the refused attempts are transient failures, retried, and the mail is delivered once the server is back.
/// The "down for 20 s" passes on the simulated clock: the attempts while it is down are made at
/// clock times 0–20 s apart (each a real refused connection); only the server's start takes real time.
#[tokio::test]
async fn mail_queued_while_the_smtp_server_is_down_is_delivered_after_it_returns() {
    let down = closed_port();
    let port = down.port;
    let (app, _dir) = spawn_gateway(|s| {
        s.gateway.channels.email.provider = reclaim_common::settings::ProviderKind::Smtp;
        s.gateway.smtp.host = "127.0.0.1".into();
        s.gateway.smtp.port = port;
        s.gateway.smtp.security = reclaim_common::settings::SmtpSecurity::None;
        s.gateway.smtp.from = "Reclaim <no-reply@reclaim.test>".into();
        s.gateway.smtp.timeout_ms = 5_000;
        // Enough attempts to outlast the outage: it is the retries, not their budget, under test here.
        s.gateway.retry.max_attempts = 50;
        s.gateway.retry.base_ms = 1_000;
        s.gateway.retry.max_ms = 4_000;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            enqueue(
                &app,
                &json!({"channel": "email", "to": format!("user{i}@example.com"), "template": "recovery_code",
                        "data": {"code": format!("{:06}", i)}, "fallback": []}),
            )
            .await,
        );
    }
    // Down for 20 s of clock: every due message is tried and refused, again and again.
    let start = Utc::now();
    let mut clock = start;
    while clock < start + TimeDelta::seconds(20) {
        app.delivery.drain_at(clock).await.expect("drain");
        clock += TimeDelta::seconds(1);
    }
    for id in &ids {
        let message = get_message(&app, id).await;
        assert_eq!(message["status"], "queued", "{message}");
        let history = message["history"].as_array().expect("history");
        assert!(history.len() >= 2, "{message}");
        assert!(
            history.iter().all(|a| a["outcome"] == "transient"),
            "{message}"
        );
    }
    // Up again, on the same port.
    drop(down);
    let server = SmtpServer::start_on(port, SmtpOptions::default());
    let mut rounds = 0;
    while count_unsettled(&app) > 0 {
        rounds += 1;
        assert!(rounds < 30, "mail still queued after the server returned");
        app.delivery.drain_at(clock).await.expect("drain");
        clock += TimeDelta::seconds(1);
    }
    for id in &ids {
        let message = get_message(&app, id).await;
        assert_eq!(message["status"], "sent", "{message}");
    }
    let mut received: Vec<String> = server.messages().into_iter().flat_map(|m| m.to).collect();
    received.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("user{i}@example.com")).collect();
    assert_eq!(received, expected, "each mail delivered exactly once");
}

/// A small tmpfs mounted for one test, unmounted (lazily, as the services may still hold files) when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Needs root (CI runs as root); without it the test fails here, saying so.
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs failed: this test needs root (or CAP_SYS_ADMIN)"
        );
        Self { path, _dir: dir }
    }

    /// Writes a file until the disk is full; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        loop {
            if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(error.raw_os_error(), Some(28), "ENOSPC expected: {error}");
                return filler;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn status_of(response: reqwest::Response) -> (u16, Option<String>, serde_json::Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        retry_after,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

async fn ready(app: &TestApp, base: &str) -> u16 {
    app.client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("ready")
        .status()
        .as_u16()
}

/// SQLite on a full disk: a real 4 MB tmpfs holds the database, and a file fills it to the last byte. Writes
/// (a message enqueued, a password recorded) answer 503 `database_unavailable` with `Retry-After` — not 500,
/// no panic — reads still answer, and both services' `/health/ready` say not ready. Once the filler is
/// deleted, everything works again, nothing accepted before is lost, and `PRAGMA integrity_check` is ok.
/// SQLite whatever `TEST_DATABASE_URL` says: this fault is SQLite's. Needs root to mount the tmpfs.
#[tokio::test]
async fn sqlite_on_a_full_disk_answers_503_and_recovers_without_corruption() {
    use crate::support::plugin::{new_id, post};
    let disk = SmallDisk::mount("4m");
    let db_path = disk.path.join("reclaim.db");
    let url = format!("sqlite://{}", db_path.display());
    let (app, _dir) = spawn_gateway(|s| {
        s.database.url = reclaim_common::settings::DatabaseUrl::new(&url);
    })
    .await;
    let message = |i: usize| {
        json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
               "data": {"code": format!("{i:06}")}})
    };
    let before = enqueue(&app, &message(0)).await;
    assert_eq!(ready(&app, &app.gateway).await, 200);

    let filler = disk.fill();
    // The first write that needs room fails; a write that fits in space SQLite already holds may still pass.
    let mut accepted = vec![before.clone()];
    let mut refused = None;
    for i in 1..200 {
        let response = crate::gateway_messages::post_message(&app, &message(i), None).await;
        let (status, retry_after, body) = status_of(response).await;
        if status == 202 {
            accepted.push(body["id"].as_str().expect("id").to_string());
            continue;
        }
        refused = Some((status, retry_after, body));
        break;
    }
    let (status, retry_after, body) = refused.expect("a write on a full disk is refused");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let (status, _, body) = status_of(
        post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": new_id(), "password": "a fine long password"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert_eq!(ready(&app, &app.gateway).await, 503);
    assert_eq!(ready(&app, &app.plugin).await, 503);
    // Reads still answer.
    assert_eq!(get_message(&app, &before).await["status"], "queued");

    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(ready(&app, &app.gateway).await, 200);
    assert_eq!(ready(&app, &app.plugin).await, 200);
    accepted.push(enqueue(&app, &message(999)).await);
    let (status, _, body) = status_of(
        post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": new_id(), "password": "a fine long password"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.delivery.drain().await.expect("drain");
    for id in &accepted {
        assert_eq!(get_message(&app, id).await["status"], "sent");
    }
    assert_eq!(count_messages(&app), accepted.len() as i64);
    assert_eq!(integrity_check(&db_path), ["ok"]);
}

/// `PRAGMA integrity_check` on the SQLite database at `path`, through a connection of its own.
fn integrity_check(path: &std::path::Path) -> Vec<String> {
    use diesel::Connection;
    #[derive(diesel::QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open");
    diesel::sql_query("PRAGMA integrity_check")
        .load::<Check>(&mut conn)
        .expect("integrity_check")
        .into_iter()
        .map(|c| c.integrity_check)
        .collect()
}

/// Files made immutable (`chattr +i`: no process may write them, root included, not even through a file
/// it already holds open) until dropped. Needs root and a file system with the attribute (ext4, xfs, btrfs).
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(files: &[std::path::PathBuf]) -> Self {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .args(files)
            .status()
            .expect("run chattr");
        assert!(
            status.success(),
            "chattr +i failed: this test needs root and a file system with the immutable attribute"
        );
        Self(files.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .args(&self.0)
            .status();
    }
}

/// SQLite on a read-only disk: the database and its WAL become immutable while the services hold them open
/// (`chattr +i`, which refuses writes even through open files, as a disk remounted read-only does; a real
/// read-only remount is refused while files are open for writing). Writes answer 503 `database_unavailable`,
/// reads still answer, both `/health/ready` answer 503; once the files are writable again everything
/// works, nothing accepted is lost and `PRAGMA integrity_check` is ok. SQLite whatever `TEST_DATABASE_URL`
/// says; needs root.
#[tokio::test]
async fn sqlite_on_a_read_only_disk_answers_503_and_recovers_without_corruption() {
    use crate::support::plugin::{new_id, post};
    let dir = tempfile::tempdir().expect("dir");
    let db_path = dir.path().join("reclaim.db");
    let url = format!("sqlite://{}", db_path.display());
    let (app, _dir) = spawn_gateway(|s| {
        s.database.url = reclaim_common::settings::DatabaseUrl::new(&url);
    })
    .await;
    let message = |i: usize| {
        json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
               "data": {"code": format!("{i:06}")}})
    };
    let before = enqueue(&app, &message(0)).await;
    assert_eq!(ready(&app, &app.gateway).await, 200);

    let mut wal = db_path.clone().into_os_string();
    wal.push("-wal");
    let frozen = Immutable::set(&[db_path.clone(), wal.into()]);
    let response = crate::gateway_messages::post_message(&app, &message(1), None).await;
    let (status, retry_after, body) = status_of(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    let (status, _, body) = status_of(
        post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": new_id(), "password": "a fine long password"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
    assert_eq!(ready(&app, &app.gateway).await, 503);
    assert_eq!(ready(&app, &app.plugin).await, 503);
    assert_eq!(get_message(&app, &before).await["status"], "queued");

    drop(frozen);
    assert_eq!(ready(&app, &app.gateway).await, 200);
    assert_eq!(ready(&app, &app.plugin).await, 200);
    let after = enqueue(&app, &message(2)).await;
    let (status, _, body) = status_of(
        post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": new_id(), "password": "a fine long password"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.delivery.drain().await.expect("drain");
    for id in [&before, &after] {
        assert_eq!(get_message(&app, id).await["status"], "sent");
    }
    assert_eq!(count_messages(&app), 2);
    assert_eq!(integrity_check(&db_path), ["ok"]);
}
