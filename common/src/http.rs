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
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use prometheus::Registry;
use std::net::TcpListener;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder, TracingLogger};

/// What a service hands to [`serve`].
pub struct ServiceSpec {
    /// `plugin` or `gateway`; shown in logs and the readiness answer.
    pub name: &'static str,
    pub listener: TcpListener,
    pub http: HttpSettings,
    pub db: Db,
    pub registry: Registry,
    /// The service's OpenAPI document (JSON); the shared routes and answers are added here.
    pub openapi: serde_json::Value,
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
    let openapi = web::Data::new(OpenApiDocument(crate::openapi::complete(spec.openapi)));
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
            .wrap(TracingLogger::<RedactedRootSpan>::new())
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

/// The document served at `/openapi.json`.
struct OpenApiDocument(serde_json::Value);

async fn openapi_document(doc: web::Data<OpenApiDocument>) -> HttpResponse {
    HttpResponse::Ok().json(&doc.0)
}

/// No route matched. A path the document lists, asked with a method it does not, gets 405 with `Allow`
/// (actix lets a request whose method matches no route of a path fall through to here).
async fn not_found(req: HttpRequest, doc: web::Data<OpenApiDocument>) -> HttpResponse {
    let allowed = crate::openapi::methods_of(&doc.0, req.path());
    if allowed.is_empty() {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no such route", None);
    }
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
        None,
    );
    if let Ok(value) = header::HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
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

/// The root span of every request, as `tracing-actix-web` makes it, with addresses in the target masked:
/// admin routes take an email address or phone number in the path (`/admin/recipients/{address}/timeline`)
/// or the query (`/admin/limits?to=`), and logs never hold a full address.
pub struct RedactedRootSpan;

impl RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage;
        use tracing::field::Empty;
        let user_agent = request
            .headers()
            .get("User-Agent")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let method = request.method().as_str().to_string();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let target = redact_target(
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(""),
        );
        let connection = request.connection_info().clone();
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = ?request.version(),
            http.scheme = %connection.scheme(),
            http.host = %connection.host(),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %target,
            http.status_code = Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            trace_id = Empty,
            request_id = %request_id,
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// A request target with every path segment and query value that looks like an address (holds `@`, or
/// starts with `+`, percent-encoded or not) masked.
pub fn redact_target(target: &str) -> String {
    let looks_like_address = |part: &str| {
        let lower = part.to_ascii_lowercase();
        lower.contains('@')
            || lower.contains("%40")
            || lower.starts_with('+')
            || lower.starts_with("%2b")
    };
    let mask = |part: &str| {
        if looks_like_address(part) {
            let decoded = part
                .replace("%40", "@")
                .replace("%2B", "+")
                .replace("%2b", "+");
            crate::secret::mask_address(&decoded)
        } else {
            part.to_string()
        }
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut out = path.split('/').map(mask).collect::<Vec<_>>().join("/");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) => format!("{key}={}", mask(value)),
                None => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_target;

    #[test]
    fn addresses_in_targets_are_masked() {
        assert_eq!(
            redact_target("/admin/recipients/jane@example.com/timeline?since=2026-11-01T00:00:00Z"),
            "/admin/recipients/j***@example.com/timeline?since=2026-11-01T00:00:00Z"
        );
        let phone = redact_target("/admin/limits?to=%2B14155550100");
        assert!(!phone.contains("14155550100"), "{phone}");
        assert!(!redact_target("/admin/recipients/+14155550100/timeline").contains("4155550100"));
        assert_eq!(redact_target("/v1/messages/abc"), "/v1/messages/abc");
    }
}
