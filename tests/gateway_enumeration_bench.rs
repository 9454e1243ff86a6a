//! Anti-enumeration benchmark (ignored in normal runs): `POST /v1/verifications` for a destination marked
//! unknown (`"known": false`, nothing is sent) must answer like one for a known destination: same status,
//! same body shape (the tests in `gateway_verifications` check those), and the same time within noise. The
//! abuse limits run for both kinds (each start is counted per destination and per number prefix). This
//! measures the time: 200 starts of each kind, alternating one at a time on one keep-alive connection, and
//! writes `perf/verification-enumeration-<backend>.md` (goal from issue 10: p50 difference under 5 ms).
//!
//! Run on a release build (a debug build refuses):
//! `env -u TEST_DATABASE_URL cargo nextest run --release -E 'test(/enumeration_bench/)' --run-ignored only`
//! (SQLite), and with `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` for PostgreSQL.

use crate::support::{expected_backend, spawn_app_in, API_TOKEN};
use reclaim_common::settings::ProviderKind;
use reclaim_gateway::RunMode;
use serde_json::{json, Value};
use std::time::Instant;

const EACH: usize = 200;
const WARM_UP: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// An answer without what differs between any two starts (ids, times, the masked number).
fn shape(mut view: Value) -> Value {
    for key in [
        "id",
        "created_at",
        "expires_at",
        "resend_available_at",
        "to",
    ] {
        view[key] = Value::Null;
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --run-ignored only"]
async fn enumeration_bench_unknown_destinations_answer_in_the_same_time() {
    if cfg!(debug_assertions) {
        panic!(
            "the enumeration benchmark runs on release builds only: \
             cargo nextest run --release -E 'test(/enumeration_bench/)' --run-ignored only"
        );
    }
    let app = spawn_app_in(RunMode::ApiOnly, |s| {
        s.gateway.channels.sms.provider = ProviderKind::Discard;
        // Every number here shares one prefix; the cap per prefix would refuse both kinds alike after 100.
        s.gateway.sms.prefix_max_sends_per_hour = 100_000;
        s.telemetry.level = "warn".into();
    })
    .await;
    let load_before = load_average();
    let started = Instant::now();
    let mut times = [Vec::new(), Vec::new()];
    let mut shapes: [Option<Value>; 2] = [None, None];
    for round in 0..(EACH + WARM_UP) {
        // Alternate which kind goes first, so that neither always follows the other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for kind in order {
            let to = format!("+1415555{:04}", round * 2 + kind);
            let body =
                json!({"channel": "sms", "to": to, "purpose": "recovery", "known": kind == 0});
            let sent = Instant::now();
            let response = app
                .client
                .post(app.gateway_url("/v1/verifications"))
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.expect("json");
            let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 201, "{answer}");
            let answer = shape(answer);
            match &shapes[kind] {
                None => shapes[kind] = Some(answer),
                Some(first) => assert_eq!(first, &answer),
            }
            if round >= WARM_UP {
                times[kind].push(elapsed);
            }
        }
    }
    assert_eq!(shapes[0], shapes[1], "known and unknown answers differ");
    let total = started.elapsed().as_secs_f64();
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let row = |name: &str, t: &[f64]| {
        format!(
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            percentile(t, 0.5),
            percentile(t, 0.9),
            percentile(t, 0.99)
        )
    };
    let difference = (percentile(&times[0], 0.5) - percentile(&times[1], 0.5)).abs();
    let backend = expected_backend();
    let report = format!(
        "# Anti-enumeration: verification starts for known and unknown destinations ({backend})\n\n\
         Produced by `tests/gateway_enumeration_bench.rs` on a release build; every number comes from one run \
         ({total:.1} s; 1-minute load average {load_before} before, {} after). {EACH} starts of each kind \
         (after {WARM_UP} warm-up rounds), alternating one at a time on one keep-alive connection, each to \
         its own number (the cap per number prefix raised so that neither kind is refused); the gateway runs \
         API only (no delivery worker), one HTTP worker; the abuse limits count both kinds.\n\n\
         | destination | p50 | p90 | p99 |\n|---|---:|---:|---:|\n{}\n{}\n\n\
         p50 difference: **{difference:.3} ms** (goal: under 5 ms). Status and body shape were the same \
         for all {} answers (ids, times and the masked number aside).\n\n\
         What differs inside: a known destination's start also seals and inserts the outbox message in the \
         same transaction.\n",
        load_average(),
        row("known (message queued)", &times[0]),
        row("unknown (nothing sent)", &times[1]),
        2 * (EACH + WARM_UP),
    );
    let path = format!(
        "{}/perf/verification-enumeration-{backend}.md",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&path, report).expect("write the report");
}
