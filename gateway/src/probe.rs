//! `portico probe`: asks the admin listener of a running gateway for `/health` (or another
//! path) and exits 0 on a 2xx answer. For container `HEALTHCHECK`s and supervisors on images
//! that carry no HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not an address to connect to")]
    Address(String),
    #[error("{address}: {source}")]
    Io {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{address}{path} answered `{status_line}`")]
    Status {
        address: SocketAddr,
        path: String,
        status_line: String,
    },
}

/// Where to reach a listener bound to `address`: an unspecified IP (`0.0.0.0`, `::`) means
/// this host, so loopback.
pub fn reachable(address: &str) -> Result<SocketAddr, ProbeError> {
    let mut addr = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ProbeError::Address(address.to_string()))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// One `GET path` with `timeout` for each step; the status line on success.
pub fn probe(address: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let io = |source| ProbeError::Io { address, source };
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: portico-probe\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let ok = status_line
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.starts_with('2') && code.len() == 3);
    if ok {
        Ok(status_line)
    } else {
        Err(ProbeError::Status {
            address,
            path: path.to_string(),
            status_line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_probed_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9901").unwrap(),
            "127.0.0.1:9901".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:9901").unwrap(),
            "[::1]:9901".parse().unwrap()
        );
        assert!(reachable("nonsense").is_err());
    }
}
