//! Where credentials travel in a request: `Authorization: Bearer …` and cookies.

use crate::api::Presented;
use http::{HeaderMap, HeaderValue};
use pingora::http::RequestHeader;

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

/// Removes a verified credential from the request sent upstream: the `Authorization` header,
/// or the named cookies (with their chunks `NAME.0`, `NAME.1`, …) while keeping the others.
pub fn strip(upstream: &mut RequestHeader, presented: &Presented) {
    match presented {
        Presented::Bearer => {
            upstream.remove_header(&http::header::AUTHORIZATION);
        }
        Presented::Cookies(names) => {
            let headers = &upstream.headers;
            let mine = |pair: &[u8]| {
                let name = pair
                    .split(|&b| b == b'=')
                    .next()
                    .unwrap_or(pair)
                    .trim_ascii();
                names.iter().any(|n| is_cookie_or_chunk(name, n.as_bytes()))
            };
            let values = headers.get_all(http::header::COOKIE);
            if !values
                .iter()
                .any(|v| v.as_bytes().split(|&b| b == b';').any(mine))
            {
                return;
            }
            let kept: Vec<Vec<u8>> = values
                .iter()
                .map(|v| {
                    let pairs: Vec<&[u8]> = v
                        .as_bytes()
                        .split(|&b| b == b';')
                        .map(<[u8]>::trim_ascii)
                        .filter(|p| !p.is_empty() && !mine(p))
                        .collect();
                    pairs.join(&b"; "[..])
                })
                .filter(|v| !v.is_empty())
                .collect();
            upstream.remove_header(&http::header::COOKIE);
            for v in kept {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    let _ = upstream.append_header(http::header::COOKIE, v);
                }
            }
        }
    }
}

/// `name` is `cookie` or one of its chunks (`cookie.0`, `cookie.1`, …).
fn is_cookie_or_chunk(name: &[u8], cookie: &[u8]) -> bool {
    match name.strip_prefix(cookie) {
        Some([]) => true,
        Some([b'.', digits @ ..]) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_bearer_token_is_what_follows_the_scheme_in_any_case() {
        let token = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(value).unwrap(),
            );
            bearer(&headers).map(str::to_owned)
        };
        assert_eq!(token(b"Bearer abc.def-_"), Some("abc.def-_".into()));
        assert_eq!(token(b"bEaReR   padded\t "), Some("padded".into()));
        assert_eq!(token(b"Bearer a\tb"), Some("a\tb".into()));
        assert_eq!(token(b"Bearer "), None);
        assert_eq!(token(b"Bearer"), None);
        assert_eq!(token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(token(b"Bearerabc"), None);
        // Not ASCII (`obs-text`, valid UTF-8 or not): refused.
        assert_eq!(token("Bearer t\u{e9}st".as_bytes()), None);
        assert_eq!(token(b"Bearer t\xe9st"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    fn cookies(req: &RequestHeader) -> Vec<String> {
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn strips_only_the_credential() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header(
            "cookie",
            "theme=dark; ba.session_token=t.s; ba.session_data.0=x",
        )
        .unwrap();
        req.append_header("cookie", "ba.session_data.1=y; ba.session_tokenish=keep")
            .unwrap();
        req.append_header("authorization", "Bearer abc").unwrap();
        let names: Arc<[String]> = vec!["ba.session_token".into(), "ba.session_data".into()].into();
        strip(&mut req, &Presented::Cookies(names));
        assert_eq!(
            cookies(&req),
            vec!["theme=dark", "ba.session_tokenish=keep"]
        );
        assert!(req.headers.get("authorization").is_some(), "cookies only");
        strip(&mut req, &Presented::Bearer);
        assert!(req.headers.get("authorization").is_none());
    }

    #[test]
    fn a_request_with_only_the_credential_loses_the_cookie_header() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "ba.session_token=t.s").unwrap();
        strip(
            &mut req,
            &Presented::Cookies(vec!["ba.session_token".into()].into()),
        );
        assert!(cookies(&req).is_empty());
    }
}
