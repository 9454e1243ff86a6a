//! Benchmarks of the history store and the HTTP check endpoint, measured in one run and written to
//! `perf/plugin.md`.
//!
//! ```text
//! cargo run --release -p reclaim-plugin --example plugin_bench            # ~2-3 minutes
//! BENCH_SECONDS=5 BENCH_OUT=/tmp/plugin.md cargo run --release -p reclaim-plugin --example plugin_bench
//! ```
//!
//! 1. Check latency at history depth 1, 5, 24, 64 through the real `Passwords` facade (SQLite), against a
//!    naive baseline verifying N separately salted argon2id PHC hashes, same parameters (OWASP defaults).
//! 2. The machine's raw argon2id rate (one thread per core) against HTTP check throughput of the real
//!    application on loopback with 2 clients per core; p50/p99.
//! 3. 10× overload (20 clients per core, `max_queue_ms` = 250): status counts and resident memory sampled
//!    every 100 ms.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{Duration as Days, Utc};
use reclaim_common::settings::{DatabaseUrl, ProfileSettings, Settings};
use reclaim_common::{Db, Secret};
use reclaim_plugin::policy::ChangeContext;
use reclaim_plugin::{Application, CheckOptions, Identity, IdentityId, Password, Passwords};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";
const DEPTHS: [usize; 4] = [1, 5, 24, 64];
const CHECK_ITERATIONS: usize = 15;
const NAIVE_ITERATIONS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "perf/plugin.md".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::tempdir()?;
    let settings = bench_settings(&dir);
    let db = Db::connect(&settings.database)?;
    db.migrate()?;
    let argon = &settings.plugin.history.argon2;
    let params = Params::new(argon.m_kib, argon.t, argon.p, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;

    let mut report = String::new();
    writeln!(report, "# Plugin benchmarks\n")?;
    writeln!(
        report,
        "Produced by `cargo run --release -p reclaim-plugin --example plugin_bench` \
         (source: `plugin/examples/plugin_bench.rs`); every number below comes from one run.\n"
    )?;
    writeln!(
        report,
        "- Run at: {} UTC\n- Machine: {} cores, {}\n- argon2id m={} KiB, t={}, p={} (the shipped defaults)\n- Database: SQLite (temporary file)\n",
        Utc::now().format("%Y-%m-%d %H:%M"),
        cores,
        cpu_model(),
        argon.m_kib,
        argon.t,
        argon.p
    )?;

    // 1. Latency by depth.
    eprintln!("latency by depth...");
    let passwords = Passwords::new(&settings, db.clone(), &prometheus::Registry::new())?;
    writeln!(report, "## 1. Check latency by history depth\n")?;
    writeln!(
        report,
        "Median of {CHECK_ITERATIONS} checks of a password not in the history (so every entry is compared) \
         through `Passwords::check` (database read included), and median of {NAIVE_ITERATIONS} naive checks \
         verifying N argon2id PHC hashes, each with its own salt. Ratios are to depth 1 of the same method.\n"
    )?;
    writeln!(
        report,
        "| depth | Reclaim check | ratio | naive baseline | ratio | naive / Reclaim |\n|---:|---:|---:|---:|---:|---:|"
    )?;
    let mut base: Option<(f64, f64)> = None;
    for depth in DEPTHS {
        let who = Identity::new(
            IdentityId::parse(&format!("depth-{depth}")).map_err(anyhow::Error::msg)?,
        );
        for i in 0..depth {
            let at = Utc::now() - Days::days(i64::try_from(depth - i).unwrap_or(0));
            passwords
                .record(
                    &who,
                    &password(&format!("old password {i}"))?,
                    Some(at),
                    ChangeContext::Voluntary,
                )
                .await?;
        }
        let candidate = password("a brand new password")?;
        passwords
            .check(&who, &candidate, &CheckOptions::default())
            .await?;
        let mut samples = Vec::new();
        for _ in 0..CHECK_ITERATIONS {
            let started = Instant::now();
            let decision = passwords
                .check(&who, &candidate, &CheckOptions::default())
                .await?;
            samples.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(decision.allowed, "the candidate is not in the history");
        }
        let ours = median(&mut samples);
        let naive = naive_check(depth, params.clone()).await?;
        let (ours_1, naive_1) = *base.get_or_insert((ours, naive));
        writeln!(
            report,
            "| {depth} | {:.1} ms | {:.2}× | {:.1} ms | {:.1}× | {:.1}× |",
            ours * 1e3,
            ours / ours_1,
            naive * 1e3,
            naive / naive_1,
            naive / ours
        )?;
    }

    // 2. Raw argon2 rate vs HTTP throughput.
    eprintln!("raw argon2 rate...");
    let raw_rate = raw_argon2_rate(cores, params.clone(), Duration::from_secs(seconds));
    eprintln!("HTTP throughput...");
    let (base_url, _server) = start_app(&settings, db.clone(), None).await?;
    let http_id = "http-bench";
    seed(&passwords, http_id, 5).await?;
    let clients = 2 * cores;
    let run = load(
        &base_url,
        http_id,
        clients,
        Duration::from_secs(seconds),
        false,
    )
    .await?;
    writeln!(report, "\n## 2. HTTP check throughput\n")?;
    writeln!(
        report,
        "Raw argon2id rate: {cores} threads hashing in a loop for {seconds} s. HTTP: the real application on \
         loopback (`http.workers` = cores, `max_concurrent_kdf` = cores), {clients} clients (2 per core) \
         sending `POST /v1/passwords/check` for an identity with 5 history entries, for {seconds} s. The \
         clients run in the same process and share the same cores, so their own CPU is counted against us.\n"
    )?;
    writeln!(report, "| measure | value |\n|---|---:|")?;
    writeln!(report, "| raw argon2id rate | {raw_rate:.1} /s |")?;
    writeln!(
        report,
        "| HTTP checks answered 200 | {:.1} /s |",
        run.ok_rate()
    )?;
    writeln!(
        report,
        "| HTTP / raw | **{:.0}%** |",
        100.0 * run.ok_rate() / raw_rate
    )?;
    writeln!(
        report,
        "| p50 latency | {:.1} ms |",
        run.percentile(0.50) * 1e3
    )?;
    writeln!(
        report,
        "| p99 latency | {:.1} ms |",
        run.percentile(0.99) * 1e3
    )?;
    writeln!(report, "| non-200 answers | {} |", run.other)?;

    // 3. Overload.
    eprintln!("overload...");
    let (overload_url, _overload_server) = start_app(&settings, db.clone(), Some(250)).await?;
    let rss_before = rss_kib();
    let sampler = RssSampler::start();
    let overload_clients = 20 * cores;
    let heavy = load(
        &overload_url,
        http_id,
        overload_clients,
        Duration::from_secs(seconds),
        true,
    )
    .await?;
    let samples = sampler.stop();
    let third = samples.len() / 3;
    let peak = samples.iter().copied().max().unwrap_or(0);
    let early = samples[..third.max(1).min(samples.len())]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let late = samples[samples.len().saturating_sub(third.max(1))..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    writeln!(report, "\n## 3. 10× overload\n")?;
    writeln!(
        report,
        "{overload_clients} clients (20 per core, 10× the load of section 2) for {seconds} s, with \
         `max_queue_ms` = 250 so that requests finding no KDF slot are refused quickly. Resident set size \
         of the whole process (server and clients) sampled every 100 ms. The KDF pool bounds argon2 memory at \
         {cores} slots × {} KiB = {} MiB.\n",
        argon.m_kib,
        cores * usize::try_from(argon.m_kib).unwrap_or(0) / 1024
    )?;
    writeln!(report, "| measure | value |\n|---|---:|")?;
    writeln!(
        report,
        "| answered 200 | {} ({:.1} /s) |",
        heavy.latencies.len(),
        heavy.ok_rate()
    )?;
    writeln!(report, "| answered 503 + Retry-After | {} |", heavy.busy)?;
    writeln!(report, "| other answers / errors | {} |", heavy.other)?;
    writeln!(
        report,
        "| p50 / p99 latency of 200s | {:.1} / {:.1} ms |",
        heavy.percentile(0.5) * 1e3,
        heavy.percentile(0.99) * 1e3
    )?;
    writeln!(
        report,
        "| RSS before overload | {:.1} MiB |",
        kib_to_mib(rss_before)
    )?;
    writeln!(
        report,
        "| peak RSS during overload | {:.1} MiB |",
        kib_to_mib(peak)
    )?;
    writeln!(
        report,
        "| peak RSS, first third of the run | {:.1} MiB |",
        kib_to_mib(early)
    )?;
    writeln!(
        report,
        "| peak RSS, last third of the run | {:.1} MiB |",
        kib_to_mib(late)
    )?;

    if let Some(parent) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, &report)?;
    eprintln!("{report}\nwritten to {out}");
    Ok(())
}

fn bench_settings(dir: &tempfile::TempDir) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = DatabaseUrl::new(format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ));
    settings.database.pool_size = 16;
    settings.plugin.listen = "127.0.0.1:0".into();
    settings.plugin.api.tokens = vec![Secret::new(TOKEN)];
    settings.plugin.history.pepper = Secret::new("bench pepper, thirty-two characters long");
    settings.plugin.policy.profiles.insert(
        "default".into(),
        ProfileSettings {
            history_depth: 64,
            ..ProfileSettings::default()
        },
    );
    settings
}

fn password(value: &str) -> anyhow::Result<Password> {
    Password::parse(value.to_string()).map_err(anyhow::Error::msg)
}

async fn seed(passwords: &Passwords, id: &str, depth: usize) -> anyhow::Result<()> {
    let who = Identity::new(IdentityId::parse(id).map_err(anyhow::Error::msg)?);
    for i in 0..depth {
        passwords
            .record(
                &who,
                &password(&format!("http old {i}"))?,
                None,
                ChangeContext::Voluntary,
            )
            .await?;
    }
    Ok(())
}

/// Median time to verify a candidate against `depth` separately salted PHC hashes (none matches).
async fn naive_check(depth: usize, params: Params) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let hashes: Vec<String> = (0..depth)
            .map(|i| {
                let mut bytes = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                let salt = SaltString::encode_b64(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
                argon
                    .hash_password(format!("old password {i}").as_bytes(), &salt)
                    .map(|h| h.to_string())
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut samples = Vec::new();
        for _ in 0..NAIVE_ITERATIONS {
            let started = Instant::now();
            let mut found = false;
            for hash in &hashes {
                let parsed = argon2::PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("{e}"))?;
                found |= argon
                    .verify_password(b"a brand new password", &parsed)
                    .is_ok();
            }
            samples.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(!found, "the candidate is not among the hashes");
        }
        Ok(median(&mut samples))
    })
    .await?
}

/// Argon2id hashes per second with one thread per core.
fn raw_argon2_rate(threads: usize, params: Params, length: Duration) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let count = count.clone();
            let params = params.clone();
            std::thread::spawn(move || {
                let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let mut out = [0u8; 32];
                let salt = [t as u8; 16];
                while Instant::now() < deadline {
                    if argon
                        .hash_password_into(b"raw rate password", &salt, &mut out)
                        .is_ok()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn start_app(
    settings: &Settings,
    db: Db,
    max_queue_ms: Option<u64>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let mut settings = settings.clone();
    if let Some(ms) = max_queue_ms {
        settings.plugin.history.max_queue_ms = ms;
    }
    let app = Application::build(&settings, db).await?;
    let url = format!("http://127.0.0.1:{}", app.port());
    Ok((url, tokio::spawn(app.run_until_stopped())))
}

struct LoadRun {
    latencies: Vec<f64>,
    busy: u64,
    other: u64,
    elapsed: f64,
}

impl LoadRun {
    fn ok_rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return 0.0;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

/// `clients` concurrent loops of check requests until `length` has passed.
async fn load(
    base: &str,
    identity: &str,
    clients: usize,
    length: Duration,
    retry_later: bool,
) -> anyhow::Result<LoadRun> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{base}/v1/passwords/check");
    let body = serde_json::json!({"identity_id": identity, "password": "not in the history"});
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let (mut latencies, mut busy, mut other) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let _ = r.bytes().await;
                            latencies.push(sent.elapsed().as_secs_f64());
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            busy += 1;
                            let _ = r.bytes().await;
                            // A well-behaved client would wait Retry-After; the overload keeps pushing to
                            // hold the server at 10× its capacity.
                            if !retry_later {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        _ => other += 1,
                    }
                }
                (latencies, busy, other)
            })
        })
        .collect();
    let mut run = LoadRun {
        latencies: Vec::new(),
        busy: 0,
        other: 0,
        elapsed: 0.0,
    };
    for task in tasks {
        let (latencies, busy, other) = task.await?;
        run.latencies.extend(latencies);
        run.busy += busy;
        run.other += other;
    }
    run.elapsed = started.elapsed().as_secs_f64();
    Ok(run)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push(rss_kib());
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Self { stop, handle }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
