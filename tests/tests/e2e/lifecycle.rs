use crate::support::*;
use std::time::Duration;

/// `threads`: 1 runs the single-threaded scheduler, 2 the work-stealing one; their shutdowns
/// differ.
fn one_route(up: std::net::SocketAddr, grace: &str, threads: usize) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\nadmin:\n  address: 127.0.0.1:{{admin}}\nserver:\n  threads: {threads}\n  grace_period: {grace}\n  shutdown_timeout: 1s\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    members: [ {{ address: {up} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n"
    )
}

/// Waits until the proxy listener refuses connections: the drain has begun.
async fn wait_refused(gw: &Gateway) {
    let addr = gw.addr();
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("the proxy listener still accepts after SIGTERM");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_then_exits_at_once() {
    for threads in [1, 2] {
        drain_one_in_flight_request(threads).await;
    }
}

async fn drain_one_in_flight_request(threads: usize) {
    let up = Witness::start("w").await.unwrap();
    let mut gw = Gateway::start(&one_route(up.addr, "30s", threads)).await;
    let url = gw.url("/slow?hold");
    let inflight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    up.wait_held(1).await;
    gw.signal("TERM");
    wait_refused(&gw).await;
    // The admin listener still answers, and says the gateway is draining.
    let ready = reqwest::get(gw.admin("/ready"))
        .await
        .expect("admin answers");
    assert_eq!(ready.status(), 503, "{threads} threads");
    let body = json(ready).await;
    assert_eq!(body["status"], "draining", "{threads} threads: {body}");
    // The held request's connection at least (a probe connection of `wait_refused` may still
    // be closing).
    assert!(
        body["open_connections"].as_u64() >= Some(1),
        "{threads} threads: {body}"
    );
    up.release_held();
    let status = inflight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(status, 200, "{threads} threads");
    // The grace period is 30 s; with nothing left in flight the process ends at once.
    let took = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        took.is_some(),
        "{threads} threads: still running 10 s after the last request ended"
    );
}

#[tokio::test]
async fn sigterm_closes_idle_keepalive_connections_and_exits_in_under_a_second() {
    for threads in [1, 2] {
        close_an_idle_connection_and_exit(threads).await;
    }
}

async fn close_an_idle_connection_and_exit(threads: usize) {
    let up = Witness::start("w").await.unwrap();
    let mut gw = Gateway::start(&one_route(up.addr, "30s", threads)).await;
    // An idle keep-alive connection stays open after its request.
    let client = reqwest::Client::new();
    let r = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{threads} threads");
    r.bytes().await.unwrap();
    let sent = std::time::Instant::now();
    gw.signal("TERM");
    let took = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        took.is_some(),
        "{threads} threads: still running 10 s after SIGTERM"
    );
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{threads} threads: exit took {took:?} with only an idle connection open"
    );
}

#[tokio::test]
async fn upgrade_hands_over_the_listener_without_failing_requests() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let mut old = Gateway::start(&yaml).await;
    // A new connection per request: each is accepted by whichever process holds the
    // listener at that moment; a connection the old process accepts just before it stops
    // accepting must still be answered. Keep-alive clients beside them: the old process
    // answers their next request with `Connection: close`, and they move over.
    let load = Load::start(&[old.url("/")], 4, true);
    let keep_alive = Load::start(&[old.url("/")], 2, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let mut new = std::process::Command::new(binary())
        .args(["run", "--upgrade", "-c"])
        .arg(&old.config_path)
        .env("PORTICO_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let exited = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(exited.is_some(), "the old process did not exit");
    let served_after = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failures) = load.stop().await;
    let (ok_keep_alive, failures_keep_alive) = keep_alive.stop().await;
    assert!(ok_keep_alive > 0, "the keep-alive clients were not served");
    assert!(
        failures_keep_alive.is_empty(),
        "keep-alive requests failed during the upgrade: {failures_keep_alive:?}"
    );
    let still_running = new.try_wait().unwrap().is_none();
    let _ = new.kill();
    let _ = new.wait();
    assert!(still_running, "the new process died");
    assert!(ok > served_after, "the new process served nothing");
    assert!(
        failures.is_empty(),
        "requests failed during the upgrade: {failures:?}"
    );
}

#[tokio::test]
async fn an_access_log_on_a_full_disk_loses_lines_not_requests() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: true, path: /dev/full }}\nupstreams:\n  p:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    // The writer flushes every 100 ms; every line it could not write is counted.
    let counted = async {
        loop {
            let m = gw.metrics().await;
            if m.contains("portico_access_log_dropped_total 20") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), counted)
        .await
        .expect("the 20 lines were not counted as dropped");
}
