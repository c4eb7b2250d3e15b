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
    pub fn config(plugin: &'static str, message: impl Into<String>) -> Self {
        PluginError::Config {
            plugin,
            message: message.into(),
        }
    }
}

/// A verified identity. Only plugins that verified a credential create one; the gateway turns
/// it into the trusted identity headers.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: String,
    pub roles: Vec<String>,
    /// `jwt`, `session`, `api-key`, …
    pub method: &'static str,
}

/// What the gateway knows about the request, shared by every plugin of the pipeline.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: String,
    /// The client's address as decided by the trusted-proxies list.
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`, as the client sees it.
    pub scheme: &'static str,
    /// The matched route's name.
    pub route: Arc<str>,
    pub identity: Option<Identity>,
}

/// A response the gateway produces itself instead of proxying (the JSON error body of SPEC.md).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

/// What a request hook decided.
#[derive(Debug)]
pub enum Flow {
    Continue,
    Reject(Rejection),
}

/// Which hooks a plugin implements, so the pipeline calls only those (no virtual call, and no
/// boxed future, for a phase the plugin does not use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    pub request: bool,
    pub upstream_request: bool,
    pub response: bool,
    pub logging: bool,
}

/// A request-path plugin. Hooks mirror Pingora's phases; each has a no-op default.
#[async_trait]
pub trait Plugin: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;

    /// Higher runs first. Auth plugins run before rate limits, which run before header edits.
    fn priority(&self) -> i32;

    fn phases(&self) -> Phases;

    /// After routing, before choosing an upstream: authenticate, limit, or reject.
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

    /// Edits the upstream's response header before it goes to the client.
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
}
