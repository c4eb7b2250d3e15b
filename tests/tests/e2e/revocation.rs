//! Revocation across replicas: three gateways on one Redis in front of one real Better Auth
//! server; a session ended through one replica is refused by every replica, whether it is
//! checked with get-session (behind a cache) or from Better Auth's cookie cache.

use crate::support::*;
use std::time::{Duration, Instant};

/// A replica's config. `check`: how sessions are resolved (`session_endpoint` with a 30 s
/// cache, a cookie cache strategy alone, or `compact+session`: the compact cookie cache with
/// get-session behind it).
fn replica(ba: &str, redis: &str, up: std::net::SocketAddr, check: &str, secure: bool) -> String {
    let endpoint =
        format!("session_endpoint: {{ url: \"{ba}/api/auth/get-session\", cache_ttl: 30s }}");
    let check = match check {
        "session" => endpoint,
        "compact+session" => format!("cookie_cache: {{ strategy: compact }}, {endpoint}"),
        strategy => format!("cookie_cache: {{ strategy: {strategy} }}"),
    };
    let ba_addr = ba.trim_start_matches("http://");
    format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
admin:
  address: 127.0.0.1:{{admin}}
  token_env: TEST_ADMIN_TOKEN
access_log: {{ enabled: false }}
redis:
  url: {redis}
upstreams:
  auth: {{ members: [ {{ address: {ba_addr} }} ] }}
  api: {{ members: [ {{ address: {up} }} ] }}
routes:
  - name: auth
    match: {{ prefix: /api/auth }}
    upstream: auth
    auth: {{ required: false, invalid_credentials: anonymous, forward_credentials: true }}
    plugins: [ &session {{ better_auth: {{ secret_env: TEST_BA_SECRET, secure_cookies: {secure}, {check} }} }} ]
  - name: jwt
    match: {{ prefix: /jwt }}
    upstream: api
    plugins: [ {{ jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: TEST_JWT_SECRET }} ] }} }} ]
  - name: api
    match: {{ prefix: / }}
    upstream: api
    plugins: [ *session ]
"#
    )
}

const ADMIN_TOKEN: &str = "revocation-test-admin-token";
const JWT_SECRET: &str = "revocation-test-jwt-secret-0123456789abcdef";

async fn start_replica(yaml: &str) -> Gateway {
    GatewayBuilder::new(yaml)
        .env("TEST_BA_SECRET", BETTER_AUTH_SECRET)
        .env("TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TEST_JWT_SECRET", JWT_SECRET)
        .start()
        .await
}

async fn status(c: &reqwest::Client, gw: &Gateway, cookie: &str) -> u16 {
    c.get(gw.url("/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until `gw` refuses `cookie` (401); how long that took.
async fn wait_refused(c: &reqwest::Client, gw: &Gateway, cookie: &str) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(c, gw, cookie).await;
        if s == 401 {
            return start.elapsed();
        }
        assert_eq!(s, 200, "neither accepted nor refused");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepted 5 s after the revocation"
        );
        tokio::task::yield_now().await;
    }
}

/// POSTs a Better Auth endpoint through `gw` as a browser of the auth service's origin.
async fn post_auth(
    c: &reqwest::Client,
    gw: &Gateway,
    origin: &str,
    endpoint: &str,
    cookie: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    let r = c
        .post(gw.url(&format!("/api/auth/{endpoint}")))
        .header("cookie", cookie)
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{endpoint}");
    r
}

#[tokio::test]
async fn a_sign_out_through_one_replica_is_refused_by_every_replica() {
    let up = Witness::start("api").await.unwrap();
    for check in ["session", "compact", "jwt", "jwe"] {
        let public_url = (check == "jwe").then_some("https://auth.example.test");
        let mut env = Vec::new();
        if check != "session" {
            env.push(("COOKIE_CACHE", check));
        }
        env.extend(public_url.map(|u| ("BETTER_AUTH_URL", u)));
        let ba = BetterAuth::start(&env).await;
        let origin = public_url.unwrap_or(&ba.url).to_string();
        let mut redis = RedisServer::start().await;
        let yaml = replica(&ba.url, &redis.url(), up.addr, check, public_url.is_some());
        let a = start_replica(&yaml).await;
        let b = start_replica(&yaml).await;
        let c_ = start_replica(&yaml).await;
        let c = reqwest::Client::new();

        let user = ba
            .sign_up(&a.url(""), &format!("{check}@example.com"))
            .await;
        let cookie = user.cookie_header();
        for gw in [&a, &b, &c_] {
            assert_eq!(
                status(&c, gw, &cookie).await,
                200,
                "{check}: before sign-out"
            );
        }
        post_auth(&c, &a, &origin, "sign-out", &cookie, serde_json::json!({})).await;
        // The replica that saw it refuses at once; the others as soon as Redis tells them.
        assert_eq!(status(&c, &a, &cookie).await, 401, "{check}: at A");
        for (name, gw) in [("B", &b), ("C", &c_)] {
            let took = wait_refused(&c, gw, &cookie).await;
            eprintln!("{check}: refused at {name} {took:?} after the sign-out answer");
            assert!(
                took < Duration::from_secs(1),
                "{check}: {name} took {took:?}"
            );
        }
        let r = c
            .get(b.url("/me"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_error(r, 401, "unauthorized").await;
        // A replica started after the sign-out reads it from Redis.
        let d = start_replica(&yaml).await;
        wait_refused(&c, &d, &cookie).await;
        assert!(gw_metric(&a, "portico_revocations_total{source=\"edge\"} 1").await);
        assert!(gw_metric(&b, "portico_revocations_total{source=\"peer\"} 1").await);
        assert!(
            gw_metric(
                &b,
                "portico_auth_failures_total{reason=\"revoked\",route=\"api\"}"
            )
            .await
        );

        // Redis down: the replica that sees the sign-out still refuses the session.
        let again = ba
            .sign_in(&a.url(""), &format!("{check}@example.com"))
            .await;
        let cookie = again.cookie_header();
        assert_eq!(
            status(&c, &a, &cookie).await,
            200,
            "{check}: signed in again"
        );
        redis.stop();
        post_auth(&c, &a, &origin, "sign-out", &cookie, serde_json::json!({})).await;
        assert_eq!(
            status(&c, &a, &cookie).await,
            401,
            "{check}: Redis down, at A"
        );
    }
}

async fn gw_metric(gw: &Gateway, line: &str) -> bool {
    gw.metrics().await.contains(line)
}

fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn other_sessions_end_alone_and_the_admin_ends_a_users_sessions_and_tokens() {
    let up = Witness::start("api").await.unwrap();
    let ba = BetterAuth::start(&[("COOKIE_CACHE", "compact")]).await;
    let redis = RedisServer::start().await;
    let yaml = replica(&ba.url, &redis.url(), up.addr, "session", false);
    let a = start_replica(&yaml).await;
    let b = start_replica(&yaml).await;
    let c = reqwest::Client::new();

    let first = ba.sign_up(&a.url(""), "bob@example.com").await;
    let second = ba.sign_in(&a.url(""), "bob@example.com").await;
    let (one, two) = (first.cookie_header(), second.cookie_header());
    for cookie in [&one, &two] {
        assert_eq!(status(&c, &b, cookie).await, 200);
    }
    // revoke-other-sessions from the first session ends the second only.
    post_auth(
        &c,
        &a,
        &ba.url,
        "revoke-other-sessions",
        &one,
        serde_json::json!({}),
    )
    .await;
    wait_refused(&c, &b, &two).await;
    assert_eq!(
        status(&c, &b, &one).await,
        200,
        "the session that asked goes on"
    );

    // JWTs: one of a user the admin revokes, another the admin revokes by jti.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = hs256(serde_json::json!({"sub": "dave", "iat": now - 5, "exp": now + 600}));
    let other =
        hs256(serde_json::json!({"sub": "carol", "jti": "t-1", "iat": now, "exp": now + 600}));
    let jwt = |gw: &Gateway, t: &str| {
        c.get(gw.url("/jwt/me"))
            .header("authorization", format!("Bearer {t}"))
            .send()
    };
    for t in [&token, &other] {
        let r = jwt(&b, t).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    // Without the admin token: refused.
    let r = c
        .post(a.admin("/revocations"))
        .json(&serde_json::json!({"user_id": first.user_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for body in [
        serde_json::json!({"user_id": first.user_id}),
        serde_json::json!({"user_id": "dave", "retain": "1h"}),
        serde_json::json!({"jti": "t-1"}),
    ] {
        let r = c
            .post(a.admin("/revocations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body}");
    }
    let r = c
        .post(a.admin("/revocations"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"user_id": "x", "jti": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"]["code"], "bad_request");
    // Every session and token of the user, at the other replica too.
    wait_refused(&c, &b, &one).await;
    let refused = async {
        while jwt(&b, &token).await.unwrap().status() != 401
            || jwt(&b, &other).await.unwrap().status() != 401
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("the revoked tokens still pass at B");
    // A session started after the revocation is not touched.
    let third = ba.sign_in(&a.url(""), "bob@example.com").await;
    assert_eq!(status(&c, &b, &third.cookie_header()).await, 200);
    assert!(gw_metric(&a, "portico_revocations_total{source=\"admin\"} 3").await);
}

#[tokio::test]
async fn while_redis_is_away_other_replicas_ask_the_auth_service_instead_of_the_cookie_cache() {
    let up = Witness::start("api").await.unwrap();
    let ba = BetterAuth::start(&[("COOKIE_CACHE", "compact")]).await;
    let mut redis = RedisServer::start().await;
    let yaml = replica(&ba.url, &redis.url(), up.addr, "compact+session", false);
    let a = start_replica(&yaml).await;
    let b = start_replica(&yaml).await;
    let c = reqwest::Client::new();
    let user = ba.sign_up(&a.url(""), "carol@example.com").await;
    let cookie = user.cookie_header();
    assert_eq!(status(&c, &b, &cookie).await, 200);
    // Redis goes away: the sign-out through A cannot reach B.
    redis.stop();
    post_auth(&c, &a, &ba.url, "sign-out", &cookie, serde_json::json!({})).await;
    assert_eq!(
        status(&c, &a, &cookie).await,
        401,
        "the replica that saw it"
    );
    // B no longer trusts the cookie cache alone: it asks Better Auth, which ended the session.
    wait_refused(&c, &b, &cookie).await;
}
