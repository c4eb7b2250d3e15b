//! What a consistent-hash pool hashes: a header, a cookie, the client address, or the path.

use http::HeaderName;
use portico_plugins::hash::{stable_hash, StableHasher};
use std::net::IpAddr;

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Path,
}

impl HashKey {
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let text = text.trim();
        if let Some(h) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(h.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{h}` is not a valid header name"));
        }
        if let Some(c) = text.strip_prefix("cookie:") {
            let c = c.trim();
            if c.is_empty() {
                return Err("a cookie name is required after `cookie:`".into());
            }
            return Ok(HashKey::Cookie(c.to_string()));
        }
        match text {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            other => Err(format!(
                "unknown hash key `{other}`; use header:NAME, cookie:NAME, client_ip or path"
            )),
        }
    }

    /// The key's hash for this request; `None` when the request does not carry the key
    /// (the pool then falls back to round robin).
    pub fn hash(
        &self,
        req: &pingora::http::RequestHeader,
        client_ip: Option<IpAddr>,
    ) -> Option<u64> {
        match self {
            HashKey::Header(name) => req.headers.get(name).map(|v| stable_hash(v.as_bytes())),
            HashKey::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| portico_plugins::cookie::value(v.as_bytes(), name.as_bytes()))
                .map(stable_hash),
            HashKey::ClientIp => client_ip.map(|ip| StableHasher::new().ip(0, Some(ip)).finish()),
            HashKey::Path => Some(stable_hash(req.uri.path().as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse() {
        assert_eq!(HashKey::parse("client_ip").unwrap(), HashKey::ClientIp);
        assert!(matches!(
            HashKey::parse("header:x-user").unwrap(),
            HashKey::Header(_)
        ));
        assert!(HashKey::parse("header:bad name").is_err());
        assert!(HashKey::parse("moon").is_err());
    }
}
