//! A real browser (headless Chromium) and real Socket.io peers through the gateway, with a
//! real Better Auth server: what a front-end developer would try.

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

/// Runs a Node script of `tests/browser` (npm packages pinned by its lockfile); its last
/// line of output, as JSON.
fn node(script: &str, args: &[&str]) -> serde_json::Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the browser test packages are not installed: run `make test` (or `npm ci` in {})",
        dir.display()
    );
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

#[tokio::test]
async fn chromium_on_another_origin_calls_a_session_route_through_cors() {
    let ba = BetterAuth::start(&[]).await;
    let up = Witness::start("api").await.unwrap();
    let ba_addr = ba.url.trim_start_matches("http://");
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
  - address: 127.0.0.1:{{port0}}
  - address: 127.0.0.1:{{port1}}
access_log: {{ enabled: false }}
upstreams:
  auth: {{ members: [ {{ address: {ba_addr} }} ] }}
  api: {{ members: [ {{ address: {up} }} ] }}
routes:
  - name: page
    match: {{ exact: /page }}
    plugins: [ {{ respond: {{ headers: {{ Content-Type: text/html }}, body: "<!doctype html><title>front end</title>" }} }} ]
  - name: auth
    match: {{ prefix: /api/auth }}
    upstream: auth
    auth: {{ required: false, invalid_credentials: anonymous, forward_credentials: true }}
    plugins: [ &cors {{ cors: {{ allow_origins: ["http://127.0.0.1:{{port0}}"], allow_credentials: true, allow_headers: [Content-Type, X-Custom] }} }}, &session {{ better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "{ba}/api/auth/get-session" }} }} }} ]
  - name: data
    match: {{ prefix: /api/data }}
    upstream: api
    plugins: [ *cors, *session ]
  - name: nocors
    match: {{ prefix: /nocors }}
    upstream: api
    plugins: [ *session ]
"#,
        ba = ba.url,
        up = up.addr
    );
    let gw = GatewayBuilder::new(&yaml)
        .env("TEST_BA_SECRET", BETTER_AUTH_SECRET)
        .extra_ports(2)
        .start()
        .await;
    let page = format!("http://127.0.0.1:{}/page", gw.extra_ports[0]);
    let other = format!("http://127.0.0.1:{}/page", gw.extra_ports[1]);
    let api = format!("http://127.0.0.1:{}", gw.port);
    let seen = tokio::task::spawn_blocking(move || {
        node("cors.mjs", &[&page, &other, &api, "browser@example.com"])
    })
    .await
    .unwrap();

    // Signed out: the page reads the 401 JSON (CORS headers on the gateway's own answer).
    let signed_out = &seen["signedOut"]["signed_out"];
    assert_eq!(signed_out["status"], 401, "{seen}");
    let body: serde_json::Value =
        serde_json::from_str(signed_out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{seen}");
    assert_eq!(seen["signUp"], 200, "{seen}");
    // Signed in: a credentialed simple request and a preflighted one both succeed.
    for call in ["simple", "preflighted"] {
        let r = &seen["signedIn"][call];
        assert_eq!(r["status"], 200, "{call}: {seen}");
        let echo: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert!(
            echo["headers"]["x-user-id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{call}: {echo}"
        );
    }
    // The controls: a route without the cors plugin, and an origin the plugin does not allow.
    assert!(
        seen["signedIn"]["no_cors_route"]["blocked"].is_string(),
        "{seen}"
    );
    for call in ["simple", "preflighted"] {
        assert!(
            seen["disallowed"][call]["blocked"].is_string(),
            "{call}: {seen}"
        );
    }
}

/// Two Socket.io servers (`node socketio.mjs servers`), stopped on drop.
struct SocketIoServers {
    child: std::process::Child,
    ports: Vec<u16>,
}

impl SocketIoServers {
    fn start() -> SocketIoServers {
        use std::io::BufRead;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        let mut child = Command::new("node")
            .args(["socketio.mjs", "servers"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run node");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("READY ").map(str::to_string))
            .expect("the Socket.io servers did not start");
        std::thread::spawn(move || lines.for_each(drop));
        let ports = ready.split(' ').filter_map(|p| p.parse().ok()).collect();
        SocketIoServers { child, ports }
    }
}

impl Drop for SocketIoServers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn socket_io_long_polls_then_upgrades_sticky_by_the_verified_user() {
    let ba = BetterAuth::start(&[]).await;
    let servers = tokio::task::spawn_blocking(SocketIoServers::start)
        .await
        .unwrap();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  auth: {{ members: [ {{ address: {ba_addr} }} ] }}
  sio:
    balance: consistent_hash
    hash_key: user_id
    members: [ {{ address: "127.0.0.1:{a}" }}, {{ address: "127.0.0.1:{b}" }} ]
routes:
  - name: auth
    match: {{ prefix: /api/auth }}
    upstream: auth
  - name: socket
    match: {{ prefix: /socket.io }}
    upstream: sio
    plugins: [ {{ better_auth: {{ secret_env: TEST_BA_SECRET, session_endpoint: {{ url: "{ba}/api/auth/get-session" }} }} }} ]
"#,
        ba_addr = ba.url.trim_start_matches("http://"),
        ba = ba.url,
        a = servers.ports[0],
        b = servers.ports[1],
    );
    let gw = GatewayBuilder::new(&yaml)
        .env("TEST_BA_SECRET", BETTER_AUTH_SECRET)
        .start()
        .await;
    let mut members = Vec::new();
    for email in [
        "one@example.com",
        "two@example.com",
        "three@example.com",
        "four@example.com",
    ] {
        let user = ba.sign_up(&gw.url(""), email).await;
        let cookie = user.cookie_header();
        let url = gw.url("");
        let messages = if members.is_empty() { "10000" } else { "10" };
        for _ in 0..2 {
            let (url, cookie) = (url.clone(), cookie.clone());
            let seen = tokio::task::spawn_blocking(move || {
                node("socketio.mjs", &["client", &url, &cookie, messages])
            })
            .await
            .unwrap();
            // Long-polling first (several requests, one member), then the upgrade.
            assert_eq!(seen["firstTransport"], "polling", "{seen}");
            assert_eq!(seen["transport"], "websocket", "{seen}");
            assert_eq!(
                seen["userId"],
                user.user_id.as_str(),
                "the member sees the verified user: {seen}"
            );
            assert_eq!(seen["echoed"], messages.parse::<u64>().unwrap(), "{seen}");
            members.push((email, seen["member"].as_str().unwrap().to_string()));
        }
    }
    // Each user stays on one member across connections. (Which member is the hash's choice:
    // four random user ids may all land on one, so the spread is not asserted. Without
    // stickiness long-polling itself fails: the other member does not know the session.)
    for pair in members.chunks(2) {
        assert_eq!(
            pair[0], pair[1],
            "a user moved between members: {members:?}"
        );
    }
}

#[tokio::test]
async fn the_status_page_shows_a_member_going_unhealthy() {
    use std::io::BufRead;
    let (hold_a, hold_b) = (PortHold::new(), PortHold::new());
    let _a = UpstreamProcess::start("a", &hold_a).await;
    let mut b = UpstreamProcess::start("b", &hold_b).await;
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
upstreams:
  p:
    members: [ {{ address: "127.0.0.1:{}" }}, {{ address: "127.0.0.1:{}" }} ]
    health_check: {{ path: /health, interval: 200ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 2 }}
routes:
  - name: app
    match: {{ prefix: / }}
    upstream: p
"#,
        hold_a.port, hold_b.port
    );
    let gw = Gateway::start(&yaml).await;
    reqwest::get(gw.url("/")).await.unwrap();
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let mut node = Command::new("node")
        .arg("status.mjs")
        .arg(gw.admin("/status"))
        .arg(format!("127.0.0.1:{}", hold_b.port))
        .arg(&screenshot)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    let stdout = node.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let healthy = tokio::task::spawn_blocking(move || {
        let seen = lines.by_ref().map_while(Result::ok).any(|l| l == "HEALTHY");
        (seen, lines)
    });
    let (seen, lines) = healthy.await.unwrap();
    assert!(seen, "the page never showed the member healthy");
    b.kill();
    let result = tokio::task::spawn_blocking(move || {
        let last = lines.map_while(Result::ok).last().unwrap_or_default();
        let status = node.wait().expect("node");
        (status, last)
    })
    .await
    .unwrap();
    assert!(
        result.0.success(),
        "the page never showed the member unhealthy: {}",
        result.1
    );
    let seen: serde_json::Value = serde_json::from_str(&result.1).unwrap();
    assert!(
        seen["meta"].as_str().unwrap().contains("config version 1"),
        "{seen}"
    );
    assert!(
        seen["routes"][0].as_str().unwrap().starts_with("app"),
        "{seen}"
    );
    assert_eq!(
        seen["failed"],
        serde_json::json!([]),
        "the page loaded something that failed"
    );
    assert!(screenshot.exists());
}
