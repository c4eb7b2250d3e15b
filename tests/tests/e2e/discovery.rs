use crate::support::*;
use std::time::{Duration, Instant};

fn config(redis: &str, resync: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
redis:
  {redis}
  resync_interval: {resync}
upstreams:
  users:
    discovery: redis
    service: users
  users-admin:
    discovery: redis
    service: users-admin
routes:
  - name: users
    match: {{ prefix: /users }}
    upstream: users
  - name: users-admin
    match: {{ prefix: /admin }}
    upstream: users-admin
"#
    )
}

/// Waits until requests to `url` are answered by exactly the upstreams `want` (by name).
async fn wait_for(client: &reqwest::Client, url: &str, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut hits = upstreams_hit(client, url, 6).await;
        hits.sort();
        hits.dedup();
        if hits == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{url}: wanted {want:?}, still {hits:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn discovery_flow(redis_url: &str, gateway_redis: &str) {
    let w1 = Witness::start("w1").await.unwrap();
    let w2 = Witness::start("w2").await.unwrap();
    let admin = Witness::start("admin").await.unwrap();
    // A long resync: events and expiries, not polling, must make changes visible.
    let gw = Gateway::start(&config(gateway_redis, "60s")).await;
    let c = reqwest::Client::new();
    let r = c.get(gw.url("/users")).send().await.unwrap();
    assert_error(r, 503, "upstream_unavailable").await;

    // Registered → routed within a second.
    let a1 = w1.addr.to_string();
    registry(
        redis_url,
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &a1,
            "--id",
            "w1",
            "--ttl",
            "2s",
        ],
    );
    let took = wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_secs(1)).await;
    eprintln!("routed {took:?} after registering");

    // Same name prefix, other service: no crosstalk either way.
    let r = c.get(gw.url("/admin")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let aa = admin.addr.to_string();
    registry(
        redis_url,
        &[
            "register",
            "--service",
            "users-admin",
            "--addr",
            &aa,
            "--ttl",
            "30s",
        ],
    );
    wait_for(&c, &gw.url("/admin"), &["admin"], Duration::from_secs(1)).await;
    wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_secs(1)).await;

    // The TTL passes without a heartbeat: w1 leaves at once.
    let a2 = w2.addr.to_string();
    registry(
        redis_url,
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &a2,
            "--id",
            "w2",
            "--ttl",
            "30s",
        ],
    );
    wait_for(&c, &gw.url("/users"), &["w1", "w2"], Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for(&c, &gw.url("/users"), &["w2"], Duration::from_millis(1200)).await;

    // Deregistered → gone.
    registry(
        redis_url,
        &["deregister", "--service", "users", "--id", "w2"],
    );
    let gone = Instant::now();
    loop {
        let r = c.get(gw.url("/users")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "deregistered member still routed"
        );
    }
    wait_for(&c, &gw.url("/admin"), &["admin"], Duration::from_secs(1)).await;

    let ups = gw.upstreams().await;
    let admin_pool = ups["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "users-admin")
        .unwrap()
        .clone();
    assert_eq!(admin_pool["members"][0]["source"], "redis", "{ups}");
    assert_eq!(admin_pool["service"], "users-admin");
}

#[tokio::test]
async fn registry_drives_membership() {
    let redis = RedisServer::start().await;
    discovery_flow(&redis.url(), &format!("url: {}", redis.url())).await;
    // The schema written is the documented one (docs/registry.md).
    assert_eq!(
        redis.cli(&["type", "portico:svc:{users-admin}"]).trim(),
        "zset"
    );
    assert!(redis
        .cli(&["smembers", "portico:services"])
        .contains("users-admin"));
}

#[tokio::test]
async fn redis_cluster_works_like_a_single_node() {
    let nodes = redis_cluster().await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let yaml_list = format!("cluster: [{}]", urls.join(", "));
    discovery_flow(&urls.join(","), &yaml_list).await;
    // One node's URL is enough for the command line: it finds out it is a cluster node.
    // (At least two of the three nodes do not own the service's slot.)
    for url in &urls {
        let listed = registry(url, &["list", "--service", "users"]);
        assert!(listed.contains("\"users\""), "{url}: {listed}");
    }
}

#[tokio::test]
async fn redis_outage_keeps_last_known_members_and_recovers() {
    let mut redis = RedisServer::start().await;
    let w1 = Witness::start("w1").await.unwrap();
    let w2 = Witness::start("w2").await.unwrap();
    let gw = Gateway::start(&config(&format!("url: {}", redis.url()), "2s")).await;
    let c = reqwest::Client::new();
    let a1 = w1.addr.to_string();
    registry(
        &redis.url(),
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &a1,
            "--ttl",
            "60s",
        ],
    );
    wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_secs(1)).await;
    assert_eq!(
        c.get(gw.admin("/ready")).send().await.unwrap().status(),
        200
    );

    let load = Load::start(&[gw.url("/users")], 4, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    // Through several resync periods without Redis.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ready = c.get(gw.admin("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = json(ready).await;
    assert!(body["reason"].as_str().unwrap().contains("redis"), "{body}");
    let (ok, failures) = load.stop().await;
    assert!(ok > 100);
    assert!(
        failures.is_empty(),
        "requests failed while Redis was down: {failures:?}"
    );

    // Redis returns (empty): services register again and discovery catches up by itself.
    redis.restart().await;
    let a2 = w2.addr.to_string();
    registry(
        &redis.url(),
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &a1,
            "--ttl",
            "60s",
        ],
    );
    registry(
        &redis.url(),
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &a2,
            "--ttl",
            "60s",
        ],
    );
    wait_for(&c, &gw.url("/users"), &["w1", "w2"], Duration::from_secs(8)).await;
    assert_eq!(
        c.get(gw.admin("/ready")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn heartbeat_keeps_an_instance_and_deregisters_on_exit() {
    let redis = RedisServer::start().await;
    let w1 = Witness::start("w1").await.unwrap();
    let gw = Gateway::start(&config(&format!("url: {}", redis.url()), "60s")).await;
    let c = reqwest::Client::new();
    let hb = std::process::Command::new(binary())
        .args([
            "registry",
            "--redis",
            &redis.url(),
            "register",
            "--service",
            "users",
            "--addr",
        ])
        .arg(w1.addr.to_string())
        .args(["--ttl", "1s", "--heartbeat"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_secs(2)).await;
    // Three TTLs later it is still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_millis(100)).await;
    stop_heartbeat(hb).await;
    // The deregistration's event reaches the gateway a moment later.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = c.get(gw.url("/users")).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after deregistration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The drill of a Redis restart: Redis comes back empty (nothing persisted), and until the
/// services' heartbeats register them again the registry names no member. The gateway keeps
/// the last known members for `registry_grace` instead of emptying the pool.
#[tokio::test]
async fn a_redis_restart_does_not_empty_a_pool_before_heartbeats_return() {
    let mut redis = RedisServer::start().await;
    let w1 = Witness::start("w1").await.unwrap();
    let gw = Gateway::start(&config(
        &format!("url: {}\n  registry_grace: 6s", redis.url()),
        "300ms",
    ))
    .await;
    let c = reqwest::Client::new();
    let hb = std::process::Command::new(binary())
        .args(["registry", "--redis", &redis.url(), "register"])
        .args(["--service", "users", "--id", "w1", "--addr"])
        .arg(w1.addr.to_string())
        .args(["--ttl", "3s", "--heartbeat"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&c, &gw.url("/users"), &["w1"], Duration::from_secs(2)).await;

    let load = Load::start(&[gw.url("/users")], 4, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The heartbeat is held back until the gateway has read the empty registry: the race
    // of the drill, made certain.
    signal(hb.id(), "STOP");
    redis.stop();
    // Longer than the registration's TTL.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reads_before = registry_reads(&gw).await;
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry_reads(&gw).await < reads_before + 2 {
        assert!(
            Instant::now() < deadline,
            "the gateway did not read the registry again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(hb.id(), "CONT");
    while !redis
        .cli(&["ZCARD", "portico:svc:{users}"])
        .trim()
        .starts_with('1')
    {
        assert!(
            Instant::now() < deadline,
            "the heartbeat did not register again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = load.stop().await;
    assert!(ok > 100, "too little load: {ok}");
    assert!(
        failures.is_empty(),
        "requests failed across the Redis restart: {failures:?}"
    );
    stop_heartbeat(hb).await;
}

/// Interrupts a `registry register --heartbeat` process, which deregisters and exits.
async fn stop_heartbeat(mut hb: std::process::Child) {
    signal(hb.id(), "INT");
    let exited = tokio::task::spawn_blocking(move || {
        let exited = wait_child(&mut hb, Duration::from_secs(10));
        let _ = hb.kill();
        exited
    })
    .await
    .unwrap();
    assert!(exited.is_some(), "the heartbeat did not stop on SIGINT");
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Successful registry reads so far (`portico_registry_events_total{result="ok"}`).
async fn registry_reads(gw: &Gateway) -> u64 {
    let metrics = gw.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"portico_registry_events_total{result="ok"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn three_replicas_on_one_redis_route_a_service_registered_once() {
    let redis = RedisServer::start().await;
    let w = Witness::start("w").await.unwrap();
    let redis_line = format!("url: {}", redis.url());
    let yaml = config(&redis_line, "60s");
    let replicas = [
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
    ];
    registry(
        &redis.url(),
        &[
            "register",
            "--service",
            "users",
            "--addr",
            &w.addr.to_string(),
            "--id",
            "u1",
        ],
    );
    let c = reqwest::Client::new();
    for gw in &replicas {
        wait_for(&c, &gw.url("/users"), &["w"], Duration::from_secs(10)).await;
    }
    assert!(
        w.count() >= 3 * 6,
        "every replica's requests reached the one instance"
    );
}
