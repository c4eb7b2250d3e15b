use crate::support::*;
use std::time::{Duration, Instant};

fn config(up: &Witness, dead: u16, version: usize) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
admin:
  address: 127.0.0.1:{{admin}}
  token_env: TEST_ADMIN_TOKEN
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: {addr} }} ]
  flaky:
    members: [ {{ address: 127.0.0.1:{dead} }} ]
    health_check: {{ type: tcp, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
    plugins: [ {{ headers: {{ response: {{ set: {{ X-Version: "v{version}" }} }} }} }} ]
  - name: flaky
    match: {{ prefix: /flaky }}
    upstream: flaky
"#,
        addr = up.addr
    )
}

async fn wait_version(client: &reqwest::Client, gw: &Gateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = client.get(gw.url("/")).send().await.unwrap();
        if r.headers().get("x-version").and_then(|v| v.to_str().ok()) == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "config {want} never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_under_load_drops_nothing_and_keeps_pool_state() {
    let up = Witness::start("w").await.unwrap();
    let dead_hold = PortHold::new();
    let dead = dead_hold.port;
    let gw = GatewayBuilder::new(&config(&up, dead, 0))
        .env("TEST_ADMIN_TOKEN", "t0ken")
        .start()
        .await;
    let client = reqwest::Client::new();
    // The dead member is ejected by its health check.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = gw.upstreams().await;
        let flaky = v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "flaky")
            .cloned()
            .unwrap();
        if flaky["healthy"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "dead member never ejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let load = Load::start(&[gw.url("/load")], 8, false);
    for v in 1..=5 {
        gw.write_config(&config(&up, dead, v));
        wait_version(&client, &gw, &format!("v{v}")).await;
        // The unchanged pool kept its health state: no reset to healthy on reload.
        let state = gw.upstreams().await;
        let flaky = state["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "flaky")
            .cloned()
            .unwrap();
        assert_eq!(flaky["healthy"], 0, "health state lost on reload: {state}");
    }
    // Admin-triggered reload too.
    let r = client
        .post(gw.admin("/reload"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (ok, failures) = load.stop().await;
    assert!(ok > 200, "too little load: {ok}");
    assert!(
        failures.is_empty(),
        "requests failed during reloads: {failures:?}"
    );
}

#[tokio::test]
async fn broken_config_is_rejected_and_the_old_one_keeps_serving() {
    let up = Witness::start("w").await.unwrap();
    let dead_hold = PortHold::new();
    let dead = dead_hold.port;
    let gw = GatewayBuilder::new(&config(&up, dead, 1))
        .env("TEST_ADMIN_TOKEN", "t0ken")
        .start()
        .await;
    let client = reqwest::Client::new();
    wait_version(&client, &gw, "v1").await;

    // A route naming an unknown upstream, written to the watched file.
    let broken = config(&up, dead, 2).replace("upstream: flaky", "upstream: nowhere");
    gw.write_config(&broken);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.headers().get("x-version").unwrap(), "v1");

    // POST /reload answers 400 with the same messages as `check`.
    let r = client.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 401, "reload needs the token");
    let r = client
        .post(gw.admin("/reload"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v = json(r).await;
    let errors = v["errors"].as_array().unwrap();
    let line = broken
        .lines()
        .position(|l| l.contains("upstream: nowhere"))
        .unwrap()
        + 1;
    let want = format!("portico.yaml:{line}:15: route `flaky` names unknown upstream `nowhere`");
    assert!(
        errors.iter().any(|e| e.as_str().unwrap().ends_with(&want)),
        "{v}"
    );

    // Still the old config.
    let r = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.headers().get("x-version").unwrap(), "v1");
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("portico_config_reloads_total{result=\"failure\"} 0"),
        "{metrics}"
    );

    // A fixed file is picked up again.
    gw.write_config(&config(&up, dead, 3));
    wait_version(&client, &gw, "v3").await;
}
