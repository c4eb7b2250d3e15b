//! Spans for the work a plugin does outside the process (an auth service, JWKS, Redis), as
//! children of the request's server span. The gateway runs a sampled request's plugin hooks
//! with that span as the current context; otherwise nothing here records or allocates.

use opentelemetry::global;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

/// A client span that ends when dropped.
pub struct Outbound(Option<Context>);

impl Outbound {
    /// Starts a client span under the current context, if that context is a sampled request.
    pub fn start(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Outbound {
        let parent = Context::current();
        if !parent.span().span_context().is_sampled() {
            return Outbound(None);
        }
        let tracer = global::tracer("portico");
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes())
            .start_with_context(&tracer, &parent);
        Outbound(Some(parent.with_span(span)))
    }

    /// Marks the span failed.
    pub fn fail(&self, why: &str) {
        if let Some(cx) = &self.0 {
            cx.span()
                .set_attribute(KeyValue::new("error.type", why.to_owned()));
            cx.span().set_status(Status::error(why.to_owned()));
        }
    }

    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// The W3C trace headers that carry this span to the service called.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = TraceHeaders(Vec::new());
        if let Some(cx) = &self.0 {
            global::get_text_map_propagator(|p| p.inject_context(cx, &mut headers));
        }
        headers.0
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

struct TraceHeaders(Vec<(String, String)>);

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}
