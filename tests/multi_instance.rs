//! Several gateway instances on one PostgreSQL database: three `reclaim serve gateway` processes (the real
//! binary, API and workers) on one fresh database, SMS on a counting Twilio stand-in.
//!
//! - Delivery: verifications are started through the three instances in turn by 32 concurrent clients, to
//!   distinct numbers: 600 by default (CI), 5,000 with `MULTI_FULL=1` (the size of issue 13's benchmark run).
//!   After some messages were sent, one instance is taken out of the clients' rotation (as a load balancer
//!   would) and killed with SIGKILL while its worker waits for the stand-in's answer to a send. The other two
//!   take over its leased messages once the lease (`gateway.worker.lease_seconds` = 2, send timeout below it)
//!   runs out. Every verification's message reaches the stand-in exactly once, except a message the killed
//!   instance held at the kill (DESIGN: a duplicate only when a crash falls between the provider's acceptance
//!   and our commit); those are the messages claimed twice, at most `gateway.worker.concurrency` of them, and
//!   none is left queued or sending.
//! - Limits: 10 concurrent starts for one number through three instances with a destination limit of 3 per
//!   window: exactly 3 are admitted, 7 refused with `429 destination_window`.
//!
//! Each instance's Twilio `base_url` carries its own path prefix (`/i0`, `/i1`, `/i2`), so the stand-in
//! knows which instance sent each request. On the PostgreSQL run only (`TEST_DATABASE_URL`); on SQLite the
//! tests print a note and return. Measured on 2 shared cores (debug build): the delivery test takes about 5 s
//! with 600 verifications and about 40 s with 5,000; the limits test about 2 s.

use crate::support::twilio_faults::{FaultyTwilio, Recorded, Reply};
use crate::support::{expected_backend, peer, TestDatabase};
use diesel::prelude::*;
use reclaim_common::Db;
use reclaim_gateway::schema::gateway_messages;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Far above what any wait here needs; reaching it means the event never came.
const BOUND: Duration = Duration::from_secs(300);
const API_TOKEN: &str = "multi-instance-api-token";
const INSTANCES: usize = 3;
/// Concurrent clients starting verifications.
const CLIENTS: usize = 32;
/// `gateway.worker.concurrency` of each instance.
const WORKER_CONCURRENCY: usize = 4;
/// Account SID the instances send as.
const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// Verifications started in the delivery test: 5,000 with `MULTI_FULL=1`, else 600.
fn verifications() -> usize {
    match std::env::var("MULTI_FULL").as_deref() {
        Ok("1") => 5_000,
        _ => 600,
    }
}

/// The distinct, valid US number of verification `i`.
fn number(i: usize) -> String {
    format!("+1415200{i:04}")
}

/// `reclaim serve gateway` settings of instance `index`: SMS to the stand-in under `/i<index>`, short
/// leases, and `limits` (a TOML `[gateway.limits.destination]` body).
fn config(database_url: &str, twilio_url: &str, index: usize, destination_limits: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"
pool_size = 8

[http]
workers = 2
shutdown_timeout_seconds = 1

[gateway]
listen = "127.0.0.1:0"
# Where Twilio would post status callbacks; the stand-in posts none.
public_url = "https://reclaim.example.test"

[gateway.api]
tokens = ["{API_TOKEN}"]

[gateway.worker]
concurrency = {WORKER_CONCURRENCY}
lease_seconds = 2
send_timeout_ms = 1500
poll_interval_ms = 50

[gateway.limits.destination]
{destination_limits}

# Every number is its own prefix: the prefix limit stays out of the way of 5,000 numbers.
[gateway.sms]
prefix_digits = 15

[gateway.channels.sms]
provider = "twilio"
fallback = []

[gateway.twilio]
base_url = "{twilio_url}/i{index}"
account_sid = "{TWILIO_SID}"
auth_token = "multi-instance-twilio-token"
from = "+14155552671"
"#
    )
}

/// One `reclaim serve gateway` process; killed when dropped.
struct Instance {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// Starts the binary with `config` and waits (bounded) for the gateway's `listening on` log line.
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("reclaim.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RECLAIM") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(&path)
            .args(["serve", "gateway"])
            .env("RECLAIM__TELEMETRY__FORMAT", "json")
            .env("RECLAIM__TELEMETRY__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reclaim serve gateway");
        const LISTENING: &str = "gateway listening on http://127.0.0.1:";
        let logs = child.stderr.take().expect("stderr");
        let line = peer::wait_for_line("reclaim serve gateway", &mut child, logs, BOUND, |l| {
            l.contains(LISTENING)
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
        let port: String = line
            .split_once(LISTENING)
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default();
        assert!(!port.is_empty(), "no port in {line:?}");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, migrated PostgreSQL database and `INSTANCES` gateways on it, started one after the other.
async fn start_instances(
    twilio_url: &str,
    destination_limits: &str,
) -> (TestDatabase, Db, Vec<Instance>) {
    let database = TestDatabase::fresh();
    let settings = crate::support::test_settings(&database.url);
    let db = Db::connect(&settings.database).expect("connect");
    {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.migrate())
            .await
            .expect("join")
            .expect("migrate");
    }
    let configs: Vec<String> = (0..INSTANCES)
        .map(|i| config(&database.url, twilio_url, i, destination_limits))
        .collect();
    let instances = tokio::task::spawn_blocking(move || {
        configs
            .iter()
            .map(|c| Instance::start(c))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    (database, db, instances)
}

/// The instance (0, 1, 2) whose `base_url` prefix the request's path carries.
fn sender(request: &Recorded) -> usize {
    (0..INSTANCES)
        .find(|i| request.path.starts_with(&format!("/i{i}/")))
        .unwrap_or_else(|| panic!("request from no instance: {}", request.path))
}

/// What the clients saw.
#[derive(Default)]
struct Clients {
    /// The next verification to start.
    next: AtomicUsize,
    /// Verifications answered 201.
    started: AtomicUsize,
    /// Answers other than 201, with their bodies.
    wrong: Mutex<Vec<String>>,
    /// Instance 0 is out of the rotation.
    drained: AtomicBool,
    /// Requests to instance 0 not yet answered.
    in_flight_0: AtomicUsize,
}

/// Starts verifications until all are taken, each through the next instance in turn (skipping instance 0
/// once it is drained).
async fn client(
    clients: Arc<Clients>,
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    total: usize,
) {
    loop {
        let i = clients.next.fetch_add(1, Ordering::SeqCst);
        if i >= total {
            return;
        }
        let mut target = i % INSTANCES;
        if target == 0 {
            clients.in_flight_0.fetch_add(1, Ordering::SeqCst);
            if clients.drained.load(Ordering::SeqCst) {
                clients.in_flight_0.fetch_sub(1, Ordering::SeqCst);
                target = 1 + i % (INSTANCES - 1);
            }
        }
        let response = http
            .post(format!("{}/v1/verifications", urls[target]))
            .bearer_auth(API_TOKEN)
            .json(&json!({"channel": "sms", "to": number(i), "purpose": "verification"}))
            .send()
            .await;
        if target == 0 {
            clients.in_flight_0.fetch_sub(1, Ordering::SeqCst);
        }
        match response {
            Ok(r) if r.status() == 201 => {
                clients.started.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                clients.wrong.lock().expect("lock").push(format!(
                    "{} via instance {target}: {status} {body}",
                    number(i)
                ));
            }
            Err(error) => clients
                .wrong
                .lock()
                .expect("lock")
                .push(format!("{} via instance {target}: {error:?}", number(i))),
        }
    }
}

/// Polls `done` every 20 ms until it holds; fails after [`BOUND`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < BOUND, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message's (destination, status, attempts).
fn messages(db: &Db) -> Vec<(String, String, i32)> {
    let mut conn = db.get().expect("conn");
    gateway_messages::table
        .select((
            gateway_messages::destination,
            gateway_messages::status,
            gateway_messages::attempts,
        ))
        .load(&mut conn)
        .expect("messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_deliver_every_verification_once_and_take_over_a_killed_ones_leases() {
    if expected_backend() != "postgres" {
        println!("PostgreSQL only: skipped on the SQLite run");
        return;
    }
    let total = verifications();
    let began = Instant::now();
    // Once armed, a send from instance 0 gets no answer for a minute: its worker is then surely holding a
    // message, recorded by the stand-in, when it is killed.
    let armed = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let sids = Arc::new(AtomicUsize::new(0));
    let twilio = FaultyTwilio::start_with({
        let (armed, held) = (armed.clone(), held.clone());
        Arc::new(move |request: &Recorded| {
            let sid = format!("SM{:032x}", sids.fetch_add(1, Ordering::SeqCst));
            if sender(request) == 0 && armed.load(Ordering::SeqCst) {
                held.fetch_add(1, Ordering::SeqCst);
                return Reply::created(&sid).after(Duration::from_secs(60));
            }
            Reply::created(&sid)
        })
    })
    .await;
    let (_database, db, mut instances) = start_instances(&twilio.url, "").await;
    let urls = Arc::new(instances.iter().map(|i| i.url.clone()).collect::<Vec<_>>());
    let clients = Arc::new(Clients::default());
    // A new connection per request: a kept-alive connection the server closes just as a client reuses it
    // would fail a request that was never processed, and a start cannot be retried blindly.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(clients.clone(), http.clone(), urls.clone(), total)))
        .collect();

    // Mid-delivery: a sixth of the messages sent, instance 0 among the senders.
    wait_until("some messages sent, some by instance 0", || {
        let requests = twilio.requests();
        requests.len() >= total / 6 && requests.iter().any(|r| sender(r) == 0)
    })
    .await;
    clients.drained.store(true, Ordering::SeqCst);
    wait_until("instance 0 to answer its last API request", || {
        clients.in_flight_0.load(Ordering::SeqCst) == 0
    })
    .await;
    armed.store(true, Ordering::SeqCst);
    wait_until("instance 0 to wait on a send", || {
        held.load(Ordering::SeqCst) > 0
    })
    .await;
    instances[0].kill();
    let started_at_kill = clients.started.load(Ordering::SeqCst);
    let sent_at_kill = twilio.requests().len();

    for task in tasks {
        task.await.expect("client");
    }
    let wrong = clients.wrong.lock().expect("lock").clone();
    assert!(wrong.is_empty(), "starts not answered 201: {wrong:?}");
    assert_eq!(clients.started.load(Ordering::SeqCst), total);
    let db_reader = db.clone();
    let started = Instant::now();
    loop {
        let db = db_reader.clone();
        let rows = tokio::task::spawn_blocking(move || messages(&db))
            .await
            .expect("join");
        if rows.len() == total && rows.iter().all(|(_, status, _)| status == "sent") {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "not every message sent: {:?}",
            rows.iter()
                .filter(|(_, status, _)| status != "sent")
                .take(20)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = tokio::task::spawn_blocking(move || messages(&db))
        .await
        .expect("join");

    // Requests per destination, in the order the stand-in received them.
    let mut sends: HashMap<String, Vec<usize>> = HashMap::new();
    for request in twilio.requests() {
        let to = request.field("To").expect("To").to_string();
        sends.entry(to).or_default().push(sender(&request));
    }
    let numbers: HashSet<String> = (0..total).map(number).collect();
    let strangers: Vec<&String> = sends.keys().filter(|n| !numbers.contains(*n)).collect();
    assert!(
        strangers.is_empty(),
        "sends to numbers never started: {strangers:?}"
    );
    let missing: Vec<&String> = numbers.iter().filter(|n| !sends.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} never delivered: {missing:?}",
        missing.len()
    );

    // Taken over: claimed a second time, after the killed instance's lease ran out.
    let taken_over: HashSet<String> = rows
        .iter()
        .filter(|(_, _, attempts)| *attempts >= 2)
        .map(|(to, _, _)| to.clone())
        .collect();
    assert!(
        !taken_over.is_empty() && taken_over.len() <= WORKER_CONCURRENCY,
        "{} messages claimed twice; the killed instance held between 1 and {WORKER_CONCURRENCY}",
        taken_over.len()
    );
    // The killed instance may have died before its request for a message it held reached the stand-in: then
    // the survivor's send is the only one.
    for to in &taken_over {
        let senders = &sends[to];
        assert_ne!(
            senders.last(),
            Some(&0),
            "{to}: taken over, but never finished by a surviving instance: {senders:?}"
        );
    }
    let duplicated: Vec<(&String, &Vec<usize>)> =
        sends.iter().filter(|(_, s)| s.len() > 1).collect();
    for (to, senders) in &duplicated {
        assert!(
            taken_over.contains(*to) && senders.len() == 2 && senders[0] == 0,
            "{to} sent {} times (by {senders:?}): only a message the killed instance held may be sent twice, \
             first by it",
            senders.len()
        );
    }
    let by_instance: Vec<usize> = (0..INSTANCES)
        .map(|i| sends.values().flatten().filter(|s| **s == i).count())
        .collect();
    println!(
        "{total} verifications through {INSTANCES} instances in {:.1} s; instance 0 killed after {started_at_kill} \
         starts and {sent_at_kill} sends, holding {} messages (duplicates {}); sends per instance {by_instance:?}",
        began.elapsed().as_secs_f64(),
        taken_over.len(),
        duplicated.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_admit_exactly_the_destination_limit() {
    if expected_backend() != "postgres" {
        println!("PostgreSQL only: skipped on the SQLite run");
        return;
    }
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let (_database, _db, instances) = start_instances(
        &twilio.url,
        "cooldown_seconds = 0\nmax_sends = 3\nwindow_seconds = 3600",
    )
    .await;
    let http = reqwest::Client::new();
    let answers = futures_util::future::join_all((0..10).map(|i| {
        let request = http
            .post(format!("{}/v1/verifications", instances[i % INSTANCES].url))
            .bearer_auth(API_TOKEN)
            .json(&json!({"channel": "sms", "to": "+14155550100", "purpose": "recovery"}));
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("json");
            (status, body)
        }
    }))
    .await;
    let admitted = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(admitted, 3, "{answers:?}");
    assert_eq!(refused.len(), 7, "{answers:?}");
    assert!(
        refused
            .iter()
            .all(|b| b["error"]["code"] == "destination_window"),
        "{refused:?}"
    );
}
