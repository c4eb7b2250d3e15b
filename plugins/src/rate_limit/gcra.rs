//! In-process GCRA buckets: one token per `interval`, at most `capacity` at once; keys are
//! 64-bit hashes in sharded maps (a short lock per decision, never across an await), with
//! bounded memory: full (idle) buckets are evicted first when a shard is over its share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub use crate::clock::monotonic_us as now_us;

const SHARDS: usize = 16;

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u32,
    pub reset_after: Duration,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct LocalBuckets {
    interval_us: u64,
    /// How far ahead of now a bucket's TAT may run: `interval × capacity`.
    tolerance_us: u64,
    max_keys_per_shard: usize,
    shards: Vec<Mutex<HashMap<u64, u64>>>,
}

impl LocalBuckets {
    pub fn new(interval: Duration, capacity: u32, max_keys: usize) -> Self {
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        LocalBuckets {
            interval_us,
            // Saturating: a slow rate with a large burst (`1/1000d`, burst 4e9) is valid config.
            tolerance_us: interval_us.saturating_mul(u64::from(capacity.max(1))),
            max_keys_per_shard: (max_keys / SHARDS).max(16),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, now_us())
    }

    pub fn check_at(&self, key: u64, now: u64) -> Decision {
        let (interval, tolerance) = (self.interval_us, self.tolerance_us);
        let Ok(mut shard) = self.shards[(key as usize) % SHARDS].lock() else {
            // A poisoned lock means a panic elsewhere; fail open rather than take traffic down.
            return Decision {
                allowed: true,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        if shard.len() >= self.max_keys_per_shard && !shard.contains_key(&key) {
            evict(&mut shard, now, self.max_keys_per_shard);
        }
        // One lookup for the read and the write: a new key starts full (its TAT is now).
        let slot = shard.entry(key).or_insert(now);
        let tat = (*slot).max(now);
        // `now` was read before the lock was taken, so a request that read the clock later
        // may already have moved the TAT past `now + tolerance`: to this one, the bucket is
        // empty (a plain subtraction overflowed here under contention).
        let available = now.saturating_add(tolerance).saturating_sub(tat) / interval;
        if available >= 1 {
            let tat = tat.saturating_add(interval);
            *slot = tat;
            Decision {
                allowed: true,
                remaining: u32::try_from(available - 1).unwrap_or(u32::MAX),
                reset_after: Duration::from_micros(tat - now),
                retry_after: Duration::ZERO,
            }
        } else {
            Decision {
                allowed: false,
                remaining: 0,
                reset_after: Duration::from_micros(tat - now),
                retry_after: Duration::from_micros(
                    tat.saturating_add(interval)
                        .saturating_sub(now.saturating_add(tolerance)),
                ),
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Drops full buckets (their TAT is past: nothing to remember); if that is not enough, the
/// buckets that fill up soonest.
fn evict(shard: &mut HashMap<u64, u64>, now: u64, max: usize) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() >= max {
        let mut tats: Vec<u64> = shard.values().copied().collect();
        tats.sort_unstable();
        let cut = tats[tats.len() / 4];
        shard.retain(|_, tat| *tat > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        // 10 per second, burst 5.
        let b = LocalBuckets::new(Duration::from_millis(100), 5, 1000);
        let t0 = 1_000_000;
        let allowed = (0..20).filter(|_| b.check_at(1, t0).allowed).count();
        assert_eq!(allowed, 5);
        let d = b.check_at(1, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // One second later: 10 more tokens, but never more than 5 at once.
        let allowed = (0..20)
            .filter(|_| b.check_at(1, t0 + 1_000_000).allowed)
            .count();
        assert_eq!(allowed, 5);
        // Another key is independent.
        assert!(b.check_at(2, t0).allowed);
    }

    #[test]
    fn a_clock_reading_older_than_the_last_decision_finds_the_bucket_empty() {
        // 20 per second, burst 10: a bucket holds 500 ms of tokens.
        let b = LocalBuckets::new(Duration::from_millis(50), 10, 1000);
        let t0 = 1_000_000;
        // Requests that read the clock at t0 + 5 ms empty the bucket …
        let allowed = (0..20)
            .filter(|_| b.check_at(1, t0 + 5_000).allowed)
            .count();
        assert_eq!(allowed, 10);
        // … before one that read it at t0 gets the lock: its TAT is 505 ms past its now.
        let d = b.check_at(1, t0);
        assert!(!d.allowed);
        assert_eq!(d.reset_after, Duration::from_millis(505));
        assert_eq!(d.retry_after, Duration::from_millis(55));
    }

    #[test]
    fn a_slow_rate_with_the_largest_burst_saturates_instead_of_overflowing() {
        // `1/1000d` with burst 4,294,967,295: interval × burst is past u64's microseconds.
        let interval = Duration::from_secs(86_400_000);
        let b = LocalBuckets::new(interval, u32::MAX, 1000);
        let d = b.check_at(1, 7);
        assert!(d.allowed);
        let held = (u64::MAX - 7) / interval.as_micros() as u64;
        assert_eq!(u64::from(d.remaining), held - 1);
        assert_eq!(d.reset_after, interval);
        // An older reading after it is answered as well, not a panic.
        assert!(b.check_at(1, 0).allowed);
    }

    #[test]
    fn memory_is_bounded() {
        let b = LocalBuckets::new(Duration::from_millis(100), 5, 160);
        for k in 0..10_000u64 {
            b.check_at(k, 1_000_000);
        }
        assert!(b.len() <= 160 + 16, "{}", b.len());
    }
}
