//! A bounded cache of what a credential was found to be, keyed by a hash of the credential:
//! its 32-byte digest or MAC, which stands for it (Better Auth's signed session token), or a
//! keyed 64-bit hash, which does not (a JWT: the entry keeps the token and a hit must equal
//! it). Shared by the JWT and Better Auth plugins.
//!
//! It is split into shards by the key (keys are uniform), each behind its own lock, so that
//! requests on different workers rarely meet on one lock; a hit takes its shard's read lock
//! only. A full shard first drops its expired entries, then everything.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

const SHARDS: usize = 16;

/// A key: uniformly distributed, so any part of it picks a shard.
pub(crate) trait CacheKey: Hash + Eq + Copy {
    fn shard(&self) -> usize;
}

impl CacheKey for [u8; 32] {
    fn shard(&self) -> usize {
        usize::from(self[0])
    }
}

impl CacheKey for u64 {
    fn shard(&self) -> usize {
        *self as usize
    }
}

/// Values with the instant they stop being good.
type Shard<K, V, T> = RwLock<HashMap<K, (V, T)>>;

#[derive(Debug)]
pub(crate) struct CredentialCache<K, V, T> {
    /// 0: nothing is kept.
    shard_capacity: usize,
    shards: Vec<Shard<K, V, T>>,
}

impl<K: CacheKey, V, T: Copy + Ord> CredentialCache<K, V, T> {
    /// A cache of about `capacity` entries (rounded up to a multiple of the shard count);
    /// 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        CredentialCache {
            shard_capacity: capacity.div_ceil(SHARDS),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, V, T> {
        &self.shards[key.shard() % SHARDS]
    }

    /// The value kept for `key`, if it is still good at `now` (its `until` is later).
    pub fn get(&self, key: &K, now: T) -> Option<V>
    where
        V: Clone,
    {
        self.get_with(key, now, |value| Some(value.clone()))
    }

    /// What `read` makes of the value kept for `key`, if it is still good at `now`; read
    /// under the shard's lock, so nothing is copied that `read` does not take.
    pub fn get_with<R>(&self, key: &K, now: T, read: impl FnOnce(&V) -> Option<R>) -> Option<R> {
        let shard = self.shard(key).read().ok()?;
        shard
            .get(key)
            .filter(|(_, until)| *until > now)
            .and_then(|(value, _)| read(value))
    }

    /// Keeps `value` for `key` until `until`.
    pub fn insert(&self, key: K, value: V, until: T, now: T) {
        if self.shard_capacity == 0 {
            return;
        }
        let Ok(mut shard) = self.shard(&key).write() else {
            return;
        };
        if shard.len() >= self.shard_capacity && !shard.contains_key(&key) {
            shard.retain(|_, (_, until)| *until > now);
            if shard.len() >= self.shard_capacity {
                shard.clear();
            }
        }
        shard.insert(key, (value, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(first: u8, n: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[0] = first;
        k[1] = n;
        k
    }

    #[test]
    fn entries_are_good_until_their_expiry() {
        let cache = CredentialCache::new(100);
        cache.insert(key(1, 0), "alice", 10u64, 0);
        assert_eq!(cache.get(&key(1, 0), 9), Some("alice"));
        assert_eq!(cache.get(&key(1, 0), 10), None);
        assert_eq!(cache.get(&key(2, 0), 0), None);
    }

    #[test]
    fn a_full_shard_drops_expired_entries_first_then_everything() {
        // 32 entries in all: 2 per shard. These keys all land in shard 3.
        let cache = CredentialCache::new(32);
        cache.insert(key(3, 0), 'a', 5u64, 0);
        cache.insert(key(3, 1), 'b', 50, 0);
        // Full: the expired `a` makes room, `b` stays.
        cache.insert(key(3, 2), 'c', 50, 10);
        assert_eq!(cache.get(&key(3, 0), 0), None);
        assert_eq!(cache.get(&key(3, 1), 10), Some('b'));
        assert_eq!(cache.get(&key(3, 2), 10), Some('c'));
        // Full of good entries: the shard starts over.
        cache.insert(key(3, 3), 'd', 50, 10);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&key(3, 3), 10), Some('d'));
        // Replacing a kept key does not count as growth.
        cache.insert(key(3, 4), 'e', 50, 10);
        cache.insert(key(3, 4), 'f', 60, 10);
        assert_eq!(cache.get(&key(3, 4), 10), Some('f'));
        assert_eq!(cache.get(&key(3, 3), 10), Some('d'));
    }

    #[test]
    fn a_read_takes_only_what_it_accepts() {
        let cache = CredentialCache::new(100);
        cache.insert(7u64, ("token-a", 1), 10u64, 0);
        assert_eq!(
            cache.get_with(&7, 0, |(t, v)| (*t == "token-a").then_some(*v)),
            Some(1)
        );
        assert_eq!(
            cache.get_with(&7, 0, |(t, v)| (*t == "token-b").then_some(*v)),
            None
        );
        assert_eq!(cache.get_with(&7, 10, |(_, v)| Some(*v)), None);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = CredentialCache::new(0);
        cache.insert(key(1, 0), 1, 10u64, 0);
        assert_eq!(cache.get(&key(1, 0), 0), None);
    }
}
