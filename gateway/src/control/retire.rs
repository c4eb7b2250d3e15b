//! A replaced snapshot is dropped off the request path.
//!
//! Requests in flight keep the snapshot they started with, so the last of them to finish
//! drops it, on the proxy worker that ran it, between two requests. With many routes that
//! drop is long (10k routes: ~8M instructions, milliseconds that every request queued on
//! that worker waits). Instead, the reload hands the old snapshot to a thread of its own that
//! waits for the requests to let go of it and then drops it.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the retiring thread looks whether it holds the last reference.
const POLL: Duration = Duration::from_millis(20);

/// How long it waits at most: a request that holds its snapshot longer (a WebSocket) drops it
/// itself.
const WAIT: Duration = Duration::from_secs(60);

/// Drops `old` on a thread of its own once nothing else holds it (or after [`WAIT`]).
pub fn retire<T: Send + Sync + 'static>(old: Arc<T>) {
    let spawned = std::thread::Builder::new()
        .name("portico-retire".into())
        .spawn(move || {
            let deadline = Instant::now() + WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            drop(old);
        });
    if let Err(e) = spawned {
        // The old snapshot was moved into the closure and dropped with it: the request
        // holding it last drops it, as it would without this.
        tracing::warn!(error = %e, "cannot start a thread to drop the replaced config");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Tells which thread dropped it.
    struct Dropped(mpsc::Sender<Option<String>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            let name = std::thread::current().name().map(str::to_string);
            let _ = self.0.send(name);
        }
    }

    #[test]
    fn the_last_holder_letting_go_does_not_drop_it_the_retiring_thread_does() {
        let (tx, rx) = mpsc::channel();
        let snapshot = Arc::new(Dropped(tx));
        let in_flight = snapshot.clone();
        retire(snapshot);
        // Still held by the request in flight: not dropped.
        assert!(rx.recv_timeout(POLL * 5).is_err());
        drop(in_flight);
        let by = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(by, Ok(Some("portico-retire".to_string())));
    }
}
