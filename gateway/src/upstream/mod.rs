//! Upstream pools: members, selection, and health state.

mod health;
mod select;

pub use health::{run_health_checks, HealthChecker};
pub use select::stable_hash;

use crate::config::{Balance, UpstreamConfig};
use http::HeaderName;
use pingora::upstreams::peer::HttpPeer;
use select::{LeastRequest, Ring, RoundRobin};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One upstream server.
pub struct Member {
    /// As written in the config (`host:port`).
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Where the member came from (`static`).
    pub source: &'static str,
    /// Built once; cloned per request (cheaper than building a peer per request).
    pub peer: HttpPeer,
    healthy: AtomicBool,
    inflight: AtomicUsize,
}

impl Member {
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
    /// Counts a request in flight until the guard drops (for least-request).
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("address", &self.address)
            .field("weight", &self.weight)
            .field("healthy", &self.is_available())
            .finish()
    }
}

pub struct InflightGuard(Arc<Member>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Path,
}

impl HashKey {
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let text = text.trim();
        if let Some(h) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(h.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{h}` is not a valid header name"));
        }
        if let Some(c) = text.strip_prefix("cookie:") {
            let c = c.trim();
            if c.is_empty() {
                return Err("a cookie name is required after `cookie:`".into());
            }
            return Ok(HashKey::Cookie(c.to_string()));
        }
        match text {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            other => Err(format!(
                "unknown hash key `{other}`; use header:NAME, cookie:NAME, client_ip or path"
            )),
        }
    }

    /// The key's hash for this request; `None` when the request does not carry the key
    /// (the pool then falls back to round robin).
    pub fn hash(
        &self,
        req: &pingora::http::RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Option<u64> {
        match self {
            HashKey::Header(name) => req.headers.get(name).map(|v| stable_hash(v.as_bytes())),
            HashKey::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes()))
                .map(stable_hash),
            HashKey::ClientIp => client_ip.map(|ip| stable_hash(&ip)),
            HashKey::Path => Some(stable_hash(req.uri.path().as_bytes())),
        }
    }
}

/// The value of cookie `name` in one `Cookie` header, without allocating.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

enum Selector {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Consistent {
        ring: Ring,
        fallback: RoundRobin,
        key: HashKey,
    },
}

/// A compiled upstream pool.
pub struct Pool {
    pub name: Arc<str>,
    pub members: Vec<Arc<Member>>,
    selector: Selector,
    pub connect_retries: u32,
    pub total_timeout: Option<Duration>,
    pub health: Option<HealthChecker>,
    /// The definition this pool was built from, to tell on reload whether it changed.
    pub fingerprint: String,
    pub balance: Balance,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("members", &self.members)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("member `{address}`: {message}")]
    Member {
        index: usize,
        address: String,
        message: String,
    },
    #[error("hash_key: {0}")]
    HashKey(String),
    #[error("{0}")]
    Other(String),
}

impl Pool {
    pub fn fingerprint_of(config: &UpstreamConfig) -> String {
        serde_json::to_string(config).unwrap_or_default()
    }

    pub fn build(name: &str, config: &UpstreamConfig) -> Result<Pool, Vec<PoolError>> {
        let mut errors = Vec::new();
        let mut members = Vec::new();
        for (index, m) in config.members.iter().enumerate() {
            let m = &m.value;
            if !(1..=1000).contains(&m.weight) {
                errors.push(PoolError::Member {
                    index,
                    address: m.address.clone(),
                    message: format!("weight {} is outside 1–1000", m.weight),
                });
                continue;
            }
            match resolve(&m.address) {
                Ok(addr) => members.push(Arc::new(Member {
                    address: m.address.clone(),
                    addr,
                    weight: m.weight,
                    source: "static",
                    peer: build_peer(addr, &m.address, config),
                    healthy: AtomicBool::new(true),
                    inflight: AtomicUsize::new(0),
                })),
                Err(message) => errors.push(PoolError::Member {
                    index,
                    address: m.address.clone(),
                    message,
                }),
            }
        }
        let key = match (&config.balance, &config.hash_key) {
            (Balance::ConsistentHash, None) => {
                errors.push(PoolError::Other(
                    "balance: consistent_hash needs `hash_key` (header:NAME, cookie:NAME, client_ip or path)".into(),
                ));
                None
            }
            (Balance::ConsistentHash, Some(k)) => match HashKey::parse(&k.value) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(PoolError::HashKey(e));
                    None
                }
            },
            (_, Some(_)) => {
                errors.push(PoolError::HashKey(
                    "`hash_key` only applies to `balance: consistent_hash`".into(),
                ));
                None
            }
            _ => None,
        };
        let health = match &config.health_check {
            Some(hc) => match HealthChecker::new(name, hc, config.tls.is_some()) {
                Ok(h) => Some(h),
                Err(e) => {
                    errors.push(PoolError::Other(format!("health_check: {e}")));
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let selector = match (config.balance, key) {
            (Balance::ConsistentHash, Some(key)) => Selector::Consistent {
                ring: Ring::new(&members),
                fallback: RoundRobin::new(&members),
                key,
            },
            (Balance::LeastRequest, _) => Selector::LeastRequest(LeastRequest::new(&members)),
            _ => Selector::RoundRobin(RoundRobin::new(&members)),
        };
        Ok(Pool {
            name: name.into(),
            members,
            selector,
            connect_retries: config.connect_retries,
            total_timeout: config.timeouts.total.map(|d| d.get()),
            health,
            fingerprint: Self::fingerprint_of(config),
            balance: config.balance,
        })
    }

    /// Picks a member for this request, skipping the ones `skip` names (already tried).
    pub fn select(
        &self,
        req: &pingora::http::RequestHeader,
        client_ip: Option<IpAddr>,
        skip: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        match &self.selector {
            Selector::RoundRobin(rr) => rr.pick(&self.members, skip),
            Selector::LeastRequest(lr) => lr.pick(&self.members, skip),
            Selector::Consistent {
                ring,
                fallback,
                key,
            } => match key.hash(req, client_ip) {
                Some(h) => ring.pick(&self.members, h, skip),
                None => fallback.pick(&self.members, skip),
            },
        }
    }

    pub fn healthy_count(&self) -> usize {
        self.members.iter().filter(|m| m.is_available()).count()
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !address.contains(':') {
        return Err("expected HOST:PORT".into());
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "the name resolves to no address".into())
}

fn build_peer(addr: SocketAddr, address: &str, config: &UpstreamConfig) -> HttpPeer {
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    let (tls, sni) = match &config.tls {
        Some(t) => (true, t.sni.clone().unwrap_or_else(|| host.to_string())),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    let t = &config.timeouts;
    peer.options.connection_timeout = Some(t.connect.get());
    peer.options.total_connection_timeout = Some(t.connect.get());
    peer.options.read_timeout = Some(t.read.get());
    peer.options.write_timeout = Some(t.write.get());
    peer.options.idle_timeout = Some(t.idle.get());
    if let Some(tls) = &config.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let h = b"a=1; session=xyz ; b=2";
        assert_eq!(cookie_value(h, b"session"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(h, b"b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(h, b"c"), None);
    }

    #[test]
    fn hash_keys_parse() {
        assert_eq!(HashKey::parse("client_ip").unwrap(), HashKey::ClientIp);
        assert!(matches!(
            HashKey::parse("header:x-user").unwrap(),
            HashKey::Header(_)
        ));
        assert!(HashKey::parse("header:bad name").is_err());
        assert!(HashKey::parse("moon").is_err());
    }
}
