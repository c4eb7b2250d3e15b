//! Registry-driven pool membership. One task per process reads the registry on start, on
//! every `P:events` message, when the earliest known instance expires (so an expired
//! instance leaves rotation at once, judged on Redis's clock), and on a periodic full
//! resync; it keeps serving the last known members while Redis is unreachable and catches
//! up by itself when Redis returns.

use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::registry::{Registry, ServiceView};
use crate::snapshot::SnapshotStore;
use crate::upstream::{Discovered, DiscoveryCache};
use futures_util::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// A message that asks for every service to be read again.
const ALL: &str = "*";

pub struct DiscoveryService {
    registry: Registry,
    link: Arc<RedisLink>,
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    pub cache: Arc<DiscoveryCache>,
    resync_interval: Duration,
    wake: Notify,
}

impl DiscoveryService {
    pub fn new(
        link: Arc<RedisLink>,
        store: SnapshotStore,
        metrics: Arc<Metrics>,
        cache: Arc<DiscoveryCache>,
        resync_interval: Duration,
    ) -> Self {
        DiscoveryService {
            registry: Registry::new(link.clone()),
            link,
            store,
            metrics,
            cache,
            resync_interval,
            wake: Notify::new(),
        }
    }

    /// Asks for a full resync (after a reload that may have added discovered pools).
    pub fn resync_soon(&self) {
        self.wake.notify_one();
    }

    fn services(&self) -> BTreeSet<String> {
        self.store
            .load()
            .pools
            .values()
            .filter_map(|p| p.service.clone())
            .collect()
    }

    pub async fn run(self: Arc<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let listener = tokio::spawn(self.clone().listen(tx));
        let mut next_full = Instant::now();
        let mut expiries: HashMap<String, Instant> = HashMap::new();
        loop {
            let next_expiry = expiries.values().min().copied();
            let deadline = next_expiry.map_or(next_full, |e| e.min(next_full));
            tokio::select! {
                event = rx.recv() => {
                    let Some(service) = event else { break };
                    if service == ALL {
                        self.sync_all(&mut expiries).await;
                    } else if self.services().contains(&service) {
                        self.sync(&service, &mut expiries).await;
                    }
                }
                _ = self.wake.notified() => self.sync_all(&mut expiries).await,
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if now >= next_full {
                        self.sync_all(&mut expiries).await;
                        next_full = Instant::now() + self.resync_interval;
                    } else {
                        let due: Vec<String> = expiries
                            .iter()
                            .filter(|(_, t)| **t <= now)
                            .map(|(s, _)| s.clone())
                            .collect();
                        for s in due {
                            self.sync(&s, &mut expiries).await;
                        }
                    }
                }
            }
        }
        listener.abort();
    }

    async fn sync_all(&self, expiries: &mut HashMap<String, Instant>) {
        let services = self.services();
        expiries.retain(|s, _| services.contains(s));
        for s in services {
            self.sync(&s, expiries).await;
        }
    }

    async fn sync(&self, service: &str, expiries: &mut HashMap<String, Instant>) {
        match self.registry.fetch(service).await {
            Ok(view) => {
                self.metrics.registry_event("ok");
                let found = resolve(service, &view).await;
                match view.instances.iter().map(|i| i.expires_at_ms).min() {
                    // Read again right after the first expiry, on Redis's clock.
                    Some(first) => {
                        let wait = Duration::from_millis(first.saturating_sub(view.now_ms) + 5);
                        expiries.insert(service.to_string(), Instant::now() + wait);
                    }
                    None => {
                        expiries.remove(service);
                    }
                }
                if !view.invalid.is_empty() {
                    self.metrics.registry_event("invalid");
                    tracing::warn!(service, ids = ?view.invalid, "skipped malformed registry entries");
                }
                self.apply(service, found);
            }
            Err(e) => {
                self.metrics.registry_event("error");
                // Keep the last known members; try again soon.
                expiries.insert(service.to_string(), Instant::now() + Duration::from_secs(1));
                tracing::debug!(service, error = %e, "registry read failed; keeping the last known members");
            }
        }
    }

    fn apply(&self, service: &str, found: Vec<Discovered>) {
        let snapshot = self.store.load();
        for pool in snapshot.pools.values() {
            if pool.service.as_deref() == Some(service) && pool.set_discovered(&found) {
                self.metrics.update_members(pool);
                tracing::info!(upstream = %pool.name, service, members = pool.len(), "membership changed");
            }
        }
        self.cache.put(service, found);
    }

    /// Follows `P:events`; after every (re)subscription everything is read again, since events
    /// may have been missed while disconnected.
    async fn listen(self: Arc<Self>, tx: mpsc::UnboundedSender<String>) {
        let channel = self.registry.events_channel();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.link.subscribe(&channel).await {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    if tx.send(ALL.into()).is_err() {
                        return;
                    }
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let service: String = msg.get_payload().unwrap_or_default();
                        if tx.send(service).is_err() {
                            return;
                        }
                    }
                    tracing::warn!("registry event subscription lost; reconnecting");
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to registry events"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

async fn resolve(service: &str, view: &ServiceView) -> Vec<Discovered> {
    let mut out = Vec::with_capacity(view.instances.len());
    for i in &view.instances {
        let addr = match i.addr.parse() {
            Ok(a) => Some(a),
            Err(_) => tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host(i.addr.as_str()),
            )
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|mut it| it.next()),
        };
        match addr {
            Some(addr) => out.push(Discovered {
                id: i.id.clone(),
                address: i.addr.clone(),
                addr,
                weight: i.weight,
                tls: i.tls,
            }),
            None => {
                tracing::warn!(service, id = %i.id, addr = %i.addr, "cannot resolve a registered address")
            }
        }
    }
    out
}
