//! What ends a wait on a client connection: its deadline passing (the request-head deadline,
//! then the keep-alive timeout, then the next head's deadline …) or a termination beginning.
//!
//! Both are made once per connection. A timer made per wait was registered in tokio's timer
//! wheel and removed again twice per request, and the termination waiter was added to and
//! removed from its notifier each time: about 2k instructions per proxied request together.
//! Here a deadline that moves later is only recorded; the timer fires at the earlier one,
//! finds the later one and re-arms (nginx's lazy timers, the same idea). A connection that
//! keeps sending therefore touches the wheel about once per head deadline, not per request.
//! The termination waiter is polled again only when the shutdown broadcast has moved or the
//! task's waker has changed: re-polling it on every wait took a lock in tokio's notifier.

use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub struct ConnectionTimer<'a, T> {
    timer: Pin<&'a mut Sleep>,
    /// When the current wait really ends; the timer fires at or before it.
    due: Instant,
    /// `None` once the termination has been seen, so it is not polled again after it ended.
    terminated: Option<Pin<&'a mut T>>,
    /// The broadcast `terminated` waits on, to see whether it has moved since the last poll.
    shutdown: ShutdownWatch,
    /// The waker `terminated` was last polled with: it is woken through that one.
    registered: Option<Waker>,
}

impl<'a, T: Future<Output = ()>> ConnectionTimer<'a, T> {
    /// `timer` is a `tokio::time::sleep` made for the connection, its first deadline the one
    /// it was made with; `terminated` is the connection's `Drain::terminated` on `shutdown`.
    pub fn new(
        timer: Pin<&'a mut Sleep>,
        terminated: Pin<&'a mut T>,
        shutdown: &ShutdownWatch,
    ) -> Self {
        let due = timer.deadline();
        let mut shutdown = shutdown.clone();
        shutdown.borrow_and_update();
        Self {
            timer,
            due,
            terminated: Some(terminated),
            shutdown,
            registered: None,
        }
    }

    /// The current wait ends `after` from now.
    pub fn set_deadline(&mut self, after: Duration) {
        self.due = Instant::now() + after;
        if self.due < self.timer.deadline() {
            self.timer.as_mut().reset(self.due);
        }
    }

    /// Ready once the deadline set last has passed.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.timer.deadline() >= self.due {
                return Poll::Ready(());
            }
            // Fired at an earlier deadline that has since moved: wait for the real one.
            let due = self.due;
            self.timer.as_mut().reset(due);
        }
    }

    /// Ready once a termination has begun (and from then on).
    pub fn poll_terminated(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(terminated) = &mut self.terminated else {
            return Poll::Ready(());
        };
        // A closed broadcast counts as moved: the future decides what that means.
        let moved = self.shutdown.has_changed().unwrap_or(true);
        let same_waker = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !moved && same_waker {
            // Nothing it waits on has happened, and it would wake this same waker.
            return Poll::Pending;
        }
        if moved {
            self.shutdown.borrow_and_update();
        }
        if terminated.as_mut().poll(cx).is_pending() {
            if !same_waker {
                self.registered = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        self.terminated = None;
        Poll::Ready(())
    }
}
