//! One request's tries at a pool, and every decision about them: which member the next try
//! goes to, whether a failed try is retried, and what passive health hears of each try
//! (exactly once). The proxy's phases report what happened; this type decides. It needs no
//! Pingora session, so each rule is unit-tested below.

use super::{InflightGuard, KeySource, Member, Pool, Transition};
use http::Method;
use pingora::http::RequestHeader;
use pingora::utils::poll_clock;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tries of one request.
#[derive(Default)]
pub struct Attempts {
    tried: Tried,
    tries: u32,
    connect_failures: u32,
    /// Retries taken for 5xx, resets and timeouts (connect failures are counted apart).
    retries: u32,
    /// The current try ended in a 5xx that is being retried.
    retry_pending: bool,
    /// A pooled connection went stale: the next try may reuse the same member.
    retry_same_member: bool,
    /// The current try's outcome went to passive health already.
    reported: bool,
    member: Option<Arc<Member>>,
    _inflight: Option<InflightGuard>,
    started: Option<Instant>,
    /// From choosing the member to the upstream's response header.
    elapsed: Option<Duration>,
}

/// How a try failed after its connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// A read or write timed out.
    Timeout,
    /// The connection broke (reset, closed, a protocol error).
    Reset,
    /// A pooled connection that the member had closed while it idled: not the member's fault.
    StalePooled,
}

/// What to do after a try's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Try again (with another member, unless the failure was a stale pooled connection).
    pub retry: bool,
    /// What the outcome did to the member's circuit.
    pub transition: Transition,
}

impl Verdict {
    fn new(retry: bool, transition: Transition) -> Self {
        Verdict { retry, transition }
    }
}

/// Whether a method may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Attempts {
    /// The member of the current try.
    pub fn member(&self) -> Option<&Arc<Member>> {
        self.member.as_ref()
    }

    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Time from choosing the member to the response header of the try that answered.
    /// Time since the current try chose its member.
    pub fn since_try_started(&self) -> Option<Duration> {
        self.started.map(|t| t.elapsed())
    }

    pub fn upstream_elapsed(&self) -> Option<Duration> {
        self.elapsed
    }

    /// Chooses the member for the next try: one this request has not tried (the same one is
    /// allowed again after a stale pooled connection), available, and — when half-open —
    /// with the probe slot won. `None`: no member can take the request.
    pub fn pick(
        &mut self,
        pool: &Pool,
        req: &RequestHeader,
        source: KeySource<'_>,
    ) -> Option<Arc<Member>> {
        if self.tries == 0 {
            pool.retry.on_request();
        }
        let same_ok = std::mem::take(&mut self.retry_same_member);
        // A half-open member whose probe another request took between selection and claim
        // is skipped; a few rounds are enough, since each loses only to a concurrent claim.
        let mut lost = Tried::default();
        for _ in 0..4 {
            let tried = &self.tried;
            let skip = |m: &Arc<Member>| (!same_ok && tried.contains(m)) || lost.contains(m);
            let member = pool.select(req, source, &skip)?;
            let Some(inflight) = member.start_request() else {
                lost.push(&member);
                continue;
            };
            self.tried.push(&member);
            self.tries += 1;
            self.reported = false;
            self.retry_pending = false;
            self._inflight = Some(inflight);
            self.started = Some(poll_clock::read());
            self.member = Some(member.clone());
            return Some(member);
        }
        None
    }

    /// The member refused the connection or did not accept it in time. Nothing was sent, so
    /// another member is safe for any method, up to `connect_retries`.
    pub fn on_connect_failure(&mut self, pool: &Pool) -> Verdict {
        self.connect_failures += 1;
        let transition = self.report(pool, false);
        let tried = &self.tried;
        let retry =
            self.connect_failures <= pool.connect_retries && pool.has_other(&|m| tried.contains(m));
        Verdict::new(retry, transition)
    }

    /// The try failed after connecting. `response_started`: bytes of a response reached the
    /// client; `replayable`: the request is idempotent and its body is still buffered.
    pub fn on_proxy_failure(
        &mut self,
        pool: &Pool,
        failure: ProxyFailure,
        response_started: bool,
        replayable: bool,
    ) -> Verdict {
        if std::mem::take(&mut self.retry_pending) {
            // The failure is the one `on_response` raised to retry a 5xx.
            return Verdict::new(true, Transition::None);
        }
        if response_started || !replayable {
            // Never after response bytes went out; never a request that cannot be replayed.
            return Verdict::new(false, self.report(pool, false));
        }
        if failure == ProxyFailure::StalePooled {
            self.retry_same_member = true;
            return Verdict::new(true, Transition::None);
        }
        let transition = self.report(pool, false);
        let wanted = match failure {
            ProxyFailure::Timeout => pool.retry.on_timeout,
            _ => pool.retry.on_reset,
        };
        Verdict::new(wanted && self.take_retry(pool), transition)
    }

    /// The upstream answered with `status`. A retry of 502–504 is decided here; the proxy then
    /// ends the try with an error, which [`Attempts::on_proxy_failure`] turns into the retry.
    pub fn on_response(&mut self, pool: &Pool, status: u16, replayable: bool) -> Verdict {
        self.elapsed = self
            .started
            .map(|t| poll_clock::read().saturating_duration_since(t));
        let failed = pool
            .passive
            .as_ref()
            .is_some_and(|p| p.is_failure_status(status));
        let transition = self.report(pool, !failed);
        let retry =
            matches!(status, 502..=504) && pool.retry.on_5xx && replayable && self.take_retry(pool);
        self.retry_pending = retry;
        Verdict::new(retry, transition)
    }

    /// The request is over. A try that ended without an outcome (the client left) frees
    /// its half-open probe slot for another request.
    pub fn finish(&mut self) {
        if !self.reported {
            if let Some(m) = &self.member {
                m.release_probe();
            }
        }
    }

    /// Sends the current try's outcome to passive health, once per try.
    fn report(&mut self, pool: &Pool, ok: bool) -> Transition {
        if std::mem::replace(&mut self.reported, true) {
            return Transition::None;
        }
        match &self.member {
            Some(member) => pool.report(member, ok),
            None => Transition::None,
        }
    }

    /// Whether another try is allowed: attempts left, another member to try, budget left.
    fn take_retry(&mut self, pool: &Pool) -> bool {
        let tried = &self.tried;
        if self.retries >= pool.retry.attempts || !pool.has_other(&|m| tried.contains(m)) {
            return false;
        }
        if !pool.retry.take_retry() {
            tracing::debug!(upstream = %pool.name, "retry budget exhausted");
            return false;
        }
        self.retries += 1;
        true
    }
}

/// Members tried by this request, by identity (no allocation: a request tries few).
#[derive(Default)]
struct Tried {
    members: [usize; 8],
    len: usize,
}

impl Tried {
    fn contains(&self, m: &Arc<Member>) -> bool {
        self.members[..self.len].contains(&(Arc::as_ptr(m) as usize))
    }

    fn push(&mut self, m: &Arc<Member>) {
        if self.len < self.members.len() {
            self.members[self.len] = Arc::as_ptr(m) as usize;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use crate::upstream::Circuit;

    fn pool(yaml: &str) -> Pool {
        let config: UpstreamConfig = serde_saphyr::from_str(yaml).unwrap();
        Pool::build("p", &config, None, None, &|h, _| {
            Err(crate::dns::DnsError::NoAddress(h.into()))
        })
        .unwrap()
    }

    fn two_members(extra: &str) -> Pool {
        pool(&format!(
            "members:\n  - address: 127.0.0.1:1001\n  - address: 127.0.0.1:1002\n{extra}"
        ))
    }

    fn get() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    #[test]
    fn a_connect_failure_moves_to_another_member_within_connect_retries() {
        let p = two_members("connect_retries: 1\n");
        let mut a = Attempts::default();
        let first = a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(a.on_connect_failure(&p).retry);
        let second = a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a retry picks another member"
        );
        assert!(
            !a.on_connect_failure(&p).retry,
            "connect_retries: 1 is spent"
        );
        assert_eq!(a.tries(), 2);
    }

    #[test]
    fn a_5xx_is_retried_only_when_configured_and_replayable() {
        let p = two_members("retries:\n  attempts: 1\n  on: [5xx]\n");
        let mut a = Attempts::default();
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(!a.on_response(&p, 502, false).retry, "not replayable");
        let mut a = Attempts::default();
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(a.on_response(&p, 503, true).retry);
        // The proxy ends the try with an error; that error is the retry, not a new failure.
        let v = a.on_proxy_failure(&p, ProxyFailure::Reset, false, true);
        assert_eq!(v, Verdict::new(true, Transition::None));
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(!a.on_response(&p, 503, true).retry, "attempts: 1 is spent");
        let p = two_members("retries:\n  attempts: 1\n  on: [reset]\n");
        let mut a = Attempts::default();
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(!a.on_response(&p, 502, true).retry, "5xx is not in `on`");
    }

    #[test]
    fn nothing_is_retried_after_the_response_started() {
        let p = two_members("retries:\n  attempts: 2\n  on: [reset, timeout]\n");
        let mut a = Attempts::default();
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(
            !a.on_proxy_failure(&p, ProxyFailure::Reset, true, true)
                .retry
        );
        let mut a = Attempts::default();
        a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(
            a.on_proxy_failure(&p, ProxyFailure::Timeout, false, true)
                .retry
        );
    }

    #[test]
    fn a_stale_pooled_connection_may_retry_the_same_member_and_is_not_its_fault() {
        let p = pool(
            "members:\n  - address: 127.0.0.1:1001\npassive_health:\n  consecutive_failures: 1\n",
        );
        let mut a = Attempts::default();
        let first = a.pick(&p, &get(), KeySource::default()).unwrap();
        let v = a.on_proxy_failure(&p, ProxyFailure::StalePooled, false, true);
        assert_eq!(v, Verdict::new(true, Transition::None));
        let again = a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            again.circuit(),
            Circuit::Closed,
            "not reported as a failure"
        );
    }

    #[test]
    fn each_try_reaches_passive_health_once() {
        let p =
            two_members("passive_health:\n  consecutive_failures: 2\n  max_ejected_percent: 100\n");
        let mut a = Attempts::default();
        let m = a.pick(&p, &get(), KeySource::default()).unwrap();
        // A 502 answer is reported; the error that follows it must not count a second time.
        a.on_response(&p, 502, true);
        a.on_proxy_failure(&p, ProxyFailure::Reset, false, true);
        assert_eq!(m.circuit(), Circuit::Closed, "one failure of two");
        let mut b = Attempts::default();
        loop {
            let n = b.pick(&p, &get(), KeySource::default()).unwrap();
            if Arc::ptr_eq(&n, &m) {
                break;
            }
            b = Attempts::default();
        }
        assert!(matches!(
            b.on_connect_failure(&p).transition,
            Transition::Ejected(_)
        ));
        assert_eq!(m.circuit(), Circuit::Open);
    }

    #[test]
    fn an_unfinished_try_frees_the_half_open_probe() {
        let p = pool(
            "members:\n  - address: 127.0.0.1:1001\npassive_health:\n  consecutive_failures: 1\n  base_ejection: 1ms\n  max_ejection: 1ms\n  max_ejected_percent: 100\n",
        );
        let mut a = Attempts::default();
        let m = a.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(matches!(
            a.on_connect_failure(&p).transition,
            Transition::Ejected(_)
        ));
        while m.circuit() != Circuit::HalfOpen {
            std::thread::yield_now();
        }
        let mut probe = Attempts::default();
        probe.pick(&p, &get(), KeySource::default()).unwrap();
        assert!(
            Attempts::default()
                .pick(&p, &get(), KeySource::default())
                .is_none(),
            "one probe at a time"
        );
        probe.finish();
        assert!(Attempts::default()
            .pick(&p, &get(), KeySource::default())
            .is_some());
    }
}
