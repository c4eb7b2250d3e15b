//! `headers`: set, add and remove request and response headers.
//!
//! ```yaml
//! plugins:
//!   - headers:
//!       request:
//!         set: { X-Api-Key: "${env:PAYMENTS_API_KEY}", X-Client-Ip: "${client_ip}" }
//!         remove: [Cookie]
//!       response:
//!         add: { Cache-Control: no-store }
//!         remove: [Server]
//! ```

use crate::api::{Phases, Plugin, PluginError, RequestContext};
use crate::template::Template;
use async_trait::async_trait;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const NAME: &str = "headers";

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Edits of the request sent upstream.
    #[serde(default)]
    pub request: HeaderEdits,
    /// Edits of the upstream's response sent to the client.
    #[serde(default)]
    pub response: HeaderEdits,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers to remove (applied first).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, replacing any existing value. Values are templates.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping existing values. Values are templates.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

#[derive(Debug)]
struct CompiledEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

impl CompiledEdits {
    fn new(edits: &HeaderEdits, side: &str, env: crate::env::Env) -> Result<Self, PluginError> {
        let name = |n: &str, key: String| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                PluginError::config_at(
                    NAME,
                    key,
                    format!("{side}: `{n}` is not a valid header name"),
                )
            })
        };
        let pairs = |edit: &str, map: &BTreeMap<String, String>| -> Result<Vec<_>, PluginError> {
            map.iter()
                .map(|(k, v)| {
                    let key = format!("{side}.{edit}.{k}");
                    let template = Template::compile_with_env(v, |n| env.var(n)).map_err(|e| {
                        PluginError::config_at(
                            NAME,
                            key.clone(),
                            format!("{side}: header `{k}`: {e}"),
                        )
                    })?;
                    Ok((name(k, key)?, template))
                })
                .collect()
        };
        Ok(CompiledEdits {
            remove: edits
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| name(n, format!("{side}.remove.{i}")))
                .collect::<Result<_, _>>()?,
            set: pairs("set", &edits.set)?,
            add: pairs("add", &edits.add)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// The `headers` plugin, compiled.
#[derive(Debug)]
pub struct HeadersPlugin {
    request: CompiledEdits,
    response: CompiledEdits,
}

impl HeadersPlugin {
    pub fn new(config: &HeadersConfig, env: crate::env::Env) -> Result<Self, PluginError> {
        Ok(HeadersPlugin {
            request: CompiledEdits::new(&config.request, "request", env)?,
            response: CompiledEdits::new(&config.response, "response", env)?,
        })
    }
}

macro_rules! apply_edits {
    ($edits:expr, $header:expr, $session:expr, $ctx:expr) => {{
        for name in &$edits.remove {
            $header.remove_header(name);
        }
        for (name, template) in &$edits.set {
            match template.render($session, $ctx) {
                Some(v) => {
                    let _ = $header.insert_header(name.clone(), v);
                }
                None => {
                    $header.remove_header(name);
                }
            }
        }
        for (name, template) in &$edits.add {
            if let Some(v) = template.render($session, $ctx) {
                let _ = $header.append_header(name.clone(), v);
            }
        }
    }};
}

#[async_trait]
impl Plugin for HeadersPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        // Last of the request phase: it may read the identity that auth plugins set.
        -1000
    }

    fn phases(&self) -> Phases {
        Phases {
            upstream_request: !self.request.is_empty(),
            response: !self.response.is_empty(),
            ..Phases::default()
        }
    }

    fn upstream_request_filter(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        apply_edits!(self.request, upstream, session, ctx);
        Ok(())
    }

    fn response_filter(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        apply_edits!(self.response, response, session, ctx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_and_templates() {
        let mut cfg = HeadersConfig::default();
        cfg.request.set.insert("Bad Name".into(), "x".into());
        let err = HeadersPlugin::new(&cfg, crate::env::Env::Process)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid header name"), "{err}");

        let mut cfg = HeadersConfig::default();
        cfg.response.add.insert("X-A".into(), "${nope}".into());
        let err = HeadersPlugin::new(&cfg, crate::env::Env::Process)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variable"), "{err}");
    }

    #[test]
    fn phases_follow_config() {
        let mut cfg = HeadersConfig::default();
        cfg.response.remove.push("Server".into());
        let p = HeadersPlugin::new(&cfg, crate::env::Env::Process).unwrap();
        assert_eq!(
            p.phases(),
            Phases {
                response: true,
                ..Phases::default()
            }
        );
    }
}
