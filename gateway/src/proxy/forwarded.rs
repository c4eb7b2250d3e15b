//! Who the client is: `X-Forwarded-*` are believed only from trusted proxies.

use crate::snapshot::Edge;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use std::cell::RefCell;
use std::net::IpAddr;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

// Lookups and inserts go by `HeaderName`: a `&str` key is parsed into one on every lookup
// (~300 instructions), and an insert looks a `&str` name up among the ones it has seen
// (~80); a `HeaderName` is only hashed, and cloned for an insert.
const X_FORWARDED_FOR_KEY: HeaderName = HeaderName::from_static(X_FORWARDED_FOR);
const X_FORWARDED_PROTO_KEY: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO);
const X_FORWARDED_HOST_KEY: HeaderName = HeaderName::from_static(X_FORWARDED_HOST);

/// The client address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, req: &RequestHeader, edge: &Edge) -> Option<IpAddr> {
    let peer = peer?;
    if edge.trusted_proxies.is_empty() || !edge.is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in req.headers.get_all(&X_FORWARDED_FOR_KEY).iter().rev() {
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
    if let Some(ip) = peer.and_then(peer_value) {
        // An untrusted peer's own list is replaced, so it is not looked up.
        let existing = trusted_peer
            .then(|| upstream.headers.get(&X_FORWARDED_FOR_KEY))
            .flatten();
        let xff = match existing {
            Some(existing) if !existing.is_empty() => {
                let ip = ip.as_bytes();
                let mut v = Vec::with_capacity(existing.len() + 2 + ip.len());
                v.extend_from_slice(existing.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                // The list becomes the value's buffer, not copied into another.
                HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
            }
            _ => Some(ip),
        };
        if let Some(xff) = xff {
            upstream.insert_header(X_FORWARDED_FOR_KEY, xff)?;
        }
    }
    if !(trusted_peer && upstream.headers.contains_key(&X_FORWARDED_PROTO_KEY)) {
        // Static values: no copy per request.
        let proto = if scheme == "https" {
            HeaderValue::from_static("https")
        } else {
            HeaderValue::from_static("http")
        };
        upstream.insert_header(X_FORWARDED_PROTO_KEY, proto)?;
    }
    if !(trusted_peer && upstream.headers.contains_key(&X_FORWARDED_HOST_KEY)) {
        let host = upstream
            .headers
            .get(http::header::HOST)
            .cloned()
            .or_else(|| {
                upstream
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        match host {
            Some(h) => {
                upstream.insert_header(X_FORWARDED_HOST_KEY, h)?;
            }
            None => {
                upstream.remove_header(&X_FORWARDED_HOST_KEY);
            }
        }
    }
    Ok(())
}

/// The peer's address as a header value. A thread's consecutive requests mostly come from
/// one peer (a keep-alive connection's requests; every request, behind a load balancer), so
/// the last value made is kept: making it wrote the address out and copied it into an
/// allocation on every request.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return Some(value.clone());
            }
        }
        let mut buf = [0u8; 39];
        let value = HeaderValue::from_bytes(ip_text(peer, &mut buf)).ok()?;
        *last = Some((peer, value.clone()));
        Some(value)
    })
}

/// An address as text, written into `buf` without the formatting machinery (an IPv4 address
/// on every proxied request).
fn ip_text(ip: IpAddr, buf: &mut [u8; 39]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            let n = cursor.position() as usize;
            &buf[..n]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.1.20.255",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 39];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn the_kept_value_follows_the_peer() {
        for ip in [
            "203.0.113.9",
            "203.0.113.9",
            "::1",
            "10.0.0.1",
            "203.0.113.9",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(peer_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

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
