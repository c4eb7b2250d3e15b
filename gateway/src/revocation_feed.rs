//! Revocations across replicas, through Redis (`P` is `redis.key_prefix`):
//! - `P:revocations`, a sorted set: each revocation as JSON, scored by the instant (ms) after
//!   which it may be forgotten. A replica that starts or reconnects applies every live one.
//! - the channel `P:revocations:events`: `<replica> <json>` on every revocation, which every
//!   other replica applies at once.
//!
//! Redis away: revocations stay applied on the replica that made them, and are sent to
//! nobody; replicas read the set again when they reconnect.

use crate::redis_link::RedisLink;
use futures_util::StreamExt;
use portico_plugins::revocation::{Revocation, RevocationFeed, Revocations, Source};
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Adds one revocation, forgets those past their time (on Redis' clock), keeps the key as
/// long as its longest member, and announces it. KEYS[1] the set; ARGV: until (ms), the
/// revocation's JSON, the channel, the message.
static ADD_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#,
    )
});

#[derive(Debug)]
pub struct RedisRevocations {
    link: Arc<RedisLink>,
    key: String,
    channel: String,
    /// Tells this replica's own announcements from the others'.
    replica: String,
    revocations: Arc<Revocations>,
    /// Subscribed, and the set read since: nothing another replica revoked is missing.
    in_sync: std::sync::atomic::AtomicBool,
}

impl RedisRevocations {
    pub fn new(link: Arc<RedisLink>, prefix: &str, revocations: Arc<Revocations>) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        RedisRevocations {
            link,
            key: format!("{prefix}:revocations"),
            channel: format!("{prefix}:revocations:events"),
            replica: format!("{}-{}", std::process::id(), started.as_nanos()),
            revocations,
            in_sync: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Follows the other replicas' revocations: subscribes, then reads the set (so nothing
    /// made between the two is missed), then applies every announcement; again after every
    /// reconnection.
    pub async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.link.subscribe(&self.channel).await {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    let read = self.read_all().await;
                    self.set_in_sync(read);
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let text: String = msg.get_payload().unwrap_or_default();
                        self.on_message(&text);
                    }
                    self.set_in_sync(false);
                    tracing::warn!("revocation subscription lost; reconnecting");
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to revocations"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn set_in_sync(&self, in_sync: bool) {
        self.in_sync
            .store(in_sync, std::sync::atomic::Ordering::Release);
    }

    /// Applies every live revocation in Redis; whether that worked.
    async fn read_all(&self) -> bool {
        let now = portico_plugins::clock::unix_ms();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(&self.key).arg(now).arg("+inf");
        match self.link.query::<Vec<String>>(&cmd).await {
            Ok(members) => {
                let all: Vec<Revocation> = members
                    .iter()
                    .filter_map(|m| serde_json::from_str(m).ok())
                    .collect();
                tracing::info!(revocations = all.len(), "revocations read from redis");
                self.revocations.apply(&all, now);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the revocations from redis");
                false
            }
        }
    }

    fn on_message(&self, text: &str) {
        let Some((from, json)) = text.split_once(' ') else {
            return;
        };
        if from == self.replica {
            return;
        }
        match serde_json::from_str::<Revocation>(json) {
            Ok(r) => self.revocations.revoke(r, Source::Peer),
            Err(e) => tracing::warn!(error = %e, "an announced revocation does not parse"),
        }
    }
}

impl RevocationFeed for RedisRevocations {
    fn in_sync(&self) -> bool {
        self.in_sync.load(std::sync::atomic::Ordering::Acquire)
    }

    fn publish(&self, revocation: &Revocation) {
        let Ok(json) = serde_json::to_string(revocation) else {
            return;
        };
        let until = revocation.until_ms();
        let message = format!("{} {json}", self.replica);
        let (link, key, channel) = (self.link.clone(), self.key.clone(), self.channel.clone());
        tokio::spawn(async move {
            let args = [until.to_string(), json, channel, message];
            if let Err(e) = link.script::<i64>(&ADD_SCRIPT, &[&key], &args).await {
                tracing::warn!(error = %e, "revocation not sent to the other replicas (it holds here)");
            }
        });
    }
}
