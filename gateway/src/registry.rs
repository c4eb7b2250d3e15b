//! The Redis service registry, schema version 1 (`docs/registry.md`). Keys for service `S` live under
//! the hash tag `{S}`, so a service's ZSET and HASHes share a cluster slot and are written
//! atomically by one script. Expiry is judged on Redis `TIME`, never a local clock.

use crate::redis_link::{LinkError, RedisLink};
use redis::Script;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// Writes the HASH and the ZSET member; answers 1 when the instance is new, had expired, or
/// its data changed (then the caller publishes an event), else 0.
/// KEYS: zset, hash. ARGV: id, addr, weight, tls, meta, ttl_ms.
static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('HMGET', KEYS[2], 'addr', 'weight', 'tls', 'meta', 'registered_at')
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local changed = 0
if (not score) or tonumber(score) < now then changed = 1 end
if old[1] ~= ARGV[2] or old[2] ~= ARGV[3] or old[3] ~= ARGV[4] or old[4] ~= ARGV[5] then changed = 1 end
local registered_at = old[5]
if changed == 1 or not registered_at then registered_at = now end
redis.call('HSET', KEYS[2], 'addr', ARGV[2], 'weight', ARGV[3], 'tls', ARGV[4], 'meta', ARGV[5], 'registered_at', registered_at)
local ttl = tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
-- Housekeeping: the HASH outlives its ZSET entry a little, then goes; long-expired entries leave the ZSET.
redis.call('PEXPIRE', KEYS[2], ttl * 4 + 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
return changed
"#,
    )
});

/// KEYS: zset, hash. ARGV: id. Answers how many entries were removed.
static DEREGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return n
"#,
    )
});

/// The live instances of one service and Redis's clock, in one atomic read.
/// KEYS: zset. ARGV: the HASH key prefix (`P:svc:{S}:`).
/// Answers: now_ms, then per instance: id, expiry_ms, addr, weight, tls, meta.
static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = { tostring(now) }
for i = 1, #live, 2 do
  local h = redis.call('HMGET', ARGV[1] .. live[i], 'addr', 'weight', 'tls', 'meta')
  table.insert(out, live[i])
  table.insert(out, live[i + 1])
  for j = 1, 4 do table.insert(out, h[j] or '') end
end
return out
"#,
    )
});

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub id: String,
    pub addr: String,
    pub weight: u32,
    pub tls: bool,
    pub meta: serde_json::Value,
    /// Expiry on Redis's clock (ms since the epoch).
    pub expires_at_ms: u64,
}

/// The live instances of a service, with Redis's clock at the time of reading.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub now_ms: u64,
    pub instances: Vec<Instance>,
    /// Entries that were skipped as malformed (e.g. no `addr`).
    pub invalid: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Invalid(String),
}

/// What a service registers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub service: String,
    pub id: String,
    pub addr: String,
    pub weight: u32,
    pub tls: bool,
    pub meta: BTreeMap<String, String>,
    pub ttl_ms: u64,
}

pub fn validate_service(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("a service name must be 1–200 characters".into());
    }
    if name
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "service name `{name}` may not contain braces, spaces or control characters"
        ));
    }
    Ok(())
}

pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` is not HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("`{addr}` is not HOST:PORT"));
    }
    Ok(())
}

pub struct Registry {
    link: Arc<RedisLink>,
}

impl Registry {
    pub fn new(link: Arc<RedisLink>) -> Self {
        Registry { link }
    }

    fn prefix(&self) -> &str {
        &self.link.key_prefix
    }
    pub fn services_key(&self) -> String {
        format!("{}:services", self.prefix())
    }
    pub fn zset_key(&self, service: &str) -> String {
        format!("{}:svc:{{{service}}}", self.prefix())
    }
    pub fn hash_key(&self, service: &str, id: &str) -> String {
        format!("{}:svc:{{{service}}}:{id}", self.prefix())
    }
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix())
    }

    /// Registers or refreshes an instance; publishes an event when something changed.
    /// Answers whether it did.
    pub async fn register(&self, r: &Registration) -> Result<bool, RegistryError> {
        validate_service(&r.service).map_err(RegistryError::Invalid)?;
        validate_addr(&r.addr).map_err(RegistryError::Invalid)?;
        if !(1..=1000).contains(&r.weight) {
            return Err(RegistryError::Invalid(format!(
                "weight {} is outside 1–1000",
                r.weight
            )));
        }
        if r.id.is_empty() {
            return Err(RegistryError::Invalid(
                "an instance id cannot be empty".into(),
            ));
        }
        let meta = serde_json::to_string(&r.meta).unwrap_or_else(|_| "{}".into());
        let changed: i64 = self
            .link
            .script(
                &REGISTER,
                &[
                    &self.zset_key(&r.service),
                    &self.hash_key(&r.service, &r.id),
                ],
                &[
                    r.id.clone(),
                    r.addr.clone(),
                    r.weight.to_string(),
                    if r.tls { "1" } else { "0" }.into(),
                    meta,
                    r.ttl_ms.to_string(),
                ],
            )
            .await?;
        if changed == 1 {
            self.link
                .query::<i64>(redis::cmd("SADD").arg(self.services_key()).arg(&r.service))
                .await?;
            self.publish(&r.service).await?;
        }
        Ok(changed == 1)
    }

    pub async fn deregister(&self, service: &str, id: &str) -> Result<bool, RegistryError> {
        validate_service(service).map_err(RegistryError::Invalid)?;
        let removed: i64 = self
            .link
            .script(
                &DEREGISTER,
                &[&self.zset_key(service), &self.hash_key(service, id)],
                &[id.to_string()],
            )
            .await?;
        self.publish(service).await?;
        Ok(removed > 0)
    }

    async fn publish(&self, service: &str) -> Result<(), RegistryError> {
        self.link
            .query::<i64>(
                redis::cmd("PUBLISH")
                    .arg(self.events_channel())
                    .arg(service),
            )
            .await?;
        Ok(())
    }

    pub async fn services(&self) -> Result<Vec<String>, RegistryError> {
        let mut s: Vec<String> = self
            .link
            .query(redis::cmd("SMEMBERS").arg(self.services_key()))
            .await?;
        s.sort();
        Ok(s)
    }

    /// The live instances of `service`.
    pub async fn fetch(&self, service: &str) -> Result<ServiceView, RegistryError> {
        let prefix = format!("{}:", self.zset_key(service));
        let raw: Vec<String> = self
            .link
            .script(&FETCH, &[&self.zset_key(service)], &[prefix])
            .await?;
        parse_fetch(&raw).map_err(RegistryError::Invalid)
    }
}

/// Reads the fetch script's answer: Redis's time, then each live instance's fields.
pub fn parse_fetch(raw: &[String]) -> Result<ServiceView, String> {
    let now_ms: u64 = raw
        .first()
        .and_then(|s| s.parse().ok())
        .ok_or("the registry answer has no time")?;
    let mut instances = Vec::new();
    let mut invalid = Vec::new();
    for chunk in raw[1..].chunks(6) {
        let [id, score, addr, weight, tls, meta] = chunk else {
            return Err("truncated registry answer".into());
        };
        let expires_at_ms = score.parse::<f64>().map(|f| f as u64).unwrap_or(0);
        let weight = if weight.is_empty() {
            Ok(1)
        } else {
            weight.parse::<u32>()
        };
        match (validate_addr(addr), weight) {
            (Ok(()), Ok(w)) if crate::config::WEIGHTS.contains(&w) => instances.push(Instance {
                id: id.clone(),
                addr: addr.clone(),
                weight: w,
                tls: tls == "1",
                meta: serde_json::from_str(meta).unwrap_or(serde_json::Value::Null),
                expires_at_ms,
            }),
            _ => invalid.push(id.clone()),
        }
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ServiceView {
        now_ms,
        instances,
        invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fetch_answers() {
        let raw: Vec<String> = [
            "1000",
            "b",
            "5000",
            "10.0.0.2:80",
            "3",
            "0",
            "{\"zone\":\"a\"}",
            "a",
            "4000",
            "10.0.0.1:80",
            "",
            "1",
            "",
            "bad",
            "4000",
            "",
            "1",
            "0",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let v = parse_fetch(&raw).unwrap();
        assert_eq!(v.now_ms, 1000);
        assert_eq!(v.instances.len(), 2);
        assert_eq!(v.instances[0].id, "a");
        assert_eq!(v.instances[0].weight, 1);
        assert!(v.instances[0].tls);
        assert_eq!(v.instances[1].weight, 3);
        assert_eq!(v.instances[1].meta["zone"], "a");
        assert_eq!(v.invalid, vec!["bad".to_string()]);
    }

    #[test]
    fn validation() {
        assert!(validate_service("users").is_ok());
        assert!(validate_service("us{ers").is_err());
        assert!(validate_addr("10.0.0.1:8080").is_ok());
        assert!(validate_addr("host:0").is_err());
        assert!(validate_addr("nohost").is_err());
    }
}
