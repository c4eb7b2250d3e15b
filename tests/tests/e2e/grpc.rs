//! gRPC through the gateway with a real gRPC server and client (grpcio): h2c and TLS on both
//! sides, identity as metadata, the gateway's own refusals as gRPC statuses, the
//! `grpc-timeout` deadline, and the gRPC health checking protocol as an active check.

use crate::support::*;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;

const SECRET: &str = "grpc-test-secret-0123456789abcdefghij";

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/tools-venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup.sh test",
        venv.display()
    );
    venv
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("grpc")
        .join(name)
}

/// A grpcio server; killed when dropped.
struct GrpcServer {
    child: tokio::process::Child,
    port: u16,
}

impl GrpcServer {
    async fn start(tls: Option<&std::path::Path>) -> GrpcServer {
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(script("server.py"));
        if let Some(dir) = tls {
            cmd.arg("--tls")
                .arg(dir.join("c.pem"))
                .arg(dir.join("c.key"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the gRPC server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the gRPC server did not say its port")
        .expect("read the port");
        let port = line.trim().parse().expect("a port number");
        GrpcServer { child, port }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What one call through grpcio's client ended with.
#[derive(Debug)]
struct Call {
    code: u64,
    details: String,
    answers: Vec<String>,
}

async fn call(target: &str, method: &str, request: &str, extra: &[&str]) -> Call {
    let out = tokio::process::Command::new(python())
        .arg(script("client.py"))
        .args([target, method, request])
        .args(extra)
        .output()
        .await
        .expect("run the gRPC client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    Call {
        code: v["code"].as_u64().expect("code"),
        details: v["details"].as_str().unwrap_or("").to_string(),
        answers: v["answers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn bearer(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("authorization=Bearer {token}")
}

#[tokio::test]
async fn grpc_calls_pass_over_h2c_and_tls_and_gateway_refusals_are_grpc_statuses() {
    let dir = tempfile::tempdir().unwrap();
    localhost_cert_files(dir.path());
    let plain = GrpcServer::start(None).await;
    let secure = GrpcServer::start(Some(dir.path())).await;
    let dead = PortHold::new();
    let d = dir.path().display();
    let jwt = "{ jwt: { providers: [ { algorithms: [HS256], secret_env: GRPC_JWT_SECRET } ] } }";
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
    h2c: true
  - address: 127.0.0.1:{{port0}}
    tls: {{ http2: true, certificates: [ {{ cert: {d}/c.pem, key: {d}/c.key }} ] }}
access_log: {{ enabled: false }}
upstreams:
  plain:
    protocol: h2c
    members: [ {{ address: 127.0.0.1:{plain} }} ]
  secure:
    protocol: h2
    tls: {{ ca_file: {d}/c.pem, sni: localhost, min_version: "1.3" }}
    members: [ {{ address: 127.0.0.1:{secure} }} ]
  gone:
    protocol: h2c
    connect_retries: 0
    members: [ {{ address: 127.0.0.1:{dead} }} ]
routes:
  - name: limited
    match: {{ prefix: /test.Echo/Limited }}
    upstream: plain
    plugins: [ {jwt}, {{ rate_limit: {{ limits: [ {{ name: calls, rate: 2/m, key: user_id }} ] }} }} ]
  - name: slow
    match: {{ prefix: /test.Echo/Slow }}
    upstream: plain
  - name: gone
    match: {{ prefix: /gone.Service/ }}
    upstream: gone
  - name: over-tls
    match: {{ prefix: /test.Echo/, hosts: [ localhost ] }}
    upstream: secure
    plugins: [ {jwt} ]
  - name: echo
    match: {{ prefix: /test.Echo/ }}
    upstream: plain
    plugins: [ {jwt} ]
"#,
        plain = plain.port,
        secure = secure.port,
        dead = dead.port,
    );
    let gw = GatewayBuilder::new(&yaml)
        .env("GRPC_JWT_SECRET", SECRET)
        .extra_ports(1)
        .start()
        .await;
    let h2c = format!("127.0.0.1:{}", gw.port);
    let tls = format!("127.0.0.1:{}", gw.extra_ports[0]);
    let ca = dir.path().join("c.pem").display().to_string();
    let who = bearer("user-42");

    // Unary over h2c → h2c: the verified identity reaches the server as metadata, and a
    // spoofed one does not.
    let c = call(
        &h2c,
        "/test.Echo/Unary",
        "hello",
        &["--metadata", &who, "--metadata", "x-user-id=spoofed"],
    )
    .await;
    assert_eq!(c.code, 0, "{c:?}");
    let echo: serde_json::Value = serde_json::from_str(&c.answers[0]).unwrap();
    assert_eq!(echo["request"], "hello");
    assert_eq!(echo["metadata"]["x-user-id"], "user-42");
    assert!(
        echo["metadata"].get("authorization").is_none(),
        "credentials are not forwarded"
    );

    // Server streaming over h2c and over TLS (TLS on both sides, TLS 1.3 to the member).
    let c = call(&h2c, "/test.Echo/Stream", "3", &["--metadata", &who]).await;
    assert_eq!(
        (c.code, c.answers.clone()),
        (0, vec!["item-0".into(), "item-1".into(), "item-2".into()]),
        "{c:?}"
    );
    let c = call(
        &tls,
        "/test.Echo/Stream",
        "2",
        &["--ca", &ca, "--metadata", &who],
    )
    .await;
    assert_eq!(
        (c.code, c.answers.clone()),
        (0, vec!["item-0".into(), "item-1".into()]),
        "{c:?}"
    );
    let c = call(
        &tls,
        "/test.Echo/Unary",
        "over tls",
        &["--ca", &ca, "--metadata", &who],
    )
    .await;
    assert_eq!(c.code, 0, "{c:?}");

    // The gateway's own refusals, as gRPC statuses.
    let c = call(&h2c, "/test.Echo/Unary", "x", &[]).await;
    assert_eq!(c.code, 16, "UNAUTHENTICATED: {c:?}");
    for _ in 0..2 {
        assert_eq!(
            call(&h2c, "/test.Echo/Limited", "x", &["--metadata", &who])
                .await
                .code,
            0
        );
    }
    let c = call(&h2c, "/test.Echo/Limited", "x", &["--metadata", &who]).await;
    assert_eq!(c.code, 8, "RESOURCE_EXHAUSTED: {c:?}");
    assert!(c.details.contains("Too many requests"), "{c:?}");
    let c = call(&h2c, "/gone.Service/Call", "x", &[]).await;
    assert_eq!(c.code, 14, "UNAVAILABLE: {c:?}");
    let c = call(&h2c, "/nowhere.Service/Call", "x", &[]).await;
    assert_eq!(c.code, 12, "UNIMPLEMENTED: {c:?}");
    let c = call(&h2c, "/test.Echo/Slow", "3", &["--timeout", "0.3"]).await;
    assert_eq!(c.code, 4, "DEADLINE_EXCEEDED: {c:?}");
}

/// The gateway itself ends a call at its `grpc-timeout`, with DEADLINE_EXCEEDED, while the
/// member is still working (a client with no deadline of its own waits for that answer).
#[tokio::test]
async fn the_gateway_ends_a_call_at_its_grpc_timeout() {
    let server = GrpcServer::start(None).await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\n    h2c: true\naccess_log: {{ enabled: false }}\nupstreams:\n  plain: {{ protocol: h2c, members: [ {{ address: 127.0.0.1:{} }} ] }}\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: plain\n",
        server.port
    );
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // The message "5": the server sleeps 5 s.
    let started = std::time::Instant::now();
    let r = client
        .post(gw.url("/test.Echo/Slow"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(vec![0, 0, 0, 0, 1, b'5'])
        .timeout(Duration::from_secs(4))
        .send()
        .await
        .expect("the gateway answers before the member does");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-status"], "4", "{:?}", r.headers());
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// `health_check: { type: grpc }`: a member whose Health/Check says NOT_SERVING is taken
/// out, and back in when it serves again.
#[tokio::test]
async fn the_grpc_health_check_follows_the_serving_status() {
    let server = GrpcServer::start(None).await;
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
    h2c: true
access_log: {{ enabled: false }}
upstreams:
  plain:
    protocol: h2c
    members: [ {{ address: 127.0.0.1:{port} }} ]
    health_check: {{ type: grpc, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: plain
"#,
        port = server.port
    );
    let gw = Gateway::start(&yaml).await;
    let h2c = format!("127.0.0.1:{}", gw.port);
    let healthy =
        |v: &serde_json::Value| v["members"][0]["health"].as_str().map(|h| h == "healthy");
    let wait_health = |want: bool| {
        let gw = &gw;
        async move {
            let wait = async {
                while healthy(&gw.pool("plain").await) != Some(want) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .unwrap_or_else(|_| panic!("the member never became healthy={want}"));
        }
    };
    wait_health(true).await;
    assert_eq!(call(&h2c, "/test.Echo/SetServing", "0", &[]).await.code, 0);
    wait_health(false).await;
    let c = call(&h2c, "/test.Echo/Unary", "x", &[]).await;
    assert_eq!(c.code, 14, "no healthy member: UNAVAILABLE: {c:?}");
    // Straight to the member: the gateway has no healthy one to send it to.
    let direct = format!("127.0.0.1:{}", server.port);
    assert_eq!(
        call(&direct, "/test.Echo/SetServing", "1", &[]).await.code,
        0
    );
    wait_health(true).await;
    assert_eq!(call(&h2c, "/test.Echo/Unary", "x", &[]).await.code, 0);
}
