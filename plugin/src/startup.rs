//! Wiring: settings and database in, a running HTTP server out.

use crate::history::Kdf;
use crate::kratos::guard::Guard;
use crate::kratos::{self, admin::KratosAdmin, KratosHooks};
use crate::notices::{GatewayLink, NoticeWorker};
use crate::routes;
use crate::Passwords;
use reclaim_common::clock::Clock;
use reclaim_common::http::{self, ServiceSpec};
use reclaim_common::shutdown::Shutdown;
use reclaim_common::{Db, Settings};

/// The plugin service, bound and ready to run.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    kdf: Kdf,
    /// The Kratos edge guard, when `plugin.kratos.guard.listen` is set.
    guard: Option<Guard>,
    /// Delivers security notices through the gateway; runs when `plugin.notices.enabled`.
    notices: NoticeWorker,
    notices_enabled: bool,
}

impl Application {
    /// Binds `plugin.listen` (port 0 picks a free one) and prepares the routes, on the system clock.
    pub async fn build(settings: &Settings, db: Db) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, db, Clock::system()).await
    }

    /// [`Application::build`] deciding by `clock` (tests advance it to see passwords expire).
    pub async fn build_with_clock(
        settings: &Settings,
        db: Db,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let listener = http::bind(&settings.plugin.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on plugin.listen = {}: {e}",
                settings.plugin.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let registry = prometheus::Registry::new();
        let passwords = Passwords::with_clock(settings, db.clone(), &registry, clock)?;
        let kdf = passwords.kdf().clone();
        let notices = NoticeWorker::new(
            db.clone(),
            passwords.clock().clone(),
            passwords.shared_policy(),
            passwords.notices().clone(),
            passwords.metrics().clone(),
        )?;
        let api_tokens = settings.plugin.api.tokens.clone();
        let admin_tokens = settings.plugin.admin.operators();
        let admin = KratosAdmin::from_settings(&settings.plugin.kratos)?;
        let guard = if settings.plugin.kratos.guard.listen.is_empty() {
            None
        } else {
            Some(Guard::build(
                settings,
                passwords.clone(),
                admin.clone(),
                &registry,
            )?)
        };
        let kratos_hooks = actix_web::web::Data::new(KratosHooks {
            passwords: passwords.clone(),
            settings: settings.plugin.kratos.clone(),
            admin,
            db: db.clone(),
        });
        let supabase_hooks = actix_web::web::Data::new(crate::supabase::SupabaseHooks::new(
            passwords.clone(),
            &settings.plugin.supabase,
        ));
        let zitadel_hooks = actix_web::web::Data::new(crate::zitadel::ZitadelHooks {
            passwords: passwords.clone(),
            settings: settings.plugin.zitadel.clone(),
        });
        let spec = ServiceSpec {
            name: "plugin",
            listener,
            http: settings.http.clone(),
            db,
            registry,
            openapi: routes::document(settings),
        };
        let server = http::serve(spec, move |cfg| {
            routes::configure(
                cfg,
                passwords.clone(),
                api_tokens.clone(),
                admin_tokens.clone(),
            );
            cfg.app_data(kratos_hooks.clone()).configure(kratos::routes);
            cfg.app_data(supabase_hooks.clone())
                .configure(crate::supabase::routes);
            cfg.app_data(zitadel_hooks.clone())
                .configure(crate::zitadel::routes);
        })?;
        Ok(Self {
            port,
            server,
            kdf,
            guard,
            notices,
            notices_enabled: settings.plugin.notices.enabled,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The edge guard's port, when it runs in this process.
    pub fn guard_port(&self) -> Option<u16> {
        self.guard.as_ref().map(Guard::port)
    }

    /// Points the notice worker at the gateway when `plugin.notices.gateway_url` is empty (`reclaim serve all`
    /// links the gateway it runs). False when a link was set already.
    pub fn link_gateway(&self, url: String, token: reclaim_common::Secret) -> bool {
        self.notices.link(GatewayLink { url, token })
    }

    /// The notice worker, so tests can deliver and scan without waiting for its rounds.
    pub fn notice_worker(&self) -> NoticeWorker {
        self.notices.clone()
    }

    /// The KDF pool the service runs argon2 on; tests occupy its slots to see the 503 deterministically.
    pub fn kdf(&self) -> Kdf {
        self.kdf.clone()
    }

    /// Serves until `stop` triggers (the binary triggers it on SIGINT/SIGTERM), then lets in-flight
    /// requests finish.
    pub async fn run_until_stopped(self, stop: Shutdown) -> std::io::Result<()> {
        if self.notices_enabled {
            if !self.notices.is_linked() {
                tracing::warn!(
                    "plugin.notices.gateway_url is empty: notices are queued but not sent until it is set"
                );
            }
            tokio::spawn(self.notices.run_until_stopped(stop.clone()));
        }
        match self.guard {
            None => http::run_until(self.server, stop).await,
            Some(guard) => {
                let (plugin, guard) = tokio::join!(
                    http::run_until(self.server, stop.clone()),
                    guard.run_until_stopped(stop)
                );
                plugin.and(guard)
            }
        }
    }
}

/// `reclaim serve guard`: the Kratos edge guard alone, with its own /health and /metrics on
/// `plugin.kratos.guard.ops_listen` (clients reach Kratos through the guard's own listener, so those paths
/// there belong to Kratos).
pub struct GuardApplication {
    guard: Guard,
    ops: actix_web::dev::Server,
    ops_port: u16,
}

impl GuardApplication {
    pub async fn build(settings: &Settings, db: Db) -> anyhow::Result<Self> {
        let kratos = &settings.plugin.kratos;
        if kratos.guard.listen.is_empty() {
            anyhow::bail!("plugin.kratos.guard.listen is empty: set where the guard listens");
        }
        let registry = prometheus::Registry::new();
        let passwords = Passwords::new(settings, db.clone(), &registry)?;
        let admin = KratosAdmin::from_settings(kratos)?;
        let guard = Guard::build(settings, passwords, admin, &registry)?;
        let listen = &kratos.guard.ops_listen;
        let listener = http::bind(listen).map_err(|e| {
            anyhow::anyhow!("cannot listen on plugin.kratos.guard.ops_listen = {listen}: {e}")
        })?;
        let ops_port = listener.local_addr()?.port();
        let spec = ServiceSpec {
            name: "guard",
            listener,
            http: settings.http.clone(),
            db,
            registry,
            openapi: reclaim_common::openapi::empty("Reclaim Kratos edge guard"),
        };
        let ops = http::serve(spec, |_| {})?;
        Ok(Self {
            guard,
            ops,
            ops_port,
        })
    }

    pub fn port(&self) -> u16 {
        self.guard.port()
    }

    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    pub async fn run_until_stopped(self, stop: Shutdown) -> std::io::Result<()> {
        let (guard, ops) = tokio::join!(
            self.guard.run_until_stopped(stop.clone()),
            http::run_until(self.ops, stop)
        );
        guard.and(ops)
    }
}
