//! The request path: one `ProxyHttp` implementation that reads top to bottom through
//! Pingora's phases and delegates route-specific work to the route's plugin pipeline.

mod edge;
pub mod errors;
mod forwarded;
pub mod identity;
pub mod request_id;

pub use edge::{mark_head_received, EdgeApp};

use crate::access_log::AccessLog;
use crate::metrics::{method_label, Metrics};
use crate::router::Match;
use crate::snapshot::{Route, Snapshot, SnapshotStore};
use crate::upstream::{InflightGuard, Member, Pool, Transition};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use portico_plugins::{Flow, Rejection, RequestContext};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

pub struct Gateway {
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
}

impl Gateway {
    pub fn new(store: SnapshotStore, metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Gateway {
            store,
            metrics,
            access_log,
        }
    }
}

/// Per-request state.
pub struct RequestState {
    snapshot: Arc<Snapshot>,
    route: Option<Arc<Route>>,
    plugin: RequestContext,
    started: Instant,
    peer_ip: Option<IpAddr>,
    trusted_peer: bool,
    /// The path and query sent upstream, when a rewrite changed it.
    upstream_uri: Option<http::Uri>,
    member: Option<Arc<Member>>,
    _inflight: Option<InflightGuard>,
    /// Members already tried, so a retry picks another.
    tried: Tried,
    tries: u32,
    connect_failures: u32,
    /// Retries taken for 5xx, resets and timeouts (connect failures are counted apart).
    retries: u32,
    /// The current try ended in a 5xx that is being retried.
    retry_pending: bool,
    /// A pooled connection went stale: the next try may reuse the same member.
    retry_same_member: bool,
    /// The current try's outcome went to passive health already.
    reported: bool,
    upstream_started: Option<Instant>,
    upstream_elapsed: Option<Duration>,
    body_bytes: u64,
    /// The error code of a response the gateway produced itself.
    error_code: Option<&'static str>,
}

/// Members tried by this request, by identity.
#[derive(Default)]
struct Tried {
    members: [usize; 8],
    len: usize,
}

impl Tried {
    fn contains(&self, m: &Arc<Member>) -> bool {
        self.members[..self.len].contains(&(Arc::as_ptr(m) as usize))
    }
    fn push(&mut self, m: &Arc<Member>) {
        if self.len < self.members.len() {
            self.members[self.len] = Arc::as_ptr(m) as usize;
            self.len += 1;
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl RequestState {
    fn reject(&mut self, status: u16, message: impl Into<Cow<'static, str>>) -> Rejection {
        let code = errors::code_for(status);
        self.error_code = Some(code);
        Rejection::new(status, code, message)
    }
}

/// The request's host, lower case and without port, borrowed when it already is.
fn request_host(req: &RequestHeader) -> Cow<'_, str> {
    let raw = req
        .uri
        .host()
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())
        .unwrap_or("");
    let host = match raw.rfind(':') {
        // Keep IPv6 literals (`[::1]`) intact; strip a trailing `:port`.
        Some(i) if !raw.ends_with(']') => &raw[..i],
        _ => raw,
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn head_size(req: &RequestHeader) -> (usize, usize) {
    let mut bytes = req.method.as_str().len() + req.raw_path().len() + 12;
    let mut count = 0;
    for (name, value) in req.headers.iter() {
        bytes += name.as_str().len() + value.len() + 4;
        count += 1;
    }
    (bytes, count)
}

async fn reject(session: &mut Session, ctx: &RequestState, r: &Rejection) -> Result<bool> {
    let p = &ctx.plugin;
    errors::respond(session, r, &p.request_id, &p.response_headers, false).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestState;

    fn new_ctx(&self) -> RequestState {
        RequestState {
            snapshot: self.store.load_full(),
            route: None,
            plugin: RequestContext {
                request_id: String::new(),
                client_ip: None,
                scheme: "http",
                route: NO_ROUTE.clone(),
                identity: None,
                response_headers: Vec::new(),
            },
            started: Instant::now(),
            peer_ip: None,
            trusted_peer: false,
            upstream_uri: None,
            member: None,
            _inflight: None,
            tried: Tried::default(),
            tries: 0,
            connect_failures: 0,
            retries: 0,
            retry_pending: false,
            retry_same_member: false,
            reported: false,
            upstream_started: None,
            upstream_elapsed: None,
            body_bytes: 0,
            error_code: None,
        }
    }

    /// Edge hygiene, before any plugin: spoofed identity headers out, request id in, limits.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<()> {
        mark_head_received();
        identity::strip(session.req_header_mut());

        let edge = &ctx.snapshot.edge;
        let req = session.req_header();
        ctx.plugin.request_id = match req.headers.get(request_id::HEADER) {
            Some(v) if request_id::is_valid(v.as_bytes()) => {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => request_id::generate(),
        };
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.trusted_peer = ctx.peer_ip.is_some_and(|ip| edge.is_trusted(ip));
        ctx.plugin.client_ip = forwarded::client_ip(ctx.peer_ip, req, edge);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.plugin.scheme = if tls { "https" } else { "http" };
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestState) -> Result<bool> {
        let snapshot = ctx.snapshot.clone();
        let edge = &snapshot.edge;
        let req = session.req_header();

        if req.raw_path().len() > edge.max_uri_bytes {
            let r = ctx.reject(414, errors::default_message(414));
            return reject(session, ctx, &r).await;
        }
        let (bytes, count) = head_size(req);
        if count > edge.max_headers || bytes > edge.max_header_bytes {
            let r = ctx.reject(431, errors::default_message(431));
            return reject(session, ctx, &r).await;
        }
        if let Some(len) = req.headers.get(http::header::CONTENT_LENGTH) {
            match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(n) if n > edge.max_body_bytes => {
                    let r = ctx.reject(413, errors::default_message(413));
                    return reject(session, ctx, &r).await;
                }
                Some(_) => {}
                None => {
                    let r = ctx.reject(400, "Invalid Content-Length");
                    return reject(session, ctx, &r).await;
                }
            }
        }

        let host = request_host(req);
        let route = match snapshot.router.find(&host, &req.method, req.uri.path()) {
            Match::Found(route) => route.clone(),
            Match::MethodNotAllowed(allowed) => {
                let mut r = ctx.reject(405, errors::default_message(405));
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    r.headers.push((http::header::ALLOW, v));
                }
                return reject(session, ctx, &r).await;
            }
            Match::NotFound => {
                let r = ctx.reject(404, errors::default_message(404));
                return reject(session, ctx, &r).await;
            }
        };
        ctx.upstream_uri = rewrite_uri(&route, req);
        ctx.plugin.route = route.name.clone();
        ctx.route = Some(route.clone());

        match route
            .pipeline
            .request_filter(session, &mut ctx.plugin)
            .await
        {
            Ok(Flow::Continue) => Ok(false),
            Ok(Flow::Reject(r)) => {
                ctx.error_code = Some(r.code);
                match (r.code, &r.label) {
                    ("rate_limited", Some(limit)) => self
                        .metrics
                        .rate_limited
                        .with_label_values(&[&*route.name, &**limit])
                        .inc(),
                    ("unauthorized" | "forbidden" | "upstream_unavailable", Some(reason)) => self
                        .metrics
                        .auth_failures
                        .with_label_values(&[&*route.name, &**reason])
                        .inc(),
                    _ => {}
                }
                reject(session, ctx, &r).await
            }
            Err(e) => {
                tracing::error!(route = %route.name, error = %e, "plugin failed");
                let r = ctx.reject(500, errors::default_message(500));
                reject(session, ctx, &r).await
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Err(Error::explain(ErrorType::HTTPStatus(404), "no route"));
        };
        let pool = &route.pool;
        let remaining = match pool.total_timeout {
            Some(total) => match total.checked_sub(ctx.started.elapsed()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => {
                    let mut e =
                        Error::explain(ErrorType::HTTPStatus(504), "total upstream timeout");
                    e.set_retry(false);
                    return Err(e);
                }
            },
            None => None,
        };
        if ctx.tries == 0 {
            pool.retry.on_request();
        }
        let same_ok = std::mem::take(&mut ctx.retry_same_member);
        let tried = &ctx.tried;
        let skip = |m: &Arc<Member>| !same_ok && tried.contains(m);
        let Some(member) = pool.select(session.req_header(), ctx.plugin.client_ip, &skip) else {
            let mut e = Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream member");
            e.set_retry(false);
            return Err(e);
        };
        ctx.tried.push(&member);
        ctx.tries += 1;
        ctx.reported = false;
        ctx.retry_pending = false;
        ctx._inflight = Some(member.start_request());
        let mut peer = Box::new(member.peer.clone());
        let per_try = match (remaining, pool.retry.per_try_timeout) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        };
        if let Some(limit) = per_try {
            let o = &mut peer.options;
            o.connection_timeout = o.connection_timeout.map(|t| t.min(limit));
            o.total_connection_timeout = o.total_connection_timeout.map(|t| t.min(limit));
            o.read_timeout = Some(o.read_timeout.map_or(limit, |t| t.min(limit)));
        }
        if session.is_upgrade_req() {
            // WebSocket: frames may be far apart; the per-read timeout must not cut them.
            peer.options.read_timeout = None;
            peer.options.set_http_version(1, 1);
        }
        ctx.member = Some(member);
        ctx.upstream_started = Some(Instant::now());
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestState,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        let Some(route) = ctx.route.clone() else {
            return e;
        };
        let pool = &route.pool;
        self.report(pool, ctx, false);
        let tried = &ctx.tried;
        if ctx.connect_failures <= pool.connect_retries && pool.has_other(&|m| tried.contains(m)) {
            // Nothing was sent: another member is safe for any method.
            let member = ctx
                .member
                .as_ref()
                .map(|m| m.address.as_str())
                .unwrap_or("");
            tracing::warn!(upstream = %pool.name, member, error = %e.root_cause(), "connect failed; trying another member");
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestState,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_pending) {
            e.set_retry(true);
            return e;
        }
        let Some(route) = ctx.route.clone() else {
            e.set_retry(false);
            return e;
        };
        let pool = &route.pool;
        let stale_pooled = client_reused
            && matches!(
                e.etype,
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
            && session.response_written().is_none();
        let replayable =
            is_idempotent(&session.req_header().method) && !session.retry_buffer_truncated();
        if session.response_written().is_some() || !replayable {
            // Never after response bytes went out; never a request that cannot be replayed.
            if !ctx.reported {
                self.report(pool, ctx, false);
            }
            e.set_retry(false);
        } else if stale_pooled {
            // A pooled connection the member had closed: not the member's fault.
            ctx.retry_same_member = true;
            e.set_retry(true);
        } else {
            if !ctx.reported {
                self.report(pool, ctx, false);
            }
            let timeout = matches!(e.etype, ErrorType::ReadTimedout | ErrorType::WriteTimedout);
            let wanted = if timeout {
                pool.retry.on_timeout
            } else {
                pool.retry.on_reset
            };
            e.set_retry(wanted && self.take_retry(pool, ctx));
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestState,
    ) -> Result<()> {
        if let Some(uri) = &ctx.upstream_uri {
            upstream.set_uri(uri.clone());
        }
        forwarded::apply(upstream, ctx.peer_ip, ctx.trusted_peer, ctx.plugin.scheme)?;
        upstream.insert_header(request_id::HEADER, ctx.plugin.request_id.as_str())?;
        if let Some(id) = &ctx.plugin.identity {
            upstream.insert_header(identity::X_USER_ID, id.user_id.as_str())?;
            if !id.roles.is_empty() {
                upstream.insert_header(identity::X_USER_ROLES, id.roles.join(","))?;
            }
            upstream.insert_header(identity::X_AUTH_METHOD, id.method)?;
            for (name, value) in &id.headers {
                upstream.insert_header(name.clone(), value.clone())?;
            }
        }
        if let Some(route) = &ctx.route {
            route
                .pipeline
                .upstream_request_filter(session, upstream, &ctx.plugin)
                .map_err(|e| Error::because(ErrorType::InternalError, "plugin failed", e))?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestState,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > ctx.snapshot.edge.max_body_bytes {
                ctx.error_code = Some(errors::code_for(413));
                let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body too large");
                e.set_retry(false);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestState,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|t| t.elapsed());
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        let pool = &route.pool;
        let status = upstream_response.status.as_u16();
        let failed = pool
            .passive
            .as_ref()
            .is_some_and(|p| p.is_failure_status(status));
        self.report(pool, ctx, !failed);
        if matches!(status, 502..=504)
            && pool.retry.on_5xx
            && is_idempotent(&session.req_header().method)
            && !session.retry_buffer_truncated()
            && self.take_retry(pool, ctx)
        {
            ctx.retry_pending = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "upstream answered with a retryable status",
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestState,
    ) -> Result<()> {
        response.insert_header(request_id::HEADER, ctx.plugin.request_id.as_str())?;
        for (name, value) in std::mem::take(&mut ctx.plugin.response_headers) {
            response.append_header(name, value)?;
        }
        if let Some(route) = &ctx.route {
            route
                .pipeline
                .response_filter(session, response, &ctx.plugin)
                .map_err(|e| Error::because(ErrorType::InternalError, "plugin failed", e))?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestState,
    ) -> FailToProxy {
        let status = errors::status_for(e);
        if status == 0 || session.response_written().is_some() {
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        if status >= 500 {
            let upstream = ctx.route.as_ref().map(|r| r.pool.name.clone());
            tracing::warn!(request_id = %ctx.plugin.request_id, upstream = ?upstream, status, error = %e, "proxying failed");
        }
        let message: Cow<'static, str> = Cow::Borrowed(errors::default_message(status));
        let r = ctx.reject(status, message);
        // After a proxying failure Pingora does not reuse the client connection, so say so.
        let p = &ctx.plugin;
        if let Err(write_err) =
            errors::respond(session, &r, &p.request_id, &p.response_headers, true).await
        {
            tracing::debug!(error = %write_err, "could not write the error response");
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestState, error: &Error) -> bool {
        // Client disconnects and rejected bodies are normal at an edge; the access log has them.
        error.esource == pingora::ErrorSource::Downstream
            || matches!(error.etype, ErrorType::HTTPStatus(_))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestState) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or_else(|| e.map(errors::status_for).unwrap_or(0));
        let elapsed = ctx.started.elapsed();
        let route_name: &str = ctx.route.as_ref().map_or("", |r| &r.name);
        let req = session.req_header();
        let method = method_label(&req.method);
        let mut status_buf = itoa_status(status);
        let status_label = status_str(&mut status_buf);
        self.metrics
            .requests
            .with_label_values(&[route_name, method, status_label])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route_name])
            .observe(elapsed.as_secs_f64());
        if let (Some(route), Some(up)) = (&ctx.route, ctx.upstream_elapsed) {
            self.metrics
                .upstream_duration
                .with_label_values(&[&route.pool.name])
                .observe(up.as_secs_f64());
        }
        if let Some(route) = &ctx.route {
            route.pipeline.logging(session, &ctx.plugin);
        }
        if !ctx.reported {
            if let Some(m) = &ctx.member {
                m.release_probe();
            }
        }
        if let Some(log) = &self.access_log {
            log.write(access_line(session, ctx, status, elapsed));
        }
    }
}

impl Gateway {
    /// Sends the current try's outcome to passive health, once per try.
    fn report(&self, pool: &Pool, ctx: &mut RequestState, ok: bool) {
        if std::mem::replace(&mut ctx.reported, true) {
            return;
        }
        let Some(member) = &ctx.member else { return };
        match pool.report(member, ok) {
            Transition::None => {}
            Transition::Ejected(period) => {
                tracing::warn!(upstream = %pool.name, member = %member.address, seconds = period.as_secs_f64(), "member ejected by passive health");
                self.metrics
                    .circuit_open
                    .with_label_values(&[&*pool.name, member.address.as_str()])
                    .set(1);
                self.metrics.update_members(pool);
            }
            Transition::Closed => {
                tracing::info!(upstream = %pool.name, member = %member.address, "member passed its half-open probe");
                self.metrics
                    .circuit_open
                    .with_label_values(&[&*pool.name, member.address.as_str()])
                    .set(0);
                self.metrics.update_members(pool);
            }
        }
    }

    /// Whether another try is allowed: attempts left, another member to try, budget left.
    fn take_retry(&self, pool: &Pool, ctx: &mut RequestState) -> bool {
        let tried = &ctx.tried;
        if ctx.retries >= pool.retry.attempts || !pool.has_other(&|m| tried.contains(m)) {
            return false;
        }
        if !pool.retry.take_retry() {
            tracing::debug!(upstream = %pool.name, "retry budget exhausted");
            return false;
        }
        ctx.retries += 1;
        true
    }
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

fn status_str(buf: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buf).unwrap_or("000")
}

/// The path (and query) to send upstream after `strip_prefix` / `rewrite`; `None` when unchanged.
fn rewrite_uri(route: &Route, req: &RequestHeader) -> Option<http::Uri> {
    let path = req.uri.path();
    let new_path: Cow<'_, str> = if let Some(prefix) = &route.strip_prefix {
        let rest = path.get(prefix.len()..).unwrap_or("");
        if rest.starts_with('/') {
            Cow::Borrowed(rest)
        } else {
            Cow::Owned(format!("/{rest}"))
        }
    } else if let Some((re, replacement)) = &route.rewrite {
        match re.replace(path, replacement.as_str()) {
            Cow::Borrowed(_) => return None,
            Cow::Owned(p) => Cow::Owned(p),
        }
    } else {
        return None;
    };
    let pq = match req.uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.into_owned(),
    };
    http::Uri::builder().path_and_query(pq).build().ok()
}

fn access_line(session: &Session, ctx: &RequestState, status: u16, elapsed: Duration) -> String {
    use errors::json_string as js;
    use std::fmt::Write;
    let req = session.req_header();
    let mut out = String::with_capacity(384);
    out.push_str("{\"ts\":");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let _ = write!(out, "{}.{:03}", now.as_secs(), now.subsec_millis());
    out.push_str(",\"request_id\":");
    js(&mut out, &ctx.plugin.request_id);
    out.push_str(",\"client_ip\":");
    match ctx.plugin.client_ip {
        Some(ip) => js(&mut out, &ip.to_string()),
        None => out.push_str("null"),
    }
    out.push_str(",\"method\":");
    js(&mut out, req.method.as_str());
    out.push_str(",\"host\":");
    js(&mut out, &request_host(req));
    out.push_str(",\"path\":");
    js(&mut out, req.uri.path());
    let _ = write!(out, ",\"status\":{status}");
    let _ = write!(
        out,
        ",\"duration_ms\":{:.3}",
        elapsed.as_secs_f64() * 1000.0
    );
    out.push_str(",\"route\":");
    match &ctx.route {
        Some(r) => js(&mut out, &r.name),
        None => out.push_str("null"),
    }
    out.push_str(",\"upstream\":");
    match &ctx.route {
        Some(r) if ctx.member.is_some() => js(&mut out, &r.pool.name),
        _ => out.push_str("null"),
    }
    out.push_str(",\"member\":");
    match &ctx.member {
        Some(m) => js(&mut out, &m.address),
        None => out.push_str("null"),
    }
    if let Some(up) = ctx.upstream_elapsed {
        let _ = write!(out, ",\"upstream_ms\":{:.3}", up.as_secs_f64() * 1000.0);
    }
    if let Some(code) = ctx.error_code {
        out.push_str(",\"error\":");
        js(&mut out, code);
    }
    if let Some(id) = &ctx.plugin.identity {
        out.push_str(",\"user_id\":");
        js(&mut out, &id.user_id);
    }
    let _ = write!(out, ",\"bytes_in\":{}", ctx.body_bytes);
    out.push_str(",\"user_agent\":");
    match req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        Some(ua) => js(&mut out, ua),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}
