use crate::api::{AuthOutcome, AuthPolicy, Flow, Plugin, PluginError, Rejection, RequestContext};
use crate::error_code::ErrorCode;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::Arc;

/// A route's plugins, ordered by priority, split per phase once when the config is compiled.
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    early: Vec<Arc<dyn Plugin>>,
    authenticate: Vec<Arc<dyn Plugin>>,
    auth_policy: AuthPolicy,
    request: Vec<Arc<dyn Plugin>>,
    upstream_request: Vec<Arc<dyn Plugin>>,
    response: Vec<Arc<dyn Plugin>>,
    logging: Vec<Arc<dyn Plugin>>,
}

impl Pipeline {
    /// `auth_policy` applies when the route has authentication plugins.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>, auth_policy: AuthPolicy) -> Self {
        // Stable sort: equal priorities keep the order of the config file.
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        let pick = |f: fn(&crate::Phases) -> bool| -> Vec<Arc<dyn Plugin>> {
            plugins.iter().filter(|p| f(&p.phases())).cloned().collect()
        };
        Pipeline {
            early: pick(|p| p.early),
            authenticate: pick(|p| p.authenticate),
            auth_policy,
            request: pick(|p| p.request),
            upstream_request: pick(|p| p.upstream_request),
            response: pick(|p| p.response),
            logging: pick(|p| p.logging),
        }
    }

    /// Whether the verified credential goes on to the upstream (the route's auth policy).
    pub fn forwards_credentials(&self) -> bool {
        self.auth_policy.forward_credentials
    }

    pub fn is_empty(&self) -> bool {
        self.early.is_empty()
            && self.authenticate.is_empty()
            && self.request.is_empty()
            && self.upstream_request.is_empty()
            && self.response.is_empty()
            && self.logging.is_empty()
    }

    /// The hooks that run before authentication, in priority order, until one answers.
    pub fn early_request_filter(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        for plugin in &self.early {
            match plugin.early_request_filter(session, ctx)? {
                Flow::Continue => {}
                decided => return Ok(decided),
            }
        }
        Ok(Flow::Continue)
    }

    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        match self.early_request_filter(session, ctx)? {
            Flow::Continue => {}
            decided => return Ok(decided),
        }
        if !self.authenticate.is_empty() {
            if let Some(rejection) = self.authenticate(session, ctx).await? {
                return Ok(Flow::Reject(rejection));
            }
        }
        for plugin in &self.request {
            match plugin.request_filter(session, ctx).await? {
                Flow::Continue => {}
                decided => return Ok(decided),
            }
        }
        Ok(Flow::Continue)
    }

    /// Any of the route's authentication plugins may verify the request; then the policy.
    async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Option<Rejection>, PluginError> {
        let mut invalid = None;
        let mut unavailable = None;
        for plugin in &self.authenticate {
            match plugin.authenticate(session, ctx).await? {
                AuthOutcome::Verified(identity) => {
                    ctx.identity = Some(identity);
                    break;
                }
                AuthOutcome::Absent => {}
                AuthOutcome::Invalid(reason) => {
                    invalid.get_or_insert(reason);
                }
                AuthOutcome::Unavailable(reason) => {
                    unavailable.get_or_insert(reason);
                }
            }
        }
        let Some(identity) = &ctx.identity else {
            // A public page stays up while the auth service is down.
            if let Some(reason) = unavailable.filter(|_| !self.auth_policy.invalid_are_anonymous) {
                let mut r = Rejection::new(
                    ErrorCode::UpstreamUnavailable,
                    "The authentication service is unavailable",
                );
                r.label = Some(reason.into());
                return Ok(Some(r));
            }
            if let Some(reason) = invalid.filter(|_| !self.auth_policy.invalid_are_anonymous) {
                return Ok(Some(unauthorized(Some(reason))));
            }
            return Ok(self.auth_policy.required.then(|| unauthorized(None)));
        };
        let roles = &self.auth_policy.roles;
        if !roles.is_empty() && !identity.roles.iter().any(|r| roles.contains(r)) {
            let mut r = Rejection::new(ErrorCode::Forbidden, "The identity lacks a required role");
            r.label = Some("missing_role".into());
            return Ok(Some(r));
        }
        Ok(None)
    }

    pub fn upstream_request_filter(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        for plugin in &self.upstream_request {
            plugin.upstream_request_filter(session, upstream, ctx)?;
        }
        Ok(())
    }

    pub fn response_filter(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        for plugin in &self.response {
            plugin.response_filter(session, response, ctx)?;
        }
        Ok(())
    }

    pub fn logging(&self, session: &Session, ctx: &RequestContext) {
        for plugin in &self.logging {
            plugin.logging(session, ctx);
        }
    }
}

/// 401 with an RFC 6750 challenge; `reason` is why a presented credential failed.
fn unauthorized(reason: Option<&'static str>) -> Rejection {
    let mut r = Rejection::new(ErrorCode::Unauthorized, "Valid credentials are required");
    let challenge = match reason {
        None => Ok(HeaderValue::from_static("Bearer realm=\"portico\"")),
        Some(reason) => HeaderValue::from_str(&format!(
            "Bearer realm=\"portico\", error=\"invalid_token\", error_description=\"{reason}\""
        )),
    };
    if let Ok(v) = challenge {
        r.headers.push((http::header::WWW_AUTHENTICATE, v));
    }
    r.label = Some(reason.unwrap_or("missing_credentials").into());
    r
}
