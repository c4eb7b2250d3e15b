//! `portico registry …`: register, deregister and list instances in the Redis registry.

use crate::config::{load_file, RedisConfig};
use crate::redis_link::RedisLink;
use crate::registry::{Registration, Registry};
use clap::Subcommand;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand, Debug, Clone)]
pub enum RegistryCommand {
    /// Writes an instance into the registry.
    Register {
        #[arg(long)]
        service: String,
        /// HOST:PORT the gateway connects to.
        #[arg(long)]
        addr: String,
        /// Instance id; default: the address.
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// How long the registration lives without a heartbeat.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        ttl: Duration,
        /// The instance speaks TLS.
        #[arg(long)]
        tls: bool,
        /// Metadata, `key=value`, repeatable.
        #[arg(long = "meta", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Keep refreshing until interrupted, then deregister.
        #[arg(long)]
        heartbeat: bool,
    },
    /// Removes an instance.
    Deregister {
        #[arg(long)]
        service: String,
        #[arg(long)]
        id: String,
    },
    /// Lists live instances, of one service or of all.
    List {
        #[arg(long)]
        service: Option<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

/// The Redis to use: `--redis URL`, else the config file's `redis` section.
pub fn redis_config(url: Option<&str>, config: Option<&Path>) -> Result<RedisConfig, String> {
    match (url, config) {
        // Several comma-separated URLs: the seed nodes of a cluster.
        (Some(u), _) if u.contains(',') => {
            let mut c = RedisConfig::from_url(u);
            c.url = None;
            c.cluster = u.split(',').map(|s| s.trim().to_string()).collect();
            Ok(c)
        }
        (Some(u), _) => Ok(RedisConfig::from_url(u)),
        (None, Some(path)) => {
            let loaded = load_file(path).map_err(|e| e.to_string())?;
            loaded.config.redis.map(|r| r.value).ok_or_else(|| {
                format!(
                    "{} has no `redis` section; pass --redis URL",
                    path.display()
                )
            })
        }
        (None, None) => Err("pass --redis URL or -c FILE with a `redis` section".into()),
    }
}

pub fn run(command: RegistryCommand, config: RedisConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let config = as_cluster_if_it_is_one(config).await;
        let link = Arc::new(RedisLink::new(&config).map_err(|e| e.to_string())?);
        let registry = Registry::new(link);
        match command {
            RegistryCommand::Register {
                service,
                addr,
                id,
                weight,
                ttl,
                tls,
                meta,
                heartbeat,
            } => {
                let ttl_ms = ttl.as_millis() as u64;
                if ttl_ms < 1000 {
                    return Err("--ttl must be at least 1s".into());
                }
                let r = Registration {
                    id: id.unwrap_or_else(|| addr.clone()),
                    service,
                    addr,
                    weight,
                    tls,
                    meta: meta.into_iter().collect::<BTreeMap<_, _>>(),
                    ttl_ms,
                };
                registry.register(&r).await.map_err(|e| e.to_string())?;
                println!(
                    "registered {}/{} at {} (ttl {}s)",
                    r.service,
                    r.id,
                    r.addr,
                    ttl.as_secs_f64()
                );
                if heartbeat {
                    heartbeat_until_interrupted(&registry, &r, ttl).await;
                    registry
                        .deregister(&r.service, &r.id)
                        .await
                        .map_err(|e| e.to_string())?;
                    println!("deregistered {}/{}", r.service, r.id);
                }
                Ok(())
            }
            RegistryCommand::Deregister { service, id } => {
                let removed = registry
                    .deregister(&service, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                if removed {
                    println!("deregistered {service}/{id}");
                } else {
                    println!("{service}/{id} was not registered");
                }
                Ok(())
            }
            RegistryCommand::List { service } => {
                let services = match service {
                    Some(s) => vec![s],
                    None => registry.services().await.map_err(|e| e.to_string())?,
                };
                let mut out = serde_json::Map::new();
                for s in services {
                    let view = registry.fetch(&s).await.map_err(|e| e.to_string())?;
                    let list: Vec<serde_json::Value> = view
                        .instances
                        .iter()
                        .map(|i| {
                            let mut v = serde_json::to_value(i).unwrap_or_default();
                            v["expires_in_ms"] =
                                (i.expires_at_ms.saturating_sub(view.now_ms)).into();
                            v
                        })
                        .collect();
                    out.insert(s, list.into());
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
        }
    })
}

/// One URL of a Redis Cluster node is taken as the cluster's seed: a single-node client
/// would get `MOVED` for most keys. The node says whether it is one (`INFO cluster`).
async fn as_cluster_if_it_is_one(mut config: RedisConfig) -> RedisConfig {
    let Some(url) = config.url.clone().filter(|_| config.cluster.is_empty()) else {
        return config;
    };
    let Ok(link) = RedisLink::new(&config) else {
        return config;
    };
    let info: Result<String, _> = link.query(redis::cmd("INFO").arg("cluster")).await;
    if info.is_ok_and(|i| i.contains("cluster_enabled:1")) {
        eprintln!("{url} is a Redis Cluster node; using it as the cluster's seed");
        config.url = None;
        config.cluster = vec![url];
    }
    config
}

/// Refreshes every third of the TTL; a failed refresh is retried sooner, and logged. Returns
/// on SIGINT or SIGTERM.
async fn heartbeat_until_interrupted(registry: &Registry, r: &Registration, ttl: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let period = ttl / 3;
    // The streams are made once, before the loop: a signal that arrives while a refresh is
    // in flight is kept for the next wait. (A `ctrl_c()` future made per turn missed it, and
    // the process, whose SIGINT tokio had taken over, never stopped.)
    let (Ok(mut interrupt), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("cannot install the signal handlers; not heartbeating");
        return;
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => return,
            _ = term.recv() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = registry.register(r).await {
            eprintln!("heartbeat failed: {e}");
        }
    }
}
