//! What ends a wait on a client connection: its deadline passing (the request-head deadline,
//! then the keep-alive timeout, then the next head's deadline …) or a termination beginning.
//!
//! Both are made once per connection. A timer made per wait was registered in tokio's timer
//! wheel and removed again twice per request, and the termination waiter was added to and
//! removed from its notifier each time: about 2k instructions per proxied request together.
//! The deadline is Pingora's `ReadTimer` (vendor patch 0037, which gives upstream connections
//! the same): a deadline that moves later is only recorded; the timer fires at the earlier
//! one, finds the later one and re-arms (nginx's lazy timers, the same idea). A connection
//! that keeps sending therefore touches the wheel about once per head deadline, not per
//! request. The termination waiter is polled again only when the shutdown broadcast has moved
//! or the task's waker has changed: re-polling it on every wait took a lock in tokio's
//! notifier.

use pingora::protocols::l4::read_timer::ReadTimer;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub struct ConnectionTimer<'a, T> {
    /// When the current wait ends.
    deadline: ReadTimer,
    /// `None` once the termination has been seen, so it is not polled again after it ended.
    terminated: Option<Pin<&'a mut T>>,
    /// The broadcast `terminated` waits on, to see whether it has moved since the last poll.
    shutdown: ShutdownWatch,
    /// The waker `terminated` was last polled with: it is woken through that one.
    registered: Option<Waker>,
}

impl<'a, T: Future<Output = ()>> ConnectionTimer<'a, T> {
    /// The first wait ends `first` from now; `terminated` is the connection's
    /// `Drain::terminated` on `shutdown`.
    pub fn new(first: Duration, terminated: Pin<&'a mut T>, shutdown: &ShutdownWatch) -> Self {
        let mut deadline = ReadTimer::default();
        deadline.start(first);
        let mut shutdown = shutdown.clone();
        shutdown.borrow_and_update();
        Self {
            deadline,
            terminated: Some(terminated),
            shutdown,
            registered: None,
        }
    }

    /// The current wait ends `after` from now.
    pub fn set_deadline(&mut self, after: Duration) {
        self.deadline.start(after);
    }

    /// Ready once the deadline set last has passed.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.deadline.poll_expired(cx)
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
