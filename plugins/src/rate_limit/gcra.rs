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
    capacity: u32,
    max_keys_per_shard: usize,
    shards: Vec<Mutex<HashMap<u64, u64>>>,
}

impl LocalBuckets {
    pub fn new(interval: Duration, capacity: u32, max_keys: usize) -> Self {
        LocalBuckets {
            interval_us: (interval.as_micros() as u64).max(1),
            capacity: capacity.max(1),
            max_keys_per_shard: (max_keys / SHARDS).max(16),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, now_us())
    }

    pub fn check_at(&self, key: u64, now: u64) -> Decision {
        let tolerance = self.interval_us * u64::from(self.capacity);
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
        let available = (now + tolerance - tat) / self.interval_us;
        if available >= 1 {
            let tat = tat + self.interval_us;
            *slot = tat;
            Decision {
                allowed: true,
                remaining: (available - 1) as u32,
                reset_after: Duration::from_micros(tat - now),
                retry_after: Duration::ZERO,
            }
        } else {
            Decision {
                allowed: false,
                remaining: 0,
                reset_after: Duration::from_micros(tat - now),
                retry_after: Duration::from_micros(
                    (tat + self.interval_us).saturating_sub(now + tolerance),
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
    fn memory_is_bounded() {
        let b = LocalBuckets::new(Duration::from_millis(100), 5, 160);
        for k in 0..10_000u64 {
            b.check_at(k, 1_000_000);
        }
        assert!(b.len() <= 160 + 16, "{}", b.len());
    }
}
