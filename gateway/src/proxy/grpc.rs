//! gRPC at the edge. A request is gRPC when it is a POST whose content type says so. The
//! gateway's own answers to one (auth, rate limit, no route, upstream down, timeout) are gRPC
//! statuses — HTTP 200 with `grpc-status` and `grpc-message` and no body ("trailers-only") —
//! since a gRPC client reads those, not a JSON body; and `grpc-timeout` is the call's deadline.

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use portico_plugins::{ErrorCode, Rejection, RequestId};
use std::time::Duration;

pub fn is_grpc(req: &RequestHeader) -> bool {
    // Every gRPC (and gRPC-Web) call is a POST: other requests are not looked up for the
    // content type.
    req.method == http::Method::POST
        && req
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code for a gateway error (the codes of `google.rpc.Code`).
pub fn status_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadRequest | ErrorCode::UriTooLong | ErrorCode::HeadersTooLarge => 3, // INVALID_ARGUMENT
        ErrorCode::RequestTimeout | ErrorCode::GatewayTimeout => 4, // DEADLINE_EXCEEDED
        ErrorCode::Forbidden => 7,                                  // PERMISSION_DENIED
        ErrorCode::RateLimited | ErrorCode::PayloadTooLarge => 8,   // RESOURCE_EXHAUSTED
        ErrorCode::RouteNotFound | ErrorCode::MethodNotAllowed => 12, // UNIMPLEMENTED
        ErrorCode::InternalError => 13,                             // INTERNAL
        ErrorCode::BadGateway | ErrorCode::UpstreamUnavailable => 14, // UNAVAILABLE
        ErrorCode::Unauthorized => 16,                              // UNAUTHENTICATED
    }
}

/// The trailers-only answer to a gRPC request the gateway refuses. The rejection's own
/// headers (`Retry-After`, `WWW-Authenticate`) go with it.
pub fn answer(rejection: &Rejection, request_id: &RequestId) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(200, Some(6))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    // No body: over HTTP/1 (gRPC-Web) the connection stays usable.
    h.insert_header(http::header::CONTENT_LENGTH, "0")?;
    h.insert_header("grpc-status", status_for(rejection.code).to_string())?;
    h.insert_header("grpc-message", percent_encode(&rejection.message))?;
    h.insert_header(super::request_id::HEADER, request_id.header_value().clone())?;
    for (name, value) in &rejection.headers {
        h.append_header(name.clone(), value.clone())?;
    }
    Ok(h)
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
fn percent_encode(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The call's deadline from `grpc-timeout` (`1S`, `250m`, `30u`, …; at most 8 digits).
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let v = req.headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        r.insert_header(name.to_string(), value).unwrap();
        r
    }

    #[test]
    fn grpc_timeouts_parse_by_unit_and_refuse_the_malformed() {
        let t = |v| timeout(&with("grpc-timeout", v));
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("30u"), Some(Duration::from_micros(30)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "1s", "1.5S", "-1S", "1"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_are_trailers_only_with_the_matching_code() {
        let mut r = Rejection::new(ErrorCode::RateLimited, "Too many requests; retry after 3 s");
        r.headers
            .push((http::header::RETRY_AFTER, HeaderValue::from(3)));
        let h = answer(&r, &RequestId::new(HeaderValue::from_static("req-1"))).unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.headers["grpc-status"], "8");
        assert_eq!(h.headers["content-type"], "application/grpc");
        assert_eq!(h.headers["retry-after"], "3");
        assert_eq!(h.headers["x-request-id"], "req-1");
        let r = Rejection::new(ErrorCode::Unauthorized, "100% über");
        assert_eq!(
            answer(&r, &RequestId::new(HeaderValue::from_static("x")))
                .unwrap()
                .headers["grpc-message"],
            "100%25 %C3%BCber"
        );
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        let mut get = with("content-type", "application/grpc");
        get.set_method(http::Method::GET);
        assert!(!is_grpc(&get));
    }
}
