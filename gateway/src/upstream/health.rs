//! Active health checks of one pool: the probe built from its config, and the streaks that
//! flip a member after the configured number of consecutive results. The loop that runs the
//! probes lives in `control::health`.

use super::{Member, PoolError};
use crate::config::{HealthCheckConfig, HealthCheckKind, UpstreamProtocol};
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

enum Probe {
    /// Pingora's TCP and HTTP checks.
    Pingora(Box<dyn HealthCheck + Send + Sync>),
    Grpc(Box<super::grpc_health::GrpcProbe>),
}

pub struct HealthChecker {
    probe: Probe,
    interval: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    next_due: Mutex<Instant>,
}

impl HealthChecker {
    /// `credentials`: the pool's private CA and client certificate, which probes use too.
    pub fn new(
        pool: &str,
        config: &HealthCheckConfig,
        tls: bool,
        protocol: UpstreamProtocol,
        credentials: Option<&super::tls::TlsCredentials>,
    ) -> Result<Self, PoolError> {
        if config.healthy_threshold == 0 || config.unhealthy_threshold == 0 {
            let key = if config.healthy_threshold == 0 {
                "health_check.healthy_threshold"
            } else {
                "health_check.unhealthy_threshold"
            };
            return Err(PoolError::at(key, "thresholds must be at least 1"));
        }
        if config.interval.get() < Duration::from_millis(100) {
            return Err(PoolError::at(
                "health_check.interval",
                "interval must be at least 100ms",
            ));
        }
        let timeout = config.timeout.get();
        let probe = match config.kind {
            HealthCheckKind::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.peer_template.options.connection_timeout = Some(timeout);
                Probe::Pingora(check)
            }
            HealthCheckKind::Grpc => {
                if matches!(protocol, UpstreamProtocol::Http1) {
                    return Err(PoolError::at(
                        "health_check.type",
                        "gRPC checks need HTTP/2: set the pool's `protocol` to `h2` or `h2c`",
                    ));
                }
                Probe::Grpc(Box::new(super::grpc_health::GrpcProbe::new(
                    &config.service,
                    timeout,
                )))
            }
            HealthCheckKind::Http => {
                if !config.path.starts_with('/') {
                    return Err(PoolError::at(
                        "health_check.path",
                        format!("path `{}` must start with `/`", config.path),
                    ));
                }
                let host = config.host.as_deref().unwrap_or(pool);
                let mut check = HttpHealthCheck::new(host, tls);
                check.peer_template.options.connection_timeout = Some(timeout);
                check.peer_template.options.total_connection_timeout = Some(timeout);
                check.peer_template.options.read_timeout = Some(timeout);
                check.peer_template.options.write_timeout = Some(timeout);
                if let Some(c) = credentials.filter(|_| tls) {
                    c.apply(&mut check.peer_template);
                }
                // The check speaks what the pool speaks.
                let (max, min) = protocol.http_versions();
                check.peer_template.options.set_http_version(max, min);
                check.req =
                    pingora::http::RequestHeader::build("GET", config.path.as_bytes(), None)
                        .map_err(|e| {
                            PoolError::at("health_check.path", format!("`{}`: {e}", config.path))
                        })?;
                check
                    .req
                    .insert_header(http::header::HOST, host)
                    .map_err(|e| PoolError::at("health_check.host", format!("`{host}`: {e}")))?;
                check
                    .req
                    .insert_header(http::header::USER_AGENT, "portico-health-check")
                    .map_err(|e| PoolError::at("health_check", e.to_string()))?;
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
                Probe::Pingora(Box::new(check))
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

    /// Whether the pool's interval has passed since its last round (and starts a new one).
    pub fn take_due(&self, now: Instant) -> bool {
        let Ok(mut due) = self.next_due.lock() else {
            return false;
        };
        if now < *due {
            return false;
        }
        *due = now + self.interval;
        true
    }

    /// Probes `member` once and counts the result; answers when the member flipped.
    pub async fn probe(&self, member: &Member) -> Option<HealthFlip> {
        let backend = Backend {
            addr: PingoraAddr::Inet(member.addr),
            weight: member.weight as usize,
            ext: Default::default(),
        };
        let result = match &self.probe {
            Probe::Pingora(check) => check
                .check(&backend)
                .await
                .map_err(|e| e.root_cause().to_string()),
            Probe::Grpc(grpc) => grpc.check(member).await,
        };
        let ok = result.is_ok();
        let count = record(&member.health_streak, ok);
        let threshold = if ok {
            self.healthy_threshold
        } else {
            self.unhealthy_threshold
        };
        (count >= threshold && member.set_healthy(ok)).then(|| HealthFlip {
            healthy: ok,
            error: result.err(),
        })
    }
}

/// A member entered or left rotation by active health checks.
#[derive(Debug)]
pub struct HealthFlip {
    pub healthy: bool,
    /// Why the last probe failed, when the member left rotation.
    pub error: Option<String>,
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
