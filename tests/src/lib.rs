//! The witness upstream: an HTTP/1.1 server that answers every request with a JSON echo of
//! what it received (method, path, headers, body size) and records it, so tests can assert
//! exactly what crossed the gateway. `portico-demo-upstream` serves it for the demo config.

pub mod dns;
pub mod otlp;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What the witness saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    /// All values of a header, case-insensitively.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Default)]
struct State {
    name: String,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    /// When set, `/health` answers 503.
    unhealthy: std::sync::atomic::AtomicBool,
    /// When not 0, every other request is answered with this status.
    fail_status: std::sync::atomic::AtomicU16,
    /// Fixed JSON answers by path (e.g. a JWKS), not recorded but counted.
    fixed: Mutex<std::collections::HashMap<String, String>>,
    fixed_hits: AtomicUsize,
    /// Requests with `?hold` waiting for [`Witness::release_held`].
    held: tokio::sync::watch::Sender<usize>,
    released: tokio::sync::watch::Sender<bool>,
}

/// A running witness server.
#[derive(Clone)]
pub struct Witness {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Witness {
    /// Starts on a free loopback port.
    pub async fn start(name: &str) -> std::io::Result<Witness> {
        Self::start_on("127.0.0.1:0".parse().expect("literal address"), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> std::io::Result<Witness> {
        Self::serve(TcpListener::bind(addr).await?, name)
    }

    /// Serves on a listening socket bound elsewhere (handed over by a parent process).
    pub fn start_with(listener: std::net::TcpListener, name: &str) -> std::io::Result<Witness> {
        listener.set_nonblocking(true)?;
        Self::serve(TcpListener::from_std(listener)?, name)
    }

    fn serve(listener: TcpListener, name: &str) -> std::io::Result<Witness> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: name.to_string(),
            ..State::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Witness {
            addr,
            state,
            task: Arc::new(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Answers `path` with this JSON body from now on.
    pub fn serve_json(&self, path: &str, body: &str) {
        if let Ok(mut f) = self.state.fixed.lock() {
            f.insert(path.to_string(), body.to_string());
        }
    }

    /// Requests answered from [`Witness::serve_json`] bodies.
    pub fn fixed_hits(&self) -> usize {
        self.state.fixed_hits.load(Ordering::Relaxed)
    }

    /// Answers every request (but `/health`) with `status`; 0 turns it off.
    pub fn fail_with(&self, status: u16) {
        self.state.fail_status.store(status, Ordering::Relaxed);
    }

    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.state.unhealthy.store(unhealthy, Ordering::Relaxed);
    }

    /// Waits until `n` requests with `?hold` are being held.
    pub async fn wait_held(&self, n: usize) {
        let mut held = self.state.held.subscribe();
        let _ = held.wait_for(|h| *h >= n).await;
    }

    /// Lets every held request (and every later one) be answered.
    pub fn release_held(&self) {
        self.state.released.send_replace(true);
    }

    /// Stops accepting connections (existing ones end with their requests).
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if let Some(accept) = websocket_accept(&req) {
        // A WebSocket handshake: record it, switch protocols, then echo every byte back.
        record(&state, &req, 0);
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default());
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body().collect().await?.to_bytes();
    // `?hold` answers once the test releases it: a request known to be in flight.
    if query.split('&').any(|kv| kv == "hold") {
        let mut released = state.released.subscribe();
        state.held.send_modify(|h| *h += 1);
        let _ = released.wait_for(|r| *r).await;
    }
    // `?sleep=MS` delays the answer, to test timeouts.
    if let Some(ms) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sleep="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body_len: body.len(),
    };
    if path == "/health" {
        let status = if state.unhealthy.load(Ordering::Relaxed) {
            503
        } else {
            200
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap_or_default());
    }
    let fail = state.fail_status.load(Ordering::Relaxed);
    if fail != 0 {
        if let Ok(mut s) = state.seen.lock() {
            s.push(seen);
        }
        return Ok(Response::builder()
            .status(fail)
            .header("x-upstream", state.name.as_str())
            .body(Full::new(Bytes::from_static(b"failing on purpose")))
            .unwrap_or_default());
    }
    // Fixed answers (a JWKS, a session) are counted, not recorded.
    let fixed = state.fixed.lock().ok().and_then(|f| f.get(&path).cloned());
    if let Some(body) = fixed {
        state.fixed_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default());
    }
    if let Ok(mut s) = state.seen.lock() {
        s.push(seen);
    }
    let header_map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let echo = json!({
        "upstream": state.name,
        "method": method,
        "path": path,
        "headers": header_map,
        "body_bytes": body.len(),
    });
    let body = serde_json::to_vec(&echo).unwrap_or_default();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-upstream", state.name.as_str())
        .header("server", "witness")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// The `Sec-WebSocket-Accept` for a WebSocket upgrade request (RFC 6455 §4.2.2).
fn websocket_accept(req: &Request<Incoming>) -> Option<String> {
    use base64::Engine;
    use sha1::Digest;
    let h = req.headers();
    let upgrade = h.get(http::header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = h.get("sec-websocket-key")?.as_bytes();
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    Some(base64::engine::general_purpose::STANDARD.encode(sha.finalize()))
}

fn record(state: &State, req: &Request<Incoming>, body_len: usize) {
    let seen = Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
    };
    if let Ok(mut s) = state.seen.lock() {
        s.push(seen);
    }
}
