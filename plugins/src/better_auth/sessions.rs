//! Sessions resolved by the auth service's `GET /api/auth/get-session`, cached by token hash,
//! with concurrent misses for one token coalesced into one call.

use super::signed::{cookie_encode, SignedToken};
use crate::api::Identity;
use crate::credential_cache::CredentialCache;
use crate::trace::Outbound;
use opentelemetry::KeyValue;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// What the auth service said about a token (`None`: no such session).
type Answer = Result<Option<Identity>, &'static str>;

#[derive(Debug)]
pub(crate) struct SessionLookup {
    client: reqwest::Client,
    url: reqwest::Url,
    cookie_name: String,
    ttl: Duration,
    negative_ttl: Duration,
    /// What the auth service said of each token (`None`: no such session), until when.
    cache: CredentialCache<[u8; 32], Option<Identity>, Instant>,
    inflight: Mutex<HashMap<[u8; 32], Arc<OnceCell<Answer>>>>,
}

pub(crate) struct LookupSettings<'a> {
    pub url: &'a str,
    pub cookie_name: String,
    pub timeout: Duration,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub capacity: usize,
}

impl SessionLookup {
    pub fn new(s: LookupSettings<'_>) -> Result<SessionLookup, String> {
        let mut url = reqwest::Url::parse(s.url).map_err(|e| format!("`{}`: {e}", s.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{}` is not an http(s) URL", s.url));
        }
        // The gateway wants the database's answer (not a cookie cache) and must not slide the
        // session's expiry: the Set-Cookie of a refresh would be lost in a subrequest.
        url.query_pairs_mut()
            .append_pair("disableCookieCache", "true")
            .append_pair("disableRefresh", "true");
        let client = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(SessionLookup {
            client,
            url,
            cookie_name: s.cookie_name,
            ttl: s.ttl,
            negative_ttl: s.negative_ttl,
            cache: CredentialCache::new(s.capacity.max(1)),
            inflight: Mutex::default(),
        })
    }

    /// The identity of `token`'s session (`None`: no such session), from the cache or the
    /// auth service. `identity` builds the identity from the session's `user` object.
    pub async fn resolve(
        &self,
        token: &SignedToken,
        identity: impl Fn(&Value, &Value) -> Option<Identity>,
    ) -> Answer {
        if let Some(hit) = self.cache.get(&token.digest, Instant::now()) {
            return Ok(hit);
        }
        // Boxed: the lookup's future (an HTTP call) is large, and held inline it would be
        // copied into the future of every request, cached or not.
        Box::pin(self.look_up(token, &identity)).await
    }

    /// [Self::resolve] for a token the cache does not answer.
    async fn look_up(
        &self,
        token: &SignedToken,
        identity: &impl Fn(&Value, &Value) -> Option<Identity>,
    ) -> Answer {
        let cell = match self.inflight.lock() {
            Ok(mut inflight) => inflight.entry(token.digest).or_default().clone(),
            Err(_) => Arc::default(),
        };
        // One caller runs the lookup; the others wait for its answer (and take over if that
        // caller goes away mid-call).
        let answer = cell
            .get_or_init(|| async {
                let answer = self.fetch(token, identity).await;
                if let Ok((identity, until)) = &answer {
                    let now = Instant::now();
                    self.cache
                        .insert(token.digest, identity.clone(), *until, now);
                }
                answer.map(|(identity, _)| identity)
            })
            .await
            .clone();
        if let Ok(mut inflight) = self.inflight.lock() {
            if inflight
                .get(&token.digest)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                inflight.remove(&token.digest);
            }
        }
        answer
    }

    async fn fetch(
        &self,
        token: &SignedToken,
        identity: &impl Fn(&Value, &Value) -> Option<Identity>,
    ) -> Result<(Option<Identity>, Instant), &'static str> {
        let cookie = format!("{}={}", self.cookie_name, cookie_encode(token.signed()));
        let span = Outbound::start("better_auth get-session", || {
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.full", self.url.to_string()),
            ]
        });
        let mut request = self
            .client
            .get(self.url.clone())
            .header(http::header::COOKIE, cookie)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in span.headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            tracing::warn!(error = %e, url = %self.url, "better_auth: get-session failed");
            span.fail("auth_service_unreachable");
            "auth_service_unreachable"
        })?;
        span.set(KeyValue::new(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        ));
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), url = %self.url, "better_auth: get-session answered an error");
            span.fail("auth_service_error");
            return Err("auth_service_error");
        }
        let body: Value = response.json().await.map_err(|e| {
            tracing::warn!(error = %e, "better_auth: get-session answered no JSON");
            "auth_service_error"
        })?;
        let now = Instant::now();
        let none = Ok((None, now + self.negative_ttl));
        if body.is_null() {
            return none;
        }
        let session = &body["session"];
        if session.get("token").and_then(Value::as_str) != Some(token.token()) {
            // Not this token's session: treat as none rather than trust it.
            return none;
        }
        let Some(expires_ms) = session
            .get("expiresAt")
            .and_then(Value::as_str)
            .and_then(super::cookie_cache::parse_iso_ms)
        else {
            return Err("auth_service_error");
        };
        let left = Duration::from_millis(expires_ms.saturating_sub(super::now_ms()));
        if left.is_zero() {
            return none;
        }
        match identity(&body["user"], session) {
            Some(id) => Ok((Some(id), now + self.ttl.min(left))),
            None => Err("auth_service_error"),
        }
    }
}
