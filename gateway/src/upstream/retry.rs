//! Retry policy and budget: retries may add at most a share of a pool's requests (or a small
//! floor per second), so a failing upstream is not hit with a multiple of its normal load.

use super::PoolError;
use crate::config::{RetryConfig, RetryOn};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_5xx: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub per_try_timeout: Option<Duration>,
    budget: Budget,
}

#[derive(Debug)]
struct Budget {
    percent: u32,
    min_per_second: u32,
    second: AtomicU64,
    requests: AtomicU32,
    prev_requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryPolicy {
    pub fn new(c: &RetryConfig) -> Result<Self, PoolError> {
        if c.attempts > 10 {
            return Err(PoolError::at("retries.attempts", "is at most 10"));
        }
        Ok(RetryPolicy {
            attempts: c.attempts,
            on_5xx: c.on.contains(&RetryOn::Gateway5xx),
            on_reset: c.on.contains(&RetryOn::Reset),
            on_timeout: c.on.contains(&RetryOn::Timeout),
            per_try_timeout: c.per_try_timeout.map(|d| d.get()),
            budget: Budget {
                percent: c.budget_percent,
                min_per_second: c.budget_min_per_second,
                second: AtomicU64::new(0),
                requests: AtomicU32::new(0),
                prev_requests: AtomicU32::new(0),
                retries: AtomicU32::new(0),
            },
        })
    }

    fn roll(&self) {
        let b = &self.budget;
        let now = portico_plugins::clock::monotonic_ms() / 1000;
        let seen = b.second.load(Ordering::Relaxed);
        // Only forward: a thread that read the clock before another rolled the second must
        // not roll it back and wipe that second's counts.
        if now > seen
            && b.second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = b.requests.swap(0, Ordering::Relaxed);
            b.prev_requests
                .store(if now == seen + 1 { last } else { 0 }, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request (first tries only). A pool without retries keeps no count: nothing
    /// would read it, and the count costs a clock reading per request.
    pub fn on_request(&self) {
        if self.attempts == 0 {
            return;
        }
        self.roll();
        self.budget.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry from the budget, if there is one left this second.
    pub fn take_retry(&self) -> bool {
        self.roll();
        let b = &self.budget;
        let base = b
            .prev_requests
            .load(Ordering::Relaxed)
            .max(b.requests.load(Ordering::Relaxed));
        let allowed =
            (u64::from(base) * u64::from(b.percent) / 100).max(u64::from(b.min_per_second));
        let used = b.retries.fetch_add(1, Ordering::Relaxed);
        if u64::from(used) < allowed {
            true
        } else {
            b.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_retries() {
        let p = RetryPolicy::new(&RetryConfig {
            attempts: 2,
            budget_percent: 10,
            budget_min_per_second: 3,
            ..RetryConfig::default()
        })
        .unwrap();
        for _ in 0..10 {
            p.on_request();
        }
        let granted = (0..10).filter(|_| p.take_retry()).count();
        assert_eq!(granted, 3, "the floor applies while 10% of 10 is 1");
    }
}
