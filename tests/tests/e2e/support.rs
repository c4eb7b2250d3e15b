//! Runs the real `portico` binary on free ports with a config written for the test.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use portico_e2e::Witness;

/// A loopback port held for as long as the value lives: bound, not listening, so
/// connections to it are refused ("a member that is down") and no other test can take it
/// (`SO_REUSEPORT` lets only this test bind it again, to hand a listener to a process).
pub struct PortHold {
    _socket: socket2::Socket,
    pub port: u16,
}

impl PortHold {
    pub fn new() -> PortHold {
        let socket = reuseport_socket();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind a loopback port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("a bound address")
            .port();
        PortHold {
            _socket: socket,
            port,
        }
    }

    /// A listening socket on the held port, to hand to a process.
    pub fn listener(&self) -> TcpListener {
        let socket = reuseport_socket();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], self.port)).into())
            .expect("bind the held port");
        socket.listen(1024).expect("listen");
        socket.into()
    }
}

fn reuseport_socket() -> socket2::Socket {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket
}

/// A listening loopback socket on a port the kernel picked.
pub fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")
}

/// A loopback listener for a hand-written upstream in the test's own runtime.
pub fn tokio_loopback_listener() -> tokio::net::TcpListener {
    let listener = loopback_listener();
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    tokio::net::TcpListener::from_std(listener).expect("listener into tokio")
}

/// Reads one request head (up to its blank line) from `conn`, leaving what follows in `buf`;
/// `None` when the connection ends first.
pub async fn read_head(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a hand-written upstream sends for a request head: the bytes, and whether it then
/// closes the connection.
pub struct RawAnswer {
    pub bytes: Vec<u8>,
    pub then_close: bool,
}

/// A hand-written HTTP/1 upstream on a loopback port: for each request head on each
/// connection it writes what `answer(connection number from 1, head)` says.
pub fn raw_upstream(
    answer: impl Fn(usize, &str) -> RawAnswer + Send + Sync + 'static,
) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio_loopback_listener();
    let addr = listener.local_addr().expect("listener address");
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            n += 1;
            let (id, answer) = (n, answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut conn, &mut buf).await {
                    let RawAnswer { bytes, then_close } = answer(id, &head);
                    if conn.write_all(&bytes).await.is_err() || then_close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Hands `listeners` to the process `cmd` starts, systemd's way: as descriptors 3, 4, …
/// with `LISTEN_FDS`. The test never chooses a port that it binds later.
pub fn hand_listeners(cmd: &mut Command, listeners: &[TcpListener]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    assert!(fds.len() <= 16, "at most 16 listeners");
    cmd.env("LISTEN_FDS", fds.len().to_string());
    // SAFETY: runs in the child between fork and exec and only calls async-signal-safe
    // functions (fcntl, dup2); `fds` was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Move every source above the target range first, so a dup2 onto 3, 4, … cannot
            // close a source that happens to sit there; the copies close on exec.
            let mut moved = [0i32; 16];
            for (i, fd) in fds.iter().enumerate().take(moved.len()) {
                let copy = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = copy;
            }
            for (i, copy) in moved.iter().take(fds.len()).enumerate() {
                if libc::dup2(*copy, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("PORTICO_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/portico");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p portico`; `make test` does)",
        bin.display()
    );
    bin
}

pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub extra_ports: Vec<u16>,
}

/// Config text with `{port}`, `{admin}` and `{portN}` (extra free ports) filled in.
pub struct GatewayBuilder {
    yaml: String,
    env: Vec<(String, String)>,
    extra_ports: usize,
}

impl GatewayBuilder {
    pub fn new(yaml: &str) -> Self {
        GatewayBuilder {
            yaml: yaml.to_string(),
            env: Vec::new(),
            extra_ports: 0,
        }
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn extra_ports(mut self, n: usize) -> Self {
        self.extra_ports = n;
        self
    }
    pub async fn start(self) -> Gateway {
        // The listeners are bound here and handed to the gateway: no port is chosen first
        // and bound later, when another test may have taken it.
        let mut listeners: Vec<TcpListener> = (0..2 + self.extra_ports)
            .map(|_| loopback_listener())
            .collect();
        let port_of = |l: &TcpListener| l.local_addr().expect("bound").port();
        let port = port_of(&listeners[0]);
        let admin_port = port_of(&listeners[1]);
        let extra: Vec<u16> = listeners[2..].iter().map(port_of).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut yaml = self
            .yaml
            .replace("{port}", &port.to_string())
            .replace("{admin}", &admin_port.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        for (i, p) in extra.iter().enumerate() {
            yaml = yaml.replace(&format!("{{port{i}}}"), &p.to_string());
        }
        if !yaml.lines().any(|l| l.starts_with("admin:")) {
            yaml.push_str(&format!("\nadmin:\n  address: 127.0.0.1:{admin_port}\n"));
        }
        if !yaml.lines().any(|l| l.starts_with("server:")) {
            // One worker, as a one-CPU container gets by default and as the benchmark runs it
            // (the single-threaded scheduler); the shutdown tests also run two (work stealing).
            yaml.push_str(&format!(
                "\nserver:\n  threads: 1\n  grace_period: 5s\n  shutdown_timeout: 1s\n  upgrade_sock: {}/upgrade.sock\n",
                dir.path().display()
            ));
        }
        let config_path = dir.path().join("portico.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        // The gateway's own log goes to a file beside the config: read it when a test fails.
        let log = std::fs::File::create(dir.path().join("portico.log")).expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            // PORTICO_TEST_LOG widens what the gateways of a test run log, to find a fault.
            .env(
                "PORTICO_LOG",
                std::env::var("PORTICO_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Tracing is on only where a test asks for it.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_EXPORTER")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Sockets the config does not name are closed by the gateway (with a warning).
        listeners.retain(|l| yaml.contains(&format!("127.0.0.1:{}", port_of(l))));
        hand_listeners(&mut cmd, &listeners);
        let child = cmd.spawn().expect("spawn portico");
        drop(listeners);
        let gw = Gateway {
            child,
            port,
            admin_port,
            dir,
            config_path,
            extra_ports: extra,
        };
        gw.wait_ready().await;
        gw
    }
}

impl Gateway {
    pub async fn start(yaml: &str) -> Gateway {
        GatewayBuilder::new(yaml).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            let admin_ok = client
                .get(self.admin("/health"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            let proxy_ok = tokio::net::TcpStream::connect(self.addr()).await.is_ok();
            if admin_ok && proxy_ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("portico did not become ready on port {}", self.port);
    }

    /// Replaces the config file (atomically, as editors and config maps do).
    pub fn write_config(&self, yaml: &str) {
        let yaml = yaml
            .replace("{port}", &self.port.to_string())
            .replace("{admin}", &self.admin_port.to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        let tmp = self.dir.path().join("portico.yaml.tmp");
        let mut f = std::fs::File::create(&tmp).expect("create");
        f.write_all(yaml.as_bytes()).expect("write");
        f.sync_all().ok();
        std::fs::rename(&tmp, &self.config_path).expect("rename");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        wait_child(&mut self.child, limit)
    }
}

/// Waits up to `limit` for a child process to exit; answers how long it took, or `None`
/// (the child is still running) — so a test fails instead of hanging.
pub fn wait_child(child: &mut std::process::Child, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log lives in a temporary directory that goes with the gateway: a failing test
        // shows it, so what the gateway saw is not lost with the directory.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("portico.log"))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let lines: Vec<&str> = log.lines().collect();
            let shown = std::env::var("PORTICO_TEST_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(80);
            let tail = &lines[lines.len().saturating_sub(shown)..];
            eprintln!(
                "--- portico on port {} logged ({} lines, last {}):\n{}",
                self.port,
                lines.len(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A demo upstream in its own process, so a test can really kill it.
pub struct UpstreamProcess {
    pub child: Child,
    pub port: u16,
}

impl UpstreamProcess {
    /// Starts on the held port (again, after a kill: the hold keeps the port for the test).
    pub async fn start(name: &str, hold: &PortHold) -> UpstreamProcess {
        let port = hold.port;
        let listener = hold.listener();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico-demo-upstream"));
        cmd.arg(format!("{name}=fd:3"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        hand_listeners(&mut cmd, std::slice::from_ref(&listener));
        // Reaped by `Drop` (clippy cannot see through the struct).
        #[allow(clippy::zombie_processes)]
        let child = cmd.spawn().expect("spawn demo upstream");
        // Only the child may listen: once it is killed, connections must be refused.
        drop(listener);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return UpstreamProcess { child, port };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("demo upstream did not start on {port}");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `routes` for [`api_config`] that send every request to `api`.
pub const EVERYTHING_TO_API: &str = "  - { name: all, match: { prefix: / }, upstream: api }\n";

/// A config with one listener, no access log and one upstream `api` at `up`, then `routes`
/// (the YAML list under `routes:`).
pub fn api_config(up: SocketAddr, routes: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\n\
         upstreams:\n  api: {{ members: [ {{ address: {up} }} ] }}\nroutes:\n{routes}"
    )
}

pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.expect("a JSON body")
}

/// Asserts a gateway-produced error: status, error code (docs/errors.md), and a request id.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/json");
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{v}"
    );
}

/// A real `redis-server` on a free port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_new(false).await
    }

    /// Redis cannot take a handed-over socket, so it gets a port that was free a moment
    /// ago; if another process took it in between, Redis fails to bind and is started on
    /// another. Readiness is only accepted from this Redis (its process id), never from
    /// whatever else answers on the port.
    pub async fn start_new(cluster: bool) -> RedisServer {
        for _ in 0..5 {
            let port = loopback_listener().local_addr().expect("bound").port();
            let mut s = RedisServer {
                port,
                child: None,
                dir: tempfile::tempdir().expect("tempdir"),
                cluster,
            };
            if s.launch().await {
                return s;
            }
        }
        panic!("redis-server could not bind a port in five tries");
    }

    /// Starts Redis on `self.port`; `false` when it exited (the port was taken).
    async fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path());
        if self.cluster {
            cmd.arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"))
                .arg("--cluster-node-timeout")
                .arg("2000");
        }
        // Reaped by `stop`/`Drop`.
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            if self.process_id().await == Some(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start on {}", self.port);
    }

    /// The `process_id` of whatever Redis answers on the port.
    async fn process_id(&self) -> Option<u32> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        conn.write_all(b"INFO server\r\n").await.ok()?;
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        while got < buf.len() {
            let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf[got..]))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                break;
            }
            got += n;
            let text = String::from_utf8_lossy(&buf[..got]);
            if let Some(line) = text.lines().find(|l| l.starts_with("process_id:")) {
                return line["process_id:".len()..].trim().parse().ok();
            }
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch().await,
            "port {} was taken while Redis was down",
            self.port
        );
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three masters forming a Redis Cluster.
pub async fn redis_cluster() -> Vec<RedisServer> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisServer::start_new(true).await);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not become ready");
}

/// Runs `portico registry …` against a Redis URL.
pub fn registry(redis_url: &str, args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("registry")
        .arg("--redis")
        .arg(redis_url)
        .args(args)
        .output()
        .expect("portico registry");
    assert!(
        out.status.success(),
        "portico registry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `X-Upstream` names answering `n` requests.
pub async fn upstreams_hit(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        match client.get(url).send().await {
            Ok(r) => out.push(
                r.headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| r.status().as_u16().to_string()),
            ),
            Err(_) => out.push("error".into()),
        }
    }
    out
}

/// Constant load: `workers` loops per URL sending GETs until stopped; counts 200s and the rest.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `fresh_connections`: a new connection per request (each accepted anew), else keep-alive.
    pub fn start(urls: &[String], workers: usize, fresh_connections: bool) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for url in urls {
            for _ in 0..workers {
                let (stop, ok, failures, url) =
                    (stop.clone(), ok.clone(), failures.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut builder = reqwest::Client::builder();
                    if fresh_connections {
                        builder = builder.pool_max_idle_per_host(0);
                    }
                    let c = builder.build().expect("client");
                    while !stop.load(Ordering::Relaxed) {
                        let failure = match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                format!("{url}: status {status}: {body}")
                            }
                            Err(e) => format!("{url}: {}", error_chain(&e)),
                        };
                        let at = started.elapsed().as_secs_f64();
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("at {at:.3} s: {failure}"));
                    }
                }));
            }
        }
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the loops; answers the requests that succeeded and what each failure was.
    pub async fn stop(self) -> (usize, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = std::mem::take(&mut *self.failures.lock().expect("failures"));
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// An error with its sources, so a failure says what really happened (reset, EOF, timeout).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Fails with the whole metrics text when `line` is not in it.
/// Waits until the log file has a line that `wanted` accepts; that line, parsed.
pub async fn wait_line(
    path: &std::path::Path,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let found = async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let hit = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| wanted(v));
            if let Some(v) = hit {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), found)
        .await
        .unwrap_or_else(|_| panic!("no such line in {}", path.display()))
}

/// The value of one series (`name{labels} ` with its trailing space) in `/metrics` text;
/// 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub fn assert_metric(metrics: &str, line: &str) {
    assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
}

impl Gateway {
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn upstreams(&self) -> serde_json::Value {
        json(
            reqwest::get(self.admin("/upstreams"))
                .await
                .expect("upstreams"),
        )
        .await
    }

    /// `POST /reload` with `token`: the status and the JSON body (the new version, or the
    /// errors).
    pub async fn admin_reload(&self, token: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.admin("/reload"))
            .bearer_auth(token)
            .send()
            .await
            .expect("reload");
        (r.status().as_u16(), json(r).await)
    }

    /// One pool of `/upstreams` by name.
    pub async fn pool(&self, name: &str) -> serde_json::Value {
        let v = self.upstreams().await;
        v["upstreams"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no pool {name} in {v}"))
    }
}

/// A real Better Auth server (`tests/better-auth/server.mjs`, Node, the npm package pinned by
/// its lockfile): memory database, email+password, jwt and bearer plugins.
pub struct BetterAuth {
    /// Where it listens (`http://127.0.0.1:PORT`).
    pub url: String,
    child: Child,
}

pub const BETTER_AUTH_SECRET: &str = "gateway-test-secret-0123456789abcdef0123";

impl BetterAuth {
    /// `env`: `BETTER_AUTH_URL`, `COOKIE_CACHE`, … (see server.mjs).
    pub async fn start(env: &[(&str, &str)]) -> BetterAuth {
        use std::io::BufRead;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("better-auth");
        assert!(
            dir.join("node_modules/better-auth").exists(),
            "better-auth is not installed: run `make test` (or `npm ci` in {})",
            dir.display()
        );
        // Reaped by `Drop` (clippy cannot see through the struct).
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node (is Node.js installed?)");
        let stdout = child.stdout.take().expect("piped stdout");
        let url = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let url = lines
                .by_ref()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("READY ").map(str::to_string));
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            url
        });
        let url = tokio::time::timeout(Duration::from_secs(30), url)
            .await
            .expect("Better Auth did not start within 30 s")
            .expect("reader task")
            .expect("Better Auth exited before READY");
        BetterAuth { url, child }
    }

    /// Signs a user up at `base` (the server itself, or a gateway in front of it).
    pub async fn sign_up(&self, base: &str, email: &str) -> SignedIn {
        let body = serde_json::json!({"name": "Test", "email": email, "password": "password1234"});
        Self::post(base, "sign-up/email", body).await
    }

    pub async fn sign_in(&self, base: &str, email: &str) -> SignedIn {
        let body = serde_json::json!({"email": email, "password": "password1234"});
        Self::post(base, "sign-in/email", body).await
    }

    async fn post(base: &str, endpoint: &str, body: serde_json::Value) -> SignedIn {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/auth/{endpoint}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{endpoint} via {base}");
        SignedIn::from_response(r).await
    }
}

impl Drop for BetterAuth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a sign-up or sign-in answered: the cookies it set and the user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// `name=value` for every Set-Cookie.
    pub cookies: Vec<(String, String)>,
    /// The `set-auth-token` header (bearer plugin): `token.sig`.
    pub bearer: Option<String>,
    pub user_id: String,
    /// The raw (unsigned) session token.
    pub token: String,
}

impl SignedIn {
    pub async fn from_response(r: reqwest::Response) -> SignedIn {
        let cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| {
                let pair = v.to_str().ok()?.split(';').next()?;
                let (n, v) = pair.split_once('=')?;
                Some((n.to_string(), v.to_string()))
            })
            .collect();
        let bearer = r
            .headers()
            .get("set-auth-token")
            .map(|v| v.to_str().unwrap().to_string());
        let body = json(r).await;
        SignedIn {
            cookies,
            bearer,
            user_id: body["user"]["id"].as_str().unwrap().to_string(),
            token: body["token"].as_str().unwrap().to_string(),
        }
    }

    /// The value of the cookie whose name ends with `suffix`.
    pub fn cookie(&self, suffix: &str) -> String {
        self.cookies
            .iter()
            .find(|(n, _)| n.ends_with(suffix))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {suffix} cookie in {:?}", self.cookies))
    }

    /// A `Cookie` header with every cookie that was set.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A self-signed certificate for `localhost` written to `dir` as `c.pem` and `c.key`; its PEM,
/// for clients to trust.
pub fn localhost_cert_files(dir: &std::path::Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    std::fs::write(dir.join("c.pem"), cert.cert.pem()).expect("write c.pem");
    std::fs::write(dir.join("c.key"), cert.signing_key.serialize_pem()).expect("write c.key");
    cert.cert.pem()
}
