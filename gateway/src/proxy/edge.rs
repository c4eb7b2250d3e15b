//! The connection loop in front of Pingora's HTTP/1 handling. It adds what Pingora lacks at
//! an edge:
//! - a deadline for receiving the whole request head, counted from its first byte (Pingora
//!   only bounds each read, so a client trickling a byte at a time could hold a connection
//!   forever);
//! - idle waiting outside the request machinery: between requests a connection waits here
//!   until its socket is readable, reading nothing and so holding no read buffer, instead of
//!   inside Pingora's request future (tens of KiB each): about 4 KiB per idle keep-alive
//!   client in all (see docs/performance.md);
//! - the configured idle keep-alive timeout and per-connection request limit, read from the
//!   live snapshot so they hot-reload;
//! - on termination, idle connections close at once (see `crate::drain`).
//!
//! HTTP/2 connections go to Pingora unchanged.

use super::connection_timer::ConnectionTimer;
use super::Gateway;
use crate::drain::Drain;
use crate::snapshot::SnapshotStore;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::error_resp::ErrorResponder;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

tokio::task_local! {
    static HEAD_RECEIVED: Cell<bool>;
}

/// Called by the proxy once a request head has been parsed.
pub fn mark_head_received() {
    let _ = HEAD_RECEIVED.try_with(|c| c.set(true));
}

/// Counts a connection on its listener's gauge while it is open.
struct OpenOnListener<'a>(&'a IntGauge);

impl<'a> OpenOnListener<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        OpenOnListener(gauge)
    }
}

impl Drop for OpenOnListener<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    store: SnapshotStore,
    drain: Arc<Drain>,
    h2c: bool,
    /// `portico_open_connections` of each listener this app serves, by local port.
    open_by_port: Vec<(u16, IntGauge)>,
    /// Writes the answers a session makes before the request path runs (a head that does
    /// not parse), with the JSON error body.
    error_responder: ErrorResponder,
}

impl EdgeApp {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        store: SnapshotStore,
        drain: Arc<Drain>,
        h2c: bool,
        open_by_port: Vec<(u16, IntGauge)>,
    ) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            store,
            drain,
            h2c,
            open_by_port,
            error_responder: Arc::new(super::errors::session_error_response),
        }
    }

    fn listener_gauge(&self, stream: &Stream) -> Option<&IntGauge> {
        let port = stream.get_socket_digest()?.local_addr()?.as_inet()?.port();
        self.open_by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, g)| g)
    }

    async fn is_h2(&self, stream: &mut Stream) -> bool {
        if stream.get_ssl_digest().is_some() {
            return matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        }
        if !self.h2c {
            return false;
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        matches!(stream.try_peek(&mut buf).await, Ok(true)) && buf == H2_PREFACE
    }
}

/// How a request's session starts: fresh on a new connection, or with the settings the
/// previous request on the connection left.
enum Start {
    New {
        keepalive: Option<u64>,
        reuses: Option<u32>,
    },
    Reused(Option<HttpPersistentSettings>),
}

/// How a connection waits for a request head.
#[derive(Clone, Copy)]
struct HeadWait {
    /// From the head's first byte to its end.
    deadline: Duration,
    /// The stream waits for its next request inside Pingora (TLS), so a termination must
    /// end that wait too.
    waits_inside: bool,
}

/// Runs one request on a connection. Before the head is complete, the deadline applies;
/// once it is, the request may take as long as its own timeouts allow. A stream that waits
/// for its next request inside Pingora is closed when a termination begins before its head
/// has arrived: it may be idle, and nothing tells idle from slow.
async fn serve_one<T: Future<Output = ()>>(
    app: &EdgeApp,
    stream: Stream,
    start: Start,
    shutdown: &ShutdownWatch,
    timer: &mut ConnectionTimer<'_, T>,
    head: HeadWait,
) -> Option<ReusedHttpStream> {
    let mut session = ServerSession::new_http1(stream);
    session.set_error_responder(app.error_responder.clone());
    match start {
        Start::New { keepalive, reuses } => {
            session.set_keepalive(keepalive);
            session.set_keepalive_reuses_remaining(reuses);
        }
        Start::Reused(Some(settings)) => settings.apply_to_session(&mut session),
        Start::Reused(None) => {}
    }
    HEAD_RECEIVED
        .scope(Cell::new(false), async move {
            let serve = app.proxy.process_new_http(session, shutdown);
            tokio::pin!(serve);
            timer.set_deadline(head.deadline);
            let served = std::future::poll_fn(|cx| {
                if let Poll::Ready(done) = serve.as_mut().poll(cx) {
                    return Poll::Ready(Some(done));
                }
                if timer.poll_deadline(cx).is_ready()
                    || (head.waits_inside && timer.poll_terminated(cx).is_ready())
                {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            if let Some(done) = served {
                return done;
            }
            if HEAD_RECEIVED.with(Cell::get) {
                serve.await
            } else {
                tracing::debug!("closing a connection that did not send its request head in time");
                None
            }
        })
        .await
}

/// Waits until the client sends the first byte of a request, or `idle` passes, or a
/// termination begins. Nothing is read here, so no buffer is held while waiting. Streams
/// that cannot wait this way (TLS) return at once and wait inside Pingora instead.
async fn wait_for_request<T: Future<Output = ()>>(
    stream: &mut Stream,
    idle: Duration,
    timer: &mut ConnectionTimer<'_, T>,
) -> bool {
    timer.set_deadline(idle);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
            return Poll::Ready(ready.is_ok());
        }
        if timer.poll_deadline(cx).is_ready() || timer.poll_terminated(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.drain.track();
        let _counted = self.listener_gauge(&stream).map(OpenOnListener::new);
        if self.is_h2(&mut stream).await {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let (head, idle, reuses) = {
            let snapshot = self.store.load();
            let e = &snapshot.edge;
            let head = HeadWait {
                deadline: e.request_header_timeout,
                waits_inside: stream.get_ssl_digest().is_some(),
            };
            (head, e.keepalive_timeout, e.keepalive_reuses)
        };
        // A new connection must start its request within the head deadline.
        let terminated = self.drain.terminated(shutdown);
        tokio::pin!(terminated);
        let mut timer = ConnectionTimer::new(head.deadline, terminated, shutdown);
        if !wait_for_request(&mut stream, head.deadline, &mut timer).await {
            return None;
        }
        let keepalive = if *shutdown.borrow() {
            None
        } else {
            Some(idle.as_secs().max(1))
        };
        let mut start = Start::New { keepalive, reuses };
        loop {
            // Boxed: the request machinery is large, and this future stays allocated for as
            // long as the connection is open, idle time included; the box is freed between
            // requests. Allocated before the future is made, so it is built in place rather
            // than on the stack and copied.
            let slot = Box::new_uninit();
            let serving = Box::write(
                slot,
                serve_one(self, stream, start, shutdown, &mut timer, head),
            );
            let reused = Box::into_pin(serving).await?;
            let (next, settings) = reused.consume();
            stream = next;
            if !wait_for_request(&mut stream, idle, &mut timer).await {
                return None;
            }
            start = Start::Reused(settings);
        }
    }

    /// Called when the listener stops accepting (shutdown, or the old process of a binary
    /// upgrade). Pingora's proxy would here abort every session waiting in `read_request`,
    /// which is meant for idle keep-alive connections but also drops a connection whose
    /// request is still arriving: it was accepted a moment ago, its client is sending, and it
    /// got no answer (seen as resets in the upgrade test). Idle connections wait in this app
    /// instead (`wait_for_request`), so nothing is aborted: during the drain every request
    /// that arrives is served, with `Connection: close`, and idle connections end with their
    /// keep-alive timeout or the grace period (at once on termination).
    async fn cleanup(&self) {}
}
