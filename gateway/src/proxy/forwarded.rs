//! Who the client is: `X-Forwarded-*` are believed only from trusted proxies.

use crate::snapshot::Edge;
use pingora::http::RequestHeader;
use std::net::IpAddr;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// The client address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, req: &RequestHeader, edge: &Edge) -> Option<IpAddr> {
    let peer = peer?;
    if edge.trusted_proxies.is_empty() || !edge.is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in req.headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !edge.is_trusted(ip) {
                        return Some(ip);
                    }
                }
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

/// Sets `X-Forwarded-For/-Proto/-Host` on the upstream request. From an untrusted peer, the
/// client's own values are replaced, not extended.
pub fn apply(
    upstream: &mut RequestHeader,
    peer: Option<IpAddr>,
    trusted_peer: bool,
    scheme: &str,
) -> pingora::Result<()> {
    if let Some(peer) = peer {
        let xff = match upstream.headers.get(X_FORWARDED_FOR) {
            Some(existing) if trusted_peer => {
                let mut v = String::with_capacity(existing.len() + 48);
                v.push_str(existing.to_str().unwrap_or(""));
                if !v.is_empty() {
                    v.push_str(", ");
                }
                v.push_str(&peer.to_string());
                v
            }
            _ => peer.to_string(),
        };
        upstream.insert_header(X_FORWARDED_FOR, xff)?;
    }
    if !(trusted_peer && upstream.headers.contains_key(X_FORWARDED_PROTO)) {
        // Static values: no copy per request.
        let proto = if scheme == "https" {
            http::HeaderValue::from_static("https")
        } else {
            http::HeaderValue::from_static("http")
        };
        upstream.insert_header(X_FORWARDED_PROTO, proto)?;
    }
    if !(trusted_peer && upstream.headers.contains_key(X_FORWARDED_HOST)) {
        let host = upstream
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                upstream
                    .uri
                    .authority()
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            });
        match host {
            Some(h) => {
                upstream.insert_header(X_FORWARDED_HOST, h)?;
            }
            None => {
                upstream.remove_header(X_FORWARDED_HOST);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> Edge {
        Edge {
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
            max_header_bytes: 0,
            max_headers: 0,
            max_uri_bytes: 0,
            max_body_bytes: 0,
            request_header_timeout: Default::default(),
            keepalive_timeout: Default::default(),
            keepalive_reuses: None,
        }
    }

    fn req(xff: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header(X_FORWARDED_FOR, xff).unwrap();
        r
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let ip = client_ip(
            Some("1.2.3.4".parse().unwrap()),
            &req("9.9.9.9"),
            &edge(&[]),
        );
        assert_eq!(ip, Some("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let e = edge(&["10.0.0.0/8"]);
        let r = req("6.6.6.6, 5.5.5.5, 10.1.1.1");
        let ip = client_ip(Some("10.0.0.2".parse().unwrap()), &r, &e);
        assert_eq!(ip, Some("5.5.5.5".parse().unwrap()));
    }

    #[test]
    fn spoofed_xff_is_replaced_from_untrusted_peer() {
        let mut r = req("6.6.6.6");
        apply(&mut r, Some("1.2.3.4".parse().unwrap()), false, "https").unwrap();
        assert_eq!(r.headers.get(X_FORWARDED_FOR).unwrap(), "1.2.3.4");
        assert_eq!(r.headers.get(X_FORWARDED_PROTO).unwrap(), "https");
    }
}
