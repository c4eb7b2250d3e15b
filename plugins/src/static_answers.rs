//! Answers without an upstream: `redirect` (HTTP→HTTPS, or to another location) and
//! `respond` (a configured status, headers and body: maintenance pages, `/robots.txt`,
//! health stubs). A route whose plugins answer every request needs no `upstream`.
//!
//! ```yaml
//! plugins:
//!   - redirect: { https: true }                       # cleartext requests → https://same-host/same-path
//!   - redirect: { location: "https://new.example.com", keep_path: true, status: 301 }
//!   - respond: { status: 503, headers: { Retry-After: "600" }, body: "Back soon" }
//! ```

use crate::api::{Answer, Flow, Phases, Plugin, PluginError, RequestContext};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const REDIRECT: &str = "redirect";
pub const RESPOND: &str = "respond";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Send cleartext requests to the same host and path over HTTPS (HTTPS requests pass).
    #[serde(default)]
    pub https: bool,
    /// With `https`: the HTTPS port, when it is not 443.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Or send every request here (an absolute URL, or a path).
    #[serde(default)]
    pub location: Option<String>,
    /// With `location`: append the request's path and query.
    #[serde(default)]
    pub keep_path: bool,
    /// 301, 302, 303, 307 or 308. Default: 308 (the method and body are kept).
    #[serde(default = "permanent")]
    pub status: u16,
    /// Paths (prefixes) left alone. With `https`, ACME HTTP-01 challenges
    /// (`/.well-known/acme-challenge/`) always are.
    #[serde(default)]
    pub except: Vec<String>,
}

fn permanent() -> u16 {
    308
}

const ACME: &str = "/.well-known/acme-challenge/";

#[derive(Debug)]
pub struct RedirectPlugin {
    https: Option<Option<u16>>,
    location: Option<String>,
    keep_path: bool,
    status: u16,
    except: Vec<String>,
}

impl RedirectPlugin {
    pub fn new(config: &RedirectConfig) -> Result<Self, PluginError> {
        let at = |key: &str, m: &str| PluginError::config_at(REDIRECT, key, m);
        if ![301, 302, 303, 307, 308].contains(&config.status) {
            return Err(at(
                "status",
                "a redirect status is 301, 302, 303, 307 or 308",
            ));
        }
        match (config.https, &config.location) {
            (true, Some(_)) => return Err(at("location", "give `https` or `location`, not both")),
            (false, None) => {
                return Err(PluginError::config(
                    REDIRECT,
                    "give `https: true` or a `location`",
                ))
            }
            (_, Some(l)) if HeaderValue::from_str(l).is_err() || l.is_empty() => {
                return Err(at("location", "not a valid Location value"))
            }
            _ => {}
        }
        Ok(RedirectPlugin {
            https: config
                .https
                .then_some(config.https_port.filter(|p| *p != 443)),
            location: config.location.clone(),
            keep_path: config.keep_path,
            status: config.status,
            except: config
                .except
                .iter()
                .cloned()
                .chain(config.https.then(|| ACME.to_string()))
                .collect(),
        })
    }

    fn target(&self, session: &Session, ctx: &RequestContext) -> Option<String> {
        let req = session.req_header();
        let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
        if self
            .except
            .iter()
            .any(|p| req.uri.path().starts_with(p.as_str()))
        {
            return None;
        }
        if let Some(port) = self.https {
            if ctx.scheme == "https" {
                return None;
            }
            let host = req.uri.host().map(str::to_string).or_else(|| {
                let h = req.headers.get(header::HOST)?.to_str().ok()?;
                // The port is the cleartext one; drop it (IPv6 literals keep their brackets).
                Some(match h.rfind(':') {
                    Some(i) if !h[i..].contains(']') => h[..i].to_string(),
                    _ => h.to_string(),
                })
            })?;
            return Some(match port {
                Some(p) => format!("https://{host}:{p}{path_and_query}"),
                None => format!("https://{host}{path_and_query}"),
            });
        }
        let location = self.location.as_deref()?;
        Some(if self.keep_path {
            format!("{}{path_and_query}", location.trim_end_matches('/'))
        } else {
            location.to_string()
        })
    }
}

impl Plugin for RedirectPlugin {
    fn name(&self) -> &'static str {
        REDIRECT
    }

    fn priority(&self) -> i32 {
        2200
    }

    fn phases(&self) -> Phases {
        Phases::EARLY
    }

    fn early_request_filter(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        let Some(target) = self.target(session, ctx) else {
            return Ok(Flow::Continue);
        };
        let Ok(location) = HeaderValue::from_str(&target) else {
            return Ok(Flow::Continue);
        };
        Ok(Flow::Respond(Box::new(Answer {
            status: self.status,
            headers: vec![(header::LOCATION, location)],
            body: Bytes::new(),
        })))
    }

    fn answers_every_request(&self) -> bool {
        self.location.is_some() && self.except.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default = "ok")]
    pub status: u16,
    /// Response headers (`Content-Type` defaults to `text/plain; charset=utf-8` with a body).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

#[derive(Debug)]
pub struct RespondPlugin {
    answer: Answer,
}

impl RespondPlugin {
    pub fn new(config: &RespondConfig) -> Result<Self, PluginError> {
        let at = |key: String, m: String| PluginError::config_at(RESPOND, key, m);
        if !(200..=599).contains(&config.status) {
            return Err(at(
                "status".into(),
                format!("{} is not a final HTTP status", config.status),
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let key = format!("headers.{name}");
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| at(key.clone(), format!("`{name}` is not a header name")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| at(key, format!("`{value}` is not a valid header value")))?;
            headers.push((n, v));
        }
        if !config.body.is_empty() && !headers.iter().any(|(n, _)| n == header::CONTENT_TYPE) {
            headers.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ));
        }
        Ok(RespondPlugin {
            answer: Answer {
                status: config.status,
                headers,
                body: Bytes::from(config.body.clone()),
            },
        })
    }
}

impl Plugin for RespondPlugin {
    fn name(&self) -> &'static str {
        RESPOND
    }

    fn priority(&self) -> i32 {
        2100
    }

    fn phases(&self) -> Phases {
        Phases::EARLY
    }

    fn early_request_filter(
        &self,
        _session: &Session,
        _ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        Ok(Flow::Respond(Box::new(self.answer.clone())))
    }

    fn answers_every_request(&self) -> bool {
        true
    }
}
