//! The request path: one `ProxyHttp` implementation that reads top to bottom through
//! Pingora's phases and delegates route-specific work to the route's plugin pipeline.

mod connection_timer;
mod edge;
pub mod errors;
mod forwarded;
mod grpc;
pub mod identity;
mod request;
pub mod request_id;

pub use edge::{mark_head_received, EdgeApp};

use crate::access_log::{AccessLog, AccessRecord};
use crate::metrics::Metrics;
use crate::otel::{RequestTrace, Tracing};
use crate::router::Match;
use crate::snapshot::{Route, Snapshot, SnapshotStore};
use crate::upstream::{is_idempotent, Attempts, KeySource, Member, Pool, ProxyFailure, Transition};
use bytes::Bytes;
use http::{HeaderValue, Method};
use opentelemetry::context::FutureExt as _;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session, UpstreamPeer};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::poll_clock;
use pingora::{Error, ErrorType, Result};
use portico_plugins::{ErrorCode, Flow, Rejection, RequestContext, RequestId};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

static NO_ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

pub struct Gateway {
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    access_log: Option<AccessLog>,
    tracing: Option<Arc<Tracing>>,
    /// The series of requests no route matched.
    no_route: crate::metrics::RouteSeries,
}

impl Gateway {
    pub fn new(
        store: SnapshotStore,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        tracing: Option<Arc<Tracing>>,
    ) -> Self {
        Gateway {
            no_route: metrics.route_series("", None),
            store,
            metrics,
            access_log,
            tracing,
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
    attempts: Attempts,
    body_bytes: u64,
    /// The error code of a response the gateway produced itself.
    error_code: Option<ErrorCode>,
    /// The request's spans, when traces are exported.
    trace: Option<RequestTrace>,
    /// A gRPC call: the gateway's own answers are gRPC statuses.
    grpc: bool,
    /// The gRPC call's deadline (`grpc-timeout`).
    deadline: Option<Instant>,
}

/// The matched route's pool, when the route has one. Borrowed from the route field alone, so
/// a phase can update the request's other fields (its attempts) while it holds the pool: a
/// clone of the `Arc` would cost two atomic operations per phase that asks.
fn pool_of(route: &Option<Arc<Route>>) -> Option<&Pool> {
    route.as_ref()?.pool.as_deref()
}

impl RequestState {
    fn reject(&mut self, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Rejection {
        self.error_code = Some(code);
        Rejection::new(code, message)
    }

    /// A rejection with the code's default message.
    fn refuse(&mut self, code: ErrorCode) -> Rejection {
        self.reject(code, code.default_message())
    }

    /// Whether the request can be sent again: idempotent, and its body still buffered.
    fn replayable(session: &Session) -> bool {
        is_idempotent(&session.req_header().method) && !session.retry_buffer_truncated()
    }
}

async fn reject(session: &mut Session, ctx: &RequestState, r: &Rejection) -> Result<bool> {
    write_error(session, ctx, r, false).await?;
    Ok(true)
}

/// The gateway's answer to a request it refuses: the JSON error body, or for a gRPC call a
/// gRPC status.
async fn write_error(
    session: &mut Session,
    ctx: &RequestState,
    r: &Rejection,
    close: bool,
) -> Result<()> {
    if ctx.grpc {
        let header = grpc::answer(r, &ctx.plugin.request_id)?;
        return answer(session, ctx, header, None, close).await;
    }
    let (header, body) = errors::error_answer(r, &ctx.plugin.request_id)?;
    answer(session, ctx, header, Some(body), close).await
}

/// Writes an answer the gateway makes itself. The plugins' response headers and the response
/// hooks of the route (or, with no route, of the global plugins) apply to it as to a proxied
/// response: CORS and security headers are on a 401 too.
async fn answer(
    session: &mut Session,
    ctx: &RequestState,
    mut header: ResponseHeader,
    body: Option<Bytes>,
    close: bool,
) -> Result<()> {
    add_plugin_headers(&mut header, &ctx.plugin.response_headers)?;
    let pipeline = ctx
        .route
        .as_ref()
        .map_or(&ctx.snapshot.global, |r| &r.pipeline);
    if let Err(e) = pipeline.response_filter(session, &mut header, &ctx.plugin) {
        tracing::warn!(request_id = %ctx.plugin.request_id, error = %e, "a response hook failed on a gateway answer");
    }
    errors::write(session, header, body, close).await
}

/// Headers plugins set for the response: they replace what the upstream said, but `Vary`,
/// which lists what the answer depends on, is added to.
fn add_plugin_headers(
    header: &mut ResponseHeader,
    headers: &[(http::HeaderName, HeaderValue)],
) -> Result<()> {
    for (name, value) in headers {
        if name == http::header::VARY {
            header.append_header(name.clone(), value.clone())?;
        } else {
            header.insert_header(name.clone(), value.clone())?;
        }
    }
    Ok(())
}

/// Answers with what a plugin decided, or lets the request go on.
async fn decided(
    session: &mut Session,
    ctx: &mut RequestState,
    metrics: &Metrics,
    flow: std::result::Result<Flow, portico_plugins::PluginError>,
) -> Result<bool> {
    match flow {
        Ok(Flow::Continue) => Ok(false),
        Ok(Flow::Reject(r)) => {
            ctx.error_code = Some(r.code);
            metrics.record_rejection(&ctx.plugin.route, &r);
            reject(session, ctx, &r).await
        }
        Ok(Flow::Respond(a)) => {
            let (header, body) = errors::plugin_answer(&a, &ctx.plugin.request_id)?;
            answer(session, ctx, header, Some(body), false).await?;
            Ok(true)
        }
        Err(e) => {
            tracing::error!(route = %ctx.plugin.route, error = %e, "plugin failed");
            let r = ctx.refuse(ErrorCode::InternalError);
            reject(session, ctx, &r).await
        }
    }
}

impl ProxyHttp for Gateway {
    type CTX = RequestState;

    fn new_ctx(&self) -> RequestState {
        RequestState {
            snapshot: self.store.load_full(),
            route: None,
            plugin: RequestContext {
                request_id: RequestId::default(),
                client_ip: None,
                scheme: "http",
                route: NO_ROUTE.clone(),
                identity: None,
                response_headers: Vec::new(),
                captured_body: None,
                rate_limit: None,
            },
            // The poll's clock reading: on a plain HTTP/1 connection, the one its head
            // deadline was set from when the head's first bytes arrived (nginx's
            // `$request_time` counts from there too).
            started: poll_clock::recent(),
            peer_ip: None,
            trusted_peer: false,
            upstream_uri: None,
            attempts: Attempts::default(),
            body_bytes: 0,
            error_code: None,
            trace: None,
            grpc: false,
            deadline: None,
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
        ctx.plugin.request_id = request_id::of(req);
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.trusted_peer = ctx.peer_ip.is_some_and(|ip| edge.is_trusted(ip));
        ctx.plugin.client_ip = forwarded::client_ip(ctx.peer_ip, req, edge);
        ctx.grpc = grpc::is_grpc(req);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.plugin.scheme = if tls { "https" } else { "http" };
        if let Some(t) = &self.tracing {
            let trace = RequestTrace::start(
                t,
                crate::otel::Incoming {
                    request: req,
                    scheme: ctx.plugin.scheme,
                    protocol: protocol(req.version),
                    client_ip: ctx.plugin.client_ip,
                    host: request::host,
                },
            );
            ctx.trace = Some(trace);
        }
        Ok(())
    }

    // The snapshot and the route are borrowed from `ctx` field by field, not cloned out of it:
    // each `Arc` clone is two atomic operations per request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestState) -> Result<bool> {
        let req = session.req_header();

        let checked = match request::exceeded_limit(req, &ctx.snapshot.edge) {
            Some(refused) => Err(refused),
            None => request::checked_host(req).map_err(|m| (ErrorCode::BadRequest, m)),
        };
        let host = match checked {
            Ok(host) => host,
            Err((code, message)) => {
                let r = ctx.reject(code, message);
                return reject(session, ctx, &r).await;
            }
        };
        // A CORS preflight is routed as the request it asks about, so it reaches the route
        // (and the `cors` plugin) that request would.
        let preflight = portico_plugins::cors::is_preflight(req)
            .then(|| req.headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD))
            .flatten()
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let method = preflight.as_ref().unwrap_or(&req.method);
        let route = match ctx.snapshot.router.find(&host, method, req.uri.path()) {
            Match::Found(route) => route.clone(),
            Match::MethodNotAllowed(allowed) => {
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                let allow = HeaderValue::from_str(&list.join(", "));
                let mut r = ctx.refuse(ErrorCode::MethodNotAllowed);
                if let Ok(v) = allow {
                    r.headers.push((http::header::ALLOW, v));
                }
                return reject(session, ctx, &r).await;
            }
            Match::NotFound => {
                // The global plugins still apply: IP rules, CORS, redirects.
                let flow = ctx
                    .snapshot
                    .global
                    .early_request_filter(session, &mut ctx.plugin);
                if decided(session, ctx, &self.metrics, flow).await? {
                    return Ok(true);
                }
                let r = ctx.refuse(ErrorCode::RouteNotFound);
                return reject(session, ctx, &r).await;
            }
        };
        ctx.upstream_uri = request::upstream_uri(&route, req);
        if ctx.grpc {
            ctx.deadline = grpc::timeout(req).map(|t| ctx.started + t);
        }
        if let Some(compression) = &route.compression {
            crate::compression::CompressionModule::enable_for(session, compression);
        }
        ctx.plugin.route = route.name.clone();
        let route: &Route = ctx.route.insert(route);

        // Plugins' own spans (an auth lookup, a Redis call) find their parent as the current
        // context while their future runs.
        let flow = match ctx.trace.as_ref().and_then(RequestTrace::sampled_context) {
            Some(cx) => {
                route
                    .pipeline
                    .request_filter(session, &mut ctx.plugin)
                    .with_context(cx)
                    .await
            }
            None => {
                route
                    .pipeline
                    .request_filter(session, &mut ctx.plugin)
                    .await
            }
        };
        decided(session, ctx, &self.metrics, flow).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestState,
    ) -> Result<UpstreamPeer> {
        let Some(pool) = pool_of(&ctx.route) else {
            return Err(Error::explain(ErrorType::HTTPStatus(404), "no upstream"));
        };
        let final_error = |status: u16, why: &'static str| {
            let mut e = Error::explain(ErrorType::HTTPStatus(status), why);
            e.set_retry(false);
            Err(e)
        };
        let Some(mut remaining) = pool.remaining(ctx.started) else {
            return final_error(504, "total upstream timeout");
        };
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return final_error(504, "the gRPC deadline passed");
            }
            remaining = Some(remaining.map_or(left, |r| r.min(left)));
        }
        let req = session.req_header();
        let Some(member) = ctx.attempts.pick(
            pool,
            req,
            KeySource {
                client_ip: ctx.plugin.client_ip,
                identity: ctx.plugin.identity.as_ref(),
            },
        ) else {
            return final_error(503, "no healthy upstream member");
        };
        if let (Some(t), Some(trace)) = (&self.tracing, &mut ctx.trace) {
            trace.start_attempt(t, req.method.as_str(), &pool.name, member.addr);
        }
        Ok(pool.peer_for_try(&member, remaining, session.is_upgrade_req()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestState,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(pool) = pool_of(&ctx.route) else {
            return e;
        };
        if let Some(trace) = &mut ctx.trace {
            trace.end_attempt(Some(e.etype.as_str()));
        }
        let verdict = ctx.attempts.on_connect_failure(pool);
        self.note(pool, ctx.attempts.member(), verdict.transition);
        if verdict.retry {
            let member = ctx.attempts.member().map_or("", |m| m.address.as_str());
            tracing::warn!(upstream = %pool.name, member, error = %e.root_cause(), "connect failed; trying another member");
        }
        e.set_retry(verdict.retry);
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
        if let Some(trace) = &mut ctx.trace {
            trace.end_attempt(Some(e.etype.as_str()));
        }
        let Some(pool) = pool_of(&ctx.route) else {
            e.set_retry(false);
            return e;
        };
        let stale_pooled = client_reused
            && matches!(
                e.etype,
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
            && session.response_written().is_none();
        let failure = if stale_pooled {
            ProxyFailure::StalePooled
        } else if matches!(e.etype, ErrorType::ReadTimedout | ErrorType::WriteTimedout) {
            ProxyFailure::Timeout
        } else {
            ProxyFailure::Reset
        };
        let verdict = ctx.attempts.on_proxy_failure(
            pool,
            failure,
            session.response_written().is_some(),
            RequestState::replayable(session),
        );
        self.note(pool, ctx.attempts.member(), verdict.transition);
        e.set_retry(verdict.retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestState,
    ) -> Result<()> {
        // A reused connection took no connect; the clock is read only for a new one.
        if reused {
            return Ok(());
        }
        if let (Some(pool), Some(took)) = (pool_of(&ctx.route), ctx.attempts.since_try_started()) {
            self.metrics
                .upstream_connect
                .with_label_values(&[&pool.name])
                .observe(took.as_secs_f64());
        }
        Ok(())
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
        upstream.insert_header(
            request_id::HEADER,
            ctx.plugin.request_id.header_value().clone(),
        )?;
        if let Some(trace) = &ctx.trace {
            trace.inject(upstream);
        }
        if let Some(route) = &ctx.route {
            if let Some(id) = &ctx.plugin.identity {
                identity::apply(upstream, id, route.pipeline.forwards_credentials())?;
            }
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
                ctx.error_code = Some(ErrorCode::PayloadTooLarge);
                let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body too large");
                e.set_retry(false);
                return Err(e);
            }
            if let Some(captured) = &mut ctx.plugin.captured_body {
                let room = portico_plugins::CAPTURED_BODY_LIMIT.saturating_sub(captured.len());
                captured.extend_from_slice(&b[..b.len().min(room)]);
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
        if session.req_header().version < http::Version::HTTP_2 {
            // A proxy answers with its own version, whatever the upstream spoke (RFC 9110 §2.5).
            upstream_response.set_version(http::Version::HTTP_11);
        }
        let Some(pool) = pool_of(&ctx.route) else {
            return Ok(());
        };
        let status = upstream_response.status.as_u16();
        if let Some(trace) = &mut ctx.trace {
            trace.attempt_answered(status);
        }
        let verdict = ctx
            .attempts
            .on_response(pool, status, RequestState::replayable(session));
        self.note(pool, ctx.attempts.member(), verdict.transition);
        if verdict.retry {
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
        response.insert_header(
            request_id::HEADER,
            ctx.plugin.request_id.header_value().clone(),
        )?;
        add_plugin_headers(response, &ctx.plugin.response_headers)?;
        if let Some(route) = &ctx.route {
            route
                .pipeline
                .response_filter(session, response, &ctx.plugin)
                .map_err(|e| Error::because(ErrorType::InternalError, "plugin failed", e))?;
        }
        Ok(())
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // No module on every request (Pingora's default adds its own, disabled, compression
        // module): a route that compresses adds one to its requests
        // (`CompressionModule::enable_for`).
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestState,
    ) -> FailToProxy {
        let status = errors::status_for(e);
        // After a proxying failure Pingora does not reuse the client connection.
        let failed = FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        };
        if status == 0 || session.response_written().is_some() {
            return failed;
        }
        if status >= 500 {
            let upstream = pool_of(&ctx.route).map(|p| &*p.name);
            tracing::warn!(request_id = %ctx.plugin.request_id, upstream = ?upstream, status, error = %e, "proxying failed");
        }
        let r = ctx.refuse(ErrorCode::for_status(status));
        let written = write_error(session, ctx, &r, true).await;
        if let Err(write_err) = written {
            tracing::debug!(error = %write_err, "could not write the error response");
        }
        failed
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestState, error: &Error) -> bool {
        // Client disconnects and rejected bodies are normal at an edge; the access log has them.
        error.esource == pingora::ErrorSource::Downstream
            || matches!(error.etype, ErrorType::HTTPStatus(_))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestState) {
        let status = match (session.response_written(), e) {
            (Some(r), _) => r.status.as_u16(),
            // The client went away before an answer (nginx's 499).
            (None, Some(e)) if e.esource == pingora::ErrorSource::Downstream => CLIENT_CLOSED,
            (None, e) => e.map(errors::status_for).unwrap_or(0),
        };
        // Read rather than the poll's reading: this is the time the log reports.
        let elapsed = poll_clock::read().saturating_duration_since(ctx.started);
        let route = ctx.route.as_deref();
        let req = session.req_header();
        let upstream_elapsed = ctx.attempts.upstream_elapsed();
        let pool = pool_of(&ctx.route);
        let bytes = (ctx.body_bytes, session.body_bytes_sent() as u64);
        let series = match route {
            Some(r) => r
                .series
                .get_or_init(|| self.metrics.route_series(&r.name, pool.map(|p| &*p.name))),
            None => &self.no_route,
        };
        self.metrics.record_request(
            series,
            &req.method,
            status,
            elapsed,
            upstream_elapsed,
            bytes,
        );
        if let Some(route) = route {
            route.pipeline.logging(session, &ctx.plugin);
        }
        ctx.attempts.finish();
        let trace_ids = ctx.trace.as_ref().map(RequestTrace::ids);
        if let (Some(t), Some(trace)) = (&self.tracing, ctx.trace.take()) {
            trace.finish(
                t,
                req.method.as_str(),
                crate::otel::Outcome {
                    route: route.map(|r| &*r.name),
                    status,
                    user_id: ctx.plugin.identity.as_ref().map(|i| i.user_id.as_str()),
                    error: ctx.error_code.map(ErrorCode::as_str),
                },
            );
        }
        let Some(log) = &self.access_log else {
            return;
        };
        let req = session.req_header();
        let member = ctx.attempts.member();
        let record = AccessRecord {
            request_id: &ctx.plugin.request_id,
            client_ip: ctx.plugin.client_ip,
            method: req.method.as_str(),
            host: &request::host(req),
            path: req.uri.path(),
            status,
            duration: elapsed,
            route: route.map(|r| &r.log_name),
            upstream: pool.zip(member).map(|(p, m)| (&p.log_name, &m.log_address)),
            upstream_duration: upstream_elapsed,
            error: ctx.error_code,
            user_id: ctx.plugin.identity.as_ref().map(|i| i.user_id.as_str()),
            bytes_in: ctx.body_bytes,
            bytes_out: bytes.1,
            protocol: protocol(req.version),
            referer: req
                .headers
                .get(http::header::REFERER)
                .and_then(|v| v.to_str().ok()),
            auth_method: ctx.plugin.identity.as_ref().map(|i| i.method),
            user_agent: req
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            trace: trace_ids,
            rate_limit: ctx.plugin.rate_limit.map(|o| o.as_str()),
        };
        log.write(record.to_json_line());
    }
}

/// The status logged for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl Gateway {
    /// Logs and publishes what a try's outcome did to its member's circuit.
    fn note(&self, pool: &Pool, member: Option<&Arc<Member>>, transition: Transition) {
        let Some(member) = member else { return };
        match transition {
            Transition::None => return,
            Transition::Ejected(period) => {
                tracing::warn!(upstream = %pool.name, member = %member.address, seconds = period.as_secs_f64(), "member ejected by passive health");
            }
            Transition::Closed => {
                tracing::info!(upstream = %pool.name, member = %member.address, "member passed its half-open probe");
            }
        }
        self.metrics.update_members(pool);
    }
}
