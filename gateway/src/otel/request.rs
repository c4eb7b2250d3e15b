//! A request's spans: the server span, continuing the client's `traceparent`, and one client
//! span per upstream try (retries are siblings under the server span).
//!
//! The sampling decision comes first. A request that is not sampled (most of them, at a low
//! ratio) builds no span objects at all: it keeps its trace and span ids, to log and to pass
//! on in `traceparent`. Only a sampled request goes through the SDK.

use super::Tracing;
use http::{HeaderName, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::{IdGenerator, SamplingDecision};
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

pub enum RequestTrace {
    Sampled(Box<Recorded>),
    /// Ids only: the trace continues upstream, nothing is recorded here.
    Unsampled {
        trace_id: TraceId,
        span_id: SpanId,
    },
}

pub struct Recorded {
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
    /// The request's host (lower case, no port), worked out only for a sampled request.
    pub host: fn(&RequestHeader) -> Cow<'_, str>,
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
        let parent = incoming_parent(req);
        let parent_cx = parent
            .clone()
            .map(|sc| Context::new().with_remote_span_context(sc));
        let trace_id = parent
            .as_ref()
            .map_or_else(|| t.ids.new_trace_id(), |p| p.trace_id());
        let decision = t
            .sampler
            .should_sample(
                parent_cx.as_ref(),
                trace_id,
                req.method.as_str(),
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision;
        if decision != SamplingDecision::RecordAndSample {
            return RequestTrace::Unsampled {
                trace_id,
                span_id: t.ids.new_span_id(),
            };
        }
        // The SDK decides again on the same inputs (the same answer) and gives a root span
        // the trace id decided on.
        let parent = match parent {
            Some(_) => t.propagator.extract(&HeaderExtractor(&req.headers)),
            None => Context::new(),
        };
        if parent_cx.is_none() {
            super::ids::preset_trace_id(trace_id);
        }
        let span = t
            .tracer
            .span_builder(req.method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .start_with_context(&t.tracer, &parent);
        let server = parent.with_span(span);
        let s = server.span();
        let mut attributes = vec![
            KeyValue::new("http.request.method", req.method.as_str().to_owned()),
            KeyValue::new("url.path", req.uri.path().to_owned()),
            KeyValue::new("url.scheme", incoming.scheme),
            KeyValue::new("server.address", (incoming.host)(req).into_owned()),
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
        RequestTrace::Sampled(Box::new(Recorded {
            server,
            attempt: None,
            tries: 0,
        }))
    }

    /// The context plugins start their own spans under (an auth lookup, a Redis call): only
    /// for a sampled request, so an unsampled one costs plugins nothing.
    pub fn sampled_context(&self) -> Option<Context> {
        match self {
            RequestTrace::Sampled(r) => Some(r.server.clone()),
            RequestTrace::Unsampled { .. } => None,
        }
    }

    /// The server span's trace and span ids, for the access log.
    pub fn ids(&self) -> (TraceId, SpanId) {
        match self {
            RequestTrace::Sampled(r) => {
                let s = r.server.span();
                let c = s.span_context();
                (c.trace_id(), c.span_id())
            }
            RequestTrace::Unsampled { trace_id, span_id } => (*trace_id, *span_id),
        }
    }

    /// Opens the span of the next upstream try, ending the previous one if it is still open.
    pub fn start_attempt(&mut self, t: &Tracing, method: &str, pool: &str, member: SocketAddr) {
        let RequestTrace::Sampled(r) = self else {
            return;
        };
        r.end_attempt(None);
        let span = t
            .tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Client)
            .start_with_context(&t.tracer, &r.server);
        let attempt = r.server.with_span(span);
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("server.address", member.ip().to_string()),
            KeyValue::new("server.port", i64::from(member.port())),
            KeyValue::new("portico.upstream", pool.to_owned()),
        ];
        if r.tries > 0 {
            attributes.push(KeyValue::new("http.request.resend_count", r.tries));
        }
        attempt.span().set_attributes(attributes);
        r.tries += 1;
        r.attempt = Some(attempt);
    }

    /// The upstream's status for the current try; the span stays open while the body streams.
    pub fn attempt_answered(&mut self, status: u16) {
        let RequestTrace::Sampled(r) = self else {
            return;
        };
        if let Some(a) = &r.attempt {
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
        if let RequestTrace::Sampled(r) = self {
            r.end_attempt(error);
        }
    }

    /// Sets `traceparent` for the upstream: the current try's span (or, unsampled, the
    /// request's ids). The client's `tracestate` is forwarded as it came.
    pub fn inject(&self, upstream: &mut RequestHeader) {
        let (trace_id, span_id, sampled) = match self {
            RequestTrace::Sampled(r) => {
                let cx = r.attempt.as_ref().unwrap_or(&r.server);
                let s = cx.span();
                let c = s.span_context();
                (c.trace_id(), c.span_id(), c.is_sampled())
            }
            RequestTrace::Unsampled { trace_id, span_id } => (*trace_id, *span_id, false),
        };
        if let Err(e) =
            upstream.insert_header(TRACEPARENT.clone(), traceparent(trace_id, span_id, sampled))
        {
            tracing::debug!(error = %e, "could not pass on the trace context");
        }
    }

    pub fn finish(self, t: &Tracing, method: &str, outcome: Outcome) {
        let RequestTrace::Sampled(mut r) = self else {
            return;
        };
        r.end_attempt(None);
        let s = r.server.span();
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
        s.end();
    }
}

impl Recorded {
    fn end_attempt(&mut self, error: Option<&str>) {
        if let Some(a) = self.attempt.take() {
            let s = a.span();
            if let Some(why) = error {
                s.set_attribute(KeyValue::new("error.type", why.to_owned()));
                s.set_status(Status::error(why.to_owned()));
            }
            s.end();
        }
    }
}

/// The caller's span from a valid version-00 `traceparent` (W3C Trace Context), without its
/// `tracestate` (read only for a sampled request).
fn incoming_parent(req: &RequestHeader) -> Option<SpanContext> {
    let v = req.headers.get(&TRACEPARENT)?.as_bytes();
    fn hex(s: &[u8]) -> Option<&str> {
        std::str::from_utf8(s)
            .ok()
            .filter(|s| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    }
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    // Version 00 is exactly this long; a later version may append fields.
    match hex(&v[..2])? {
        "ff" => return None,
        "00" if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::from_hex(hex(&v[3..35])?).ok()?;
    let span_id = SpanId::from_hex(hex(&v[36..52])?).ok()?;
    let flags = u8::from_str_radix(hex(&v[53..55])?, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

/// `00-{trace id}-{span id}-{flags}`, written without formatting machinery.
fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    for (i, b) in trace_id.to_bytes().iter().enumerate() {
        out[3 + 2 * i] = HEX[usize::from(b >> 4)];
        out[4 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out[35] = b'-';
    for (i, b) in span_id.to_bytes().iter().enumerate() {
        out[36 + 2 * i] = HEX[usize::from(b >> 4)];
        out[37 + 2 * i] = HEX[usize::from(b & 0xf)];
    }
    out[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_traceparent(v: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("traceparent", v).unwrap();
        r
    }

    #[test]
    fn traceparents_round_trip_and_malformed_ones_are_ignored() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = incoming_parent(&with_traceparent(good)).unwrap();
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(traceparent(sc.trace_id(), sc.span_id(), true), good);
        let unsampled = incoming_parent(&with_traceparent(&good.replace("-01", "-00"))).unwrap();
        assert!(!unsampled.is_sampled());
        // A later version with more fields: its known part is read.
        let v2 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(incoming_parent(&with_traceparent(v2)).is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(incoming_parent(&with_traceparent(bad)).is_none(), "{bad}");
        }
    }
}
