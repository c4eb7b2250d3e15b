//! `cors`: Cross-Origin Resource Sharing for browser front ends on other origins.
//!
//! Runs before authentication: a preflight from an allowed origin is answered by the gateway
//! (204) without credentials ever being asked for, and every answer to an allowed origin —
//! proxied, or the gateway's own 401, 403, 404, 429, 5xx — carries the CORS headers, so page
//! scripts can read the JSON error. A disallowed origin gets no CORS headers and the request
//! goes on unchanged (the browser then withholds the answer from the page).
//!
//! ```yaml
//! plugins:
//!   - cors:
//!       allow_origins: ["https://app.example.com", "https://*.example.com"]
//!       allow_credentials: true
//!       expose_headers: [X-Request-Id]
//! ```

use crate::api::{Answer, Flow, Phases, Plugin, PluginError, RequestContext};
use crate::units::Duration;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const NAME: &str = "cors";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), with one `*` standing for any
    /// subdomain (`https://*.example.com`), or `"*"` for any origin (not with credentials).
    pub allow_origins: Vec<String>,
    /// Let pages send cookies and `Authorization` (`Access-Control-Allow-Credentials`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (beyond the CORS-safelisted ones).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Allow whatever request headers a preflight asks for (echoed back).
    #[serde(default)]
    pub echo_request_headers: bool,
    /// Response headers page scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "ten_minutes")]
    pub max_age: Duration,
    /// Answer Private Network Access preflights (a public page calling a private address).
    #[serde(default)]
    pub allow_private_network: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn ten_minutes() -> Duration {
    Duration::secs(600)
}

/// `scheme://` + `*` + `.suffix`: any non-empty host label sequence in place of the `*`.
#[derive(Debug)]
struct OriginPattern {
    prefix: String,
    suffix: String,
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        origin.len() > self.prefix.len() + self.suffix.len()
            && origin.starts_with(&self.prefix)
            && origin.ends_with(&self.suffix)
            && origin[self.prefix.len()..origin.len() - self.suffix.len()]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    }
}

#[derive(Debug)]
pub struct CorsPlugin {
    any_origin: bool,
    exact: HashSet<String>,
    patterns: Vec<OriginPattern>,
    credentials: bool,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    echo_headers: bool,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    private_network: bool,
}

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;
const TRUE: HeaderValue = HeaderValue::from_static("true");

impl CorsPlugin {
    pub fn new(config: &CorsConfig) -> Result<Self, PluginError> {
        let at = |key: &str, m: String| PluginError::config_at(NAME, key, m);
        if config.allow_origins.is_empty() {
            return Err(at("allow_origins", "list at least one origin".into()));
        }
        let mut any_origin = false;
        let mut exact = HashSet::new();
        let mut patterns = Vec::new();
        for (i, o) in config.allow_origins.iter().enumerate() {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            if o == "*" {
                any_origin = true;
                continue;
            }
            let Some((scheme, host)) = o.split_once("://") else {
                return Err(at(
                    &format!("allow_origins.{i}"),
                    format!("`{o}` is not an origin (scheme://host[:port])"),
                ));
            };
            if scheme.is_empty() || host.is_empty() || host.contains('/') {
                return Err(at(
                    &format!("allow_origins.{i}"),
                    format!("`{o}` is not an origin (scheme://host[:port], no path)"),
                ));
            }
            match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => {
                    patterns.push(OriginPattern {
                        prefix: format!("{scheme}://"),
                        suffix: suffix.to_string(),
                    })
                }
                Some(_) => {
                    return Err(at(
                        &format!("allow_origins.{i}"),
                        format!(
                        "`{o}`: a `*` stands for the leading labels only (`https://*.example.com`)"
                    ),
                    ))
                }
                None if host.contains('*') => {
                    return Err(at(
                        &format!("allow_origins.{i}"),
                        format!(
                        "`{o}`: a `*` stands for the leading labels only (`https://*.example.com`)"
                    ),
                    ))
                }
                None => {
                    exact.insert(o);
                }
            }
        }
        if any_origin && config.allow_credentials {
            return Err(at(
                "allow_origins",
                "`*` with `allow_credentials: true` would let every site on the web act with your users' cookies: list the origins".into(),
            ));
        }
        let list = |key: &str, items: &[String]| -> Result<Option<HeaderValue>, PluginError> {
            if items.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&items.join(", "))
                .map(Some)
                .map_err(|_| {
                    at(
                        key,
                        format!("`{}` is not a valid header value", items.join(", ")),
                    )
                })
        };
        let methods: Vec<String> = config
            .allow_methods
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        Ok(CorsPlugin {
            any_origin,
            exact,
            patterns,
            credentials: config.allow_credentials,
            methods: list("allow_methods", &methods)?
                .ok_or_else(|| at("allow_methods", "list at least one method".into()))?,
            headers: list("allow_headers", &config.allow_headers)?,
            echo_headers: config.echo_request_headers,
            expose: list("expose_headers", &config.expose_headers)?,
            max_age: HeaderValue::from(config.max_age.get().as_secs()),
            private_network: config.allow_private_network,
        })
    }

    fn allows(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let lower;
        let origin = if origin.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = origin.to_ascii_lowercase();
            lower.as_str()
        } else {
            origin
        };
        self.exact.contains(origin) || self.patterns.iter().any(|p| p.matches(origin))
    }

    /// `*` for any origin without credentials (cacheable by everyone); else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, session: &Session, origin: &HeaderValue) -> Answer {
        let req = &session.req_header().headers;
        let mut headers = vec![
            (ALLOW_ORIGIN, self.allow_origin(origin)),
            (header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()),
            (header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()),
            (
                header::VARY,
                HeaderValue::from_static(
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                ),
            ),
        ];
        let requested = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        match (self.echo_headers, requested, &self.headers) {
            (true, Some(asked), _) => {
                headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()))
            }
            (_, _, Some(allowed)) => {
                headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone()))
            }
            _ => {}
        }
        if self.credentials {
            headers.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        let private = req
            .get("access-control-request-private-network")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if self.private_network && private {
            headers.push((
                HeaderName::from_static("access-control-allow-private-network"),
                TRUE,
            ));
        }
        Answer {
            status: 204,
            headers,
            body: Bytes::new(),
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(req: &pingora::http::RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(header::ORIGIN)
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl Plugin for CorsPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        // After IP rules, before redirects, static answers and authentication.
        2500
    }

    fn phases(&self) -> Phases {
        Phases::EARLY
    }

    fn early_request_filter(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> Result<Flow, PluginError> {
        let req = session.req_header();
        let Some(origin) = req.headers.get(header::ORIGIN) else {
            return Ok(Flow::Continue);
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allows(o));
        if !self.any_origin || self.credentials {
            // The answer depends on the origin, whether it is allowed or not.
            ctx.response_headers
                .push((header::VARY, HeaderValue::from_static("Origin")));
        }
        if !allowed {
            return Ok(Flow::Continue);
        }
        if is_preflight(req) {
            return Ok(Flow::Respond(Box::new(self.preflight(session, origin))));
        }
        ctx.response_headers
            .push((ALLOW_ORIGIN, self.allow_origin(origin)));
        if self.credentials {
            ctx.response_headers
                .push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        if let Some(expose) = &self.expose {
            ctx.response_headers
                .push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(origins: &[&str], credentials: bool) -> Result<CorsPlugin, PluginError> {
        CorsPlugin::new(&CorsConfig {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: credentials,
            allow_methods: default_methods(),
            allow_headers: Vec::new(),
            echo_request_headers: false,
            expose_headers: Vec::new(),
            max_age: ten_minutes(),
            allow_private_network: false,
        })
    }

    #[test]
    fn exact_origins_and_subdomain_patterns() {
        let p = plugin(&["https://app.example.com", "https://*.example.org"], true).unwrap();
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!p.allows("http://app.example.com"));
        assert!(!p.allows("https://app.example.com.evil.test"));
        assert!(p.allows("https://a.example.org"));
        assert!(p.allows("https://a.b.example.org"));
        assert!(!p.allows("https://example.org"));
        assert!(!p.allows("https://evil-example.org"));
        assert!(!p.allows("https://a.example.org.evil.test"));
        assert!(!p.allows("https://x/y.example.org"));
    }

    #[test]
    fn any_origin_is_refused_with_credentials() {
        assert!(plugin(&["*"], true).is_err());
        assert!(plugin(&["*"], false)
            .unwrap()
            .allows("https://anything.test"));
        assert!(plugin(&["https://a.test/path"], false).is_err());
        assert!(plugin(&["https://a.*.test"], false).is_err());
        assert!(plugin(&[], false).is_err());
    }
}
