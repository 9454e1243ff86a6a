//! Prometheus metrics: one registry per service, HTTP request counters and latency histograms.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::time::Instant;

/// Latency buckets in seconds, from 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTP metrics of one service.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests handled, by route pattern, method and status code.
    requests: IntCounterVec,
    /// Time from request to response, by route pattern and method.
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("reclaim_http_requests_total", "HTTP requests handled"),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "reclaim_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// Counts, times and logs every request, and echoes the request id as `x-request-id`. The log line is
/// written inside the request's span, so it carries the request id even when the handler logs nothing;
/// health checks and scrapes are logged at debug only, since they come every few seconds.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let request_id = req
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string());
    let mut response = next.call(req).await?;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis();
    if route.starts_with("/health/") || route == "/metrics" {
        tracing::debug!(http.route = %route, http.method = %method, http.status = status, elapsed_ms, "request answered");
    } else {
        tracing::info!(http.route = %route, http.method = %method, http.status = status, elapsed_ms, "request answered");
    }
    if let Some(metrics) = metrics {
        let status = status.to_string();
        metrics
            .requests
            .with_label_values(&[&route, &method, &status])
            .inc();
        metrics
            .duration
            .with_label_values(&[&route, &method])
            .observe(started.elapsed().as_secs_f64());
    }
    if let Some(id) =
        request_id.and_then(|id| actix_web::http::header::HeaderValue::from_str(&id).ok())
    {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            id,
        );
    }
    Ok(response)
}

/// `GET /metrics` in the Prometheus text format. Gathering runs on the blocking pool because some collectors
/// (the gateway's outbox gauges) read the database at scrape time.
pub async fn expose(registry: web::Data<Registry>) -> HttpResponse {
    let registry = registry.into_inner();
    let families = match web::block(move || registry.gather()).await {
        Ok(families) => families,
        Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
    };
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&families, &mut buffer) {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(buffer),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}
