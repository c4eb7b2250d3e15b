use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The limits most tests here use; each line is indented for the `limits:` block.
const SMALL_LIMITS: &str = "  max_header_bytes: 4KiB
  max_headers: 20
  max_uri_bytes: 1KiB
  max_body_bytes: 1KiB
  request_header_timeout: 1s";

async fn gateway(up: &Witness, limits: &str) -> Gateway {
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
limits:
{limits}
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
    let gw = gateway(&up, SMALL_LIMITS).await;
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

/// Trickles a request head a byte every 200 ms (each read is quick, the head never
/// completes) and returns how long the gateway took to close the connection.
async fn time_until_trickled_head_is_cut_off(s: &mut tokio::net::TcpStream) -> Duration {
    let start = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).await.is_err() {
            return start.elapsed();
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            return start.elapsed();
        }
    }
    panic!("the gateway kept a trickling connection open");
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, SMALL_LIMITS).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let t = time_until_trickled_head_is_cut_off(&mut s).await;
    assert!(t < Duration::from_millis(2500), "closed only after {t:?}");
    assert!(t >= Duration::from_millis(900), "closed too early: {t:?}");
}

/// The head deadline also holds for a later request on a kept-alive connection that idled
/// past one head deadline first, although the keep-alive timeout it waited under is longer
/// (the connection's one timer then stands at the keep-alive deadline and must come back).
#[tokio::test]
async fn slow_request_head_after_a_kept_alive_request_is_cut_off() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, &format!("{SMALL_LIMITS}\n  keepalive_timeout: 30s")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: slow\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await.expect("first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle past the connection's first head deadline (1s), well within the keep-alive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = time_until_trickled_head_is_cut_off(&mut s).await;
    assert!(t < Duration::from_millis(2500), "closed only after {t:?}");
    assert!(t >= Duration::from_millis(900), "closed too early: {t:?}");
}

/// Reads one response with a Content-Length body from a raw connection; `None` once the
/// gateway has closed it.
async fn read_response(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if buf.len() >= end + 4 + length {
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer within 5s"),
        }
    }
}

#[tokio::test]
async fn idle_keep_alive_clients_are_served_then_closed_by_timeout_and_request_limit() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, "  keepalive_timeout: 1s\n  keepalive_requests: 3").await;
    const REQUEST: &[u8] = b"GET /idle HTTP/1.1\r\nHost: idle\r\n\r\n";

    // Idle between requests (the connection waits for its socket to become readable), then
    // a request that arrives in two pieces: both are served on the same connection.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let first = read_response(&mut s).await.expect("first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(&REQUEST[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&REQUEST[5..]).await.unwrap();
    let second = read_response(&mut s).await.expect("an answer after idling");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");

    // Idle past keepalive_timeout: the gateway closes the connection.
    let idle_from = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0))), "expected a close, got {read:?}");
    let idled = idle_from.elapsed();
    assert!(
        idled >= Duration::from_millis(900) && idled < Duration::from_millis(2500),
        "closed after {idled:?} idle, keepalive_timeout is 1s"
    );

    // keepalive_requests: the third request on a connection is its last, and its answer says so.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    for n in 1..=3 {
        s.write_all(REQUEST).await.unwrap();
        let answer = read_response(&mut s).await;
        let connection = if n < 3 { "keep-alive" } else { "close" };
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")
                    && a.to_ascii_lowercase()
                        .contains(&format!("\r\nconnection: {connection}\r\n"))),
            "request {n}: {answer:?}"
        );
    }
    let _ = s.write_all(REQUEST).await;
    assert_eq!(
        read_response(&mut s).await,
        None,
        "a 4th request was served"
    );
}

/// Sends `request` on a new connection and answers the response (or what arrived).
async fn exchange(gw: &Gateway, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(request).await.unwrap();
    read_response(&mut s).await.unwrap_or_default()
}

/// Bodies framed each way, one after another on one kept-alive connection, reach the upstream
/// whole and framed as they came (a length given twice goes on once); a request without
/// framing fields has no body.
#[tokio::test]
async fn request_bodies_reach_the_upstream_framed_as_sent() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, SMALL_LIMITS).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let requests: [&[u8]; 4] = [
        b"POST /length HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"POST /none HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /twice HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for request in requests {
        s.write_all(request).await.unwrap();
        let answer = read_response(&mut s)
            .await
            .expect("an answer on the same connection");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let seen: Vec<_> = up
        .seen()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.body_len,
                r.header_values("content-length"),
                r.header_values("transfer-encoding"),
            )
        })
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            ("/length".to_string(), 5, strings(&["5"]), vec![]),
            ("/chunked".to_string(), 11, vec![], strings(&["chunked"])),
            ("/none".to_string(), 0, vec![], vec![]),
            ("/twice".to_string(), 3, strings(&["3"]), vec![]),
        ]
    );
}

#[tokio::test]
async fn host_rules_of_rfc_9112() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, SMALL_LIMITS).await;
    // HTTP/1.1 without Host: 400 with the JSON body; nothing reaches the upstream.
    let text = exchange(&gw, b"GET /no-host HTTP/1.1\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains(r#""code":"bad_request""#), "{text}");
    let text = exchange(&gw, b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(up
        .seen()
        .iter()
        .all(|s| s.path != "/no-host" && s.path != "/two"));
    // HTTP/1.0 may leave Host out.
    let text = exchange(&gw, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // An absolute-form target's authority must match Host; without Host (HTTP/1.0) the
    // upstream request gets it as its Host.
    let text = exchange(
        &gw,
        b"GET http://abs.example/other HTTP/1.1\r\nHost: x.example\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    for request in [
        &b"GET http://abs.example/with-host HTTP/1.1\r\nHost: abs.example\r\n\r\n"[..],
        b"GET http://abs.example/without-host HTTP/1.0\r\n\r\n",
        b"GET /origin-form HTTP/1.1\r\nHost: origin.example\r\n\r\n",
    ] {
        let text = exchange(&gw, request).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    let hosts: Vec<_> = up
        .seen()
        .iter()
        .filter(|s| s.path != "/old")
        .map(|s| (s.path.clone(), s.header_values("host")))
        .collect();
    let host = |h: &str| vec![h.to_string()];
    assert_eq!(
        hosts,
        vec![
            ("/with-host".to_string(), host("abs.example")),
            ("/without-host".to_string(), host("abs.example")),
            ("/origin-form".to_string(), host("origin.example")),
        ]
    );
}

#[tokio::test]
async fn the_gateway_answers_with_its_own_http_version() {
    // An HTTP/1.0 upstream that answers with Content-Length, then closes.
    let addr = raw_upstream(|_, _| RawAnswer {
        bytes: b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok".to_vec(),
        then_close: true,
    });
    let yaml = api_config(addr, EVERYTHING_TO_API);
    let gw = Gateway::start(&yaml).await;
    let text = exchange(&gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
}

/// Upstream answers whose body (or whose final head, after an informational one) arrives in
/// the same read as the head: the gateway's reader takes those bytes over from the head's
/// buffer, for each way a body can be framed, on fresh and on reused upstream connections.
#[tokio::test]
async fn bodies_that_arrive_with_their_head_are_passed_on_whole() {
    let answers: [(&str, &[u8], bool); 4] = [
        (
            "/length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        (
            "/early-hints",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            false,
        ),
        (
            "/chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            false,
        ),
        // No framing: the body ends when the upstream closes.
        ("/until-close", b"HTTP/1.1 200 OK\r\n\r\nhello", true),
    ];
    let addr = raw_upstream(move |_, head| {
        let path = head.split(' ').nth(1).unwrap_or_default();
        let (_, bytes, then_close) = answers
            .iter()
            .find(|(p, _, _)| *p == path)
            .expect("a known path");
        RawAnswer {
            bytes: bytes.to_vec(),
            then_close: *then_close,
        }
    });
    let gw = Gateway::start(&api_config(addr, EVERYTHING_TO_API)).await;
    for round in 0..2 {
        for (path, _, _) in answers {
            let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
                .await
                .expect("the gateway closes within 5s")
                .unwrap();
            let text = String::from_utf8_lossy(&answer);
            let last = text.rfind("HTTP/1.1 ").expect("a response");
            let (head, body) = text[last..].split_once("\r\n\r\n").expect("a whole head");
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "round {round}, {path}: {text}"
            );
            // The gateway may pass a body on chunked; what it carries is the same.
            let carried = if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                dechunk(body)
            } else {
                body.to_string()
            };
            assert_eq!(carried, "hello", "round {round}, {path}: {text}");
        }
    }
}

/// The data of a chunked body (extensions and trailers aside).
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        data.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    data
}

#[tokio::test]
async fn header_names_keep_the_case_they_came_with_in_both_directions() {
    // An upstream that hands over each request head it reads, and answers with names in
    // their default case, in an unusual case, and lowercase.
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<String>();
    let addr = raw_upstream(move |_, head| {
        let _ = heads_tx.send(head.to_string());
        RawAnswer {
            bytes: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-UpStream-CASE: a\r\ncontent-type: text/plain\r\n\r\nok".to_vec(),
            then_close: false,
        }
    });
    let yaml = api_config(addr, EVERYTHING_TO_API);
    let gw = Gateway::start(&yaml).await;

    // Names in their default case only, then names in other cases.
    for (request, sent_names) in [
        (
            &b"GET /a HTTP/1.1\r\nHost: x\r\nx-custom: 1\r\n\r\n"[..],
            &["Host: x", "x-custom: 1"][..],
        ),
        (
            b"GET /b HTTP/1.1\r\nhost: x\r\nX-MiXed-Case: 1\r\nUser-Agent: t\r\n\r\n",
            &["host: x", "X-MiXed-Case: 1", "User-Agent: t"],
        ),
    ] {
        let text = exchange(&gw, request).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        for name in [
            "\r\nX-UpStream-CASE: a\r\n",
            "\r\ncontent-type: text/plain\r\n",
            "\r\nx-request-id: ",
        ] {
            assert!(text.contains(name), "{name:?} not in the answer: {text}");
        }
        let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .expect("the request reached the upstream")
            .unwrap();
        for line in sent_names
            .iter()
            .chain(&["x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http"])
        {
            assert!(
                head.split("\r\n").any(|l| l == *line),
                "{line:?} not in the upstream request: {head}"
            );
        }
    }
}

/// Sends raw bytes on a new connection and answers everything the gateway sent back before
/// it closed (or stopped sending for a second).
async fn raw_exchange(gw: &Gateway, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_the_json_error_or_a_clean_close() {
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, "  max_headers: 100").await;
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "10k header fields",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            Some(431),
        ),
        ("a 64 KiB URI", long_uri.into_bytes(), Some(414)),
        (
            "invalid UTF-8 in the path",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            None,
        ),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "bare CR in a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "a space before the colon",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "`{` in the method",
            b"G{T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            Some(405),
        ),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), None),
        (
            "HTTP/2.0 on HTTP/1",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "two Host fields",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "two Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            Some(400),
        ),
        (
            "a negative Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "the same with bare LF",
            b"POST / HTTP/1.1\nHost: x\nContent-Length: 0\nTransfer-Encoding: chunked\n\n0\n\n".to_vec(),
            Some(400),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "a final transfer coding other than chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
            Some(400),
        ),
        (
            "random garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
            None,
        ),
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03".to_vec(),
            None,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, request, want) in cases {
        let answer = raw_exchange(&gw, &request).await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let status: Option<u16> = answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok());
        let ok = match (status, want) {
            // Not HTTP at all: a clean close is fine, a JSON answer too.
            (None, None) => answer.is_empty(),
            (Some(s), want) => {
                want.is_none_or(|w| w == s)
                    && answer.contains(r#"{"error":{"code":""#)
                    && head.contains("x-request-id: ")
                    && !head.contains("server: pingora")
            }
            (None, Some(_)) => false,
        };
        if !ok {
            wrong.push(format!(
                "{what}: want {want:?}, got {:?}",
                answer.get(..300).unwrap_or(&answer)
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(up.count(), 0, "none of them reached the upstream");
}

/// Raises this process's open-file limit (the gateway it starts inherits it).
fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_cur.max(want.min(limit.rlim_max));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// The slowloris drill: a thousand clients trickle their request heads a byte at a time;
/// the gateway cuts each off at `request_header_timeout`, and a normal client beside them
/// sees no error at all.
#[tokio::test]
async fn a_thousand_trickling_clients_do_not_hurt_normal_ones() {
    let slow_clients: usize = if raise_fd_limit(8192) >= 4096 {
        1000
    } else {
        300
    };
    let up = Witness::start("w").await.unwrap();
    let gw = gateway(&up, "  request_header_timeout: 2s").await;
    let addr = gw.addr();
    let mut slow = Vec::new();
    for _ in 0..slow_clients {
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return None;
            };
            let started = Instant::now();
            for b in
                b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
            {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                let mut buf = [0u8; 16];
                match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    let load = Load::start(&[gw.url("/normal")], 4, false);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ok, failures) = load.stop().await;
    assert!(ok > 100, "the normal client was barely served: {ok}");
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    let mut cut_off = 0;
    for task in slow {
        if let Some(after) = task.await.unwrap() {
            assert!(
                after >= Duration::from_millis(1500),
                "cut off early: {after:?}"
            );
            cut_off += 1;
        }
    }
    assert_eq!(cut_off, slow_clients, "every trickling client is cut off");
}
