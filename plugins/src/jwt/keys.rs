//! Verification keys of a provider: a shared secret (HS*), PEM files, or a JWKS URL fetched
//! at first use and refreshed on an interval and — rate-limited — on an unknown `kid`. While
//! the JWKS endpoint is down the last good keys are kept, up to a maximum staleness.

use crate::trace::Outbound;
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use opentelemetry::KeyValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::monotonic_ms as now_ms;

/// A key that verifies one algorithm family.
pub struct Key {
    pub kid: Option<String>,
    pub algorithm: Option<Algorithm>,
    pub key: DecodingKey,
}

struct KeySet {
    keys: Vec<Arc<Key>>,
    fetched_ms: u64,
}

pub struct Jwks {
    url: String,
    refresh: Duration,
    max_stale: Duration,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    last_attempt_ms: AtomicU64,
    /// Unknown-kid refetches have their own rate limit.
    last_kid_refetch_ms: AtomicU64,
    fetching: tokio::sync::Mutex<()>,
}

/// At most one refetch for an unknown `kid` per this period.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(2);

impl Jwks {
    pub fn new(url: String, refresh: Duration, max_stale: Duration) -> Result<Jwks, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("jwks_url `{url}` must be an http(s) URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Jwks {
            url,
            refresh,
            max_stale,
            client,
            keys: ArcSwapOption::empty(),
            last_attempt_ms: AtomicU64::new(0),
            last_kid_refetch_ms: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    async fn fetch(&self) -> Result<(), String> {
        let _guard = self.fetching.lock().await;
        self.last_attempt_ms.store(now_ms(), Ordering::Relaxed);
        // A fetch a request waits for is part of its trace; a background refresh is not.
        let span = Outbound::start("jwks fetch", || {
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.full", self.url.clone()),
            ]
        });
        let fetched = async {
            self.client
                .get(&self.url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("fetching {}: {e}", self.url))?
                .json::<JwkSet>()
                .await
                .map_err(|e| format!("{}: not a JWKS: {e}", self.url))
        };
        let set = fetched.await.inspect_err(|e| span.fail(e))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(Arc::new(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm: jwk
                        .common
                        .key_algorithm
                        .and_then(|a| a.to_string().parse::<Algorithm>().ok()),
                    key,
                })),
                Err(e) => {
                    tracing::warn!(url = %self.url, kid = ?jwk.common.key_id, error = %e, "skipping a JWKS key")
                }
            }
        }
        self.keys.store(Some(Arc::new(KeySet {
            keys,
            fetched_ms: now_ms(),
        })));
        Ok(())
    }

    /// Keys usable now; fetches when there are none, refreshes in the background when stale.
    pub async fn keys(self: &Arc<Self>) -> Vec<Arc<Key>> {
        let now = now_ms();
        match self.keys.load_full() {
            None => {
                if let Err(e) = self.fetch().await {
                    tracing::warn!(error = %e, "JWKS unavailable");
                }
            }
            Some(set) => {
                let age = Duration::from_millis(now.saturating_sub(set.fetched_ms));
                let since_attempt = Duration::from_millis(
                    now.saturating_sub(self.last_attempt_ms.load(Ordering::Relaxed)),
                );
                if age > self.refresh && since_attempt > Duration::from_secs(1) {
                    let me = self.clone();
                    me.last_attempt_ms.store(now, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if let Err(e) = me.fetch().await {
                            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
                        }
                    });
                }
            }
        }
        match self.keys.load_full() {
            Some(set)
                if Duration::from_millis(now_ms().saturating_sub(set.fetched_ms))
                    <= self.max_stale =>
            {
                set.keys.clone()
            }
            Some(_) => {
                tracing::warn!(url = %self.url, "JWKS keys are older than max_stale; refusing tokens");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// For a `kid` not in the set: waits for a fetch already under way, then refetches if the
    /// key is still unknown, at most once per period (random kids cannot hammer the endpoint).
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> bool {
        drop(self.fetching.lock().await);
        let has = |set: Option<Arc<KeySet>>| {
            set.is_some_and(|s| s.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
        };
        if has(self.keys.load_full()) {
            return true;
        }
        let now = now_ms();
        let last = self.last_kid_refetch_ms.load(Ordering::Relaxed);
        if last != 0 && Duration::from_millis(now.saturating_sub(last)) < UNKNOWN_KID_REFETCH {
            return false;
        }
        self.last_kid_refetch_ms.store(now, Ordering::Relaxed);
        self.fetch().await.is_ok() && has(self.keys.load_full())
    }
}

/// Loads public keys from PEM files for the given algorithms.
pub fn pem_keys(files: &[String], algorithms: &[Algorithm]) -> Result<Vec<Arc<Key>>, String> {
    let mut keys = Vec::new();
    for f in files {
        let pem = std::fs::read(f).map_err(|e| format!("cannot read `{f}`: {e}"))?;
        let mut loaded = false;
        for alg in algorithms {
            let key = match alg {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => continue,
            };
            if let Ok(key) = key {
                keys.push(Arc::new(Key {
                    kid: None,
                    algorithm: Some(*alg),
                    key,
                }));
                loaded = true;
            }
        }
        if !loaded {
            return Err(format!("`{f}` holds no public key for {algorithms:?}"));
        }
    }
    Ok(keys)
}
