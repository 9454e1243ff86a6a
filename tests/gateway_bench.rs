//! Gateway benchmark (ignored in normal runs): enqueue throughput and enqueue→provider latency against the
//! `discard` provider, next to the throughput of a trivial actix endpoint (`/health/alive` on the same
//! server, same middleware) measured in the same run. Results go to `perf/gateway-<backend>.md`.
//! The latency ends when the provider call returned: the `discard` provider's message id records that
//! instant, and the attempt rows store the id.
//!
//! Run on a release build (a debug build refuses, so dev-build numbers never land in `perf/`):
//! `env -u TEST_DATABASE_URL cargo nextest run --release -E 'test(/gateway_bench/)' --run-ignored only`
//! (SQLite), and with `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` for PostgreSQL.

use crate::support::{spawn_app_in, API_TOKEN};
use diesel::prelude::*;
use reclaim_common::settings::ProviderKind;
use reclaim_gateway::providers::DiscardProvider;
use reclaim_gateway::schema::{gateway_attempts, gateway_messages};
use reclaim_gateway::RunMode;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const REQUESTS: usize = 2_000;
const CLIENTS: usize = 16;
/// Messages sent one at a time (10 ms apart) after the load, for latency without a backlog.
const LIGHT: usize = 200;

/// Sends `REQUESTS` requests from `CLIENTS` concurrent clients; returns requests per second.
async fn hammer(make: impl Fn(usize) -> reqwest::RequestBuilder + Clone + Send + 'static) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            for i in (client..REQUESTS).step_by(CLIENTS) {
                let response = make(i).send().await.expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.expect("body");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    REQUESTS as f64 / started.elapsed().as_secs_f64()
}

/// The 1-minute load average: other work on the machine slows every figure here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --run-ignored only"]
async fn gateway_bench_enqueue_throughput_and_latency() {
    if cfg!(debug_assertions) {
        panic!(
            "the gateway benchmark runs on release builds only: \
             cargo nextest run --release -E 'test(/gateway_bench/)' --run-ignored only"
        );
    }
    let dir = tempfile::tempdir().expect("dir");
    let file_dir = dir.path().to_string_lossy().into_owned();
    let app = spawn_app_in(RunMode::All, |s| {
        s.http.workers = 2;
        s.database.pool_size = 8;
        s.gateway.file.dir = file_dir;
        s.gateway.channels.sms.provider = ProviderKind::Discard;
        s.gateway.worker.poll_interval_ms = 5;
        s.telemetry.level = "warn".into();
    })
    .await;
    let client = app.client.clone();
    let load_before = load_average();

    let alive = app.gateway_url("/health/alive");
    let trivial = {
        let client = client.clone();
        hammer(move |_| client.get(&alive)).await
    };

    let url = app.gateway_url("/v1/messages");
    let started = Instant::now();
    let enqueue = {
        let client = client.clone();
        hammer(move |i| {
            client
                .post(&url)
                .bearer_auth(API_TOKEN)
                .json(&serde_json::json!({
                    "channel": "sms", "to": "+14155550100", "template": "verification_code",
                    "data": {"code": format!("{:06}", i)}, "fallback": []
                }))
        })
        .await
    };

    let deadline = Instant::now() + Duration::from_secs(300);
    let count_sent = || {
        let mut conn = app.db.get().expect("conn");
        gateway_messages::table
            .filter(gateway_messages::status.eq("sent"))
            .count()
            .get_result::<i64>(&mut *conn)
            .expect("count")
    };
    while count_sent() < REQUESTS as i64 {
        assert!(Instant::now() < deadline, "delivery did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_delivered_after = started.elapsed();

    // Light load: one client, one message at a time, as a single sign-in flow sees it.
    let light_started = chrono::Utc::now().naive_utc();
    for i in 0..LIGHT {
        let response = client
            .post(app.gateway_url("/v1/messages"))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({
                "channel": "sms", "to": "+14155550100", "template": "verification_code",
                "data": {"code": format!("{:06}", i)}, "fallback": []
            }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 202);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while count_sent() < (REQUESTS + LIGHT) as i64 {
        assert!(Instant::now() < deadline, "delivery did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut conn = app.db.get().expect("conn");
    let created: HashMap<String, chrono::NaiveDateTime> = gateway_messages::table
        .select((gateway_messages::id, gateway_messages::created_at))
        .load::<(String, chrono::NaiveDateTime)>(&mut *conn)
        .expect("messages")
        .into_iter()
        .collect();
    let attempts = gateway_attempts::table
        .select((
            gateway_attempts::message_id,
            gateway_attempts::provider_message_id,
        ))
        .load::<(String, Option<String>)>(&mut *conn)
        .expect("attempts");
    assert_eq!(attempts.len(), REQUESTS + LIGHT);
    // (created_at, instant the provider call returned) of every attempt; each message has one attempt.
    let spans: Vec<(chrono::NaiveDateTime, chrono::NaiveDateTime)> = attempts
        .iter()
        .map(|(id, provider_id)| {
            let created = *created.get(id).expect("the attempt's message");
            let returned = provider_id
                .as_deref()
                .and_then(DiscardProvider::returned_at)
                .expect("the discard provider's id records when its send returned")
                .naive_utc();
            assert!(
                returned >= created,
                "{id}: returned {returned} before created {created}"
            );
            (created, returned)
        })
        .collect();
    let latencies = |light: bool| {
        let mut values: Vec<f64> = spans
            .iter()
            .filter(|(created, _)| (*created >= light_started) == light)
            .map(|(created, returned)| {
                (*returned - *created).num_microseconds().unwrap_or(0) as f64 / 1000.0
            })
            .collect();
        values.sort_by(|a, b| a.total_cmp(b));
        values
    };
    let (heavy, light) = (latencies(false), latencies(true));
    assert_eq!((heavy.len(), light.len()), (REQUESTS, LIGHT));

    let report = format!(
        "# Gateway benchmark — {backend}\n\n\
         Written by `tests/gateway_bench.rs` on {date} (profile: release; machine: {cpus} CPU(s) shared \
         with other work, 1-minute load average {load_before} before / {load_after} after). {REQUESTS} \
         requests from {CLIENTS} concurrent HTTP clients against one gateway (2 HTTP workers, {workers} delivery workers, `discard` provider, database pool 8).\n\n\
         | Measure | Value |\n|---|---|\n\
         | Trivial actix endpoint (`GET /health/alive`, same server and middleware) | {trivial:.0} req/s |\n\
         | Enqueue (`POST /v1/messages`: auth, validation, render, durable insert) | {enqueue:.0} req/s |\n\
         | Enqueue / trivial | {ratio:.2} |\n\
         | Under load: enqueue → provider call, p50 / p99 | {p50:.1} ms / {p99:.1} ms |\n\
         | Under load: first enqueue → all {REQUESTS} delivered | {total:.2} s |\n\
         | Light load ({LIGHT} messages one at a time): enqueue → provider call, p50 / p99 | {lp50:.1} ms / {lp99:.1} ms |\n\n\
         Enqueue → provider is from `message.created_at` (set by the enqueue handler before its durable \
         insert) to the instant the provider call returned (recorded by the `discard` provider in the message \
         id it returns, stored with the attempt): it covers the insert's commit, the wait for a worker, the \
         claim transaction, decryption, rendering and the provider call, but not the transaction that records \
         the outcome afterwards. Under load, delivery runs while the enqueue load is on, so the latency is \
         mostly backlog; the light-load line shows the pipeline's own delay (claim polling every 5 ms when \
         idle).\n",
        backend = app.database.backend,
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        load_after = load_average(),
        workers = app.settings.gateway.worker.concurrency,
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        ratio = enqueue / trivial,
        p50 = percentile(&heavy, 0.50),
        p99 = percentile(&heavy, 0.99),
        lp50 = percentile(&light, 0.50),
        lp99 = percentile(&light, 0.99),
        total = all_delivered_after.as_secs_f64(),
    );
    std::fs::write(format!("perf/gateway-{}.md", app.database.backend), report)
        .expect("write the report");
}
