//! `RateLimit-Remaining` and `RateLimit-Reset` go on every response of a limited route, and a
//! number made into a `HeaderValue` the usual way (`HeaderValue::from(u64)`) is formatted into
//! a new allocation. Numbers below 1000, the usual ones, are slices of one static text instead.

use http::HeaderValue;

/// How many bytes 0 to 999 take written end to end: 10 of one digit, 90 of two, 900 of three.
const LEN: usize = 10 + 90 * 2 + 900 * 3;

/// `0123456789101112…998999`.
const DIGITS: [u8; LEN] = {
    let mut out = [0u8; LEN];
    let mut at = 0;
    let mut n = 0;
    while n < 1000 {
        if n >= 100 {
            out[at] = b'0' + (n / 100) as u8;
            at += 1;
        }
        if n >= 10 {
            out[at] = b'0' + (n / 10 % 10) as u8;
            at += 1;
        }
        out[at] = b'0' + (n % 10) as u8;
        at += 1;
        n += 1;
    }
    out
};

const TEXT: &str = match std::str::from_utf8(&DIGITS) {
    Ok(text) => text,
    Err(_) => panic!("digits are ASCII"),
};

/// `n` in decimal as a header value.
pub fn number_value(n: u64) -> HeaderValue {
    let (start, len) = match n {
        0..=9 => (n, 1),
        10..=99 => (10 + (n - 10) * 2, 2),
        100..=999 => (190 + (n - 100) * 3, 3),
        _ => return HeaderValue::from(n),
    };
    let start = start as usize;
    TEXT.get(start..start + len)
        .map_or_else(|| HeaderValue::from(n), HeaderValue::from_static)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_reads_as_itself() {
        for n in (0..=1_100).chain([9_999, 4_294_967_295, u64::MAX]) {
            assert_eq!(number_value(n), HeaderValue::from(n), "{n}");
        }
    }
}
