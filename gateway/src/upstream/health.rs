//! Active health checks. One background task walks the pools of the live snapshot and probes
//! each member on its pool's interval; a member flips after the configured number of
//! consecutive results. Pools that survive a reload keep their state, so a reload neither
//! resets nor pauses health checking.

use super::{Member, Pool};
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct HealthChecker {
    probe: Box<dyn HealthCheck + Send + Sync>,
    interval: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    next_due: Mutex<Instant>,
}

impl HealthChecker {
    pub fn new(pool: &str, config: &HealthCheckConfig, tls: bool) -> Result<Self, String> {
        if config.healthy_threshold == 0 || config.unhealthy_threshold == 0 {
            return Err("thresholds must be at least 1".into());
        }
        if config.interval.get() < Duration::from_millis(100) {
            return Err("interval must be at least 100ms".into());
        }
        let timeout = config.timeout.get();
        let probe: Box<dyn HealthCheck + Send + Sync> = match config.kind {
            HealthCheckKind::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.peer_template.options.connection_timeout = Some(timeout);
                check
            }
            HealthCheckKind::Http => {
                if !config.path.starts_with('/') {
                    return Err(format!("path `{}` must start with `/`", config.path));
                }
                let host = config.host.as_deref().unwrap_or(pool);
                let mut check = HttpHealthCheck::new(host, tls);
                check.peer_template.options.connection_timeout = Some(timeout);
                check.peer_template.options.total_connection_timeout = Some(timeout);
                check.peer_template.options.read_timeout = Some(timeout);
                check.peer_template.options.write_timeout = Some(timeout);
                check.req =
                    pingora::http::RequestHeader::build("GET", config.path.as_bytes(), None)
                        .map_err(|e| format!("path `{}`: {e}", config.path))?;
                check
                    .req
                    .insert_header(http::header::HOST, host)
                    .map_err(|e| format!("host `{host}`: {e}"))?;
                check
                    .req
                    .insert_header(http::header::USER_AGENT, "portico-health-check")
                    .map_err(|e| format!("{e}"))?;
                let expected = config.expected_statuses.clone();
                check.validator = Some(Box::new(move |resp| {
                    let status = resp.status.as_u16();
                    let ok = if expected.is_empty() {
                        (200..300).contains(&status)
                    } else {
                        expected.contains(&status)
                    };
                    if ok {
                        Ok(())
                    } else {
                        pingora::Error::e_explain(
                            pingora::ErrorType::CustomCode("unexpected status", status),
                            "health check",
                        )
                    }
                }));
                Box::new(check)
            }
        };
        Ok(HealthChecker {
            probe,
            interval: config.interval.get(),
            healthy_threshold: config.healthy_threshold,
            unhealthy_threshold: config.unhealthy_threshold,
            next_due: Mutex::new(Instant::now()),
        })
    }

    fn take_due(&self, now: Instant) -> bool {
        let Ok(mut due) = self.next_due.lock() else {
            return false;
        };
        if now < *due {
            return false;
        }
        *due = now + self.interval;
        true
    }
}

/// Streak encoding in one atomic: high bit set = failures, low bits = count.
const FAIL_BIT: u32 = 1 << 31;

fn record(streak: &AtomicU32, ok: bool) -> u32 {
    let prev = streak.load(Ordering::Relaxed);
    let next = match (ok, prev & FAIL_BIT != 0) {
        (true, false) | (false, true) => prev.saturating_add(1),
        (true, true) => 1,
        (false, false) => FAIL_BIT | 1,
    };
    streak.store(next, Ordering::Relaxed);
    next & !FAIL_BIT
}

async fn probe_member(pool: Arc<Pool>, member: Arc<Member>, metrics: Arc<Metrics>) {
    let Some(checker) = pool.health.as_ref() else {
        return;
    };
    let backend = Backend {
        addr: PingoraAddr::Inet(member.addr),
        weight: member.weight as usize,
        ext: Default::default(),
    };
    let result = checker.probe.check(&backend).await;
    let ok = result.is_ok();
    let count = record(&member.health_streak, ok);
    let threshold = if ok {
        checker.healthy_threshold
    } else {
        checker.unhealthy_threshold
    };
    if count >= threshold && member.set_healthy(ok) {
        match &result {
            Ok(()) => {
                tracing::info!(upstream = %pool.name, member = %member.address, "member is healthy again")
            }
            Err(e) => {
                tracing::warn!(upstream = %pool.name, member = %member.address, error = %e.root_cause(), "member failed its health check and left rotation")
            }
        }
        metrics.update_members(&pool);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaks_count_and_reset() {
        let s = AtomicU32::new(0);
        assert_eq!(record(&s, false), 1);
        assert_eq!(record(&s, false), 2);
        assert_eq!(record(&s, true), 1);
        assert_eq!(record(&s, true), 2);
        assert_eq!(record(&s, false), 1);
    }
}
