use crate::support::*;

fn config(up: &Witness) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:{{port}}
access_log:
  enabled: false
upstreams:
  w:
    members:
      - address: {addr}
routes:
  - name: regex-users
    match: {{ regex: "/api/users/[0-9]+" }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: api
    match: {{ prefix: /api }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: api-v1
    match: {{ prefix: /api/v1 }}
    upstream: w
    strip_prefix: true
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: health-get
    match: {{ exact: /api/health, methods: [GET] }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: host-exact
    match: {{ hosts: [shop.example.com], prefix: /api }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: host-wild
    match: {{ hosts: ["*.example.com"], prefix: / }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: submit-post
    match: {{ exact: /submit, methods: [POST, PUT] }}
    upstream: w
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
  - name: old-rewrite
    match: {{ regex: "/old/.*" }}
    upstream: w
    rewrite: {{ regex: "^/old/(.*)$", replacement: "/new/$1" }}
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Route: "${{route}}" }} }} }} }} ]
"#,
        addr = up.addr
    )
}

async fn route_of(
    client: &reqwest::Client,
    gw: &Gateway,
    method: reqwest::Method,
    host: &str,
    path: &str,
) -> String {
    let resp = client
        .request(method, gw.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request");
    match resp.status().as_u16() {
        200 => resp
            .headers()
            .get("x-route")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string(),
        s => s.to_string(),
    }
}

#[tokio::test]
async fn routing_precedence_table() {
    let up = Witness::start("w").await.unwrap();
    let gw = Gateway::start(&config(&up)).await;
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let table: &[(M, &str, &str, &str)] = &[
        (M::GET, "any.test", "/api/health", "health-get"),
        (M::POST, "any.test", "/api/health", "api"),
        (M::GET, "any.test", "/api/v1/things", "api-v1"),
        (M::GET, "any.test", "/api/v1", "api-v1"),
        (M::GET, "any.test", "/api/users/42", "api"),
        (M::GET, "any.test", "/apix", "404"),
        (M::GET, "any.test", "/users/42", "404"),
        (M::GET, "shop.example.com", "/api/cart", "host-exact"),
        (M::GET, "SHOP.Example.com:8080", "/api/cart", "host-exact"),
        (M::GET, "shop.example.com", "/other", "host-wild"),
        (M::GET, "a.b.example.com", "/x", "host-wild"),
        (M::GET, "example.com", "/x", "404"),
        (M::POST, "any.test", "/submit", "submit-post"),
        (M::GET, "any.test", "/submit", "405"),
        (M::GET, "any.test", "/old/page", "old-rewrite"),
    ];
    for (m, host, path, want) in table {
        let got = route_of(&c, &gw, m.clone(), host, path).await;
        assert_eq!(&got, want, "{m} {host}{path}");
    }
    // Regex routes match the whole path only when no exact or prefix route does.
    let r = c.get(gw.url("/users/42")).send().await.unwrap();
    assert_error(r, 404, "route_not_found").await;
    let r = c.get(gw.url("/submit")).send().await.unwrap();
    assert_eq!(r.headers().get("allow").unwrap(), "POST, PUT");
    assert_error(r, 405, "method_not_allowed").await;

    // strip_prefix and regex rewrite change what the upstream sees; the query is kept.
    c.get(gw.url("/api/v1/things?q=1")).send().await.unwrap();
    c.get(gw.url("/old/a/b?z=2")).send().await.unwrap();
    let paths: Vec<String> = up.seen().into_iter().map(|s| s.path).collect();
    assert!(paths.contains(&"/things?q=1".to_string()), "{paths:?}");
    assert!(paths.contains(&"/new/a/b?z=2".to_string()), "{paths:?}");
    assert!(
        paths.contains(&"/".to_string()),
        "/api/v1 strips to /: {paths:?}"
    );
}

#[tokio::test]
async fn forwarded_headers_and_identity_stripping() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\nupstreams:\n  w:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: w\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    // Raw bytes: duplicates and case variants no client library would send.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = "GET /who HTTP/1.1\r\nHost: app.test\r\nX-User-Id: evil\r\nx-user-id: evil2\r\nX_User_Id: evil3\r\nX-USER-ROLES: admin\r\nX-Auth-Method: jwt\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: client-id-123\r\nConnection: close, X-User-Id\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-request-id: client-id-123"),
        "{text}"
    );
    let seen = up.seen();
    let last = seen.last().unwrap();
    for h in ["x-user-id", "x_user_id", "x-user-roles", "x-auth-method"] {
        assert!(
            last.header_values(h).is_empty(),
            "{h} reached the upstream: {:?}",
            last.headers
        );
    }
    assert_eq!(last.header_values("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(last.header_values("x-forwarded-proto"), vec!["http"]);
    assert_eq!(last.header_values("x-forwarded-host"), vec!["app.test"]);
    assert_eq!(last.header_values("x-request-id"), vec!["client-id-123"]);

    // An invalid client request id is replaced by a generated one.
    let r = reqwest::Client::new()
        .get(gw.url("/x"))
        .header("x-request-id", "has spaces and ünïcode")
        .send()
        .await
        .unwrap();
    let id = r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
}

#[tokio::test]
async fn trusted_proxies_decide_the_client_ip() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\ntrusted_proxies: [127.0.0.0/8]\nupstreams:\n  w:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: w\n    plugins: [ {{ headers: {{ request: {{ set: {{ X-Client: \"${{client_ip}}\" }} }} }} }} ]\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    reqwest::Client::new()
        .get(gw.url("/"))
        .header("x-forwarded-for", "203.0.113.9, 127.0.0.5")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let last = up.seen().pop().unwrap();
    assert_eq!(last.header_values("x-client"), vec!["203.0.113.9"]);
    assert_eq!(
        last.header_values("x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.5, 127.0.0.1"]
    );
    assert_eq!(last.header_values("x-forwarded-proto"), vec!["https"]);
}
