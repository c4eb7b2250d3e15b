use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway(up: &Witness) -> Gateway {
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
limits:
  max_header_bytes: 4KiB
  max_headers: 20
  max_uri_bytes: 1KiB
  max_body_bytes: 1KiB
  request_header_timeout: 1s
upstreams:
  p:
    members: [ {{ address: {addr} }} ]
    timeouts: {{ read: 300ms }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
        addr = up.addr
    );
    Gateway::start(&yaml).await
}

#[tokio::test]
async fn every_limit_answers_with_its_status_and_json() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up).await;
    let c = reqwest::Client::new();

    let long = format!("/{}", "a".repeat(2000));
    assert_error(
        c.get(gw.url(&long)).send().await.unwrap(),
        414,
        "uri_too_long",
    )
    .await;

    let mut rb = c.get(gw.url("/"));
    for i in 0..30 {
        rb = rb.header(format!("x-h{i}"), "v");
    }
    assert_error(rb.send().await.unwrap(), 431, "headers_too_large").await;
    let big = "b".repeat(5000);
    assert_error(
        c.get(gw.url("/"))
            .header("x-big", big)
            .send()
            .await
            .unwrap(),
        431,
        "headers_too_large",
    )
    .await;

    // Content-Length over the limit: refused before anything reaches the upstream.
    let before = up.count();
    let r = c
        .post(gw.url("/"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
    assert_eq!(up.count(), before);

    // A chunked body over the limit: cut off while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = c.post(gw.url("/")).body(body).send().await.unwrap();
    assert_error(r, 413, "payload_too_large").await;

    // Within limits all is well.
    let r = c
        .post(gw.url("/"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Upstream read timeout → 504.
    assert_error(
        c.get(gw.url("/slow?sleep=1500")).send().await.unwrap(),
        504,
        "gateway_timeout",
    )
    .await;

    // A malformed request line → 400 (Pingora answers it before any route).
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let start = Instant::now();
    // Trickle a byte every 200ms: each read is quick, the head never completes.
    let mut closed_after = None;
    for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let t = closed_after.expect("the gateway kept a trickling connection open");
    assert!(t < Duration::from_millis(2500), "closed only after {t:?}");
    assert!(t >= Duration::from_millis(900), "closed too early: {t:?}");
}
