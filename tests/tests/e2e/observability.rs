//! What SREs look at: the Grafana dashboard in deploy/ queries only metrics the gateway
//! really exports.

use crate::support::*;

#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let redis = RedisServer::start().await;
    let up = Witness::start("w").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    localhost_cert_files(dir.path());
    let d = dir.path().display();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
  - address: 127.0.0.1:{{port0}}
    tls: {{ certificates: [ {{ cert: {d}/c.pem, key: {d}/c.key }} ] }}
access_log: {{ enabled: false }}
redis: {{ url: {redis} }}
upstreams:
  p: {{ members: [ {{ address: {up} }} ] }}
  found: {{ discovery: redis, service: found }}
routes:
  - name: limited
    match: {{ prefix: /limited }}
    upstream: p
    plugins: [ {{ rate_limit: {{ limits: [ {{ name: tiny, rate: 1/m, key: client_ip }} ] }} }} ]
  - name: secured
    match: {{ prefix: /secured }}
    upstream: p
    plugins: [ {{ jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: TEST_JWT_SECRET }} ] }} }} ]
  - name: found
    match: {{ prefix: /found }}
    upstream: found
  - name: plain
    match: {{ prefix: /plain }}
    upstream: p
"#,
        redis = redis.url(),
        up = up.addr
    );
    let gw = GatewayBuilder::new(&yaml)
        .env(
            "TEST_JWT_SECRET",
            "observability-test-secret-0123456789abcdef",
        )
        .extra_ports(1)
        .start()
        .await;
    // Known traffic: a proxied answer, a rate-limited one, an unauthenticated one, and a
    // registry read.
    let c = reqwest::Client::new();
    for _ in 0..2 {
        c.get(gw.url("/limited")).send().await.unwrap();
    }
    c.get(gw.url("/secured")).send().await.unwrap();
    let r = c
        .post(gw.url("/plain"))
        .body("a body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    registry(
        &redis.url(),
        &[
            "register",
            "--service",
            "found",
            "--addr",
            &up.addr.to_string(),
        ],
    );
    let metrics = async {
        loop {
            let m = gw.metrics().await;
            if m.contains("portico_registry_events_total{") {
                return m;
            }
            tokio::task::yield_now().await;
        }
    };
    let metrics = tokio::time::timeout(std::time::Duration::from_secs(10), metrics)
        .await
        .expect("no registry read counted");
    let exported: std::collections::HashSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();

    // Values, not just names: the body sent, connections per listener, a new connection's
    // connect time.
    assert_metric(&metrics, r#"portico_request_bytes_total{route="plain"} 6"#);
    assert_metric(&metrics, r#"portico_response_bytes_total{route="plain"}"#);
    assert_metric(
        &metrics,
        r#"portico_upstream_connect_duration_seconds_count{upstream="p"}"#,
    );
    assert_metric(
        &metrics,
        &format!(
            r#"portico_open_connections{{listener="127.0.0.1:{}"}}"#,
            gw.port
        ),
    );

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/dashboards/portico.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let names = regex_names(&dashboard);
    assert!(names.len() >= 12, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics lacks:\n{metrics}"
    );
}

/// The metric families every panel's queries name (`_bucket`, `_sum`, `_count` are a
/// histogram's series).
fn regex_names(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("portico_") || word.starts_with("process_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    names.insert(family.to_string());
                }
            }
        }
    }
    names
}
