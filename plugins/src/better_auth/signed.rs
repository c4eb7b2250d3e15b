//! Better Auth's signed session token: `<token>.<base64(HMAC-SHA256(secret, token))>`,
//! URL-encoded in the cookie (better-call's `signCookieValue`).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

type HmacSha256 = Hmac<Sha256>;

/// A session token whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken {
    /// The decoded `token.sig` as Better Auth reads it (the cookie's value, percent-decoded).
    signed: String,
    dot: usize,
    /// The signature itself: a keyed hash of the token, used as the session cache key.
    pub digest: [u8; 32],
}

impl SignedToken {
    /// The raw session token (what Better Auth stores).
    pub fn token(&self) -> &str {
        &self.signed[..self.dot]
    }

    pub fn signed(&self) -> &str {
        &self.signed
    }
}

/// Checks Better Auth's signed session tokens with one secret. The HMAC key schedule is
/// computed once, not per request.
#[derive(Clone)]
pub struct TokenVerifier {
    mac: HmacSha256,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Result<TokenVerifier, String> {
        let mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(TokenVerifier { mac })
    }

    /// Checks `value` (a cookie value or bearer credential, possibly percent-encoded) like
    /// better-call's `getSignedCookie`: the last `.` splits token and signature, the
    /// signature is 44 characters of padded standard base64, compared in constant time.
    pub fn verify(&self, value: &[u8]) -> Result<SignedToken, &'static str> {
        let decoded = percent_decode(value);
        let text = std::str::from_utf8(&decoded).map_err(|_| "malformed")?;
        let (token, sig) = text.rsplit_once('.').ok_or("unsigned")?;
        if token.is_empty() || sig.len() != 44 || !sig.ends_with('=') {
            return Err("malformed");
        }
        let mut digest = [0u8; 32];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(sig, &mut digest)
            .map_err(|_| "malformed")?;
        if n != digest.len() {
            return Err("malformed");
        }
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        mac.verify_slice(&digest).map_err(|_| "bad_signature")?;
        Ok(SignedToken {
            dot: token.len(),
            signed: text.to_string(),
            digest,
        })
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier")
    }
}

/// The cookie value Better Auth itself writes for `signed` (`encodeURIComponent`).
pub(crate) fn cookie_encode(signed: &str) -> String {
    let mut out = String::with_capacity(signed.len() + 8);
    for b in signed.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `decodeURIComponent`, keeping the input when it is not valid percent-encoding (as
/// better-call's cookie parser does).
pub(crate) fn percent_decode(value: &[u8]) -> Cow<'_, [u8]> {
    if !value.contains(&b'%') {
        return Cow::Borrowed(value);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            match (
                value.get(i + 1).and_then(|b| hex(*b)),
                value.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => return Cow::Borrowed(value),
            }
        }
        out.push(value[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// A bearer credential in the session token's shape (`token.sig`), not a JWT (three parts).
pub(crate) fn looks_like_session_token(credential: &str) -> bool {
    credential.bytes().filter(|b| *b == b'.').count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-0123456789abcdef0123456789abcdef";
    // Captured from better-auth 1.7.25 (shared/fixtures/better-auth-1.7.25.json).
    const COOKIE: &str =
        "ImCbbi1vGZ3OhmafYOXQwECdfRWD6fIt.UXDTY3VbQo1uVcoEHsZ%2FY2dU8%2BIwXLSVe1OH5GZW4Lk%3D";
    const DECODED: &str =
        "ImCbbi1vGZ3OhmafYOXQwECdfRWD6fIt.UXDTY3VbQo1uVcoEHsZ/Y2dU8+IwXLSVe1OH5GZW4Lk=";

    fn verify(value: &[u8], secret: &[u8]) -> Result<SignedToken, &'static str> {
        TokenVerifier::new(secret).unwrap().verify(value)
    }

    #[test]
    fn verifies_the_captured_cookie_encoded_and_raw() {
        let t = verify(COOKIE.as_bytes(), SECRET).unwrap();
        assert_eq!(t.token(), "ImCbbi1vGZ3OhmafYOXQwECdfRWD6fIt");
        assert_eq!(t.signed(), DECODED);
        assert_eq!(verify(DECODED.as_bytes(), SECRET).unwrap(), t);
        assert_eq!(cookie_encode(DECODED), COOKIE);
    }

    #[test]
    fn refuses_tampering_wrong_secret_and_bad_shapes() {
        let mut tampered = DECODED.to_string();
        tampered.replace_range(0..1, "J");
        assert_eq!(verify(tampered.as_bytes(), SECRET), Err("bad_signature"));
        assert_eq!(
            verify(
                DECODED.as_bytes(),
                b"another-secret-0123456789abcdef0123456"
            ),
            Err("bad_signature")
        );
        assert_eq!(
            verify(b"ImCbbi1vGZ3OhmafYOXQwECdfRWD6fIt", SECRET),
            Err("unsigned")
        );
        assert_eq!(
            verify(b".UXDTY3VbQo1uVcoEHsZ/Y2dU8+IwXLSVe1OH5GZW4Lk=", SECRET),
            Err("malformed")
        );
        assert_eq!(verify(b"abc.short=", SECRET), Err("malformed"));
        assert_eq!(verify(b"abc.%zz", SECRET), Err("malformed"));
    }

    #[test]
    fn tells_session_tokens_from_jwts() {
        assert!(looks_like_session_token(DECODED));
        assert!(!looks_like_session_token("eyJh.eyJz.c2ln"));
        assert!(!looks_like_session_token("rawtoken"));
    }
}
