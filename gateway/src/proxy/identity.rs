//! Identity headers (`docs/configuration.md`, "Headers Portico sets upstream") reach an upstream only from a verified identity:
//! every copy a client sent is removed before anything else runs, whatever its case, with
//! `_` for `-`, repeated, or named in `Connection:`.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use portico_plugins::identity_headers::{X_AUTH_METHOD, X_USER_ID, X_USER_ROLES};
use portico_plugins::Identity;

const IDENTITY_HEADERS: [&str; 3] = [X_USER_ID, X_USER_ROLES, X_AUTH_METHOD];

// Set as names: a `&str` is checked for being a lowercase name on every insert.
const USER_ID: HeaderName = HeaderName::from_static(X_USER_ID);
const USER_ROLES: HeaderName = HeaderName::from_static(X_USER_ROLES);
const AUTH_METHOD: HeaderName = HeaderName::from_static(X_AUTH_METHOD);

/// `name` equals an identity header, ignoring case and reading `_` as `-`.
pub fn is_identity_header(name: &[u8]) -> bool {
    IDENTITY_HEADERS.iter().any(|h| {
        h.len() == name.len()
            && h.bytes().zip(name).all(|(a, &b)| {
                let b = if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                };
                a == b
            })
    })
}

/// Sets the identity headers of a verified identity on the upstream request and, unless the
/// route forwards credentials, removes the credential that proved it (`docs/plugins.md`).
pub fn apply(
    upstream: &mut RequestHeader,
    id: &Identity,
    forward_credentials: bool,
) -> pingora::Result<()> {
    if let (Some(presented), false) = (&id.presented, forward_credentials) {
        portico_plugins::credential::strip(upstream, presented);
    }
    upstream.insert_header(USER_ID, id.user_id.as_str())?;
    if !id.roles.is_empty() {
        upstream.insert_header(USER_ROLES, id.roles.join(","))?;
    }
    // A plugin's constant (`jwt`, `session`): referenced rather than copied when it can be.
    if id.method.bytes().all(|b| b.is_ascii_graphic()) {
        upstream.insert_header(AUTH_METHOD, HeaderValue::from_static(id.method))?;
    } else {
        upstream.insert_header(AUTH_METHOD, id.method)?;
    }
    for (name, value) in &id.headers {
        upstream.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Removes spoofed identity headers. Allocates only when there is something to remove.
pub fn strip(req: &mut RequestHeader) {
    let mut doomed: Vec<http::HeaderName> = Vec::new();
    let mut has_connection = false;
    for name in req.headers.keys() {
        if is_identity_header(name.as_str().as_bytes()) {
            doomed.push(name.clone());
        }
        // Found on the way, so a request without the field is not looked up for it again.
        has_connection |= name == http::header::CONNECTION;
    }
    // Identity headers nominated as hop-by-hop: drop the nomination too, so nothing later
    // treats the name specially.
    let connection_names_identity = has_connection
        && req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| is_identity_header(t.trim_ascii()))
            });
    for name in doomed {
        req.remove_header(&name);
    }
    if connection_names_identity {
        let kept: Vec<String> = req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty() && !is_identity_header(t))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        req.remove_header(&http::header::CONNECTION);
        if !kept.is_empty() {
            let _ = req.insert_header(http::header::CONNECTION, kept.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_match() {
        assert!(is_identity_header(b"X-User-Id"));
        assert!(is_identity_header(b"x_user_id"));
        assert!(is_identity_header(b"X-AUTH-METHOD"));
        assert!(!is_identity_header(b"x-user-ids"));
        assert!(!is_identity_header(b"x-request-id"));
    }

    #[test]
    fn strips_all_copies_and_nominations() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("X-User-Id", "evil").unwrap();
        r.append_header("x-user-id", "evil2").unwrap();
        r.append_header("X_User_Roles", "admin").unwrap();
        r.append_header("Connection", "keep-alive, X-User-Id")
            .unwrap();
        r.append_header("X-Other", "kept").unwrap();
        strip(&mut r);
        assert!(r.headers.get("x-user-id").is_none());
        assert!(r.headers.get("x_user_roles").is_none());
        assert_eq!(r.headers.get("connection").unwrap(), "keep-alive");
        assert_eq!(r.headers.get("x-other").unwrap(), "kept");
    }
}
