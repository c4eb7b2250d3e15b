//! Where credentials travel in a request: `Authorization: Bearer …` and cookies.

use http::HeaderMap;

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` in any of the request's `Cookie` headers (HTTP/2 may split
/// them), if any and not empty.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .find_map(|v| crate::cookie::value(v.as_bytes(), name.as_bytes()))
        .filter(|v| !v.is_empty())
}
