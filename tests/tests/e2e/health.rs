use crate::support::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn killed_member_leaves_rotation_and_returns() {
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
    members:
      - address: 127.0.0.1:{pa}
      - address: 127.0.0.1:{pb}
    connect_retries: 0
    health_check:
      path: /health
      interval: 200ms
      timeout: 200ms
      healthy_threshold: 2
      unhealthy_threshold: 2
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#
    );
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    let members = |v: serde_json::Value| -> Vec<String> {
        v["upstreams"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["health"].as_str().unwrap().to_string())
            .collect()
    };
    b.kill();
    // Health checks take it out within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = gw.upstreams().await;
        if members(v.clone()) == ["healthy", "unhealthy"] {
            break;
        }
        assert!(Instant::now() < deadline, "b never left rotation: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("x-upstream").unwrap(), "a");
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("portico_upstream_members{state=\"unhealthy\",upstream=\"p\"} 1"),
        "{metrics}"
    );

    // It comes back when it is reachable again.
    let _b2 = UpstreamProcess::start("b", &hold_b).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = gw.upstreams().await;
        if members(v.clone()) == ["healthy", "healthy"] {
            break;
        }
        assert!(Instant::now() < deadline, "b never came back: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut saw_b = false;
    for _ in 0..10 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        saw_b |= r.headers().get("x-upstream").unwrap() == "b";
    }
    assert!(saw_b, "b healthy again but not routed to");
}

#[tokio::test]
async fn all_members_down_is_503_and_refused_connect_is_502() {
    let hold_a = PortHold::new();
    let pa = hold_a.port;
    let mut a = UpstreamProcess::start("a", &hold_a).await;
    let dead_hold = PortHold::new();
    let dead = dead_hold.port;
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  checked:
    members: [ {{ address: 127.0.0.1:{pa} }} ]
    health_check: {{ path: /health, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }}
  unchecked:
    members: [ {{ address: 127.0.0.1:{dead} }} ]
routes:
  - name: checked
    match: {{ prefix: /checked }}
    upstream: checked
  - name: unchecked
    match: {{ prefix: /unchecked }}
    upstream: unchecked
"#
    );
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(gw.url("/checked"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = client.get(gw.url("/unchecked")).send().await.unwrap();
    assert_error(r, 502, "bad_gateway").await;
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = client.get(gw.url("/checked")).send().await.unwrap();
        if r.status() == 503 {
            assert_error(r, 503, "upstream_unavailable").await;
            break;
        }
        assert!(Instant::now() < deadline, "never answered 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connect_failure_tries_another_member() {
    let up = Witness::start("alive").await.unwrap();
    let dead_hold = PortHold::new();
    let dead = dead_hold.port;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    connect_retries: 1\n    members: [ {{ address: 127.0.0.1:{dead} }}, {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "a refused connect must fall over to the live member"
        );
    }
}
