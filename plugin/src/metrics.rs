//! The plugin's Prometheus metrics, all in one struct registered on the service's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// KDF latency buckets in seconds: argon2 at OWASP parameters takes tens of milliseconds.
const KDF_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone)]
pub struct PluginMetrics {
    /// Password decisions, by decision (allowed, refused, warned) and violation code (`none` when allowed).
    pub decisions: IntCounterVec,
    /// Time one KDF run (argon2id, or a foreign hash verification) takes on the bounded pool.
    pub kdf_duration: Histogram,
    /// KDF requests refused because no slot freed up within plugin.history.max_queue_ms (answered 503).
    pub kdf_rejections: IntCounter,
    /// KDF runs in progress right now.
    pub kdf_in_flight: IntGauge,
    /// KDF runs the pool can hold at once (`plugin.history.max_concurrent_kdf`): in flight at this many is
    /// saturation.
    pub kdf_slots: IntGauge,
    /// Supabase hook calls, by hook and outcome (continue, reject, unauthorized, invalid, error).
    pub supabase_hooks: IntCounterVec,
    /// Identity-provider hook calls, by hook (`zitadel.set_password`, ...) and outcome (`allowed`, `refused`,
    /// `passed`, `committed`, `unauthorized`, `bad_request`, `failed`).
    pub hook_calls: IntCounterVec,
    /// Security notices handed to the gateway, by kind and outcome (`sent`, `failed`, `retry`).
    pub notices: IntCounterVec,
}

impl PluginMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "reclaim_plugin_decisions_total",
                "Password decisions, by decision (allowed, refused, warned) and violation code (`none` when allowed)",
            ),
            &["decision", "code"],
        )?;
        let kdf_duration = Histogram::with_opts(
            HistogramOpts::new(
                "reclaim_plugin_kdf_duration_seconds",
                "Time one KDF run (argon2id, or a foreign hash verification) takes on the bounded pool",
            )
            .buckets(KDF_BUCKETS.to_vec()),
        )?;
        let kdf_rejections = IntCounter::new(
            "reclaim_plugin_kdf_rejections_total",
            "KDF requests refused because no slot freed up within plugin.history.max_queue_ms (answered 503)",
        )?;
        let kdf_in_flight = IntGauge::new(
            "reclaim_plugin_kdf_in_flight",
            "KDF runs in progress right now",
        )?;
        let kdf_slots = IntGauge::new(
            "reclaim_plugin_kdf_slots",
            "KDF runs the pool can hold at once (plugin.history.max_concurrent_kdf)",
        )?;
        let supabase_hooks = IntCounterVec::new(
            Opts::new(
                "reclaim_plugin_supabase_hook_total",
                "Supabase hook calls, by hook and outcome (continue, reject, unauthorized, invalid, error)",
            ),
            &["hook", "outcome"],
        )?;
        registry.register(Box::new(supabase_hooks.clone()))?;
        let hook_calls = IntCounterVec::new(
            Opts::new(
                "reclaim_plugin_hook_calls_total",
                "Identity-provider hook calls, by hook (`zitadel.set_password`, ...) and outcome (`allowed`, `refused`, `passed`, `committed`, `unauthorized`, `bad_request`, `failed`)",
            ),
            &["hook", "outcome"],
        )?;
        registry.register(Box::new(hook_calls.clone()))?;
        let notices = IntCounterVec::new(
            Opts::new(
                "reclaim_plugin_notices_total",
                "Security notices handed to the gateway, by kind and outcome (`sent`, `failed`, `retry`)",
            ),
            &["kind", "outcome"],
        )?;
        registry.register(Box::new(notices.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(kdf_duration.clone()))?;
        registry.register(Box::new(kdf_rejections.clone()))?;
        registry.register(Box::new(kdf_in_flight.clone()))?;
        registry.register(Box::new(kdf_slots.clone()))?;
        Ok(Self {
            decisions,
            kdf_duration,
            kdf_rejections,
            kdf_in_flight,
            kdf_slots,
            supabase_hooks,
            hook_calls,
            notices,
        })
    }

    /// Counts one decision; `codes` empty means allowed.
    pub fn count_decision(&self, decision: &str, codes: &[&str]) {
        if codes.is_empty() {
            self.decisions.with_label_values(&[decision, "none"]).inc();
        }
        for code in codes {
            self.decisions.with_label_values(&[decision, code]).inc();
        }
    }
}
