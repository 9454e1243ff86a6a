//! The guard's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Proxy latency buckets in seconds: loopback forwarding takes well under a millisecond, a password
/// submission one KDF run (tens of milliseconds).
const PROXY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone)]
pub struct GuardMetrics {
    /// Requests by route (settings, registration, other) and outcome.
    pub requests: IntCounterVec,
    /// Time from the client's request to Kratos's response headers, checks included, by route.
    pub latency: HistogramVec,
    /// Verdicts staged, by code (`allowed`, or each violation code of a refusal).
    pub verdicts: IntCounterVec,
}

impl GuardMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "reclaim_guard_requests_total",
                "Requests through the Kratos edge guard, by route (settings, registration, other) and outcome \
                 (passed, allowed, refused, unchecked, failed_open, failed_closed, kratos_unreachable)",
            ),
            &["route", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "reclaim_guard_proxy_seconds",
                "Time from a client's request to Kratos's response headers through the guard, checks included",
            )
            .buckets(PROXY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let verdicts = IntCounterVec::new(
            Opts::new(
                "reclaim_guard_verdicts_total",
                "Verdicts the guard staged, by code (allowed, or each violation code of a refusal)",
            ),
            &["code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(verdicts.clone()))?;
        Ok(Self {
            requests,
            latency,
            verdicts,
        })
    }
}
