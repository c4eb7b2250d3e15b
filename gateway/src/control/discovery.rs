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

/// The loop's state between reads.
#[derive(Default)]
struct SyncState {
    /// When to read each service again (its first instance expiry, or a retry).
    expiries: HashMap<String, Instant>,
    link: LinkHistory,
}

/// A message that asks for every service to be read again.
const ALL: &str = "*";

pub struct DiscoveryService {
    registry: Registry,
    link: Arc<RedisLink>,
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    pub cache: Arc<DiscoveryCache>,
    resync_interval: Duration,
    /// `redis.registry_grace`: how long members missing after an outage are kept.
    grace: Duration,
    wake: Notify,
}

/// What the loop knows about Redis's recent past.
#[derive(Default)]
struct LinkHistory {
    /// The last registry read failed.
    failing: bool,
    /// Until then, after an outage, members missing from the registry stay in their pools.
    hold_until: Option<Instant>,
}

impl DiscoveryService {
    pub fn new(
        link: Arc<RedisLink>,
        store: SnapshotStore,
        metrics: Arc<Metrics>,
        cache: Arc<DiscoveryCache>,
        resync_interval: Duration,
        grace: Duration,
    ) -> Self {
        DiscoveryService {
            registry: Registry::new(link.clone()),
            link,
            store,
            metrics,
            cache,
            resync_interval,
            grace,
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
        let mut state = SyncState::default();
        loop {
            let next_expiry = state.expiries.values().min().copied();
            let deadline = next_expiry.map_or(next_full, |e| e.min(next_full));
            tokio::select! {
                event = rx.recv() => {
                    let Some(service) = event else { break };
                    if service == ALL {
                        self.sync_all(&mut state).await;
                    } else if self.services().contains(&service) {
                        self.sync(&service, &mut state).await;
                    }
                }
                _ = self.wake.notified() => self.sync_all(&mut state).await,
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if now >= next_full {
                        self.sync_all(&mut state).await;
                        next_full = Instant::now() + self.resync_interval;
                    } else {
                        let due: Vec<String> = state
                            .expiries
                            .iter()
                            .filter(|(_, t)| **t <= now)
                            .map(|(s, _)| s.clone())
                            .collect();
                        for s in due {
                            self.sync(&s, &mut state).await;
                        }
                    }
                }
            }
        }
        listener.abort();
    }

    async fn sync_all(&self, state: &mut SyncState) {
        let services = self.services();
        state.expiries.retain(|s, _| services.contains(s));
        for s in services {
            self.sync(&s, state).await;
        }
    }

    async fn sync(&self, service: &str, state: &mut SyncState) {
        match self.registry.fetch(service).await {
            Ok(view) => {
                self.metrics.registry_event("ok");
                let now = Instant::now();
                if std::mem::take(&mut state.link.failing) {
                    state.link.hold_until = Some(now + self.grace);
                }
                let mut found = resolve(service, &view).await;
                // Read again right after the first expiry, on Redis's clock.
                let mut next = view
                    .instances
                    .iter()
                    .map(|i| i.expires_at_ms)
                    .min()
                    .map(|first| {
                        now + Duration::from_millis(first.saturating_sub(view.now_ms) + 5)
                    });
                if let Some(until) = state.link.hold_until.filter(|t| now < *t) {
                    let held = self.hold_missing(service, &mut found);
                    if held > 0 {
                        tracing::info!(service, held, seconds = until.saturating_duration_since(now).as_secs_f64(), "registry came back without some members after an outage; keeping them while they re-register");
                        self.metrics.registry_event("held");
                        // Read again when the grace ends, to let go of those still missing.
                        next = Some(next.map_or(until, |n| n.min(until)));
                    }
                }
                match next {
                    Some(at) => {
                        state.expiries.insert(service.to_string(), at);
                    }
                    None => {
                        state.expiries.remove(service);
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
                state.link.failing = true;
                // Keep the last known members; try again soon.
                state
                    .expiries
                    .insert(service.to_string(), Instant::now() + Duration::from_secs(1));
                tracing::debug!(service, error = %e, "registry read failed; keeping the last known members");
            }
        }
    }

    /// Adds to `found` the last known instances it lacks; answers how many.
    fn hold_missing(&self, service: &str, found: &mut Vec<Discovered>) -> usize {
        let Some(known) = self.cache.get(service) else {
            return 0;
        };
        let before = found.len();
        for k in known {
            if !found.iter().any(|f| f.id == k.id) {
                found.push(k);
            }
        }
        found.len() - before
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
