//! A hash that is the same in every process and run, so replicas agree on ring placement and
//! on rate-limit bucket names.

use std::hash::{Hash, Hasher};

/// SipHash with fixed zero keys: stable across processes (unlike `RandomState`).
pub fn stable_hasher() -> impl Hasher {
    #[allow(deprecated)]
    std::hash::SipHasher::new()
}

pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = stable_hasher();
    value.hash(&mut h);
    h.finish()
}
