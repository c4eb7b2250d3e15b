use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn sigterm_drains_an_in_flight_request() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let mut gw = Gateway::start(&yaml).await;
    let url = gw.url("/slow?sleep=1500");
    let inflight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let status = inflight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(status, 200);
    // New connections are refused once draining started.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(gw.addr()).await.is_err(),
        "still accepting after SIGTERM"
    );
    // grace_period is 5s in tests: the process exits after it, not before the request.
    let took = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(took.is_some(), "did not exit after the grace period");
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
