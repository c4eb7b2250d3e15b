// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! One clock reading shared within a poll of a connection's task (Portico patch 0061).
//!
//! A proxied HTTP/1 request read the monotonic clock about ten times, most of them to set a
//! deadline (the request head's, the upstream read's, a pooled connection's idle timeout)
//! or to see whether one had passed, microseconds apart within one poll of the connection's
//! task; each reading is a vDSO call of ~25 ns. Inside [`scoped`] (each accepted
//! connection's task), the first reading of a poll is kept, and [`recent`] answers with it
//! until the poll ends, so a deadline set from it is early by at most the CPU time the poll
//! has run so far, as nginx's once-per-event-loop time is. Times that are reported rather
//! than waited for read the clock with [`read`], which keeps its reading for the rest of the
//! poll. Outside a scope both read the clock.

use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

#[derive(Clone, Copy)]
enum Reading {
    /// Not inside a scope: every call reads the clock.
    Outside,
    /// Inside a poll that has not read the clock yet.
    None,
    Kept(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Outside) };
}

/// The current poll's clock reading (made now when it has none); outside a scope, the clock.
#[inline]
pub fn recent() -> Instant {
    READING.with(|r| match r.get() {
        Reading::Kept(t) => t,
        Reading::None => {
            let t = Instant::now();
            r.set(Reading::Kept(t));
            t
        }
        Reading::Outside => Instant::now(),
    })
}

/// Reads the clock; inside a scope the reading is kept for the rest of the poll.
#[inline]
pub fn read() -> Instant {
    let t = Instant::now();
    READING.with(|r| {
        if !matches!(r.get(), Reading::Outside) {
            r.set(Reading::Kept(t));
        }
    });
    t
}

/// Runs `fut` with each of its polls as a scope of its own.
pub async fn scoped<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _poll = PollScope::enter();
        fut.as_mut().poll(cx)
    })
    .await
}

/// Restores the reading from before the poll when the poll ends, a panic included.
struct PollScope(Reading);

impl PollScope {
    fn enter() -> Self {
        PollScope(READING.with(|r| r.replace(Reading::None)))
    }
}

impl Drop for PollScope {
    fn drop(&mut self) {
        READING.with(|r| r.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    #[test]
    fn outside_a_scope_every_call_reads_the_clock() {
        let a = recent();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(recent() > a);
    }

    #[tokio::test]
    async fn a_poll_keeps_its_first_reading_and_the_next_poll_reads_again() {
        let mut polls = Vec::new();
        scoped(std::future::poll_fn(|cx| {
            let first = recent();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(recent(), first, "the poll's reading is kept");
            let precise = read();
            assert!(precise > first, "read() reads the clock");
            assert_eq!(recent(), precise, "and keeps what it read");
            polls.push(first);
            if polls.len() == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
        .await;
        assert!(polls[1] > polls[0], "a new poll reads the clock again");
        // After the scope, calls read the clock again.
        let a = recent();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(recent() > a);
    }
}
