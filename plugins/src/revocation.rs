//! Revoked sessions and tokens, one set per gateway, consulted by every auth plugin.
//!
//! A revocation names either one credential (a Better Auth session token, a session id, a
//! JWT `jti`) or a user: every session the user started, and every token issued to them,
//! before an instant ("not before"), except the sessions it keeps (the one that asked to end
//! the others). Each is kept until no credential it covers could still pass without it.
//!
//! Reads are lock-free (an `ArcSwap` of an immutable set) and cost nothing while the set is
//! empty; writes are rare (a sign-out) and copy the set. Revocations made here are handed to
//! the [`RevocationFeed`] (Redis, when configured) so other replicas apply them too.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One revocation, as applied here and as sent to other replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// One credential, by [`token_key`], [`session_key`] or [`jti_key`].
    Credential { key: String, until_ms: u64 },
    /// Every credential of the user started before `not_before_ms`, but those in `keep`.
    User {
        user_id: String,
        not_before_ms: u64,
        #[serde(default)]
        keep: Vec<String>,
        until_ms: u64,
    },
}

impl Revocation {
    /// When it may be forgotten (ms since the epoch).
    pub fn until_ms(&self) -> u64 {
        match self {
            Revocation::Credential { until_ms, .. } | Revocation::User { until_ms, .. } => {
                *until_ms
            }
        }
    }
}

/// Where a revocation came from (the `source` label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A session-ending request that passed through this gateway.
    Edge,
    /// The admin endpoint.
    Admin,
    /// Another replica, through Redis.
    Peer,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Edge, Source::Admin, Source::Peer];

    pub fn label(self) -> &'static str {
        match self {
            Source::Edge => "edge",
            Source::Admin => "admin",
            Source::Peer => "peer",
        }
    }
}

/// Carries revocations made here to the other replicas (the gateway implements it on Redis).
pub trait RevocationFeed: Send + Sync + std::fmt::Debug {
    /// Sends in the background: never blocks a request, and a failure leaves the revocation
    /// applied on this replica.
    fn publish(&self, revocation: &Revocation);

    /// Whether the other replicas' revocations are reaching this one now (subscribed, and the
    /// set read since the last reconnection).
    fn in_sync(&self) -> bool;
}

#[derive(Debug, Clone)]
struct UserCutoff {
    not_before_ms: u64,
    keep: Vec<String>,
    until_ms: u64,
}

#[derive(Debug, Default, Clone)]
struct Set {
    credentials: HashMap<String, u64>,
    users: HashMap<String, UserCutoff>,
}

impl Set {
    fn is_empty(&self) -> bool {
        self.credentials.is_empty() && self.users.is_empty()
    }

    fn add(&mut self, r: &Revocation) {
        match r {
            Revocation::Credential { key, until_ms } => {
                let until = self.credentials.entry(key.clone()).or_insert(0);
                *until = (*until).max(*until_ms);
            }
            Revocation::User {
                user_id,
                not_before_ms,
                keep,
                until_ms,
            } => {
                // The latest cutoff wins whole: whatever an earlier one kept started before
                // the later instant too.
                let newer = self
                    .users
                    .get(user_id)
                    .is_none_or(|c| *not_before_ms >= c.not_before_ms);
                if newer {
                    self.users.insert(
                        user_id.clone(),
                        UserCutoff {
                            not_before_ms: *not_before_ms,
                            keep: keep.clone(),
                            until_ms: *until_ms,
                        },
                    );
                }
            }
        }
    }

    fn prune(&mut self, now_ms: u64) {
        self.credentials.retain(|_, until| *until > now_ms);
        self.users.retain(|_, c| c.until_ms > now_ms);
    }
}

#[derive(Default)]
pub struct Revocations {
    set: ArcSwap<Set>,
    feed: OnceLock<Arc<dyn RevocationFeed>>,
    counts: [AtomicU64; 3],
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.set.load();
        f.debug_struct("Revocations")
            .field("credentials", &set.credentials.len())
            .field("users", &set.users.len())
            .finish()
    }
}

impl Revocations {
    /// Sends revocations made here to other replicas from now on (set once, at start).
    pub fn connect(&self, feed: Arc<dyn RevocationFeed>) {
        let _ = self.feed.set(feed);
    }

    /// Applies a revocation and, when it was made here, sends it to the other replicas.
    pub fn revoke(&self, revocation: Revocation, source: Source) {
        self.apply(std::slice::from_ref(&revocation), crate::clock::unix_ms());
        self.counts[source as usize].fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = source.label(), kind = ?kind_of(&revocation), "credential revoked");
        if source != Source::Peer {
            if let Some(feed) = self.feed.get() {
                feed.publish(&revocation);
            }
        }
    }

    /// Applies revocations read from the other replicas' store (at start and after a
    /// reconnection); not counted, not sent on.
    pub fn apply(&self, revocations: &[Revocation], now_ms: u64) {
        let live: Vec<_> = revocations
            .iter()
            .filter(|r| r.until_ms() > now_ms)
            .collect();
        if live.is_empty() {
            return;
        }
        self.set.rcu(|current| {
            let mut next = Set::clone(current);
            next.prune(now_ms);
            for r in &live {
                next.add(r);
            }
            next
        });
    }

    /// Whether every revocation made anywhere is known here: true without a feed (one
    /// replica, nothing to miss), else while the feed is connected.
    pub fn in_sync(&self) -> bool {
        self.feed.get().is_none_or(|f| f.in_sync())
    }

    /// Revocations made so far, by source (for the metric).
    pub fn count(&self, source: Source) -> u64 {
        self.counts[source as usize].load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.set.load().is_empty()
    }

    /// Whether a verified credential has been revoked. `keys` names the credential
    /// ([`token_key`], [`session_key`], [`jti_key`]); it is called only when a revoked
    /// credential or a cutoff of this user could match (hashing a token costs more than the
    /// lookups). Without a start instant, a user cutoff revokes it (it cannot be shown to be
    /// newer).
    pub fn is_revoked(
        &self,
        user_id: &str,
        started_ms: Option<u64>,
        keys: impl FnOnce() -> Vec<String>,
        now_ms: u64,
    ) -> bool {
        let set = self.set.load();
        if set.is_empty() {
            return false;
        }
        let cutoff = set
            .users
            .get(user_id)
            .filter(|c| c.until_ms > now_ms && started_ms.is_none_or(|t| t < c.not_before_ms));
        if set.credentials.is_empty() && cutoff.is_none() {
            return false;
        }
        let keys = keys();
        if keys
            .iter()
            .any(|k| set.credentials.get(k).is_some_and(|until| *until > now_ms))
        {
            return true;
        }
        cutoff.is_some_and(|c| !keys.iter().any(|k| c.keep.contains(k)))
    }
}

fn kind_of(r: &Revocation) -> &'static str {
    match r {
        Revocation::Credential { .. } => "credential",
        Revocation::User { .. } => "user",
    }
}

/// The key of a Better Auth session token: its SHA-256, so no store holds the token itself.
pub fn token_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut key = String::with_capacity(2 + 64);
    key.push_str("t:");
    for b in digest {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The key of a session id (Better Auth's `session.id`, a JWT's `sid`).
pub fn session_key(id: &str) -> String {
    format!("s:{id}")
}

/// The key of a JWT's `jti`.
pub fn jti_key(jti: &str) -> String {
    format!("j:{jti}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn user(user_id: &str, not_before_ms: u64, keep: &[&str]) -> Revocation {
        Revocation::User {
            user_id: user_id.into(),
            not_before_ms,
            keep: keep.iter().map(|k| k.to_string()).collect(),
            until_ms: NOW + 60_000,
        }
    }

    fn revoked(
        r: &Revocations,
        user_id: &str,
        keys: &[String],
        started_ms: Option<u64>,
        now: u64,
    ) -> bool {
        r.is_revoked(user_id, started_ms, || keys.to_vec(), now)
    }

    #[test]
    fn a_revoked_token_is_refused_and_others_are_not() {
        let r = Revocations::default();
        let a = [token_key("a")];
        let b = [token_key("b")];
        assert!(!revoked(&r, "u", &a, Some(1), NOW));
        r.apply(
            &[Revocation::Credential {
                key: token_key("a"),
                until_ms: NOW + 1,
            }],
            NOW,
        );
        assert!(revoked(&r, "u", &a, Some(1), NOW));
        assert!(!revoked(&r, "u", &b, Some(1), NOW));
        // Past its retention the entry no longer counts.
        assert!(!revoked(&r, "u", &a, Some(1), NOW + 1));
    }

    #[test]
    fn a_user_cutoff_spares_newer_sessions_and_the_kept_one() {
        let r = Revocations::default();
        let kept = [token_key("kept")];
        let old = [token_key("old")];
        let new = [token_key("new")];
        r.apply(&[user("u", 500, &[&token_key("kept")])], NOW);
        assert!(revoked(&r, "u", &old, Some(499), NOW));
        assert!(!revoked(&r, "u", &kept, Some(100), NOW));
        assert!(!revoked(&r, "u", &new, Some(500), NOW));
        assert!(!revoked(&r, "other", &old, Some(1), NOW));
        // A credential that cannot say when it started is refused under a cutoff.
        assert!(revoked(&r, "u", &old, None, NOW));
    }

    #[test]
    fn the_latest_user_cutoff_wins_whole() {
        let r = Revocations::default();
        let kept = [token_key("kept")];
        r.apply(&[user("u", 500, &[&token_key("kept")])], NOW);
        r.apply(&[user("u", 700, &[])], NOW);
        assert!(revoked(&r, "u", &kept, Some(100), NOW));
        // An older cutoff arriving late changes nothing.
        r.apply(&[user("u", 600, &[&token_key("kept")])], NOW);
        assert!(revoked(&r, "u", &kept, Some(100), NOW));
    }

    #[test]
    fn revocations_travel_as_json() {
        let r = user("u", 5, &["t:x"]);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Revocation>(&text).unwrap(), r);
    }
}
