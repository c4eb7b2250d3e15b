//! Responses the gateway produces itself: always the JSON error body (`docs/errors.md`).

use crate::json::push_string as json_string;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::error_resp::{gen_error_response, HeadError};
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use portico_plugins::{ErrorCode, Rejection, RequestId};

/// `{"error":{"code":…,"message":…,"request_id":…}}`
pub fn body(code: ErrorCode, message: &str, request_id: &str) -> Bytes {
    let mut out = String::with_capacity(96 + message.len());
    out.push_str("{\"error\":{\"code\":");
    json_string(&mut out, code.as_str());
    out.push_str(",\"message\":");
    json_string(&mut out, message);
    out.push_str(",\"request_id\":");
    json_string(&mut out, request_id);
    out.push_str("}}");
    Bytes::from(out)
}

/// The head and body of the JSON error answer for `rejection`.
pub fn error_answer(
    rejection: &Rejection,
    request_id: &RequestId,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let body = body(rejection.code, &rejection.message, request_id.as_str());
    let mut header = error_header(rejection.status, body.len(), request_id)?;
    for (name, value) in &rejection.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    Ok((header, body))
}

/// The head and body of an answer a plugin gave (a preflight, a redirect, a static page).
pub fn plugin_answer(
    answer: &portico_plugins::Answer,
    request_id: &RequestId,
) -> pingora::Result<(ResponseHeader, Bytes)> {
    let mut header = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (name, value) in &answer.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    if !request_id.is_empty() {
        header.insert_header(super::request_id::HEADER, request_id.header_value().clone())?;
    }
    Ok((header, answer.body.clone()))
}

/// Writes a gateway-produced response. Keep-alive is turned off (and the client told so) when
/// `close` is set or the request body may not have been read, so a large unread body is not
/// drained.
/// Writes a gateway answer; with no body the header ends the response (a gRPC
/// trailers-only answer).
pub async fn write(
    session: &mut Session,
    header: ResponseHeader,
    body: Option<Bytes>,
    close: bool,
) -> pingora::Result<()> {
    if close || !(session.is_body_empty() || session.is_body_done()) {
        session.set_keepalive(None);
    }
    match body {
        Some(body) => {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            session.write_response_body(Some(body), true).await?;
        }
        None => {
            // The header frame itself must end the stream (gRPC's trailers-only answer):
            // the proxy session's header write never ends it.
            session
                .as_downstream_mut()
                .response_duplex_vec(vec![pingora::protocols::http::HttpTask::Header(
                    Box::new(header),
                    true,
                )])
                .await?;
        }
    }
    Ok(())
}

/// The head of a JSON error answer.
fn error_header(
    status: u16,
    body_len: usize,
    request_id: &RequestId,
) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if !request_id.is_empty() {
        header.insert_header(super::request_id::HEADER, request_id.header_value().clone())?;
    }
    Ok(header)
}

/// The answers an HTTP/1 session writes itself, before the request path runs: a head that
/// does not parse (400; 431 when it is too large or has too many fields, 414 when its target
/// is longer than a URI may be), a refused method
/// (405 for CONNECT). The same JSON body as every other gateway answer, with a request id of
/// its own, and no `Server` header.
pub fn session_error_response(status: u16, head: Option<HeadError>) -> (ResponseHeader, Bytes) {
    let code = match head {
        Some(HeadError::TooLarge | HeadError::TooManyFields) => ErrorCode::HeadersTooLarge,
        Some(HeadError::UriTooLong) => ErrorCode::UriTooLong,
        _ => ErrorCode::for_status(status),
    };
    let request_id = RequestId::new(super::request_id::generate());
    let body = body(code, code.default_message(), request_id.as_str());
    match error_header(code.status(), body.len(), &request_id) {
        Ok(header) => (header, body),
        // Not reached for the fixed statuses above; Pingora's own answer is the fallback.
        Err(_) => (gen_error_response(status), Bytes::new()),
    }
}

/// Maps a proxying error to the status the client gets (0: the client is gone, send nothing).
pub fn status_for(error: &Error) -> u16 {
    use ErrorType::*;
    match &error.etype {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            if error.esource == pingora::ErrorSource::Downstream {
                if matches!(error.etype, ReadTimedout) {
                    408
                } else {
                    0
                }
            } else {
                504
            }
        }
        _ => match error.esource {
            pingora::ErrorSource::Upstream => 502,
            pingora::ErrorSource::Downstream => match error.etype {
                InvalidHTTPHeader | H1Error | H2Error | InvalidH2 => 400,
                _ => 0,
            },
            pingora::ErrorSource::Internal | pingora::ErrorSource::Unset => 502,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json() {
        let b = body(ErrorCode::RateLimited, "Too many \"requests\"\n", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        assert_eq!(v["error"]["message"], "Too many \"requests\"\n");
        assert_eq!(v["error"]["request_id"], "abc");
    }

    #[test]
    fn statuses() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(status_for(&e), 502);
        let e = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(status_for(&e), 504);
        let e = Error::new(ErrorType::HTTPStatus(413));
        assert_eq!(status_for(&e), 413);
    }
}
