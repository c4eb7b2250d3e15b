//! Better Auth sessions end to end: a real Better Auth server (Node), the real gateway, a
//! witness upstream that shows exactly which identity headers arrived.

use crate::support::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `token.sig` as Better Auth signs it, URL-encoded as in its cookie.
fn sign(token: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(BETTER_AUTH_SECRET.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "{token}.{}",
        sig.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    )
}

/// The gateway on `yaml`, with the Better Auth secret in `TEST_BA_SECRET`.
/// GET `url` with a `Cookie` header.
async fn get_with_cookie(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    cookie: impl AsRef<str>,
) -> reqwest::Response {
    c.get(url)
        .header("cookie", cookie.as_ref())
        .send()
        .await
        .unwrap()
}

async fn gateway(yaml: &str) -> Gateway {
    GatewayBuilder::new(yaml)
        .env("TEST_BA_SECRET", BETTER_AUTH_SECRET)
        .start()
        .await
}

/// `n` concurrent GETs of `url` with `cookie`: their statuses.
async fn concurrent_gets(
    c: &reqwest::Client,
    url: &str,
    cookie: &str,
    n: usize,
) -> Vec<reqwest::StatusCode> {
    let requests = (0..n).map(|_| c.get(url).header("cookie", cookie).send());
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect()
}

/// GET requests the gateway's `auth` route has served (the get-session lookups among them).
async fn auth_gets(gw: &Gateway) -> u64 {
    gw.metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("portico_requests_total{")
                && l.contains("route=\"auth\"")
                && l.contains("method=\"GET\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn sessions_and_jwts_from_a_real_better_auth() {
    let ba = BetterAuth::start(&[]).await;
    let up = Witness::start("api").await.unwrap();
    let ba_addr = ba.url.trim_start_matches("http://");
    // get-session goes through the gateway's own `auth` route, so its metrics count lookups.
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  auth: {{ members: [ {{ address: {ba_addr} }} ] }}
  api: {{ members: [ {{ address: {up} }} ] }}
routes:
  - name: auth
    match: {{ prefix: /api/auth }}
    upstream: auth
  - name: admin
    match: {{ prefix: /api/admin }}
    upstream: api
    auth: {{ roles: [admin] }}
    plugins:
      - &session
        better_auth:
          secret_env: TEST_BA_SECRET
          session_endpoint: {{ url: "http://127.0.0.1:{{port}}/api/auth/get-session", cache_ttl: 2s, negative_cache_ttl: 1s }}
          user_to_headers: {{ email: X-User-Email }}
  - name: public
    match: {{ prefix: /public }}
    upstream: api
    auth: {{ required: false, invalid_credentials: anonymous, forward_credentials: true }}
    plugins: [ *session ]
  - name: api
    match: {{ prefix: /api }}
    upstream: api
    plugins:
      - *session
      - jwt: {{ providers: [ {{ algorithms: [EdDSA], jwks_url: "{ba}/api/auth/jwks", issuer: "{ba}", audiences: ["{ba}"] }} ] }}
"#,
        ba = ba.url,
        up = up.addr
    );
    let gw = gateway(&yaml).await;
    let c = reqwest::Client::new();

    // Sign up and in through the gateway: the auth service's answers pass untouched.
    let first = ba.sign_up(&gw.url(""), "alice@example.com").await;
    let alice = ba.sign_in(&gw.url(""), "alice@example.com").await;
    assert_eq!(alice.user_id, first.user_id);
    assert_ne!(alice.token, first.token);
    let session_cookie = format!(
        "better-auth.session_token={}",
        alice.cookie("better-auth.session_token")
    );
    assert_eq!(alice.cookie("session_token"), sign(&alice.token));

    // The cookie: exactly one X-User-Id, the user's id; every spoofed copy is gone.
    let r = c
        .get(gw.url("/api/me"))
        .header("cookie", format!("theme=dark; {session_cookie}"))
        .header("X-User-Id", "spoofed")
        .header("x_user_id", "spoofed")
        .header("X-Auth-Method", "jwt")
        .header("X-User-Email", "spoofed@evil")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec![alice.user_id.clone()]);
    assert!(seen.header_values("x_user_id").is_empty());
    assert_eq!(seen.header_values("x-auth-method"), vec!["session"]);
    assert_eq!(
        seen.header_values("x-user-email"),
        vec!["alice@example.com"]
    );
    // The verified session cookie stays at the edge; other cookies pass.
    assert_eq!(seen.header_values("cookie"), vec!["theme=dark"]);
    // Unless the route forwards credentials.
    let r = get_with_cookie(&c, gw.url("/public/page"), &session_cookie).await;
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec![alice.user_id.clone()]);
    assert_eq!(seen.header_values("cookie"), vec![session_cookie.clone()]);

    // The bearer plugin's `set-auth-token`.
    let bearer = alice.bearer.clone().expect("set-auth-token");
    let r = c
        .get(gw.url("/api/me"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec![alice.user_id.clone()]);
    assert!(
        seen.header_values("authorization").is_empty(),
        "a verified bearer token stays at the edge"
    );

    // The JWT from /api/auth/token (EdDSA, verified with the JWKS).
    let r = get_with_cookie(&c, gw.url("/api/auth/token"), &session_cookie).await;
    let jwt = json(r).await["token"].as_str().unwrap().to_string();
    let r = c
        .get(gw.url("/api/me"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec![alice.user_id.clone()]);
    assert_eq!(seen.header_values("x-auth-method"), vec!["jwt"]);
    assert!(
        seen.header_values("authorization").is_empty(),
        "a verified JWT stays at the edge"
    );

    // Refusals: 401 with a challenge, and the upstream never sees them.
    let before = up.count();
    let mut tampered = alice.cookie("session_token");
    tampered.replace_range(0..1, if tampered.starts_with('A') { "B" } else { "A" });
    let cases = [
        ("no credentials", None),
        (
            "tampered cookie",
            Some(format!("better-auth.session_token={tampered}")),
        ),
        (
            "unsigned token",
            Some(format!("better-auth.session_token={}", alice.token)),
        ),
        (
            "signed, but no such session",
            Some(format!(
                "better-auth.session_token={}",
                sign("NoSuchSession0123456789abcdefghi")
            )),
        ),
        (
            "cookie under another name",
            Some(format!(
                "__Secure-better-auth.session_token={}",
                alice.cookie("session_token")
            )),
        ),
    ];
    for (what, cookie) in cases {
        let mut rb = c.get(gw.url("/api/me"));
        if let Some(cookie) = cookie {
            rb = rb.header("cookie", cookie);
        }
        let r = rb.send().await.unwrap();
        assert!(r.headers().contains_key("www-authenticate"), "{what}");
        assert_error(r, 401, "unauthorized").await;
    }
    assert_eq!(up.count(), before);

    // A public page: the identity when the cookie is good; anonymous (not 401) when it is not.
    for (cookie, user) in [
        (session_cookie.clone(), vec![alice.user_id.clone()]),
        (format!("better-auth.session_token={tampered}"), vec![]),
    ] {
        let r = c
            .get(gw.url("/public"))
            .header("cookie", cookie)
            .header("x-user-id", "spoofed")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.seen().pop().unwrap().header_values("x-user-id"), user);
    }

    // Roles: alice has none, the admin route needs `admin`.
    let r = get_with_cookie(&c, gw.url("/api/admin/x"), &session_cookie).await;
    assert_error(r, 403, "forbidden").await;

    // WebSocket upgrades are authenticated like any other request.
    let handshake = |cookie: Option<&str>| {
        format!(
            "GET /api/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{}\r\n",
            cookie
                .map(|c| format!("Cookie: {c}\r\n"))
                .unwrap_or_default()
        )
    };
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(handshake(None).as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(handshake(Some(&session_cookie)).as_bytes())
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping over the tunnel");
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.path, "/api/ws");
    assert_eq!(seen.header_values("x-user-id"), vec![alice.user_id.clone()]);

    // A fresh session, 20 concurrent requests: one get-session lookup between them all.
    let bob = ba.sign_up(&gw.url(""), "bob@example.com").await;
    let bob_cookie = format!("better-auth.session_token={}", bob.cookie("session_token"));
    let lookups_before = auth_gets(&gw).await;
    let statuses = concurrent_gets(&c, &gw.url("/api/me"), &bob_cookie, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        auth_gets(&gw).await - lookups_before,
        1,
        "lookups for one session"
    );

    // Sign-out through the gateway (Origin passes untouched: Better Auth checks it).
    let r = c
        .post(gw.url("/api/auth/sign-out"))
        .header("cookie", &bob_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "Better Auth wants an Origin on a cookie POST"
    );
    let r = c
        .post(gw.url("/api/auth/sign-out"))
        .header("cookie", &bob_cookie)
        .header("origin", &ba.url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["success"], true);
    // Revoked within the cache TTL (2 s).
    let signed_out = Instant::now();
    loop {
        let r = get_with_cookie(&c, gw.url("/api/me"), &bob_cookie).await;
        if r.status() == 401 {
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            signed_out.elapsed() < Duration::from_millis(2500),
            "still accepted {:?} after sign-out",
            signed_out.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let metrics = gw.metrics().await;
    assert_metric(
        &metrics,
        "portico_auth_failures_total{reason=\"bad_signature\",route=\"api\"} 1",
    );
    assert_metric(
        &metrics,
        "portico_auth_failures_total{reason=\"no_session\",route=\"api\"}",
    );
}

#[tokio::test]
async fn cookie_cache_strategies_are_verified_locally() {
    let up = Witness::start("api").await.unwrap();
    for strategy in ["compact", "jwt", "jwe", "jwks"] {
        // jwe as in production: an https baseURL, so `__Secure-` cookie names.
        let public_url = (strategy == "jwe").then_some("https://auth.example.test");
        let mut env = vec![("COOKIE_CACHE", strategy)];
        env.extend(public_url.map(|u| ("BETTER_AUTH_URL", u)));
        let ba = BetterAuth::start(&env).await;
        let user = ba
            .sign_up(&ba.url, &format!("{strategy}@example.com"))
            .await;
        let secure = public_url.is_some();
        let jwks = if strategy == "jwks" {
            format!(", jwks_url: \"{0}/api/auth/jwks\", issuer: \"{0}\"", ba.url)
        } else {
            String::new()
        };
        let yaml = api_config(
            up.addr,
            &format!(
                r#"  - name: api
    match: {{ prefix: / }}
    upstream: api
    plugins:
      - better_auth: {{ secret_env: TEST_BA_SECRET, secure_cookies: {secure}, cookie_cache: {{ strategy: {strategy}{jwks} }} }}
"#
            ),
        );
        let gw = gateway(&yaml).await;
        let c = reqwest::Client::new();
        let get = |cookie: String| c.get(gw.url("/me")).header("cookie", cookie).send();

        let r = get(user.cookie_header()).await.unwrap();
        assert_eq!(r.status(), 200, "{strategy}: {:?}", user.cookies);
        assert_eq!(
            up.seen().pop().unwrap().header_values("x-user-id"),
            vec![user.user_id.clone()],
            "{strategy}"
        );

        let token_name = if secure {
            "__Secure-better-auth.session_token"
        } else {
            "better-auth.session_token"
        };
        let data_name = token_name.replace("session_token", "session_data");
        let token = format!("{token_name}={}", user.cookie("session_token"));
        let data = user.cookie("session_data");
        // Without the cache cookie (and no session_endpoint) there is no user to name.
        let r = get(token.clone()).await.unwrap();
        assert_error(r, 401, "unauthorized").await;
        // A cache cookie that was tampered with, or that belongs to another session.
        let mut bad = data.clone().into_bytes();
        let i = bad.len() / 2;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        let r = get(format!("{token}; {data_name}={bad}")).await.unwrap();
        assert_error(r, 401, "unauthorized").await;
        let other = ba
            .sign_up(&ba.url, &format!("other-{strategy}@example.com"))
            .await;
        let r = get(format!(
            "{token}; {data_name}={}",
            other.cookie("session_data")
        ))
        .await
        .unwrap();
        assert_error(r, 401, "unauthorized").await;
        // Chunked (`.0`, `.1`), as Better Auth writes caches over 4 KB.
        let (a, b) = data.split_at(data.len() / 2);
        let r = get(format!("{token}; {data_name}.0={a}; {data_name}.1={b}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{strategy}: chunked");
    }
}

#[tokio::test]
async fn lookups_coalesce_and_an_unreachable_auth_service_answers_503() {
    let auth = Witness::start("auth").await.unwrap();
    let up = Witness::start("api").await.unwrap();
    let token = "CoalesceMe0123456789abcdefghijkl";
    let expires = "2099-01-01T00:00:00.000Z";
    // The witness answers get-session after 300 ms, so concurrent misses overlap.
    auth.serve_json(
        "/get-session?sleep=300&disableCookieCache=true&disableRefresh=true",
        &format!(
            r#"{{"session":{{"token":"{token}","expiresAt":"{expires}","userId":"u-1"}},"user":{{"id":"u-1","role":"admin,editor"}}}}"#
        ),
    );
    // An auth service that is down: a port held (connections refused) for the whole test.
    let closed = PortHold::new();
    let yaml = api_config(
        up.addr,
        &format!(
            r#"  - name: api
    match: {{ prefix: / }}
    upstream: api
    auth: {{ roles: [editor] }}
    plugins:
      - better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "http://{auth}/get-session?sleep=300", timeout: 1s }} }}
  - name: down
    match: {{ prefix: /down }}
    upstream: api
    plugins:
      - &down
        better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "http://127.0.0.1:{closed}/get-session", timeout: 1s }} }}
  - name: public
    match: {{ prefix: /public }}
    upstream: api
    auth: {{ required: false, invalid_credentials: anonymous }}
    plugins: [ *down ]
"#,
            auth = auth.addr,
            closed = closed.port
        ),
    );
    let gw = gateway(&yaml).await;
    let c = reqwest::Client::new();
    let cookie = format!("better-auth.session_token={}", sign(token));
    let statuses = concurrent_gets(&c, &gw.url("/x"), &cookie, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(auth.fixed_hits(), 1, "20 concurrent misses, one lookup");
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-user-id"), vec!["u-1"]);
    assert_eq!(seen.header_values("x-user-roles"), vec!["admin,editor"]);

    // The auth service fails: a session not in the cache gets 503.
    auth.fail_with(502);
    let cookie_of = |token: &str| format!("better-auth.session_token={}", sign(token));
    let get = |path: &str, cookie: String| c.get(gw.url(path)).header("cookie", cookie).send();
    let r = get("/x", cookie_of("AnotherSession0123456789abcdefgh"))
        .await
        .unwrap();
    assert_error(r, 503, "upstream_unavailable").await;
    // Or cannot be reached at all: 503 again, at once, never a hang.
    let started = Instant::now();
    let r = get("/down", cookie_of("ThirdSession0123456789abcdefghij"))
        .await
        .unwrap();
    assert_error(r, 503, "upstream_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // A public page stays up, anonymously.
    let r = get("/public", cookie_of("ThirdSession0123456789abcdefghij"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up
        .seen()
        .pop()
        .unwrap()
        .header_values("x-user-id")
        .is_empty());
    // The cached one still passes.
    let r = get_with_cookie(&c, gw.url("/x"), &cookie).await;
    assert_eq!(r.status(), 200);
}

/// `t` as JavaScript's `toISOString` writes it.
fn iso(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[tokio::test]
async fn cached_sessions_end_at_their_expiry_and_no_session_is_remembered_briefly() {
    assert_eq!(
        iso(std::time::UNIX_EPOCH + Duration::from_millis(1_795_905_557_446)),
        "2026-11-28T22:39:17.446Z"
    );
    let auth = Witness::start("auth").await.unwrap();
    let up = Witness::start("api").await.unwrap();
    let token = "ExpiresSoon0123456789abcdefghijk";
    let expires = std::time::SystemTime::now() + Duration::from_millis(1500);
    let query = "disableCookieCache=true&disableRefresh=true";
    auth.serve_json(
        &format!("/expiring?{query}"),
        &format!(
            r#"{{"session":{{"token":"{token}","expiresAt":"{}"}},"user":{{"id":"u-2"}}}}"#,
            iso(expires)
        ),
    );
    auth.serve_json(&format!("/none?{query}"), "null");
    let yaml = api_config(
        up.addr,
        &format!(
            r#"  - name: expiring
    match: {{ prefix: /expiring }}
    upstream: api
    plugins:
      - better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "http://{auth}/expiring", cache_ttl: 60s }} }}
  - name: none
    match: {{ prefix: /none }}
    upstream: api
    plugins:
      - better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "http://{auth}/none", negative_cache_ttl: 1s }} }}
"#,
            auth = auth.addr
        ),
    );
    let gw = gateway(&yaml).await;
    let c = reqwest::Client::new();
    let get = |path: &str, token: &str| {
        c.get(gw.url(path))
            .header(
                "cookie",
                format!("better-auth.session_token={}", sign(token)),
            )
            .send()
    };

    // A session is cached (one lookup for two requests) but never past its own expiry, even
    // with a 60 s cache TTL.
    assert_eq!(get("/expiring", token).await.unwrap().status(), 200);
    assert_eq!(get("/expiring", token).await.unwrap().status(), 200);
    assert_eq!(auth.fixed_hits(), 1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r = get("/expiring", token).await.unwrap();
    assert_error(r, 401, "unauthorized").await;
    assert_eq!(auth.fixed_hits(), 2);

    // "No such session" is remembered for negative_cache_ttl, then asked again.
    let other = "NoSession0123456789abcdefghijklm";
    assert_error(get("/none", other).await.unwrap(), 401, "unauthorized").await;
    assert_error(get("/none", other).await.unwrap(), 401, "unauthorized").await;
    assert_eq!(auth.fixed_hits(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(get("/none", other).await.unwrap(), 401, "unauthorized").await;
    assert_eq!(auth.fixed_hits(), 4);
    assert!(up.seen().iter().all(|s| s.path == "/expiring"));
}
