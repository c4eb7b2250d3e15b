use crate::support::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const ISS: &str = "http://auth.test";
const AUD: &str = "portico-tests";

struct Signer {
    key: EncodingKey,
    public_raw: Vec<u8>,
}

fn ed25519() -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        key: EncodingKey::from_ed_der(&pair.serialize_der()),
        public_raw: pair.public_key_raw().to_vec(),
    }
}

fn jwks(s: &Signer, kid: &str) -> String {
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&s.public_raw);
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(s: &Signer, kid: &str, claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "exp": now() + 600, "iat": now(), "email": format!("{sub}@example.com"), "roles": ["reader"]})
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn eddsa_via_jwks_sets_identity_and_refuses_bad_tokens() {
    let signer = ed25519();
    let keys = Witness::start("jwks").await.unwrap();
    keys.serve_json("/jwks", &jwks(&signer, "k1"));
    let up = Witness::start("api").await.unwrap();
    let provider = format!(
        "{{ name: auth, algorithms: [EdDSA], jwks_url: \"http://{}/jwks\", jwks_refresh: 1s, issuer: \"{ISS}\", audiences: [\"{AUD}\"] }}",
        keys.addr
    );
    let yaml = api_config(
        up.addr,
        &format!(
            r#"  - name: api
    match: {{ prefix: /api }}
    upstream: api
    plugins:
      - jwt: {{ providers: [ {provider} ], roles_claim: roles, claims_to_headers: {{ email: X-User-Email }} }}
  - name: admin
    match: {{ prefix: /admin }}
    upstream: api
    auth: {{ roles: [admin] }}
    plugins:
      - jwt: {{ providers: [ {provider} ], roles_claim: roles }}
  - name: open
    match: {{ prefix: /open }}
    upstream: api
    auth: {{ required: false }}
    plugins:
      - jwt: {{ providers: [ {provider} ] }}
"#
        ),
    );
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();

    // A valid token: exactly one X-User-Id, the token's subject; spoofed copies are gone.
    let t = token(&signer, "k1", claims("user-42"));
    let r = c
        .get(gw.url("/api/me"))
        .bearer_auth(&t)
        .header("X-User-Id", "spoofed")
        .header("X-User-Email", "spoofed@evil")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec!["user-42"]);
    assert_eq!(seen.header_values("x-auth-method"), vec!["jwt"]);
    assert_eq!(seen.header_values("x-user-roles"), vec!["reader"]);
    assert_eq!(
        seen.header_values("x-user-email"),
        vec!["user-42@example.com"]
    );

    // Refusals: each a 401 with the JSON body and a Bearer challenge.
    let mut expired = claims("u");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = claims("u");
    wrong_iss["iss"] = json!("http://evil.test");
    let mut wrong_aud = claims("u");
    wrong_aud["aud"] = json!("someone-else");
    let good = token(&signer, "k1", claims("u"));
    let (head, rest) = good.split_once('.').unwrap();
    let (body, sig) = rest.split_once('.').unwrap();
    let mut forged_claims = claims("admin");
    forged_claims["roles"] = json!(["admin"]);
    let tampered = format!("{head}.{}.{sig}", b64(&forged_claims));
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), body);
    // HS256 "signed" with the public key: the classic algorithm-confusion attack.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("u"),
        &EncodingKey::from_secret(&signer.public_raw),
    )
    .unwrap();
    let other_signer = ed25519();
    let wrong_key = token(&other_signer, "k1", claims("u"));
    let cases = [
        ("none", None),
        ("expired", Some(token(&signer, "k1", expired))),
        ("wrong issuer", Some(token(&signer, "k1", wrong_iss))),
        ("wrong audience", Some(token(&signer, "k1", wrong_aud))),
        ("tampered", Some(tampered)),
        ("alg none", Some(alg_none)),
        ("HS256 with the public key", Some(confused)),
        ("another key", Some(wrong_key)),
        ("garbage", Some("not.a.jwt".into())),
    ];
    for (what, tok) in cases {
        let mut rb = c.get(gw.url("/api/me"));
        if let Some(t) = tok {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(
            r.headers()
                .get("www-authenticate")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
        assert_error(r, 401, "unauthorized").await;
    }

    // Roles: 403 without the required one.
    let r = c
        .get(gw.url("/admin"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;
    let mut admin = claims("boss");
    admin["roles"] = json!(["admin", "reader"]);
    let r = c
        .get(gw.url("/admin"))
        .bearer_auth(token(&signer, "k1", admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Optional auth: anonymous passes without identity, spoofs still stripped.
    let r = c
        .get(gw.url("/open"))
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up
        .seen()
        .pop()
        .unwrap()
        .header_values("x-user-id")
        .is_empty());

    // Key rotation: a token with an unknown kid makes the gateway refetch the JWKS
    // (at most once per 2 s).
    let rotated = ed25519();
    let both = format!(
        "{{\"keys\": [{}, {}]}}",
        &jwks(&signer, "k1")[9..jwks(&signer, "k1").len() - 2],
        &jwks(&rotated, "k2")[9..jwks(&rotated, "k2").len() - 2]
    );
    keys.serve_json("/jwks", &both);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = c
        .get(gw.url("/api/me"))
        .bearer_auth(token(&rotated, "k2", claims("rotated")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a rotated key was not picked up");

    // The JWKS endpoint goes away: refreshes fail, the last good keys keep verifying.
    keys.stop();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let _ = c
        .get(gw.url("/api/me"))
        .bearer_auth(token(&signer, "k1", claims("trigger-refresh")))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fresh = token(&signer, "k1", claims("user-after-outage"));
    let r = c
        .get(gw.url("/api/me"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.seen().pop().unwrap().header_values("x-user-id"),
        vec!["user-after-outage"]
    );

    let metrics = gw.metrics().await;
    assert_metric(
        &metrics,
        "portico_auth_failures_total{reason=\"expired\",route=\"api\"} 1",
    );
    assert_metric(
        &metrics,
        "portico_auth_failures_total{reason=\"missing_role\",route=\"admin\"} 1",
    );
}

#[tokio::test]
async fn hs256_with_a_secret_from_the_environment() {
    let up = Witness::start("api").await.unwrap();
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  api: {{ members: [ {{ address: {} }} ] }}
routes:
  - name: api
    match: {{ prefix: / }}
    upstream: api
    plugins:
      - jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: TEST_JWT_SECRET }} ], sources: ["cookie:session", bearer] }}
"#,
        up.addr
    );
    let gw = GatewayBuilder::new(&yaml)
        .env("TEST_JWT_SECRET", secret)
        .start()
        .await;
    let c = reqwest::Client::new();
    let claims = json!({"sub": "svc-7", "exp": now() + 60});
    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let bad = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
    )
    .unwrap();
    let r = c
        .get(gw.url("/"))
        .header("cookie", format!("other=1; session={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.seen().pop().unwrap().header_values("x-user-id"),
        vec!["svc-7"]
    );
    let r = c.get(gw.url("/")).bearer_auth(&bad).send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
}
