//! The global rate limiter's Redis side: GCRA buckets shared by every replica, one Lua
//! script call per decision ([`GCRA_TAKE_SCRIPT`]), judged on the Redis server's clock
//! (gateway clocks may differ), one small key per limited key with a TTL of its own refill
//! time. The plugin side (batching, local share, outage policy) is
//! `plugins/src/rate_limit/shared.rs`.

use crate::redis_link::RedisLink;
use async_trait::async_trait;
use portico_plugins::{GcraGrant, SharedBuckets};
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// KEYS: bucket. ARGV: interval (µs), capacity, tokens wanted.
/// Answers: granted, remaining, reset_after (µs), retry_after (µs).
static GCRA_TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tolerance = interval * capacity
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local available = math.floor((now + tolerance - tat) / interval)
if available < 0 then available = 0 end
local granted = math.min(want, available)
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local retry_after = 0
if granted == 0 then retry_after = tat + interval - tolerance - now end
return { granted, available - granted, tat - now, retry_after }
"#,
    )
});

#[derive(Debug)]
pub struct RedisBuckets {
    link: Arc<RedisLink>,
}

impl RedisBuckets {
    pub fn new(link: Arc<RedisLink>) -> Self {
        RedisBuckets { link }
    }
}

#[async_trait]
impl SharedBuckets for RedisBuckets {
    async fn take(
        &self,
        key: &str,
        interval: Duration,
        capacity: u32,
        want: u32,
    ) -> Result<GcraGrant, String> {
        let answer: Vec<i64> = self
            .link
            .script(
                &GCRA_TAKE_SCRIPT,
                &[key],
                &[
                    (interval.as_micros() as u64).max(1).to_string(),
                    capacity.to_string(),
                    want.to_string(),
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        let [granted, remaining, reset, retry] = answer[..] else {
            return Err(format!(
                "unexpected answer from the rate-limit script: {answer:?}"
            ));
        };
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(GcraGrant {
            granted: granted.max(0) as u32,
            remaining: remaining.max(0) as u32,
            reset_after: us(reset),
            retry_after: us(retry),
        })
    }

    fn key_prefix(&self) -> &str {
        &self.link.key_prefix
    }
}
