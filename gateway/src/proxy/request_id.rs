//! `X-Request-Id`: a client's valid id is kept; otherwise one is generated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const HEADER: &str = "x-request-id";
/// For lookups, which parse a `&str` key on every call.
const HEADER_KEY: http::HeaderName = http::HeaderName::from_static(HEADER);
const MAX_LEN: usize = 128;

/// The request's id: the client's when valid, else a new one.
pub fn of(req: &pingora::http::RequestHeader) -> String {
    match req.headers.get(&HEADER_KEY) {
        Some(v) if is_valid(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => generate(),
    }
}

/// Accepts ids made of URL-safe characters, up to 128 of them.
pub fn is_valid(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=')
        })
}

/// 32 hex digits: a per-process random prefix and a counter, unique across replicas without
/// coordination.
pub fn generate() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let t = portico_plugins::clock::since_unix_epoch().as_nanos() as u64;
        let mut seed = [0u8; 12];
        seed[..8].copy_from_slice(&t.to_le_bytes());
        seed[8..].copy_from_slice(&std::process::id().to_le_bytes());
        portico_plugins::hash::stable_hash(&seed)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 32];
    write_hex(&mut digits[..16], prefix);
    write_hex(
        &mut digits[16..],
        (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    // Filled into an array and copied once: pushing 32 chars one by one checked the
    // string's room 32 times (and `from_utf8_lossy` costs more than the copy).
    String::from_utf8(digits.to_vec()).unwrap_or_default()
}

fn write_hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().rev().enumerate() {
        *digit = DIGITS[((v >> (i * 4)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_valid() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_valid(a.as_bytes()));
        assert!(!is_valid(b"has space"));
        assert!(!is_valid(&[b'a'; 129]));
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // The counter half of consecutive ids differs; the process half does not.
        assert_eq!(a[..16], b[..16]);
    }

    #[test]
    fn a_valid_id_never_needs_json_escaping() {
        // The access log writes ids as they are.
        for b in 0..=u8::MAX {
            if is_valid(&[b]) {
                assert!(!crate::json::needs_escape(b), "byte {b:#x}");
            }
        }
    }

    #[test]
    fn hex_digits_are_written_most_significant_first() {
        let mut out = [0u8; 16];
        write_hex(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
    }
}
