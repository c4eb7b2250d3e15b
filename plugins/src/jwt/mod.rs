//! `jwt`: verifies a JSON Web Token and turns it into the trusted identity.
//!
//! ```yaml
//! plugins:
//!   - jwt:
//!       providers:
//!         - { name: auth, algorithms: [EdDSA], jwks_url: "http://auth:3000/api/auth/jwks",
//!             issuer: "http://auth:3000", audiences: ["http://auth:3000"] }
//!         - { name: internal, algorithms: [HS256], secret_env: INTERNAL_JWT_SECRET }
//!       roles_claim: roles
//!       claims_to_headers: { email: X-User-Email }
//! ```
//!
//! Whether a token is required, and which roles, is the route's `auth` policy.

pub(crate) mod keys;

use crate::api::{
    AuthOutcome, BuildContext, Identity, Phases, Plugin, PluginError, Presented, RequestContext,
    SessionFacts,
};
use crate::claims::{HeaderMap, Path};
use crate::credential;
use crate::credential_cache::CredentialCache;
use crate::units::Duration;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keys::{Jwks, Key};
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

pub const NAME: &str = "jwt";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A token is accepted when one provider verifies it.
    pub providers: Vec<ProviderConfig>,
    /// Where the token is looked for, in order: `bearer` (Authorization header),
    /// `cookie:NAME`, `query:NAME`.
    #[serde(default = "default_sources")]
    pub sources: Vec<String>,
    /// Claims that must be present (besides `exp` and `sub`, always required).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Dotted path of the roles claim (an array, or a space/comma separated string).
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim (dotted path) → upstream header. Client-sent copies are removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Verified tokens remembered (never past their `exp`).
    #[serde(default = "default_cache")]
    pub cache_size: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Accepted algorithms (pinned): HS256/384/512, RS256/384/512, PS256/384/512,
    /// ES256/384, EdDSA. HMAC and public-key algorithms cannot be mixed in one provider.
    pub algorithms: Vec<String>,
    /// HS*: the environment variable holding the shared secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Public keys from a JWKS endpoint.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Public keys from PEM files.
    #[serde(default)]
    pub public_key_files: Vec<String>,
    #[serde(default = "five_minutes")]
    pub jwks_refresh: Duration,
    /// How long the last good JWKS keys are used while the endpoint is down.
    #[serde(default = "one_day")]
    pub jwks_max_stale: Duration,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match); empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "thirty_seconds")]
    pub leeway: Duration,
}

fn default_sources() -> Vec<String> {
    vec!["bearer".into()]
}
fn default_cache() -> usize {
    10_000
}
fn five_minutes() -> Duration {
    Duration::secs(300)
}
fn one_day() -> Duration {
    Duration::secs(86_400)
}
fn thirty_seconds() -> Duration {
    Duration::secs(30)
}

enum KeySource {
    Secret(DecodingKey),
    Static(Vec<Arc<Key>>),
    Jwks(Arc<Jwks>),
}

struct Provider {
    name: String,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
    validation: Validation,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Provider {
    fn new(
        index: usize,
        c: &ProviderConfig,
        required_claims: &[String],
        source_env: crate::env::Env,
    ) -> Result<Provider, PluginError> {
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("provider-{index}"));
        let at = |key: &str| {
            let path = format!("providers.{index}.{key}");
            let name = name.clone();
            move |m: String| PluginError::config_at(NAME, path, format!("provider `{name}`: {m}"))
        };
        if c.algorithms.is_empty() {
            return Err(at("algorithms")(
                "`algorithms` must name the accepted algorithms".into(),
            ));
        }
        let algorithms: Vec<Algorithm> = c
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| at("algorithms")(format!("unknown algorithm `{a}`")))
            })
            .collect::<Result<_, _>>()?;
        let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
        if hmac != 0 && hmac != algorithms.len() {
            return Err(at("algorithms")(
                "HMAC and public-key algorithms cannot be mixed (algorithm confusion)".into(),
            ));
        }
        let sources = [
            c.secret_env.is_some(),
            c.jwks_url.is_some(),
            !c.public_key_files.is_empty(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            return Err(PluginError::config_at(
                NAME,
                format!("providers.{index}"),
                format!("provider `{name}`: set exactly one of secret_env, jwks_url or public_key_files"),
            ));
        }
        let keys = if let Some(env) = &c.secret_env {
            if hmac == 0 {
                return Err(at("secret_env")(
                    "secret_env goes with HS256/384/512".into(),
                ));
            }
            let secret = source_env.var(env).ok_or_else(|| {
                at("secret_env")(format!("environment variable `{env}` is not set"))
            })?;
            if secret.len() < 32 {
                return Err(at("secret_env")(format!(
                    "the secret in `{env}` is shorter than 32 bytes"
                )));
            }
            KeySource::Secret(DecodingKey::from_secret(secret.as_bytes()))
        } else if hmac != 0 {
            return Err(at("algorithms")("HS* algorithms need secret_env".into()));
        } else if let Some(url) = &c.jwks_url {
            KeySource::Jwks(Arc::new(
                Jwks::new(url.clone(), c.jwks_refresh.get(), c.jwks_max_stale.get())
                    .map_err(at("jwks_url"))?,
            ))
        } else {
            KeySource::Static(
                keys::pem_keys(&c.public_key_files, &algorithms).map_err(at("public_key_files"))?,
            )
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = c.leeway.get().as_secs();
        validation.validate_nbf = true;
        let mut required: Vec<&str> = vec!["exp", "sub"];
        required.extend(required_claims.iter().map(String::as_str));
        validation.set_required_spec_claims(&required);
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        if c.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&c.audiences);
        }
        Ok(Provider {
            name,
            algorithms,
            keys,
            validation,
        })
    }

    /// The token's claims when this provider verifies it.
    async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Value, &'static str> {
        let attempt = |key: &DecodingKey| {
            jsonwebtoken::decode::<Value>(token, key, &self.validation).map(|d| d.claims)
        };
        let reason = |e: jsonwebtoken::errors::Error| -> &'static str {
            use jsonwebtoken::errors::ErrorKind::*;
            match e.kind() {
                ExpiredSignature => "expired",
                ImmatureSignature => "not_yet_valid",
                InvalidIssuer => "wrong_issuer",
                InvalidAudience => "wrong_audience",
                InvalidSignature => "bad_signature",
                MissingRequiredClaim(_) => "missing_claim",
                InvalidAlgorithm => "wrong_algorithm",
                _ => "invalid_token",
            }
        };
        match &self.keys {
            KeySource::Secret(k) => attempt(k).map_err(reason),
            KeySource::Static(keys) => try_keys(keys, header, attempt, reason),
            KeySource::Jwks(jwks) => {
                let keys = jwks.keys().await;
                if keys.is_empty() {
                    return Err("keys_unavailable");
                }
                if let Some(kid) = &header.kid {
                    let known = keys.iter().any(|k| k.kid.as_ref() == Some(kid));
                    if !known && jwks.refetch_for_unknown_kid(kid).await {
                        return try_keys(&jwks.keys().await, header, attempt, reason);
                    }
                }
                try_keys(&keys, header, attempt, reason)
            }
        }
    }
}

fn try_keys(
    keys: &[Arc<Key>],
    header: &jsonwebtoken::Header,
    attempt: impl Fn(&DecodingKey) -> jsonwebtoken::errors::Result<Value>,
    reason: impl Fn(jsonwebtoken::errors::Error) -> &'static str,
) -> Result<Value, &'static str> {
    let mut last = "unknown_key";
    for k in keys {
        if header.kid.is_some() && k.kid.is_some() && k.kid != header.kid {
            continue;
        }
        if k.algorithm.is_some_and(|a| a != header.alg) {
            continue;
        }
        match attempt(&k.key) {
            Ok(claims) => return Ok(claims),
            Err(e) => last = reason(e),
        }
    }
    Err(last)
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Bearer,
    /// The cookie's name, and the same as a credential to strip (built once).
    Cookie(String, Presented),
    /// A token in the query string stays in the URL the upstream gets.
    Query(String),
}

impl Source {
    fn presented(&self) -> Option<Presented> {
        match self {
            Source::Bearer => Some(Presented::Bearer),
            Source::Cookie(_, p) => Some(p.clone()),
            Source::Query(_) => None,
        }
    }
}

/// A token found valid, and who it names.
#[derive(Debug)]
struct VerifiedToken {
    token: Box<str>,
    identity: Identity,
}

#[derive(Debug)]
pub struct JwtPlugin {
    providers: Vec<Provider>,
    sources: Vec<Source>,
    roles_claim: Option<Path>,
    claim_headers: HeaderMap,
    /// Verified tokens, until their `exp`, by a keyed hash of their signature (the part
    /// that tells tokens apart, and a fraction of their length to hash). The hash
    /// only finds an entry: the entry keeps the token, and a hit is one whose token equals
    /// the presented one. (A SHA-256 key, which could stand for the token, cost ~10k
    /// instructions per request without the CPU's SHA extensions and was still 3× a SipHash
    /// of the whole token with them.)
    cache: CredentialCache<u64, VerifiedToken, u64>,
    /// Random per plugin instance, so nobody outside can aim tokens at one shard or entry.
    token_hasher: RandomState,
    revocations: Arc<crate::revocation::Revocations>,
}

impl JwtPlugin {
    pub fn new(config: &JwtConfig, ctx: &BuildContext) -> Result<Self, PluginError> {
        if config.providers.is_empty() {
            return Err(PluginError::config_at(
                NAME,
                "providers",
                "`providers` needs at least one provider",
            ));
        }
        let providers = config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| Provider::new(i, p, &config.required_claims, ctx.env))
            .collect::<Result<Vec<_>, _>>()?;
        let sources = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                "bearer" => Ok(Source::Bearer),
                _ => {
                    if let Some(c) = s.strip_prefix("cookie:") {
                        Ok(Source::Cookie(
                            c.to_string(),
                            Presented::Cookies(vec![c.to_string()].into()),
                        ))
                    } else if let Some(q) = s.strip_prefix("query:") {
                        Ok(Source::Query(q.to_string()))
                    } else {
                        Err(PluginError::config_at(
                            NAME,
                            format!("sources.{i}"),
                            format!(
                                "unknown token source `{s}`; use bearer, cookie:NAME or query:NAME"
                            ),
                        ))
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let claim_headers = HeaderMap::new(NAME, &config.claims_to_headers)?;
        Ok(JwtPlugin {
            providers,
            sources,
            roles_claim: config.roles_claim.as_deref().map(Path::parse),
            claim_headers,
            cache: CredentialCache::new(config.cache_size),
            token_hasher: RandomState::new(),
            revocations: ctx.revocations.clone(),
        })
    }

    fn token<'a>(&'a self, session: &'a Session) -> Option<(&'a str, &'a Source)> {
        let req = session.req_header();
        for source in &self.sources {
            let found = match source {
                Source::Bearer => credential::bearer(&req.headers),
                Source::Cookie(name, _) => {
                    credential::cookie(&req.headers, name).and_then(|v| std::str::from_utf8(v).ok())
                }
                Source::Query(name) => req.uri.query().and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        (k == name).then_some(v)
                    })
                }),
            };
            if let Some(t) = found.filter(|t| !t.is_empty()) {
                return Some((t, source));
            }
        }
        None
    }

    fn identity(&self, claims: &Value) -> Result<Identity, &'static str> {
        let user_id = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("missing_claim"),
        };
        let roles = self
            .roles_claim
            .as_ref()
            .map(|path| path.roles(claims))
            .unwrap_or_default();
        let headers = self.claim_headers.extract(claims);
        let text = |claim: &str| claims.get(claim).and_then(Value::as_str).map(Arc::from);
        let identity = Identity {
            user_id,
            roles,
            method: "jwt",
            headers,
            presented: None,
            session: Some(SessionFacts {
                id: text("sid"),
                token_id: text("jti"),
                started_ms: claims
                    .get("iat")
                    .and_then(Value::as_u64)
                    .map(|s| s.saturating_mul(1000)),
            }),
        };
        if !identity.fits_headers() {
            return Err("invalid_claim");
        }
        Ok(identity)
    }

    /// The identity in `token` when a provider verifies it (from the cache when it was
    /// verified before), else why not.
    pub async fn verify_token(&self, token: &str) -> Result<Identity, &'static str> {
        let key = self.cache_key(token);
        match self.cached(key, token) {
            Some(identity) => Ok(identity),
            // Boxed: the verification's future (a JWKS fetch) is large, and a future that held
            // it inline would be copied whole into `authenticate`'s box on every request,
            // cached or not.
            None => Box::pin(self.verify_and_keep(key, token)).await,
        }
    }

    /// The identity of `token` (found under `key`) if it was verified before and has not
    /// expired.
    fn cached(&self, key: u64, token: &str) -> Option<Identity> {
        self.cache.get_with(&key, unix_now(), |kept| {
            crate::constant_time::eq(kept.token.as_bytes(), token.as_bytes())
                .then(|| kept.identity.clone())
        })
    }

    fn cache_key(&self, token: &str) -> u64 {
        let signature = token
            .rsplit_once('.')
            .map_or(token, |(_, signature)| signature);
        self.token_hasher.hash_one(signature.as_bytes())
    }

    async fn verify_and_keep(&self, key: u64, token: &str) -> Result<Identity, &'static str> {
        let now = unix_now();
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Err("malformed");
        };
        let mut outcome = Err("wrong_algorithm");
        for p in self
            .providers
            .iter()
            .filter(|p| p.algorithms.contains(&header.alg))
        {
            outcome = p.verify(token, &header).await;
            if outcome.is_ok() {
                break;
            }
        }
        let claims = outcome?;
        let identity = self.identity(&claims)?;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        let kept = VerifiedToken {
            token: token.into(),
            identity: identity.clone(),
        };
        self.cache.insert(key, kept, exp, now);
        Ok(identity)
    }

    /// Whether the token was revoked: by its `jti` or `sid`, or by a cutoff of its subject
    /// that its `iat` precedes.
    fn revoked(&self, identity: &Identity) -> bool {
        use crate::revocation::{jti_key, session_key};
        let facts = identity.session.as_ref();
        self.revocations.is_revoked(
            &identity.user_id,
            facts.and_then(|f| f.started_ms),
            || {
                facts
                    .into_iter()
                    .flat_map(|f| {
                        let sid = f.id.as_deref().map(session_key);
                        sid.into_iter().chain(f.token_id.as_deref().map(jti_key))
                    })
                    .collect()
            },
            crate::clock::unix_ms(),
        )
    }
}

use crate::clock::unix_secs as unix_now;

#[async_trait]
impl Plugin for JwtPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        crate::api::AUTHENTICATION_PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases {
            authenticate: true,
            upstream_request: !self.claim_headers.is_empty(),
            ..Phases::default()
        }
    }

    async fn authenticate(
        &self,
        session: &mut Session,
        _ctx: &RequestContext,
    ) -> Result<AuthOutcome, PluginError> {
        let Some((token, source)) = self.token(session) else {
            return Ok(AuthOutcome::Absent);
        };
        Ok(match self.verify_token(token).await {
            Ok(identity) if self.revoked(&identity) => AuthOutcome::Invalid("revoked"),
            Ok(mut identity) => {
                identity.presented = source.presented();
                AuthOutcome::Verified(identity)
            }
            Err(reason) => AuthOutcome::Invalid(reason),
        })
    }

    fn upstream_request_filter(
        &self,
        _session: &Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        self.claim_headers.apply(upstream, ctx.identity.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;
    use jsonwebtoken::{EncodingKey, Header};

    fn plugin() -> JwtPlugin {
        let config: JwtConfig = serde_json::from_value(serde_json::json!({
            "providers": [{ "algorithms": ["HS256"], "secret_env": "TEST_JWT_SECRET" }]
        }))
        .expect("config");
        let ctx = BuildContext {
            env: Env::Placeholders,
            ..BuildContext::default()
        };
        JwtPlugin::new(&config, &ctx).expect("plugin")
    }

    fn token(sub: &str) -> String {
        let claims = serde_json::json!({ "sub": sub, "exp": 4_000_000_000u64 });
        let key = EncodingKey::from_secret(Env::PLACEHOLDER.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
    }

    #[tokio::test]
    async fn a_subject_no_header_can_carry_is_refused() {
        let jwt = plugin();
        assert_eq!(
            jwt.verify_token(&token("alice\nX-User-Id: root"))
                .await
                .err(),
            Some("invalid_claim")
        );
        assert_eq!(
            jwt.verify_token(&token("Jos\u{e9} Garc\u{ed}a"))
                .await
                .expect("valid")
                .user_id,
            "Jos\u{e9} Garc\u{ed}a"
        );
    }

    #[tokio::test]
    async fn a_cached_entry_answers_only_the_token_it_keeps() {
        let jwt = plugin();
        let alice = token("alice");
        assert_eq!(
            jwt.verify_token(&alice).await.expect("valid").user_id,
            "alice"
        );
        // Mallory's claims under alice's signature find alice's entry (the cache is keyed
        // by the signature): the entry's token is not the one presented, so it is verified,
        // and refused.
        let (_, alice_signature) = alice.rsplit_once('.').expect("three parts");
        let mallory = token("mallory");
        let (mallory_signed, _) = mallory.rsplit_once('.').expect("three parts");
        let forged = format!("{mallory_signed}.{alice_signature}");
        assert_eq!(jwt.verify_token(&forged).await.err(), Some("bad_signature"));
        // Alice's token is still answered from her entry.
        assert_eq!(
            jwt.verify_token(&alice).await.expect("valid").user_id,
            "alice"
        );
    }
}
