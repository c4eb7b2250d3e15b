// Portico patch 0016 (vendor/patches/): the keep-alive pool of upstream streams.
//
// Pingora's pool (`pingora_pool::ConnectionPool`) spawned a task for every stream put back,
// which waited on a oneshot, a `Notify` and a read with a timer; taking the stream again
// meant signalling that task and waiting behind a lock until it had run. This pool keeps idle
// streams in a list per peer, as nginx does: a release and a reuse are a push and a pop under
// a short lock. What the idle tasks did, one sweeper per pool does on a period: it closes the
// streams that have been idle for longer than their timeout and those the server closed (or
// sent data on). A reuse checks both again, so a stream the sweeper has not looked at yet is
// never handed out closed or past its timeout.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use crate::utils::poll_clock;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the idle streams. A stream the server closed is closed here
/// within this long; until then it is only a descriptor (a reuse would find it closed).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct IdlePool {
    size: usize,
    idle: Mutex<Idle>,
    sweeping: AtomicBool,
    unexpected_data: Arc<AtomicU64>,
    left_unused: Option<PoolCallback>,
}

#[derive(Default)]
struct Idle {
    /// Per peer (`Peer::reuse_hash`), oldest first; reuse takes the newest.
    by_peer: HashMap<u64, VecDeque<IdleStream>, BuildHasherDefault<ReuseHashHasher>>,
    count: usize,
    released: u64,
}

struct IdleStream {
    stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
    /// Order of release, for closing the stream idle longest when the pool is full.
    seq: u64,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

/// The keys are already hashes (`Peer::reuse_hash`); hashing them again buys nothing.
#[derive(Default)]
struct ReuseHashHasher(u64);

impl Hasher for ReuseHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl IdlePool {
    pub(crate) fn new(
        size: usize,
        unexpected_data: Arc<AtomicU64>,
        left_unused: Option<PoolCallback>,
    ) -> Self {
        IdlePool {
            size,
            idle: Mutex::new(Idle::default()),
            sweeping: AtomicBool::new(false),
            unexpected_data,
            left_unused,
        }
    }

    /// The newest idle stream to the peer that is still open and within its idle timeout.
    pub(crate) fn get(&self, key: u64) -> Option<Stream> {
        let mut now = None;
        loop {
            let mut candidate = {
                let mut idle = self.lock();
                let streams = idle.by_peer.get_mut(&key)?;
                let candidate = streams.pop_back()?;
                idle.count -= 1;
                candidate
            };
            if candidate.timeout.is_some()
                // Portico patch 0061: the poll's clock reading.
                && candidate.expired(*now.get_or_insert_with(poll_clock::recent))
            {
                self.left_unused(&candidate);
                continue;
            }
            if test_reusable_stream(&mut candidate.stream, &self.unexpected_data) {
                return Some(candidate.stream);
            }
            self.left_unused(&candidate);
        }
    }

    /// Keeps `stream` for reuse; when the pool is full, the stream idle longest (to any peer)
    /// is closed to make room.
    pub(crate) fn put(self: &Arc<Self>, key: u64, stream: Stream, timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let since = poll_clock::recent();
        let evicted = {
            let mut idle = self.lock();
            idle.released += 1;
            let entry = IdleStream {
                stream,
                since,
                timeout,
                seq: idle.released,
            };
            let evicted = if idle.count >= self.size {
                idle.evict_oldest()
            } else {
                None
            };
            idle.by_peer.entry(key).or_default().push_back(entry);
            idle.count += 1;
            evicted
        };
        if let Some(evicted) = evicted {
            self.left_unused(&evicted);
        }
        // Portico patch 0066: a load first. The sweeper runs as long as the pool lives, so
        // nearly every release finds it running; a swap, a locked read-modify-write, made
        // each of them wait for the core's stores to drain to learn that.
        if !self.sweeping.load(Ordering::Acquire) && !self.sweeping.swap(true, Ordering::AcqRel) {
            self.start_sweeper();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // Nothing under this lock can panic half-way through an edit; a poisoned pool is whole.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn left_unused(&self, stream: &IdleStream) {
        if let Some(callback) = &self.left_unused {
            callback(stream.since.elapsed());
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(async move {
            // Cleared when the task ends, also when its runtime drops it, so that the next put
            // starts another one.
            let _running = SweeperRunning(pool.clone());
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.sweep();
            }
        });
    }

    /// Closes the streams past their idle timeout and those the server closed or wrote to.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.lock();
            let Idle { by_peer, count, .. } = &mut *idle;
            by_peer.retain(|_, streams| {
                let mut kept = VecDeque::with_capacity(streams.len());
                for mut s in streams.drain(..) {
                    if s.expired(now) || !test_reusable_stream(&mut s.stream, &self.unexpected_data)
                    {
                        closed.push(s);
                    } else {
                        kept.push_back(s);
                    }
                }
                *streams = kept;
                !streams.is_empty()
            });
            *count -= closed.len();
        }
        for s in &closed {
            self.left_unused(s);
        }
        // The streams close here, outside the lock.
        drop(closed);
    }

}

impl Idle {
    fn evict_oldest(&mut self) -> Option<IdleStream> {
        let key = *self
            .by_peer
            .iter()
            .filter_map(|(k, streams)| streams.front().map(|s| (k, s.seq)))
            .min_by_key(|(_, seq)| *seq)?
            .0;
        let streams = self.by_peer.get_mut(&key)?;
        let oldest = streams.pop_front()?;
        if streams.is_empty() {
            self.by_peer.remove(&key);
        }
        self.count -= 1;
        Some(oldest)
    }
}

struct SweeperRunning(Weak<IdlePool>);

impl Drop for SweeperRunning {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sweeping.store(false, Ordering::Release);
        }
    }
}
