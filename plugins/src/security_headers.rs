//! `security_headers`: the browser-hardening headers an edge adds to every answer (proxied
//! and the gateway's own), and the removal of headers that name the stack behind it.
//!
//! ```yaml
//! plugins:
//!   - security_headers:
//!       hsts: { max_age: 365d, include_subdomains: true }
//!       content_security_policy: "default-src 'self'"
//! ```

use crate::api::{Phases, Plugin, PluginError, RequestContext};
use crate::units::Duration;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const NAME: &str = "security_headers";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// `Strict-Transport-Security`, sent only on answers to HTTPS requests.
    pub hsts: HstsConfig,
    /// `X-Content-Type-Options: nosniff`.
    pub content_type_options: bool,
    /// `X-Frame-Options` (`DENY`, `SAMEORIGIN`); empty: not sent.
    pub frame_options: String,
    /// `Referrer-Policy`; empty: not sent.
    pub referrer_policy: String,
    /// `Content-Security-Policy`; not sent unless set.
    pub content_security_policy: Option<String>,
    /// `Permissions-Policy`; not sent unless set.
    pub permissions_policy: Option<String>,
    /// Replace the upstream's own values of these headers (by default they are kept).
    #[serde(rename = "override")]
    pub override_upstream: bool,
    /// Headers removed from every answer: they tell attackers what runs behind the edge.
    pub remove: Vec<String>,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        SecurityHeadersConfig {
            hsts: HstsConfig::default(),
            content_type_options: true,
            frame_options: "SAMEORIGIN".into(),
            referrer_policy: "strict-origin-when-cross-origin".into(),
            content_security_policy: None,
            permissions_policy: None,
            override_upstream: false,
            remove: vec!["Server".into(), "X-Powered-By".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HstsConfig {
    pub enabled: bool,
    pub max_age: Duration,
    pub include_subdomains: bool,
    /// Ask for the browsers' preload list (only with `include_subdomains` and a year or more).
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        HstsConfig {
            enabled: true,
            max_age: Duration::secs(365 * 86_400),
            include_subdomains: false,
            preload: false,
        }
    }
}

#[derive(Debug)]
pub struct SecurityHeadersPlugin {
    hsts: Option<HeaderValue>,
    always: Vec<(HeaderName, HeaderValue)>,
    override_upstream: bool,
    remove: Vec<HeaderName>,
}

impl SecurityHeadersPlugin {
    pub fn new(config: &SecurityHeadersConfig) -> Result<Self, PluginError> {
        let at = |key: &str, m: String| PluginError::config_at(NAME, key, m);
        let value = |key: &str, v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| at(key, format!("`{v}` is not a valid header value")))
        };
        let h = &config.hsts;
        if h.preload && (!h.include_subdomains || h.max_age.get().as_secs() < 365 * 86_400) {
            return Err(at(
                "hsts.preload",
                "preload needs include_subdomains and a max_age of a year or more".into(),
            ));
        }
        let hsts = h.enabled.then(|| {
            let mut v = format!("max-age={}", h.max_age.get().as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            if h.preload {
                v.push_str("; preload");
            }
            v
        });
        let mut always = Vec::new();
        if config.content_type_options {
            always.push((
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ));
        }
        let optional = [
            (
                header::X_FRAME_OPTIONS,
                "frame_options",
                Some(&config.frame_options),
            ),
            (
                header::REFERRER_POLICY,
                "referrer_policy",
                Some(&config.referrer_policy),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                "content_security_policy",
                config.content_security_policy.as_ref(),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                "permissions_policy",
                config.permissions_policy.as_ref(),
            ),
        ];
        for (name, key, v) in optional {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                always.push((name, value(key, v)?));
            }
        }
        let remove = config
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    at(
                        &format!("remove.{i}"),
                        format!("`{n}` is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SecurityHeadersPlugin {
            hsts: hsts.map(|v| value("hsts", &v)).transpose()?,
            always,
            override_upstream: config.override_upstream,
            remove,
        })
    }

    fn set(&self, response: &mut ResponseHeader, name: &HeaderName, value: &HeaderValue) {
        if self.override_upstream || !response.headers.contains_key(name) {
            let _ = response.insert_header(name.clone(), value.clone());
        }
    }
}

impl Plugin for SecurityHeadersPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        // Before the `headers` plugin (-1000) edits the response, so its explicit values win.
        -100
    }

    fn phases(&self) -> Phases {
        Phases {
            response: true,
            ..Phases::default()
        }
    }

    fn response_filter(
        &self,
        _session: &Session,
        response: &mut ResponseHeader,
        ctx: &RequestContext,
    ) -> Result<(), PluginError> {
        for name in &self.remove {
            // Pingora's removal touches its case map too: only for headers that are there.
            if response.headers.contains_key(name) {
                response.remove_header(name);
            }
        }
        for (name, value) in &self.always {
            self.set(response, name, value);
        }
        if let (Some(hsts), "https") = (&self.hsts, ctx.scheme) {
            self.set(response, &header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        Ok(())
    }
}
