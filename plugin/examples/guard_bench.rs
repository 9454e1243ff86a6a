//! The Kratos edge guard benchmark, written to `perf/guard.md`: pass-through throughput and latency through
//! the guard against the same requests sent straight to the same upstream, and the cost of a password
//! submission against one raw argon2id run. Every number comes from one run, in alternating rounds. Release
//! builds only: a debug build refuses to run.
//!
//! ```text
//! cargo run --release -p reclaim-plugin --example guard_bench            # about 1.5 minutes
//! BENCH_SECONDS=8 BENCH_OUT=/tmp/guard.md cargo run --release -p reclaim-plugin --example guard_bench
//! ```
//!
//! `BENCH_SUMMARY=<file>` adds a 10× overload of a fresh guard (320 clients; peak RSS from VmHWM) and writes
//! the headline figures as JSON (read by `examples/perf_report.rs`).
//!
//! Three processes, so that each one's CPU time can be read from /proc: this one (load driver and raw
//! argon2id runs), a stand-in for Kratos's public API (actix-web), and the guard as `reclaim serve guard`
//! runs it (`GuardApplication`: `Passwords::new` on a migrated SQLite database, then `Guard::build`).
//!
//! 1. Pass-through under load: 32 keep-alive HTTP/1.1 clients fetch a settings flow
//!    (`GET /self-service/settings/flows?id=…`), through the guard and directly, in alternating rounds.
//! 2. Pass-through at light load: one client, same alternation: the time the extra hop itself adds.
//! 3. A password submission (`POST /self-service/settings?flow=…`, JSON, `method=password`) through the
//!    guard — whoami, one argon2id run, the verdict staged, the request forwarded — against one raw argon2id
//!    run at the same parameters, and the same submission sent straight to the stand-in.

#[path = "shared/machine.rs"]
mod machine;
use machine::{cpu_model, cpu_seconds, load_average, status_kib};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use argon2::{Algorithm, Argon2, Params, Version};
use bytes::Bytes;
use chrono::{Duration as Days, Utc};
use reclaim_common::settings::{DatabaseUrl, Settings};
use reclaim_common::{Db, Secret};
use reclaim_plugin::policy::ChangeContext;
use reclaim_plugin::{GuardApplication, Identity, IdentityId, Password, Passwords};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Which part of the benchmark a process plays: unset in the driver, `stand-in` or `guard` in its children.
const ROLE: &str = "GUARD_BENCH_ROLE";
const UPSTREAM_URL: &str = "GUARD_BENCH_UPSTREAM";
/// The guard's database folder, made and removed by the driver (a killed child removes nothing).
const DATA_DIR: &str = "GUARD_BENCH_DIR";
const SESSION_TOKEN: &str = "bench-session-token";
const IDENTITY_ID: &str = "8f14e45f-ceea-4e6a-9e6b-5d7c1a2b3c4d";
const FLOW_ID: &str = "c1b461cc-3f4b-413c-84a7-cb89c400949b";
/// What a browser sends Kratos on a flow fetch: the CSRF cookie and the session cookie.
const COOKIE: &str = "csrf_token_806060ca5bf70dff3caa0e5c860002aade9d470a5a4dce73bcfa7ba10778f481=\
    SZ1/nDlo819cK/LtHFIiJfizK9iFNnW8MTUmkxcVWpY=; ory_kratos_session=MTc1MzY3MDEzMXxEdi1CQkFFQ180SUFBUkFCRUFBQV\
    JfLUNBQUVHYzNSeWFXNW5EQThBRFhObGMzTnBiMjVmZEc5clpXNEdjM1J5YVc1bkRDSUFJR0ZpWTJSbFptZG9hV3ByYkcxdWIzQnhjbk4w";
const LOAD_CLIENTS: usize = 32;
const ROUNDS: u32 = 4;
const SUBMISSIONS_PER_ROUND: usize = 25;
const WARM_UP_SUBMISSIONS: usize = 3;
const HISTORY_ENTRIES: i64 = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("stand-in") => return stand_in().await,
        Ok("guard") => {
            return guard(&std::env::var(UPSTREAM_URL)?, &std::env::var(DATA_DIR)?).await
        }
        _ => {}
    }
    anyhow::ensure!(
        !cfg!(debug_assertions),
        "the guard benchmark runs on release builds only: \
         cargo run --release -p reclaim-plugin --example guard_bench"
    );
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "perf/guard.md".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let run_started = Instant::now();
    let argon = Settings::default().plugin.history.argon2;
    let params = Params::new(argon.m_kib, argon.t, argon.p, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;

    let load_before = load_average();
    let dir = tempfile::tempdir()?;
    let stand_in = ChildProcess::start("stand-in", &[])?;
    let guard = ChildProcess::start(
        "guard",
        &[
            (UPSTREAM_URL, stand_in.url()),
            (DATA_DIR, dir.path().display().to_string()),
        ],
    )?;
    let pids = Pids {
        driver: std::process::id(),
        stand_in: stand_in.pid(),
        guard: guard.pid(),
    };
    let guard_ops = guard
        .ports
        .get(1)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the guard process named no ops port"))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(LOAD_CLIENTS)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let flow_path = format!("/self-service/settings/flows?id={FLOW_ID}");
    let targets = [
        format!("{}{flow_path}", stand_in.url()),
        format!("{}{flow_path}", guard.url()),
    ];
    let flow_len = flow_body().to_string().len();
    let mut measuring = Duration::ZERO;

    // Connections opened and code paths warm before anything counts.
    for url in &targets {
        load(&client, url, LOAD_CLIENTS, Duration::from_secs(1), flow_len).await?;
    }

    // 1. Pass-through under load.
    eprintln!("pass-through, {LOAD_CLIENTS} clients...");
    let round = Duration::from_secs(seconds).div_f64(f64::from(ROUNDS));
    let heavy = alternate(&client, &targets, &pids, LOAD_CLIENTS, round, flow_len).await?;
    measuring += round * ROUNDS * 2;

    // 2. Pass-through at light load.
    eprintln!("pass-through, 1 client...");
    let light_round = round / 2;
    let light = alternate(&client, &targets, &pids, 1, light_round, flow_len).await?;
    measuring += light_round * ROUNDS * 2;

    // 3. Password submissions.
    eprintln!("password submissions...");
    let submit_urls = [
        format!("{}/self-service/settings", stand_in.url()),
        format!("{}/self-service/settings", guard.url()),
    ];
    for i in 0..WARM_UP_SUBMISSIONS {
        submit(&client, &submit_urls[1], &format!("warm-up candidate {i}")).await?;
    }
    let submissions_started = Instant::now();
    let mut raw = Side::default();
    let mut through = [Side::default(), Side::default()];
    for r in 0..ROUNDS {
        // Raw, guard, direct in a rotating order, so that drift on the machine hits all three alike.
        for step in 0..3 {
            let before = Cpu::read(&pids);
            let started = Instant::now();
            match (step + r) % 3 {
                0 => {
                    let params = params.clone();
                    let times = tokio::task::spawn_blocking(move || {
                        raw_argon2(params, SUBMISSIONS_PER_ROUND)
                    })
                    .await??;
                    raw.latencies.extend(times);
                    raw.add(Cpu::read(&pids).since(before), started.elapsed());
                }
                which => {
                    let side = &mut through[side_index(which)];
                    for i in 0..SUBMISSIONS_PER_ROUND {
                        let candidate = format!("fresh candidate {r}-{i}, not in the history");
                        match submit(&client, &submit_urls[side_index(which)], &candidate).await {
                            Ok(latency) => side.latencies.push(latency),
                            Err(_) => side.failures += 1,
                        }
                    }
                    side.add(Cpu::read(&pids).since(before), started.elapsed());
                }
            }
        }
    }
    measuring += submissions_started.elapsed();
    let [direct_submit, guard_submit] = through;
    let metrics = client
        .get(format!("http://127.0.0.1:{guard_ops}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let allowed = metric_sum(
        &metrics,
        "reclaim_guard_verdicts_total",
        &["code=\"allowed\""],
    );
    let other_verdicts = metric_sum(&metrics, "reclaim_guard_verdicts_total", &[]) - allowed;
    let passed = metric_sum(
        &metrics,
        "reclaim_guard_requests_total",
        &["route=\"other\"", "outcome=\"passed\""],
    );
    let submitted_through_guard = WARM_UP_SUBMISSIONS as f64 + guard_submit.ok();
    anyhow::ensure!(
        (allowed - submitted_through_guard).abs() < 0.5 && other_verdicts == 0.0,
        "the guard staged {allowed} allowed and {other_verdicts} other verdicts for {submitted_through_guard} \
         accepted submissions: every submission must cost exactly one check with an allowed verdict"
    );
    // With BENCH_SUMMARY (examples/perf_report.rs): a fresh guard driven by 10× the clients of section 1,
    // then its peak resident set (VmHWM: start-up and the overload only) and what it answered.
    let summary_path = std::env::var("BENCH_SUMMARY").ok();
    let overload = match &summary_path {
        Some(_) => {
            eprintln!("overload, {} clients...", 10 * LOAD_CLIENTS);
            let overload_dir = tempfile::tempdir()?;
            let fresh = ChildProcess::start(
                "guard",
                &[
                    (UPSTREAM_URL, stand_in.url()),
                    (DATA_DIR, overload_dir.path().display().to_string()),
                ],
            )?;
            let overload_client = reqwest::Client::builder()
                .pool_max_idle_per_host(10 * LOAD_CLIENTS)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()?;
            let length = Duration::from_secs(seconds.clamp(2, 10));
            let run = load(
                &overload_client,
                &format!("{}{flow_path}", fresh.url()),
                10 * LOAD_CLIENTS,
                length,
                flow_len,
            )
            .await?;
            let peak_kib = status_kib(fresh.pid(), "VmHWM:");
            Some((run, peak_kib, length))
        }
        None => None,
    };
    let load_after = load_average();
    drop(guard);
    drop(stand_in);
    drop(dir);
    if let (Some(path), Some((run, peak_kib, length))) = (&summary_path, &overload) {
        let [direct, guarded] = &heavy;
        let summary = json!({
            "load_before": load_before,
            "load_after": load_after,
            "clients": LOAD_CLIENTS,
            "direct_rate": direct.rate(),
            "guard_rate": guarded.rate(),
            "throughput_ratio": guarded.rate() / direct.rate(),
            "per_cpu_ratio": guarded.per_cpu() / direct.per_cpu(),
            "direct_p99_ms": direct.percentile(0.99) * 1e3,
            "guard_p99_ms": guarded.percentile(0.99) * 1e3,
            "added_p99_ms": (guarded.percentile(0.99) - direct.percentile(0.99)) * 1e3,
            "light_added_p99_ms": (light[1].percentile(0.99) - light[0].percentile(0.99)) * 1e3,
            "overload_clients": 10 * LOAD_CLIENTS,
            "overload_seconds": length.as_secs_f64(),
            "overload_ok": run.latencies.len(),
            "overload_other": run.failures,
            "overload_peak_rss_mib": *peak_kib as f64 / 1024.0,
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }

    let report = Report {
        cores,
        argon: (argon.m_kib, argon.t, argon.p),
        load: (load_before, load_after),
        flow_len,
        round,
        light_round,
        heavy,
        light,
        raw,
        guard_submit,
        direct_submit,
        allowed,
        passed,
        measuring,
        total: run_started.elapsed(),
    }
    .render()?;
    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &report)?;
    eprintln!("{report}\nwritten to {out}");
    Ok(())
}

/// Rotation steps 1 and 2 as an index into `[direct, through the guard]`.
fn side_index(which: u32) -> usize {
    usize::try_from(which.saturating_sub(1)).unwrap_or(0)
}

/// The process ids whose CPU time is read around each measurement.
struct Pids {
    driver: u32,
    stand_in: u32,
    guard: u32,
}

/// CPU time (user + system) of the three processes.
#[derive(Clone, Copy, Default)]
struct Cpu {
    driver: f64,
    stand_in: f64,
    guard: f64,
}

impl Cpu {
    fn read(pids: &Pids) -> Self {
        Self {
            driver: cpu_seconds(pids.driver),
            stand_in: cpu_seconds(pids.stand_in),
            guard: cpu_seconds(pids.guard),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            driver: self.driver - before.driver,
            stand_in: self.stand_in - before.stand_in,
            guard: self.guard - before.guard,
        }
    }

    fn total(&self) -> f64 {
        self.driver + self.stand_in + self.guard
    }
}

/// One way of sending requests (direct or through the guard), summed over its rounds.
#[derive(Default)]
struct Side {
    latencies: Vec<f64>,
    failures: u64,
    elapsed: f64,
    cpu: Cpu,
    /// Per round: answers per second (wall clock) and per CPU-second of all three processes.
    round_rates: Vec<f64>,
    round_per_cpu: Vec<f64>,
}

impl Side {
    fn add(&mut self, cpu: Cpu, elapsed: Duration) {
        self.cpu.driver += cpu.driver;
        self.cpu.stand_in += cpu.stand_in;
        self.cpu.guard += cpu.guard;
        self.elapsed += elapsed.as_secs_f64();
    }

    fn absorb(&mut self, run: Run, cpu: Cpu) {
        let ok = run.latencies.len() as f64;
        self.round_rates.push(ok / run.elapsed.max(f64::EPSILON));
        self.round_per_cpu.push(ok / cpu.total().max(f64::EPSILON));
        self.latencies.extend(run.latencies);
        self.failures += run.failures;
        self.add(cpu, Duration::from_secs_f64(run.elapsed));
    }

    fn ok(&self) -> f64 {
        self.latencies.len() as f64
    }

    fn rate(&self) -> f64 {
        self.ok() / self.elapsed.max(f64::EPSILON)
    }

    fn per_cpu(&self) -> f64 {
        self.ok() / self.cpu.total().max(f64::EPSILON)
    }

    /// CPU microseconds per answered request of one process's share.
    fn cpu_us(&self, seconds: f64) -> f64 {
        seconds / self.ok().max(1.0) * 1e6
    }

    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

/// Direct and guarded runs of the same load in `ROUNDS` alternating rounds (direct first in even rounds,
/// the guard first in odd ones), so that load elsewhere on the machine and drift hit both alike.
async fn alternate(
    client: &reqwest::Client,
    targets: &[String; 2],
    pids: &Pids,
    clients: usize,
    round: Duration,
    flow_len: usize,
) -> anyhow::Result<[Side; 2]> {
    let mut sides = [Side::default(), Side::default()];
    for r in 0..ROUNDS {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let before = Cpu::read(pids);
            let run = load(client, &targets[side], clients, round, flow_len).await?;
            sides[side].absorb(run, Cpu::read(pids).since(before));
        }
    }
    Ok(sides)
}

struct Run {
    latencies: Vec<f64>,
    failures: u64,
    elapsed: f64,
}

/// `clients` concurrent loops of flow fetches on keep-alive connections until `length` has passed; an answer
/// counts when it is a 200 carrying the whole flow.
async fn load(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    length: Duration,
    flow_len: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let answer = client
                        .get(&url)
                        .header(reqwest::header::COOKIE, COOKIE)
                        .header(reqwest::header::ACCEPT, "application/json")
                        .send()
                        .await;
                    let whole = match answer {
                        Ok(r) if r.status() == reqwest::StatusCode::OK => {
                            r.bytes().await.is_ok_and(|b| b.len() == flow_len)
                        }
                        _ => false,
                    };
                    if whole {
                        latencies.push(sent.elapsed().as_secs_f64());
                    } else {
                        failures += 1;
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut run = Run {
        latencies: Vec::new(),
        failures: 0,
        elapsed: 0.0,
    };
    for task in tasks {
        let (latencies, failures) = task.await?;
        run.latencies.extend(latencies);
        run.failures += failures;
    }
    run.elapsed = started.elapsed().as_secs_f64();
    Ok(run)
}

/// One settings submission with `method=password` for a new flow, as an API client sends it; its latency
/// when the answer is the stand-in's 200.
async fn submit(client: &reqwest::Client, url: &str, candidate: &str) -> anyhow::Result<f64> {
    let flow = uuid::Uuid::new_v4();
    let body = json!({"method": "password", "password": candidate}).to_string();
    let sent = Instant::now();
    let answer = client
        .post(format!("{url}?flow={flow}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .header("x-session-token", SESSION_TOKEN)
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    answer.bytes().await?;
    let latency = sent.elapsed().as_secs_f64();
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "submission answered {status}"
    );
    Ok(latency)
}

/// `runs` argon2id runs one after another on this thread, reusing one memory buffer as the guard's KDF
/// threads do; the time of each.
fn raw_argon2(params: Params, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut memory = vec![argon2::Block::default(); params.block_count()];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let salt = [7u8; 16];
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let password = format!("fresh candidate {i}, not in the history");
        let started = Instant::now();
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory[..])
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// A child process running this binary in another role; it prints `PORT <port> [<port>]` once it listens.
/// Killed when dropped, and it exits by itself when this process's end of its stdin closes.
struct ChildProcess {
    child: std::process::Child,
    ports: Vec<u16>,
}

impl ChildProcess {
    fn start(role: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .env(ROLE, role)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout from the {role} process"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let ports: Vec<u16> = line
            .trim()
            .strip_prefix("PORT ")
            .map(|p| {
                p.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        anyhow::ensure!(!ports.is_empty(), "the {role} process said {line:?}");
        Ok(Self { child, ports })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a child: exit when the driver goes away, even if it was killed before it could kill us.
fn exit_with_driver() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// The answers the stand-in gives, serialized once.
struct StandInBodies {
    flow: Bytes,
    session: Bytes,
}

/// The stand-in for Kratos's public API: a settings flow fetch, `/sessions/whoami` for one session token,
/// and the settings submission (200 when it carries a flow id and a password).
async fn stand_in() -> anyhow::Result<()> {
    exit_with_driver();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let bodies = web::Data::new(StandInBodies {
        flow: Bytes::from(flow_body().to_string()),
        session: Bytes::from(session_body().to_string()),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(bodies.clone())
            .route("/self-service/settings/flows", web::get().to(flow_fetch))
            .route("/sessions/whoami", web::get().to(whoami))
            .route(
                "/self-service/settings",
                web::post().to(settings_submission),
            )
    })
    .workers(cores)
    .disable_signals()
    .listen(listener)?
    .run();
    println!("PORT {port}");
    server.await?;
    Ok(())
}

fn kratos_json(status: actix_web::http::StatusCode, body: Bytes) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json; charset=utf-8")
        .insert_header((
            "cache-control",
            "private, no-cache, no-store, must-revalidate",
        ))
        .insert_header(("vary", "Origin, Cookie"))
        .body(body)
}

async fn flow_fetch(bodies: web::Data<StandInBodies>) -> HttpResponse {
    kratos_json(actix_web::http::StatusCode::OK, bodies.flow.clone())
}

async fn whoami(req: HttpRequest, bodies: web::Data<StandInBodies>) -> HttpResponse {
    let token = req
        .headers()
        .get("x-session-token")
        .and_then(|v| v.to_str().ok());
    if token == Some(SESSION_TOKEN) {
        kratos_json(actix_web::http::StatusCode::OK, bodies.session.clone())
    } else {
        kratos_json(
            actix_web::http::StatusCode::UNAUTHORIZED,
            Bytes::from_static(br#"{"error":{"code":401,"status":"Unauthorized"}}"#),
        )
    }
}

async fn settings_submission(
    req: HttpRequest,
    body: web::Bytes,
    bodies: web::Data<StandInBodies>,
) -> HttpResponse {
    let submitted: Value = serde_json::from_slice(&body).unwrap_or_default();
    let complete = req.query_string().starts_with("flow=")
        && submitted["method"] == "password"
        && submitted["password"]
            .as_str()
            .is_some_and(|p| !p.is_empty());
    if complete {
        kratos_json(actix_web::http::StatusCode::OK, bodies.flow.clone())
    } else {
        kratos_json(
            actix_web::http::StatusCode::BAD_REQUEST,
            Bytes::from_static(br#"{"error":{"code":400,"status":"Bad Request"}}"#),
        )
    }
}

/// The guard as `reclaim serve guard` runs it, in front of the stand-in, with one identity whose history
/// holds five passwords from weeks ago (so a fresh candidate is allowed after one argon2id run).
async fn guard(upstream: &str, dir: &str) -> anyhow::Result<()> {
    exit_with_driver();
    let mut settings = Settings::default();
    settings.database.url = DatabaseUrl::new(format!(
        "sqlite://{}",
        std::path::Path::new(dir).join("guard.db").display()
    ));
    settings.database.pool_size = 16;
    settings.plugin.history.pepper = Secret::new("bench pepper, thirty-two characters long");
    settings.plugin.kratos.public_url = upstream.to_string();
    settings.plugin.kratos.guard.listen = "127.0.0.1:0".into();
    settings.plugin.kratos.guard.ops_listen = "127.0.0.1:0".into();
    let db = Db::connect(&settings.database)?;
    db.migrate()?;
    let passwords = Passwords::new(&settings, db.clone(), &prometheus::Registry::new())?;
    let who = Identity::new(IdentityId::parse(IDENTITY_ID).map_err(anyhow::Error::msg)?);
    for i in 0..HISTORY_ENTRIES {
        let password = Password::parse(format!("old password {i} of the bench identity"))
            .map_err(anyhow::Error::msg)?;
        let at = Utc::now() - Days::days(60 - 10 * i);
        passwords
            .record(&who, &password, Some(at), ChangeContext::Voluntary)
            .await?;
    }
    drop(passwords);
    let app = GuardApplication::build(&settings, db).await?;
    println!("PORT {} {}", app.port(), app.ops_port());
    let stop = reclaim_common::shutdown::Shutdown::default();
    stop.on_signals();
    app.run_until_stopped(stop).await?;
    Ok(())
}

/// A settings flow in the shape Kratos answers `GET /self-service/settings/flows` with (the profile and
/// password groups of the quickstart schema).
fn flow_body() -> Value {
    let node = |group: &str, name: &str, kind: &str, value: Value, label: Option<(u64, &str)>| {
        json!({
            "type": "input",
            "group": group,
            "attributes": {"name": name, "type": kind, "value": value, "required": name != "traits.name.last",
                           "disabled": false, "node_type": "input"},
            "messages": [],
            "meta": label.map_or(json!({}), |(id, text)| json!({"label": {"id": id, "text": text, "type": "info"}})),
        })
    };
    json!({
        "id": FLOW_ID,
        "type": "api",
        "expires_at": "2026-07-30T11:02:11.274819Z",
        "issued_at": "2026-07-30T10:02:11.274819Z",
        "request_url": "https://auth.example.com/self-service/settings/api",
        "ui": {
            "action": format!("https://auth.example.com/self-service/settings?flow={FLOW_ID}"),
            "method": "POST",
            "nodes": [
                node("default", "csrf_token", "hidden", json!(""), None),
                node("profile", "traits.email", "email", json!("jane.doe@example.com"), Some((1_070_002, "E-Mail"))),
                node("profile", "traits.name.first", "text", json!("Jane"), Some((1_070_002, "First Name"))),
                node("profile", "traits.name.last", "text", json!("Doe"), Some((1_070_002, "Last Name"))),
                node("profile", "method", "submit", json!("profile"), Some((1_050_003, "Save"))),
                node("password", "password", "password", Value::Null, Some((1_070_001, "Password"))),
                node("password", "method", "submit", json!("password"), Some((1_050_003, "Save"))),
            ],
        },
        "identity": session_identity(),
        "state": "show_form",
    })
}

fn session_identity() -> Value {
    json!({
        "id": IDENTITY_ID,
        "schema_id": "default",
        "schema_url": "https://auth.example.com/schemas/ZGVmYXVsdA",
        "state": "active",
        "state_changed_at": "2026-06-01T09:00:00.000000Z",
        "traits": {"email": "jane.doe@example.com", "name": {"first": "Jane", "last": "Doe"}},
        "verifiable_addresses": [{"id": "2a6f0c9e-8d3b-4f1a-9c7e-5b4d3a2f1e0d", "value": "jane.doe@example.com",
            "verified": true, "via": "email", "status": "completed"}],
        "recovery_addresses": [{"id": "7b1e2d3c-4f5a-4b6c-8d9e-0f1a2b3c4d5e", "value": "jane.doe@example.com",
            "via": "email"}],
        "metadata_public": null,
        "created_at": "2026-06-01T09:00:00.000000Z",
        "updated_at": "2026-06-01T09:00:00.000000Z",
    })
}

/// Kratos's `/sessions/whoami` answer for the bench identity: a session from a password login.
fn session_body() -> Value {
    json!({
        "id": "0d2e4f6a-8b1c-4d3e-9f5a-7b6c5d4e3f2a",
        "active": true,
        "expires_at": "2026-07-31T10:00:00.000000Z",
        "authenticated_at": "2026-07-30T10:00:00.000000Z",
        "authenticator_assurance_level": "aal1",
        "authentication_methods": [{"method": "password", "aal": "aal1",
            "completed_at": "2026-07-30T10:00:00.000000Z"}],
        "issued_at": "2026-07-30T10:00:00.000000Z",
        "identity": session_identity(),
        "devices": [{"id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", "ip_address": "203.0.113.7",
            "user_agent": "Mozilla/5.0", "location": ""}],
    })
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

struct Report {
    cores: usize,
    argon: (u32, u32, u32),
    load: (String, String),
    flow_len: usize,
    round: Duration,
    light_round: Duration,
    /// Direct, then through the guard.
    heavy: [Side; 2],
    light: [Side; 2],
    raw: Side,
    guard_submit: Side,
    direct_submit: Side,
    allowed: f64,
    passed: f64,
    measuring: Duration,
    total: Duration,
}

impl Report {
    fn render(&self) -> anyhow::Result<String> {
        let ms = |s: f64| s * 1e3;
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let [direct, guarded] = &self.heavy;
        let [light_direct, light_guarded] = &self.light;
        let throughput = guarded.rate() / direct.rate();
        let round_ratios: Vec<f64> = guarded
            .round_rates
            .iter()
            .zip(&direct.round_rates)
            .map(|(g, d)| g / d)
            .collect();
        let (ratio_low, ratio_high) = spread(&round_ratios);
        let per_cpu = guarded.per_cpu() / direct.per_cpu();
        let cpu_ratios: Vec<f64> = guarded
            .round_per_cpu
            .iter()
            .zip(&direct.round_per_cpu)
            .map(|(g, d)| g / d)
            .collect();
        let (cpu_low, cpu_high) = spread(&cpu_ratios);
        let added_p99 = guarded.percentile(0.99) - direct.percentile(0.99);
        let light_p99 = light_guarded.percentile(0.99) - light_direct.percentile(0.99);
        let guard_kdf_cpu = self.guard_submit.cpu.guard / self.guard_submit.ok().max(1.0);
        let raw_cpu = self.raw.cpu.driver / self.raw.ok().max(1.0);
        let kdf_runs = guard_kdf_cpu / raw_cpu.max(f64::EPSILON);
        let cores = self.cores;

        let mut r = String::new();
        writeln!(r, "# Kratos edge guard benchmarks\n")?;
        writeln!(
            r,
            "Produced by `cargo run --release -p reclaim-plugin --example guard_bench` (source: \
             `plugin/examples/guard_bench.rs`); every number below comes from one run, which took {:.0} s \
             ({:.0} s of measuring, the rest start-up, warm-up and the release binary's own start).\n",
            self.total.as_secs_f64(),
            self.measuring.as_secs_f64()
        )?;
        writeln!(
            r,
            "- Run at: {} UTC (release build)\n- Machine: {cores} cores, {}; 1-minute load average {} before, \
             {} after (other work shares these cores)\n- argon2id m={} KiB, t={}, p={} (the shipped defaults)\n\
             - Three processes on loopback, so that each one's CPU time is read from /proc: the load driver \
             (reqwest, keep-alive HTTP/1.1), a stand-in for Kratos's public API (actix-web, {cores} workers) and \
             the guard as `reclaim serve guard` runs it (`GuardApplication`: `Passwords::new` on a migrated \
             SQLite temp database, `Guard::build`, {cores} workers, default settings).\n",
            Utc::now().format("%Y-%m-%d %H:%M"),
            cpu_model(),
            self.load.0,
            self.load.1,
            self.argon.0,
            self.argon.1,
            self.argon.2,
        )?;

        writeln!(r, "## Goals (issue 9)\n")?;
        writeln!(r, "| goal | measured | |\n|---|---:|---|")?;
        writeln!(
            r,
            "| pass-through throughput ≥ 80% of direct ({LOAD_CLIENTS} clients, wall clock) | {:.0}% (rounds {:.0}–{:.0}%) | {} |",
            100.0 * throughput,
            100.0 * ratio_low,
            100.0 * ratio_high,
            verdict(throughput >= 0.8)
        )?;
        writeln!(
            r,
            "| < 2 ms added p99 on loopback ({LOAD_CLIENTS} clients) | {:+.2} ms | {} |",
            ms(added_p99),
            verdict(added_p99 < 0.002)
        )?;
        writeln!(
            r,
            "| < 2 ms added p99 on loopback (1 client) | {:+.2} ms | {} |",
            ms(light_p99),
            verdict(light_p99 < 0.002)
        )?;
        writeln!(
            r,
            "| a password submission costs one KDF run | guard CPU per submission = {kdf_runs:.2} × one raw argon2id run | {} |\n",
            verdict((0.8..1.5).contains(&kdf_runs))
        )?;
        writeln!(
            r,
            "On {cores} cores shared by the load driver, the guard and the stand-in, {LOAD_CLIENTS} clients keep \
             every core busy, so throughput is set by CPU per request: a request through the guard costs the \
             stand-in's work plus the guard's (an HTTP server and an HTTP client hop), {:.0} µs of CPU in all \
             against {:.0} µs direct. Requests per CPU-second through the guard are {:.0}% of direct (rounds \
             {:.0}–{:.0}%); unlike the wall-clock ratio, this one does not depend on how much CPU other work \
             left the run. With a real Kratos, whose flow fetch reads the database, the stand-in's share per \
             request is larger and the guard's fixed share ({:.0} µs) weighs less. Under full load the added \
             latency is mostly queueing for CPU (latency ≈ clients ÷ throughput); the 1-client rows measure \
             the hop itself.\n",
            guarded.cpu_us(guarded.cpu.total()),
            direct.cpu_us(direct.cpu.total()),
            100.0 * per_cpu,
            100.0 * cpu_low,
            100.0 * cpu_high,
            guarded.cpu_us(guarded.cpu.guard),
        )?;

        writeln!(r, "## 1. Pass-through under load\n")?;
        writeln!(
            r,
            "{LOAD_CLIENTS} clients, each sending `GET /self-service/settings/flows?id=…` (session and CSRF \
             cookies, `Accept: application/json`) on its own keep-alive connection and the next request as \
             soon as the answer (a {}-byte settings flow) is read, for {:.1} s per round; direct and through \
             the guard alternate over {ROUNDS} rounds each (direct first in odd rounds, the guard first in even \
             ones). CPU is user + system time of each process from /proc over the same rounds.\n",
            self.flow_len,
            self.round.as_secs_f64()
        )?;
        writeln!(
            r,
            "| measure | direct | through the guard | guard / direct |\n|---|---:|---:|---:|"
        )?;
        writeln!(
            r,
            "| answers per second | {:.0} | {:.0} | **{:.0}%** |",
            direct.rate(),
            guarded.rate(),
            100.0 * throughput
        )?;
        writeln!(
            r,
            "| answers per CPU-second (all three processes) | {:.0} | {:.0} | {:.0}% |",
            direct.per_cpu(),
            guarded.per_cpu(),
            100.0 * per_cpu
        )?;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            writeln!(
                r,
                "| {name} latency | {:.2} ms | {:.2} ms | {:+.2} ms |",
                ms(direct.percentile(p)),
                ms(guarded.percentile(p)),
                ms(guarded.percentile(p) - direct.percentile(p))
            )?;
        }
        writeln!(
            r,
            "| CPU per answer: load driver | {:.0} µs | {:.0} µs | |",
            direct.cpu_us(direct.cpu.driver),
            guarded.cpu_us(guarded.cpu.driver)
        )?;
        writeln!(
            r,
            "| CPU per answer: stand-in | {:.0} µs | {:.0} µs | |",
            direct.cpu_us(direct.cpu.stand_in),
            guarded.cpu_us(guarded.cpu.stand_in)
        )?;
        writeln!(
            r,
            "| CPU per answer: guard | {:.0} µs | {:.0} µs | |",
            direct.cpu_us(direct.cpu.guard),
            guarded.cpu_us(guarded.cpu.guard)
        )?;
        writeln!(
            r,
            "| cores' worth of CPU used (of {cores}) | {:.2} | {:.2} | |",
            direct.cpu.total() / direct.elapsed.max(f64::EPSILON),
            guarded.cpu.total() / guarded.elapsed.max(f64::EPSILON)
        )?;
        writeln!(
            r,
            "| answers counted / failed | {} / {} | {} / {} | |\n",
            direct.latencies.len(),
            direct.failures,
            guarded.latencies.len(),
            guarded.failures
        )?;
        writeln!(
            r,
            "The guard's own count of requests it passed through (`reclaim_guard_requests_total{{route=\"other\",\
             outcome=\"passed\"}}`, warm-up and section 2 included): {:.0}.\n",
            self.passed
        )?;
        writeln!(
            r,
            "| round | direct /s | guard /s | guard / direct | per CPU-second |\n|---:|---:|---:|---:|---:|"
        )?;
        for (i, ((d, g), c)) in direct
            .round_rates
            .iter()
            .zip(&guarded.round_rates)
            .zip(&cpu_ratios)
            .enumerate()
        {
            writeln!(
                r,
                "| {} | {d:.0} | {g:.0} | {:.0}% | {:.0}% |",
                i + 1,
                100.0 * g / d,
                100.0 * c
            )?;
        }

        writeln!(r, "\n## 2. Pass-through at light load\n")?;
        writeln!(
            r,
            "One client, one request at a time on a keep-alive connection, {:.1} s per round, direct and \
             through the guard alternating over {ROUNDS} rounds each: the time the extra hop adds when \
             nothing waits for a CPU (other work on the machine still can).\n",
            self.light_round.as_secs_f64()
        )?;
        writeln!(
            r,
            "| measure | direct | through the guard | added |\n|---|---:|---:|---:|"
        )?;
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            writeln!(
                r,
                "| {name} latency | {:.3} ms | {:.3} ms | {:+.3} ms |",
                ms(light_direct.percentile(p)),
                ms(light_guarded.percentile(p)),
                ms(light_guarded.percentile(p) - light_direct.percentile(p))
            )?;
        }
        writeln!(
            r,
            "| requests | {} | {} | |",
            light_direct.latencies.len(),
            light_guarded.latencies.len()
        )?;
        writeln!(
            r,
            "| guard CPU per request | | {:.0} µs | |",
            light_guarded.cpu_us(light_guarded.cpu.guard)
        )?;

        writeln!(r, "\n## 3. Cost of a password submission\n")?;
        writeln!(
            r,
            "`POST /self-service/settings?flow=<new uuid>` with `{{\"method\":\"password\",\"password\":…}}` \
             (JSON, `X-Session-Token`), one at a time, for an identity with {HISTORY_ENTRIES} history entries: \
             the guard asks the stand-in's `/sessions/whoami`, checks the candidate (one argon2id run, since \
             every entry shares today's parameters), stages an allowed verdict under the flow id in SQLite and \
             forwards the body to the stand-in. Against it: one raw argon2id run at the same parameters on one \
             thread (same call and buffer reuse as the guard's KDF threads), and the same submission sent \
             straight to the stand-in. {SUBMISSIONS_PER_ROUND} of each per round, {ROUNDS} rounds in rotating \
             order.\n"
        )?;
        writeln!(
            r,
            "| measure | p50 | p99 | CPU per run |\n|---|---:|---:|---:|"
        )?;
        writeln!(
            r,
            "| raw argon2id run | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(self.raw.percentile(0.5)),
            ms(self.raw.percentile(0.99)),
            ms(raw_cpu)
        )?;
        writeln!(
            r,
            "| submission through the guard | {:.1} ms | {:.1} ms | {:.1} ms (guard process) |",
            ms(self.guard_submit.percentile(0.5)),
            ms(self.guard_submit.percentile(0.99)),
            ms(guard_kdf_cpu)
        )?;
        writeln!(
            r,
            "| submission straight to the stand-in | {:.2} ms | {:.2} ms | |",
            ms(self.direct_submit.percentile(0.5)),
            ms(self.direct_submit.percentile(0.99)),
        )?;
        writeln!(
            r,
            "| guard beyond one argon2id run (p50) | {:+.1} ms | | {:+.1} ms |\n",
            ms(self.guard_submit.percentile(0.5) - self.raw.percentile(0.5)),
            ms(guard_kdf_cpu - raw_cpu)
        )?;
        writeln!(
            r,
            "The guard's CPU per submission is {kdf_runs:.2}× one raw argon2id run: one KDF run plus \
             the rest (whoami, SQLite, forwarding); two runs would show as 2× or more. The guard's metrics \
             after the run count {:.0} allowed verdicts for {} submissions that reached it ({WARM_UP_SUBMISSIONS} \
             warm-up), and no other verdict. Failed submissions: {} through the guard, {} direct.",
            self.allowed,
            self.guard_submit.latencies.len() + WARM_UP_SUBMISSIONS,
            self.guard_submit.failures,
            self.direct_submit.failures
        )?;
        Ok(r)
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Lowest and highest of the per-round figures.
fn spread(rounds: &[f64]) -> (f64, f64) {
    rounds
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)))
}
