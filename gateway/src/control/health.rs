//! The active health-check loop: walks the pools of the live snapshot and probes each member
//! on its pool's interval. Pools that survive a reload keep their state, so a reload neither
//! resets nor pauses health checking.

use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use crate::upstream::{Member, Pool};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs until the process stops; probes whatever pools the live snapshot has.
pub async fn run_health_checks(store: SnapshotStore, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = store.load();
        let now = Instant::now();
        for pool in snapshot.pools.values() {
            let Some(checker) = pool.health.as_ref() else {
                continue;
            };
            if !checker.take_due(now) {
                continue;
            }
            for member in pool.members().members.iter() {
                tokio::spawn(probe_member(pool.clone(), member.clone(), metrics.clone()));
            }
        }
    }
}

async fn probe_member(pool: Arc<Pool>, member: Arc<Member>, metrics: Arc<Metrics>) {
    let Some(checker) = pool.health.as_ref() else {
        return;
    };
    let Some(flip) = checker.probe(&member).await else {
        return;
    };
    match flip.error {
        None => {
            tracing::info!(upstream = %pool.name, member = %member.address, "member is healthy again")
        }
        Some(error) => {
            tracing::warn!(upstream = %pool.name, member = %member.address, error, "member failed its health check and left rotation")
        }
    }
    metrics.update_members(&pool);
}
