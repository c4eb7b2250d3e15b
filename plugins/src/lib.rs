//! Portico's plugin API and its built-in plugins.
//!
//! A plugin is a small piece of request-path logic with typed configuration. The gateway
//! compiles each route's plugin list once per config snapshot into a [`Pipeline`], which
//! calls each plugin's hooks in Pingora's phase order.

mod api;
pub mod better_auth;
mod claims;
pub mod clock;
pub mod constant_time;
pub mod cookie;
pub mod cors;
pub mod credential;
mod credential_cache;
pub mod env;
mod error_code;
pub mod hash;
pub mod headers;
pub mod ip_rules;
pub mod jwt;
mod pipeline;
pub mod rate_limit;
pub mod revocation;
pub mod security_headers;
pub mod static_answers;
pub mod template;
pub mod trace;
pub mod units;

pub use api::{
    identity_headers, Answer, AuthOutcome, AuthPolicy, BuildContext, Flow, GcraGrant, Identity,
    Phases, Plugin, PluginError, Presented, RateLimitOutcome, Rejection, RequestContext, RequestId,
    SessionFacts, SharedBuckets, StateStore, CAPTURED_BODY_LIMIT,
};
pub use error_code::ErrorCode;
pub use pipeline::Pipeline;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One entry of a route's `plugins:` list: the plugin's name as the key, its typed config
/// as the value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PluginConfig {
    /// Set, add and remove request and response headers.
    Headers(headers::HeadersConfig),
    /// Limit request rates, in process or across replicas.
    RateLimit(rate_limit::RateLimitConfig),
    /// Verify a JSON Web Token and set the trusted identity.
    Jwt(jwt::JwtConfig),
    /// Authenticate Better Auth sessions and set the trusted identity.
    BetterAuth(better_auth::BetterAuthConfig),
    /// Cross-origin requests from browsers: preflights answered, CORS headers on every answer.
    Cors(cors::CorsConfig),
    /// HSTS, nosniff, frame and referrer policies, CSP; stack-revealing headers removed.
    SecurityHeaders(security_headers::SecurityHeadersConfig),
    /// Allow and deny lists of client addresses.
    IpRestriction(ip_rules::IpRestrictionConfig),
    /// Redirect (HTTP→HTTPS, or elsewhere).
    Redirect(static_answers::RedirectConfig),
    /// Answer with a configured status, headers and body, without an upstream.
    Respond(static_answers::RespondConfig),
}

impl PluginConfig {
    /// The name the plugin is configured under.
    pub fn name(&self) -> &'static str {
        match self {
            PluginConfig::Headers(_) => headers::NAME,
            PluginConfig::RateLimit(_) => rate_limit::NAME,
            PluginConfig::Jwt(_) => jwt::NAME,
            PluginConfig::BetterAuth(_) => better_auth::NAME,
            PluginConfig::Cors(_) => cors::NAME,
            PluginConfig::SecurityHeaders(_) => security_headers::NAME,
            PluginConfig::IpRestriction(_) => ip_rules::NAME,
            PluginConfig::Redirect(_) => static_answers::REDIRECT,
            PluginConfig::Respond(_) => static_answers::RESPOND,
        }
    }

    /// Whether it verifies credentials (and so belongs to a route's `auth` policy).
    pub fn is_authentication(&self) -> bool {
        matches!(self, PluginConfig::Jwt(_) | PluginConfig::BetterAuth(_))
    }

    /// Validates the config and builds the ready-to-run plugin.
    pub fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Plugin>, PluginError> {
        match self {
            PluginConfig::Headers(c) => Ok(Arc::new(headers::HeadersPlugin::new(c, ctx.env)?)),
            PluginConfig::RateLimit(c) => Ok(Arc::new(rate_limit::RateLimitPlugin::new(c, ctx)?)),
            PluginConfig::Jwt(c) => Ok(Arc::new(jwt::JwtPlugin::new(c, ctx)?)),
            PluginConfig::BetterAuth(c) => {
                Ok(Arc::new(better_auth::BetterAuthPlugin::new(c, ctx)?))
            }
            PluginConfig::Cors(c) => Ok(Arc::new(cors::CorsPlugin::new(c)?)),
            PluginConfig::SecurityHeaders(c) => {
                Ok(Arc::new(security_headers::SecurityHeadersPlugin::new(c)?))
            }
            PluginConfig::IpRestriction(c) => Ok(Arc::new(ip_rules::IpRestrictionPlugin::new(c)?)),
            PluginConfig::Redirect(c) => Ok(Arc::new(static_answers::RedirectPlugin::new(c)?)),
            PluginConfig::Respond(c) => Ok(Arc::new(static_answers::RespondPlugin::new(c)?)),
        }
    }
}

/// A route's `auth:` policy over its authentication plugins (`jwt`, `better_auth`): any of
/// them may verify the request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicyConfig {
    /// Without any credential: `true` answers 401, `false` passes the request anonymously
    /// (no identity headers). A credential that is present but invalid is always refused.
    #[serde(default = "required_by_default")]
    pub required: bool,
    /// The identity needs one of these roles, else 403.
    #[serde(default)]
    pub roles: Vec<String>,
    /// A credential that is present but does not verify (or cannot be checked: the auth
    /// service is down): `reject` (401 / 503), or `anonymous` (only with `required: false`:
    /// the request passes without identity, as if it carried none — for public pages that a
    /// stale session cookie or an auth outage must not take down).
    #[serde(default)]
    pub invalid_credentials: InvalidCredentials,
    /// Send the verified credential (the `Authorization` bearer token, the session cookies)
    /// on to the upstream. By default it is removed: the upstream gets the identity headers,
    /// and an upstream that echoes headers cannot leak an HttpOnly session token. Other
    /// cookies always pass.
    #[serde(default)]
    pub forward_credentials: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvalidCredentials {
    #[default]
    Reject,
    Anonymous,
}

fn required_by_default() -> bool {
    true
}

impl Default for AuthPolicyConfig {
    fn default() -> Self {
        AuthPolicyConfig {
            required: true,
            roles: Vec::new(),
            invalid_credentials: InvalidCredentials::Reject,
            forward_credentials: false,
        }
    }
}

impl From<&AuthPolicyConfig> for AuthPolicy {
    fn from(c: &AuthPolicyConfig) -> Self {
        AuthPolicy {
            required: c.required,
            roles: c.roles.clone(),
            invalid_are_anonymous: !c.required
                && c.invalid_credentials == InvalidCredentials::Anonymous,
            forward_credentials: c.forward_credentials,
        }
    }
}
