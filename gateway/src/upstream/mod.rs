//! Upstream pools: members (static and discovered), selection, active and passive health.

mod attempt;
mod discovered;
mod grpc_health;
mod hash_key;
mod health;
mod passive;
mod retry;
mod select;
mod tls;

pub use attempt::{is_idempotent, Attempts, ProxyFailure, Verdict};
pub use discovered::{Discovered, DiscoveryCache};
pub use hash_key::{HashKey, KeySource};
pub use health::{HealthChecker, HealthFlip};
pub use passive::{Circuit, PassivePolicy, Transition};
pub use retry::RetryPolicy;

use crate::config::{Balance, Discovery, TlsVersion, UpstreamConfig, UpstreamProtocol};
use crate::dns::{Answer, DnsError};
use crate::json::JsonString;
use arc_swap::ArcSwap;
use pingora::proxy::UpstreamPeer;
use pingora::upstreams::peer::HttpPeer;
use select::{LeastRequest, Ring, RoundRobin};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a member came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Static,
    /// The Redis registry, with the instance id.
    Registry(String),
    /// An address of a member given by host name (`host:port`).
    Dns(String),
}

/// One upstream server.
pub struct Member {
    /// As configured or registered (`host:port`).
    pub address: String,
    /// `address` as the access log writes it.
    pub log_address: JsonString,
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: bool,
    pub source: Source,
    /// Built once and shared by the requests sent to the member as it is; a request whose try
    /// needs other timeouts (or a WebSocket upgrade) gets a clone.
    pub peer: Arc<HttpPeer>,
    healthy: AtomicBool,
    inflight: AtomicUsize,
    /// Active health checks: consecutive successes (low bits) or failures (high bit set).
    pub(crate) health_streak: AtomicU32,
    pub(crate) breaker: passive::Breaker,
}

impl Member {
    /// Healthy by active checks and not ejected by passive ones.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.breaker.admits()
    }
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    pub fn circuit(&self) -> Circuit {
        self.breaker.circuit()
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
    /// Claims the member for a request (see [`passive::Breaker::try_pick`]) and counts it in
    /// flight until the guard drops (for least-request).
    pub fn start_request(self: &Arc<Self>) -> Option<InflightGuard> {
        if !self.breaker.try_pick() {
            return None;
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Some(InflightGuard(self.clone()))
    }
    /// Frees a half-open probe slot when a try ended without an outcome.
    pub fn release_probe(&self) {
        self.breaker.release_probe();
    }
    pub fn source_name(&self) -> &'static str {
        match self.source {
            Source::Static => "static",
            Source::Registry(_) => "redis",
            Source::Dns(_) => "dns",
        }
    }
    fn same_as(&self, addr: &str, weight: u32, tls: bool, source: &Source) -> bool {
        self.address == addr && self.weight == weight && self.tls == tls && &self.source == source
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("address", &self.address)
            .field("weight", &self.weight)
            .field("available", &self.is_available())
            .finish()
    }
}

pub struct InflightGuard(Arc<Member>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Selector {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Consistent { ring: Ring, fallback: RoundRobin },
}

/// The members of a pool at one moment, with their selection tables.
pub struct MemberSet {
    pub members: Vec<Arc<Member>>,
    selector: Selector,
}

impl MemberSet {
    fn new(members: Vec<Arc<Member>>, balance: Balance) -> Self {
        let selector = match balance {
            Balance::ConsistentHash => Selector::Consistent {
                ring: Ring::new(&members),
                fallback: RoundRobin::new(&members),
            },
            Balance::LeastRequest => Selector::LeastRequest(LeastRequest::new(&members)),
            Balance::RoundRobin => Selector::RoundRobin(RoundRobin::new(&members)),
        };
        MemberSet { members, selector }
    }
}

/// A member entry given by host name, and the members its addresses are.
struct Named {
    host: String,
    port: u16,
    weight: u32,
    members: Vec<Arc<Member>>,
    /// When to look the name up again.
    due: Instant,
}

impl Named {
    /// The members for `addresses`: the ones it has for an address keep their state.
    fn members_at(
        &self,
        addresses: &[SocketAddr],
        config: &UpstreamConfig,
        credentials: Option<&tls::TlsCredentials>,
    ) -> Vec<Arc<Member>> {
        let name = format!("{}:{}", self.host, self.port);
        addresses
            .iter()
            .map(|a| match self.members.iter().find(|m| m.addr == *a) {
                Some(m) => m.clone(),
                None => new_member(
                    a.to_string(),
                    *a,
                    self.weight,
                    config.tls.is_some(),
                    Source::Dns(name.clone()),
                    config,
                    credentials,
                ),
            })
            .collect()
    }
}

/// The same members, in the same order (the very same `Member`s, not equal ones).
fn same_members(a: &[Arc<Member>], b: &[Arc<Member>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// The members that change after the pool is built, kept apart so each source can be
/// replaced alone (the whole set is rebuilt from the parts).
#[derive(Default)]
struct Dynamic {
    named: Vec<Named>,
    discovered: Vec<Arc<Member>>,
}

/// A compiled upstream pool.
pub struct Pool {
    pub name: Arc<str>,
    /// `name` as the access log writes it.
    pub log_name: JsonString,
    set: ArcSwap<MemberSet>,
    /// Members given by IP address.
    static_members: Vec<Arc<Member>>,
    /// Members of host names and of the registry; a control-plane lock (never per request).
    dynamic: Mutex<Dynamic>,
    /// With `discovery: redis`, the registered service whose instances join the pool.
    pub service: Option<String>,
    config: UpstreamConfig,
    hash_key: Option<HashKey>,
    pub connect_retries: u32,
    pub total_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub passive: Option<PassivePolicy>,
    pub health: Option<HealthChecker>,
    /// The definition this pool was built from, to tell on reload whether it changed.
    pub fingerprint: String,
    pub balance: Balance,
    /// A private CA and a client certificate, when the pool's `tls` names them.
    tls_credentials: Option<Arc<tls::TlsCredentials>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("members", &self.set.load().members)
            .finish()
    }
}

/// A problem in an upstream's definition, at `key`: a dotted path inside the upstream's
/// entry (`retries.attempts`, `members.2.weight`), empty for the entry as a whole.
#[derive(Debug, thiserror::Error)]
#[error("{}{}{message}", key, if key.is_empty() { "" } else { ": " })]
pub struct PoolError {
    pub key: String,
    pub message: String,
}

impl PoolError {
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        PoolError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Pool {
    /// What a pool is built from: its definition, and the TLS files it reads as they are now
    /// (a renewed client certificate rebuilds the pool on reload).
    pub fn fingerprint_of(config: &UpstreamConfig) -> String {
        let mut f = serde_json::to_string(config).unwrap_or_default();
        if let Some(t) = &config.tls {
            f.push_str(&tls::file_stamps(t));
        }
        f
    }

    /// Validates the definition and builds the pool with its static members, the addresses of
    /// its host names (`lookup`; a name that fails keeps the addresses it had in `previous`)
    /// and, for a discovered pool, the instances known so far.
    pub fn build(
        name: &str,
        config: &UpstreamConfig,
        known: Option<&[Discovered]>,
        previous: Option<&Pool>,
        lookup: &dyn Fn(&str, u16) -> Result<Answer, DnsError>,
    ) -> Result<Pool, Vec<PoolError>> {
        let mut errors = Vec::new();
        let tls_credentials = match config.tls.as_ref().map(tls::TlsCredentials::load) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };
        check_protocol(config, &mut errors);
        let mut members = Vec::new();
        let mut named = Vec::new();
        let tls = config.tls.is_some();
        for (index, m) in config.members.iter().enumerate() {
            // The weight's bounds are checked when the file is read (`config::WEIGHTS`).
            let m = &m.value;
            if let Some((host, port)) = crate::dns::host_name(&m.address) {
                let earlier = previous.and_then(|p| p.named_addresses(host, port));
                let addresses = match (lookup(host, port), earlier) {
                    (Ok(answer), _) => Ok(answer.addresses),
                    (Err(e), Some(kept)) => {
                        tracing::warn!(upstream = name, host, error = %e, "keeping the last addresses of a name that did not resolve");
                        Ok(kept)
                    }
                    (Err(e), None) => Err(e),
                };
                match addresses {
                    Ok(addresses) => {
                        let mut entry = Named {
                            host: host.to_string(),
                            port,
                            weight: m.weight,
                            members: Vec::new(),
                            // The first refresh soon: the compile's lookup carried no schedule.
                            due: Instant::now() + Duration::from_secs(1),
                        };
                        entry.members =
                            entry.members_at(&addresses, config, tls_credentials.as_deref());
                        named.push(entry);
                    }
                    Err(e) => errors.push(PoolError::at(
                        format!("members.{index}.address"),
                        e.to_string(),
                    )),
                }
                continue;
            }
            match m.address.parse::<SocketAddr>() {
                Ok(addr) => members.push(new_member(
                    m.address.clone(),
                    addr,
                    m.weight,
                    tls,
                    Source::Static,
                    config,
                    tls_credentials.as_deref(),
                )),
                Err(_) => errors.push(PoolError::at(
                    format!("members.{index}.address"),
                    format!("`{}`: expected IP:PORT or HOST:PORT", m.address),
                )),
            }
        }
        if config.dns_refresh.get() < Duration::from_secs(1) {
            errors.push(PoolError::at("dns_refresh", "must be at least 1s"));
        }
        let service = match (config.discovery, &config.service) {
            (Discovery::Redis, Some(s)) => match crate::registry::validate_service(&s.value) {
                Ok(()) => Some(s.value.clone()),
                Err(e) => {
                    errors.push(PoolError::at("service", e.to_string()));
                    None
                }
            },
            (Discovery::Redis, None) => {
                errors.push(PoolError::at("discovery", "`redis` needs `service`"));
                None
            }
            (Discovery::Static, Some(_)) => {
                errors.push(PoolError::at("service", "needs `discovery: redis`"));
                None
            }
            (Discovery::Static, None) => {
                if config.members.is_empty() {
                    errors.push(PoolError::at("", "has no members"));
                }
                None
            }
        };
        let hash_key = match (&config.balance, &config.hash_key) {
            (Balance::ConsistentHash, None) => {
                errors.push(PoolError::at(
                    "balance",
                    "consistent_hash needs `hash_key` (header:NAME, cookie:NAME, client_ip or path)",
                ));
                None
            }
            (Balance::ConsistentHash, Some(k)) => match HashKey::parse(&k.value) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(PoolError::at("hash_key", e));
                    None
                }
            },
            (_, Some(_)) => {
                errors.push(PoolError::at(
                    "hash_key",
                    "only applies to `balance: consistent_hash`",
                ));
                None
            }
            _ => None,
        };
        let health = match &config.health_check {
            Some(hc) => {
                match HealthChecker::new(
                    name,
                    hc,
                    config.tls.is_some(),
                    config.protocol,
                    tls_credentials.as_deref(),
                ) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            }
            None => None,
        };
        let passive = match config.passive_health.as_ref().map(PassivePolicy::new) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };
        let retry = RetryPolicy::new(&config.retries).map_err(|e| {
            errors.push(e);
        });
        if let Some(t) = config.retries.per_try_timeout {
            if t.get().is_zero() {
                errors.push(PoolError::at("retries.per_try_timeout", "must be above 0"));
            }
        }
        let Ok(retry) = retry else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let pool = Pool {
            log_name: JsonString::new(name),
            name: name.into(),
            set: ArcSwap::from_pointee(MemberSet::new(Vec::new(), config.balance)),
            static_members: members,
            dynamic: Mutex::new(Dynamic {
                named,
                discovered: Vec::new(),
            }),
            service,
            config: config.clone(),
            hash_key,
            connect_retries: config.connect_retries,
            total_timeout: config.timeouts.total.map(|d| d.get()),
            retry,
            passive,
            health,
            fingerprint: Self::fingerprint_of(config),
            balance: config.balance,
            tls_credentials,
        };
        match (known, pool.service.is_some()) {
            (Some(known), true) => {
                pool.set_discovered(known);
            }
            _ => {
                if let Ok(dynamic) = pool.dynamic.lock() {
                    pool.rebuild(&dynamic);
                }
            }
        }
        Ok(pool)
    }

    /// The peer for one try at `member`: its timeouts capped by what is left of the
    /// request's total timeout and by the per-try timeout; a WebSocket upgrade gets HTTP/1.1
    /// and no read timeout (frames may be far apart). Without either, the member's own peer,
    /// shared.
    pub fn peer_for_try(
        &self,
        member: &Member,
        remaining: Option<Duration>,
        upgrade: bool,
    ) -> UpstreamPeer {
        let per_try = match (remaining, self.retry.per_try_timeout) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        };
        if per_try.is_none() && !upgrade {
            return UpstreamPeer::Shared(member.peer.clone());
        }
        let mut peer = Box::new(HttpPeer::clone(&member.peer));
        if let Some(limit) = per_try {
            let o = &mut peer.options;
            o.connection_timeout = o.connection_timeout.map(|t| t.min(limit));
            o.total_connection_timeout = o.total_connection_timeout.map(|t| t.min(limit));
            o.read_timeout = Some(o.read_timeout.map_or(limit, |t| t.min(limit)));
        }
        if upgrade {
            peer.options.read_timeout = None;
            peer.options.set_http_version(1, 1);
        }
        UpstreamPeer::Owned(peer)
    }

    /// What is left of the total timeout for a request that started at `started`:
    /// `Some(None)` without a total timeout, `None` when it is spent.
    pub fn remaining(&self, started: std::time::Instant) -> Option<Option<Duration>> {
        match self.total_timeout {
            None => Some(None),
            Some(total) => total
                .checked_sub(started.elapsed())
                .filter(|r| !r.is_zero())
                .map(Some),
        }
    }

    /// The current members.
    pub fn members(&self) -> Arc<MemberSet> {
        self.set.load_full()
    }

    /// Replaces the discovered members; members that did not change keep their state.
    /// Answers whether the membership changed.
    pub fn set_discovered(&self, found: &[Discovered]) -> bool {
        let Ok(mut dynamic) = self.dynamic.lock() else {
            return false;
        };
        let mut members = Vec::with_capacity(found.len());
        for d in found {
            let source = Source::Registry(d.id.clone());
            let existing = dynamic
                .discovered
                .iter()
                .find(|m| m.same_as(&d.address, d.weight, d.tls, &source) && m.addr == d.addr);
            members.push(match existing {
                Some(m) => m.clone(),
                None => new_member(
                    d.address.clone(),
                    d.addr,
                    d.weight,
                    d.tls,
                    source,
                    &self.config,
                    self.tls_credentials.as_deref(),
                ),
            });
        }
        dynamic.discovered = members;
        self.rebuild(&dynamic)
    }

    /// The host names whose lookup is due at `now`: (entry index, host, port).
    pub fn names_due(&self, now: Instant) -> Vec<(usize, String, u16)> {
        let Ok(dynamic) = self.dynamic.lock() else {
            return Vec::new();
        };
        dynamic
            .named
            .iter()
            .enumerate()
            .filter(|(_, n)| n.due <= now)
            .map(|(i, n)| (i, n.host.clone(), n.port))
            .collect()
    }

    /// Applies a lookup of the host name entry `index`: its addresses become its members
    /// (those it had keep their state); a failed lookup keeps the last addresses and is
    /// tried again sooner. Answers whether the membership changed.
    pub fn set_named(&self, index: usize, looked_up: Result<Answer, DnsError>) -> bool {
        let Ok(mut dynamic) = self.dynamic.lock() else {
            return false;
        };
        let now = Instant::now();
        let refresh = self.config.dns_refresh.get();
        let Some(entry) = dynamic.named.get_mut(index) else {
            return false;
        };
        let answer = match looked_up {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(upstream = %self.name, host = %entry.host, error = %e, "a member name did not resolve; keeping its last addresses");
                entry.due = now + refresh.min(Duration::from_secs(5));
                return false;
            }
        };
        entry.due = crate::dns::next_refresh(answer.valid_until, now, refresh);
        let members = entry.members_at(
            &answer.addresses,
            &self.config,
            self.tls_credentials.as_deref(),
        );
        if same_members(&members, &entry.members) {
            return false;
        }
        tracing::info!(upstream = %self.name, host = %entry.host, addresses = ?answer.addresses, "member name resolves to new addresses");
        entry.members = members;
        self.rebuild(&dynamic)
    }

    /// The addresses a host name entry has now.
    fn named_addresses(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let dynamic = self.dynamic.lock().ok()?;
        let n = dynamic
            .named
            .iter()
            .find(|n| n.host == host && n.port == port)?;
        Some(n.members.iter().map(|m| m.addr).collect())
    }

    /// Makes the member set the static members, the host names' and the registry's.
    fn rebuild(&self, dynamic: &Dynamic) -> bool {
        let members: Vec<Arc<Member>> = self
            .static_members
            .iter()
            .chain(dynamic.named.iter().flat_map(|n| &n.members))
            .chain(&dynamic.discovered)
            .cloned()
            .collect();
        if same_members(&members, &self.set.load().members) {
            return false;
        }
        self.set
            .store(Arc::new(MemberSet::new(members, self.balance)));
        true
    }

    /// Picks a member for this request, skipping the ones `skip` names (already tried).
    pub fn select(
        &self,
        req: &pingora::http::RequestHeader,
        source: KeySource<'_>,
        skip: &dyn Fn(&Arc<Member>) -> bool,
    ) -> Option<Arc<Member>> {
        let set = self.set.load();
        let members = &set.members;
        let skip_index = |i: usize| skip(&members[i]);
        let index = match &set.selector {
            Selector::RoundRobin(rr) => rr.pick(members, &skip_index),
            Selector::LeastRequest(lr) => lr.pick(members, &skip_index),
            Selector::Consistent { ring, fallback } => {
                match self.hash_key.as_ref().and_then(|k| k.hash(req, source)) {
                    Some(h) => ring.pick(members, h, &skip_index),
                    None => fallback.pick(members, &skip_index),
                }
            }
        }?;
        Some(members[index].clone())
    }

    /// Whether a member other than those `skip` names could take a request.
    pub fn has_other(&self, skip: &dyn Fn(&Arc<Member>) -> bool) -> bool {
        self.set
            .load()
            .members
            .iter()
            .any(|m| m.is_available() && !skip(m))
    }

    pub fn healthy_count(&self) -> usize {
        self.set
            .load()
            .members
            .iter()
            .filter(|m| m.is_available())
            .count()
    }

    pub fn len(&self) -> usize {
        self.set.load().members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the outcome of a request to `member` for passive health.
    pub fn report(&self, member: &Member, ok: bool) -> Transition {
        let Some(policy) = &self.passive else {
            return Transition::None;
        };
        member.breaker.report(ok, policy, || {
            let set = self.set.load();
            let ejected = set
                .members
                .iter()
                .filter(|m| m.breaker.is_ejected())
                .count();
            (ejected + 1) * 100 <= set.members.len() * policy.max_ejected_percent as usize
        })
    }
}

fn new_member(
    address: String,
    addr: SocketAddr,
    weight: u32,
    tls: bool,
    source: Source,
    config: &UpstreamConfig,
    credentials: Option<&tls::TlsCredentials>,
) -> Arc<Member> {
    // A member found by name is that name to TLS (SNI and verification), not its address.
    let named = match &source {
        Source::Dns(name) => name.as_str(),
        _ => address.as_str(),
    };
    let mut peer = build_peer(addr, named, tls, config);
    if let (true, Some(c)) = (tls, credentials) {
        c.apply(&mut peer);
    }
    Arc::new(Member {
        peer: Arc::new(peer),
        log_address: JsonString::new(&address),
        address,
        addr,
        weight,
        tls,
        source,
        healthy: AtomicBool::new(true),
        inflight: AtomicUsize::new(0),
        health_streak: AtomicU32::new(0),
        breaker: passive::Breaker::default(),
    })
}

/// The protocol must fit the transport: HTTP/2 over TLS is negotiated (ALPN), in cleartext
/// it is spoken with prior knowledge.
fn check_protocol(config: &UpstreamConfig, errors: &mut Vec<PoolError>) {
    let tls = config.tls.is_some();
    let problem = match config.protocol {
        UpstreamProtocol::H2 | UpstreamProtocol::Auto if !tls => {
            Some("`h2` and `auto` are negotiated over TLS: add `tls`, or use `h2c` in cleartext")
        }
        UpstreamProtocol::H2c if tls => Some("`h2c` is HTTP/2 in cleartext: over `tls` use `h2`"),
        _ => None,
    };
    if let Some(message) = problem {
        errors.push(PoolError::at("protocol", message));
    }
    if config.h2.max_streams == 0 {
        errors.push(PoolError::at("h2.max_streams", "must be at least 1"));
    }
}

fn build_peer(addr: SocketAddr, address: &str, tls: bool, config: &UpstreamConfig) -> HttpPeer {
    let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address);
    let sni = if tls {
        config
            .tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    let (max, min) = config.protocol.http_versions();
    peer.options.set_http_version(max, min);
    peer.options.max_h2_streams = config.h2.max_streams;
    peer.options.h2_ping_interval = config.h2.ping_interval.map(|d| d.get());
    if config
        .tls
        .as_ref()
        .is_some_and(|t| t.min_version == TlsVersion::Tls13)
    {
        peer.options.min_tls_version = Some(0x0304);
    }
    let t = &config.timeouts;
    peer.options.connection_timeout = Some(t.connect.get());
    peer.options.total_connection_timeout = Some(t.connect.get());
    peer.options.read_timeout = Some(t.read.get());
    peer.options.write_timeout = Some(t.write.get());
    peer.options.idle_timeout = Some(t.idle.get());
    if tls {
        let verify = config.tls.as_ref().is_none_or(|t| t.verify);
        peer.options.verify_cert = verify;
        peer.options.verify_hostname = verify;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(addresses: &[&str]) -> Result<Answer, DnsError> {
        Ok(Answer {
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            valid_until: Instant::now() + Duration::from_secs(5),
        })
    }

    #[test]
    fn a_name_is_one_member_per_address_and_keeps_its_name_for_tls() {
        let config: UpstreamConfig = serde_saphyr::from_str(
            "members: [ { address: \"api.internal:8443\" } ]\ntls: { verify: true }\n",
        )
        .unwrap();
        let lookup = |host: &str, port: u16| {
            assert_eq!((host, port), ("api.internal", 8443));
            answer(&["10.0.0.1:8443", "10.0.0.2:8443"])
        };
        let pool = Pool::build("p", &config, None, None, &lookup).unwrap();
        let set = pool.members();
        assert_eq!(set.members.len(), 2);
        for m in &set.members {
            assert_eq!(
                m.peer.sni, "api.internal",
                "SNI is the name, not the address"
            );
            assert_eq!(m.source, Source::Dns("api.internal:8443".into()));
        }
        // A new answer: the address that stayed keeps its member (and its state).
        let kept = set.members[1].clone();
        assert!(pool.set_named(0, answer(&["10.0.0.2:8443", "10.0.0.3:8443"])));
        let after = pool.members();
        assert!(after.members.iter().any(|m| Arc::ptr_eq(m, &kept)));
        assert!(after
            .members
            .iter()
            .all(|m| m.addr.to_string() != "10.0.0.1:8443"));
        // A failed lookup changes nothing.
        assert!(!pool.set_named(0, Err(DnsError::NoAddress("api.internal".into()))));
        assert_eq!(pool.members().members.len(), 2);
    }
}
