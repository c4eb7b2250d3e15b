//! What the request path reads off the client's request head: the host it asked for, the
//! size of its head, and the path it goes upstream with.

use crate::snapshot::{Edge, Route};
use pingora::http::RequestHeader;
use portico_plugins::ErrorCode;
use std::borrow::Cow;

/// The request's host, lower case and without port, borrowed when it already is.
pub fn host(req: &RequestHeader) -> Cow<'_, str> {
    host_of(req, req.headers.get(http::header::HOST))
}

/// [`host`], for a request whose `Host` fields have not been checked yet; or why they make it
/// malformed in a way the parser lets through: an HTTP/1.1 request needs exactly one `Host`
/// (RFC 9112 §3.2), and several are refused at any version. One lookup answers both.
pub fn checked_host(req: &RequestHeader) -> Result<Cow<'_, str>, &'static str> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err("The request has more than one Host header"),
        (None, None) if req.version == http::Version::HTTP_11 => {
            Err("An HTTP/1.1 request needs a Host header")
        }
        (field, _) => Ok(host_of(req, field)),
    }
}

/// The host of the request's target, else of its `Host` field.
fn host_of<'a>(req: &'a RequestHeader, field: Option<&'a http::HeaderValue>) -> Cow<'a, str> {
    let raw = req
        .uri
        .host()
        .or_else(|| field?.to_str().ok())
        .unwrap_or("");
    // A byte scan: `str::rfind` sets up a searcher that costs more than the scan on a host
    // this short (~170 instructions against ~60).
    let host = match raw.bytes().rposition(|b| b == b':') {
        // Keep IPv6 literals (`[::1]`) intact; strip a trailing `:port`.
        Some(i) if !raw.ends_with(']') => &raw[..i],
        _ => raw,
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The first of the edge's limits the request head exceeds, with the message to answer.
pub fn exceeded_limit(req: &RequestHeader, edge: &Edge) -> Option<(ErrorCode, &'static str)> {
    let over = |code: ErrorCode| Some((code, code.default_message()));
    if req.raw_path().len() > edge.max_uri_bytes {
        return over(ErrorCode::UriTooLong);
    }
    let (bytes, count) = head_size(req);
    if count > edge.max_headers || bytes > edge.max_header_bytes {
        return over(ErrorCode::HeadersTooLarge);
    }
    // An HTTP/1 head keeps the length its reader reconciled; HTTP/2 heads keep none.
    let len = match req.body_framing() {
        Some(framing) => u64::try_from(framing.content_length?).unwrap_or(u64::MAX),
        None => {
            let value = req.headers.get(http::header::CONTENT_LENGTH)?;
            match value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(n) => n,
                None => return Some((ErrorCode::BadRequest, "Invalid Content-Length")),
            }
        }
    };
    if len > edge.max_body_bytes {
        return over(ErrorCode::PayloadTooLarge);
    }
    None
}

/// The head's size in bytes (as sent, give or take line endings) and its number of fields.
fn head_size(req: &RequestHeader) -> (usize, usize) {
    let mut bytes = req.method.as_str().len() + req.raw_path().len() + 12;
    let mut count = 0;
    for (name, value) in req.headers.iter() {
        bytes += name.as_str().len() + value.len() + 4;
        count += 1;
    }
    (bytes, count)
}

/// The path (and query) to send upstream after `strip_prefix` / `rewrite`; `None` when unchanged.
pub fn upstream_uri(route: &Route, req: &RequestHeader) -> Option<http::Uri> {
    let path = req.uri.path();
    let new_path: Cow<'_, str> = if let Some(prefix) = &route.strip_prefix {
        let rest = path.get(prefix.len()..).unwrap_or("");
        if rest.starts_with('/') {
            Cow::Borrowed(rest)
        } else {
            Cow::Owned(format!("/{rest}"))
        }
    } else if let Some((re, replacement)) = &route.rewrite {
        match re.replace(path, replacement.as_str()) {
            Cow::Borrowed(_) => return None,
            Cow::Owned(p) => Cow::Owned(p),
        }
    } else {
        return None;
    };
    let pq = match req.uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.into_owned(),
    };
    http::Uri::builder().path_and_query(pq).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_lower_case_without_port() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "Example.COM:8080").unwrap();
        assert_eq!(host(&req), "example.com");
        req.insert_header("host", "[::1]").unwrap();
        assert_eq!(host(&req), "[::1]");
        req.insert_header("host", "[::1]:8080").unwrap();
        assert_eq!(host(&req), "[::1]");
        req.insert_header("host", "api.example.com").unwrap();
        assert!(matches!(host(&req), Cow::Borrowed("api.example.com")));
        req.insert_header("host", "api.example.com:").unwrap();
        assert_eq!(host(&req), "api.example.com");
        // A value `to_str` refuses is no host at all.
        req.insert_header(
            "host",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap(),
        )
        .unwrap();
        assert_eq!(host(&req), "");
        // The request target's host comes first.
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.set_uri(http::Uri::from_static("http://Target.Example:81/x"));
        req.insert_header("host", "other.example").unwrap();
        assert_eq!(host(&req), "target.example");
    }

    #[test]
    fn checked_host_needs_one_host_field_on_http_1_1_and_at_most_one_on_http_1_0() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(
            checked_host(&req),
            Err("An HTTP/1.1 request needs a Host header")
        );
        req.set_version(http::Version::HTTP_10);
        assert_eq!(checked_host(&req), Ok(Cow::Borrowed("")));
        req.append_header("host", "Example.com").unwrap();
        assert_eq!(checked_host(&req).as_deref(), Ok("example.com"));
        req.append_header("host", "other.example").unwrap();
        assert_eq!(
            checked_host(&req),
            Err("The request has more than one Host header")
        );
    }
}
