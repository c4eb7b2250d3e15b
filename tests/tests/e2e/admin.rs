use crate::support::*;

#[tokio::test]
async fn admin_endpoints_answer_per_spec() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
admin:
  address: 127.0.0.1:{{admin}}
  token_env: TEST_ADMIN_TOKEN
access_log: {{ enabled: true, path: "{{dir}}/access.log" }}
upstreams:
  p:
    members: [ {{ address: {addr} }} ]
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
    plugins:
      - headers: {{ request: {{ set: {{ Authorization: "Bearer inline-secret", X-Api-Key: "${{env:TEST_API_KEY}}" }} }} }}
"#,
        addr = up.addr
    );
    let gw = GatewayBuilder::new(&yaml)
        .env("TEST_ADMIN_TOKEN", "s3cret-admin")
        .env("TEST_API_KEY", "s3cret-key")
        .start()
        .await;
    let c = reqwest::Client::new();
    assert_eq!(c.get(gw.url("/hello")).send().await.unwrap().status(), 200);
    // The env secret reached the upstream, but never the client.
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header_values("x-api-key"), vec!["s3cret-key"]);

    assert_eq!(
        c.get(gw.admin("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(gw.admin("/ready")).send().await.unwrap().status(),
        200
    );

    let config = c
        .get(gw.admin("/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!config.contains("s3cret"), "{config}");
    assert!(!config.contains("inline-secret"), "{config}");
    let v: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(v["version"], 1);
    assert!(v["loaded_at"].as_str().is_some());

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("portico_requests_total{method=\"GET\",route=\"all\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("portico_request_duration_seconds_bucket{route=\"all\""));
    assert!(metrics.contains("portico_upstream_duration_seconds_bucket{upstream=\"p\""));

    let (status, _) = gw.admin_reload("wrong").await;
    assert_eq!(status, 401);
    let (status, v) = gw.admin_reload("s3cret-admin").await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], 2);

    // One JSON access log line per request, with the request id.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["path"], "/hello");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "all");
    assert_eq!(line["request_id"].as_str().unwrap().len(), 32);
}
