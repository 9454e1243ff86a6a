//! Command-line interface: `serve`, `migrate`, `check-config`, `import hashes`, `import kratos`, `admin`
//! (the client of the admin APIs lives in `admin.rs`).

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use reclaim_common::settings::{self, Settings};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{telemetry, Db};
use reclaim_gateway::RunMode;
use reclaim_plugin::import::kratos::KratosImportOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for configuration problems, distinct from runtime failures (1).
const EXIT_CONFIG: u8 = 2;
const DEFAULT_CONFIG: &str = "config/reclaim.toml";

#[derive(Debug, Parser)]
#[command(
    name = "reclaim",
    version,
    about = "Password history and expiry for identity providers, and a code delivery gateway"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables RECLAIM__SECTION__KEY override it.
    #[arg(long, global = true, env = "RECLAIM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the services (default: both in one process).
    Serve {
        /// Which service to run.
        #[arg(value_enum, default_value_t = Service::All)]
        service: Service,
        /// Gateway: serve the API but deliver nothing (run workers elsewhere).
        #[arg(long, conflicts_with = "worker_only")]
        no_worker: bool,
        /// Gateway: deliver queued messages but serve no API (health and metrics only).
        #[arg(long)]
        worker_only: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and print it with secrets shown as ***; exit 2 on problems.
    CheckConfig,
    /// Import passwords kept in another system.
    Import {
        #[command(subcommand)]
        what: Import,
    },
    /// Support and identity admin calls against running services (admin token required).
    Admin(crate::admin::AdminArgs),
}

#[derive(Debug, Subcommand)]
enum Import {
    /// Import `identifier,phc_hash[,changed_at]` rows for Kratos's password migration hook; bad rows are
    /// reported with their line and skipped, identifiers imported before are skipped.
    Hashes {
        /// The CSV file.
        file: PathBuf,
    },
    /// Walk Kratos's admin API (`plugin.kratos.admin_url`, `admin_token`) and store each identity's current
    /// password hash as its first history entry; identities with history are skipped. An interrupted run goes
    /// on from the first page it had not finished.
    Kratos {
        /// Identities per page (Kratos allows at most 500).
        #[arg(long, default_value_t = reclaim_plugin::import::kratos::DEFAULT_PAGE_SIZE,
              value_parser = clap::value_parser!(u32)
                  .range(1..=i64::from(reclaim_plugin::kratos::admin::MAX_PAGE_SIZE)))]
        page_size: u32,
        /// Start from the first page, ignoring where an interrupted run stopped.
        #[arg(long)]
        restart: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    /// The plugin (with the Kratos edge guard when plugin.kratos.guard.listen is set) and the gateway.
    All,
    Plugin,
    Gateway,
    /// The Kratos edge guard alone (health and metrics on plugin.kratos.guard.ops_listen).
    Guard,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let (path, explicit) = match cli.config {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let settings = match settings::load(&path, explicit) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("reclaim: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve {
        service: Service::All,
        no_worker: false,
        worker_only: false,
    });
    match command {
        Command::CheckConfig => check_config(&settings),
        Command::Admin(args) => crate::admin::run(&settings, args),
        Command::Migrate => {
            telemetry::init(&settings.telemetry);
            report(migrate(&settings).map(|_| ()))
        }
        Command::Import {
            what: Import::Hashes { file },
        } => {
            telemetry::init(&settings.telemetry);
            report(import_hashes(&settings, &file))
        }
        Command::Import {
            what: Import::Kratos { page_size, restart },
        } => {
            telemetry::init(&settings.telemetry);
            let options = KratosImportOptions { page_size, restart };
            report(import_kratos(&settings, options))
        }
        Command::Serve {
            service,
            no_worker,
            worker_only,
        } => {
            telemetry::init(&settings.telemetry);
            let mode = match (no_worker, worker_only) {
                (true, _) => RunMode::ApiOnly,
                (_, true) => RunMode::WorkerOnly,
                _ => RunMode::All,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return report(Err(error.into())),
            };
            report(runtime.block_on(serve(settings, service, mode)))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reclaim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(settings: &Settings) -> ExitCode {
    match toml::to_string_pretty(settings) {
        Ok(text) => {
            println!("# effective configuration (secrets shown as ***)\n{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("reclaim: cannot print the configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

fn import_hashes(settings: &Settings, file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(reclaim_plugin::import::import_hashes_file(settings, file))?;
    for bad in &summary.errors {
        eprintln!("{}:{}: {}", file.display(), bad.line, bad.problem);
    }
    println!("{summary}");
    Ok(())
}

fn import_kratos(settings: &Settings, options: KratosImportOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut import =
        runtime.block_on(reclaim_plugin::import::kratos::prepare(settings, options))?;
    // Drawn only for a person watching: hidden when stderr is a file or a pipe (CI, logs).
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {pos} identities: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut announced = false;
    let result = runtime.block_on(import.run(|summary| {
        if summary.resumed && !announced {
            announced = true;
            bar.suspend(|| {
                eprintln!(
                    "reclaim: going on from where an earlier run stopped (--restart starts from the first page)"
                );
            });
        }
        bar.set_position(summary.identities() as u64);
        bar.set_message(summary.to_string());
    }));
    bar.finish_and_clear();
    let summary = import.summary();
    for failed in &summary.failed {
        eprintln!("identity {:?}: {}", failed.id, failed.problem);
    }
    println!("{summary}");
    Ok(result?)
}

fn migrate(settings: &Settings) -> anyhow::Result<Db> {
    let db = Db::connect(&settings.database)?;
    let applied = db.migrate()?;
    tracing::info!(
        database = db.backend().name(),
        applied = applied.len(),
        "database migrated"
    );
    Ok(db)
}

async fn serve(mut settings: Settings, service: Service, mode: RunMode) -> anyhow::Result<()> {
    // Installed first, so that a SIGTERM during migrations or start-up stops the process gracefully too.
    let stop = Shutdown::default();
    stop.on_signals();
    // Before the applications are built, so they accept these tokens and `serve all` links the plugin's
    // notices with the gateway's generated token.
    let served = settings::ServedApis {
        plugin: matches!(service, Service::All | Service::Plugin),
        gateway: matches!(service, Service::All | Service::Gateway) && mode != RunMode::WorkerOnly,
    };
    let generated = settings::generate_development_tokens(&mut settings, served);
    let db = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || migrate(&settings)).await??
    };
    let pool = db.clone();
    let plugin = match service {
        Service::All => Some(reclaim_plugin::Application::build(&settings, db.clone()).await?),
        Service::Plugin => {
            // The guard runs with `serve all` or on its own (`serve guard`), never twice.
            let mut alone = settings.clone();
            alone.plugin.kratos.guard.listen.clear();
            Some(reclaim_plugin::Application::build(&alone, db.clone()).await?)
        }
        Service::Gateway | Service::Guard => None,
    };
    let guard = match service {
        Service::Guard => {
            Some(reclaim_plugin::GuardApplication::build(&settings, db.clone()).await?)
        }
        _ => None,
    };
    let gateway = match service {
        Service::All | Service::Gateway => {
            Some(reclaim_gateway::Application::build(&settings, db, mode).await?)
        }
        Service::Plugin | Service::Guard => None,
    };
    // `serve all`: the plugin's notices go to the gateway it runs with, over the same HTTP API as anywhere.
    if let (Some(plugin), Some(gateway)) = (&plugin, &gateway) {
        if settings.plugin.notices.gateway_url.is_empty() {
            let token = token_or_first(
                &settings.plugin.notices.gateway_token,
                &settings.gateway.api.tokens,
            );
            plugin.link_gateway(local_url(&settings.gateway.listen, gateway.port()), token);
        }
        // And Supabase's password changes reach the plugin it runs with.
        if settings.gateway.supabase.plugin_url.is_empty() {
            let token = token_or_first(
                &settings.gateway.supabase.plugin_token,
                &settings.plugin.api.tokens,
            );
            gateway.link_plugin(local_url(&settings.plugin.listen, plugin.port()), token);
        }
    }
    // On stdout, not through the logger: log files and JSON logs never hold the tokens.
    print!("{}", settings::development_tokens_notice(&generated));
    for token in &generated {
        tracing::warn!(
            key = token.key,
            "{} is empty: a development token was generated for it (printed on stdout, not logged)",
            token.key
        );
    }
    if let Some(app) = &plugin {
        tracing::info!(
            "plugin listening on http://{}:{}",
            host(&settings.plugin.listen),
            app.port()
        );
        if let Some(port) = app.guard_port() {
            tracing::info!(
                "Kratos edge guard listening on http://{}:{port}",
                host(&settings.plugin.kratos.guard.listen)
            );
        }
    }
    if let Some(app) = &guard {
        tracing::info!(
            "Kratos edge guard listening on http://{}:{} (health and metrics on port {})",
            host(&settings.plugin.kratos.guard.listen),
            app.port(),
            app.ops_port()
        );
    }
    if let Some(app) = &gateway {
        tracing::info!(
            "gateway listening on http://{}:{}",
            host(&settings.gateway.listen),
            app.port()
        );
    }
    let plugin = async {
        match plugin {
            Some(app) => app.run_until_stopped(stop.clone()).await,
            None => Ok(()),
        }
    };
    let gateway = async {
        match gateway {
            Some(app) => app.run_until_stopped(stop.clone()).await,
            None => Ok(()),
        }
    };
    let guard = async {
        match guard {
            Some(app) => app.run_until_stopped(stop.clone()).await,
            None => Ok(()),
        }
    };
    let stopped = tokio::try_join!(plugin, gateway, guard);
    let settle = Duration::from_millis(settings.database.connect_timeout_ms.saturating_add(1_000));
    if !tokio::task::spawn_blocking(move || pool.settle(settle)).await? {
        tracing::warn!("a database connection was still being opened at exit");
    }
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

fn host(listen: &str) -> &str {
    listen.rsplit_once(':').map_or(listen, |(host, _)| host)
}

/// The token one service of `serve all` presents to the other: the configured one, else the first the other
/// accepts.
fn token_or_first(
    configured: &reclaim_common::Secret,
    accepted: &[reclaim_common::Secret],
) -> reclaim_common::Secret {
    if configured.is_empty() {
        accepted.first().cloned().unwrap_or_default()
    } else {
        configured.clone()
    }
}

/// The URL this process reaches one of its own listeners at.
fn local_url(listen: &str, port: u16) -> String {
    format!("http://{}:{port}", connect_host(listen))
}

/// The host to reach a listener on from this process: a wildcard address is reached on loopback.
fn connect_host(listen: &str) -> &str {
    match host(listen) {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    }
}
