//! The config file: typed, `deny_unknown_fields` everywhere, loaded with source locations so
//! every error can be reported as `FILE:LINE:COL: message`.

mod load;
mod locate;
mod reparse;

pub use load::{load_file, load_str, reload_file, ConfigError, ConfigErrors, Diagnostics, Loaded};
pub use locate::{locate, Seg};
pub use portico_plugins::units::{ByteSize, Duration};
pub use reparse::Previous;

use portico_plugins::{AuthPolicyConfig, PluginConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-level settings (threads, shutdown, upgrade). Changing them needs a restart or
    /// `run --upgrade`.
    #[serde(default)]
    pub server: ServerSettings,
    /// Where clients connect. Changing them needs a restart or `run --upgrade`.
    #[schemars(with = "Vec<ListenerConfig>")]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// The admin listener (health, readiness, metrics, config, upstreams, reload).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-*` headers are believed when deciding the
    /// client's address, scheme and host.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Limits that protect the edge.
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OpenTelemetry traces exported over OTLP/HTTP. The standard `OTEL_*` variables fill in
    /// what this leaves unset. Changing it needs a restart or `run --upgrade`.
    #[serde(default)]
    #[schemars(with = "Option<TracingConfig>")]
    pub tracing: Option<Spanned<TracingConfig>>,
    /// How members given by host name are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// The Redis that the service registry (and global rate limits) use.
    #[serde(default)]
    #[schemars(with = "Option<RedisConfig>")]
    pub redis: Option<Spanned<RedisConfig>>,
    /// Upstream pools by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, UpstreamConfig>")]
    pub upstreams: BTreeMap<String, Spanned<UpstreamConfig>>,
    /// Plugins of every route (and of the answer to a request no route matches): IP rules,
    /// CORS, security headers, redirects. A route's own plugin of the same name replaces the
    /// global one on that route.
    #[serde(default)]
    #[schemars(with = "Vec<PluginConfig>")]
    pub plugins: Vec<Spanned<PluginConfig>>,
    /// Routes, matched by host, method and path.
    #[serde(default)]
    #[schemars(with = "Vec<RouteConfig>")]
    pub routes: Vec<Spanned<RouteConfig>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Worker threads of the proxy. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// After SIGTERM: how long requests in flight get to finish.
    pub grace_period: Duration,
    /// After the grace period: how long to wait for tasks before exiting.
    pub shutdown_timeout: Duration,
    /// The socket over which `run --upgrade` takes over the listeners.
    pub upgrade_sock: String,
    /// Idle upstream connections kept for reuse, across all pools.
    pub upstream_keepalive_pool_size: usize,
    /// Reload automatically when the config file changes.
    pub watch_config: bool,
    /// One multi-threaded runtime whose threads steal each other's tasks (`true`), or one
    /// single-threaded runtime per thread (`false`: no cross-thread wake-ups, cheaper per
    /// request; connections stay on the thread that accepted them). With one thread there is
    /// nothing to steal, and it runs single-threaded either way.
    pub work_stealing: bool,
    /// While a worker has tasks queued, how many it runs between checks for sockets that became
    /// ready (tokio's `event_interval`). Lower answers ready connections sooner when the worker
    /// is busy, for more `epoll_wait` calls that find nothing. Default: tokio's, 61.
    #[schemars(with = "Option<u32>")]
    pub event_interval: Option<NonZeroU32>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            threads: None,
            grace_period: Duration::secs(30),
            shutdown_timeout: Duration::secs(5),
            upgrade_sock: "/tmp/portico_upgrade.sock".into(),
            upstream_keepalive_pool_size: 1024,
            watch_config: true,
            work_stealing: true,
            event_interval: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
    /// `IP:PORT` to listen on.
    #[schemars(with = "String")]
    pub address: Spanned<String>,
    /// Accept HTTP/2 without TLS (prior knowledge); HTTP/1 keeps working.
    #[serde(default)]
    pub h2c: bool,
    /// Serve TLS on this listener.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificates; SNI picks the one whose `server_names` match, else the first.
    #[schemars(with = "Vec<CertificateConfig>")]
    pub certificates: Vec<Spanned<CertificateConfig>>,
    /// Offer HTTP/2 through ALPN.
    #[serde(default = "yes")]
    pub http2: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// Host names (exact, or `*.example.com`) this certificate serves.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `IP:PORT`; loopback by default. Empty string disables the admin listener.
    pub address: String,
    /// The environment variable that holds the bearer token for mutating endpoints.
    pub token_env: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "127.0.0.1:9901".into(),
            token_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request head (request line and headers) → 431.
    pub max_header_bytes: ByteSize,
    /// Most request headers → 431.
    pub max_headers: usize,
    /// Longest request target (path and query) → 414.
    pub max_uri_bytes: ByteSize,
    /// Largest request body, by Content-Length or as streamed → 413.
    pub max_body_bytes: ByteSize,
    /// Time a client has to send the whole request head (slowloris).
    pub request_header_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub keepalive_timeout: Duration,
    /// Requests served on one client connection before it is closed.
    pub keepalive_requests: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: ByteSize::kib(32),
            max_headers: 100,
            max_uri_bytes: ByteSize::kib(8),
            max_body_bytes: ByteSize::mib(10),
            request_header_timeout: Duration::secs(10),
            keepalive_timeout: Duration::secs(60),
            keepalive_requests: Some(10_000),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// A file to append JSON lines to; standard output when absent.
    pub path: Option<String>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            path: None,
        }
    }
}

/// The resolver of members given by host name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers (`IP` or `IP:PORT`); default: the system's (`/etc/resolv.conf`, and
    /// `/etc/hosts`).
    pub nameservers: Vec<String>,
    /// How long one query may take.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::secs(2),
        }
    }
}

/// OpenTelemetry tracing. Every key is optional: an absent one is taken from the standard
/// environment variable, then from the default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Export spans. Default: on when `OTEL_TRACES_EXPORTER=otlp` or an OTLP endpoint
    /// variable is set, off otherwise; `false` keeps it off whatever the environment says.
    pub enabled: Option<bool>,
    /// The OTLP/HTTP traces URL (`http://collector:4318/v1/traces`). Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`,
    /// then `http://localhost:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// `service.name` of the spans. Default: `OTEL_SERVICE_NAME`, then `portico`.
    pub service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off` or `parentbased_traceidratio`. Default: `OTEL_TRACES_SAMPLER`,
    /// then `parentbased_always_on`.
    pub sampler: Option<Sampler>,
    /// The ratio of the `*traceidratio` samplers, 0 to 1. Default: `OTEL_TRACES_SAMPLER_ARG`.
    pub sample_ratio: Option<f64>,
    /// Put the verified user id on server spans (`enduser.id`). Off: a trace backend often
    /// has a wider audience than the access log.
    pub record_user_id: bool,
    /// Spans waiting for export; when full, new spans are dropped and counted.
    pub queue_size: Option<usize>,
    /// Spans per export request.
    pub batch_size: Option<usize>,
    /// The longest a finished span waits before its batch is sent.
    pub export_interval: Option<Duration>,
    /// The longest one export may take; a batch that fails or times out is dropped and counted.
    pub export_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

/// Redis: one node, a cluster, or a master found through Sentinel.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS) for a single node.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the single-node URL instead (containers: the address
    /// comes with the deployment).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://` URLs).
    #[serde(default)]
    pub cluster: Vec<String>,
    /// A master found through Sentinel.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// Environment variable holding the password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// ACL user name, with `password_env`.
    #[serde(default)]
    pub username: Option<String>,
    /// Prefix of every key (`P` in the registry schema).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    #[serde(default = "one_second")]
    pub connect_timeout: Duration,
    #[serde(default = "one_second")]
    pub command_timeout: Duration,
    /// Full registry resync period (events make changes visible sooner).
    #[serde(default = "ten_seconds")]
    pub resync_interval: Duration,
    /// After Redis was unreachable, members missing from the registry are kept this long
    /// (so their heartbeats can register them again in a Redis that lost them) before they
    /// leave their pools. At least one registration TTL.
    #[serde(default = "fifteen_seconds")]
    pub registry_grace: Duration,
    /// Whether `/ready` answers 503 while Redis is unreachable. Traffic keeps
    /// flowing either way; set to false when one Redis outage must not take every replica
    /// out of a load balancer at once.
    #[serde(default = "yes")]
    pub required_for_ready: bool,
}

impl RedisConfig {
    /// A single-node config with defaults, for `--redis URL` on the command line.
    pub fn from_url(url: &str) -> RedisConfig {
        RedisConfig {
            url: Some(url.to_string()),
            url_env: None,
            cluster: Vec::new(),
            sentinel: None,
            password_env: None,
            username: None,
            key_prefix: default_prefix(),
            connect_timeout: one_second(),
            command_timeout: one_second(),
            resync_interval: ten_seconds(),
            registry_grace: fifteen_seconds(),
            required_for_ready: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The monitored master's name.
    pub master_name: String,
    /// Sentinel nodes, `redis://host:port`.
    pub nodes: Vec<String>,
}

/// Where a pool's members come from besides `members`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Only the static `members`.
    #[default]
    Static,
    /// Instances registered in the Redis registry under `service`, plus the static members.
    Redis,
}

/// A pool of upstream members.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Static members.
    #[serde(default)]
    #[schemars(with = "Vec<MemberConfig>")]
    pub members: Vec<Spanned<MemberConfig>>,
    #[serde(default)]
    pub discovery: Discovery,
    /// With `discovery: redis`: the registered service name.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub service: Option<Spanned<String>>,
    /// Passive health: members that fail are ejected for a while (circuit breaking).
    #[serde(default)]
    pub passive_health: Option<PassiveHealthConfig>,
    /// Retrying failed requests on another member.
    #[serde(default)]
    pub retries: RetryConfig,
    #[serde(default)]
    pub balance: Balance,
    /// For `consistent_hash`: `header:NAME`, `cookie:NAME`, `client_ip` or `path`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub hash_key: Option<Spanned<String>>,
    /// Connect to members over TLS.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// The HTTP version spoken to members.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// HTTP/2 connection settings (`protocol: h2`, `h2c` or `auto`).
    #[serde(default)]
    pub h2: H2Settings,
    /// Members given by host name are resolved again this often (sooner when the DNS
    /// answer's TTL is shorter); each address is a member.
    #[serde(default = "thirty_seconds")]
    pub dns_refresh: Duration,
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Further members tried after a connect failure.
    #[serde(default = "one")]
    pub connect_retries: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthConfig {
    /// Consecutive failures (connect errors, resets, 5xx) that eject a member.
    pub consecutive_failures: u32,
    /// Statuses that count as failures.
    pub failure_statuses: Vec<u16>,
    /// First ejection; each further ejection doubles it, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of the pool is ejected at once (percent).
    pub max_ejected_percent: u32,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            consecutive_failures: 5,
            failure_statuses: vec![502, 503, 504],
            base_ejection: Duration::secs(10),
            max_ejection: Duration::secs(300),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// 502, 503 and 504 answers from the member.
    #[serde(rename = "5xx")]
    Gateway5xx,
    /// The connection broke before a response arrived.
    Reset,
    /// The per-try timeout passed before a response arrived.
    Timeout,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Extra tries after a failure of the kinds in `on` (idempotent methods only). Connect
    /// failures are governed by `connect_retries`.
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    /// Time for each try to produce a response header.
    pub per_try_timeout: Option<Duration>,
    /// Retries may add at most this share of the pool's requests (percent)…
    pub budget_percent: u32,
    /// …but at least this many per second.
    pub budget_min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 0,
            on: vec![RetryOn::Gateway5xx, RetryOn::Reset, RetryOn::Timeout],
            per_try_timeout: None,
            budget_percent: 20,
            budget_min_per_second: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// `HOST:PORT`; a host name is resolved when the config is loaded.
    pub address: String,
    /// Relative share of traffic, 1–1000.
    #[serde(default = "one", deserialize_with = "weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
}

/// The bounds of a member's weight, for `check` (the schema says the same in its attribute).
pub const WEIGHTS: std::ops::RangeInclusive<u32> = 1..=1000;

/// A weight, with a message that says what one is.
fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| WEIGHTS.contains(n))
        .ok_or_else(|| {
            D::Error::custom(format!(
                "weight `{v}` is not a whole number from {} to {}",
                WEIGHTS.start(),
                WEIGHTS.end()
            ))
        })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight, of two members picked at random (weighted).
    LeastRequest,
    /// The same key goes to the same member while it is healthy (ketama ring).
    ConsistentHash,
}

/// The HTTP version a pool speaks to its members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2` only): gRPC over TLS.
    H2,
    /// HTTP/2 in cleartext with prior knowledge: gRPC without TLS.
    H2c,
    /// Over TLS, HTTP/2 when the member offers it by ALPN, else HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// The highest and lowest HTTP version offered to members (Pingora's ALPN setting).
    pub fn http_versions(self) -> (u8, u8) {
        match self {
            UpstreamProtocol::Http1 => (1, 1),
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => (2, 2),
            UpstreamProtocol::Auto => (2, 1),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct H2Settings {
    /// Concurrent streams per connection; more requests open another connection.
    pub max_streams: usize,
    /// PING a connection this often to find a dead one before a request does.
    pub ping_interval: Option<Duration>,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            max_streams: 100,
            ping_interval: None,
        }
    }
}

/// The lowest TLS version accepted from members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// The lowest TLS version accepted: `"1.2"` or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// The server name sent in SNI and verified; default: the member's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the member's certificate (against `ca_file`, else the system roots).
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file of the CA certificates that sign the members' certificates (a private CA),
    /// in place of the system roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM certificate chain presented to members that ask for one (mTLS), with
    /// `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl UpstreamTls {
    /// The files it reads (re-read when they change).
    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.ca_file
            .iter()
            .chain(&self.client_cert)
            .chain(&self.client_key)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// Waiting for each read from the member.
    pub read: Duration,
    /// Waiting for each write to the member.
    pub write: Duration,
    /// The whole exchange up to the response header, across tries.
    pub total: Option<Duration>,
    /// How long an idle pooled connection is kept.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::secs(2),
            read: Duration::secs(30),
            write: Duration::secs(30),
            total: None,
            idle: Duration::secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    #[default]
    Http,
    Tcp,
    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check`) over HTTP/2.
    Grpc,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// HTTP: the path to GET.
    #[serde(default = "root_path")]
    pub path: String,
    /// gRPC: the service name asked about; empty asks about the server as a whole.
    #[serde(default)]
    pub service: String,
    /// HTTP: the Host header; default: the member's address.
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP: statuses that count as healthy; default any 2xx.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    #[serde(default = "five_seconds")]
    pub interval: Duration,
    #[serde(default = "one_second")]
    pub timeout: Duration,
    /// Consecutive successes that bring a member back.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take a member out.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
}

/// One route.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in logs and metric labels.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// The upstream pool that serves the route. Not needed when its plugins answer every
    /// request (`respond`, `redirect` with a `location`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub upstream: Option<Spanned<String>>,
    /// Remove the matched `prefix` from the path sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Rewrite the path sent upstream with a regex.
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Compress upstream responses for clients that accept it (off unless set).
    #[serde(default)]
    pub compression: Option<CompressionConfig>,
    /// Authentication policy over the route's auth plugins (`jwt`, `better_auth`): any one
    /// may verify the request. Default with an auth plugin: required, no roles.
    #[serde(default)]
    #[schemars(with = "Option<AuthPolicyConfig>")]
    pub auth: Option<Spanned<AuthPolicyConfig>>,
    /// Plugins, run by priority (ties in this order).
    #[serde(default)]
    #[schemars(with = "Vec<PluginConfig>")]
    pub plugins: Vec<Spanned<PluginConfig>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Encodings offered, in order of preference when the client likes several equally.
    pub algorithms: Vec<CompressionAlgorithm>,
    /// 1 (fast) to 9 (gzip, zstd) or 11 (brotli); gzip and brotli cap at their maximum.
    pub level: u32,
    /// Media types compressed: exact (`application/json`) or a prefix ending in `/`
    /// (`text/`).
    pub content_types: Vec<String>,
    /// Bodies announced smaller than this are sent as they are.
    pub min_size: ByteSize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithms: vec![
                CompressionAlgorithm::Br,
                CompressionAlgorithm::Zstd,
                CompressionAlgorithm::Gzip,
            ],
            level: 5,
            content_types: [
                "text/",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_size: ByteSize::kib(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    Gzip,
    Br,
    Zstd,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names: exact (`api.example.com`) or suffix (`*.example.com`). Empty: any host.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub hosts: Vec<Spanned<String>>,
    /// Methods; empty: any method.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub methods: Vec<Spanned<String>>,
    /// The path exactly.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub exact: Option<Spanned<String>>,
    /// A path prefix, segment-aware: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub prefix: Option<Spanned<String>>,
    /// A regex the whole path must match.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub regex: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    #[schemars(with = "String")]
    pub regex: Spanned<String>,
    /// Replacement, with `$1` / `${name}` for capture groups.
    pub replacement: String,
}

fn yes() -> bool {
    true
}
fn thirty_seconds() -> Duration {
    Duration::secs(30)
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn root_path() -> String {
    "/".into()
}
fn ten_seconds() -> Duration {
    Duration::secs(10)
}

fn fifteen_seconds() -> Duration {
    Duration::secs(15)
}

fn default_prefix() -> String {
    "portico".into()
}
fn five_seconds() -> Duration {
    Duration::secs(5)
}
fn one_second() -> Duration {
    Duration::secs(1)
}

/// The JSON Schema of the config file.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
}
