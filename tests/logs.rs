//! The `reclaim` binary as an operator runs it (`reclaim serve`, JSON logs at the most verbose level), with
//! its logs captured: a full run through the plugin's API, the Kratos hooks, and the gateway delivering
//! codes by email (real SMTP server, STARTTLS and authentication) and SMS (a Twilio stand-in) must log no
//! password, code, token, hash or full address (nor the development tokens it generated for the empty admin
//! lists: those reach stdout only), and must name every response's `x-request-id`; SIGTERM
//! with a request and a delivery in flight lets both finish and the process exits 0.

use crate::support::kratos::{
    contract, for_identity, from_recovery_session, render_body, KRATOS_KEY,
};
use crate::support::plugin::new_id;
use crate::support::smtp::SmtpServer;
use crate::support::twilio_faults::{FaultyTwilio, Reply};
use crate::support::TestDatabase;
use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};
use reclaim_common::settings::{DatabaseUrl, Settings};
use reclaim_common::Db;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Bound of every wait on an event: far above any normal run, so reaching it means the event never came.
const EVENT_BOUND: Duration = Duration::from_secs(60);

const API_TOKEN: &str = "log-test-api-token-7Qx2";
const WRONG_TOKEN: &str = "log-test-wrong-token-Zk4p";
const PEPPER: &str = "log-test-pepper-0123456789abcdefghijklmnop";
const SMTP_USER: &str = "reclaim-mailer";
const SMTP_PASSWORD: &str = "log-test-smtp-password-Vb8";
const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "log-test-twilio-auth-token-Hn3";
const TWILIO_FROM: &str = "+14155552671";

/// `reclaim serve` in a child process; every line it writes is kept, and waiters are woken on each.
pub(crate) struct Reclaim {
    child: Option<Child>,
    pid: u32,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Every line, of stdout and stderr, in the order read.
    lines: Arc<Mutex<Vec<String>>>,
    /// The lines of stdout alone.
    stdout_lines: Arc<Mutex<Vec<String>>>,
    /// The lines of stderr alone: the logs.
    log_lines: Arc<Mutex<Vec<String>>>,
    new_line: Arc<Notify>,
    pub(crate) plugin: String,
    pub(crate) gateway: String,
    _dir: tempfile::TempDir,
}

impl Reclaim {
    pub(crate) async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("reclaim.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Self::command();
        command
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .env("RECLAIM__TELEMETRY__FORMAT", "json")
            .env("RECLAIM__TELEMETRY__LEVEL", "trace");
        Self::spawn(command, dir).await
    }

    /// The binary, with no `RECLAIM*` or `RUST_LOG` variable inherited from the test's environment.
    pub(crate) fn command() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reclaim"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RECLAIM") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
    }

    /// Starts `command` (a `serve` of both services), keeping `dir` until the process is dropped, and waits
    /// for both services to listen.
    pub(crate) async fn spawn(mut command: Command, dir: tempfile::TempDir) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reclaim");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let log_lines = Arc::new(Mutex::new(Vec::new()));
        let new_line = Arc::new(Notify::new());
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                stdout_lines.clone(),
            ),
            (Box::new(stderr), log_lines.clone()),
        ]
        .into_iter()
        .map(|(stream, own_lines)| {
            let lines = lines.clone();
            let new_line = new_line.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    own_lines.lock().expect("lock").push(line.clone());
                    lines.lock().expect("lock").push(line);
                    new_line.notify_waiters();
                }
            })
        })
        .collect();
        let mut reclaim = Self {
            pid: child.id(),
            child: Some(child),
            readers,
            lines,
            stdout_lines,
            log_lines,
            new_line,
            plugin: String::new(),
            gateway: String::new(),
            _dir: dir,
        };
        reclaim.plugin = reclaim.listening("plugin").await;
        reclaim.gateway = reclaim.listening("gateway").await;
        // No wait for anything else: `reclaim serve` installs its SIGTERM handler before it migrates.
        reclaim
    }

    /// The URL from the `<service> listening on http://...` line.
    async fn listening(&self, service: &str) -> String {
        let marker = format!("{service} listening on ");
        let line = self.wait_for(&marker, |l| l.contains(&marker)).await;
        let start = line.find(&marker).expect("marker") + marker.len();
        line[start..]
            .split(|c: char| c == '"' || c == '\x1b' || c.is_whitespace())
            .next()
            .expect("url")
            .to_string()
    }

    /// Waits until a line satisfies `wanted` (bounded by [`EVENT_BOUND`]); returns the first such line.
    pub(crate) async fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + EVENT_BOUND;
        loop {
            let notified = self.new_line.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return line;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no log line with {what}:\n{}", self.lines().join("\n"));
            }
        }
    }

    /// How many lines satisfy `wanted`, once at least `n` do.
    async fn wait_for_count(&self, what: &str, n: usize, wanted: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + EVENT_BOUND;
        loop {
            let notified = self.new_line.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lines().iter().filter(|l| wanted(l)).count() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "fewer than {n} log lines with {what}:\n{}",
                    self.lines().join("\n")
                );
            }
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().expect("lock").clone()
    }

    /// The log lines: everything on stderr.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log_lines.lock().expect("lock").clone()
    }

    /// The `export NAME=token` lines `reclaim serve` printed for the token lists it generated, as
    /// (NAME, token), once the block's last line is read (stdout is read apart from the logs).
    pub(crate) async fn development_tokens(&self) -> Vec<(String, String)> {
        self.wait_for("the end of the development tokens", |l| {
            l == "==== end of development tokens ===="
        })
        .await;
        self.stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| {
                let (name, rest) = l.split_once('=')?;
                let token = rest.split_whitespace().next()?;
                Some((name.to_string(), token.to_string()))
            })
            .collect()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub(crate) fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits (bounded) for the process to exit and for its last lines to be read.
    pub(crate) async fn exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let readers = std::mem::take(&mut self.readers);
        let waiting = tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("wait");
            for reader in readers {
                let _ = reader.join();
            }
            status
        });
        match tokio::time::timeout(EVENT_BOUND, waiting).await {
            Ok(status) => status.expect("join"),
            Err(_) => {
                self.signal("-KILL");
                panic!(
                    "reclaim did not exit after SIGTERM:\n{}",
                    self.lines().join("\n")
                );
            }
        }
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Kratos admin API stand-in that answers with Kratos's own identity fixture and, when armed, holds the
/// next request until released, reporting that it holds it.
struct HeldKratosAdmin {
    url: String,
    hashed_password: String,
    armed: Arc<AtomicBool>,
    release: Arc<Notify>,
    held: mpsc::UnboundedReceiver<()>,
}

impl HeldKratosAdmin {
    async fn start() -> Self {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let fixture = contract("admin-identity-with-credentials.json");
        let hashed_password = fixture["credentials"]["password"]["config"]["hashed_password"]
            .as_str()
            .expect("fixture hash")
            .to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Notify::new());
        let (held_tx, held) = mpsc::unbounded_channel();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (server_armed, server_release) = (armed.clone(), release.clone());
        let server = HttpServer::new(move || {
            let fixture = fixture.clone();
            let armed = server_armed.clone();
            let release = server_release.clone();
            let held_tx = held_tx.clone();
            App::new().default_service(web::to(move |req: actix_web::HttpRequest| {
                let mut identity = fixture.clone();
                let armed = armed.clone();
                let release = release.clone();
                let held_tx = held_tx.clone();
                async move {
                    if armed.swap(false, Ordering::SeqCst) {
                        let released = release.notified();
                        tokio::pin!(released);
                        released.as_mut().enable();
                        let _ = held_tx.send(());
                        released.await;
                    }
                    if let Some(id) = req.path().rsplit('/').next() {
                        identity["id"] = Value::String(id.to_string());
                    }
                    HttpResponse::Ok().json(identity)
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        tokio::spawn(server);
        Self {
            url,
            hashed_password,
            armed,
            release,
            held,
        }
    }
}

fn config(database_url: &str, smtp: &SmtpServer, twilio_url: &str, admin_url: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"
pool_size = 4

[http]
workers = 1
shutdown_timeout_seconds = 30

[plugin]
listen = "127.0.0.1:0"

[plugin.api]
tokens = ["{API_TOKEN}"]

[plugin.kratos]
api_keys = ["{KRATOS_KEY}"]
admin_url = "{admin_url}"

[plugin.history]
pepper = "{PEPPER}"

[plugin.history.argon2]
m_kib = 256
t = 1
p = 1

# `serve all` links the notices to the gateway it runs.
[plugin.notices]
enabled = true

[gateway]
listen = "127.0.0.1:0"
# Where Twilio would post status callbacks; the stand-in posts none.
public_url = "https://reclaim.example.test"

[gateway.api]
tokens = ["{API_TOKEN}"]

[gateway.worker]
poll_interval_ms = 50

[gateway.channels.email]
provider = "smtp"

[gateway.channels.sms]
provider = "twilio"
fallback = []

[gateway.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
ca_file = "{ca_file}"
username = "{SMTP_USER}"
password = "{SMTP_PASSWORD}"
from = "Reclaim <no-reply@reclaim.test>"

[gateway.twilio]
base_url = "{twilio_url}"
account_sid = "{TWILIO_SID}"
auth_token = "{TWILIO_TOKEN}"
from = "{TWILIO_FROM}"
"#,
        smtp_port = smtp.port,
        ca_file = smtp.ca_file.display(),
    )
}

/// Sends a request, keeps its `x-request-id`, returns status and body.
async fn send(request: reqwest::RequestBuilder, request_ids: &mut Vec<String>) -> (u16, String) {
    let response = request.send().await.expect("request");
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every response carries x-request-id")
        .to_string();
    request_ids.push(id);
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Queues a message on the running gateway (202), keeping the request id; returns the message's id.
async fn queue_message(
    client: &reqwest::Client,
    gateway: &str,
    body: &Value,
    request_ids: &mut Vec<String>,
) -> String {
    let (status, answer) = send(
        client
            .post(format!("{gateway}/v1/messages"))
            .bearer_auth(API_TOKEN)
            .json(body),
        request_ids,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    answer["id"].as_str().expect("id").to_string()
}

/// Reads a message from the running gateway (200), keeping the request id; returns the view as text.
async fn read_message(
    client: &reqwest::Client,
    gateway: &str,
    id: &str,
    request_ids: &mut Vec<String>,
) -> String {
    let (status, view) = send(
        client
            .get(format!("{gateway}/v1/messages/{id}"))
            .bearer_auth(API_TOKEN),
        request_ids,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    view
}

fn hook(
    client: &reqwest::Client,
    plugin: &str,
    path: &str,
    ctx: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{plugin}{path}"))
        .header("content-type", "application/json")
        .header("x-reclaim-key", KRATOS_KEY)
        .header("ory-webhook-trigger-id", new_id())
        .body(render_body(ctx).to_string())
}

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = Text)]
    status: String,
}

fn message_status(database: &TestDatabase, id: &str) -> String {
    let mut settings = Settings::default();
    settings.database.url = DatabaseUrl::new(&database.url);
    let db = Db::connect(&settings.database).expect("connect");
    let mut conn = db.get().expect("conn");
    let placeholder = if database.is_postgres() { "$1" } else { "?" };
    diesel::sql_query(format!(
        "SELECT status FROM gateway_messages WHERE id = {placeholder}"
    ))
    .bind::<Text, _>(id)
    .get_result::<Status>(&mut *conn)
    .expect("message row")
    .status
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    bytes: Vec<u8>,
}

/// The salts and digests the run stored, in the forms a careless log line would print them.
fn stored_secrets(database: &TestDatabase) -> Vec<String> {
    use base64::Engine;
    let mut settings = Settings::default();
    settings.database.url = DatabaseUrl::new(&database.url);
    let db = Db::connect(&settings.database).expect("connect");
    let mut conn = db.get().expect("conn");
    let mut stored = Vec::new();
    for sql in [
        "SELECT history_salt AS bytes FROM password_states",
        "SELECT digest AS bytes FROM password_history WHERE digest IS NOT NULL",
    ] {
        stored.extend(
            diesel::sql_query(sql)
                .load::<Stored>(&mut *conn)
                .expect("stored bytes")
                .into_iter()
                .map(|s| s.bytes),
        );
    }
    assert!(stored.len() >= 3, "salts and digests were stored");
    stored
        .iter()
        .flat_map(|bytes| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let debug = format!("{:?}", &bytes[..8]);
            [
                hex,
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                debug.trim_end_matches(']').to_string(),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_no_password_code_token_hash_or_address_and_names_every_request_id() {
    let database = TestDatabase::fresh();
    let mut smtp = SmtpServer::start_secure(SMTP_USER, SMTP_PASSWORD);
    // The second SMS is refused with an error text that quotes the number, as Twilio's do.
    let refused_phone = "+14155550199";
    let twilio = FaultyTwilio::start(vec![
        Reply::created("SM0123456789abcdef0123456789abcdef"),
        Reply::new(
            400,
            format!(r#"{{"code": 21211, "message": "The 'To' number {refused_phone} is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}}"#),
        ),
    ])
    .await;
    let admin = HeldKratosAdmin::start().await;
    let mut reclaim = Reclaim::start(&config(&database.url, &smtp, &twilio.url, &admin.url)).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let (plugin, gateway) = (reclaim.plugin.clone(), reclaim.gateway.clone());

    // The generic API: record, a reused and a new candidate, bad input carrying a password, a wrong token.
    let (first, second, third) = (
        "Log-Password-Alpha-8d1e",
        "Log-Password-Bravo-40c2",
        "Log-Password-Charlie-9b7f",
    );
    let (plugin_email, plugin_phone) = ("ada.lovelace.logs@example.net", "+34612345678");
    let (status, body) = send(
        client
            .post(format!("{plugin}/v1/passwords/record"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"identity_id": "log-user", "password": first, "email": plugin_email, "phone": plugin_phone})),
        &mut ids,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (password, allowed) in [(first, false), (second, true)] {
        let (status, body) = send(
            client
                .post(format!("{plugin}/v1/passwords/check"))
                .bearer_auth(API_TOKEN)
                .header("accept-language", "es")
                .json(&json!({"identity_id": "log-user", "password": password})),
            &mut ids,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["allowed"], allowed, "{body}");
    }
    // A change: its "password changed" notice goes from the plugin to the gateway over HTTP, then by SMTP.
    let (status, body) = send(
        client
            .post(format!("{plugin}/v1/passwords/record"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"identity_id": "log-user", "password": second})),
        &mut ids,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let handed = reclaim
        .wait_for("a notice handed to the gateway", |l| {
            l.contains("notice handed to the gateway")
        })
        .await;
    let handed: Value = serde_json::from_str(&handed).expect("json line");
    let notice_message = handed
        .get("message.id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no message id: {handed}"))
        .to_string();
    reclaim
        .wait_for("the notice sent", |l| {
            l.contains("message sent") && l.contains(notice_message.as_str())
        })
        .await;
    assert_eq!(smtp.next_event("ACCEPTED").await, plugin_email);
    let (status, body) = send(
        client
            .post(format!("{plugin}/v1/passwords/check"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"identity_id": "", "password": third})),
        &mut ids,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        !body.contains(third),
        "an error body echoes the password: {body}"
    );
    let (status, body) = send(
        client
            .post(format!("{plugin}/v1/passwords/check"))
            .bearer_auth(WRONG_TOKEN)
            .json(&json!({"identity_id": "log-user", "password": third})),
        &mut ids,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains(third) && !body.contains(WRONG_TOKEN),
        "{body}"
    );

    // The Kratos hooks a user goes through; the identity's traits carry an email address.
    let kratos_id = new_id();
    let registration = for_identity(
        contract("webhook-registration-password.json"),
        &kratos_id,
        "default",
    );
    let kratos_email = registration["identity"]["traits"]["email"]
        .as_str()
        .expect("email")
        .to_string();
    let login = for_identity(
        contract("webhook-login-password.json"),
        &kratos_id,
        "default",
    );
    let recovery = for_identity(contract("webhook-recovery.json"), &kratos_id, "default");
    let settings = from_recovery_session(for_identity(
        contract("webhook-settings-password.json"),
        &kratos_id,
        "default",
    ));
    for (path, ctx) in [
        ("/hooks/kratos/registration/after", &registration),
        ("/hooks/kratos/login", &login),
        ("/hooks/kratos/recovery", &recovery),
        ("/hooks/kratos/login", &login),
        ("/hooks/kratos/settings/password", &settings),
        ("/hooks/kratos/settings/password/after", &settings),
    ] {
        let (status, body) = send(hook(&client, &plugin, path, ctx), &mut ids).await;
        assert!((200..500).contains(&status), "{path}: {status} {body}");
    }
    // The change saved through Kratos gets its notice too.
    assert_eq!(smtp.next_event("ACCEPTED").await, kratos_email);

    // The gateway delivers a code by email (SMTP, STARTTLS + AUTH) and one by SMS (Twilio stand-in); then
    // an SMS that Twilio refuses and an email the SMTP server refuses (550) fail for good.
    let (email, email_code) = ("grace.hopper.logs@example.org", "8302749165");
    let (phone, sms_code) = ("+14155550123", "5938201746");
    let rejected_email = "reject.me.logs@example.org";
    let mut message_ids = Vec::new();
    for body in [
        json!({"channel": "email", "to": email, "template": "recovery_code", "data": {"code": email_code}}),
        json!({"channel": "sms", "to": phone, "template": "recovery_code", "data": {"code": sms_code}}),
    ] {
        message_ids.push(queue_message(&client, &gateway, &body, &mut ids).await);
    }
    assert_eq!(smtp.next_event("ACCEPTED").await, email);
    for id in &message_ids {
        reclaim
            .wait_for("message sent", |l| {
                l.contains("message sent") && l.contains(id.as_str())
            })
            .await;
        read_message(&client, &gateway, id, &mut ids).await;
    }
    let mut failed_ids = Vec::new();
    for body in [
        json!({"channel": "sms", "to": refused_phone, "template": "recovery_code", "fallback": [], "data": {"code": sms_code}}),
        json!({"channel": "email", "to": rejected_email, "template": "recovery_code", "data": {"code": email_code}}),
    ] {
        let id = queue_message(&client, &gateway, &body, &mut ids).await;
        reclaim
            .wait_for("permanent failure", |l| {
                l.contains("permanent failure") && l.contains(id.as_str())
            })
            .await;
        let view = read_message(&client, &gateway, &id, &mut ids).await;
        assert!(
            !view.contains(&refused_phone[1..]) && !view.contains(rejected_email),
            "{view}"
        );
        failed_ids.push(id);
    }
    let mail = smtp.messages();
    assert_eq!(mail.len(), 3);
    assert_eq!(mail[0].to, vec![plugin_email.to_string()]);
    assert_eq!(
        mail[0].header("Subject").as_deref(),
        Some("Your password was changed")
    );
    assert_eq!(mail[1].to, vec![kratos_email.clone()]);
    assert!(mail[2].tls && mail[2].auth.as_deref() == Some(SMTP_USER));
    assert!(mail[2].data.contains(email_code));
    let sms = twilio.requests();
    assert_eq!(sms.len(), 2);
    assert!(sms[0].field("Body").is_some_and(|b| b.contains(sms_code)));

    reclaim.terminate();
    let status = reclaim.exit().await;
    assert!(status.success(), "{status}");
    for id in &message_ids {
        assert_eq!(message_status(&database, id), "sent");
    }
    for id in &failed_ids {
        assert_eq!(message_status(&database, id), "failed");
    }

    // stdout holds nothing but the development tokens of the two admin lists this config leaves empty.
    let generated = reclaim.development_tokens().await;
    let names: Vec<&str> = generated.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["RECLAIM_PLUGIN_ADMIN_TOKEN", "RECLAIM_GATEWAY_ADMIN_TOKEN"]
    );
    let stdout = reclaim.stdout_lines();
    assert_eq!(stdout.len(), generated.len() + 2, "{stdout:#?}");
    let lines = reclaim.log_lines();
    for line in &lines {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let digits = |phone: &str| phone.trim_start_matches('+').to_string();
    let secrets = [
        ("a password", first.to_string()),
        ("a password", second.to_string()),
        ("a password", third.to_string()),
        ("a code", email_code.to_string()),
        ("a code", sms_code.to_string()),
        ("the API token", API_TOKEN.to_string()),
        ("a wrong token", WRONG_TOKEN.to_string()),
        ("the Kratos key", KRATOS_KEY.to_string()),
        ("the pepper", PEPPER.to_string()),
        ("the SMTP password", SMTP_PASSWORD.to_string()),
        ("the Twilio auth token", TWILIO_TOKEN.to_string()),
        ("Kratos's password hash", admin.hashed_password.clone()),
        ("an address", plugin_email.to_string()),
        ("an address", kratos_email.clone()),
        ("an address", email.to_string()),
        ("a phone number", digits(plugin_phone)),
        ("a phone number", digits(phone)),
        ("a phone number quoted by Twilio", digits(refused_phone)),
        ("a refused address", rejected_email.to_string()),
    ];
    let generated: Vec<(&str, String)> = generated
        .into_iter()
        .map(|(_, token)| ("a generated development token", token))
        .collect();
    let stored: Vec<(&str, String)> = stored_secrets(&database)
        .into_iter()
        .map(|s| ("a stored salt or digest", s))
        .collect();
    for (what, secret) in secrets.iter().chain(&stored).chain(&generated) {
        let leaks: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(leaks.is_empty(), "{what} ({secret}) is logged:\n{leaks:#?}");
    }
    for (n, id) in ids.iter().enumerate() {
        assert!(
            lines.iter().any(|l| l.contains(id.as_str())),
            "x-request-id {id} of request {n} is in no log line"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_and_delivery_finish_and_exits_0() {
    let database = TestDatabase::fresh();
    let mut smtp = SmtpServer::start_secure(SMTP_USER, SMTP_PASSWORD);
    let twilio =
        FaultyTwilio::start(vec![Reply::created("SM0123456789abcdef0123456789abcdef")]).await;
    let mut admin = HeldKratosAdmin::start().await;
    let mut reclaim = Reclaim::start(&config(&database.url, &smtp, &twilio.url, &admin.url)).await;
    let client = reqwest::Client::new();
    let (plugin, gateway) = (reclaim.plugin.clone(), reclaim.gateway.clone());

    // A delivery in flight: the SMTP server holds the message in DATA.
    let response = client
        .post(format!("{gateway}/v1/messages"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"channel": "email", "to": "hold-me@example.org", "template": "recovery_code", "data": {"code": "4815162342"}}))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(response.status(), 202);
    let message: Value = response.json().await.expect("json");
    let message_id = message["id"].as_str().expect("id").to_string();
    assert_eq!(smtp.next_event("HELD").await, "hold-me@example.org");

    // A request in flight: the registration hook waits on Kratos's admin API, which holds the call.
    admin.armed.store(true, Ordering::SeqCst);
    let id = new_id();
    let registration = for_identity(
        contract("webhook-registration-password.json"),
        &id,
        "default",
    );
    let request = hook(
        &client,
        &plugin,
        "/hooks/kratos/registration/after",
        &registration,
    );
    let in_flight = tokio::spawn(async move { request.send().await });
    tokio::time::timeout(EVENT_BOUND, admin.held.recv())
        .await
        .expect("the hook reached Kratos's admin API")
        .expect("held");

    reclaim.terminate();
    // Both servers (plugin and gateway) have begun their graceful shutdown before anything is released.
    reclaim
        .wait_for_count("SIGTERM received", 2, |l| {
            l.contains("starting graceful shutdown")
        })
        .await;
    admin.release.notify_one();
    smtp.release();

    let response = tokio::time::timeout(EVENT_BOUND, in_flight)
        .await
        .expect("the in-flight request finished")
        .expect("join")
        .expect("the in-flight request got an answer");
    assert_eq!(response.status(), 204);
    assert_eq!(smtp.next_event("ACCEPTED").await, "hold-me@example.org");
    let status = reclaim.exit().await;
    assert!(
        status.success(),
        "{status}:\n{}",
        reclaim.lines().join("\n")
    );
    assert_eq!(message_status(&database, &message_id), "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_run_without_a_pepper_warns_that_it_uses_the_public_one() {
    let database = TestDatabase::fresh();
    let mut reclaim = Reclaim::start(&format!(
        r#"
environment = "development"

[database]
url = "{}"

[plugin]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:0"
"#,
        database.url
    ))
    .await;
    let warning = reclaim
        .wait_for("the pepper warning", |l| {
            l.contains("public development pepper")
        })
        .await;
    let warning: Value = serde_json::from_str(&warning).expect("json");
    assert_eq!(warning["level"], "WARN", "{warning}");
    reclaim.terminate();
    let status = reclaim.exit().await;
    assert!(
        status.success(),
        "{status}:\n{}",
        reclaim.lines().join("\n")
    );
}
