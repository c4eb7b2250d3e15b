//! The browser-facing edge: CORS, security headers, IP rules, redirects, static answers, and
//! stickiness by the verified user.

use crate::support::*;

const JWT_SECRET: &str = "edge-test-jwt-secret-0123456789abcdef0123";
const APP: &str = "https://app.example.test";

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": sub, "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn start(yaml: &str) -> Gateway {
    GatewayBuilder::new(yaml)
        .env("TEST_JWT_SECRET", JWT_SECRET)
        .start()
        .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_preflights_pass_before_auth_and_every_answer_carries_cors_headers() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
plugins:
  - cors: {{ allow_origins: ["{APP}", "https://*.apps.example.test"], allow_credentials: true, allow_headers: [Authorization, Content-Type], expose_headers: [X-Request-Id] }}
  - security_headers: {{}}
upstreams:
  p: {{ members: [ {{ address: {} }} ] }}
routes:
  - name: api
    match: {{ prefix: /api, methods: [GET, POST] }}
    upstream: p
    plugins:
      - {{ jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: TEST_JWT_SECRET }} ] }} }}
      - {{ headers: {{ response: {{ set: {{ X-Frame-Options: DENY, X-Edge: "on" }} }} }} }}
  - name: robots
    match: {{ exact: /robots.txt }}
    plugins: [ {{ respond: {{ body: "User-agent: *\nDisallow: /\n", headers: {{ Server: leaky/1.0 }} }} }} ]
"#,
        up.addr
    );
    let gw = start(&yaml).await;
    let c = reqwest::Client::new();
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, gw.url("/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };

    // An allowed origin's preflight is answered by the gateway, before auth, on a route
    // whose methods do not include OPTIONS.
    let r = preflight(APP).await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(header(&r, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    assert_eq!(up.count(), 0, "a preflight never reaches the upstream");
    let r = preflight("https://tenant.apps.example.test").await.unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://tenant.apps.example.test")
    );

    // A disallowed origin gets no CORS headers: its preflight goes on like any request.
    let r = preflight("https://evil.test").await.unwrap();
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_eq!(r.status(), 401);

    // The gateway's own errors carry CORS and security headers, so the page reads the JSON.
    let r = c
        .get(gw.url("/api/orders"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("X-Request-Id")
    );
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    // The route's `headers` response edits apply to the gateway's own answers too, and win
    // over the security defaults.
    assert_eq!(header(&r, "x-edge"), Some("on"));
    assert_eq!(header(&r, "x-frame-options"), Some("DENY"));
    assert!(
        header(&r, "strict-transport-security").is_none(),
        "HSTS only over TLS"
    );
    assert_error(r, 401, "unauthorized").await;
    let r = c
        .get(gw.url("/nowhere"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some(APP),
        "no route: global plugins"
    );
    assert_error(r, 404, "route_not_found").await;

    // Proxied answers too; a disallowed origin's are left alone.
    let bearer = format!("Bearer {}", token("alice"));
    let r = c
        .get(gw.url("/api/orders"))
        .header("origin", APP)
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&r, "referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    let r = c
        .get(gw.url("/api/orders"))
        .header("origin", "https://evil.test")
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());

    // A static answer without an upstream; stack-revealing headers removed.
    let r = c.get(gw.url("/robots.txt")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "server").is_none());
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.text().await.unwrap(), "User-agent: *\nDisallow: /\n");
}

#[tokio::test]
async fn ip_rules_follow_trusted_proxies_and_redirects_answer_without_upstream() {
    let up = Witness::start("w").await.unwrap();
    let config = |trusted: &str| {
        format!(
            r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
{trusted}
plugins:
  - ip_restriction: {{ deny: [203.0.113.0/24] }}
upstreams:
  p: {{ members: [ {{ address: {} }} ] }}
routes:
  - name: internal
    match: {{ prefix: /internal }}
    upstream: p
    plugins: [ {{ ip_restriction: {{ allow: [10.0.0.0/8] }} }} ]
  - name: old
    match: {{ prefix: /old }}
    upstream: p
    plugins: [ {{ redirect: {{ https: true }} }} ]
  - name: well-known
    match: {{ prefix: /.well-known }}
    upstream: p
    plugins: [ {{ redirect: {{ https: true }} }} ]
  - name: moved
    match: {{ prefix: /moved }}
    plugins: [ {{ redirect: {{ location: "https://new.example.test", keep_path: true, status: 301 }} }} ]
  - name: rest
    match: {{ prefix: / }}
    upstream: p
"#,
            up.addr
        )
    };
    let trusting = start(&config("trusted_proxies: [127.0.0.0/8]")).await;
    let plain = start(&config("")).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let from = |gw: &Gateway, path: &str, xff: &str| {
        c.get(gw.url(path)).header("x-forwarded-for", xff).send()
    };
    // Behind a trusted proxy, the forwarded address is the client's: denied.
    let r = from(&trusting, "/x", "203.0.113.9").await.unwrap();
    assert_error(r, 403, "forbidden").await;
    assert_eq!(
        from(&trusting, "/x", "198.51.100.1")
            .await
            .unwrap()
            .status(),
        200
    );
    // Not trusted: the header is the client's say-so; the peer address decides.
    assert_eq!(
        from(&plain, "/x", "203.0.113.9").await.unwrap().status(),
        200
    );
    // The route's own allow list: only 10/8, so not this client.
    assert_error(
        from(&plain, "/internal/x", "").await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        from(&trusting, "/internal/x", "10.1.2.3")
            .await
            .unwrap()
            .status(),
        200
    );

    // HTTP → HTTPS: same host, path and query; ACME challenges still reach the upstream.
    let r = c
        .get(plain.url("/old/page?a=1"))
        .header("host", "shop.example.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        header(&r, "location"),
        Some("https://shop.example.test/old/page?a=1")
    );
    let seen_before = up.count();
    let r = c
        .get(plain.url("/.well-known/acme-challenge/t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ACME challenges are served over HTTP");
    assert_eq!(up.count(), seen_before + 1);
    let r = c.get(plain.url("/.well-known/other")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    // A redirect route needs no upstream.
    let r = c.get(plain.url("/moved/a?b=2")).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        header(&r, "location"),
        Some("https://new.example.test/moved/a?b=2")
    );
}

#[tokio::test]
async fn hash_key_user_id_keeps_a_verified_user_on_one_member() {
    let a = Witness::start("a").await.unwrap();
    let b = Witness::start("b").await.unwrap();
    for key in ["user_id", "header:x-user-id"] {
        let yaml = format!(
            r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    balance: consistent_hash
    hash_key: {key}
    members: [ {{ address: {} }}, {{ address: {} }} ]
routes:
  - name: api
    match: {{ prefix: / }}
    upstream: p
    plugins: [ {{ jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: TEST_JWT_SECRET }} ] }} }} ]
"#,
            a.addr, b.addr
        );
        let gw = start(&yaml).await;
        let c = reqwest::Client::new();
        let mut members_by_user = Vec::new();
        for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"] {
            let bearer = format!("Bearer {}", token(user));
            let mut hit = Vec::new();
            for i in 0..6 {
                let r = c
                    .get(gw.url("/"))
                    .header("authorization", &bearer)
                    // A client's own X-User-Id never counts.
                    .header("x-user-id", format!("spoof-{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v = json(r).await;
                hit.push(v["upstream"].as_str().unwrap().to_string());
            }
            hit.dedup();
            assert_eq!(hit.len(), 1, "{key}: {user}'s requests went to {hit:?}");
            members_by_user.push(hit[0].clone());
        }
        members_by_user.sort();
        members_by_user.dedup();
        assert_eq!(
            members_by_user.len(),
            2,
            "{key}: eight users all on one member"
        );
    }
}

#[tokio::test]
async fn compression_follows_accept_encoding_and_decodes_to_the_original() {
    use std::io::Read;
    let up = Witness::start("w").await.unwrap();
    let items: Vec<String> = (0..400)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}}"))
        .collect();
    let big = format!("[{}]", items.join(","));
    up.serve_json("/c/big", &big);
    up.serve_json("/c/small", "{\"ok\":true}");
    up.serve_json("/plain/big", &big);
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p: {{ members: [ {{ address: {} }} ] }}
routes:
  - name: compressed
    match: {{ prefix: /c }}
    upstream: p
    compression: {{}}
  - name: plain
    match: {{ prefix: /plain }}
    upstream: p
"#,
        up.addr
    );
    let gw = start(&yaml).await;
    // No automatic decompression in this client: the test reads the encoded bytes.
    let c = reqwest::Client::new();
    let get =
        |path: &str, accept: &str| c.get(gw.url(path)).header("accept-encoding", accept).send();
    for (accept, encoding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
    ] {
        let r = get("/c/big", accept).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-encoding"), Some(encoding), "{accept}");
        assert!(header(&r, "vary").unwrap().contains("Accept-Encoding"));
        let bytes = r.bytes().await.unwrap();
        assert!(
            bytes.len() < big.len() / 3,
            "{accept}: {} of {} bytes",
            bytes.len(),
            big.len()
        );
        let mut decoded = Vec::new();
        match encoding {
            "gzip" => flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut decoded)
                .map(drop),
            "br" => brotli::Decompressor::new(&bytes[..], 4096)
                .read_to_end(&mut decoded)
                .map(drop),
            _ => zstd::stream::read::Decoder::new(&bytes[..])
                .and_then(|mut d| d.read_to_end(&mut decoded))
                .map(drop),
        }
        .unwrap_or_else(|e| {
            panic!(
                "{accept}: {e}: {} bytes: {:?}",
                bytes.len(),
                &bytes[..bytes.len().min(64)]
            )
        });
        assert_eq!(decoded, big.as_bytes(), "{accept}: decodes to the original");
    }
    // Left alone: a client that refuses the encodings, a small body, a route without it.
    for (path, accept) in [
        ("/c/big", "gzip;q=0, identity"),
        ("/c/small", "gzip"),
        ("/plain/big", "gzip"),
    ] {
        let r = get(path, accept).await.unwrap();
        assert!(header(&r, "content-encoding").is_none(), "{path} {accept}");
        let body = r.bytes().await.unwrap();
        assert!(
            body.len() < 100 || body == big.as_bytes(),
            "{path}: unchanged"
        );
    }
}

#[tokio::test]
async fn hsts_is_sent_over_tls_only() {
    let up = Witness::start("w").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = localhost_cert_files(dir.path());
    let d = dir.path().display();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
    tls: {{ certificates: [ {{ cert: {d}/c.pem, key: {d}/c.key }} ] }}
  - address: 127.0.0.1:{{port0}}
access_log: {{ enabled: false }}
plugins:
  - security_headers: {{ hsts: {{ max_age: 180d, include_subdomains: true }} }}
upstreams:
  p: {{ members: [ {{ address: {} }} ] }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
        up.addr
    );
    let gw = GatewayBuilder::new(&yaml).extra_ports(1).start().await;
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = tls
        .get(format!("https://localhost:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "strict-transport-security"),
        Some("max-age=15552000; includeSubDomains")
    );
    let r = reqwest::get(format!("http://127.0.0.1:{}/", gw.extra_ports[0]))
        .await
        .unwrap();
    assert!(header(&r, "strict-transport-security").is_none());
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
}
