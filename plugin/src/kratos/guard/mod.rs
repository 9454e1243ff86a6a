//! The Kratos edge guard: a reverse proxy in front of Kratos's public API. Kratos never hands a password to a
//! web hook, so the guard reads it on its way in: for a settings or registration submission with
//! `method=password` it checks the password (settings: against the history of the identity
//! `/sessions/whoami` names) and stages a verdict under the flow id, then forwards the request unchanged.
//! Kratos's hooks use the verdict (`crate::kratos::hooks`). Every other request passes through untouched.
//!
//! - `submission.rs`: which requests are read, and the password in their query or body.
//! - `proxy.rs`: forwarding to Kratos and back (streamed, hop-by-hop headers dropped, `X-Forwarded-*`).
//! - `metrics.rs`: requests by route and outcome, latency, verdicts by code.

mod metrics;
pub mod proxy;
mod recovery;
pub mod submission;

use super::admin::KratosAdmin;
use super::messages;
use super::payload::{KratosIdentity, KratosSession};
use crate::passwords::{Passwords, PasswordsError};
use crate::policy::{ChangeContext, Locale};
use crate::verdicts::{Flow, FlowId, Verdict};
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt;
use metrics::GuardMetrics;
use proxy::{Body, Upstream};
use reclaim_common::settings::{FailurePolicy, KratosSettings, Settings};
use reclaim_common::shutdown::Shutdown;
use serde::Deserialize;
use std::time::{Duration, Instant};
use submission::Found;

/// Where Kratos answers a recovery flow's current state; the guard adds a refusal's notice to it once.
const RECOVERY_FLOWS: &str = "/self-service/recovery/flows";

/// Everything a guard worker needs.
#[derive(Clone)]
struct GuardState {
    upstream: Upstream,
    passwords: Passwords,
    admin: Option<KratosAdmin>,
    settings: KratosSettings,
    ttl: chrono::Duration,
    max_submission_bytes: usize,
    metrics: GuardMetrics,
    sends: recovery::RecoverySends,
}

/// The guard, bound and ready to run.
pub struct Guard {
    port: u16,
    server: actix_web::dev::Server,
}

impl Guard {
    /// Binds `plugin.kratos.guard.listen` and registers the guard's metrics on `registry`.
    pub fn build(
        settings: &Settings,
        passwords: Passwords,
        admin: Option<KratosAdmin>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let kratos = &settings.plugin.kratos;
        let listen = &kratos.guard.listen;
        let listener = reclaim_common::http::bind(listen).map_err(|e| {
            anyhow::anyhow!("cannot listen on plugin.kratos.guard.listen = {listen}: {e}")
        })?;
        let port = listener.local_addr()?.port();
        let upstream = Upstream::new(
            &kratos.public_url,
            Duration::from_millis(kratos.guard.upstream_timeout_ms),
        )
        .map_err(|e| anyhow::anyhow!("plugin.kratos.public_url: {e}"))?;
        let shared = GuardState {
            upstream,
            admin,
            settings: kratos.clone(),
            ttl: chrono::Duration::seconds(i64::try_from(kratos.guard.verdict_ttl_seconds)?),
            max_submission_bytes: usize::try_from(kratos.guard.max_submission_bytes)?,
            metrics: GuardMetrics::register(registry)?,
            sends: recovery::RecoverySends::new(
                settings,
                passwords.db().clone(),
                passwords.clock().clone(),
            )?,
            passwords,
        };
        let mut server = HttpServer::new(move || {
            // Each worker gets its own connection pool: workers are separate single-threaded runtimes and a
            // pooled connection is driven on the runtime that opened it, so one shared pool hands most
            // requests from one worker thread to another and back.
            let state = web::Data::new(GuardState {
                upstream: shared.upstream.for_worker(),
                ..shared.clone()
            });
            App::new()
                .app_data(state)
                // The guard reads bodies itself, bounded by max_submission_bytes; everything else streams.
                .default_service(web::to(handle))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.http.shutdown_timeout_seconds);
        if settings.http.workers > 0 {
            server = server.workers(settings.http.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` triggers, then lets requests in flight finish.
    pub async fn run_until_stopped(self, stop: Shutdown) -> std::io::Result<()> {
        reclaim_common::http::run_until(self.server, stop).await
    }
}

/// How a request through the guard ended, for the metrics.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Not a password submission: forwarded untouched.
    Passed,
    Allowed,
    Refused,
    /// A password submission the guard could not read or attribute (no session, no flow id, too large,
    /// garbage): forwarded for Kratos to judge; the settings hook decides by `require_staged_verdict`.
    Unchecked,
    /// The check failed and `on_error.settings` is `open`: forwarded without a verdict.
    FailedOpen,
    /// The check failed and `on_error.settings` is `closed`: answered 503, nothing reached Kratos.
    FailedClosed,
    /// Kratos did not answer: 502.
    KratosUnreachable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Allowed => "allowed",
            Self::Refused => "refused",
            Self::Unchecked => "unchecked",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
            Self::KratosUnreachable => "kratos_unreachable",
        }
    }
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    guard: web::Data<GuardState>,
) -> HttpResponse {
    let started = Instant::now();
    let flow = submission::flow_of_path(req.path())
        .filter(|_| req.method() == Method::POST || req.method() == Method::GET)
        .filter(|flow| *flow != Flow::Recovery || req.method() == Method::POST);
    let recovery_flow_fetch =
        req.method() == Method::GET && req.path().trim_end_matches('/') == RECOVERY_FLOWS;
    let route = if recovery_flow_fetch {
        "recovery_flow"
    } else {
        flow.map_or("other", Flow::name)
    };
    let (outcome, response) = match flow {
        None if recovery_flow_fetch => recovery::show_flow(&guard, &req).await,
        None => {
            let body = if proxy::has_body(&req) {
                Body::Streamed {
                    head: Vec::new(),
                    rest: payload,
                }
            } else {
                Body::None
            };
            forward(&guard, &req, body, Outcome::Passed).await
        }
        Some(flow) => inspect(&guard, flow, &req, payload).await,
    };
    guard
        .metrics
        .requests
        .with_label_values(&[route, outcome.label()])
        .inc();
    guard
        .metrics
        .latency
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn forward(
    guard: &GuardState,
    req: &HttpRequest,
    body: Body,
    outcome: Outcome,
) -> (Outcome, HttpResponse) {
    match guard.upstream.forward(req, body).await {
        Ok(response) => (outcome, response),
        Err(error) => {
            tracing::warn!(path = req.path(), error = %error, "Kratos unreachable through the guard");
            (
                Outcome::KratosUnreachable,
                kratos_error(StatusCode::BAD_GATEWAY, "Kratos did not answer"),
            )
        }
    }
}

/// Reads a settings or registration submission, stages a verdict when it carries a password, forwards it.
async fn inspect(
    guard: &GuardState,
    flow: Flow,
    req: &HttpRequest,
    mut payload: web::Payload,
) -> (Outcome, HttpResponse) {
    // The body, up to the limit; a larger one is passed on unread.
    let mut read = Vec::new();
    let mut size = 0usize;
    if req.method() != Method::GET && proxy::has_body(req) {
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else {
                return (
                    Outcome::Unchecked,
                    kratos_error(
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read",
                    ),
                );
            };
            size += chunk.len();
            read.push(chunk);
            if size > guard.max_submission_bytes {
                tracing::info!(flow = flow.name(), "submission larger than plugin.kratos.guard.max_submission_bytes passed on unchecked");
                let body = Body::Streamed {
                    head: read,
                    rest: payload,
                };
                return forward(guard, req, body, Outcome::Unchecked).await;
            }
        }
    }
    let body: Bytes = read.concat().into();
    let forward_body = || {
        if body.is_empty() && !proxy::has_body(req) {
            Body::None
        } else {
            Body::Buffered(body.clone())
        }
    };
    let query = req.query_string();
    let encoding = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(submission::Encoding::of_content_type);
    if flow == Flow::Recovery {
        return recovery::inspect(
            guard,
            req,
            submission::flow_id(query),
            body,
            encoding.as_ref(),
        )
        .await;
    }
    let Some(flow_id) = submission::flow_id(query) else {
        return forward(guard, req, forward_body(), Outcome::Unchecked).await;
    };
    let password = match submission::find_password(req.method(), query, encoding.as_ref(), &body)
        .await
    {
        Found::Password(password) => password,
        Found::NotPassword => return forward(guard, req, forward_body(), Outcome::Passed).await,
        Found::Unreadable => return forward(guard, req, forward_body(), Outcome::Unchecked).await,
    };
    let locale = Locale::negotiate(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
        guard.passwords.policy().default_locale(),
    );
    let staged = match flow {
        Flow::Registration => guard
            .passwords
            .stage_registration(&flow_id, &password, guard.ttl)
            .await
            .map(|()| Outcome::Allowed)
            .map_err(Failure::Check),
        Flow::Settings => stage_settings(guard, req, &flow_id, &password, locale).await,
        // Answered above.
        Flow::Recovery => Ok(Outcome::Passed),
    };
    match staged {
        Ok(outcome) => {
            if let Outcome::Allowed = outcome {
                guard.metrics.verdicts.with_label_values(&["allowed"]).inc();
            }
            forward(guard, req, forward_body(), outcome).await
        }
        Err(Failure::NoSession) => forward(guard, req, forward_body(), Outcome::Unchecked).await,
        Err(Failure::KratosUnreachable) => (
            Outcome::KratosUnreachable,
            kratos_error(StatusCode::BAD_GATEWAY, "Kratos did not answer"),
        ),
        Err(failure) => {
            tracing::error!(flow = flow.name(), flow.id = %flow_id, error = %failure, "password submission could not be checked");
            match guard.settings.on_error.settings {
                FailurePolicy::Open => forward(guard, req, forward_body(), Outcome::FailedOpen).await,
                FailurePolicy::Closed => (
                    Outcome::FailedClosed,
                    kratos_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the new password cannot be checked right now; please try again in a few minutes",
                    ),
                ),
            }
        }
    }
}

/// Why a password submission got no verdict.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no session: Kratos will refuse the submission itself")]
    NoSession,
    #[error("Kratos did not answer /sessions/whoami")]
    KratosUnreachable,
    #[error("Kratos answered /sessions/whoami with {0}")]
    Whoami(u16),
    #[error("Kratos's /sessions/whoami answer could not be read: {0}")]
    Session(String),
    #[error("{0}")]
    Check(#[from] PasswordsError),
}

/// Kratos's `/sessions/whoami` answer, the parts the guard uses.
#[derive(Debug, Deserialize)]
struct WhoAmI {
    identity: KratosIdentity,
    #[serde(flatten)]
    session: KratosSession,
}

async fn stage_settings(
    guard: &GuardState,
    req: &HttpRequest,
    flow_id: &FlowId,
    password: &crate::Password,
    locale: Locale,
) -> Result<Outcome, Failure> {
    let answer = guard
        .upstream
        .whoami(req)
        .await
        .map_err(|_| Failure::KratosUnreachable)?;
    match answer.status().as_u16() {
        200 => {}
        401 | 403 => return Err(Failure::NoSession),
        other => return Err(Failure::Whoami(other)),
    }
    let who: WhoAmI = answer
        .json()
        .await
        .map_err(|e| Failure::Session(e.to_string()))?;
    let identity =
        super::call::identity_of(&who.identity, &guard.settings).map_err(Failure::Session)?;
    let metadata_public = who.identity.metadata_public_object();
    super::sync::ensure_known(
        &guard.passwords,
        guard.admin.as_ref(),
        &guard.settings,
        &identity,
        &metadata_public,
        guard.passwords.clock().now(),
    )
    .await?;
    let context = if who.session.from_recovery() {
        ChangeContext::Recovery
    } else {
        ChangeContext::Voluntary
    };
    let checked = guard
        .passwords
        .check_submission(&identity, password, context, Some(locale))
        .await?;
    let (verdict, outcome) = if checked.decision.allowed {
        (Verdict::Allowed(checked.staged), Outcome::Allowed)
    } else {
        let codes: Vec<String> = checked
            .decision
            .violations
            .iter()
            .map(|v| v.code.as_str().to_string())
            .collect();
        for code in &codes {
            guard.metrics.verdicts.with_label_values(&[code]).inc();
        }
        let shown: Vec<_> = checked
            .decision
            .violations
            .iter()
            .map(messages::from_violation)
            .collect();
        let messages = serde_json::to_value(&shown).unwrap_or_default();
        (Verdict::Refused { codes, messages }, Outcome::Refused)
    };
    guard
        .passwords
        .stage_settings_verdict(flow_id, &identity.id, verdict, guard.ttl)
        .await?;
    tracing::info!(flow.id = %flow_id, identity.id = %identity.id, outcome = outcome.label(), "settings password submission checked");
    Ok(outcome)
}

/// An error in the shape of Kratos's own error answers, for the few answers the guard gives itself.
fn kratos_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": {
            "code": status.as_u16(),
            "status": status.canonical_reason().unwrap_or_default(),
            "reason": message,
            "message": message,
        }
    }))
}
