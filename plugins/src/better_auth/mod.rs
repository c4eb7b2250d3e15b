//! `better_auth`: authenticates Better Auth sessions (the `session_token` cookie, or its
//! `Authorization: Bearer` form from Better Auth's bearer plugin).
//!
//! The token's HMAC is checked locally, in constant time, so forged cookies never reach the
//! auth service. The session itself comes from the `session_data` cookie cache when one is
//! configured and valid, else from the auth service's `get-session` endpoint (cached).
//!
//! ```yaml
//! plugins:
//!   - better_auth:
//!       secret_env: BETTER_AUTH_SECRET
//!       session_endpoint: { url: "http://auth:3000/api/auth/get-session", cache_ttl: 30s }
//!       cookie_cache: { strategy: compact }
//!       user_to_headers: { email: X-User-Email }
//! ```

#[doc(hidden)] // public for the fuzz targets (tests/fuzz)
pub mod cookie_cache;
mod sessions;
#[doc(hidden)] // public for the fuzz targets (tests/fuzz)
pub mod signed;

pub use cookie_cache::{CachedSession, Verifier as CookieCacheVerifier};
pub use signed::{SignedToken, TokenVerifier};

use crate::api::{
    AuthOutcome, BuildContext, Flow, Identity, Phases, Plugin, PluginError, Presented,
    RequestContext, SessionFacts,
};
use crate::claims::{HeaderMap, Path};
use crate::credential;
use crate::revocation::{self, Revocation, Revocations};
use crate::units::Duration;
use async_trait::async_trait;
use cookie_cache::Verifier;
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessions::{LookupSettings, SessionLookup};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NAME: &str = "better_auth";

/// Better Auth's built-in development secret: never accepted.
const DEFAULT_SECRET: &str = "better-auth-secret-12345678901234567890";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BetterAuthConfig {
    /// The environment variable holding Better Auth's secret (its `BETTER_AUTH_SECRET`).
    pub secret_env: String,
    /// Better Auth's `advanced.cookiePrefix`.
    #[serde(default = "default_prefix")]
    pub cookie_prefix: String,
    /// `__Secure-` cookie names, as Better Auth uses when its baseURL is https.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Also accept `Authorization: Bearer <token>.<signature>` (Better Auth's bearer plugin).
    /// Unsigned bearer tokens are refused.
    #[serde(default = "yes")]
    pub bearer: bool,
    /// Resolve sessions with the auth service (the source of truth: sign-out takes effect
    /// within `cache_ttl`).
    #[serde(default)]
    pub session_endpoint: Option<SessionEndpointConfig>,
    /// Validate the `session_data` cookie cache locally (revocation lags by up to the cache's
    /// max age); requests without a valid one fall back to `session_endpoint`.
    #[serde(default)]
    pub cookie_cache: Option<CookieCacheConfig>,
    /// Dotted path of the roles in the user object (the admin plugin's `role`).
    #[serde(default = "default_roles_field")]
    pub roles_field: String,
    /// User field (dotted path) → upstream header. Client-sent copies are removed.
    #[serde(default)]
    pub user_to_headers: BTreeMap<String, String>,
    /// Sessions ended through this route (sign-out and the other session-ending endpoints)
    /// are revoked at once, on every replica.
    #[serde(default)]
    pub revocation: RevocationConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Watch Better Auth's session-ending endpoints on this route.
    pub enabled: bool,
    /// Better Auth's `basePath`, as clients send it.
    pub base_path: String,
    /// How long a revocation is kept: at least the cookie cache's `maxAge` plus 15 s, and
    /// at least `session_endpoint.cache_ttl`.
    pub retain: Duration,
    /// While other replicas' revocations cannot reach this one (Redis away), a cookie-cache
    /// cookie could belong to a session revoked elsewhere: `ask_auth_service` resolves it with
    /// `session_endpoint` instead (when there is one); `accept_cookie_cache` keeps trusting it
    /// until it expires.
    pub when_out_of_sync: OutOfSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutOfSync {
    AskAuthService,
    AcceptCookieCache,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            enabled: true,
            base_path: "/api/auth".into(),
            retain: Duration::secs(600),
            when_out_of_sync: OutOfSync::AskAuthService,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionEndpointConfig {
    /// Full URL of get-session, e.g. `http://auth:3000/api/auth/get-session`.
    pub url: String,
    #[serde(default = "two_seconds")]
    pub timeout: Duration,
    /// How long a session found is trusted without asking again (never past its expiry).
    #[serde(default = "thirty_seconds")]
    pub cache_ttl: Duration,
    /// How long "no such session" is remembered.
    #[serde(default = "five_seconds")]
    pub negative_cache_ttl: Duration,
    /// Sessions remembered at most.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CookieCacheStrategy {
    /// HMAC-signed JSON (Better Auth's default).
    Compact,
    /// HS256 JWT signed with the secret.
    Jwt,
    /// A256CBC-HS512 JWE keyed from the secret.
    Jwe,
    /// JWT signed with the JWKS key (`jwt({ sessionCookieCache: true })`).
    Jwks,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CookieCacheConfig {
    pub strategy: CookieCacheStrategy,
    /// Better Auth's `cookieCache.version`.
    #[serde(default = "default_version")]
    pub version: String,
    /// `jwks`: the auth service's JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// `jwks`: the required `iss` (Better Auth's baseURL).
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default = "five_minutes")]
    pub jwks_refresh: Duration,
    #[serde(default = "one_day")]
    pub jwks_max_stale: Duration,
}

fn yes() -> bool {
    true
}
fn default_prefix() -> String {
    "better-auth".into()
}
fn default_roles_field() -> String {
    "role".into()
}
fn default_version() -> String {
    "1".into()
}
fn two_seconds() -> Duration {
    Duration::secs(2)
}
fn five_seconds() -> Duration {
    Duration::secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::secs(30)
}
fn five_minutes() -> Duration {
    Duration::secs(300)
}
fn one_day() -> Duration {
    Duration::secs(86_400)
}
fn default_cache_size() -> usize {
    100_000
}

pub(crate) use crate::clock::unix_ms as now_ms;

#[derive(Debug)]
struct CookieCache {
    verifier: Verifier,
    version: String,
    /// `<name>`; chunks are `<name>.0`, `<name>.1`, …
    cookie_name: String,
}

pub struct BetterAuthPlugin {
    tokens: TokenVerifier,
    cookie_name: String,
    /// The session token and cookie-cache cookies, as a credential to keep from upstreams.
    session_cookies: Presented,
    bearer: bool,
    lookup: Option<Arc<SessionLookup>>,
    cookie_cache: Option<CookieCache>,
    roles: Path,
    user_headers: HeaderMap,
    revocations: Arc<Revocations>,
    /// Where the session-ending endpoints are, when this route watches them.
    endpoints: Option<SessionEndpoints>,
    /// Skip the cookie cache (for `session_endpoint`) while revocations may be missing.
    distrust_cache_out_of_sync: bool,
}

/// Better Auth's endpoints that end sessions, under its base path.
#[derive(Debug)]
struct SessionEndpoints {
    base_path: String,
    retain_ms: u64,
}

/// What a session-ending endpoint revokes when it answers 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `sign-out`: the session of the request.
    SignOut,
    /// `revoke-session`: the session whose token is in the body.
    RevokeSession,
    /// `revoke-sessions`, `delete-user`: every session of the user.
    AllSessions,
    /// `revoke-other-sessions`: every session of the user but the request's.
    OtherSessions,
    /// `change-password` with `revokeOtherSessions`, `reset-password`: every session of the
    /// user but the one the answer starts (or the request's).
    PasswordChange,
}

impl SessionEndpoints {
    fn ending(&self, path: &str) -> Option<Ending> {
        let name = path
            .strip_prefix(self.base_path.as_str())?
            .strip_prefix('/')?;
        Some(match name.trim_end_matches('/') {
            "sign-out" => Ending::SignOut,
            "revoke-session" => Ending::RevokeSession,
            "revoke-sessions" | "delete-user" | "delete-user/callback" => Ending::AllSessions,
            "revoke-other-sessions" => Ending::OtherSessions,
            "change-password" | "reset-password" => Ending::PasswordChange,
            _ => return None,
        })
    }
}

impl std::fmt::Debug for BetterAuthPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetterAuthPlugin")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_cache", &self.cookie_cache)
            .finish_non_exhaustive()
    }
}

impl BetterAuthPlugin {
    pub fn new(config: &BetterAuthConfig, ctx: &BuildContext) -> Result<Self, PluginError> {
        let err = |m: String| PluginError::config(NAME, m);
        let at = |key: &'static str| move |m: String| PluginError::config_at(NAME, key, m);
        let secret = ctx.env.var(&config.secret_env).ok_or_else(|| {
            at("secret_env")(format!(
                "environment variable `{}` is not set",
                config.secret_env
            ))
        })?;
        if secret.is_empty() || secret == DEFAULT_SECRET {
            return Err(at("secret_env")(format!(
                "`{}` holds an empty or Better Auth's default secret",
                config.secret_env
            )));
        }
        if config.cookie_prefix.is_empty()
            || !config
                .cookie_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=')
        {
            return Err(at("cookie_prefix")(
                "`cookie_prefix` is not a valid cookie name".into(),
            ));
        }
        if config.session_endpoint.is_none() && config.cookie_cache.is_none() {
            return Err(err(
                "set `session_endpoint`, `cookie_cache` or both: a session token alone names no user"
                    .into(),
            ));
        }
        let secure = if config.secure_cookies {
            "__Secure-"
        } else {
            ""
        };
        let cookie_name = format!("{secure}{}.session_token", config.cookie_prefix);
        let lookup = match &config.session_endpoint {
            None => None,
            Some(e) => {
                let lookup = SessionLookup::new(LookupSettings {
                    url: &e.url,
                    cookie_name: cookie_name.clone(),
                    timeout: e.timeout.get(),
                    ttl: e.cache_ttl.get(),
                    negative_ttl: e.negative_cache_ttl.get(),
                    capacity: e.cache_size,
                })
                .map_err(|m| at("session_endpoint.url")(m))?;
                // Routes with the same settings share one cache (and it survives reloads).
                let key = format!(
                    "{NAME}:{}:{cookie_name}:{e:?}:{}:{:?}",
                    config.secret_env, config.roles_field, config.user_to_headers
                );
                Some(ctx.state.get_or_insert(&key, || lookup))
            }
        };
        let cookie_cache = match &config.cookie_cache {
            None => None,
            Some(c) => {
                let bytes = secret.as_bytes();
                let verifier = match c.strategy {
                    CookieCacheStrategy::Compact => Verifier::compact(bytes),
                    CookieCacheStrategy::Jwt => Verifier::jwt(bytes),
                    CookieCacheStrategy::Jwe => Verifier::jwe(bytes),
                    CookieCacheStrategy::Jwks => {
                        let url = c.jwks_url.clone().ok_or_else(|| {
                            at("cookie_cache.strategy")(
                                "the `jwks` strategy needs `jwks_url`".into(),
                            )
                        })?;
                        let jwks = crate::jwt::keys::Jwks::new(
                            url,
                            c.jwks_refresh.get(),
                            c.jwks_max_stale.get(),
                        )
                        .map_err(|m| at("cookie_cache.jwks_url")(m))?;
                        Verifier::jwks(Arc::new(jwks), c.issuer.clone())
                    }
                };
                Some(CookieCache {
                    verifier,
                    version: c.version.clone(),
                    cookie_name: format!("{secure}{}.session_data", config.cookie_prefix),
                })
            }
        };
        let session_cookies = Presented::Cookies(
            vec![
                cookie_name.clone(),
                format!("{secure}{}.session_data", config.cookie_prefix),
            ]
            .into(),
        );
        let r = &config.revocation;
        let endpoints = if r.enabled {
            if let Some(e) = &config.session_endpoint {
                if r.retain.get() < e.cache_ttl.get() {
                    return Err(at("revocation.retain")(format!(
                        "`retain` ({}) is shorter than `session_endpoint.cache_ttl` ({}): a revoked session could pass from the cache after its revocation is forgotten",
                        humantime::format_duration(r.retain.get()), humantime::format_duration(e.cache_ttl.get())
                    )));
                }
            }
            if !r.base_path.starts_with('/') {
                return Err(at("revocation.base_path")(format!(
                    "`{}` is not a path (it starts with `/`)",
                    r.base_path
                )));
            }
            Some(SessionEndpoints {
                base_path: r.base_path.trim_end_matches('/').to_string(),
                retain_ms: r.retain.get().as_millis() as u64,
            })
        } else {
            None
        };
        Ok(BetterAuthPlugin {
            tokens: TokenVerifier::new(secret.as_bytes()).map_err(&err)?,
            cookie_name,
            session_cookies,
            bearer: config.bearer,
            lookup,
            cookie_cache,
            roles: Path::parse(&config.roles_field),
            user_headers: HeaderMap::new(NAME, &config.user_to_headers)?,
            revocations: ctx.revocations.clone(),
            endpoints,
            distrust_cache_out_of_sync: config.revocation.when_out_of_sync
                == OutOfSync::AskAuthService
                && config.session_endpoint.is_some(),
        })
    }

    /// The credential: a bearer session token (when enabled), else the session cookie.
    fn credential<'a>(&self, session: &'a Session) -> Option<(&'a [u8], bool)> {
        let headers = &session.req_header().headers;
        let bearer = credential::bearer(headers).filter(|t| signed::looks_like_session_token(t));
        match bearer {
            Some(token) if self.bearer => Some((token.as_bytes(), false)),
            _ => credential::cookie(headers, &self.cookie_name).map(|v| (v, true)),
        }
    }

    /// `session_data`, whole or joined from its chunks.
    fn session_data(&self, session: &Session, name: &str) -> Option<String> {
        if let Some(v) = credential::cookie(&session.req_header().headers, name) {
            return std::str::from_utf8(&signed::percent_decode(v))
                .ok()
                .map(str::to_string);
        }
        let mut joined = String::new();
        for i in 0.. {
            let Some(chunk) =
                credential::cookie(&session.req_header().headers, &format!("{name}.{i}"))
            else {
                break;
            };
            joined.push_str(std::str::from_utf8(&signed::percent_decode(chunk)).ok()?);
        }
        (!joined.is_empty()).then_some(joined)
    }

    /// The outcome for a verified session, with where its credential was.
    fn verified(&self, mut identity: Identity, from_cookie: bool) -> AuthOutcome {
        identity.presented = Some(if from_cookie {
            self.session_cookies.clone()
        } else {
            Presented::Bearer
        });
        AuthOutcome::Verified(identity)
    }

    fn identity(&self, user: &Value, session: &Value) -> Option<Identity> {
        let user_id = user.get("id")?.as_str().filter(|id| !id.is_empty())?;
        let identity = Identity {
            user_id: user_id.to_string(),
            roles: self.roles.roles(user),
            method: "session",
            headers: self.user_headers.extract(user),
            presented: None,
            session: Some(SessionFacts {
                id: session.get("id").and_then(Value::as_str).map(Arc::from),
                token_id: None,
                started_ms: session
                    .get("createdAt")
                    .and_then(Value::as_str)
                    .and_then(cookie_cache::parse_iso_ms),
            }),
        };
        identity.fits_headers().then_some(identity)
    }

    /// Whether the session behind `token` was revoked (nothing is looked up while no
    /// revocation is known, and the token is hashed only when one could match).
    fn revoked(&self, token: &str, identity: &Identity) -> bool {
        let facts = identity.session.as_ref();
        self.revocations.is_revoked(
            &identity.user_id,
            facts.and_then(|f| f.started_ms),
            || {
                let mut keys = vec![revocation::token_key(token)];
                keys.extend(
                    facts
                        .and_then(|f| f.id.as_deref())
                        .map(revocation::session_key),
                );
                keys
            },
            now_ms(),
        )
    }

    /// The verified session token a header value (a cookie's, or a `Set-Cookie`'s) carries.
    fn token_of(&self, value: &[u8]) -> Option<String> {
        let decoded = signed::percent_decode(value);
        self.tokens
            .verify(&decoded)
            .ok()
            .map(|t| t.token().to_string())
    }

    /// The session token an answer starts (`Set-Cookie` of the session cookie with a value).
    fn token_set_by(&self, response: &pingora::http::ResponseHeader) -> Option<String> {
        response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .find_map(|v| {
                let pair = v.as_bytes().split(|b| *b == b';').next()?;
                let eq = pair.iter().position(|b| *b == b'=')?;
                let (name, value) = (pair[..eq].trim_ascii(), &pair[eq + 1..]);
                (name == self.cookie_name.as_bytes() && !value.is_empty())
                    .then(|| self.token_of(value))
                    .flatten()
            })
    }

    /// What a session-ending answer revokes, if anything.
    fn revocation_for(
        &self,
        ending: Ending,
        session: &Session,
        response: &pingora::http::ResponseHeader,
        ctx: &RequestContext,
        until_ms: u64,
    ) -> Option<Revocation> {
        let current = self
            .credential(session)
            .and_then(|(value, _)| self.token_of(value));
        let body =
            || -> Option<Value> { serde_json::from_slice(ctx.captured_body.as_deref()?).ok() };
        let user = || {
            let user = ctx.identity.as_ref().map(|i| i.user_id.clone());
            if user.is_none() {
                tracing::warn!(route = %ctx.route, ?ending, "better_auth: a session-ending request without a verified session: nothing to revoke at the edge");
            }
            user
        };
        let now = now_ms();
        let all_but = |user_id: String, keep: Option<String>| Revocation::User {
            user_id,
            not_before_ms: now,
            keep: keep
                .map(|t| revocation::token_key(&t))
                .into_iter()
                .collect(),
            until_ms,
        };
        match ending {
            Ending::SignOut => current.map(|t| Revocation::Credential {
                key: revocation::token_key(&t),
                until_ms,
            }),
            Ending::RevokeSession => {
                let body = body()?;
                let token = body.get("token")?.as_str()?;
                Some(Revocation::Credential {
                    key: revocation::token_key(token),
                    until_ms,
                })
            }
            Ending::AllSessions => Some(all_but(user()?, None)),
            Ending::OtherSessions => Some(all_but(user()?, current)),
            Ending::PasswordChange => {
                let is_change = session.req_header().uri.path().contains("change-password");
                let revokes_others = body()
                    .and_then(|b| b.get("revokeOtherSessions")?.as_bool())
                    .unwrap_or(false);
                if is_change && !revokes_others {
                    return None;
                }
                // Better Auth ends every session and starts a new one for the answer.
                Some(all_but(user()?, self.token_set_by(response)))
            }
        }
    }
}

#[async_trait]
impl Plugin for BetterAuthPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        crate::api::AUTHENTICATION_PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases {
            authenticate: true,
            request: self.endpoints.is_some(),
            upstream_request: !self.user_headers.is_empty(),
            response: self.endpoints.is_some(),
            ..Phases::default()
        }
    }

    /// Keeps the body of the session-ending requests whose body says what ends.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        let ending = self
            .endpoints
            .as_ref()
            .and_then(|e| e.ending(session.req_header().uri.path()));
        if matches!(ending, Some(Ending::RevokeSession | Ending::PasswordChange)) {
            ctx.captured_body = Some(Vec::new());
        }
        Ok(Flow::Continue)
    }

    /// A session-ending request that succeeded: revoke what it ended, here and on every
    /// replica, so cached lookups and cookie caches stop passing it.
    fn response_filter(
        &self,
        session: &Session,
        response: &mut pingora::http::ResponseHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        let Some(endpoints) = &self.endpoints else {
            return Ok(());
        };
        if !response.status.is_success() {
            return Ok(());
        }
        let Some(ending) = endpoints.ending(session.req_header().uri.path()) else {
            return Ok(());
        };
        let until_ms = now_ms() + endpoints.retain_ms;
        if let Some(r) = self.revocation_for(ending, session, response, ctx, until_ms) {
            self.revocations.revoke(r, revocation::Source::Edge);
        }
        Ok(())
    }

    async fn authenticate(
        &self,
        session: &mut Session,
        _ctx: &RequestContext,
    ) -> Result<AuthOutcome, PluginError> {
        let Some((credential, from_cookie)) = self.credential(session) else {
            return Ok(AuthOutcome::Absent);
        };
        let token = match self.tokens.verify(credential) {
            Ok(t) => t,
            Err(reason) => return Ok(AuthOutcome::Invalid(reason)),
        };
        let cache_trusted = !self.distrust_cache_out_of_sync || self.revocations.in_sync();
        if let (Some(cache), true, true) = (&self.cookie_cache, from_cookie, cache_trusted) {
            if let Some(data) = self.session_data(session, &cache.cookie_name) {
                match cache.verifier.verify(&data, &cache.version, now_ms()).await {
                    Ok(s)
                        if crate::constant_time::eq(
                            s.token.as_bytes(),
                            token.token().as_bytes(),
                        ) =>
                    {
                        if let Some(id) = self.identity(&s.user, &s.session) {
                            if self.revoked(token.token(), &id) {
                                return Ok(AuthOutcome::Invalid("revoked"));
                            }
                            return Ok(self.verified(id, from_cookie));
                        }
                    }
                    Ok(_) => tracing::debug!("better_auth: session_data of another session"),
                    Err(reason) => tracing::debug!(reason, "better_auth: session_data not usable"),
                }
            }
        }
        let Some(lookup) = &self.lookup else {
            return Ok(AuthOutcome::Invalid("no_session_data"));
        };
        Ok(
            match lookup
                .resolve(&token, |user, session| self.identity(user, session))
                .await
            {
                Ok(Some(identity)) if self.revoked(token.token(), &identity) => {
                    AuthOutcome::Invalid("revoked")
                }
                Ok(Some(identity)) => self.verified(identity, from_cookie),
                Ok(None) => AuthOutcome::Invalid("no_session"),
                Err(reason) => AuthOutcome::Unavailable(reason),
            },
        )
    }

    fn upstream_request_filter(
        &self,
        _session: &Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        self.user_headers.apply(upstream, ctx.identity.as_ref());
        Ok(())
    }
}
