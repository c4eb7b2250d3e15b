//! A config compiled into what the request path reads: the router, the pools, each route's
//! plugin pipeline, and the edge settings. Immutable once built; a reload compiles a new one
//! beside the live one and swaps it in (`ArcSwap`), so requests in flight finish on the
//! snapshot they started with.

use crate::config::{Config, ConfigError, ConfigErrors, Diagnostics, Loaded, RouteConfig, Seg};
use crate::json::JsonString;
use crate::router::{MethodSet, PathMatch, RouteEntry, Router};
use crate::upstream::{DiscoveryCache, Pool};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use portico_plugins::env::Env;
use portico_plugins::revocation::Revocations;
use portico_plugins::{
    AuthPolicy, AuthPolicyConfig, BuildContext, InvalidCredentials, Pipeline, Plugin,
    SharedBuckets, StateStore,
};
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub type SnapshotStore = Arc<ArcSwap<Snapshot>>;

/// A compiled route.
pub struct Route {
    pub name: Arc<str>,
    /// `name` as the access log writes it.
    pub log_name: JsonString,
    /// `None` for a route whose plugins answer every request (`respond`, a `redirect`).
    pub pool: Option<Arc<Pool>>,
    /// The prefix to remove from the upstream path (`strip_prefix: true`).
    pub strip_prefix: Option<String>,
    pub rewrite: Option<(Regex, String)>,
    pub compression: Option<Arc<crate::compression::Compression>>,
    pub pipeline: Pipeline,
    /// Its metric series, looked up on its first request.
    pub series: std::sync::OnceLock<crate::metrics::RouteSeries>,
}

/// Limits and trust settings of the edge, read per connection and per request.
#[derive(Debug, Clone)]
pub struct Edge {
    pub trusted_proxies: Vec<IpNet>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
    pub request_header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Requests a client connection may make after its first (Pingora counts reuses).
    pub keepalive_reuses: Option<u32>,
}

impl Edge {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// What a compile uses besides the file: the running snapshot (pools and plugin state carry
/// over), the last known registry instances, and the shared rate-limit buckets.
#[derive(Default)]
pub struct CompileEnv<'a> {
    pub previous: Option<&'a Snapshot>,
    pub discovered: Option<&'a DiscoveryCache>,
    pub shared: Option<Arc<dyn SharedBuckets>>,
    /// Where secrets named by environment variables come from.
    pub env: Env,
    /// The gateway's revocations, which every compile's auth plugins share.
    pub revocations: Arc<Revocations>,
}

pub struct Snapshot {
    pub version: u64,
    pub loaded_at: SystemTime,
    pub file: Arc<str>,
    pub source: Arc<str>,
    pub config: Arc<Config>,
    pub router: Router<Route>,
    pub pools: HashMap<String, Arc<Pool>>,
    /// The global plugins alone: what applies to a request no route matches.
    pub global: Pipeline,
    pub edge: Edge,
    pub admin_token: Option<Arc<str>>,
    /// Each TLS listener's certificates, by listener address (see `crate::tls`).
    pub tls: HashMap<String, Arc<crate::certificates::SniTable>>,
    /// Plugin state (local rate-limit counters) to carry into the next compile.
    pub plugin_state: StateStore,
}

impl Snapshot {
    /// Validates and compiles a parsed config. Pools whose definition did not change are
    /// taken from `previous`, keeping their health state (and, through Pingora's shared
    /// connection pool, their idle connections).
    pub fn compile(
        loaded: &Loaded,
        version: u64,
        env: &CompileEnv,
    ) -> Result<Snapshot, ConfigErrors> {
        let previous = env.previous;
        let config = &loaded.config;
        let mut diag = Diagnostics::new(loaded.file.clone(), loaded.source.clone());

        let tls = compile_listeners(config, &mut diag);
        check_redis(config, env.env, &mut diag);
        check_tracing(config, &mut diag);
        let trusted_proxies = compile_trusted(config, &mut diag);
        let admin_token = compile_admin(config, env.env, &mut diag);
        let pools = compile_pools(config, previous, env.discovered, &mut diag);
        let plugin_state = previous
            .map(|p| p.plugin_state.carry_over())
            .unwrap_or_default();
        let global = compile_global_plugins(config, env, &plugin_state, &mut diag);
        let entries = compile_routes(config, &pools, env, &plugin_state, &global, &mut diag);

        let router = if diag.is_empty() {
            match Router::build(entries) {
                Ok(r) => Some(r),
                Err(e) => {
                    diag.top(e.0);
                    None
                }
            }
        } else {
            None
        };
        diag.finish()?;
        let Some(router) = router else {
            return Err(ConfigErrors(vec![ConfigError {
                file: loaded.file.clone(),
                line: 1,
                column: 1,
                message: "the routes could not be compiled".into(),
            }]));
        };
        let l = &config.limits;
        Ok(Snapshot {
            version,
            loaded_at: SystemTime::now(),
            file: loaded.file.clone(),
            source: loaded.source.clone(),
            config: Arc::new(config.clone()),
            router,
            pools,
            global: Pipeline::new(
                global.iter().map(|(_, p)| p.clone()).collect(),
                AuthPolicy::default(),
            ),
            edge: Edge {
                trusted_proxies,
                max_header_bytes: l.max_header_bytes.as_usize(),
                max_headers: l.max_headers,
                max_uri_bytes: l.max_uri_bytes.as_usize(),
                max_body_bytes: l.max_body_bytes.get(),
                request_header_timeout: l.request_header_timeout.get(),
                keepalive_timeout: l.keepalive_timeout.get(),
                keepalive_reuses: l.keepalive_requests.map(|n| n.saturating_sub(1)),
            },
            admin_token,
            tls,
            plugin_state,
        })
    }
}

fn compile_listeners(
    config: &Config,
    diag: &mut Diagnostics,
) -> HashMap<String, Arc<crate::certificates::SniTable>> {
    let mut tls_tables = HashMap::new();
    if config.listeners.is_empty() {
        diag.top("`listeners` needs at least one entry");
    }
    let mut seen = HashSet::new();
    for l in &config.listeners {
        match l.value.address.value.parse::<SocketAddr>() {
            Ok(a) => {
                if !seen.insert(a) {
                    diag.at_span(
                        &l.value.address,
                        format!("address `{a}` is used by another listener"),
                    );
                }
            }
            Err(_) => diag.at_span(
                &l.value.address,
                format!("`{}` is not an IP:PORT address", l.value.address.value),
            ),
        }
        if let Some(tls) = &l.value.tls {
            match crate::certificates::SniTable::load(tls) {
                Ok(table) => {
                    tls_tables.insert(l.value.address.value.clone(), Arc::new(table));
                }
                Err((i, e)) => match tls.certificates.get(i) {
                    Some(c) => diag.at_span(c, e),
                    None => diag.at_span(l, e),
                },
            }
        }
    }
    tls_tables
}

fn check_redis(config: &Config, env: Env, diag: &mut Diagnostics) {
    if let Some(r) = &config.redis {
        if let Err(e) = crate::redis_link::RedisLink::with_env(&r.value, env) {
            diag.at_span(r, e.to_string());
        }
    }
    for (name, up) in &config.upstreams {
        if up.value.discovery == crate::config::Discovery::Redis && config.redis.is_none() {
            diag.at_span(
                up,
                format!("upstream `{name}` uses discovery: redis, but there is no `redis` section"),
            );
        }
    }
}

fn check_tracing(config: &Config, diag: &mut Diagnostics) {
    let Some(t) = &config.tracing else { return };
    // Values only: whether tracing is on also depends on the environment at start.
    if let Err(e) = crate::otel::settings(Some(&t.value), &|_| None) {
        let mut path = vec![Seg::Key("tracing".into())];
        path.extend(e.key().map(|k| Seg::Key(k.into())));
        diag.at_path(t, &path, e.to_string());
    }
}

fn compile_trusted(config: &Config, diag: &mut Diagnostics) -> Vec<IpNet> {
    let mut out = Vec::new();
    for t in &config.trusted_proxies {
        let text = t.value.trim();
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match net {
            Ok(n) => out.push(n),
            Err(_) => diag.at_span(t, format!("`{text}` is not a CIDR or IP address")),
        }
    }
    out
}

fn compile_admin(config: &Config, env: Env, diag: &mut Diagnostics) -> Option<Arc<str>> {
    let admin = &config.admin;
    if !admin.address.is_empty() && admin.address.parse::<SocketAddr>().is_err() {
        diag.top(format!(
            "admin.address `{}` is not an IP:PORT address",
            admin.address
        ));
    }
    let name = admin.token_env.as_ref()?;
    match env.var(name) {
        Some(v) if !v.is_empty() => Some(v.into()),
        _ => {
            diag.top(format!(
                "admin.token_env names `{name}`, which is not set in the environment"
            ));
            None
        }
    }
}

fn compile_pools(
    config: &Config,
    previous: Option<&Snapshot>,
    discovered: Option<&DiscoveryCache>,
    diag: &mut Diagnostics,
) -> HashMap<String, Arc<Pool>> {
    let mut pools = HashMap::new();
    for (name, up) in &config.upstreams {
        if let Some(prev) = previous.and_then(|p| p.pools.get(name)) {
            if prev.fingerprint == Pool::fingerprint_of(&up.value) {
                pools.insert(name.clone(), prev.clone());
                continue;
            }
        }
        let known = up
            .value
            .service
            .as_ref()
            .and_then(|s| discovered.and_then(|c| c.get(&s.value)));
        let previous_pool = previous.and_then(|p| p.pools.get(name)).map(|p| &**p);
        let lookup =
            |host: &str, port: u16| crate::dns::Dns::resolve_blocking(&config.dns, host, port);
        match Pool::build(name, &up.value, known.as_deref(), previous_pool, &lookup) {
            Ok(p) => {
                pools.insert(name.clone(), Arc::new(p));
            }
            Err(errors) => {
                for e in errors {
                    let mut path = vec![Seg::Key("upstreams".into()), Seg::Key(name.clone())];
                    path.extend(Seg::parse_dotted(&e.key));
                    diag.at_path(up, &path, format!("upstream `{name}`: {e}"));
                }
            }
        }
    }
    pools
}

/// The top-level `plugins`, built once and shared by every route, by name.
fn compile_global_plugins(
    config: &Config,
    compile: &CompileEnv,
    state: &StateStore,
    diag: &mut Diagnostics,
) -> Vec<(&'static str, Arc<dyn Plugin>)> {
    let build_ctx = BuildContext {
        route: "*".to_string(),
        shared: compile.shared.clone(),
        state: state.clone(),
        env: compile.env,
        revocations: compile.revocations.clone(),
    };
    let mut built = Vec::new();
    for (index, p) in config.plugins.iter().enumerate() {
        let name = p.value.name();
        if p.value.is_authentication() {
            diag.at_span(p, format!("`{name}` cannot be a global plugin: authentication is per route (its `auth` policy)"));
            continue;
        }
        match p.value.build(&build_ctx) {
            Ok(plugin) => built.push((name, plugin)),
            Err(e) => {
                let mut path = vec![
                    Seg::Key("plugins".into()),
                    Seg::Index(index),
                    Seg::Key(name.into()),
                ];
                path.extend(Seg::parse_dotted(e.key().unwrap_or("")));
                diag.at_path(p, &path, format!("global plugins: {e}"));
            }
        }
    }
    built
}

fn compile_routes(
    config: &Config,
    pools: &HashMap<String, Arc<Pool>>,
    compile: &CompileEnv,
    state: &StateStore,
    global: &[(&'static str, Arc<dyn Plugin>)],
    diag: &mut Diagnostics,
) -> Vec<RouteEntry<Route>> {
    let mut names = HashSet::new();
    let mut entries = Vec::new();
    for (route_index, spanned) in config.routes.iter().enumerate() {
        let r: &RouteConfig = &spanned.value;
        let name = r.name.value.trim();
        if name.is_empty() {
            diag.at_span(&r.name, "a route name cannot be empty");
        } else if !names.insert(name.to_string()) {
            diag.at_span(&r.name, format!("route name `{name}` is used twice"));
        }
        let before = diag.len();
        let path = compile_path(spanned, diag);
        let methods = compile_methods(r, diag);
        let hosts = compile_hosts(r, diag);
        // Outer `None`: the route is not usable; `Some(None)`: it needs no upstream.
        let pool = match &r.upstream {
            Some(upstream) => match pools.get(&upstream.value) {
                Some(p) => Some(Some(p.clone())),
                None => {
                    if !config.upstreams.contains_key(&upstream.value) {
                        diag.at_span(
                            upstream,
                            format!("route `{name}` names unknown upstream `{}`", upstream.value),
                        );
                    }
                    None
                }
            },
            None => Some(None),
        };
        let strip_prefix = match (&path, r.strip_prefix) {
            (Some(PathMatch::Prefix(p)), true) => Some(p.trim_end_matches('/').to_string()),
            (_, true) => {
                diag.at_span(
                    spanned,
                    format!("route `{name}`: strip_prefix needs a `prefix` match"),
                );
                None
            }
            _ => None,
        };
        let rewrite = r
            .rewrite
            .as_ref()
            .and_then(|rw| match Regex::new(&rw.regex.value) {
                Ok(re) => Some((re, rw.replacement.clone())),
                Err(e) => {
                    diag.at_span(
                        &rw.regex,
                        format!(
                            "route `{name}`: invalid rewrite regex: {}",
                            regex_reason(&e.to_string())
                        ),
                    );
                    None
                }
            });
        let mut plugins = Vec::new();
        let build_ctx = BuildContext {
            route: name.to_string(),
            shared: compile.shared.clone(),
            state: state.clone(),
            env: compile.env,
            revocations: compile.revocations.clone(),
        };
        for (plugin_index, p) in r.plugins.iter().enumerate() {
            match p.value.build(&build_ctx) {
                Ok(built) => plugins.push(built),
                Err(e) => {
                    let mut path = vec![
                        Seg::Key("routes".into()),
                        Seg::Index(route_index),
                        Seg::Key("plugins".into()),
                        Seg::Index(plugin_index),
                        Seg::Key(p.value.name().into()),
                    ];
                    path.extend(Seg::parse_dotted(e.key().unwrap_or("")));
                    diag.at_path(p, &path, format!("route `{name}`: {e}"));
                }
            }
        }
        // Global plugins the route does not configure itself run on it too.
        for (global_name, plugin) in global {
            if !r.plugins.iter().any(|p| p.value.name() == *global_name) {
                plugins.push(plugin.clone());
            }
        }
        let has_auth_plugin = plugins.iter().any(|p| p.phases().authenticate);
        let auth_policy = match &r.auth {
            Some(policy) if !has_auth_plugin => {
                diag.at_span(
                    policy,
                    format!("route `{name}`: `auth` needs an auth plugin (jwt, better_auth) in `plugins`"),
                );
                AuthPolicy::default()
            }
            Some(policy) => {
                if policy.value.required
                    && policy.value.invalid_credentials == InvalidCredentials::Anonymous
                {
                    diag.at_span(
                        policy,
                        format!("route `{name}`: `invalid_credentials: anonymous` needs `required: false`"),
                    );
                }
                AuthPolicy::from(&policy.value)
            }
            None => AuthPolicy::from(&AuthPolicyConfig::default()),
        };
        let compression = r.compression.as_ref().and_then(|c| {
            crate::compression::Compression::new(c)
                .map(Arc::new)
                .map_err(|e| diag.at_span(spanned, format!("route `{name}`: compression: {e}")))
                .ok()
        });
        if matches!(pool, Some(None)) && !plugins.iter().any(|p| p.answers_every_request()) {
            diag.at_span(
                spanned,
                format!("route `{name}` needs an `upstream` (or a `respond` plugin, or a `redirect` with a `location`)"),
            );
        }
        if diag.len() != before {
            continue;
        }
        let (Some(path), Some(pool)) = (path, pool) else {
            continue;
        };
        entries.push(RouteEntry {
            hosts,
            methods,
            path,
            route: Arc::new(Route {
                log_name: JsonString::new(name),
                name: name.into(),
                pool,
                strip_prefix,
                rewrite,
                compression,
                pipeline: Pipeline::new(plugins, auth_policy),
                series: std::sync::OnceLock::new(),
            }),
        });
    }
    entries
}

/// The last line of the regex crate's message: the earlier ones repeat the pattern with a
/// caret under the fault, which does not survive the one-line `FILE:LINE:COL: message` form.
fn regex_reason(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn compile_path(
    route: &serde_saphyr::Spanned<RouteConfig>,
    diag: &mut Diagnostics,
) -> Option<PathMatch> {
    let m = &route.value.matcher;
    let given = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        diag.at_span(
            route,
            format!(
                "route `{}`: `match` needs exactly one of `exact`, `prefix` or `regex`",
                route.value.name.value
            ),
        );
        return None;
    }
    if let Some(p) = &m.exact {
        if !p.value.starts_with('/') {
            diag.at_span(p, "a path must start with `/`");
            return None;
        }
        return Some(PathMatch::Exact(p.value.clone()));
    }
    if let Some(p) = &m.prefix {
        if !p.value.starts_with('/') {
            diag.at_span(p, "a path prefix must start with `/`");
            return None;
        }
        return Some(PathMatch::Prefix(p.value.clone()));
    }
    let r = m.regex.as_ref()?;
    match Regex::new(&r.value) {
        Ok(_) => Some(PathMatch::Regex(r.value.clone())),
        Err(e) => {
            diag.at_span(
                r,
                format!("invalid regex: {}", regex_reason(&e.to_string())),
            );
            None
        }
    }
}

fn compile_methods(r: &RouteConfig, diag: &mut Diagnostics) -> MethodSet {
    let mut methods = Vec::new();
    for m in &r.matcher.methods {
        let upper = m.value.trim().to_ascii_uppercase();
        match http::Method::from_bytes(upper.as_bytes()) {
            Ok(method) if !upper.is_empty() => methods.push(method),
            _ => diag.at_span(m, format!("`{}` is not an HTTP method", m.value)),
        }
    }
    MethodSet::new(methods)
}

fn compile_hosts(r: &RouteConfig, diag: &mut Diagnostics) -> Vec<String> {
    let mut hosts = Vec::new();
    for h in &r.matcher.hosts {
        let host = h.value.trim().to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !bare.is_empty()
            && !bare.contains('*')
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if valid {
            hosts.push(host);
        } else {
            diag.at_span(
                h,
                format!(
                    "`{}` is not a host name (use `example.com` or `*.example.com`, no port)",
                    h.value
                ),
            );
        }
    }
    hosts
}
