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
    let (status, v) = gw.admin_reload("t0ken").await;
    assert_eq!(status, 200, "{v}");
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
    let (status, v) = gw.admin_reload("t0ken").await;
    assert_eq!(status, 400, "{v}");
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

/// Forty routes `/r0` … `/r39` answering with `X-Version: <version>`, `/r10` with
/// `X-Version: <r10>`; `/r30` goes to the pool named `<r30_pool>`, and the second pool is
/// called `<second_pool>` (both pools are the witness).
fn forty_routes(up: &Witness, r10: &str, r30_pool: &str, second_pool: &str) -> String {
    let mut yaml = format!(
        "server: {{ watch_config: false }}\nlisteners: [ {{ address: 127.0.0.1:{{port}} }} ]\n\
         admin: {{ address: 127.0.0.1:{{admin}}, token_env: TEST_ADMIN_TOKEN }}\n\
         access_log: {{ enabled: false }}\n\
         upstreams:\n  p: {{ members: [ {{ address: {addr} }} ] }}\n  {second_pool}: {{ members: [ {{ address: {addr} }} ] }}\n\
         routes:\n",
        addr = up.addr
    );
    for i in 0..40 {
        let version = if i == 10 { r10 } else { "v1" };
        let pool = if i == 30 { r30_pool } else { "p" };
        yaml.push_str(&format!(
            "  - name: r{i}\n    match: {{ prefix: /r{i} }}\n    upstream: {pool}\n    plugins: [ {{ headers: {{ response: {{ set: {{ X-Version: {version} }} }} }} }} ]\n"
        ));
    }
    yaml
}

/// What `portico check` says of the gateway's config file, its path as the reload names it.
fn check_errors(gw: &Gateway) -> Vec<String> {
    let out = std::process::Command::new(binary())
        .arg("check")
        .arg("-c")
        .arg(&gw.config_path)
        .env("TEST_ADMIN_TOKEN", "t0ken")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("portico.yaml:"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test]
async fn a_reload_that_edits_one_route_of_many_reports_errors_as_check_does() {
    let up = Witness::start("w").await.unwrap();
    let gw = GatewayBuilder::new(&forty_routes(&up, "v1", "q", "q"))
        .env("TEST_ADMIN_TOKEN", "t0ken")
        .start()
        .await;
    let client = reqwest::Client::new();
    let version = |path: &'static str| {
        let client = client.clone();
        let url = gw.url(path);
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-version"].to_str().unwrap().to_string()
        }
    };

    // One route edited: it takes effect, its neighbours are as they were.
    gw.write_config(&forty_routes(&up, "v2", "q", "q"));
    let (status, v) = gw.admin_reload("t0ken").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(version("/r10").await, "v2");
    assert_eq!(version("/r11").await, "v1");
    assert_eq!(version("/r30").await, "v1");

    // The pool `/r30` names is renamed; the route's own text and line are unchanged, and the
    // error still points at its `upstream:` value, as `check` does.
    gw.write_config(&forty_routes(&up, "v2", "q", "renamed"));
    let (status, v) = gw.admin_reload("t0ken").await;
    assert_eq!(status, 400, "{v}");
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let line = forty_routes(&up, "v2", "q", "renamed")
        .lines()
        .position(|l| l == "    upstream: q")
        .unwrap()
        + 1;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with(&format!(
            "portico.yaml:{line}:15: route `r30` names unknown upstream `q`"
        )),
        "{errors:?}"
    );
    assert_eq!(errors, check_errors(&gw));

    // An unknown field in an edited route: the whole file's parse words it, at its place.
    let broken = forty_routes(&up, "v2", "q", "q")
        .replace("    upstream: q\n", "    upstream: q\n    colour: red\n");
    gw.write_config(&broken);
    let (status, v) = gw.admin_reload("t0ken").await;
    assert_eq!(status, 400, "{v}");
    let line = broken.lines().position(|l| l == "    colour: red").unwrap() + 1;
    let error = v["errors"][0].as_str().unwrap().to_string();
    assert!(error.contains(&format!("portico.yaml:{line}:5: ")), "{v}");
    assert!(error.contains("colour"), "{v}");
    assert_eq!(vec![error], check_errors(&gw));
    assert_eq!(
        version("/r10").await,
        "v2",
        "the running config keeps serving"
    );
}
