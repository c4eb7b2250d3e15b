//! Name resolution for members given by host name: every address of the name is a member,
//! and the name is looked up again when its answer's TTL ends (at most `dns_refresh` apart).
//! The system's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`) by default, or the
//! name servers of the `dns` section.

use crate::config::DnsConfig;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns.nameservers: `{0}` is not an IP address or IP:PORT")]
    Nameserver(String),
    #[error("the resolver could not be set up: {0}")]
    Setup(String),
    #[error("`{host}` did not resolve: {message}")]
    Lookup { host: String, message: String },
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
}

/// The addresses a name had, and until when the answer holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub addresses: Vec<SocketAddr>,
    pub valid_until: Instant,
}

/// A resolver for one runtime (its lookups run on the runtime that awaits them).
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    pub fn new(config: &DnsConfig) -> Result<Dns, DnsError> {
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let mut servers = Vec::new();
            for s in &config.nameservers {
                let (ip, port) = parse_nameserver(s)?;
                let mut server = NameServerConfig::udp_and_tcp(ip);
                for c in &mut server.connections {
                    c.port = port;
                }
                servers.push(server);
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        options.timeout = config.timeout.get();
        // Each refresh asks the servers: the answer's own TTL schedules the next one.
        options.cache_size = 0;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Dns { resolver })
    }

    /// Every address of `host`, with `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Answer, DnsError> {
        let lookup = self
            .resolver
            .lookup_ip(host)
            .await
            .map_err(|e| DnsError::Lookup {
                host: host.to_string(),
                message: e.to_string(),
            })?;
        let mut addresses: Vec<SocketAddr> =
            lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(DnsError::NoAddress(host.to_string()));
        }
        Ok(Answer {
            addresses,
            valid_until: lookup.valid_until(),
        })
    }

    /// [`Dns::resolve`] from synchronous code (a config compile), on a runtime of its own.
    pub fn resolve_blocking(config: &DnsConfig, host: &str, port: u16) -> Result<Answer, DnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| DnsError::Setup(e.to_string()))?;
                runtime.block_on(async { Dns::new(config)?.resolve(host, port).await })
            })
            .join()
            .unwrap_or_else(|_| Err(DnsError::Setup("the lookup thread failed".into())))
        })
    }
}

/// When to look a name up again: when its answer expires, within `[1 s, refresh]`.
pub fn next_refresh(answer_valid_until: Instant, now: Instant, refresh: Duration) -> Instant {
    let ttl = answer_valid_until.saturating_duration_since(now);
    now + ttl.clamp(Duration::from_secs(1), refresh.max(Duration::from_secs(1)))
}

fn parse_nameserver(s: &str) -> Result<(IpAddr, u16), DnsError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), a.port()));
    }
    s.parse::<IpAddr>()
        .map(|ip| (ip, 53))
        .map_err(|_| DnsError::Nameserver(s.to_string()))
}

/// `host:port` split, when `host` is a name (not an IP address).
pub fn host_name(address: &str) -> Option<(&str, u16)> {
    if address.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && host.parse::<IpAddr>().is_err()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_from_addresses() {
        assert_eq!(host_name("api.internal:8080"), Some(("api.internal", 8080)));
        assert_eq!(host_name("localhost:80"), Some(("localhost", 80)));
        assert_eq!(host_name("10.0.0.1:80"), None);
        assert_eq!(host_name("[::1]:80"), None);
        assert_eq!(host_name("api.internal"), None);
        assert_eq!(host_name("api.internal:http"), None);
    }

    #[test]
    fn refreshes_follow_the_ttl_within_bounds() {
        let now = Instant::now();
        let refresh = Duration::from_secs(30);
        assert_eq!(
            next_refresh(now + Duration::from_secs(5), now, refresh),
            now + Duration::from_secs(5)
        );
        assert_eq!(
            next_refresh(now + Duration::from_secs(300), now, refresh),
            now + refresh
        );
        assert_eq!(
            next_refresh(now, now, refresh),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn nameservers_take_a_port_or_default_to_53() {
        assert_eq!(
            parse_nameserver("127.0.0.1:5353").unwrap(),
            ("127.0.0.1".parse().unwrap(), 5353)
        );
        assert_eq!(
            parse_nameserver("10.0.0.2").unwrap(),
            ("10.0.0.2".parse().unwrap(), 53)
        );
        assert!(parse_nameserver("dns.example").is_err());
    }
}
