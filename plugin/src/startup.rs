//! Wiring: settings and database in, a running HTTP server out.

use reclaim_common::http::{self, ServiceSpec};
use reclaim_common::{Db, Settings};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(info(
    title = "Reclaim plugin",
    description = "Password history and expiry policy for identity providers"
))]
struct ApiDoc;

/// The plugin service, bound and ready to run.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    /// Binds `plugin.listen` (port 0 picks a free one) and prepares the routes.
    pub async fn build(settings: &Settings, db: Db) -> anyhow::Result<Self> {
        let listener = http::bind(&settings.plugin.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on plugin.listen = {}: {e}",
                settings.plugin.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let spec = ServiceSpec {
            name: "plugin",
            listener,
            http: settings.http.clone(),
            db,
            registry: prometheus::Registry::new(),
            openapi: ApiDoc::openapi(),
        };
        let server = http::serve(spec, |_cfg| {})?;
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
