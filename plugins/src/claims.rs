//! Claims (or user fields) of a verified credential → roles and upstream headers.

use crate::api::{Identity, PluginError};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::Value;
use std::collections::BTreeMap;

/// A dotted path into a JSON object (`realm_access.roles`).
#[derive(Debug, Clone)]
pub(crate) struct Path(Vec<String>);

impl Path {
    pub fn parse(path: &str) -> Path {
        Path(path.split('.').map(str::to_string).collect())
    }

    pub fn lookup<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(value, |v, key| v.get(key))
    }

    /// Roles at this path: an array of strings, or one space/comma separated string.
    pub fn roles(&self, value: &Value) -> Vec<String> {
        match self.lookup(value) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Configured `field → header` mappings.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderMap(Vec<(Path, HeaderName)>);

impl HeaderMap {
    pub fn new(
        plugin: &'static str,
        mapping: &BTreeMap<String, String>,
    ) -> Result<HeaderMap, PluginError> {
        mapping
            .iter()
            .map(|(field, header)| {
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    PluginError::config(plugin, format!("`{header}` is not a header name"))
                })?;
                Ok((Path::parse(field), name))
            })
            .collect::<Result<_, _>>()
            .map(HeaderMap)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers `value` maps to (missing and null fields are left out).
    pub fn extract(&self, value: &Value) -> Vec<(HeaderName, HeaderValue)> {
        self.0
            .iter()
            .filter_map(|(path, name)| {
                let text = match path.lookup(value)? {
                    Value::String(s) => s.clone(),
                    Value::Null => return None,
                    other => other.to_string(),
                };
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect()
    }

    /// Mapped headers come only from the verified identity: client-sent copies go.
    pub fn apply(&self, upstream: &mut RequestHeader, identity: Option<&Identity>) {
        for (_, name) in &self.0 {
            upstream.remove_header(name);
        }
        if let Some(id) = identity {
            for (name, value) in &id.headers {
                let _ = upstream.insert_header(name.clone(), value.clone());
            }
        }
    }
}
