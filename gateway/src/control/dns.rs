//! Looks up the host names of pool members again when their answers expire, and applies
//! the addresses like registry changes: the member set is swapped, requests in flight keep
//! the member they have, members whose address stayed keep their state.

use crate::dns::Dns;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the pools are asked whether a name is due (each name's own schedule follows
/// its TTL and `dns_refresh`).
const TICK: Duration = Duration::from_millis(250);

pub async fn refresh_member_names(store: SnapshotStore, metrics: Arc<Metrics>) {
    // A resolver per `dns` section: rebuilt when a reload changes the section.
    let mut resolver: Option<(String, Dns)> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = store.load_full();
        let now = Instant::now();
        let due: Vec<_> = snapshot
            .pools
            .values()
            .map(|p| (p.clone(), p.names_due(now)))
            .filter(|(_, names)| !names.is_empty())
            .collect();
        if due.is_empty() {
            continue;
        }
        let section = serde_json::to_string(&snapshot.config.dns).unwrap_or_default();
        if resolver.as_ref().is_none_or(|(s, _)| *s != section) {
            match Dns::new(&snapshot.config.dns) {
                Ok(dns) => resolver = Some((section, dns)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the resolver for member names");
                    continue;
                }
            }
        }
        let Some((_, dns)) = &resolver else { continue };
        for (pool, names) in due {
            let mut changed = false;
            for (index, host, port) in names {
                let answer = dns.resolve(&host, port).await;
                metrics.dns_lookup(answer.is_ok());
                changed |= pool.set_named(index, answer);
            }
            if changed {
                metrics.update_members(&pool);
            }
        }
    }
}
