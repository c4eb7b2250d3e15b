use crate::support::*;

fn cert(names: &[&str]) -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("generate cert");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[tokio::test]
async fn tls_with_sni_and_http2_and_h2c() {
    let up = Witness::start("w").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = cert(&["localhost"]);
    let (b_cert, b_key) = cert(&["api.other.test"]);
    for (name, text) in [
        ("a.pem", &a_cert),
        ("a.key", &a_key),
        ("b.pem", &b_cert),
        ("b.key", &b_key),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let d = dir.path().display();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
    tls:
      certificates:
        - {{ cert: {d}/a.pem, key: {d}/a.key, server_names: [localhost] }}
        - {{ cert: {d}/b.pem, key: {d}/b.key, server_names: ["*.other.test"] }}
  - address: 127.0.0.1:{{port0}}
    h2c: true
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: {addr} }} ]
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
        addr = up.addr
    );
    let gw = GatewayBuilder::new(&yaml).extra_ports(1).start().await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(a_cert.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(b_cert.as_bytes()).unwrap())
        .resolve("api.other.test", gw.addr())
        .build()
        .unwrap();
    // HTTP/2 through ALPN, with the certificate for `localhost`.
    let r = client
        .get(format!("https://localhost:{}/secure", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-forwarded-proto"), vec!["https"]);
    // SNI picks the wildcard certificate: hostname verification passes only with it.
    let r = client
        .get(format!("https://api.other.test:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // HTTP/1.1 over TLS still works.
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(a_cert.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1
        .get(format!("https://localhost:{}/", gw.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // h2c with prior knowledge on the cleartext listener, and HTTP/1 beside it.
    let port0 = gw.extra_ports[0];
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .get(format!("http://127.0.0.1:{port0}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = reqwest::get(format!("http://127.0.0.1:{port0}/"))
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // A gateway error over HTTP/2 is JSON too.
    let r = h2c
        .get(format!("http://127.0.0.1:{port0}/x"))
        .header("x-big", "z".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_error(r, 431, "headers_too_large").await;
}
