//! What a consistent-hash pool hashes: a header, a cookie, the client address, the path, or
//! the verified user.

use http::HeaderName;
use portico_plugins::hash::{stable_hash, StableHasher};
use portico_plugins::Identity;
use std::net::IpAddr;

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    /// A header as the upstream gets it: for the identity headers the gateway sets
    /// (`X-User-Id`, `X-User-Roles`, `X-Auth-Method`, claim headers) the verified value,
    /// since clients' copies are removed; else the client's header.
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Path,
    /// The verified identity's user id.
    UserId,
}

/// What the request offers a hash key besides its head.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySource<'a> {
    pub client_ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
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
            "user_id" => Ok(HashKey::UserId),
            other => Err(format!(
                "unknown hash key `{other}`; use header:NAME, cookie:NAME, client_ip, path or user_id"
            )),
        }
    }

    /// The key's hash for this request; `None` when the request does not carry the key
    /// (the pool then falls back to its fallback: round robin).
    pub fn hash(&self, req: &pingora::http::RequestHeader, source: KeySource<'_>) -> Option<u64> {
        match self {
            HashKey::Header(name) => match identity_value(name, source.identity) {
                Some(injected) => injected,
                None => req.headers.get(name).map(|v| stable_hash(v.as_bytes())),
            },
            HashKey::UserId => source.identity.map(|i| stable_hash(i.user_id.as_bytes())),
            HashKey::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| portico_plugins::cookie::value(v.as_bytes(), name.as_bytes()))
                .map(stable_hash),
            HashKey::ClientIp => source
                .client_ip
                .map(|ip| StableHasher::new().ip(0, Some(ip)).finish()),
            HashKey::Path => Some(stable_hash(req.uri.path().as_bytes())),
        }
    }
}

/// For a header the gateway sets from the identity: `Some(hash)` of the value it sets, or
/// `Some(None)` when the request has no identity (the client's copy never counts). `None` for
/// other headers.
fn identity_value(name: &HeaderName, identity: Option<&Identity>) -> Option<Option<u64>> {
    use portico_plugins::identity_headers::{X_AUTH_METHOD, X_USER_ID, X_USER_ROLES};
    let hash = |f: &dyn Fn(&Identity) -> Option<u64>| Some(identity.and_then(f));
    match name.as_str() {
        X_USER_ID => hash(&|i| Some(stable_hash(i.user_id.as_bytes()))),
        X_USER_ROLES => hash(&|i| Some(stable_hash(i.roles.join(",").as_bytes()))),
        X_AUTH_METHOD => hash(&|i| Some(stable_hash(i.method.as_bytes()))),
        _ => {
            let claim = identity?.headers.iter().find(|(n, _)| n == name)?;
            Some(Some(stable_hash(claim.1.as_bytes())))
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
        assert_eq!(HashKey::parse("user_id").unwrap(), HashKey::UserId);
    }

    #[test]
    fn identity_headers_hash_the_verified_value_never_the_clients() {
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-user-id", "spoofed").unwrap();
        let alice = Identity {
            user_id: "alice".into(),
            ..Identity::default()
        };
        let key = HashKey::parse("header:x-user-id").unwrap();
        let verified = KeySource {
            identity: Some(&alice),
            ..KeySource::default()
        };
        assert_eq!(key.hash(&req, verified), Some(stable_hash(b"alice")));
        assert_eq!(
            HashKey::UserId.hash(&req, verified),
            Some(stable_hash(b"alice"))
        );
        assert_eq!(key.hash(&req, KeySource::default()), None);
        assert_eq!(HashKey::UserId.hash(&req, KeySource::default()), None);
    }
}
