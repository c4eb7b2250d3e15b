//! Global limits: every decision is a token taken from one GCRA bucket in Redis, atomically
//! (one Lua script, on Redis's clock). To keep a Redis round trip out of most requests, a
//! replica takes tokens in small batches (leases) and hands them out locally until the lease
//! runs out or expires. Accuracy (docs/rate-limiting.md): every admitted request was counted
//! in Redis when its lease was taken, so over any window W admissions stay within
//! `capacity + rate × (W + lease_ttl)`; unused leased tokens can make the limit stricter by at
//! most `replicas × lease_size` per `lease_ttl`. A denial is remembered until the next token
//! is due, so a limited key does not hit Redis on every request either.

use super::gcra::{now_us, Decision, LocalBuckets};
use crate::api::SharedBuckets;
use crate::trace::Outbound;
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHARDS: usize = 16;
pub const LEASE_TTL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct LeaseState {
    tokens: u32,
    expires_us: u64,
    denied_until_us: u64,
    remaining: u32,
    reset_at_us: u64,
}

#[derive(Debug, Default)]
struct Lease {
    state: Mutex<LeaseState>,
    /// Coalesces concurrent refills of one key.
    refill: tokio::sync::Mutex<()>,
}

/// What to do when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    Allow,
    Deny,
    /// The in-process limiter, at a share of the rate.
    Local,
}

#[derive(Debug)]
pub struct SharedLimit {
    store: Arc<dyn SharedBuckets>,
    key_prefix: String,
    interval: Duration,
    capacity: u32,
    lease_size: u32,
    leases: Vec<Mutex<HashMap<u64, Arc<Lease>>>>,
    max_keys_per_shard: usize,
    fallback: Fallback,
    local: LocalBuckets,
}

/// Why a decision was made, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Lease,
    Redis,
    Fallback,
}

impl SharedLimit {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn SharedBuckets>,
        bucket_id: &str,
        interval: Duration,
        capacity: u32,
        fallback: Fallback,
        local_interval: Duration,
        max_keys: usize,
    ) -> Self {
        // About 50 ms of traffic per lease, at most a quarter of the burst.
        let per_50ms = (Duration::from_millis(50).as_micros() / interval.as_micros().max(1)) as u32;
        let lease_size = per_50ms.min(capacity / 4).clamp(1, 100);
        SharedLimit {
            key_prefix: format!("{}:rl:{{{bucket_id}", store.key_prefix()),
            store,
            interval,
            capacity,
            lease_size,
            leases: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_keys_per_shard: (max_keys / SHARDS).max(16),
            fallback,
            local: LocalBuckets::new(local_interval, capacity, max_keys),
        }
    }

    fn lease(&self, key: u64) -> Arc<Lease> {
        let Ok(mut shard) = self.leases[(key as usize) % SHARDS].lock() else {
            return Arc::new(Lease::default());
        };
        if shard.len() >= self.max_keys_per_shard && !shard.contains_key(&key) {
            let now = now_us();
            shard.retain(|_, l| {
                l.state
                    .lock()
                    .map(|s| s.expires_us > now || s.denied_until_us > now)
                    .unwrap_or(false)
            });
        }
        shard.entry(key).or_default().clone()
    }

    fn take_local(lease: &Lease, now: u64) -> Option<Decision> {
        let mut s = lease.state.lock().ok()?;
        if s.denied_until_us > now {
            return Some(Decision {
                allowed: false,
                remaining: 0,
                reset_after: Duration::from_micros(s.reset_at_us.saturating_sub(now)),
                retry_after: Duration::from_micros(s.denied_until_us - now),
            });
        }
        if s.tokens > 0 && s.expires_us > now {
            s.tokens -= 1;
            return Some(Decision {
                allowed: true,
                remaining: s.remaining + s.tokens,
                reset_after: Duration::from_micros(s.reset_at_us.saturating_sub(now)),
                retry_after: Duration::ZERO,
            });
        }
        None
    }

    pub async fn check(&self, key: u64) -> (Decision, Source) {
        let lease = self.lease(key);
        if let Some(d) = Self::take_local(&lease, now_us()) {
            return (d, Source::Lease);
        }
        let _refilling = lease.refill.lock().await;
        // Another request may have refilled while this one waited.
        if let Some(d) = Self::take_local(&lease, now_us()) {
            return (d, Source::Lease);
        }
        let bucket = format!("{}:{key:016x}}}", self.key_prefix);
        let span = Outbound::start("redis rate limit", || {
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", "EVALSHA"),
            ]
        });
        let taken = self
            .store
            .take(&bucket, self.interval, self.capacity, self.lease_size)
            .await;
        if let Err(e) = &taken {
            span.fail(&e.to_string());
        }
        drop(span);
        match taken {
            Ok(grant) => {
                let now = now_us();
                let Ok(mut s) = lease.state.lock() else {
                    return (self.on_error(key), Source::Fallback);
                };
                s.reset_at_us = now + grant.reset_after.as_micros() as u64;
                s.remaining = grant.remaining;
                if grant.granted == 0 {
                    s.tokens = 0;
                    s.denied_until_us = now + grant.retry_after.as_micros().max(1) as u64;
                    (
                        Decision {
                            allowed: false,
                            remaining: 0,
                            reset_after: grant.reset_after,
                            retry_after: grant.retry_after,
                        },
                        Source::Redis,
                    )
                } else {
                    s.tokens = grant.granted - 1;
                    s.expires_us = now + LEASE_TTL.as_micros() as u64;
                    s.denied_until_us = 0;
                    (
                        Decision {
                            allowed: true,
                            remaining: grant.remaining + s.tokens,
                            reset_after: grant.reset_after,
                            retry_after: Duration::ZERO,
                        },
                        Source::Redis,
                    )
                }
            }
            Err(_) => (self.on_error(key), Source::Fallback),
        }
    }

    fn on_error(&self, key: u64) -> Decision {
        match self.fallback {
            Fallback::Allow => Decision {
                allowed: true,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: Duration::ZERO,
            },
            Fallback::Deny => Decision {
                allowed: false,
                remaining: 0,
                reset_after: Duration::from_secs(1),
                retry_after: Duration::from_secs(1),
            },
            Fallback::Local => self.local.check(key),
        }
    }
}
