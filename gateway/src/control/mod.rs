//! The gateway's background work, above the snapshot: what changes the live snapshot
//! (reloads), what changes the pools inside it (registry discovery, active health checks),
//! and the one way a new snapshot goes live ([`publish`]).

pub mod discovery;
pub mod dns;
pub mod health;
pub mod reload;
mod retire;

use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::revocation_feed::RedisRevocations;
use crate::snapshot::{Snapshot, SnapshotStore};
use async_trait::async_trait;
use discovery::DiscoveryService;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use reload::Reloader;
use std::sync::Arc;

/// Makes `next` the live snapshot: the pool metrics follow it (series of removed pools
/// go), then requests that start from now on read it. Requests in flight keep theirs; the
/// replaced one is dropped once they are done, off the request path ([`retire`]). At start
/// the store already holds `next` and nothing is replaced.
pub fn publish(store: &SnapshotStore, metrics: &Metrics, next: Arc<Snapshot>) {
    let current = store.load();
    let replaces = !Arc::ptr_eq(&current, &next);
    for (name, pool) in &current.pools {
        if !next.pools.contains_key(name) {
            metrics.forget_pool(pool);
        }
    }
    for pool in next.pools.values() {
        metrics.update_members(pool);
    }
    metrics.update_certificates(&next.tls);
    drop(current);
    let replaced = store.swap(next);
    if replaces {
        retire::retire(replaced);
    }
}

/// Starts the background loops with the server and stops them with it.
pub struct Control {
    pub store: SnapshotStore,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub discovery: Option<Arc<DiscoveryService>>,
    /// Revocations from the other replicas.
    pub revocation_feed: Option<Arc<RedisRevocations>>,
    /// Reopened on SIGUSR1.
    pub access_log: Option<AccessLog>,
    /// Reload when the config file changes (`server.watch_config`). Certificate files are
    /// watched whenever a listener serves TLS.
    pub watch: bool,
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = vec![
            tokio::spawn(health::run_health_checks(
                self.store.clone(),
                self.metrics.clone(),
            )),
            tokio::spawn(self.reloader.clone().on_sighup()),
            tokio::spawn(dns::refresh_member_names(
                self.store.clone(),
                self.metrics.clone(),
            )),
        ];
        let has_tls = {
            let s = self.store.load();
            !s.tls.is_empty() || s.config.upstreams.values().any(|u| u.value.tls.is_some())
        };
        if self.watch || has_tls {
            tasks.push(tokio::spawn(self.reloader.clone().watch(self.watch)));
        }
        if let Some(d) = &self.discovery {
            tasks.push(tokio::spawn(d.clone().run()));
        }
        if let Some(feed) = &self.revocation_feed {
            tasks.push(tokio::spawn(feed.clone().follow()));
        }
        if let Some(log) = &self.access_log {
            tasks.push(tokio::spawn(reopen_on_sigusr1(log.clone())));
        }
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
    }
}

/// logrotate's convention: after moving the file away, SIGUSR1 makes the writer open it again.
async fn reopen_on_sigusr1(log: AccessLog) {
    let Ok(mut usr1) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
    else {
        tracing::error!("cannot install the SIGUSR1 handler");
        return;
    };
    while usr1.recv().await.is_some() {
        log.reopen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::snapshot::CompileEnv;
    use arc_swap::ArcSwap;

    #[test]
    fn publishing_the_snapshot_the_store_holds_retires_nothing() {
        let config = "listeners: [ { address: 127.0.0.1:8080 } ]\n\
                      upstreams: { up: { members: [ { address: 127.0.0.1:8081 } ] } }\n\
                      routes: [ { name: main, match: { prefix: / }, upstream: up } ]\n";
        let loaded = load_str("t.yaml".into(), config).unwrap();
        let snapshot = Arc::new(Snapshot::compile(&loaded, 1, &CompileEnv::default()).unwrap());
        let store: SnapshotStore = Arc::new(ArcSwap::new(snapshot.clone()));
        let metrics = Metrics::new().unwrap();
        publish(&store, &metrics, snapshot.clone());
        // The test's reference and the store's; a retiring thread would hold a third, waking
        // every 20 ms beside the proxy's worker for a minute before letting go of it.
        assert_eq!(Arc::strong_count(&snapshot), 2);
    }
}
