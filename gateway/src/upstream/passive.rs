//! Passive health (circuit breaking) per member: consecutive failures eject a member for a
//! period that doubles with each ejection up to a maximum, never more than a configured share
//! of the pool at once; when the period ends the member is half-open: one request probes it,
//! and its outcome closes the circuit or ejects the member again.

use super::PoolError;
use crate::config::PassiveHealthConfig;
use portico_plugins::clock::monotonic_ms as now_ms;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// One member's passive-health state.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    last_close: AtomicU64,
    probing: AtomicBool,
}

/// What a reported outcome did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Ejected(Duration),
    Closed,
}

#[derive(Debug, Clone)]
pub struct PassivePolicy {
    pub consecutive_failures: u32,
    pub failure_statuses: Vec<u16>,
    pub base: Duration,
    pub max: Duration,
    pub max_ejected_percent: u32,
}

impl PassivePolicy {
    pub fn new(c: &PassiveHealthConfig) -> Result<Self, PoolError> {
        if c.consecutive_failures == 0 {
            return Err(PoolError::at(
                "passive_health.consecutive_failures",
                "must be at least 1",
            ));
        }
        if c.max_ejected_percent > 100 {
            return Err(PoolError::at(
                "passive_health.max_ejected_percent",
                "is a percentage (0–100)",
            ));
        }
        if c.base_ejection.get() > c.max_ejection.get() {
            return Err(PoolError::at(
                "passive_health.base_ejection",
                "exceeds max_ejection",
            ));
        }
        Ok(PassivePolicy {
            consecutive_failures: c.consecutive_failures,
            failure_statuses: c.failure_statuses.clone(),
            base: c.base_ejection.get(),
            max: c.max_ejection.get(),
            max_ejected_percent: c.max_ejected_percent,
        })
    }

    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }
}

impl Breaker {
    pub fn circuit(&self) -> Circuit {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            Circuit::Closed
        } else if now_ms() < until {
            Circuit::Open
        } else {
            Circuit::HalfOpen
        }
    }

    /// Whether the selector may pick this member: closed, or half-open with no probe out.
    pub fn admits(&self) -> bool {
        match self.circuit() {
            Circuit::Closed => true,
            Circuit::Open => false,
            Circuit::HalfOpen => !self.probing.load(Ordering::Relaxed),
        }
    }

    /// Claims the member for a request: always while closed; while half-open only for the
    /// one request that wins the probe slot (compare-and-swap, so two requests that both saw
    /// it free cannot both probe).
    pub fn try_pick(&self) -> bool {
        match self.circuit() {
            Circuit::Closed => true,
            Circuit::Open => false,
            Circuit::HalfOpen => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
        }
    }

    pub fn report(
        &self,
        ok: bool,
        policy: &PassivePolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> Transition {
        let state = self.circuit();
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            if state == Circuit::HalfOpen {
                self.ejected_until.store(0, Ordering::Relaxed);
                self.probing.store(false, Ordering::Relaxed);
                self.last_close.store(now_ms(), Ordering::Relaxed);
                return Transition::Closed;
            }
            return Transition::None;
        }
        match state {
            Circuit::Open => Transition::None,
            Circuit::HalfOpen => {
                self.probing.store(false, Ordering::Relaxed);
                self.eject(policy)
            }
            Circuit::Closed => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= policy.consecutive_failures && may_eject() {
                    self.failures.store(0, Ordering::Relaxed);
                    self.eject(policy)
                } else {
                    Transition::None
                }
            }
        }
    }

    fn eject(&self, policy: &PassivePolicy) -> Transition {
        let now = now_ms();
        // A member that stayed healthy for a full max period starts over at the base period.
        let closed_at = self.last_close.load(Ordering::Relaxed);
        if closed_at != 0 && now.saturating_sub(closed_at) > policy.max.as_millis() as u64 {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let period = policy
            .base
            .saturating_mul(1u32 << n.min(16))
            .min(policy.max);
        self.ejected_until
            .store(now + period.as_millis().max(1) as u64, Ordering::Relaxed);
        Transition::Ejected(period)
    }

    /// A try that ended without an outcome (the client left): let another request probe.
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Relaxed);
    }

    pub fn is_ejected(&self) -> bool {
        self.circuit() != Circuit::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PassivePolicy {
        PassivePolicy {
            consecutive_failures: 2,
            failure_statuses: vec![502],
            base: Duration::from_millis(40),
            max: Duration::from_millis(100),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_backs_off() {
        let b = Breaker::default();
        let p = policy();
        assert_eq!(b.report(false, &p, || true), Transition::None);
        assert_eq!(b.report(true, &p, || true), Transition::None);
        assert_eq!(b.report(false, &p, || true), Transition::None);
        assert_eq!(
            b.report(false, &p, || true),
            Transition::Ejected(Duration::from_millis(40))
        );
        assert_eq!(b.circuit(), Circuit::Open);
        assert!(!b.admits());
        std::thread::sleep(Duration::from_millis(45));
        assert_eq!(b.circuit(), Circuit::HalfOpen);
        assert!(b.admits());
        assert!(b.try_pick());
        assert!(!b.admits(), "one probe at a time");
        assert!(!b.try_pick(), "the probe slot is taken");
        // The probe fails: ejected again, for twice as long.
        assert_eq!(
            b.report(false, &p, || true),
            Transition::Ejected(Duration::from_millis(80))
        );
        std::thread::sleep(Duration::from_millis(85));
        assert!(b.try_pick());
        assert_eq!(b.report(true, &p, || true), Transition::Closed);
        assert_eq!(b.circuit(), Circuit::Closed);
    }

    #[test]
    fn respects_the_ejection_cap() {
        let b = Breaker::default();
        let p = policy();
        b.report(false, &p, || false);
        assert_eq!(b.report(false, &p, || false), Transition::None);
        assert_eq!(b.circuit(), Circuit::Closed);
    }
}
