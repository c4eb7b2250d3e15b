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
        hex(portico_plugins::hash::stable_hash(&seed))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 32];
    digits[..16].copy_from_slice(prefix);
    digits[16..].copy_from_slice(&hex((n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    // The array itself becomes the value's one shared buffer: a copy into a `Vec` would make
    // `Bytes` allocate again on its first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(digits))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `v` as 16 lowercase hex digits, most significant first. All sixteen at once, a nibble to
/// a byte of one 128-bit word (a digit at a time was ~70 instructions of every request).
fn hex(v: u64) -> [u8; 16] {
    const fn bytes(b: u8) -> u128 {
        u128::from_ne_bytes([b; 16])
    }
    // Halve each lane until every nibble has a byte of its own: nibble k in byte k.
    let mut x = u128::from(v);
    x = (x | (x << 32)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF_u128;
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF_u128;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF_u128;
    x = (x | (x << 4)) & bytes(0x0F);
    // A nibble over 9 carries into its byte's bit 4 when 6 is added (no byte overflows).
    let letters = ((x + bytes(6)) >> 4) & bytes(1);
    (x + bytes(b'0') + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
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
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        let mut v = 1u64;
        for _ in 0..10_000 {
            assert_eq!(hex(v).as_slice(), format!("{v:016x}").as_bytes());
            v = v.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7) ^ (v >> 3);
        }
        for v in [0, u64::MAX, 0xa0a0_a0a0_a0a0_a0a0, 0x0909_0909_0909_0909] {
            assert_eq!(hex(v).as_slice(), format!("{v:016x}").as_bytes());
        }
    }
}
