//! Assembles the Pingora server: proxy services per listener group, the admin service, and
//! the background control tasks (health checks, config watch, SIGHUP).

use crate::access_log::AccessLog;
use crate::admin::AdminApp;
use crate::config::{load_file, ConfigErrors, ServerSettings};
use crate::control::discovery::DiscoveryService;
use crate::control::reload::Reloader;
use crate::control::{publish, Control};
use crate::drain::{Drain, DrainSignal};
use crate::global_limit::RedisBuckets;
use crate::metrics::Metrics;
use crate::otel::{SpanCounters, Tracing};
use crate::proxy::{EdgeApp, Gateway};
use crate::redis_link::RedisLink;
use crate::revocation_feed::RedisRevocations;
use crate::snapshot::{CompileEnv, Snapshot, SnapshotStore};
use crate::upstream::DiscoveryCache;
use arc_swap::ArcSwap;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use portico_plugins::env::Env;
use portico_plugins::revocation::Revocations;
use portico_plugins::SharedBuckets;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    #[error("{0}")]
    Redis(String),
    #[error("listener {address}: {message}")]
    Listener { address: String, message: String },
    #[error("tracing: {0}")]
    Tracing(#[from] crate::otel::TracingError),
}

/// Loads and compiles the file exactly as `run` does, without starting anything; with
/// `Env::Placeholders`, variables the file names need not be set.
pub fn check(path: &std::path::Path, env: Env) -> Result<Snapshot, ConfigErrors> {
    let loaded = load_file(path)?;
    // Validation only: the link connects lazily, so nothing here touches the network.
    let shared = loaded
        .config
        .redis
        .as_ref()
        .and_then(|r| RedisLink::with_env(&r.value, env).ok())
        .map(|link| Arc::new(RedisBuckets::new(Arc::new(link))) as Arc<dyn SharedBuckets>);
    Snapshot::compile(
        &loaded,
        1,
        &CompileEnv {
            shared,
            env,
            ..CompileEnv::default()
        },
    )
}

/// Read buffer of a cleartext client connection: none. The edge waits for a request
/// without reading (see `proxy::edge`), and Pingora reads request heads into its own buffer,
/// so a buffer here would only add a copy per request and 4 KiB per idle connection.
const PLAIN_READ_BUFFER: usize = 0;

pub fn run(path: PathBuf, upgrade: bool) -> Result<(), StartError> {
    let loaded = load_file(&path)?;
    // Redis clients are made here, after reading the config and before Pingora's bootstrap
    // (which does not fork: no daemon mode); they connect lazily inside the services' runtimes.
    let link = match &loaded.config.redis {
        Some(r) => Some(Arc::new(
            RedisLink::new(&r.value).map_err(|e| StartError::Redis(e.to_string()))?,
        )),
        None => None,
    };
    let shared = link
        .clone()
        .map(|l| Arc::new(RedisBuckets::new(l)) as Arc<dyn SharedBuckets>);
    let revocations = Arc::new(Revocations::default());
    let snapshot = Snapshot::compile(
        &loaded,
        1,
        &CompileEnv {
            shared: shared.clone(),
            revocations: revocations.clone(),
            ..CompileEnv::default()
        },
    )?;
    let config = snapshot.config.clone();
    let metrics = Arc::new(Metrics::new()?);
    if link.is_some() {
        metrics.track_redis()?;
    }
    let snapshot = Arc::new(snapshot);
    let store: SnapshotStore = Arc::new(ArcSwap::new(snapshot.clone()));
    publish(&store, &metrics, snapshot);
    let access_log = if config.access_log.enabled {
        Some(
            AccessLog::open(
                config.access_log.path.as_deref(),
                metrics.access_log_dropped.clone(),
            )
            .map_err(StartError::AccessLog)?,
        )
    } else {
        None
    };

    let tracing_settings =
        crate::otel::settings(config.tracing.as_ref().map(|t| &t.value), &|name| {
            std::env::var(name).ok()
        })
        .map_err(StartError::Tracing)?;

    let conf = pingora_conf(&config.server);
    // Nothing here reads how long a stream's reads and writes waited, and accounting it costs
    // two clock reads per wait, four per proxied request (~35 ns each on a virtual machine).
    pingora::protocols::l4::stream::set_pending_time_accounting(false);
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let server_conf = server.configuration.clone();
    let mut wanted: Vec<&str> = config
        .listeners
        .iter()
        .map(|l| l.value.address.value.as_str())
        .collect();
    if !config.admin.address.is_empty() {
        wanted.push(&config.admin.address);
    }
    crate::socket_activation::hand_over(&wanted, &server.listen_fds());
    let drain = Arc::new(Drain::default());
    server.end_grace_period_when(drain.clone().drained());
    // After the bootstrap: the export thread belongs to the process that serves.
    let tracing = match &tracing_settings {
        Some(s) => Some(Arc::new(
            Tracing::start(
                s,
                SpanCounters::new(metrics.spans_exported.clone(), &metrics.spans_dropped),
            )
            .map_err(StartError::Tracing)?,
        )),
        None => None,
    };

    // One proxy service per h2c setting: Pingora's server options are per service.
    for h2c in [false, true] {
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .map(|l| &l.value)
            .enumerate()
            .filter(|(_, l)| l.h2c == h2c)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        let gateway = Gateway::new(
            store.clone(),
            metrics.clone(),
            access_log.clone(),
            tracing.clone(),
        );
        let mut proxy = pingora::proxy::http_proxy(&server_conf, gateway);
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = h2c;
        options.h2_idle_timeout = Some(config.limits.keepalive_timeout.get());
        proxy.server_options = Some(options);
        let open_by_port = listeners
            .iter()
            .filter_map(|(_, l)| {
                let address = &l.address.value;
                let port = address.rsplit_once(':')?.1.parse::<u16>().ok()?;
                let label = l.name.as_deref().unwrap_or(address);
                Some((port, metrics.open_connections.with_label_values(&[label])))
            })
            .collect();
        let app = EdgeApp::new(proxy, store.clone(), drain.clone(), h2c, open_by_port);
        let name = if h2c {
            "portico-proxy-h2c"
        } else {
            "portico-proxy"
        };
        let mut service = Service::new(name.to_string(), app);
        for (index, l) in listeners {
            let address = l.address.value.clone();
            let mut listener = ListenerConfig::tcp(address.clone());
            match &l.tls {
                Some(_) => {
                    let settings = crate::tls::settings(l, &store).map_err(|message| {
                        StartError::Listener {
                            address: address.clone(),
                            message,
                        }
                    })?;
                    listener = listener.tls(settings);
                }
                None => {
                    // Pingora gives every connection a 64 KiB read buffer, held while the
                    // connection idles: 640 MiB for 10k keep-alive clients.
                    listener = listener.l4_buffer(L4BufferSettings::new(PLAIN_READ_BUFFER, 1460));
                }
            }
            service.add_listener(listener);
            tracing::info!(address = %address, listener = index, tls = l.tls.is_some(), h2c, "listening");
        }
        server.add_service(service);
    }

    let discovery = match (&link, &config.redis) {
        (Some(link), Some(r)) => Some(Arc::new(DiscoveryService::new(
            link.clone(),
            store.clone(),
            metrics.clone(),
            Arc::new(DiscoveryCache::default()),
            r.value.resync_interval.get(),
            r.value.registry_grace.get(),
        ))),
        _ => None,
    };
    let revocation_feed = match (&link, &config.redis) {
        (Some(link), Some(r)) => {
            let feed = Arc::new(RedisRevocations::new(
                link.clone(),
                &r.value.key_prefix,
                revocations.clone(),
            ));
            revocations.connect(feed.clone());
            Some(feed)
        }
        _ => None,
    };
    let reloader = Arc::new(Reloader::new(
        path,
        store.clone(),
        metrics.clone(),
        discovery.clone(),
        shared,
        revocations.clone(),
    ));
    if !config.admin.address.is_empty() {
        let mut admin = Service::new(
            "portico-admin".to_string(),
            AdminApp::new(
                reloader.clone(),
                metrics.clone(),
                link.clone(),
                drain.clone(),
                revocations.clone(),
            ),
        );
        admin.add_tcp(&config.admin.address);
        // `/ready` says 503 while the proxy listeners drain, instead of refusing connections.
        admin.accept_during_shutdown(true);
        admin.threads = Some(1);
        server.add_service(admin);
        tracing::info!(address = %config.admin.address, "admin listening");
    }
    let control = background_service(
        "portico-control",
        Control {
            store,
            metrics,
            reloader,
            discovery,
            revocation_feed,
            access_log: access_log.clone(),
            watch: config.server.watch_config,
        },
    );
    server.add_service(control);
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainSignal { drain }),
    });
    if let Some(log) = &access_log {
        log.flush(std::time::Duration::from_secs(1));
    }
    if let Some(t) = &tracing {
        t.shutdown(std::time::Duration::from_secs(2));
    }
    std::process::exit(0)
}

/// Pingora's server configuration from Portico's `server` settings.
fn pingora_conf(s: &ServerSettings) -> ServerConf {
    let threads = s.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut conf = ServerConf {
        threads,
        grace_period_seconds: Some(s.grace_period.get().as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.get().as_secs().max(1)),
        upgrade_sock: s.upgrade_sock.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        // One worker has no one to steal from, and tokio's single-threaded scheduler does its
        // work without the multi-threaded one's cross-thread bookkeeping: 4 % more requests
        // per second on the load benchmark (58.5k -> 61.0k), 0.5 us less system time each.
        work_stealing: s.work_stealing && threads > 1,
        runtime_event_interval: s.event_interval.map(NonZeroU32::get),
        ..ServerConf::default()
    };
    conf.max_retries = 16;
    // Pingora's own timer for its I/O timeouts keeps each pending timeout in an ordered map
    // per thread, served by a clock thread that wakes every 10 ms; a proxied request's
    // upstream read registered one there (~1.2k instructions, `make bench-ir`). Tokio's timer
    // wheel, per worker, does the same job for less: every timeout of a second or more goes
    // there.
    conf.fast_timeout_to_tokio_threshold_seconds = Some(0);
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_interval_reaches_the_runtime() {
        let mut settings = ServerSettings::default();
        assert_eq!(pingora_conf(&settings).runtime_opts().event_interval, None);
        settings.event_interval = NonZeroU32::new(4);
        assert_eq!(
            pingora_conf(&settings).runtime_opts().event_interval,
            Some(4)
        );
    }
}
