//! The HTTP server every service runs on: health, metrics, OpenAPI, request ids, body limits, JSON errors.
//!
//! A service passes its routes as a `configure` closure; everything common is added here once.

use crate::db::Db;
use crate::json::error_response;
use crate::metrics::{self, HttpMetrics};
use crate::settings::HttpSettings;
use crate::shutdown::Shutdown;
use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::Registry;
use std::net::TcpListener;
use tracing_actix_web::TracingLogger;

/// What a service hands to [`serve`].
pub struct ServiceSpec {
    /// `plugin` or `gateway`; shown in logs and the readiness answer.
    pub name: &'static str,
    pub listener: TcpListener,
    pub http: HttpSettings,
    pub db: Db,
    pub registry: Registry,
    pub openapi: utoipa::openapi::OpenApi,
}

/// Binds a listen address such as `127.0.0.1:4470` (port 0 picks a free port).
pub fn bind(listen: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen)
}

/// Starts the server. It does not watch signals itself: [`run_until`] stops it gracefully when the
/// process's [`Shutdown`] triggers (the binary installs the signal handlers before start-up).
pub fn serve<F>(spec: ServiceSpec, configure: F) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let http_metrics = HttpMetrics::register(&spec.registry).map_err(std::io::Error::other)?;
    let name = spec.name;
    let db = web::Data::new(spec.db);
    let registry = web::Data::new(spec.registry);
    let http_metrics = web::Data::new(http_metrics);
    let openapi = web::Data::new(spec.openapi);
    let limit = spec.http.max_body_bytes;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(db.clone())
            .app_data(registry.clone())
            .app_data(http_metrics.clone())
            .app_data(openapi.clone())
            .app_data(web::Data::new(ServiceName(name)))
            .app_data(web::PayloadConfig::new(limit))
            .app_data(web::JsonConfig::default().limit(limit))
            .wrap(ErrorHandlers::new().default_handler(json_errors))
            .wrap(from_fn(metrics::track))
            .wrap(TracingLogger::default())
            .route("/health/alive", web::get().to(alive))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics::expose))
            .route("/openapi.json", web::get().to(openapi_document))
            .configure(configure.clone())
            .default_service(web::to(not_found))
    })
    .listen(spec.listener)?
    .disable_signals()
    .shutdown_timeout(spec.http.shutdown_timeout_seconds);
    if spec.http.workers > 0 {
        server = server.workers(spec.http.workers);
    }
    Ok(server.run())
}

/// Runs `server` until `stop` triggers, then stops it gracefully: it stops accepting, and requests in
/// flight get `http.shutdown_timeout_seconds` to finish.
pub async fn run_until(server: Server, stop: Shutdown) -> std::io::Result<()> {
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        stop.wait().await;
        tracing::info!(
            "starting graceful shutdown: no new connections, requests in flight may finish"
        );
        handle.stop(true).await;
    });
    let result = server.await;
    stopper.abort();
    result
}

#[derive(Clone, Copy)]
struct ServiceName(&'static str);

async fn alive() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn ready(db: web::Data<Db>, name: web::Data<ServiceName>) -> HttpResponse {
    match db.ready().await {
        Ok(backend) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ready", "service": name.0, "database": backend.name(),
        })),
        Err(reason) => {
            tracing::warn!(service = name.0, reason = %reason, "not ready");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "unavailable", "service": name.0, "reason": "database unreachable, not migrated, or refusing writes",
            }))
        }
    }
}

/// 503 for a request that failed because the database is unavailable ([`crate::db::is_unavailable`]): a
/// full or read-only disk, or a database server that is down or restarting. `Retry-After` says when to try
/// again; the cause goes to the log.
pub fn database_unavailable(error: &anyhow::Error) -> HttpResponse {
    tracing::warn!(error = %format!("{error:#}"), "database unavailable");
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "the database cannot take this request now (disk full, read-only or unreachable); retry later",
        None,
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(DATABASE_RETRY_AFTER_SECONDS),
    );
    response
}

/// The `Retry-After` of [`database_unavailable`].
pub const DATABASE_RETRY_AFTER_SECONDS: &str = "5";

async fn openapi_document(doc: web::Data<utoipa::openapi::OpenApi>) -> HttpResponse {
    HttpResponse::Ok().json(doc.get_ref())
}

async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route", None)
}

/// Errors produced by actix itself (413, 405, extractor failures) come as text; give them the JSON shape.
fn json_errors<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than http.max_body_bytes",
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "missing or wrong credentials"),
        s if s.is_client_error() => ("invalid_request", "the request could not be understood"),
        _ => (
            "internal",
            "internal error; see the server log for this request id",
        ),
    };
    let kept: HeaderMap = res
        .headers()
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let (req, _) = res.into_parts();
    let mut response = error_response(status, code, message, None);
    for (name, value) in kept {
        response.headers_mut().insert(name, value);
    }
    let response: HttpResponse<EitherBody<B, BoxBody>> = response.map_into_right_body();
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
        req, response,
    )))
}
