//! Prometheus metrics (names fixed by SPEC.md). One registry per gateway instance, not a
//! process-wide singleton, so tests can run several gateways in one process.

use crate::upstream::Pool;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_members: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub circuit_open: IntGaugeVec,
    pub registry_events: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub auth_failures: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portico_requests_total",
                "Requests served, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portico_request_duration_seconds",
                "Time from request head to the end of the response, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "portico_upstream_duration_seconds",
                "Time from choosing a member to the upstream's response header, by upstream.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let upstream_members = IntGaugeVec::new(
            Opts::new(
                "portico_upstream_members",
                "Members per upstream and state.",
            ),
            &["upstream", "state"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("portico_config_reloads_total", "Config reloads by result."),
            &["result"],
        )?;
        let access_log_dropped = IntCounter::new(
            "portico_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let circuit_open = IntGaugeVec::new(
            Opts::new(
                "portico_circuit_open",
                "1 while a member is ejected by passive health.",
            ),
            &["upstream", "member"],
        )?;
        let registry_events = IntCounterVec::new(
            Opts::new(
                "portico_registry_events_total",
                "Registry reads (on events, expiries and resyncs) by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(circuit_open.clone()))?;
        registry.register(Box::new(registry_events.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "portico_rate_limited_total",
                "Requests refused with 429, by route and limit.",
            ),
            &["route", "limit"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "portico_auth_failures_total",
                "Requests refused by authentication (401, 403, or 503 when the auth service is down), by route and reason.",
            ),
            &["route", "reason"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_members.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_members,
            config_reloads,
            access_log_dropped,
            circuit_open,
            registry_events,
            rate_limited,
            auth_failures,
        })
    }

    /// Members by state: `healthy`, `unhealthy` (active checks) and `ejected` (passive).
    pub fn update_members(&self, pool: &Pool) {
        let set = pool.members();
        let (mut healthy, mut unhealthy, mut ejected) = (0, 0, 0);
        for m in &set.members {
            if !m.is_healthy() {
                unhealthy += 1;
            } else if m.circuit() != crate::upstream::Circuit::Closed {
                ejected += 1;
            } else {
                healthy += 1;
            }
        }
        for (state, n) in [
            ("healthy", healthy),
            ("unhealthy", unhealthy),
            ("ejected", ejected),
        ] {
            self.upstream_members
                .with_label_values(&[&pool.name, state])
                .set(n);
        }
    }

    /// Drops the series of pools that a reload removed.
    pub fn forget_pool(&self, name: &str) {
        for state in ["healthy", "unhealthy", "ejected"] {
            let _ = self.upstream_members.remove_label_values(&[name, state]);
        }
    }

    pub fn registry_event(&self, result: &str) {
        self.registry_events.with_label_values(&[result]).inc();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The method as a metric label: only standard methods, so clients cannot mint series.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
