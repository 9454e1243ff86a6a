//! Fault suite: PostgreSQL restarted under load. The test runs its own PostgreSQL server (initdb in a
//! temporary folder, as the `postgres` user, on a free port), so stopping it disturbs no other test: the
//! services run against it while clients enqueue messages and record passwords; the server is stopped (fast
//! shutdown) and started again. On the PostgreSQL run only (`TEST_DATABASE_URL`); it needs root to run
//! initdb as `postgres`, and the server binaries of Debian's `postgresql` package.

use crate::support::plugin::{check_password, new_id, post};
use crate::support::{expected_backend, spawn_app_in, TestApp, API_TOKEN};
use reclaim_gateway::RunMode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound of every wait here: far above a normal run, so reaching it means the event never came.
const BOUND: Duration = Duration::from_secs(60);

/// A private PostgreSQL server; stopped when dropped.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    command
}

impl PrivatePostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL server binaries in /usr/lib/postgresql (Debian's postgresql package)",
            )
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let chown = |path: &Path| {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {}", path.display());
        };
        chown(dir.path());
        let status = as_postgres(&bin, "initdb")
            .args(["--auth=trust", "--username=postgres", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb (as root, through runuser)");
        assert!(
            status.success(),
            "initdb as postgres failed: this test needs root and Debian's postgresql server package"
        );
        let port = crate::support::ports::closed_port().port;
        let server = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        server.pg_ctl_start();
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl_start(&self) {
        let status = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-l"])
            .arg(self.data.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {}",
                self.port,
                self.data.display()
            ))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    fn pg_ctl_stop(&self) {
        let status = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .status();
    }
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

/// What the clients saw.
#[derive(Default)]
struct Load {
    messages: Mutex<Vec<String>>,
    passwords: Mutex<Vec<String>>,
    refused: AtomicUsize,
    /// Answers other than success or 503, with their bodies.
    wrong: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn accepted(&self) -> usize {
        self.messages.lock().expect("lock").len() + self.passwords.lock().expect("lock").len()
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&Load) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(started.elapsed() < BOUND, "waited too long for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Enqueues messages one after the other until told to stop.
async fn enqueue_loop(app: Arc<TestApp>, load: Arc<Load>) {
    let mut i = 0;
    while !load.stop.load(Ordering::SeqCst) {
        i += 1;
        let response = app
            .client
            .post(app.gateway_url("/v1/messages"))
            .bearer_auth(API_TOKEN)
            .json(
                &json!({"channel": "sms", "to": "+14155550100", "template": "recovery_code",
                          "data": {"code": format!("{i:06}")}}),
            )
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 202 => {
                let body: serde_json::Value = r.json().await.expect("json");
                let id = body["id"].as_str().expect("id").to_string();
                load.messages.lock().expect("lock").push(id);
            }
            Ok(r) if r.status() == 503 => {
                load.refused.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                load.wrong
                    .lock()
                    .expect("lock")
                    .push(format!("enqueue {status}: {body}"));
            }
            Err(error) => load
                .wrong
                .lock()
                .expect("lock")
                .push(format!("enqueue: {error}")),
        }
    }
}

/// Records passwords for fresh identities until told to stop.
async fn record_loop(app: Arc<TestApp>, load: Arc<Load>) {
    while !load.stop.load(Ordering::SeqCst) {
        let id = new_id();
        let response = post(
            &app,
            "/v1/passwords/record",
            json!({"identity_id": id, "password": format!("restart proof {id}")}),
        )
        .await;
        match response.status().as_u16() {
            200 => load.passwords.lock().expect("lock").push(id),
            503 => {
                load.refused.fetch_add(1, Ordering::SeqCst);
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                load.wrong
                    .lock()
                    .expect("lock")
                    .push(format!("record {status}: {body}"));
            }
        }
    }
}

/// PostgreSQL stopped and started again while clients write: while it is down, both services report not
/// ready and refuse writes with 503 (never 500); once it is back they recover by themselves (no restart of
/// the services), and every message accepted (202) and every password recorded (200) before, during or after
/// is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_and_both_services_recover() {
    if expected_backend() != "postgres" {
        println!("PostgreSQL only: skipped on the SQLite run");
        return;
    }
    let server = PrivatePostgres::start();
    let url = server.url();
    let app = Arc::new(
        spawn_app_in(RunMode::ApiOnly, |s| {
            s.database.url = reclaim_common::settings::DatabaseUrl::new(&url);
            s.database.connect_timeout_ms = 1_000;
        })
        .await,
    );
    let load = Arc::new(Load::default());
    let clients = vec![
        tokio::spawn(enqueue_loop(app.clone(), load.clone())),
        tokio::spawn(enqueue_loop(app.clone(), load.clone())),
        tokio::spawn(record_loop(app.clone(), load.clone())),
    ];
    load.wait_until("writes before the restart", |l| {
        l.accepted() >= 20 && !l.passwords.lock().expect("lock").is_empty()
    })
    .await;

    server.pg_ctl_stop();
    assert_eq!(ready(&app, &app.gateway).await, 503);
    assert_eq!(ready(&app, &app.plugin).await, 503);
    load.wait_until("a write refused while the database is down", |l| {
        l.refused.load(Ordering::SeqCst) > 0
    })
    .await;

    server.pg_ctl_start();
    let started = Instant::now();
    while ready(&app, &app.gateway).await != 200 || ready(&app, &app.plugin).await != 200 {
        assert!(started.elapsed() < BOUND, "the services did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = load.accepted();
    load.wait_until("writes after the restart", |l| l.accepted() >= before + 20)
        .await;
    load.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }

    let wrong = load.wrong.lock().expect("lock").clone();
    assert!(
        wrong.is_empty(),
        "answers other than success or 503: {wrong:?}"
    );
    let messages = load.messages.lock().expect("lock").clone();
    for id in &messages {
        let response = app
            .client
            .get(app.gateway_url(&format!("/v1/messages/{id}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "accepted message {id} lost");
    }
    let passwords = load.passwords.lock().expect("lock").clone();
    for id in &passwords {
        let answer = check_password(&app, id, &format!("restart proof {id}")).await;
        assert_eq!(
            answer["allowed"], false,
            "recorded password of {id} lost: {answer}"
        );
    }
    println!(
        "{} messages and {} passwords accepted, {} writes refused during the restart",
        messages.len(),
        passwords.len(),
        load.refused.load(Ordering::SeqCst)
    );
}
