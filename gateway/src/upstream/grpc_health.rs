//! The gRPC health checking protocol as an active health check: a unary
//! `grpc.health.v1.Health/Check` call over HTTP/2 (h2 over TLS, or h2c), healthy when the
//! call succeeds (`grpc-status: 0`) and the answer says `SERVING`.

use super::Member;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use prost::Message;
use std::time::Duration;

const PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;
/// The largest answer read (the real one is a few bytes).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

pub struct GrpcProbe {
    connector: Connector,
    /// The request message, framed (a length-prefixed message).
    frame: Bytes,
    timeout: Duration,
}

impl GrpcProbe {
    pub fn new(service: &str, timeout: Duration) -> Self {
        let message = HealthCheckRequest {
            service: service.to_string(),
        }
        .encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + message.len());
        frame.put_u8(0); // not compressed
        frame.put_u32(message.len() as u32);
        frame.put_slice(&message);
        GrpcProbe {
            connector: Connector::new(None),
            frame: frame.freeze(),
            timeout,
        }
    }

    /// One check of `member`, with the pool's own peer settings (TLS, CA, client
    /// certificate), over HTTP/2.
    pub async fn check(&self, member: &Member) -> Result<(), String> {
        let mut peer = (*member.peer).clone();
        peer.options.set_http_version(2, 2);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeout);
        o.total_connection_timeout = Some(self.timeout);
        o.read_timeout = Some(self.timeout);
        o.write_timeout = Some(self.timeout);
        let call = async {
            let (mut session, _) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| e.to_string())?;
            let result = self.call(&mut session, &member.address).await;
            if result.is_ok() {
                self.connector
                    .release_http_session(session, &peer, None)
                    .await;
            }
            result
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    async fn call(&self, session: &mut HttpSession, authority: &str) -> Result<(), String> {
        let HttpSession::H2(h2) = session else {
            return Err("the member did not speak HTTP/2".into());
        };
        let mut req =
            RequestHeader::build("POST", PATH.as_bytes(), None).map_err(|e| e.to_string())?;
        for (name, value) in [
            // Pingora's HTTP/2 client takes `:authority` from `Host`.
            ("host", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "portico-health-check"),
        ] {
            req.insert_header(name, value).map_err(|e| e.to_string())?;
        }
        h2.write_request_header(Box::new(req), false)
            .map_err(|e| e.to_string())?;
        h2.write_request_body(self.frame.clone(), true)
            .await
            .map_err(|e| e.to_string())?;
        h2.read_response_header().await.map_err(|e| e.to_string())?;
        let header = h2.response_header().ok_or("no response header")?.clone();
        if header.status != 200 {
            return Err(format!("HTTP status {}", header.status.as_u16()));
        }
        // A trailers-only answer carries its status in the header.
        let mut status = grpc_status(&header.headers);
        let mut body = BytesMut::new();
        if status.is_none() {
            while let Some(chunk) = h2.read_response_body().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Err("answer too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            let trailers = h2.read_trailers().await.map_err(|e| e.to_string())?;
            status = trailers.as_ref().and_then(grpc_status);
        }
        match status {
            Some((0, _)) => {}
            Some((code, message)) => return Err(format!("grpc-status {code} {message}")),
            None => return Err("no grpc-status".into()),
        }
        let answer = body.get(5..).ok_or("no answer message")?;
        let serving = HealthCheckResponse::decode(answer)
            .map_err(|e| format!("not a HealthCheckResponse: {e}"))?
            .status;
        if serving == SERVING {
            Ok(())
        } else {
            Err(format!("serving status {serving}, not SERVING"))
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_framed_health_check_request() {
        let p = GrpcProbe::new("users.v1.Users", Duration::from_secs(1));
        assert_eq!(p.frame[0], 0);
        let len = u32::from_be_bytes([p.frame[1], p.frame[2], p.frame[3], p.frame[4]]) as usize;
        assert_eq!(len, p.frame.len() - 5);
        let decoded = HealthCheckRequest::decode(&p.frame[5..]).unwrap();
        assert_eq!(decoded.service, "users.v1.Users");
        // The whole server: an empty message.
        assert_eq!(
            &GrpcProbe::new("", Duration::from_secs(1)).frame[..],
            &[0, 0, 0, 0, 0]
        );
    }
}
