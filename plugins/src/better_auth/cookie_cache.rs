//! The `session_data` cookie cache: Better Auth's signed (compact, jwt), encrypted (jwe) or
//! JWKS-signed copy of the session, checked here without calling the auth service.
//! Each strategy's parser below states the format it reads (Better Auth 1.7's `cookieCache`);
//! `tests/fixtures/better-auth-1.7.25.json` holds cookies captured from a real server.

use crate::jwt::keys::Jwks;
use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use std::sync::Arc;

/// Better Auth's clock tolerance for the JWE cache (`crypto/jwt.ts`).
const JWE_LEEWAY_MS: u64 = 15_000;
const JWKS_CACHE_TYPE: &str = "better-auth.session-cache+jwt";
const JWKS_CACHE_AUDIENCE: &str = "better-auth:session-cache";

/// A session read from a valid cookie cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSession {
    /// The session token it belongs to (must match the session_token cookie).
    pub token: String,
    pub user: Value,
    /// The session object (`id`, `createdAt`, …).
    pub session: Value,
    /// When this copy stops being valid: the cache's expiry or the session's, the earlier.
    pub valid_until_ms: u64,
}

/// Checks one strategy of cookie cache.
pub struct Verifier(Kind);

enum Kind {
    Compact {
        secret: Vec<u8>,
    },
    Jwt {
        key: DecodingKey,
    },
    Jwe {
        key: [u8; 64],
        kid: String,
    },
    Jwks {
        jwks: Arc<Jwks>,
        issuer: Option<String>,
    },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.0 {
            Kind::Compact { .. } => "compact",
            Kind::Jwt { .. } => "jwt",
            Kind::Jwe { .. } => "jwe",
            Kind::Jwks { .. } => "jwks",
        };
        f.write_str(name)
    }
}

impl Verifier {
    pub fn compact(secret: &[u8]) -> Verifier {
        Verifier(Kind::Compact {
            secret: secret.to_vec(),
        })
    }

    pub fn jwt(secret: &[u8]) -> Verifier {
        Verifier(Kind::Jwt {
            key: DecodingKey::from_secret(secret),
        })
    }

    /// The JWE key: HKDF-SHA256 of the secret, and its RFC 7638 thumbprint as `kid`.
    pub fn jwe(secret: &[u8]) -> Verifier {
        let mut key = [0u8; 64];
        let hkdf = Hkdf::<Sha256>::new(Some(b"better-auth-session"), secret);
        // 64 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = hkdf.expand(b"BetterAuth.js Generated Encryption Key", &mut key);
        let jwk = format!(r#"{{"k":"{}","kty":"oct"}}"#, B64URL.encode(key));
        let kid = B64URL.encode(Sha256::digest(jwk.as_bytes()));
        Verifier(Kind::Jwe { key, kid })
    }

    pub(crate) fn jwks(jwks: Arc<Jwks>, issuer: Option<String>) -> Verifier {
        Verifier(Kind::Jwks { jwks, issuer })
    }

    /// The session in `cookie` (chunks already joined), if it is authentic and current.
    pub async fn verify(
        &self,
        cookie: &str,
        version: &str,
        now_ms: u64,
    ) -> Result<CachedSession, &'static str> {
        match &self.0 {
            Kind::Compact { secret } => compact(cookie, secret, version, now_ms),
            Kind::Jwt { key } => {
                let claims = decode_jws(cookie, key, Algorithm::HS256)?;
                session_claims(&claims, version, now_ms, 0)
            }
            Kind::Jwe { key, kid } => {
                let claims = decrypt_jwe(cookie, key, kid)?;
                session_claims(&claims, version, now_ms, JWE_LEEWAY_MS)
            }
            Kind::Jwks { jwks, issuer } => {
                let claims = self.jwks_claims(cookie, jwks, issuer.as_deref()).await?;
                let session = session_claims(&claims, version, now_ms, 0)?;
                if claims.get("sid").and_then(Value::as_str) != Some(session.token.as_str()) {
                    return Err("invalid_session_data");
                }
                Ok(session)
            }
        }
    }

    async fn jwks_claims(
        &self,
        cookie: &str,
        jwks: &Arc<Jwks>,
        issuer: Option<&str>,
    ) -> Result<Value, &'static str> {
        let header = jsonwebtoken::decode_header(cookie).map_err(|_| "malformed")?;
        if header.typ.as_deref() != Some(JWKS_CACHE_TYPE) {
            return Err("invalid_session_data");
        }
        let mut keys = jwks.keys().await;
        if let Some(kid) = &header.kid {
            if !keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                && jwks.refetch_for_unknown_kid(kid).await
            {
                keys = jwks.keys().await;
            }
        }
        let key = keys
            .iter()
            .find(|k| {
                (header.kid.is_none() || k.kid == header.kid)
                    && k.algorithm.is_none_or(|a| a == header.alg)
            })
            .ok_or("unknown_key")?;
        jwks_signed(cookie, &key.key, header.alg, issuer)
    }
}

/// The claims of a JWKS-signed cache once the key is known.
fn jwks_signed(
    cookie: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: Option<&str>,
) -> Result<Value, &'static str> {
    if !matches!(
        alg,
        Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::PS256
    ) {
        return Err("wrong_algorithm");
    }
    let claims = decode_jws(cookie, key, alg)?;
    if claims.get("aud").and_then(Value::as_str) != Some(JWKS_CACHE_AUDIENCE) {
        return Err("wrong_audience");
    }
    if let Some(iss) = issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(iss) {
            return Err("wrong_issuer");
        }
    }
    Ok(claims)
}

/// Signature only: expiry is checked by [`session_claims`] against the caller's clock.
fn decode_jws(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, &'static str> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad_signature",
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "wrong_algorithm",
            _ => "malformed",
        })
}

/// The claims of the jwt, jwe and jwks strategies: `{session, user, version, exp, …}`.
fn session_claims(
    claims: &Value,
    version: &str,
    now_ms: u64,
    leeway_ms: u64,
) -> Result<CachedSession, &'static str> {
    let exp_ms = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or("invalid_session_data")?
        .saturating_mul(1000);
    if exp_ms + leeway_ms <= now_ms {
        return Err("session_data_expired");
    }
    session_of(
        claims.get("session"),
        claims.get("user"),
        claims,
        version,
        exp_ms,
        now_ms,
    )
}

fn session_of(
    session: Option<&Value>,
    user: Option<&Value>,
    envelope: &Value,
    version: &str,
    cache_exp_ms: u64,
    now_ms: u64,
) -> Result<CachedSession, &'static str> {
    if envelope.get("version").and_then(Value::as_str) != Some(version) {
        return Err("session_data_version");
    }
    let session = session.ok_or("invalid_session_data")?;
    let user = user
        .filter(|u| u.is_object())
        .ok_or("invalid_session_data")?;
    let token = session
        .get("token")
        .and_then(Value::as_str)
        .ok_or("invalid_session_data")?;
    let session_exp_ms = session
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(parse_iso_ms)
        .ok_or("invalid_session_data")?;
    if session_exp_ms <= now_ms {
        return Err("expired");
    }
    Ok(CachedSession {
        token: token.to_string(),
        user: user.clone(),
        session: session.clone(),
        valid_until_ms: cache_exp_ms.min(session_exp_ms),
    })
}

/// An ISO 8601 instant as JavaScript's `toISOString` writes it, in ms since the epoch.
pub(crate) fn parse_iso_ms(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    crate::clock::unix_ms_of(t)
}

/// The compact strategy: base64url JSON `{"session":S,"expiresAt":N,"signature":"SIG"}`
/// where SIG signs the JSON text of S with `"expiresAt":N` appended. The signed bytes are
/// rebuilt from the raw text, never re-serialised (JSON formatting differs between JS and
/// serde).
fn compact(
    cookie: &str,
    secret: &[u8],
    version: &str,
    now_ms: u64,
) -> Result<CachedSession, &'static str> {
    let raw = B64URL
        .decode(cookie.trim_end_matches('='))
        .map_err(|_| "malformed")?;
    let text = std::str::from_utf8(&raw).map_err(|_| "malformed")?;
    const HEAD: &str = "{\"session\":";
    const MARK: &str = ",\"expiresAt\":";
    let body = text.strip_prefix(HEAD).ok_or("malformed")?;
    let at = body.rfind(MARK).ok_or("malformed")?;
    let (signed_session, tail) = (&body[..at], &body[at + MARK.len()..]);
    let tail = tail.strip_suffix("\"}").ok_or("malformed")?;
    let (expires, signature) = tail.split_once(",\"signature\":\"").ok_or("malformed")?;
    let expires_ms: u64 = expires.parse().map_err(|_| "malformed")?;
    let inner = signed_session.strip_suffix('}').ok_or("malformed")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "malformed")?;
    mac.update(inner.as_bytes());
    mac.update(MARK.as_bytes());
    mac.update(expires.as_bytes());
    mac.update(b"}");
    let sig = B64URL.decode(signature).map_err(|_| "malformed")?;
    mac.verify_slice(&sig).map_err(|_| "bad_signature")?;
    if expires_ms <= now_ms {
        return Err("session_data_expired");
    }
    let payload: Value = serde_json::from_str(signed_session).map_err(|_| "malformed")?;
    session_of(
        payload.get("session"),
        payload.get("user"),
        &payload,
        version,
        expires_ms,
        now_ms,
    )
}

/// Compact JWE, `dir` + A256CBC-HS512 (RFC 7518 §5.2): MAC key = key[..32], AES key =
/// key[32..], tag = HMAC-SHA512(aad ‖ iv ‖ ciphertext ‖ aad bit length)[..32].
fn decrypt_jwe(cookie: &str, key: &[u8; 64], kid: &str) -> Result<Value, &'static str> {
    let mut parts = cookie.split('.');
    let (Some(protected), Some(""), Some(iv), Some(ct), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("malformed");
    };
    let header: Value = serde_json::from_slice(&B64URL.decode(protected).map_err(|_| "malformed")?)
        .map_err(|_| "malformed")?;
    if header.get("alg").and_then(Value::as_str) != Some("dir")
        || header.get("enc").and_then(Value::as_str) != Some("A256CBC-HS512")
    {
        return Err("wrong_algorithm");
    }
    if header
        .get("kid")
        .and_then(Value::as_str)
        .is_some_and(|k| k != kid)
    {
        return Err("unknown_key");
    }
    let decode = |s: &str| B64URL.decode(s).map_err(|_| "malformed");
    let (iv, ct, tag) = (decode(iv)?, decode(ct)?, decode(tag)?);
    let mut mac = Hmac::<Sha512>::new_from_slice(&key[..32]).map_err(|_| "malformed")?;
    mac.update(protected.as_bytes());
    mac.update(&iv);
    mac.update(&ct);
    mac.update(&((protected.len() as u64) * 8).to_be_bytes());
    if tag.len() != 32 {
        return Err("bad_signature");
    }
    mac.verify_truncated_left(&tag)
        .map_err(|_| "bad_signature")?;
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key[32..], &iv)
        .map_err(|_| "malformed")?
        .decrypt_padded_vec_mut::<Pkcs7>(&ct)
        .map_err(|_| "malformed")?;
    serde_json::from_slice(&plain).map_err(|_| "malformed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Value {
        let text = include_str!("../../../tests/fixtures/better-auth-1.7.25.json");
        serde_json::from_str(text).unwrap()
    }

    fn field<'a>(v: &'a Value, path: &[&str]) -> &'a str {
        path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap()
    }

    /// The fixture's caches were captured on 2026-11-21 with a 300 s max age.
    const CAPTURED_MS: u64 = 1_795_300_800_000 - 60_000;

    #[tokio::test]
    async fn compact_cache_from_better_auth_verifies() {
        let f = fixture();
        let secret = field(&f, &["compact_cookie_cache", "secret"]).as_bytes();
        let cookie = field(&f, &["compact_cookie_cache", "session_data"]);
        let v = Verifier::compact(secret);
        let s = v.verify(cookie, "1", CAPTURED_MS).await.unwrap();
        assert_eq!(s.token, "YF6Pm8pW5yPDX8xXA12y5ALU5pcqdj3r");
        assert_eq!(s.user["id"], "MyoqAxMaKfnI4HikwtdU9zb7uDhnD9XH");
        assert_eq!(s.valid_until_ms, 1_795_301_057_449);
        // Expired, wrong version, wrong secret, tampered.
        assert_eq!(
            v.verify(cookie, "1", 1_795_301_057_449).await,
            Err("session_data_expired")
        );
        assert_eq!(
            v.verify(cookie, "2", CAPTURED_MS).await,
            Err("session_data_version")
        );
        let other = Verifier::compact(b"another-secret-0123456789abcdef01234567");
        assert_eq!(
            other.verify(cookie, "1", CAPTURED_MS).await,
            Err("bad_signature")
        );
        let text = String::from_utf8(B64URL.decode(cookie).unwrap()).unwrap();
        let forged = B64URL.encode(text.replace("\"Bob\"", "\"Eve\""));
        assert_eq!(
            v.verify(&forged, "1", CAPTURED_MS).await,
            Err("bad_signature")
        );
    }

    #[tokio::test]
    async fn jwt_cache_from_better_auth_verifies() {
        let f = fixture();
        let secret = field(&f, &["jwt_cookie_cache", "secret"]).as_bytes();
        let cookie = field(&f, &["jwt_cookie_cache", "session_data"]);
        let s = Verifier::jwt(secret)
            .verify(cookie, "1", CAPTURED_MS)
            .await
            .unwrap();
        assert_eq!(s.token, "UibHxHl4bskAebq4yQ79iRBHFsbRMfGi");
        assert_eq!(s.user["id"], "EfKKrDJBTIf4jynFSSFWEwchkbxzb51M");
        assert_eq!(s.valid_until_ms, 1_795_301_075_000);
        assert_eq!(
            Verifier::jwt(secret)
                .verify(cookie, "1", 1_795_301_075_000)
                .await,
            Err("session_data_expired")
        );
        assert_eq!(
            Verifier::jwt(b"another-secret-0123456789abcdef01234567")
                .verify(cookie, "1", CAPTURED_MS)
                .await,
            Err("bad_signature")
        );
    }

    #[tokio::test]
    async fn jwe_cache_from_better_auth_decrypts() {
        let f = fixture();
        let secret = field(&f, &["jwe_cookie_cache", "secret"]).as_bytes();
        let cookie = field(&f, &["jwe_cookie_cache", "session_data"]);
        let v = Verifier::jwe(secret);
        let Kind::Jwe { kid, .. } = &v.0 else {
            unreachable!()
        };
        // Better Auth put this kid in the header.
        assert_eq!(kid, "5-8BBRSfqHX2CBPeARhc7_yyYNaPVaD3zyMAzufROh0");
        let s = v.verify(cookie, "1", CAPTURED_MS).await.unwrap();
        assert_eq!(s.token, "ZYw8zturxRBUo9oBfE41w0h7c4RG3XU0");
        assert_eq!(s.user["id"], "OpE2JJeJuGxJXCcfK1rOQfYs1N05K10r");
        let mut parts: Vec<String> = cookie.split('.').map(str::to_string).collect();
        let mut ct = B64URL.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = B64URL.encode(ct);
        assert_eq!(
            v.verify(&parts.join("."), "1", CAPTURED_MS).await,
            Err("bad_signature")
        );
        let other = Verifier::jwe(b"another-secret-0123456789abcdef01234567");
        assert_eq!(
            other.verify(cookie, "1", CAPTURED_MS).await,
            Err("unknown_key")
        );
    }

    #[test]
    fn jwks_signed_cache_from_better_auth_verifies() {
        let f = fixture();
        let c = &f["jwks_signed_cookie_cache"];
        let cookie = c["session_data"].as_str().unwrap();
        let x = c["jwks"]["keys"][0]["x"].as_str().unwrap();
        let key = DecodingKey::from_ed_components(x).unwrap();
        let iss = c["iss"].as_str().unwrap();
        let claims = jwks_signed(cookie, &key, Algorithm::EdDSA, Some(iss)).unwrap();
        let s = session_claims(&claims, "1", CAPTURED_MS, 0).unwrap();
        assert_eq!(claims["sid"].as_str(), Some(s.token.as_str()));
        assert_eq!(s.user["id"], claims["sub"]);
        assert_eq!(
            jwks_signed(cookie, &key, Algorithm::EdDSA, Some("http://elsewhere")),
            Err("wrong_issuer")
        );
        let other =
            DecodingKey::from_ed_components(f["jwks"]["keys"][0]["x"].as_str().unwrap()).unwrap();
        assert_eq!(
            jwks_signed(cookie, &other, Algorithm::EdDSA, Some(iss)),
            Err("bad_signature")
        );
    }

    #[test]
    fn parses_javascript_iso_dates() {
        assert_eq!(
            parse_iso_ms("2026-11-28T22:39:17.446Z"),
            Some(1_795_905_557_446)
        );
        assert_eq!(parse_iso_ms("yesterday"), None);
    }
}
