//! JSON text written by hand where the request path writes it (error bodies, access-log
//! lines): building a `serde_json::Value` there would allocate per field, and `write!` costs
//! more than the copying it does (an access-log line spent ~5k instructions in `core::fmt`).

use std::net::IpAddr;
use std::time::Duration;

/// Appends `s` as a JSON string, quoted and escaped. Runs of bytes that need no escape are
/// copied whole; every byte that needs one is ASCII, so a run never splits a character.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_to_escape(bytes, start) {
        let b = bytes[i];
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Text written out as a JSON string once (quoted and escaped): a route's, a pool's or a
/// member's name goes into every access-log line as it is, and the escape scan cost more
/// than the copy on names this short.
pub struct JsonString(Box<str>);

impl JsonString {
    pub fn new(text: &str) -> JsonString {
        let mut quoted = String::with_capacity(text.len() + 2);
        push_string(&mut quoted, text);
        JsonString(quoted.into())
    }

    /// The JSON string, quotes included.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JsonString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The index of the first byte from `from` on that JSON strings cannot hold as it is. Eight
/// bytes are looked at per step: paths, hosts and user agents nearly never hold one, and a
/// byte at a time cost ~5 instructions per byte.
fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether a byte of `w` is zero (exact as a yes or no for the whole word).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    let rest = bytes.get(from..)?;
    let mut words = rest.chunks_exact(8);
    let mut clean = 0;
    for word in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let w = u64::from_ne_bytes(w);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        if below_space
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        clean += 8;
    }
    rest[clean..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| from + clean + i)
}

/// Appends `s` quoted, without looking for bytes to escape: only for text whose alphabet has
/// none (a request id that passed `request_id::is_valid`, an HTTP method, a protocol name).
/// The look costs more than the copy on a short string.
pub fn push_plain_string(out: &mut String, s: &str) {
    debug_assert!(!s.bytes().any(needs_escape), "{s:?} needs escaping");
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// Whether JSON strings cannot hold `b` as it is.
pub fn needs_escape(b: u8) -> bool {
    NEEDS_ESCAPE[usize::from(b)]
}

/// The bytes JSON strings cannot hold as they are: `"`, `\\` and the control characters.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `n` in decimal.
pub fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `d` in milliseconds with three decimals (`1.500`), rounded to the microsecond.
pub fn push_millis(out: &mut String, d: Duration) {
    // In u64: `as_nanos` is a u128, whose division is a library call (~100 instructions).
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((d.subsec_nanos() + 500) / 1000));
    push_u64(out, micros / 1000);
    out.push('.');
    push_three_digits(out, (micros % 1000) as u16);
}

/// Appends `n` (below 1000) as three digits, zero-padded (`045`).
pub fn push_three_digits(out: &mut String, n: u16) {
    for digit in [n / 100 % 10, n / 10 % 10, n % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends the address as a JSON string (`"203.0.113.9"`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    out.push('"');
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
        }
        // Rare at an edge that listens on IPv4 mostly, and its shortening rules are long.
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, s);
        out
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "line\nbreak\r\ttab",
            "\u{1}\u{1f}\u{7f}",
            "héllo → 世界 🎉",
            "\"",
            "end\\",
        ] {
            let line = string(s);
            let back: String = serde_json::from_str(&line).unwrap();
            assert_eq!(back, s, "{line}");
        }
        assert_eq!(string("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn every_byte_to_escape_is_found_wherever_it_sits_in_a_word() {
        // Long enough for two words and a tail, with multi-byte characters around.
        let base = "é-abcdefghijklmnopq-→";
        for escape in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..=base.len() {
                if !base.is_char_boundary(at) {
                    continue;
                }
                let s = format!("{}{escape}{}", &base[..at], &base[at..]);
                let line = string(&s);
                let back: String = serde_json::from_str(&line).unwrap();
                assert_eq!(back, s, "{line}");
                assert_eq!(next_to_escape(s.as_bytes(), 0), Some(at), "{s:?}");
            }
        }
        // Bytes above ASCII (and DEL) never need escaping.
        assert_eq!(next_to_escape("→€ü\u{7f}abcdefghij".as_bytes(), 0), None);
        assert_eq!(next_to_escape(b"abc", 3), None);
        assert_eq!(next_to_escape(b"abc", 4), None);
    }

    #[test]
    fn millis_have_three_decimals_rounded_to_the_microsecond() {
        let millis = |d| {
            let mut out = String::new();
            push_millis(&mut out, d);
            out
        };
        assert_eq!(millis(Duration::ZERO), "0.000");
        assert_eq!(millis(Duration::from_micros(1500)), "1.500");
        assert_eq!(millis(Duration::from_nanos(1_234_567)), "1.235");
        assert_eq!(millis(Duration::from_nanos(999_999_600)), "1000.000");
        assert_eq!(millis(Duration::from_secs(86_400)), "86400000.000");
        // Beyond u64 microseconds (584,000 years) it saturates rather than wraps.
        assert_eq!(millis(Duration::MAX), "18446744073709551.615");
    }

    #[test]
    fn addresses_read_as_the_standard_library_writes_them() {
        for ip in [
            "0.0.0.0",
            "203.0.113.9",
            "255.255.255.255",
            "::1",
            "2001:db8::42",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("\"{ip}\""));
        }
    }
}
