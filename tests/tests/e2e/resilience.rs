use crate::support::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn killed_member_is_ejected_and_requests_are_retried_without_client_errors() {
    let (hold_a, hold_b) = (PortHold::new(), PortHold::new());
    let (pa, pb) = (hold_a.port, hold_b.port);
    let _a = UpstreamProcess::start("a", &hold_a).await;
    let mut b = UpstreamProcess::start("b", &hold_b).await;
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: 127.0.0.1:{pa} }}, {{ address: 127.0.0.1:{pb} }} ]
    connect_retries: 1
    passive_health: {{ consecutive_failures: 2, base_ejection: 1s, max_ejection: 10s }}
    retries: {{ attempts: 2, on: [5xx, reset, timeout], budget_percent: 100 }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#
    );
    let gw = Gateway::start(&yaml).await;
    let urls: Vec<String> = (0..6).map(|i| gw.url(&format!("/w{i}?sleep=5"))).collect();
    let load = Load::start(&urls, 1, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = reqwest::Client::new();
    let ups = gw.upstreams().await;
    let circuit_b = ups["upstreams"][0]["members"][1]["circuit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(circuit_b, "closed", "b was not ejected: {ups}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "portico_circuit_open{{member=\"127.0.0.1:{pb}\",upstream=\"p\"}} 1"
        )),
        "{metrics}"
    );
    let (ok, failures) = load.stop().await;
    assert!(ok > 100, "too little load: {ok}");
    assert!(
        failures.is_empty(),
        "clients saw errors while a healthy member existed: {failures:?}"
    );

    // Back up: after the ejection period a half-open probe closes the circuit.
    let _b2 = UpstreamProcess::start("b", &hold_b).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hits = upstreams_hit(&c, &gw.url("/"), 10).await;
        if hits.iter().any(|h| h == "b") {
            break;
        }
        assert!(Instant::now() < deadline, "b never came back: {hits:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn idempotent_5xx_is_retried_on_another_member_and_post_is_not() {
    let good = Witness::start("good").await.unwrap();
    let bad = Witness::start("bad").await.unwrap();
    bad.fail_with(503);
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: {} }}, {{ address: {} }} ]
    retries: {{ attempts: 1, budget_percent: 100 }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
        good.addr, bad.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();
    for _ in 0..20 {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("x-upstream").unwrap(), "good");
    }
    assert!(
        bad.count() >= 5,
        "round robin should have tried bad first about half the time"
    );
    // Not idempotent: the upstream's 503 goes to the client as is.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            c.post(gw.url("/"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
}

/// Every request to one member, with the pool's `timeouts` set to `timeouts`.
fn one_pool_with_timeouts(member: std::net::SocketAddr, timeouts: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: {member} }} ]
    timeouts: {{ {timeouts} }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#
    )
}

#[tokio::test]
async fn total_deadline_and_per_try_timeout_give_504() {
    let slow = Witness::start("slow").await.unwrap();
    let gw = Gateway::start(&one_pool_with_timeouts(slow.addr, "total: 400ms")).await;
    let c = reqwest::Client::new();
    let start = Instant::now();
    let r = c.get(gw.url("/?sleep=2000")).send().await.unwrap();
    assert_error(r, 504, "gateway_timeout").await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        c.get(gw.url("/?sleep=10")).send().await.unwrap().status(),
        200
    );
}

/// A pooled upstream connection keeps one read timer for all its requests (vendor patch 0037),
/// re-armed lazily: each request's wait for the response head still gets the whole read
/// timeout, and one that runs out still ends its request.
#[tokio::test]
async fn each_request_on_a_pooled_connection_gets_the_whole_read_timeout() {
    let up = Witness::start("w").await.unwrap();
    let gw = Gateway::start(&one_pool_with_timeouts(up.addr, "read: 1s")).await;
    let c = reqwest::Client::new();
    // The first wait's timer is due 1 s after it began; the second wait begins 0.6 s later
    // and outlasts that by 0.3 s on the same connection, so it passes only if the timer was
    // moved to the second wait's own deadline.
    for sleep in [600, 700] {
        let r = c
            .get(gw.url(&format!("/?sleep={sleep}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "sleep={sleep}");
    }
    assert_eq!(
        up.connections(),
        1,
        "both requests went over one pooled connection"
    );
    let start = Instant::now();
    let r = c.get(gw.url("/?sleep=5000")).send().await.unwrap();
    assert_error(r, 504, "gateway_timeout").await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(3000),
        "{waited:?}"
    );
    assert_eq!(
        c.get(gw.url("/?sleep=10")).send().await.unwrap().status(),
        200
    );
}

/// What an upstream saw of the gateway's connections.
#[derive(Debug, PartialEq)]
enum ConnEvent {
    Accepted(usize),
    /// The gateway closed connection n (it read end of stream).
    Closed(usize),
}

/// An upstream that answers `ok` on keep-alive connections and reports what happened to each;
/// on `/close` it answers and then closes the connection itself, as an upstream whose own idle
/// timeout has run out does.
async fn reporting_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<ConnEvent>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio_loopback_listener();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            n += 1;
            let (id, tx) = (n, tx.clone());
            let _ = tx.send(ConnEvent::Accepted(id));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head) = read_head(&mut conn, &mut buf).await else {
                        let _ = tx.send(ConnEvent::Closed(id));
                        return;
                    };
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    if head.starts_with("GET /close ") {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn pooled_upstream_connections_are_dropped_when_closed_by_the_upstream_or_idle_too_long() {
    let (addr, mut events) = reporting_upstream().await;
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: {addr} }} ]
    timeouts: {{ idle: 1s }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#
    );
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();
    let mut next_event = async || {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no upstream event within 10s")
            .expect("the upstream stopped")
    };

    // Two requests on one pooled connection.
    for _ in 0..2 {
        let r = c.get(gw.url("/a")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(next_event().await, ConnEvent::Accepted(1));

    // The upstream closes that connection after answering: the next request is not sent
    // on it (no error, no retry needed) but on a new one.
    let r = c.get(gw.url("/close")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.url("/b")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(next_event().await, ConnEvent::Accepted(2));

    // Idle in the pool for longer than `timeouts.idle`: the gateway closes it.
    let idle_from = Instant::now();
    assert_eq!(next_event().await, ConnEvent::Closed(2));
    let idled = idle_from.elapsed();
    assert!(
        idled >= Duration::from_millis(900),
        "closed after {idled:?} idle, timeouts.idle is 1s"
    );
    // Two connections made for four requests: none was tried on the closed connection.
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "portico_upstream_connect_duration_seconds_count{upstream=\"p\"}"
        ),
        2.0
    );
}

/// The upstream's answer decides whether its connection is used again: `Connection: close`
/// and an HTTP/1.0 answer without `Connection: keep-alive` end it (on the gateway's side: this
/// upstream never closes), an HTTP/1.0 answer with it keeps it. Each answer names the
/// connection it came on.
#[tokio::test]
async fn the_upstreams_keep_alive_verdict_decides_whether_its_connection_is_reused() {
    let addr = raw_upstream(|id, head| {
        let (version, connection) = match head.split(' ').nth(1).unwrap_or("") {
            "/close" => ("1.1", "Connection: close\r\n"),
            "/old" => ("1.0", ""),
            "/old-kept" => ("1.0", "Connection: keep-alive\r\n"),
            _ => ("1.1", ""),
        };
        RawAnswer {
            bytes: format!("HTTP/{version} 200 OK\r\nContent-Length: 2\r\n{connection}\r\nc{id}")
                .into_bytes(),
            then_close: false,
        }
    });
    let yaml = api_config(addr, EVERYTHING_TO_API);
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();
    let mut served_on = Vec::new();
    for path in ["/a", "/b", "/close", "/c", "/old", "/d", "/old-kept", "/e"] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        served_on.push(format!("{path} {}", r.text().await.unwrap()));
    }
    assert_eq!(
        served_on,
        [
            "/a c1",
            "/b c1",
            "/close c1",
            "/c c2",
            "/old c2",
            "/d c3",
            "/old-kept c3",
            "/e c3"
        ]
    );
}

/// A client that closes its connection while the upstream has not answered yet: the gateway
/// lets go of the upstream request (closes that connection) instead of waiting out the
/// upstream's read timeout, as nginx does by default.
#[tokio::test]
async fn a_client_that_leaves_before_the_answer_makes_the_gateway_let_go_of_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reports each request head it reads, never answers, and reports when the gateway
    // closes the connection.
    let listener = tokio_loopback_listener();
    let addr = listener.local_addr().unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if let Some(head) = read_head(&mut conn, &mut buf).await {
                    let _ = tx.send(format!("asked {}", head.lines().next().unwrap_or("")));
                    let mut rest = [0u8; 64];
                    while matches!(conn.read(&mut rest).await, Ok(n) if n > 0) {}
                    let _ = tx.send("closed".to_string());
                }
            });
        }
    });
    // The upstream read timeout is the default 30 s, far beyond the wait below.
    let gw = Gateway::start(&api_config(addr, EVERYTHING_TO_API)).await;
    let mut client = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        events.recv().await.as_deref(),
        Some("asked GET /slow HTTP/1.1")
    );
    drop(client);
    let next = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(
        next.ok().flatten().as_deref(),
        Some("closed"),
        "the gateway kept the upstream request after its client had gone"
    );
}

/// Every way an HTTP/1 upstream can frame its answer reaches the client whole: no body for
/// HEAD and 204, chunked, close-delimited (HTTP/1.0), a body that takes many reads; one cut
/// short by the upstream reaches the client as an error, and the next request is served on
/// a new upstream connection.
#[tokio::test]
async fn every_response_framing_passes_through_and_a_cut_short_body_is_not_passed_off_as_whole() {
    const BIG: usize = 1 << 20;
    let addr = raw_upstream(|id, head| {
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let (bytes, then_close) = match path.as_str() {
            "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(), false),
            "/empty" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
            "/chunked" => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                    .to_vec(),
                false,
            ),
            "/until-close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(), true),
            "/big" => {
                let mut b = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
                b.extend((0..BIG).map(|i| (i % 251) as u8));
                (b, false)
            }
            // Stalls after ten bytes, until the gateway's read timeout gives up.
            "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec(), false),
            _ => (format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc{id}").into_bytes(), false),
        };
        RawAnswer { bytes, then_close }
    });
    let yaml =
        api_config(addr, EVERYTHING_TO_API).replace(" } ] }", " } ], timeouts: { read: 1s } }");
    assert!(yaml.contains("read: 1s"), "{yaml}");
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();

    let r = c.head(gw.url("/head")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "5");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    let r = c.get(gw.url("/empty")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    let r = c.get(gw.url("/chunked")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");

    let r = c.get(gw.url("/until-close")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "until close");

    let r = c.get(gw.url("/big")).send().await.unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), BIG);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    let r = c.get(gw.url("/cut")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the head came whole");
    assert!(
        r.bytes().await.is_err(),
        "a body cut short must not look whole"
    );

    // Upstream connection 1 served /head to /until-close, which ended it; 2 served /big and
    // /cut, whose unread rest makes it unfit for another request though still open.
    let r = c.get(gw.url("/next")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "c3");
}

/// How an upstream's `Content-Length` and `Transfer-Encoding` decide its answer's framing:
/// chunked wins over a length beside it (which is not passed on), identical duplicate lengths
/// are one length, and conflicting or unreadable lengths make the answer a 502.
#[tokio::test]
async fn response_framing_fields_are_reconciled_or_refused() {
    let addr = raw_upstream(|_, head| {
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let bytes: &[u8] = match path.as_str() {
            "/chunked-beside-length" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            }
            "/same-length-twice" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
            }
            "/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            "/unreadable-length" => b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        };
        // Each answer on a connection of its own: a refused one leaves the connection unusable.
        RawAnswer {
            bytes: bytes.to_vec(),
            then_close: true,
        }
    });
    let gw = Gateway::start(&api_config(addr, EVERYTHING_TO_API)).await;
    let c = reqwest::Client::new();

    let r = c
        .get(gw.url("/chunked-beside-length"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = c.get(gw.url("/same-length-twice")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    for path in ["/two-lengths", "/unreadable-length"] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_error(r, 502, "bad_gateway").await;
    }

    let r = c.get(gw.url("/fine")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hi");
}
