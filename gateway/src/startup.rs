//! Wiring: settings and database in, a running HTTP API and delivery workers out.

use crate::delivery::Delivery;
use crate::limits::Limits;
use crate::metrics::GatewayMetrics;
use crate::providers::Providers;
use crate::retention::Janitor;
use crate::routes::{self, ApiState};
use crate::supabase::plugin_link::{PluginLink, PluginReporter};
use crate::templates::Templates;
use crate::verifications::Verifications;
use actix_web::web;
use reclaim_common::clock::Clock;
use reclaim_common::http::{self, ServiceSpec};
use reclaim_common::sealed::Keyring;
use reclaim_common::settings::Environment;
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{Db, Settings};
use std::path::Path;
use std::sync::Arc;

/// Which parts of the gateway this process runs, so API and delivery can be scaled apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// HTTP API, delivery workers and the retention janitor (the default).
    All,
    /// HTTP API only (`--no-worker`).
    ApiOnly,
    /// Delivery workers and the retention janitor only (`--worker-only`); health and metrics are still
    /// served.
    WorkerOnly,
}

/// The gateway service, bound and ready to run.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    delivery: Delivery,
    janitor: Janitor,
    mode: RunMode,
    /// Tells the plugin of Supabase's password changes; linked by [`Application::link_plugin`].
    supabase_plugin: PluginReporter,
}

impl Application {
    /// Binds `gateway.listen` (port 0 picks a free one), loads and checks the templates, builds the
    /// providers, and prepares routes and workers. A broken template stops here, naming its file.
    pub async fn build(settings: &Settings, db: Db, mode: RunMode) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, db, mode, Clock::system()).await
    }

    /// Like [`Application::build`], with the handlers deciding by `clock` (verification lifetimes and resend
    /// intervals, the courier's dedupe window): tests move it forward instead of sleeping.
    pub async fn build_with_clock(
        settings: &Settings,
        db: Db,
        mode: RunMode,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let gateway = &settings.gateway;
        let templates = Arc::new(
            Templates::load(
                Path::new(&gateway.templates_dir),
                &gateway.messages.default_locale,
            )
            .map_err(|e| anyhow::anyhow!("gateway.templates_dir: {e}"))?,
        );
        let openapi = if mode == RunMode::WorkerOnly {
            reclaim_common::openapi::empty("Reclaim gateway (delivery workers only)")
        } else {
            routes::document::document(gateway, &templates)
        };
        let providers = Providers::from_settings(settings)?;
        let keyring = Keyring::from_settings(
            "gateway.storage.keys",
            &gateway.storage.keys,
            settings.environment != Environment::Production,
        )?;
        let listener = http::bind(&gateway.listen).map_err(|e| {
            anyhow::anyhow!("cannot listen on gateway.listen = {}: {e}", gateway.listen)
        })?;
        let port = listener.local_addr()?.port();
        let registry = prometheus::Registry::new();
        let metrics = GatewayMetrics::register(&registry, db.clone())?;
        let delivery = Delivery::new(
            db.clone(),
            templates.clone(),
            providers,
            gateway.clone(),
            metrics.clone(),
            keyring.clone(),
        );
        let limits = Limits::new(gateway, keyring.clone(), metrics.clone());
        let verifications = web::Data::new(
            Verifications::new(
                db.clone(),
                keyring.clone(),
                templates.clone(),
                gateway.clone(),
                clock.clone(),
                limits.clone(),
                metrics.clone(),
            )
            .waking(delivery.doorbell()),
        );
        let janitor = Janitor::new(db.clone(), gateway.retention.clone(), metrics.clone());
        let supabase_plugin =
            PluginReporter::new(&gateway.supabase.plugin_url, &gateway.supabase.plugin_token)?;
        let state = web::Data::new(ApiState {
            settings: gateway.clone(),
            templates,
            metrics,
            keyring,
            clock,
            limits,
            supabase_verifier: gateway.supabase.verifier(),
            supabase_plugin: supabase_plugin.clone(),
            intake: crate::intake::Intake::new(db.clone(), delivery.doorbell()),
            doorbell: delivery.doorbell(),
        });
        let spec = ServiceSpec {
            name: "gateway",
            listener,
            http: settings.http.clone(),
            db,
            registry,
            openapi,
        };
        let route_settings = gateway.clone();
        let server = http::serve(spec, move |cfg| {
            if mode != RunMode::WorkerOnly {
                cfg.app_data(state.clone());
                cfg.app_data(verifications.clone());
                routes::configure(cfg, &route_settings);
            }
        })?;
        Ok(Self {
            port,
            server,
            delivery,
            janitor,
            mode,
            supabase_plugin,
        })
    }

    /// Points Supabase's password-change reports at the plugin when `gateway.supabase.plugin_url` is empty
    /// (`reclaim serve all` links the plugin it runs). False when a link was set already.
    pub fn link_plugin(&self, url: String, token: reclaim_common::Secret) -> bool {
        self.supabase_plugin.link(PluginLink { url, token })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The delivery pipeline, e.g. to drain the outbox in tests.
    pub fn delivery(&self) -> Delivery {
        self.delivery.clone()
    }

    /// Serves until `stop` triggers (the binary triggers it on SIGINT/SIGTERM), then lets in-flight
    /// requests and deliveries finish.
    pub async fn run_until_stopped(self, stop: Shutdown) -> std::io::Result<()> {
        let shutdown = Shutdown::default();
        let workers = match self.mode {
            RunMode::ApiOnly => Vec::new(),
            RunMode::All | RunMode::WorkerOnly => {
                let mut tasks = self.delivery.spawn_workers(shutdown.clone());
                tasks.push(self.janitor.spawn(shutdown.clone()));
                tasks
            }
        };
        let result = http::run_until(self.server, stop).await;
        shutdown.trigger();
        for worker in workers {
            let _ = worker.await;
        }
        result
    }
}
