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

/// A self-signed certificate for `localhost` that expires on `not_after` (y, m, d).
fn cert_until(not_after: (i32, u8, u8)) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client that trusts only `cert`; `fresh`: a new connection (and handshake) per request.
fn trusting(certs: &[&str], fresh: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder().http1_only();
    for c in certs {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(c.as_bytes()).unwrap());
    }
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

/// Waits until a new handshake succeeds with `client`.
async fn wait_served(client: &reqwest::Client, url: &str) {
    let served = async {
        while client.get(url).send().await.is_err() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), served)
        .await
        .expect("the new certificate was not served");
}

#[tokio::test]
async fn certificates_rotate_on_reload_and_on_file_change_without_failing_requests() {
    let up = Witness::start("w").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = cert_until((2031, 5, 17));
    let second = cert_until((2032, 1, 2));
    let third = cert_until((2033, 3, 4));
    let write = |(cert, key): &(String, String)| {
        // Written beside and renamed, as cert-manager and ACME clients do.
        std::fs::write(dir.path().join("next.pem"), cert).unwrap();
        std::fs::write(dir.path().join("next.key"), key).unwrap();
        std::fs::rename(dir.path().join("next.key"), dir.path().join("tls.key")).unwrap();
        std::fs::rename(dir.path().join("next.pem"), dir.path().join("tls.pem")).unwrap();
    };
    write(&first);
    let d = dir.path().display();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\n    tls:\n      certificates:\n        - {{ cert: {d}/tls.pem, key: {d}/tls.key, server_names: [localhost] }}\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let url = format!("https://localhost:{}/", gw.port);
    let metric = |not_after: i64| {
        format!(
            "portico_tls_certificate_expiration_timestamp_seconds{{certificate=\"{d}/tls.pem\",listener=\"127.0.0.1:{}\"}} {not_after}",
            gw.port
        )
    };
    assert_metric(&gw.metrics().await, &metric(1_936_742_400));

    // An established connection made with the first certificate.
    let kept = trusting(&[&first.0], false);
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);
    // Load with a new handshake per request, trusting every certificate of the test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), url.clone());
        let client = trusting(&[&first.0, &second.0, &third.0], true);
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(error_chain(&e)),
                }
            }
            (ok, failures)
        }));
    }

    // New files and a reload (SIGHUP): new handshakes get the second certificate.
    write(&second);
    gw.signal("HUP");
    wait_served(&trusting(&[&second.0], true), &url).await;
    assert!(
        trusting(&[&first.0], true).get(&url).send().await.is_err(),
        "a new handshake still gets the first certificate"
    );
    // The connection made before the rotation carries on.
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);
    assert_metric(&gw.metrics().await, &metric(1_956_614_400));

    // New files alone, no signal: the watch picks them up.
    write(&third);
    wait_served(&trusting(&[&third.0], true), &url).await;
    assert_metric(&gw.metrics().await, &metric(1_993_507_200));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ok = 0;
    for w in workers {
        let (n, failures) = w.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        ok += n;
    }
    assert!(ok > 0, "the load made no request");
}

/// A private CA, and certificates it signs.
struct PrivateCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl PrivateCa {
    fn new() -> PrivateCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portico test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        PrivateCa { params, key, pem }
    }

    /// A certificate for `name` signed by this CA: (certificate PEM, key PEM, DER).
    fn issue(&self, name: &str) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// An HTTPS upstream that requires a client certificate signed by `ca` and answers 200;
/// `tls12_only`: it speaks TLS 1.2 and nothing newer.
async fn mtls_upstream(ca: &PrivateCa, tls12_only: bool) -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (_, key_pem, der) = ca.issue("localhost");
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let ca_der: CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(der)], PrivateKeyDer::Pkcs8(key))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // A failed handshake (no client certificate) just closes the connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "client certificate accepted";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_mtls_with_a_private_ca() {
    let ca = PrivateCa::new();
    let up = mtls_upstream(&ca, false).await;
    let tls12 = mtls_upstream(&ca, true).await;
    let dir = tempfile::tempdir().unwrap();
    let (client_cert, client_key, _) = ca.issue("portico-gateway");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("client.pem"), &client_cert).unwrap();
    std::fs::write(dir.path().join("client.key"), &client_key).unwrap();
    let d = dir.path().display();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  with-cert:
    members: [ {{ address: {up} }} ]
    tls: {{ sni: localhost, ca_file: {d}/ca.pem, client_cert: {d}/client.pem, client_key: {d}/client.key }}
  without-cert:
    members: [ {{ address: {up} }} ]
    tls: {{ sni: localhost, ca_file: {d}/ca.pem }}
  system-roots:
    members: [ {{ address: {up} }} ]
    tls: {{ sni: localhost, client_cert: {d}/client.pem, client_key: {d}/client.key }}
  tls12:
    members: [ {{ address: {tls12} }} ]
    tls: {{ sni: localhost, ca_file: {d}/ca.pem, client_cert: {d}/client.pem, client_key: {d}/client.key }}
  tls12-refused:
    members: [ {{ address: {tls12} }} ]
    tls: {{ sni: localhost, ca_file: {d}/ca.pem, client_cert: {d}/client.pem, client_key: {d}/client.key, min_version: "1.3" }}
routes:
  - {{ name: tls12, match: {{ prefix: /tls12/ok }}, upstream: tls12 }}
  - {{ name: tls12-refused, match: {{ prefix: /tls12/refused }}, upstream: tls12-refused }}
  - {{ name: with-cert, match: {{ prefix: /with }}, upstream: with-cert }}
  - {{ name: without-cert, match: {{ prefix: /without }}, upstream: without-cert }}
  - {{ name: system-roots, match: {{ prefix: /roots }}, upstream: system-roots }}
"#
    );
    let gw = Gateway::start(&yaml).await;
    let r = reqwest::get(gw.url("/with")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "client certificate accepted");
    // The member refuses the handshake without a client certificate: 502 JSON.
    assert_error(
        reqwest::get(gw.url("/without")).await.unwrap(),
        502,
        "bad_gateway",
    )
    .await;
    // Against the system roots the private CA's certificate does not verify.
    assert_error(
        reqwest::get(gw.url("/roots")).await.unwrap(),
        502,
        "bad_gateway",
    )
    .await;
    // A member that only speaks TLS 1.2: accepted by default, refused with `min_version: "1.3"`.
    assert_eq!(
        reqwest::get(gw.url("/tls12/ok")).await.unwrap().status(),
        200
    );
    assert_error(
        reqwest::get(gw.url("/tls12/refused")).await.unwrap(),
        502,
        "bad_gateway",
    )
    .await;
}
