//! The hash replicas must agree on: consistent-hash ring placement and rate-limit bucket
//! names. It is XXH3-64 with seed 0 over bytes this module lays out itself (never the
//! output of `std::hash::Hash`, which Rust does not promise stable across versions), so
//! two gateway builds, on any platform, hash the same input to the same number.

use smallvec::SmallVec;
use std::net::IpAddr;
use xxhash_rust::xxh3::xxh3_64;

/// XXH3-64 (seed 0) of `bytes`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Hashes a sequence of parts; each part is framed (tag and length) so that different
/// sequences cannot produce the same byte stream.
///
/// The parts are laid out in a buffer on the stack and hashed in one go at the end: XXH3
/// hashes an input to the same number streamed or whole, and the streaming state's setup
/// (a copy of its 192-byte secret, a 256-byte buffer) cost more than hashing a rate-limit
/// key whole.
#[derive(Default)]
pub struct StableHasher(SmallVec<[u8; 128]>);

impl StableHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A part: `tag`, its length as 4 little-endian bytes, then the bytes.
    pub fn part(&mut self, tag: u8, bytes: &[u8]) -> &mut Self {
        self.0.push(tag);
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
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
        xxh3_64(&self.0)
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

    #[test]
    fn parts_hash_as_the_streaming_hasher_hashed_them() {
        // Earlier builds streamed the parts into XXH3; replicas of both must agree.
        let long = vec![7u8; 300];
        let parts: [&[(u8, &[u8])]; 4] = [
            &[],
            &[(1, b"203.0.113.9"), (2, b"alice")],
            &[(0xFF, &[127, 0, 0, 1]), (3, b"")],
            &[(2, &long), (4, b"x")],
        ];
        for parts in parts {
            let mut streamed = xxhash_rust::xxh3::Xxh3::new();
            let mut gathered = StableHasher::new();
            for (tag, bytes) in parts {
                streamed.update(&[*tag]);
                streamed.update(&(bytes.len() as u32).to_le_bytes());
                streamed.update(bytes);
                gathered.part(*tag, bytes);
            }
            assert_eq!(gathered.finish(), streamed.digest());
        }
    }
}
