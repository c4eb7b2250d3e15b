// Portico patch 0037 (vendor/patches/): one read timer per upstream connection.

//! The read timeout of an HTTP/1 client connection, made once per connection (public: a
//! server can time its wait for a client's next request the same way).
//!
//! The client session is made anew for every request, and its response-head read under
//! `read_timeout` made a tokio timer, registered it in the timer wheel, removed it again and
//! freed it (two boxes) on every request. The connection keeps this timer instead. A deadline
//! that moves later is only recorded; the timer fires at the earlier one, finds the later one
//! and re-arms for it, so a connection in steady use touches the wheel about once per timeout
//! rather than once per request.
//!
//! A pooled connection can be taken by another thread, and with Pingora's runtimes without
//! work stealing each thread is a runtime of its own, whose timer wheel the timer must not
//! outlive (polling a timer whose runtime has shut down panics). So the timer is made again
//! when the thread that uses it is not the one that made it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A connection's read timer; empty until its first timed read.
#[derive(Debug, Default)]
pub struct ReadTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The thread that made `sleep` (`this_thread`).
    made_on: usize,
    /// When the current wait runs out; the timer fires at or before it.
    due: Option<Instant>,
}

thread_local! {
    static THREAD_MARK: u8 = const { 0 };
}

/// Tells threads apart: the address of a thread-local, cheaper than `thread::current().id()`.
fn this_thread() -> usize {
    THREAD_MARK.with(|mark| mark as *const u8 as usize)
}

impl ReadTimer {
    /// Starts a wait that runs out `after` from now.
    #[inline]
    pub fn start(&mut self, after: Duration) {
        // Portico patch 0061: the poll's clock reading.
        let due = Instant::from_std(crate::utils::poll_clock::recent()) + after;
        self.due = Some(due);
        let here = this_thread();
        if self.made_on != here {
            self.sleep = None;
            self.made_on = here;
        }
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() <= due => {}
            Some(sleep) => sleep.as_mut().reset(due),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
        }
    }

    /// Ready once the wait started last has run out; never without a wait.
    #[inline]
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(sleep), Some(due)) = (self.sleep.as_mut(), self.due) else {
            return Poll::Pending;
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if sleep.deadline() >= due {
                return Poll::Ready(());
            }
            // Fired at an earlier deadline that has since moved: wait for the real one.
            sleep.as_mut().reset(due);
        }
    }

    /// Runs `read` until it is done (`Some`) or the wait started last runs out (`None`).
    pub async fn race<F: Future>(&mut self, read: F) -> Option<F::Output> {
        let mut read = std::pin::pin!(read);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = read.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.poll_expired(cx).map(|()| None)
        })
        .await
    }

    /// Ends the wait and lets go of the waker of the task that waited, which an idle pooled
    /// connection would otherwise keep (with that finished task's memory) until the timer
    /// fires.
    pub fn stop(&mut self) {
        self.due = None;
        if self.made_on != this_thread() {
            self.sleep = None;
        }
        if let Some(sleep) = &mut self.sleep {
            let _ = sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}
