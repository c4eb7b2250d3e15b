//! `rate_limit`: several limits per route, each with a key, a rate, a burst and a scope —
//! `local` (in process) or `global` (shared by every replica through Redis).
//!
//! ```yaml
//! plugins:
//!   - rate_limit:
//!       limits:
//!         - { name: per-ip, rate: 20/s, burst: 40, key: client_ip }
//!         - { name: per-user, rate: 600/m, key: [user_id], scope: global, on_redis_error: local }
//! ```

pub mod gcra;
mod number_value;
mod shared;

use crate::api::{
    BuildContext, Flow, Phases, Plugin, PluginError, RateLimitOutcome, Rejection, RequestContext,
};
use async_trait::async_trait;
use gcra::{Decision, LocalBuckets};
use http::{HeaderName, HeaderValue};
use number_value::number_value;
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shared::{Fallback, SharedLimit};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "rate_limit";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub limits: Vec<LimitConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Counted in this process.
    #[default]
    Local,
    /// Counted in Redis, shared by every replica.
    Global,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Let requests through.
    Allow,
    /// Answer 429 (with `Retry-After: 1`).
    Deny,
    /// Limit in process, at `local_share` of the rate.
    #[default]
    Local,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum KeyConfig {
    One(String),
    Many(Vec<String>),
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig::One("client_ip".into())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The `limit` label of `portico_rate_limited_total`; default `limit-N`.
    #[serde(default)]
    pub name: Option<String>,
    /// `COUNT/PERIOD`: `100/s`, `600/m`, `10000/h`, `50/10s`.
    pub rate: String,
    /// Requests allowed at once; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// What is limited: `client_ip`, `user_id`, `route`, `header:NAME`, `api_key:HEADER`, or a
    /// list of them (combined). A missing part (no user, no header) falls back to the client IP.
    #[serde(default)]
    pub key: KeyConfig,
    #[serde(default)]
    pub scope: Scope,
    /// Global limits, when Redis cannot be reached.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// With `on_redis_error: local`, the share of the rate each replica allows on its own.
    #[serde(default = "half")]
    pub local_share: f64,
    /// Local limits: keys remembered at most (idle ones are evicted first).
    #[serde(default = "max_keys")]
    pub max_keys: usize,
}

fn half() -> f64 {
    0.5
}
fn max_keys() -> usize {
    100_000
}

#[derive(Debug, Clone, PartialEq)]
enum KeyPart {
    ClientIp,
    UserId,
    Route,
    Header(HeaderName),
}

impl KeyPart {
    fn parse(text: &str) -> Result<KeyPart, String> {
        let text = text.trim();
        let header = |h: &str| {
            HeaderName::from_bytes(h.trim().as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("`{h}` is not a header name"))
        };
        match text {
            "client_ip" => Ok(KeyPart::ClientIp),
            "user_id" => Ok(KeyPart::UserId),
            "route" => Ok(KeyPart::Route),
            _ => {
                if let Some(h) = text.strip_prefix("header:") {
                    header(h)
                } else if let Some(h) = text.strip_prefix("api_key:") {
                    header(h)
                } else {
                    Err(format!(
                        "unknown key `{text}`; use client_ip, user_id, route, header:NAME or api_key:HEADER"
                    ))
                }
            }
        }
    }
}

/// `COUNT/PERIOD` → (count, period).
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let (count, period) = text
        .split_once('/')
        .ok_or_else(|| format!("rate `{text}`: write COUNT/PERIOD, e.g. 100/s or 600/m"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("rate `{text}`: `{count}` is not a count"))?;
    if count == 0 {
        return Err(format!("rate `{text}`: the count must be at least 1"));
    }
    let period = period.trim();
    let period = match period {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86400),
        other => humantime::parse_duration(other).map_err(|_| {
            format!("rate `{text}`: `{other}` is not a period (s, m, h, d or e.g. 10s)")
        })?,
    };
    if period.is_zero() {
        return Err(format!("rate `{text}`: the period must be above 0"));
    }
    Ok((count, period))
}

#[derive(Debug)]
enum Counter {
    Local(Arc<LocalBuckets>),
    Shared(Arc<SharedLimit>),
}

#[derive(Debug)]
struct Limit {
    name: Arc<str>,
    parts: Vec<KeyPart>,
    counter: Counter,
    /// `RateLimit-Limit` and `RateLimit-Policy`, the same for every request: made once.
    limit_header: HeaderValue,
    policy_header: HeaderValue,
}

impl Limit {
    fn key(&self, session: &Session, ctx: &RequestContext) -> u64 {
        let mut h = crate::hash::StableHasher::new();
        for part in &self.parts {
            let present = match part {
                KeyPart::ClientIp => {
                    h.ip(1, ctx.client_ip);
                    true
                }
                KeyPart::UserId => match &ctx.identity {
                    Some(id) => {
                        h.part(2, id.user_id.as_bytes());
                        true
                    }
                    None => false,
                },
                KeyPart::Route => {
                    h.part(3, ctx.route.as_bytes());
                    true
                }
                KeyPart::Header(name) => match session.req_header().headers.get(name) {
                    Some(v) => {
                        h.part(4, v.as_bytes());
                        true
                    }
                    None => false,
                },
            };
            if !present {
                // A missing part falls back to the client address, under a tag of its own so
                // it cannot collide with a real value.
                h.ip(0xFF, ctx.client_ip);
            }
        }
        h.finish()
    }

    /// The decision, and whether a fallback made it (Redis away).
    async fn check(&self, key: u64) -> (Decision, bool) {
        match &self.counter {
            Counter::Local(b) => (b.check(key), false),
            Counter::Shared(s) => {
                let (d, source) = s.check(key).await;
                (d, source == shared::Source::Fallback)
            }
        }
    }
}

#[derive(Debug)]
pub struct RateLimitPlugin {
    limits: Vec<Limit>,
}

impl RateLimitPlugin {
    pub fn new(config: &RateLimitConfig, ctx: &BuildContext) -> Result<Self, PluginError> {
        if config.limits.is_empty() {
            return Err(PluginError::config_at(
                NAME,
                "limits",
                "`limits` needs at least one limit",
            ));
        }
        let mut limits = Vec::new();
        for (i, l) in config.limits.iter().enumerate() {
            let at = |key: &str| {
                let path = format!("limits.{i}.{key}");
                move |m: String| PluginError::config_at(NAME, path.clone(), m)
            };
            let name: Arc<str> = l
                .name
                .clone()
                .unwrap_or_else(|| format!("limit-{i}"))
                .into();
            let (count, period) = parse_rate(&l.rate).map_err(at("rate"))?;
            let capacity = l.burst.unwrap_or(count);
            if capacity == 0 {
                return Err(at("burst")(format!(
                    "limit `{name}`: burst must be at least 1"
                )));
            }
            let parts = match &l.key {
                KeyConfig::One(k) => vec![KeyPart::parse(k).map_err(at("key"))?],
                KeyConfig::Many(ks) if ks.is_empty() => {
                    return Err(at("key")(format!("limit `{name}`: key is empty")))
                }
                KeyConfig::Many(ks) => ks
                    .iter()
                    .map(|k| KeyPart::parse(k))
                    .collect::<Result<_, _>>()
                    .map_err(at("key"))?,
            };
            if !(l.local_share > 0.0 && l.local_share <= 1.0) {
                return Err(at("local_share")(format!(
                    "limit `{name}`: local_share must be in (0, 1]"
                )));
            }
            let interval = period / count;
            // State survives reloads that leave this limit as it was.
            let state_key = format!("{}/{name}/{:?}", ctx.route, l);
            let counter = match l.scope {
                Scope::Local => Counter::Local(ctx.state.get_or_insert(&state_key, || {
                    LocalBuckets::new(interval, capacity, l.max_keys)
                })),
                Scope::Global => {
                    let store = ctx.shared.clone().ok_or_else(|| {
                        at("scope")(format!(
                            "limit `{name}`: scope: global needs the `redis` section"
                        ))
                    })?;
                    let fallback = match l.on_redis_error {
                        OnRedisError::Allow => Fallback::Allow,
                        OnRedisError::Deny => Fallback::Deny,
                        OnRedisError::Local => Fallback::Local,
                    };
                    let local_interval = interval.div_f64(l.local_share);
                    let bucket_id = format!("{}:{name}", ctx.route);
                    Counter::Shared(ctx.state.get_or_insert(&state_key, || {
                        SharedLimit::new(
                            store,
                            &bucket_id,
                            interval,
                            capacity,
                            fallback,
                            local_interval,
                            l.max_keys,
                        )
                    }))
                }
            };
            let policy = format!("{count};w={};burst={capacity}", period.as_secs().max(1));
            limits.push(Limit {
                name,
                parts,
                counter,
                limit_header: HeaderValue::from(capacity),
                policy_header: HeaderValue::from_str(&policy)
                    .map_err(|e| at("rate")(format!("limit policy `{policy}`: {e}")))?,
            });
        }
        Ok(RateLimitPlugin { limits })
    }
}

/// Whole seconds, rounded up from whole milliseconds: in u64, as `as_millis` (a u128) would
/// need a library call to divide.
fn secs_ceil(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
        .div_ceil(1000)
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

fn headers_for(limit: &Limit, d: &Decision) -> [(HeaderName, HeaderValue); 4] {
    [
        (RATELIMIT_LIMIT, limit.limit_header.clone()),
        (RATELIMIT_REMAINING, number_value(d.remaining.into())),
        (RATELIMIT_RESET, number_value(secs_ceil(d.reset_after))),
        (RATELIMIT_POLICY, limit.policy_header.clone()),
    ]
}

#[async_trait]
impl Plugin for RateLimitPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        // After authentication (so limits can key on the user), before header edits.
        500
    }

    fn phases(&self) -> Phases {
        Phases {
            request: true,
            ..Phases::default()
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        // The most restrictive allowed limit sets the RateLimit-* headers.
        let mut tightest: Option<(&Limit, Decision)> = None;
        let mut by_fallback = false;
        for limit in &self.limits {
            let key = limit.key(session, ctx);
            let (d, fallback) = limit.check(key).await;
            by_fallback |= fallback;
            if !d.allowed {
                ctx.rate_limit = Some(if fallback {
                    RateLimitOutcome::LimitedByFallback
                } else {
                    RateLimitOutcome::Limited
                });
                let retry = secs_ceil(d.retry_after).max(1);
                let mut r = Rejection::new(
                    crate::ErrorCode::RateLimited,
                    format!("Too many requests; retry after {retry} s"),
                );
                r.headers
                    .push((http::header::RETRY_AFTER, HeaderValue::from(retry)));
                r.headers.extend(headers_for(limit, &d));
                r.label = Some(limit.name.clone());
                return Ok(Flow::Reject(r));
            }
            if tightest.is_none_or(|(_, t)| d.remaining < t.remaining) {
                tightest = Some((limit, d));
            }
        }
        if let Some((limit, d)) = tightest {
            ctx.response_headers.extend(headers_for(limit, &d));
        }
        ctx.rate_limit = Some(if by_fallback {
            RateLimitOutcome::AllowedByFallback
        } else {
            RateLimitOutcome::Allowed
        });
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up_from_whole_milliseconds() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_nanos(999_999), 0),
            (ms(1), 1),
            (ms(1000), 1),
            (Duration::from_micros(1_000_400), 1),
            (ms(1001), 2),
            (ms(59_999), 60),
            (Duration::MAX, u64::MAX / 1000 + 1),
        ];
        for (d, secs) in cases {
            assert_eq!(secs_ceil(d), secs, "{d:?}");
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/s").unwrap(), (100, Duration::from_secs(1)));
        assert_eq!(parse_rate("600/m").unwrap(), (600, Duration::from_secs(60)));
        assert_eq!(parse_rate("50/10s").unwrap(), (50, Duration::from_secs(10)));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn config_errors_are_specific() {
        let ctx = BuildContext::default();
        let cfg = |yaml_key: &str, scope: Scope| RateLimitConfig {
            limits: vec![LimitConfig {
                name: Some("x".into()),
                rate: "10/s".into(),
                burst: None,
                key: KeyConfig::One(yaml_key.into()),
                scope,
                on_redis_error: OnRedisError::Local,
                local_share: 0.5,
                max_keys: 10,
            }],
        };
        let e = RateLimitPlugin::new(&cfg("moon", Scope::Local), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `moon`"), "{e}");
        let e = RateLimitPlugin::new(&cfg("client_ip", Scope::Global), &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the `redis` section"), "{e}");
        assert!(RateLimitPlugin::new(&cfg("header:x-api-key", Scope::Local), &ctx).is_ok());
    }
}
