//! The hash replicas must agree on: consistent-hash ring placement and rate-limit bucket
//! names. It is XXH3-64 with seed 0 over bytes this module lays out itself (never the
//! output of `std::hash::Hash`, which Rust does not promise stable across versions), so
//! two gateway builds, on any platform, hash the same input to the same number.

use std::net::IpAddr;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// XXH3-64 (seed 0) of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Hashes a sequence of parts; each part is framed (tag and length) so that different
/// sequences cannot produce the same byte stream.
pub struct StableHasher(Xxh3);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(Xxh3::new())
    }
}

impl StableHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A part: `tag`, its length as 4 little-endian bytes, then the bytes.
    pub fn part(&mut self, tag: u8, bytes: &[u8]) -> &mut Self {
        self.0.update(&[tag]);
        self.0.update(&(bytes.len() as u32).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// An address as a part: its 4 or 16 octets (`None`: an empty part).
    pub fn ip(&mut self, tag: u8, ip: Option<IpAddr>) -> &mut Self {
        match ip {
            Some(IpAddr::V4(v4)) => self.part(tag, &v4.octets()),
            Some(IpAddr::V6(v6)) => self.part(tag, &v6.octets()),
            None => self.part(tag, &[]),
        }
    }

    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values() {
        // Pinned: a change here moves every ring point and renames every shared bucket.
        assert_eq!(stable_hash(b""), 0x2d06800538d394c2);
        assert_eq!(stable_hash(b"portico"), stable_hash(b"portico"));
        let a = StableHasher::new().part(1, b"ab").part(1, b"c").finish();
        let b = StableHasher::new().part(1, b"a").part(1, b"bc").finish();
        assert_ne!(a, b, "parts are framed");
    }
}
