//! Test harness: fresh databases, the real services on free ports, and an HTTP client.

#![allow(dead_code)]

pub mod captured_logs;
mod database;
pub mod dkim;
pub mod kratos;
pub mod messages;
pub mod peer;
pub mod plugin;
pub mod ports;
pub mod prism;
pub mod smtp;
pub mod standin_kratos;
pub mod supabase;
pub mod twilio_callbacks;
pub mod twilio_faults;
pub mod upstream;

pub use database::{expected_backend, TestDatabase};

use reclaim_common::clock::Clock;
use reclaim_common::settings::{self, Settings};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{Db, Secret};
use reclaim_gateway::RunMode;

/// Bearer token the harness configures on both APIs.
pub const API_TOKEN: &str = "test-api-token";
/// Bearer token the harness configures on both services' `/admin` endpoints.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestApp {
    pub plugin: String,
    pub gateway: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub settings: Settings,
    pub database: TestDatabase,
    /// The gateway's delivery pipeline, to drain the outbox without sleeping.
    pub delivery: reclaim_gateway::Delivery,
    /// The plugin's KDF pool, to hold its slots in overload tests.
    pub kdf: reclaim_plugin::history::Kdf,
    /// The clock the in-process plugin and the gateway's verifications decide by: `advance` it to let time
    /// pass without sleeping.
    pub clock: Clock,
    /// The Kratos edge guard's base URL, when the test set `plugin.kratos.guard.listen`.
    pub guard: Option<String>,
    /// The plugin's notice worker, to deliver notices and scan for expiry warnings without waiting.
    pub notices: reclaim_plugin::notices::NoticeWorker,
}

impl TestApp {
    pub fn plugin_url(&self, path: &str) -> String {
        format!("{}{path}", self.plugin)
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }
}

/// Settings for a test: free ports, one HTTP worker, known API tokens, the given database.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = settings::DatabaseUrl::new(database_url);
    settings.database.pool_size = 4;
    settings.plugin.listen = "127.0.0.1:0".into();
    settings.gateway.listen = "127.0.0.1:0".into();
    settings.http.workers = 1;
    settings.http.shutdown_timeout_seconds = 1;
    settings.plugin.api.tokens = vec![Secret::new(API_TOKEN)];
    settings.gateway.api.tokens = vec![Secret::new(API_TOKEN)];
    settings.plugin.admin.tokens = vec![Secret::new(ADMIN_TOKEN)];
    settings.gateway.admin.tokens = vec![Secret::new(ADMIN_TOKEN)];
    settings
}

/// Starts both services on a fresh database with the harness's settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts both services after `customize` has adjusted the settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(RunMode::All, customize).await
}

/// Like [`spawn_app_with`], with the gateway in `mode`; gateway tests use `RunMode::ApiOnly` and deliver
/// with `app.delivery.drain()` so that no background worker races the test.
pub async fn spawn_app_in(mode: RunMode, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::fresh();
    let mut settings = test_settings(&database.url);
    customize(&mut settings);
    let problems = settings.validate();
    assert!(problems.is_empty(), "test settings invalid: {problems:?}");
    reclaim_common::telemetry::init(&settings.telemetry);
    let db = Db::connect(&settings.database).expect("connect to the test database");
    {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.migrate())
            .await
            .expect("join")
            .expect("migrate");
    }
    let clock = Clock::system();
    let plugin =
        reclaim_plugin::Application::build_with_clock(&settings, db.clone(), clock.clone())
            .await
            .expect("build plugin");
    let gateway =
        reclaim_gateway::Application::build_with_clock(&settings, db.clone(), mode, clock.clone())
            .await
            .expect("build gateway");
    let plugin_url = format!("http://127.0.0.1:{}", plugin.port());
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
    // As `reclaim serve all` does: notices go to the gateway running beside the plugin.
    if settings.plugin.notices.gateway_url.is_empty() {
        plugin.link_gateway(gateway_url.clone(), Secret::new(API_TOKEN));
    }
    // And Supabase's password changes reach the plugin.
    if settings.gateway.supabase.plugin_url.is_empty() {
        let token = match settings.gateway.supabase.plugin_token.is_empty() {
            true => Secret::new(API_TOKEN),
            false => settings.gateway.supabase.plugin_token.clone(),
        };
        gateway.link_plugin(plugin_url.clone(), token);
    }
    let notices = plugin.notice_worker();
    let delivery = gateway.delivery();
    let kdf = plugin.kdf();
    let guard = plugin
        .guard_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    // Never triggered: a test's services live as long as its runtime.
    tokio::spawn(plugin.run_until_stopped(Shutdown::default()));
    tokio::spawn(gateway.run_until_stopped(Shutdown::default()));
    TestApp {
        plugin: plugin_url,
        gateway: gateway_url,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        db,
        settings,
        database,
        delivery,
        kdf,
        clock,
        guard,
        notices,
    }
}

/// `reclaim serve` settings for a test of the real binary's logs: the gateway's email on the SMTP server at
/// `smtp_port`, SMS on a Twilio stand-in at `twilio_url`, plus `adapter` (a TOML section that turns an
/// identity provider's adapter on).
pub fn delivery_binary_config(
    database_url: &str,
    smtp_port: u16,
    twilio_url: &str,
    adapter: &str,
) -> String {
    format!(
        r#"
[database]
url = "{database_url}"
pool_size = 4

[http]
workers = 1

[plugin]
listen = "127.0.0.1:0"

[gateway]
listen = "127.0.0.1:0"
public_url = "https://reclaim.example.test"

[gateway.worker]
poll_interval_ms = 50

{adapter}

[gateway.channels.email]
provider = "smtp"

[gateway.channels.sms]
provider = "twilio"
fallback = []

[gateway.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "Reclaim <no-reply@reclaim.test>"

[gateway.twilio]
base_url = "{twilio_url}"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "log-test-twilio-token"
from = "+14155552671"
"#
    )
}
