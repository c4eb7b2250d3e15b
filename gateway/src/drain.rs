//! Graceful termination. On SIGTERM, Pingora stops accepting on the proxy listeners and
//! waits out `server.grace_period`; Portico adds what an orchestrator expects of an edge:
//! - `/ready` answers 503 from the first moment (the admin listener keeps accepting);
//! - connections that have not started a request are closed, and every response in flight
//!   is sent with `Connection: close`;
//! - the process exits as soon as no client connection is left, instead of always waiting
//!   out the grace period (which made every Kubernetes pod overrun its termination grace).
//!
//! A binary upgrade (SIGQUIT) is not a termination: the old process keeps serving what it
//! accepted for the whole grace period, as before, so no fresh connection is lost.

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Drain {
    terminating: AtomicBool,
    /// Client connections open on the proxy listeners.
    open: AtomicUsize,
    /// Signalled when the last connection closes during a termination.
    emptied: Notify,
}

impl Drain {
    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::Acquire)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn begin_termination(&self) {
        self.terminating.store(true, Ordering::Release);
        // A stored permit: `drained` sees it even if it starts waiting later.
        self.emptied.notify_one();
    }

    /// Counts a client connection until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
    }

    /// Resolves once a termination has begun and no client connection is left. During a
    /// binary upgrade it never resolves: the grace period runs its course.
    pub async fn drained(self: Arc<Self>) {
        loop {
            if self.is_terminating() && self.open_connections() == 0 {
                return;
            }
            self.emptied.notified().await;
        }
    }

    /// Resolves when a termination begins (at once if it has). `shutdown` is Pingora's
    /// broadcast, which follows `begin_termination`.
    pub async fn terminated(&self, shutdown: &ShutdownWatch) {
        let mut shutdown = shutdown.clone();
        while !self.is_terminating() {
            if shutdown.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One open client connection (see [`Drain::track`]).
pub struct OpenConnection(Arc<Drain>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.is_terminating() {
            self.0.emptied.notify_one();
        }
    }
}

/// Pingora's signal handling, noting a SIGTERM in the [`Drain`] before Pingora broadcasts
/// the shutdown, so every task that sees the broadcast already knows which kind it is.
pub struct DrainSignal {
    pub drain: Arc<Drain>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let signal = pingora::server::UnixShutdownSignalWatch.recv().await;
        if matches!(signal, ShutdownSignal::GracefulTerminate) {
            tracing::info!(
                open_connections = self.drain.open_connections(),
                "SIGTERM: draining"
            );
            self.drain.begin_termination();
        }
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drained_waits_for_the_last_connection_of_a_termination() {
        let drain = Arc::new(Drain::default());
        let first = drain.track();
        let second = drain.track();
        // Connections closing before a termination do not end anything.
        drop(first);
        let waiting = tokio::spawn(drain.clone().drained());
        drain.begin_termination();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one connection is still open");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("drained once the last connection closed")
            .expect("task");
    }

    #[tokio::test]
    async fn a_termination_with_nothing_open_is_drained_at_once() {
        let drain = Arc::new(Drain::default());
        drain.begin_termination();
        tokio::time::timeout(Duration::from_secs(5), drain.clone().drained())
            .await
            .expect("drained");
    }
}
