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
