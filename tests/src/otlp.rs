//! A test OTLP/HTTP trace receiver: decodes the protobuf export requests with the
//! OpenTelemetry project's own generated types and keeps every span it receives. It can
//! also hang (accept, read, never answer), as a collector that stalls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<(String, Span)>>,
    changed: tokio::sync::Notify,
}

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts on a free loopback port. `hang`: never answer an export.
    pub async fn start(hang: bool) -> std::io::Result<OtlpReceiver> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let r = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| export(r.clone(), req, hang));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(OtlpReceiver {
            addr,
            received,
            task,
        })
    }

    /// The traces URL to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.received
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received.
    pub async fn wait_for(&self, done: impl Fn(&[(String, Span)]) -> bool) -> Vec<(String, Span)> {
        loop {
            let changed = self.received.changed.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            changed.await;
        }
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn export(
    received: Arc<Received>,
    req: Request<hyper::body::Incoming>,
    hang: bool,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let ok = req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = req.into_body().collect().await?.to_bytes();
    if hang {
        std::future::pending::<()>().await;
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string()) else {
        return Ok(status(400));
    };
    if !ok {
        return Ok(status(415));
    }
    if let Ok(mut spans) = received.spans.lock() {
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    received.changed.notify_waiters();
    Ok(status(200))
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// A string attribute of a span.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let v = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
