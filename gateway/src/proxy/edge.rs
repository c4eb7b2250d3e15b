//! The connection loop in front of Pingora's HTTP/1 handling. It adds what Pingora lacks at
//! an edge:
//! - a deadline for receiving the whole request head, counted from its first byte (Pingora
//!   only bounds each read, so a client trickling a byte at a time could hold a connection
//!   forever);
//! - idle waiting outside the request machinery: between requests a connection waits for the
//!   next byte here, holding a few hundred bytes, instead of inside Pingora's request future
//!   (tens of KiB each), so 10k idle keep-alive clients cost little memory;
//! - the configured idle keep-alive timeout and per-connection request limit, read from the
//!   live snapshot so they hot-reload.
//!
//! HTTP/2 connections go to Pingora unchanged.

use super::Gateway;
use crate::snapshot::SnapshotStore;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

tokio::task_local! {
    static HEAD_RECEIVED: Cell<bool>;
}

/// Called by the proxy once a request head has been parsed.
pub fn mark_head_received() {
    let _ = HEAD_RECEIVED.try_with(|c| c.set(true));
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    store: SnapshotStore,
    h2c: bool,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<Gateway>, store: SnapshotStore, h2c: bool) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            store,
            h2c,
        }
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

/// Runs one request on a connection. Before the head is complete, the deadline applies;
/// once it is, the request may take as long as its own timeouts allow.
async fn serve_one(
    proxy: &Arc<HttpProxy<Gateway>>,
    session: ServerSession,
    shutdown: &ShutdownWatch,
    deadline: Duration,
) -> Option<pingora::apps::ReusedHttpStream> {
    HEAD_RECEIVED
        .scope(Cell::new(false), async move {
            let serve = proxy.process_new_http(session, shutdown);
            tokio::pin!(serve);
            let timer = tokio::time::sleep(deadline);
            tokio::pin!(timer);
            tokio::select! {
                biased;
                done = &mut serve => return done,
                _ = &mut timer => {}
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

/// Waits until the client sends the first byte of a request, or `idle` passes. Streams that
/// cannot peek (TLS) return at once and wait inside Pingora instead.
async fn wait_for_request(stream: &mut Stream, idle: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(idle, stream.try_peek(&mut first)).await,
        Ok(Ok(_))
    )
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.is_h2(&mut stream).await {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let edge = self.store.load().edge.clone();
        // A new connection must start its request within the head deadline.
        if !wait_for_request(&mut stream, edge.request_header_timeout).await {
            return None;
        }
        let mut session = ServerSession::new_http1(stream);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(edge.keepalive_timeout.as_secs().max(1)));
        }
        session.set_keepalive_reuses_remaining(edge.keepalive_requests);
        loop {
            let reused =
                serve_one(&self.proxy, session, shutdown, edge.request_header_timeout).await?;
            let (mut stream, settings) = reused.consume();
            if !wait_for_request(&mut stream, edge.keepalive_timeout).await {
                return None;
            }
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
