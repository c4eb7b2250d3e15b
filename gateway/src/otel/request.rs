//! A request's spans: the server span, continuing the client's `traceparent`, and one client
//! span per upstream try (retries are siblings under the server span).
//!
//! Attributes are only built for spans that record: an unsampled request pays for its ids
//! and the `traceparent` it passes on, nothing more.

use super::Tracing;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use pingora::http::RequestHeader;
use std::net::{IpAddr, SocketAddr};

pub struct RequestTrace {
    /// The server span, active.
    server: Context,
    /// The current upstream try's span, while it is open.
    attempt: Option<Context>,
    tries: i64,
}

/// What the server span says about the request when it starts.
pub struct Incoming<'a> {
    pub request: &'a RequestHeader,
    pub scheme: &'static str,
    pub protocol: &'static str,
    pub client_ip: Option<IpAddr>,
    pub host: &'a str,
}

/// How the request ended, for the server span.
pub struct Outcome<'a> {
    pub route: Option<&'a str>,
    pub status: u16,
    pub user_id: Option<&'a str>,
    /// The gateway's error code when it answered itself.
    pub error: Option<&'a str>,
}

impl RequestTrace {
    pub fn start(t: &Tracing, incoming: Incoming) -> Self {
        let req = incoming.request;
        let parent = t.propagator.extract(&HeaderExtractor(&req.headers));
        let span = t
            .tracer
            .span_builder(req.method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .start_with_context(&t.tracer, &parent);
        let server = parent.with_span(span);
        let s = server.span();
        if s.is_recording() {
            let mut attributes = vec![
                KeyValue::new("http.request.method", req.method.as_str().to_owned()),
                KeyValue::new("url.path", req.uri.path().to_owned()),
                KeyValue::new("url.scheme", incoming.scheme),
                KeyValue::new("server.address", incoming.host.to_owned()),
                KeyValue::new(
                    "network.protocol.version",
                    incoming.protocol.trim_start_matches("HTTP/"),
                ),
            ];
            if let Some(q) = req.uri.query() {
                attributes.push(KeyValue::new("url.query", q.to_owned()));
            }
            if let Some(ip) = incoming.client_ip {
                attributes.push(KeyValue::new("client.address", ip.to_string()));
            }
            if let Some(ua) = req
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                attributes.push(KeyValue::new("user_agent.original", ua.to_owned()));
            }
            s.set_attributes(attributes);
        }
        RequestTrace {
            server,
            attempt: None,
            tries: 0,
        }
    }

    /// The context plugins start their own spans under (an auth lookup, a Redis call): only
    /// for a sampled request, so an unsampled one costs plugins nothing.
    pub fn sampled_context(&self) -> Option<Context> {
        self.server
            .span()
            .span_context()
            .is_sampled()
            .then(|| self.server.clone())
    }

    /// The server span's trace and span ids, for the access log.
    pub fn ids(&self) -> (TraceId, SpanId) {
        let s = self.server.span();
        let c = s.span_context();
        (c.trace_id(), c.span_id())
    }

    /// Opens the span of the next upstream try, ending the previous one if it is still open.
    pub fn start_attempt(&mut self, t: &Tracing, method: &str, pool: &str, member: SocketAddr) {
        self.end_attempt(None);
        let span = t
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .start_with_context(&t.tracer, &self.server);
        let attempt = self.server.with_span(span);
        let s = attempt.span();
        if s.is_recording() {
            let mut attributes = vec![
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("server.address", member.ip().to_string()),
                KeyValue::new("server.port", i64::from(member.port())),
                KeyValue::new("portico.upstream", pool.to_owned()),
            ];
            if self.tries > 0 {
                attributes.push(KeyValue::new("http.request.resend_count", self.tries));
            }
            s.set_attributes(attributes);
        }
        self.tries += 1;
        self.attempt = Some(attempt);
    }

    /// The upstream's status for the current try; the span stays open while the body streams.
    pub fn attempt_answered(&mut self, status: u16) {
        if let Some(a) = &self.attempt {
            let s = a.span();
            s.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                s.set_status(Status::error(""));
                s.set_attribute(KeyValue::new("error.type", status.to_string()));
            }
        }
    }

    /// Ends the current try's span, as failed when `error` says why.
    pub fn end_attempt(&mut self, error: Option<&str>) {
        if let Some(a) = self.attempt.take() {
            let s = a.span();
            if let Some(why) = error {
                s.set_attribute(KeyValue::new("error.type", why.to_owned()));
                s.set_status(Status::error(why.to_owned()));
            }
            s.end();
        }
    }

    /// Writes `traceparent` (and `tracestate`) of the current try into the upstream request.
    pub fn inject(&self, t: &Tracing, upstream: &mut RequestHeader) {
        let cx = self.attempt.as_ref().unwrap_or(&self.server);
        t.propagator
            .inject_context(cx, &mut UpstreamHeaders(upstream));
    }

    pub fn finish(mut self, t: &Tracing, method: &str, outcome: Outcome) {
        self.end_attempt(None);
        let s = self.server.span();
        if s.is_recording() {
            if let Some(route) = outcome.route {
                s.update_name(format!("{method} {route}"));
                s.set_attribute(KeyValue::new("portico.route", route.to_owned()));
            }
            s.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(outcome.status),
            ));
            if let (true, Some(user)) = (t.record_user_id, outcome.user_id) {
                s.set_attribute(KeyValue::new("enduser.id", user.to_owned()));
            }
            if let Some(code) = outcome.error {
                s.set_attribute(KeyValue::new("portico.error_code", code.to_owned()));
            }
            // A server span is an error for a 5xx only: a 4xx is the client's (semconv).
            if outcome.status >= 500 {
                s.set_attribute(KeyValue::new("error.type", outcome.status.to_string()));
                s.set_status(Status::error(""));
            }
        }
        s.end();
    }
}

struct UpstreamHeaders<'a>(&'a mut RequestHeader);

impl Injector for UpstreamHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let Err(e) = self.0.insert_header(key.to_owned(), value) {
            tracing::debug!(header = key, error = %e, "could not pass on the trace context");
        }
    }
}
