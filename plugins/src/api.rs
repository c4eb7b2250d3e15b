use crate::error_code::ErrorCode;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// A plugin could not be built from its config, or failed while handling a request.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{plugin}: {message}")]
    Config {
        plugin: &'static str,
        /// Where in the plugin's config: a dotted path (`limits.0.rate`), when one key is at
        /// fault, so `check` can point at it.
        key: Option<String>,
        message: String,
    },
    #[error("{plugin}: {source}")]
    Request {
        plugin: &'static str,
        #[source]
        source: Box<pingora::Error>,
    },
}

impl PluginError {
    /// A problem with the plugin's config as a whole.
    pub fn config(plugin: &'static str, message: impl Into<String>) -> Self {
        PluginError::Config {
            plugin,
            key: None,
            message: message.into(),
        }
    }

    /// A problem with one key of the plugin's config (a dotted path: `limits.0.rate`).
    pub fn config_at(
        plugin: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PluginError::Config {
            plugin,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// The key at fault, for a config error about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            PluginError::Config { key, .. } => key.as_deref(),
            PluginError::Request { .. } => None,
        }
    }
}

/// The headers the gateway sets for upstreams from a verified identity (and removes from
/// every client request).
pub mod identity_headers {
    pub const X_USER_ID: &str = "x-user-id";
    pub const X_USER_ROLES: &str = "x-user-roles";
    pub const X_AUTH_METHOD: &str = "x-auth-method";
}

/// A verified identity. Only plugins that verified a credential create one; the gateway turns
/// it into the trusted identity headers.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: String,
    pub roles: Vec<String>,
    /// `jwt`, `session`, `api-key`, …
    pub method: &'static str,
    /// Further headers for the upstream, from configured claim mappings.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Where the verified credential was, so the gateway can keep it from the upstream.
    pub presented: Option<Presented>,
    /// What revocation compares: the session or token behind the identity.
    pub session: Option<SessionFacts>,
}

impl Identity {
    /// Whether the identity headers can carry it. A user id or role with a control character
    /// (which no header value may hold) would otherwise pass verification and then fail the
    /// upstream request; a plugin refuses such an identity when it makes it.
    pub fn fits_headers(&self) -> bool {
        let fits = |text: &str| text.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        fits(&self.user_id) && self.roles.iter().all(|role| fits(role))
    }
}

/// The session (or token) behind an identity, as far as its credential tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// Better Auth's `session.id`, a JWT's `sid`.
    pub id: Option<Arc<str>>,
    /// A JWT's `jti`.
    pub token_id: Option<Arc<str>>,
    /// When the session started, or the token was issued (ms since the epoch).
    pub started_ms: Option<u64>,
}

/// Where a verified credential travelled in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Bearer …`
    Bearer,
    /// These cookies (and their chunks `NAME.0`, `NAME.1`, …).
    Cookies(Arc<[String]>),
}

/// What the gateway knows about the request, shared by every plugin of the pipeline.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: RequestId,
    /// The client's address as decided by the trusted-proxies list.
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`, as the client sees it.
    pub scheme: &'static str,
    /// The matched route's name.
    pub route: Arc<str>,
    pub identity: Option<Identity>,
    /// Headers plugins add to the response, whether proxied or produced by the gateway.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Set to `Some` by a request hook that needs the request body in its response hook:
    /// the gateway then copies the body here as it streams, up to [`CAPTURED_BODY_LIMIT`].
    pub captured_body: Option<Vec<u8>>,
    /// What the route's rate limits decided, for the access log.
    pub rate_limit: Option<RateLimitOutcome>,
}

/// The request's id, kept as the header value it is sent as: the gateway sets it on the
/// upstream request and on the response, and each of those is then a reference count rather
/// than a copy, a validation and an allocation.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// An id that is already a header value (the client's, or one the gateway made).
    pub fn new(value: HeaderValue) -> Self {
        RequestId(value)
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Ids are ASCII (`X-Request-Id`'s alphabet); the check is for a value made elsewhere.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rate-limited route's verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitOutcome {
    Allowed,
    Limited,
    /// Decided by the fallback while Redis was away (a global limit).
    AllowedByFallback,
    LimitedByFallback,
}

impl RateLimitOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitOutcome::Allowed => "allowed",
            RateLimitOutcome::Limited => "limited",
            RateLimitOutcome::AllowedByFallback => "allowed_fallback",
            RateLimitOutcome::LimitedByFallback => "limited_fallback",
        }
    }
}

/// How much of a request body [`RequestContext::captured_body`] keeps.
pub const CAPTURED_BODY_LIMIT: usize = 16 * 1024;

/// A response the gateway produces itself instead of proxying (the JSON error body).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: u16,
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A metric label: for `rate_limited` the limit's name, for `unauthorized` and
    /// `forbidden` the reason.
    pub label: Option<Arc<str>>,
}

impl Rejection {
    /// A rejection answered with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status: code.status(),
            code,
            message: message.into(),
            headers: Vec::new(),
            label: None,
        }
    }
}

/// The priority of authentication plugins: among themselves they run in config order (the
/// pipeline runs them all before any other request hook).
pub const AUTHENTICATION_PRIORITY: i32 = 1000;

/// What an authentication plugin made of the request's credentials.
#[derive(Debug)]
pub enum AuthOutcome {
    /// A credential of this plugin's kind verified.
    Verified(Identity),
    /// The request carries no credential of this plugin's kind.
    Absent,
    /// A credential is present but does not verify; the reason is a short label
    /// (`expired`, `bad_signature`, …) for metrics and the `WWW-Authenticate` description.
    Invalid(&'static str),
    /// The credential cannot be checked now (the auth service is down).
    Unavailable(&'static str),
}

/// A route's authentication policy, applied over its authentication plugins (any of them may
/// verify the request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthPolicy {
    /// Without any credential: `true` answers 401, `false` passes the request anonymously.
    /// A credential that is present but invalid is refused either way.
    pub required: bool,
    /// The identity needs one of these roles, else 403.
    pub roles: Vec<String>,
    /// An invalid (or uncheckable) credential lets the request pass anonymously instead of
    /// answering 401 (or 503).
    pub invalid_are_anonymous: bool,
    /// The verified credential (bearer token, session cookies) goes on to the upstream;
    /// by default only the identity headers do.
    pub forward_credentials: bool,
}

/// What a request hook decided.
#[derive(Debug)]
pub enum Flow {
    Continue,
    /// The JSON error answer.
    Reject(Rejection),
    /// Any other answer the gateway gives itself (a CORS preflight, a redirect, a static
    /// page); the route's response hooks still run on it.
    Respond(Box<Answer>),
}

/// An answer the gateway makes without an upstream.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: bytes::Bytes,
}

/// Which hooks a plugin implements, so the pipeline calls only those (no virtual call, and no
/// boxed future, for a phase the plugin does not use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Before authentication ([`Plugin::early_request_filter`]): edge policy that must not
    /// wait for credentials (IP rules, CORS preflights, redirects, static answers).
    pub early: bool,
    /// Verifies credentials ([`Plugin::authenticate`]).
    pub authenticate: bool,
    pub request: bool,
    pub upstream_request: bool,
    pub response: bool,
    pub logging: bool,
}

impl Phases {
    /// Only [`Plugin::early_request_filter`]: the edge policies that run before credentials.
    pub const EARLY: Phases = Phases {
        early: true,
        authenticate: false,
        request: false,
        upstream_request: false,
        response: false,
        logging: false,
    };
}

/// A request-path plugin. Hooks mirror Pingora's phases; each has a no-op default.
#[async_trait]
pub trait Plugin: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;

    /// Higher runs first. Auth plugins run before rate limits, which run before header edits.
    fn priority(&self) -> i32;

    fn phases(&self) -> Phases;

    /// Before any credential is looked at: answer (a preflight, a redirect), refuse (an IP
    /// rule), or add response headers for every answer (CORS).
    fn early_request_filter(
        &self,
        _session: &Session,
        _ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        Ok(Flow::Continue)
    }

    /// Finds and verifies this plugin's kind of credential. The pipeline runs every
    /// authentication plugin of a route before the other request hooks and applies the
    /// route's [`AuthPolicy`] to what they found.
    async fn authenticate(
        &self,
        _session: &mut Session,
        _ctx: &RequestContext,
    ) -> Result<AuthOutcome, PluginError> {
        Ok(AuthOutcome::Absent)
    }

    /// After routing and authentication, before choosing an upstream: limit, or reject.
    async fn request_filter(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        Ok(Flow::Continue)
    }

    /// Edits the request sent upstream (once per attempt).
    fn upstream_request_filter(
        &self,
        _session: &Session,
        _upstream: &mut RequestHeader,
        _ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    /// Edits the response header before it goes to the client: the upstream's, and the
    /// gateway's own answers (errors, preflights, redirects, static answers) too.
    fn response_filter(
        &self,
        _session: &Session,
        _response: &mut ResponseHeader,
        _ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    /// After the response is done (success or failure).
    fn logging(&self, _session: &Session, _ctx: &RequestContext) {}

    /// Whether it answers every request itself (a static answer, a redirect everywhere):
    /// its route then needs no upstream.
    fn answers_every_request(&self) -> bool {
        false
    }
}

/// The outcome of taking tokens from a shared GCRA bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraGrant {
    /// Tokens granted (0 to the number asked for).
    pub granted: u32,
    /// Tokens still available right after this grant.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_after: std::time::Duration,
    /// Until the next token, when none was granted.
    pub retry_after: std::time::Duration,
}

/// An atomic GCRA bucket shared by every gateway replica (the gateway implements it on
/// Redis, judged on the Redis server's clock).
#[async_trait]
pub trait SharedBuckets: Send + Sync + std::fmt::Debug {
    /// Takes up to `want` tokens from bucket `key`: one token per `interval`, at most
    /// `capacity` at once.
    async fn take(
        &self,
        key: &str,
        interval: std::time::Duration,
        capacity: u32,
        want: u32,
    ) -> Result<GcraGrant, String>;

    /// Prefix for keys (the configured Redis key prefix).
    fn key_prefix(&self) -> &str;
}

/// What plugin constructors may use besides their config.
#[derive(Default, Clone)]
pub struct BuildContext {
    /// The route the plugin is built for.
    pub route: String,
    /// Shared buckets when the config has a `redis` section.
    pub shared: Option<Arc<dyn SharedBuckets>>,
    /// State kept across reloads (e.g. local rate-limit counters), by key.
    pub state: StateStore,
    /// Where secrets and `${env:NAME}` values come from.
    pub env: crate::env::Env,
    /// The gateway's revoked sessions and tokens (one set, kept across reloads).
    pub revocations: Arc<crate::revocation::Revocations>,
}

type StateMap = std::collections::HashMap<String, Arc<dyn std::any::Any + Send + Sync>>;

/// Plugin state that survives a reload when the plugin's config did not change. Each compile
/// gets a store [`carried over`](StateStore::carry_over) from the previous one: it hands back
/// the previous state for keys asked for again and forgets the rest.
#[derive(Default, Clone)]
pub struct StateStore {
    current: Arc<std::sync::Mutex<StateMap>>,
    previous: Arc<StateMap>,
}

impl StateStore {
    /// The state stored under `key`, or a new one from `make`.
    pub fn get_or_insert<T: Send + Sync + 'static>(
        &self,
        key: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let Ok(mut map) = self.current.lock() else {
            return Arc::new(make());
        };
        let found = map
            .get(key)
            .or_else(|| self.previous.get(key))
            .and_then(|v| v.clone().downcast::<T>().ok());
        let state = found.unwrap_or_else(|| Arc::new(make()));
        map.insert(key.to_string(), state.clone());
        state
    }

    /// A store for the next compile, offering this one's state.
    pub fn carry_over(&self) -> StateStore {
        let previous = self.current.lock().map(|m| m.clone()).unwrap_or_default();
        StateStore {
            current: Arc::default(),
            previous: Arc::new(previous),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_fits_headers_without_control_characters() {
        let id = |user_id: &str, roles: &[&str]| Identity {
            user_id: user_id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Identity::default()
        };
        assert!(id("alice", &["admin", "ops team"]).fits_headers());
        assert!(id("jos\u{e9}\tg", &[]).fits_headers());
        assert!(!id("alice\r\nx-admin: 1", &[]).fits_headers());
        assert!(!id("alice", &["admin", "ops\0"]).fits_headers());
        assert!(!id("del\u{7f}", &[]).fits_headers());
    }
}
