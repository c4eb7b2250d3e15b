//! `X-Request-Id`: a client's valid id is kept; otherwise one is generated.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use portico_plugins::RequestId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A constant rather than text: a `&str` name is parsed on every lookup and insert.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// The request's id: the client's when valid (shared with the request's head, not copied),
/// else a new one.
pub fn of(req: &pingora::http::RequestHeader) -> RequestId {
    match req.headers.get(&HEADER) {
        Some(v) if is_valid(v.as_bytes()) => RequestId::new(v.clone()),
        _ => RequestId::new(generate()),
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
pub fn generate() -> HeaderValue {
    // The process's half is written out once.
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let t = portico_plugins::clock::since_unix_epoch().as_nanos() as u64;
        let mut seed = [0u8; 12];
        seed[..8].copy_from_slice(&t.to_le_bytes());
        seed[8..].copy_from_slice(&std::process::id().to_le_bytes());
        let mut digits = [0u8; 16];
        write_hex(&mut digits, portico_plugins::hash::stable_hash(&seed));
        digits
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 32];
    digits[..16].copy_from_slice(prefix);
    write_hex(
        &mut digits[16..],
        (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    // The array itself becomes the value's one shared buffer: a copy into a `Vec` would make
    // `Bytes` allocate again on its first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(digits))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
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
        let a = generate().to_str().unwrap().to_owned();
        let b = generate().to_str().unwrap().to_owned();
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
    fn a_clients_valid_id_is_kept_and_an_invalid_one_replaced() {
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(HEADER, "client-id.1").unwrap();
        assert_eq!(of(&req).as_str(), "client-id.1");
        assert_eq!(of(&req).header_value(), "client-id.1");
        req.insert_header(HEADER, "no spaces").unwrap();
        let replaced = of(&req);
        assert_eq!(replaced.len(), 32);
        assert!(is_valid(replaced.as_bytes()));
        let req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(of(&req).header_value().len(), 32);
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
