use crate::api::{Flow, Plugin, PluginError, RequestContext};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::Arc;

/// A route's plugins, ordered by priority, split per phase once when the config is compiled.
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    request: Vec<Arc<dyn Plugin>>,
    upstream_request: Vec<Arc<dyn Plugin>>,
    response: Vec<Arc<dyn Plugin>>,
    logging: Vec<Arc<dyn Plugin>>,
}

impl Pipeline {
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        // Stable sort: equal priorities keep the order of the config file.
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        let pick = |f: fn(&crate::Phases) -> bool| -> Vec<Arc<dyn Plugin>> {
            plugins.iter().filter(|p| f(&p.phases())).cloned().collect()
        };
        Pipeline {
            request: pick(|p| p.request),
            upstream_request: pick(|p| p.upstream_request),
            response: pick(|p| p.response),
            logging: pick(|p| p.logging),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_empty()
            && self.upstream_request.is_empty()
            && self.response.is_empty()
            && self.logging.is_empty()
    }

    pub async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        for plugin in &self.request {
            if let Flow::Reject(r) = plugin.request_filter(session, ctx).await? {
                return Ok(Flow::Reject(r));
            }
        }
        Ok(Flow::Continue)
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
