//! The load driver behind `perf/RESULTS.md` (issue 13, item 4): one table, every row measured in one run
//! of this program on this machine, with the date, commit and machine it ran on. Run it with `perf/run`
//! (builds the release binaries first); release builds only, a debug build refuses.
//!
//! - Plugin and guard rows: `plugin/examples/plugin_bench.rs` and `guard_bench.rs`, run as child processes
//!   with `BENCH_SUMMARY=<file>` (their JSON summary) and `BENCH_OUT` in a temporary folder, so the
//!   committed `perf/plugin.md` and `perf/guard.md` are left alone.
//! - Gateway rows, on SQLite and on PostgreSQL: the release `reclaim serve gateway` binary (`discard` SMS
//!   provider, delivery workers as configured by default), 32 keep-alive HTTP clients in this process.
//!   Enqueue rounds alternate with raw insert rounds into `perf_raw`, a copy of `gateway_messages`
//!   (PostgreSQL: pgbench `-c 32 -j 2`; SQLite: 32 threads, each its own connection with the gateway's
//!   pragmas, one `BEGIN IMMEDIATE` … `COMMIT` per row), with values copied from a row the gateway wrote.
//!
//! Environment: `PERF_QUICK=1` (short rounds, for trying it out), `PERF_OUT` (default `perf/RESULTS.md`),
//! `PERF_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`; a scratch database
//! is created next to it and dropped at the end), `PERF_BIN_DIR` (default: the folder above this
//! example's binary, i.e. `target/release`).

#[path = "../plugin/examples/shared/machine.rs"]
mod machine;
use machine::{cpu_model, load_average, status_kib};

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use reclaim_gateway::providers::DiscardProvider;
use reclaim_gateway::schema::{gateway_attempts, gateway_messages};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "perf-report-api-token";
/// Concurrent HTTP clients (and raw insert clients) of the enqueue comparison.
const CLIENTS: usize = 32;
/// Overload: this many times the clients the service was measured with.
const OVERLOAD_FACTOR: usize = 10;
/// Far above any wait here; reaching it is a failure.
const BOUND: Duration = Duration::from_secs(180);

/// Lengths of the parts of the run.
struct Plan {
    quick: bool,
    /// One enqueue or raw insert round.
    round: Duration,
    /// Alternating rounds of each kind.
    rounds: usize,
    /// Messages sent one at a time for the light-load latency.
    light: usize,
    /// Verification starts per second and for how long.
    verify_rate: u32,
    verify_seconds: u32,
    overload: Duration,
    /// `BENCH_SECONDS` of the plugin and guard benchmarks.
    plugin_seconds: u64,
    guard_seconds: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                round: Duration::from_secs(3),
                rounds: 2,
                light: 50,
                verify_rate: 20,
                verify_seconds: 3,
                overload: Duration::from_secs(4),
                plugin_seconds: 4,
                guard_seconds: 4,
            }
        } else {
            Self {
                quick,
                round: Duration::from_secs(8),
                rounds: 2,
                light: 200,
                verify_rate: 20,
                verify_seconds: 10,
                overload: Duration::from_secs(10),
                plugin_seconds: 10,
                guard_seconds: 12,
            }
        }
    }
}

/// One line of the table.
struct Row {
    measure: String,
    result: String,
    goal: String,
    met: String,
    date: String,
    load: (String, String),
}

/// What the rows share: where and on what they were measured.
struct Machine {
    cores: usize,
    cpu: String,
    commit: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        !cfg!(debug_assertions),
        "the perf report runs on release builds only: perf/run (cargo run --release --example perf_report)"
    );
    let plan = Plan::new(std::env::var("PERF_QUICK").as_deref() == Ok("1"));
    let out = PathBuf::from(std::env::var("PERF_OUT").unwrap_or_else(|_| "perf/RESULTS.md".into()));
    let bin_dir = match std::env::var("PERF_BIN_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .context("no folder above the example binary")?,
    };
    let pg_url = std::env::var("PERF_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    let machine = Machine {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        cpu: cpu_model(),
        commit: commit(),
    };
    let started = Instant::now();
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    eprintln!("[perf] plugin benchmark...");
    rows.extend(
        plugin_rows(&plan, &bin_dir, work.path())
            .unwrap_or_else(|e| failed_rows("Plugin check (plugin_bench)", &e)),
    );
    eprintln!("[perf] guard benchmark...");
    rows.extend(
        guard_rows(&plan, &bin_dir, work.path())
            .unwrap_or_else(|e| failed_rows("Guard pass-through (guard_bench)", &e)),
    );
    for backend in [Backend::Sqlite, Backend::Postgres] {
        eprintln!("[perf] gateway on {}...", backend.name());
        match gateway_rows(&plan, &bin_dir, work.path(), backend, &pg_url).await {
            Ok((more, note)) => {
                rows.extend(more);
                notes.push(note);
            }
            Err(e) => rows.extend(failed_rows(&format!("Gateway on {}", backend.name()), &e)),
        }
    }
    let report = render(&plan, &machine, &rows, &notes, started.elapsed());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &report)?;
    eprintln!("{report}\n[perf] written to {}", out.display());
    Ok(())
}

fn failed_rows(what: &str, error: &anyhow::Error) -> Vec<Row> {
    eprintln!("[perf] {what} failed: {error:#}");
    vec![Row {
        measure: what.to_string(),
        result: format!(
            "not measured: the run failed ({})",
            one_line(&format!("{error:#}"))
        ),
        goal: "—".into(),
        met: "not measured".into(),
        date: now(),
        load: (load_average(), load_average()),
    }]
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '|'], " ").chars().take(200).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Plugin and guard: the existing benchmarks as child processes.

/// Runs `bin_dir/examples/<name>` with a JSON summary requested; returns the summary.
fn run_bench(bin_dir: &Path, work: &Path, name: &str, seconds: u64) -> anyhow::Result<Value> {
    let binary = bin_dir.join("examples").join(name);
    anyhow::ensure!(binary.exists(), "{} is not built", binary.display());
    let summary = work.join(format!("{name}.json"));
    let status = Command::new(&binary)
        .env("BENCH_SECONDS", seconds.to_string())
        .env("BENCH_OUT", work.join(format!("{name}.md")))
        .env("BENCH_SUMMARY", &summary)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("start {}", binary.display()))?;
    anyhow::ensure!(status.success(), "{name} exited with {status}");
    let text =
        std::fs::read_to_string(&summary).with_context(|| format!("read {name}'s summary"))?;
    Ok(serde_json::from_str(&text)?)
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "not met" }.into()
}

fn plugin_rows(plan: &Plan, bin_dir: &Path, work: &Path) -> anyhow::Result<Vec<Row>> {
    let s = run_bench(bin_dir, work, "plugin_bench", plan.plugin_seconds)?;
    let date = now();
    let load = (text(&s, "load_before"), text(&s, "load_after"));
    let ratio = num(&s, "depth_24_ratio");
    let efficiency = num(&s, "http_vs_raw_per_cpu");
    Ok(vec![
        Row {
            measure: "Plugin check latency, history depth 24 vs depth 1 (median, SQLite)".into(),
            result: format!(
                "{:.1} ms vs {:.1} ms: **{ratio:.2}×**",
                num(&s, "depth_24_ms"),
                num(&s, "depth_1_ms")
            ),
            goal: "≤ 1.3× (issue 3)".into(),
            met: verdict(ratio <= 1.3),
            date: date.clone(),
            load: load.clone(),
        },
        Row {
            measure: format!(
                "Plugin HTTP check throughput vs raw argon2id rate ({} clients), per CPU-second",
                s.get("http_clients").and_then(Value::as_u64).unwrap_or(0)
            ),
            result: format!(
                "**{:.0}%** ({:.1} vs {:.1} per CPU-s; rounds {:.0}–{:.0}%; wall clock {:.0}%)",
                100.0 * efficiency,
                num(&s, "http_per_cpu"),
                num(&s, "raw_per_cpu"),
                100.0 * num(&s, "http_vs_raw_per_cpu_lowest"),
                100.0 * num(&s, "http_vs_raw_per_cpu_highest"),
                100.0 * num(&s, "http_vs_raw_wall"),
            ),
            goal: "≥ 85% (issue 3)".into(),
            met: verdict(efficiency >= 0.85),
            date: date.clone(),
            load: load.clone(),
        },
        Row {
            measure: format!(
                "Plugin peak RSS under 10× overload ({} clients, {} s, `max_queue_ms` = 250)",
                s.get("overload_clients")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                num(&s, "overload_seconds")
            ),
            result: format!(
                "**{:.1} MiB**; answered {} × 200, {} × 503, {} other",
                num(&s, "overload_peak_rss_mib"),
                num(&s, "overload_ok"),
                num(&s, "overload_503"),
                num(&s, "overload_other")
            ),
            goal: "—".into(),
            met: "—".into(),
            date,
            load,
        },
    ])
}

fn guard_rows(plan: &Plan, bin_dir: &Path, work: &Path) -> anyhow::Result<Vec<Row>> {
    let s = run_bench(bin_dir, work, "guard_bench", plan.guard_seconds)?;
    let date = now();
    let load = (text(&s, "load_before"), text(&s, "load_after"));
    let ratio = num(&s, "throughput_ratio");
    let added = num(&s, "added_p99_ms");
    Ok(vec![
        Row {
            measure: "Guard pass-through vs direct to the upstream (32 clients, settings flow fetch)".into(),
            result: format!(
                "throughput **{:.0}%** ({:.0} vs {:.0} req/s; per CPU-s {:.0}%); p99 {:.2} vs {:.2} ms: \
                 **+{added:.2} ms** (1 client: +{:.2} ms)",
                100.0 * ratio,
                num(&s, "guard_rate"),
                num(&s, "direct_rate"),
                100.0 * num(&s, "per_cpu_ratio"),
                num(&s, "guard_p99_ms"),
                num(&s, "direct_p99_ms"),
                num(&s, "light_added_p99_ms"),
            ),
            goal: "throughput ≥ 80%, added p99 < 2 ms (perf/guard.md)".into(),
            met: verdict(ratio >= 0.8 && added < 2.0),
            date: date.clone(),
            load: load.clone(),
        },
        Row {
            measure: format!(
                "Guard peak RSS under 10× overload ({} clients, {} s, pass-through)",
                num(&s, "overload_clients"),
                num(&s, "overload_seconds")
            ),
            result: format!(
                "**{:.1} MiB**; answered {} × 200, {} other",
                num(&s, "overload_peak_rss_mib"),
                num(&s, "overload_ok"),
                num(&s, "overload_other")
            ),
            goal: "—".into(),
            met: "—".into(),
            date,
            load,
        },
    ])
}

// ---------------------------------------------------------------------------------------------------------
// Gateway.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// The scratch PostgreSQL database: created here, dropped when this goes away.
struct ScratchPg {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchPg {
    fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("reclaim_perf_{}", std::process::id());
        let mut admin = PgConnection::establish(admin_url).context("connect to PostgreSQL")?;
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        })
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// The database of one backend's run and where raw inserts go.
struct Store {
    backend: Backend,
    /// The gateway's database URL.
    url: String,
    /// SQLite: the file of the raw insert copy (same folder, same disk as the gateway's).
    raw_file: Option<PathBuf>,
    _pg: Option<ScratchPg>,
}

/// `reclaim serve gateway` in a child process; stopped when dropped.
struct Gateway {
    child: Child,
    url: String,
}

impl Gateway {
    fn start(reclaim: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(reclaim);
        for (key, _) in std::env::vars() {
            if key.starts_with("RECLAIM") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let child = command
            .arg("--config")
            .arg(config)
            .args(["serve", "gateway"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("start {}", reclaim.display()))?;
        let mut gateway = Self {
            child,
            url: String::new(),
        };
        const LISTENING: &str = "gateway listening on http://127.0.0.1:";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logged = std::fs::read_to_string(log).unwrap_or_default();
            if let Some((_, rest)) = logged.split_once(LISTENING) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                gateway.url = format!("http://127.0.0.1:{port}");
                return Ok(gateway);
            }
            if let Some(status) = gateway.child.try_wait()? {
                anyhow::bail!(
                    "reclaim serve gateway exited with {status}; log: {}",
                    log.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_config(url: &str, templates: &Path, outbox: &Path) -> String {
    format!(
        r#"[database]
url = "{url}"

[telemetry]
format = "json"
level = "warn,reclaim=info"

[gateway]
listen = "127.0.0.1:0"
templates_dir = "{templates}"

[gateway.api]
tokens = ["{TOKEN}"]

# Verifications go to distinct numbers (no destination limit is reached); every number shares its first
# 7 digits, so the prefix cap is off.
[gateway.sms]
prefix_max_sends_per_hour = 0

[gateway.channels.sms]
provider = "discard"
fallback = []

[gateway.file]
dir = "{outbox}"
"#,
        templates = templates.display(),
        outbox = outbox.display(),
    )
}

/// What a load run saw.
#[derive(Default)]
struct Load {
    /// Latency (s) of each success.
    latencies: Vec<f64>,
    statuses: HashMap<u16, u64>,
    errors: u64,
    elapsed: f64,
    /// Bodies of successful answers, when asked for.
    bodies: Vec<Vec<u8>>,
}

impl Load {
    fn ok(&self) -> u64 {
        self.latencies.len() as u64
    }

    fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.max(f64::EPSILON)
    }

    fn absorb(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.bodies.extend(other.bodies);
    }

    fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn others(&self, ok: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| ![ok, 429, 503].contains(s))
            .map(|(_, n)| n)
            .sum::<u64>()
            + self.errors
    }
}

fn message_body(i: usize) -> Value {
    json!({
        "channel": "sms", "to": "+14155550100", "template": "verification_code",
        "data": {"code": format!("{:06}", i % 1_000_000)}, "fallback": []
    })
}

/// `clients` loops of `POST /v1/messages` on keep-alive connections for `length`.
async fn enqueue_load(
    client: &reqwest::Client,
    base: &str,
    clients: usize,
    length: Duration,
    keep_bodies: bool,
) -> anyhow::Result<Load> {
    let url = format!("{base}/v1/messages");
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, counter) = (client.clone(), url.clone(), counter.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    match client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .json(&message_body(i))
                        .send()
                        .await
                    {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.bytes().await;
                            *load.statuses.entry(status).or_default() += 1;
                            match body {
                                Ok(body) if status == 202 => {
                                    load.latencies.push(sent.elapsed().as_secs_f64());
                                    if keep_bodies {
                                        load.bodies.push(body.to_vec());
                                    }
                                }
                                Ok(_) => {}
                                Err(_) => load.errors += 1,
                            }
                        }
                        Err(_) => load.errors += 1,
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for task in tasks {
        total.absorb(task.await?);
    }
    total.elapsed = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Messages not finished yet (queued or being sent).
fn pending(db: &reclaim_common::Db) -> anyhow::Result<i64> {
    let mut conn = db.get()?;
    Ok(gateway_messages::table
        .filter(gateway_messages::status.eq_any(["queued", "sending"]))
        .count()
        .get_result::<i64>(&mut *conn)?)
}

async fn wait_drained(db: &reclaim_common::Db) -> anyhow::Result<()> {
    let deadline = Instant::now() + BOUND;
    loop {
        let db2 = db.clone();
        let left = tokio::task::spawn_blocking(move || pending(&db2)).await??;
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} messages still undelivered after {} s",
            BOUND.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (created_at, provider call returned) of every message that has a `discard` attempt, by message id,
/// with the destination.
type Spans = HashMap<String, (String, chrono::NaiveDateTime, chrono::NaiveDateTime)>;

fn spans(db: &reclaim_common::Db) -> anyhow::Result<Spans> {
    let mut conn = db.get()?;
    let messages: HashMap<String, (String, chrono::NaiveDateTime)> = gateway_messages::table
        .select((
            gateway_messages::id,
            gateway_messages::destination,
            gateway_messages::created_at,
        ))
        .load::<(String, String, chrono::NaiveDateTime)>(&mut *conn)?
        .into_iter()
        .map(|(id, to, at)| (id, (to, at)))
        .collect();
    let attempts = gateway_attempts::table
        .select((
            gateway_attempts::message_id,
            gateway_attempts::provider_message_id,
        ))
        .load::<(String, Option<String>)>(&mut *conn)?;
    let mut spans = Spans::new();
    for (id, provider_id) in attempts {
        let (Some((to, created)), Some(returned)) = (
            messages.get(&id),
            provider_id
                .as_deref()
                .and_then(DiscardProvider::returned_at),
        ) else {
            continue;
        };
        spans
            .entry(id)
            .and_modify(|s| s.2 = s.2.min(returned.naive_utc()))
            .or_insert((to.clone(), *created, returned.naive_utc()));
    }
    Ok(spans)
}

fn ms(span: chrono::TimeDelta) -> f64 {
    span.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

/// The column names of `gateway_messages` in order, and one row the gateway wrote as SQL literals (id left
/// out), for raw inserts of the same sizes.
fn sample_row(store: &Store) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    use diesel::dsl::sql;
    use diesel::sql_types::Text;
    let (columns, literal) = match store.backend {
        Backend::Sqlite => {
            let path = store.url.trim_start_matches("sqlite://");
            let mut conn = SqliteConnection::establish(path)?;
            let columns: Vec<String> = diesel::select(sql::<Text>(
                "name FROM pragma_table_info('gateway_messages') ORDER BY cid",
            ))
            .load(&mut conn)?;
            let quoted: Vec<String> = columns
                .iter()
                .filter(|c| *c != "id")
                .map(|c| format!("quote({c})"))
                .collect();
            let literal: String = diesel::select(sql::<Text>(&format!(
                "{} FROM gateway_messages WHERE status = 'sent' LIMIT 1",
                quoted.join(" || char(31) || ")
            )))
            .get_result(&mut conn)?;
            (columns, literal)
        }
        Backend::Postgres => {
            let mut conn = PgConnection::establish(&store.url)?;
            let columns: Vec<String> = diesel::select(sql::<Text>(
                "column_name::text FROM information_schema.columns \
                 WHERE table_name = 'gateway_messages' AND table_schema = current_schema() \
                 ORDER BY ordinal_position",
            ))
            .load(&mut conn)?;
            let quoted: Vec<String> = columns
                .iter()
                .filter(|c| *c != "id")
                .map(|c| format!("quote_nullable({c})"))
                .collect();
            let literal: String = diesel::select(sql::<Text>(&format!(
                "{} FROM gateway_messages WHERE status = 'sent' LIMIT 1",
                quoted.join(" || chr(31) || ")
            )))
            .get_result(&mut conn)?;
            (columns, literal)
        }
    };
    let values: Vec<String> = literal.split('\u{1f}').map(str::to_string).collect();
    let others: Vec<String> = columns.into_iter().filter(|c| c != "id").collect();
    anyhow::ensure!(values.len() == others.len(), "sample row: column count");
    Ok((others, values))
}

/// A raw insert round result: rows inserted, seconds, failures.
struct Raw {
    rows: u64,
    seconds: f64,
    failures: u64,
}

/// Creates `perf_raw` and returns the single-row INSERT (the id as `$ID`).
fn prepare_raw(store: &Store, columns: &[String], values: &[String]) -> anyhow::Result<String> {
    let insert = format!(
        "INSERT INTO perf_raw (id, {}) VALUES ($ID, {})",
        columns.join(", "),
        values.join(", ")
    );
    match store.backend {
        Backend::Sqlite => {
            let gateway_db = store.url.trim_start_matches("sqlite://");
            let mut source = SqliteConnection::establish(gateway_db)?;
            let ddl: Vec<String> = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
                "sql FROM sqlite_master WHERE tbl_name = 'gateway_messages' AND sql IS NOT NULL \
                 ORDER BY type DESC",
            ))
            .load(&mut source)?;
            let raw_file = store.raw_file.as_ref().context("no raw file")?;
            let mut raw = sqlite_connection(raw_file)?;
            for statement in ddl {
                raw.batch_execute(&statement.replace("gateway_messages", "perf_raw"))?;
            }
        }
        Backend::Postgres => {
            let mut conn = PgConnection::establish(&store.url)?;
            conn.batch_execute("CREATE TABLE perf_raw (LIKE gateway_messages INCLUDING ALL)")?;
        }
    }
    Ok(insert)
}

/// A connection with the gateway's SQLite pragmas (common/src/db.rs).
fn sqlite_connection(path: &Path) -> anyhow::Result<SqliteConnection> {
    let mut conn = SqliteConnection::establish(&path.display().to_string())?;
    conn.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
    )?;
    Ok(conn)
}

fn raw_round(store: &Store, insert: &str, length: Duration, work: &Path) -> anyhow::Result<Raw> {
    match store.backend {
        Backend::Sqlite => {
            let file = store.raw_file.clone().context("no raw file")?;
            let statement = insert.replace("$ID", "?");
            let rows = Arc::new(AtomicU64::new(0));
            let failures = Arc::new(AtomicU64::new(0));
            // Connections open before the clock starts, as the gateway's pool is.
            let connections: Vec<SqliteConnection> = (0..CLIENTS)
                .map(|_| sqlite_connection(&file))
                .collect::<anyhow::Result<_>>()?;
            let started = Instant::now();
            let deadline = started + length;
            let threads: Vec<_> = connections
                .into_iter()
                .map(|mut conn| {
                    let (statement, rows, failures) =
                        (statement.clone(), rows.clone(), failures.clone());
                    std::thread::spawn(move || {
                        while Instant::now() < deadline {
                            let id = uuid::Uuid::now_v7().to_string();
                            let done = conn.immediate_transaction(|c| {
                                diesel::sql_query(&statement)
                                    .bind::<diesel::sql_types::Text, _>(id)
                                    .execute(c)
                            });
                            match done {
                                Ok(_) => rows.fetch_add(1, Ordering::Relaxed),
                                Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    })
                })
                .collect();
            for thread in threads {
                let _ = thread.join();
            }
            Ok(Raw {
                rows: rows.load(Ordering::Relaxed),
                seconds: started.elapsed().as_secs_f64(),
                failures: failures.load(Ordering::Relaxed),
            })
        }
        Backend::Postgres => {
            let script = work.join("perf_raw.sql");
            std::fs::write(
                &script,
                format!("{};\n", insert.replace("$ID", "gen_random_uuid()::text")),
            )?;
            let count = || -> anyhow::Result<i64> {
                Ok(
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                        "count(*) FROM perf_raw",
                    ))
                    .get_result(&mut PgConnection::establish(&store.url)?)?,
                )
            };
            let before = count()?;
            let output = Command::new("pgbench")
                .args(["-n", "-c", &CLIENTS.to_string(), "-j", "2", "-T"])
                .arg(length.as_secs().max(1).to_string())
                .arg("-f")
                .arg(&script)
                .arg(&store.url)
                .output()
                .context("run pgbench")?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            anyhow::ensure!(
                output.status.success(),
                "pgbench failed: {}",
                one_line(&String::from_utf8_lossy(&output.stderr))
            );
            let field = |prefix: &str| -> Option<f64> {
                stdout
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(prefix))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            };
            let processed = field("number of transactions actually processed:")
                .context("no transaction count in pgbench's output")?;
            let tps = field("tps =").context("no tps in pgbench's output")?;
            let failed = field("number of failed transactions:").unwrap_or(0.0);
            let inserted = count()? - before;
            anyhow::ensure!(
                inserted as f64 == processed,
                "pgbench reported {processed} transactions, perf_raw grew by {inserted}"
            );
            Ok(Raw {
                rows: inserted as u64,
                // tps excludes connection set-up, as the enqueue clients' connections are warm.
                seconds: processed / tps.max(f64::EPSILON),
                failures: failed as u64,
            })
        }
    }
}

async fn gateway_rows(
    plan: &Plan,
    bin_dir: &Path,
    work: &Path,
    backend: Backend,
    pg_url: &str,
) -> anyhow::Result<(Vec<Row>, String)> {
    let reclaim = bin_dir.join("reclaim");
    anyhow::ensure!(reclaim.exists(), "{} is not built", reclaim.display());
    let dir = work.join(backend.name());
    std::fs::create_dir_all(&dir)?;
    let store = match backend {
        Backend::Sqlite => Store {
            backend,
            url: format!("sqlite://{}", dir.join("gateway.db").display()),
            raw_file: Some(dir.join("raw.db")),
            _pg: None,
        },
        Backend::Postgres => {
            let pg = tokio::task::spawn_blocking({
                let pg_url = pg_url.to_string();
                move || ScratchPg::create(&pg_url)
            })
            .await??;
            Store {
                backend,
                url: pg.url.clone(),
                raw_file: None,
                _pg: Some(pg),
            }
        }
    };
    let mut settings = reclaim_common::settings::Settings::default();
    settings.database.url = reclaim_common::settings::DatabaseUrl::new(store.url.clone());
    settings.database.pool_size = 2;
    let db = reclaim_common::Db::connect(&settings.database)?;
    {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.migrate()).await??;
    }
    let templates = std::env::current_dir()?.join("config/templates");
    let config = dir.join("reclaim.toml");
    std::fs::write(
        &config,
        gateway_config(&store.url, &templates, &dir.join("outbox")),
    )?;
    let gateway = Gateway::start(&reclaim, &config, &dir.join("gateway.log"))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(OVERLOAD_FACTOR * CLIENTS)
        .timeout(Duration::from_secs(30))
        .build()?;
    let load_before = load_average();
    let date = now();

    // Warm-up: connections open, code paths and the database warm; one sample row for the raw inserts.
    enqueue_load(
        &client,
        &gateway.url,
        CLIENTS,
        Duration::from_secs(1),
        false,
    )
    .await?;
    wait_drained(&db).await?;
    let insert = {
        let store = &store;
        let (columns, values) = sample_row(store)?;
        prepare_raw(store, &columns, &values)?
    };

    // Alternating rounds, each starting with nothing queued.
    let mut enqueue = Load::default();
    let mut raw = Raw {
        rows: 0,
        seconds: 0.0,
        failures: 0,
    };
    let mut windows = Vec::new();
    let mut round_ratios = Vec::new();
    for r in 0..plan.rounds {
        let mut this_enqueue = 0.0;
        let mut this_raw = 0.0;
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_enqueue in order {
            if is_enqueue {
                let from = chrono::Utc::now().naive_utc();
                let part = enqueue_load(&client, &gateway.url, CLIENTS, plan.round, false).await?;
                windows.push((from, chrono::Utc::now().naive_utc()));
                this_enqueue = part.rate();
                enqueue.absorb(part);
                wait_drained(&db).await?;
            } else {
                let part =
                    tokio::task::block_in_place(|| raw_round(&store, &insert, plan.round, &dir))?;
                this_raw = part.rows as f64 / part.seconds.max(f64::EPSILON);
                raw.rows += part.rows;
                raw.seconds += part.seconds;
                raw.failures += part.failures;
            }
        }
        round_ratios.push(this_enqueue / this_raw.max(f64::EPSILON));
    }
    let raw_rate = raw.rows as f64 / raw.seconds.max(f64::EPSILON);
    let enqueue_rate = enqueue.rate();
    let ratio = enqueue_rate / raw_rate;
    let mut enqueue_latencies = enqueue.latencies.clone();
    let e50 = percentile(&mut enqueue_latencies, 0.5) * 1e3;
    let e99 = percentile(&mut enqueue_latencies, 0.99) * 1e3;

    // Light load: one message at a time, 10 ms apart.
    let light_from = chrono::Utc::now().naive_utc();
    for i in 0..plan.light {
        let response = client
            .post(format!("{}/v1/messages", gateway.url))
            .bearer_auth(TOKEN)
            .json(&message_body(i))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 202,
            "light load: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let light_to = chrono::Utc::now().naive_utc();
    wait_drained(&db).await?;

    // Verifications at a steady rate, distinct numbers; the send instant of each by number.
    let total = (plan.verify_rate * plan.verify_seconds) as usize;
    let interval = Duration::from_secs(1) / plan.verify_rate;
    let mut ticker = tokio::time::interval(interval);
    let mut tasks = Vec::new();
    for i in 0..total {
        ticker.tick().await;
        let (client, url) = (client.clone(), format!("{}/v1/verifications", gateway.url));
        tasks.push(tokio::spawn(async move {
            let number = format!("+1415200{i:04}");
            let sent = chrono::Utc::now().naive_utc();
            let status = client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"channel": "sms", "to": number, "purpose": "verification"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (number, sent, status)
        }));
    }
    let mut verification_sent = HashMap::new();
    let mut verification_refused = 0;
    for task in tasks {
        let (number, sent, status) = task.await?;
        if status == 201 {
            verification_sent.insert(number, sent);
        } else {
            verification_refused += 1;
        }
    }
    wait_drained(&db).await?;
    let load_mid = load_average();

    // Latencies from the rows.
    let all = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || spans(&db)).await??
    };
    let mut heavy = Vec::new();
    let mut light = Vec::new();
    let mut verification = Vec::new();
    for (to, created, returned) in all.values() {
        if let Some(sent) = verification_sent.get(to) {
            verification.push(ms(*returned - *sent));
        } else if windows.iter().any(|(a, b)| created >= a && created <= b) {
            heavy.push(ms(*returned - *created));
        } else if *created >= light_from && *created <= light_to {
            light.push(ms(*returned - *created));
        }
    }
    let (h50, h99) = (percentile(&mut heavy, 0.5), percentile(&mut heavy, 0.99));
    let (l50, l99) = (percentile(&mut light, 0.5), percentile(&mut light, 0.99));
    let (v50, v99) = (
        percentile(&mut verification, 0.5),
        percentile(&mut verification, 0.99),
    );
    let verified = verification.len();

    // 10× overload on a fresh process (its VmHWM covers start-up and the overload only).
    gateway.stop();
    let overload_date = now();
    let overload_load_before = load_average();
    let fresh = Gateway::start(&reclaim, &config, &dir.join("gateway-overload.log"))?;
    let rss_idle = status_kib(fresh.pid(), "VmRSS:");
    let overload = enqueue_load(
        &client,
        &fresh.url,
        OVERLOAD_FACTOR * CLIENTS,
        plan.overload,
        true,
    )
    .await?;
    let peak = status_kib(fresh.pid(), "VmHWM:");
    let accepted: Vec<String> = overload
        .bodies
        .iter()
        .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
        .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let drained = wait_drained(&db).await;
    let stored: HashSet<String> = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<HashSet<String>> {
            let mut conn = db.get()?;
            Ok(gateway_messages::table
                .select(gateway_messages::id)
                .load::<String>(&mut *conn)?
                .into_iter()
                .collect())
        })
        .await??
    };
    let missing = accepted.iter().filter(|id| !stored.contains(*id)).count();
    let unparsed = overload.ok() as usize - accepted.len();
    fresh.stop();
    let load_after = load_average();
    drop(db);

    let name = backend.name();
    let rows = vec![
        Row {
            measure: format!(
                "Enqueue throughput vs the database's raw single-row insert rate, {name}, {CLIENTS} clients"
            ),
            result: format!(
                "{enqueue_rate:.0} vs {raw_rate:.0} /s: **{:.0}%** (rounds {})",
                100.0 * ratio,
                round_ratios
                    .iter()
                    .map(|r| format!("{:.0}%", 100.0 * r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            goal: "≥ 50%".into(),
            met: verdict(ratio >= 0.5),
            date: date.clone(),
            load: (load_before.clone(), load_mid.clone()),
        },
        Row {
            measure: format!("Enqueue latency (`POST /v1/messages` → 202), {name}, {CLIENTS} clients, p50 / p99"),
            result: format!(
                "{e50:.1} / **{e99:.1} ms** ({} answered 202, {} other)",
                enqueue.ok(),
                enqueue.others(202) + enqueue.count(429) + enqueue.count(503)
            ),
            goal: "p99 < 50 ms".into(),
            met: verdict(e99 < 50.0),
            date: date.clone(),
            load: (load_before.clone(), load_mid.clone()),
        },
        Row {
            measure: format!("Enqueue → provider call returned, {name}, p50 / p99"),
            result: format!(
                "under {CLIENTS}-client load: {h50:.1} / {h99:.1} ms ({} messages); light load (one at a \
                 time): {l50:.1} / {l99:.1} ms ({} messages)",
                heavy.len(),
                light.len()
            ),
            goal: "—".into(),
            met: "—".into(),
            date: date.clone(),
            load: (load_before.clone(), load_mid.clone()),
        },
        Row {
            measure: format!(
                "Verification start → SMS handed to the provider, {name}, {} /s for {} s, p50 / p99",
                plan.verify_rate, plan.verify_seconds
            ),
            result: format!(
                "{v50:.1} / **{v99:.1} ms** ({verified} of {total} started; {verification_refused} not 201)"
            ),
            goal: "—".into(),
            met: "—".into(),
            date: date.clone(),
            load: (load_before, load_mid),
        },
        Row {
            measure: format!(
                "Gateway peak RSS under 10× overload, {name} ({} clients, {} s, `POST /v1/messages`)",
                OVERLOAD_FACTOR * CLIENTS,
                plan.overload.as_secs()
            ),
            result: format!(
                "**{:.1} MiB** (idle {:.1} MiB); answered {} × 202 ({:.0} /s vs {enqueue_rate:.0} /s at \
                 {CLIENTS} clients), {} × 429, {} × 503, {} other; accepted and not in the database: {}{}{}",
                peak as f64 / 1024.0,
                rss_idle as f64 / 1024.0,
                overload.ok(),
                overload.rate(),
                overload.count(429),
                overload.count(503),
                overload.others(202),
                missing,
                if unparsed > 0 {
                    format!(" ({unparsed} 202 bodies without an id)")
                } else {
                    String::new()
                },
                match drained {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (delivery afterwards: {})", one_line(&e.to_string())),
                }
            ),
            goal: "nothing accepted lost".into(),
            met: verdict(missing == 0 && unparsed == 0),
            date: overload_date,
            load: (overload_load_before, load_after),
        },
    ];
    let note = format!(
        "{name}: raw inserts {} rows in {:.1} s ({} failed){}.",
        raw.rows,
        raw.seconds,
        raw.failures,
        if backend == Backend::Postgres {
            " by pgbench (`-n -c 32 -j 2 -T <round> -f <one INSERT>`; time = transactions / tps without \
             connection set-up)"
        } else {
            " by 32 threads (one connection each, `BEGIN IMMEDIATE`; INSERT; COMMIT)"
        }
    );
    Ok((rows, note))
}

// ---------------------------------------------------------------------------------------------------------
// The report.

fn render(
    plan: &Plan,
    machine: &Machine,
    rows: &[Row],
    notes: &[String],
    took: Duration,
) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Performance results\n");
    let _ = writeln!(
        r,
        "Written by `perf/run` (driver: `examples/perf_report.rs`) in one run of {:.0} s{}. Every figure \
         below comes from that run on the machine named in its row; re-run `perf/run` to refresh it. \
         **Load** is the 1-minute load average before → after the measurement: above {} (the core count) \
         the machine was shared with other work and wall-clock figures are low.\n",
        took.as_secs_f64(),
        if plan.quick {
            " with `PERF_QUICK=1` (short rounds: indicative only)"
        } else {
            ""
        },
        machine.cores
    );
    let _ = writeln!(
        r,
        "| Measure | Result | Goal | Met | Date (UTC) | Commit | Machine |\n|---|---|---|---|---|---|---|"
    );
    for row in rows {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | `{}` | {} cores, {}; load {} → {} |",
            row.measure,
            row.result,
            row.goal,
            row.met,
            row.date,
            machine.commit,
            machine.cores,
            machine.cpu,
            row.load.0,
            row.load.1
        );
    }
    let shared = rows.iter().any(|row| {
        [&row.load.0, &row.load.1].iter().any(|l| {
            l.parse::<f64>()
                .is_ok_and(|l| l > machine.cores as f64 * 0.5)
        })
    });
    let _ = writeln!(r, "\n## How it was measured\n");
    if shared {
        let _ = writeln!(
            r,
            "- **This machine was shared** during the run (load average above half the core count in some \
             rows): treat wall-clock rates as lower bounds; ratios from alternating rounds are fairer."
        );
    }
    let _ = writeln!(
        r,
        "- Plugin rows: `plugin/examples/plugin_bench.rs` (BENCH_SECONDS={}); depth latency through \
         `Passwords::check` on SQLite; HTTP throughput and raw argon2id alternate in rounds, compared per \
         CPU-second (details of a full run in `perf/plugin.md`). Its overload is 20 clients per core, 10× its \
         2 per core, against a fresh server process; peak RSS is that process's VmHWM.\n\
         - Guard rows: `plugin/examples/guard_bench.rs` (BENCH_SECONDS={}); direct and guarded rounds \
         alternate (details in `perf/guard.md`). Its overload: a fresh guard process, 320 clients fetching a \
         settings flow through it; peak RSS is its VmHWM.\n\
         - Gateway rows: the release `reclaim serve gateway` with its defaults except: `discard` SMS provider \
         without fallback, `gateway.sms.prefix_max_sends_per_hour` = 0 (the verification numbers share a \
         prefix), log level `warn` (`reclaim=info` for the start-up line). Database pool 8; delivery holds up \
         to 4 messages at once (`gateway.worker.concurrency`), claimed and recorded together, woken by each \
         queued message, else polling every 500 ms (`gateway.worker.poll_interval_ms`); HTTP workers one per \
         core, as shipped. {CLIENTS} keep-alive clients in the driver post \
         `/v1/messages` (SMS, `verification_code`) for {:.0} s per round; {} enqueue rounds alternate with {} \
         raw insert rounds, each starting with nothing queued; delivery runs during the enqueue rounds. The \
         ratio is of the totals (rows per second over all rounds of each kind).",
        plan.plugin_seconds,
        plan.guard_seconds,
        plan.round.as_secs_f64(),
        plan.rounds,
        plan.rounds,
    );
    for note in notes {
        let _ = writeln!(r, "  {note}");
    }
    let _ = writeln!(
        r,
        "- Enqueue → provider: from the message's `created_at` to the instant the `discard` provider's call \
         returned (it records that instant in the message id it returns); light load is {} messages one at a \
         time, 10 ms apart. Verification: `POST /v1/verifications` to distinct numbers at a steady rate, from \
         the instant the driver sent the request to the provider call's return.\n\
         - Gateway overload: {} clients (10× the {CLIENTS} of the enqueue rounds) against a freshly started \
         gateway process on the same database; peak RSS is its VmHWM; afterwards every id answered 202 is \
         looked up in `gateway_messages`.",
        plan.light,
        OVERLOAD_FACTOR * CLIENTS,
    );
    r
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers.

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string()
}

/// `git rev-parse --short HEAD`, with "+dirty" when tracked files differ from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}
