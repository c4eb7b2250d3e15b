//! Reading one cookie out of a `Cookie` header without allocating.

/// The value of cookie `name` in one `Cookie` header.
pub fn value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_one_cookie() {
        let h = b"a=1; session=xyz ; b=2";
        assert_eq!(value(h, b"session"), Some(&b"xyz"[..]));
        assert_eq!(value(h, b"b"), Some(&b"2"[..]));
        assert_eq!(value(h, b"c"), None);
    }
}
