//! The gateway's background work, above the snapshot: what changes the live snapshot
//! (reloads), what changes the pools inside it (registry discovery, active health checks),
//! and the one way a new snapshot goes live ([`publish`]).

pub mod discovery;
pub mod health;
pub mod reload;

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
/// go), then requests that start from now on read it. Requests in flight keep theirs.
pub fn publish(store: &SnapshotStore, metrics: &Metrics, next: Arc<Snapshot>) {
    let current = store.load();
    for (name, pool) in &current.pools {
        if !next.pools.contains_key(name) {
            metrics.forget_pool(pool);
        }
    }
    for pool in next.pools.values() {
        metrics.update_members(pool);
    }
    metrics.update_certificates(&next.tls);
    store.store(next);
}

/// Starts the background loops with the server and stops them with it.
pub struct Control {
    pub store: SnapshotStore,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub discovery: Option<Arc<DiscoveryService>>,
    /// Revocations from the other replicas.
    pub revocation_feed: Option<Arc<RedisRevocations>>,
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
        ];
        let has_tls = !self.store.load().tls.is_empty();
        if self.watch || has_tls {
            tasks.push(tokio::spawn(self.reloader.clone().watch(self.watch)));
        }
        if let Some(d) = &self.discovery {
            tasks.push(tokio::spawn(d.clone().run()));
        }
        if let Some(feed) = &self.revocation_feed {
            tasks.push(tokio::spawn(feed.clone().follow()));
        }
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
    }
}
