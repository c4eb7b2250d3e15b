//! Prometheus metrics (the names are a contract: `docs/operations.md`). One registry per
//! gateway instance, not a process-wide singleton, so tests can run several gateways in one
//! process. Labels come only from configured names and fixed sets, never from client input.

use crate::upstream::{Circuit, Pool};
use portico_plugins::revocation::{Revocations, Source};
use portico_plugins::{ErrorCode, Rejection};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A route's metric series, looked up once (see [`Metrics::route_series`]) rather than by
/// label on every request.
pub struct RouteSeries {
    route: String,
    duration: prometheus::Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    upstream: Option<prometheus::Histogram>,
    /// The route's `portico_requests_total` series for the common methods and statuses, each
    /// made on its first request: found by label values, a series cost three label hashes,
    /// the vector's read lock and a reference count on every request. The table itself is
    /// made on the route's first request, so routes without traffic hold none.
    requests: OnceLock<Box<[OnceLock<IntCounter>]>>,
}

/// The statuses whose request counters a route keeps at hand (for each method of
/// [`METHOD_LABELS`]); others are found by label.
const KEPT_STATUSES: [u16; 15] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

impl RouteSeries {
    /// Where the counter of `method` and `status` is kept, if it is one of the common ones.
    fn kept_request_counter(
        &self,
        method: &http::Method,
        status: u16,
    ) -> Option<&OnceLock<IntCounter>> {
        let m = method_index(method)?;
        let s = KEPT_STATUSES.iter().position(|&kept| kept == status)?;
        let table = self.requests.get_or_init(|| {
            (0..METHOD_LABELS.len() * KEPT_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect()
        });
        table.get(m * KEPT_STATUSES.len() + s)
    }
}

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
    pub certificate_expiry: IntGaugeVec,
    pub spans_exported: IntCounter,
    dns_lookups: IntCounterVec,
    pub spans_dropped: IntCounterVec,
    revocations: IntCounterVec,
    redis_up: IntGauge,
    /// Client connections open, by listener (kept live by the connection handler).
    pub open_connections: IntGaugeVec,
    pub request_bytes: IntCounterVec,
    pub response_bytes: IntCounterVec,
    pub upstream_connect: HistogramVec,
    /// The members each pool has a `portico_circuit_open` series for, so the series of a
    /// member that left (or of a removed pool) can be dropped.
    circuit_series: Mutex<HashMap<Arc<str>, Vec<String>>>,
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
                "Time from choosing a member to the upstream's response header (time to first byte), by upstream.",
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
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "portico_tls_certificate_expiration_timestamp_seconds",
                "When each served TLS certificate expires (notAfter, Unix time), by listener address and certificate file.",
            ),
            &["listener", "certificate"],
        )?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        let revocations = IntCounterVec::new(
            Opts::new(
                "portico_revocations_total",
                "Sessions and tokens revoked, by source: edge (a session-ending request through this replica), admin, peer (another replica).",
            ),
            &["source"],
        )?;
        registry.register(Box::new(revocations.clone()))?;
        let redis_up = IntGauge::new(
            "portico_redis_up",
            "1 while the last Redis command succeeded, 0 after one failed (absent without Redis).",
        )?;
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "portico_open_connections",
                "Client connections open, by proxy listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open_connections.clone()))?;
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "portico_request_bytes_total",
                "Request body bytes received from clients, by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(request_bytes.clone()))?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "portico_response_bytes_total",
                "Response body bytes sent to clients, by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(response_bytes.clone()))?;
        let upstream_connect = HistogramVec::new(
            HistogramOpts::new(
                "portico_upstream_connect_duration_seconds",
                "Time to open a new upstream connection (TCP and TLS), by upstream; reused connections are not counted.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_connect.clone()))?;
        let spans_exported = IntCounter::new(
            "portico_spans_exported_total",
            "Trace spans the OTLP collector accepted.",
        )?;
        registry.register(Box::new(spans_exported.clone()))?;
        let spans_dropped = IntCounterVec::new(
            Opts::new(
                "portico_spans_dropped_total",
                "Trace spans dropped: the export queue was full, or the collector failed or was too slow.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(spans_dropped.clone()))?;
        let dns_lookups = IntCounterVec::new(
            Opts::new(
                "portico_dns_lookups_total",
                "Lookups of member host names, by result (ok, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(dns_lookups.clone()))?;
        for reason in ["queue_full", "export_failed"] {
            spans_dropped.with_label_values(&[reason]);
        }
        // CPU seconds, resident memory, open and maximum descriptors, start time.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for source in Source::ALL {
            revocations.with_label_values(&[source.label()]);
        }
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
            certificate_expiry,
            spans_exported,
            spans_dropped,
            dns_lookups,
            revocations,
            redis_up,
            open_connections,
            request_bytes,
            response_bytes,
            upstream_connect,
            circuit_series: Mutex::default(),
        })
    }

    /// Members by state — `healthy`, `unhealthy` (active checks) and `ejected` (passive) —
    /// and each member's circuit. Called when membership or health changes, not per request.
    pub fn update_members(&self, pool: &Pool) {
        let set = pool.members();
        let (mut healthy, mut unhealthy, mut ejected) = (0, 0, 0);
        let mut members = Vec::with_capacity(set.members.len());
        for m in &set.members {
            let circuit = m.circuit();
            if !m.is_healthy() {
                unhealthy += 1;
            } else if circuit != Circuit::Closed {
                ejected += 1;
            } else {
                healthy += 1;
            }
            self.circuit_open
                .with_label_values(&[&*pool.name, m.address.as_str()])
                .set(i64::from(circuit != Circuit::Closed));
            members.push(m.address.clone());
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
        let Ok(mut series) = self.circuit_series.lock() else {
            return;
        };
        if let Some(before) = series.insert(pool.name.clone(), members) {
            let now = &series[&pool.name];
            for gone in before.iter().filter(|a| !now.contains(a)) {
                let _ = self
                    .circuit_open
                    .remove_label_values(&[&*pool.name, gone.as_str()]);
            }
        }
    }

    /// Requests and 5xx answers so far, by route (for the status page).
    pub fn request_totals(&self) -> std::collections::BTreeMap<String, (u64, u64)> {
        use prometheus::core::Collector;
        let mut totals = std::collections::BTreeMap::new();
        for family in self.requests.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let n = m.get_counter().value() as u64;
                let entry: &mut (u64, u64) = totals.entry(label("route")).or_default();
                entry.0 += n;
                if label("status").starts_with('5') {
                    entry.1 += n;
                }
            }
        }
        totals
    }

    /// Exports `portico_redis_up` (a config with a `redis` section).
    pub fn track_redis(&self) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(self.redis_up.clone()))
    }

    /// Redis' state, read at scrape time when there is a Redis.
    pub fn update_live(&self, redis_up: Option<bool>) {
        if let Some(up) = redis_up {
            self.redis_up.set(i64::from(up));
        }
    }

    /// Brings the revocation counters up to the revocation set's own counts.
    pub fn update_revocations(&self, revocations: &Revocations) {
        for source in Source::ALL {
            let counter = self.revocations.with_label_values(&[source.label()]);
            let seen = revocations.count(source);
            if seen > counter.get() {
                counter.inc_by(seen - counter.get());
            }
        }
    }

    /// One series per served certificate; those of certificates no longer served go.
    pub fn update_certificates(&self, tls: &HashMap<String, Arc<crate::certificates::SniTable>>) {
        self.certificate_expiry.reset();
        for (listener, table) in tls {
            for c in &table.certs {
                self.certificate_expiry
                    .with_label_values(&[listener.as_str(), c.cert_path.as_str()])
                    .set(c.not_after);
            }
        }
    }

    /// Drops the series of a pool that a reload removed.
    pub fn forget_pool(&self, pool: &Pool) {
        for state in ["healthy", "unhealthy", "ejected"] {
            let _ = self
                .upstream_members
                .remove_label_values(&[&pool.name, state]);
        }
        let members = match self.circuit_series.lock() {
            Ok(mut series) => series.remove(&pool.name).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for m in members {
            let _ = self
                .circuit_open
                .remove_label_values(&[&*pool.name, m.as_str()]);
        }
    }

    /// The series of a route (and of its pool) whose labels do not change per request.
    pub fn route_series(&self, route: &str, pool: Option<&str>) -> RouteSeries {
        RouteSeries {
            route: route.to_string(),
            duration: self.request_duration.with_label_values(&[route]),
            request_bytes: self.request_bytes.with_label_values(&[route]),
            response_bytes: self.response_bytes.with_label_values(&[route]),
            upstream: pool.map(|p| self.upstream_duration.with_label_values(&[p])),
            requests: OnceLock::new(),
        }
    }

    /// Counts a request of `series`' route when its response is done; `upstream`: the pool's
    /// time to the response header; `bytes`: body bytes received and sent.
    pub fn record_request(
        &self,
        series: &RouteSeries,
        method: &http::Method,
        status: u16,
        elapsed: Duration,
        upstream: Option<Duration>,
        bytes: (u64, u64),
    ) {
        // Each addition is an atomic operation even when it adds nothing, as for most
        // requests' bodies.
        if bytes.0 > 0 {
            series.request_bytes.inc_by(bytes.0);
        }
        if bytes.1 > 0 {
            series.response_bytes.inc_by(bytes.1);
        }
        if let (Some(h), Some(took)) = (&series.upstream, upstream) {
            h.observe(took.as_secs_f64());
        }
        let labelled = || {
            let status = StatusLabel::new(status);
            self.requests
                .with_label_values(&[&series.route, method_label(method), status.as_str()])
        };
        match series.kept_request_counter(method, status) {
            Some(kept) => kept.get_or_init(labelled).inc(),
            None => labelled().inc(),
        }
        series.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request a route's plugins refused, under the metric its code belongs to.
    pub fn record_rejection(&self, route: &str, rejection: &Rejection) {
        let Some(label) = rejection.label.as_deref() else {
            return;
        };
        match rejection.code {
            ErrorCode::RateLimited => self.rate_limited.with_label_values(&[route, label]).inc(),
            ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::UpstreamUnavailable => {
                self.auth_failures.with_label_values(&[route, label]).inc()
            }
            _ => {}
        }
    }

    pub fn dns_lookup(&self, ok: bool) {
        self.dns_lookups
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
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

/// A status code as a label, without allocating.
struct StatusLabel([u8; 3]);

impl StatusLabel {
    fn new(status: u16) -> Self {
        let s = status.min(999);
        StatusLabel([
            b'0' + (s / 100) as u8,
            b'0' + (s / 10 % 10) as u8,
            b'0' + (s % 10) as u8,
        ])
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("000")
    }
}

/// The methods that are metric labels of their own; any other is `OTHER`, so clients cannot
/// mint series.
const METHOD_LABELS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// `m`'s place in [`METHOD_LABELS`].
fn method_index(m: &http::Method) -> Option<usize> {
    Some(match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => return None,
    })
}

/// The method as a metric label.
fn method_label(m: &http::Method) -> &'static str {
    method_index(m)
        .and_then(|i| METHOD_LABELS.get(i).copied())
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_series_follow_the_pools() {
        use crate::upstream::{Discovered, Pool};
        let config = serde_saphyr::from_str(
            "members: [ { address: \"127.0.0.1:1001\" } ]\ndiscovery: redis\nservice: users\n",
        )
        .unwrap();
        let pool = Pool::build("p", &config, None, None, &|h, _| {
            Err(crate::dns::DnsError::NoAddress(h.into()))
        })
        .unwrap();
        let found = |port: u16| Discovered {
            id: format!("i{port}"),
            address: format!("127.0.0.1:{port}"),
            addr: ([127, 0, 0, 1], port).into(),
            weight: 1,
            tls: false,
        };
        let metrics = Metrics::new().unwrap();
        let text = |m: &Metrics| String::from_utf8(m.render()).unwrap();
        pool.set_discovered(&[found(2001)]);
        metrics.update_members(&pool);
        assert!(text(&metrics)
            .contains(r#"portico_circuit_open{member="127.0.0.1:2001",upstream="p"} 0"#));
        // The instance left: its series goes with it; the static member's stays.
        pool.set_discovered(&[]);
        metrics.update_members(&pool);
        let t = text(&metrics);
        assert!(!t.contains("127.0.0.1:2001"), "{t}");
        assert!(t.contains(r#"portico_circuit_open{member="127.0.0.1:1001",upstream="p"} 0"#));
        // The pool left: all of its series go.
        metrics.forget_pool(&pool);
        let t = text(&metrics);
        assert!(!t.contains("upstream=\"p\""), "{t}");
    }

    #[test]
    fn kept_and_labelled_request_counters_count_in_the_same_series() {
        let metrics = Metrics::new().unwrap();
        let series = metrics.route_series("r", None);
        let record = |method: http::Method, status: u16| {
            metrics.record_request(&series, &method, status, Duration::ZERO, None, (0, 0));
        };
        record(http::Method::GET, 200);
        record(http::Method::GET, 200);
        record(http::Method::HEAD, 504);
        record(http::Method::GET, 418);
        record(http::Method::from_bytes(b"PURGE").unwrap(), 200);
        // A second handle on the route (as after a reload) counts on in the same series.
        let again = metrics.route_series("r", None);
        metrics.record_request(
            &again,
            &http::Method::GET,
            200,
            Duration::ZERO,
            None,
            (0, 0),
        );
        let t = String::from_utf8(metrics.render()).unwrap();
        for line in [
            r#"portico_requests_total{method="GET",route="r",status="200"} 3"#,
            r#"portico_requests_total{method="HEAD",route="r",status="504"} 1"#,
            r#"portico_requests_total{method="GET",route="r",status="418"} 1"#,
            r#"portico_requests_total{method="OTHER",route="r",status="200"} 1"#,
        ] {
            assert!(t.contains(line), "{line} in\n{t}");
        }
        assert!(series
            .kept_request_counter(&http::Method::PATCH, 429)
            .is_some());
        assert!(series
            .kept_request_counter(&http::Method::GET, 418)
            .is_none());
    }

    #[test]
    fn status_labels() {
        assert_eq!(StatusLabel::new(200).as_str(), "200");
        assert_eq!(StatusLabel::new(0).as_str(), "000");
        assert_eq!(StatusLabel::new(1234).as_str(), "999");
    }
}
