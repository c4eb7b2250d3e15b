#!/usr/bin/env python3
"""Portico's load benchmark, run beside nginx, HAProxy and direct-to-upstream in one run.

Layout on a 2-core machine: every proxy is pinned to core 0 with one worker; the upstream
(nginx `return 200`, 12-byte body) and the load generator (wrk, one thread, 50 keep-alive
connections) share core 1. Targets are measured in alternating rounds so drift hits all of
them alike. Reports requests/s, p50/p99, ratios to nginx, new upstream connections per 100k
requests, RSS with 10k idle keep-alive clients, 10k routes against 10, the reload of a
10k-route config under load, and the auth routes (HS256 JWT, EdDSA JWT via JWKS, a Better
Auth session cookie resolved by a real Better Auth server, then cached) against passthrough.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procs import rss_kib, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The binary that ships: the profile-guided build of `make release` (PORTICO_BIN overrides).
PORTICO = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "target", "pgo", "release", "portico")
RATE_LOAD = os.path.join(ROOT, "target", "release", "portico-rate-load")
TICK = os.sysconf("SC_CLK_TCK")
PROXY_CORE, LOAD_CORE = "0", "1"
UPSTREAM = 18000
PORTS = {"direct": UPSTREAM, "nginx": 18001, "haproxy": 18002}
ADMIN_TOKEN = "bench-token"


def require_portico():
    if not os.access(PORTICO, os.X_OK):
        sys.exit(f"{PORTICO} is missing: run `make release` (or set PORTICO_BIN to a build)")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def http_get(url, token=None, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, cmd, core, env=None, port=None):
        p = subprocess.Popen(["taskset", "-c", core] + cmd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        self.procs.append(p)
        if port:
            wait_port(port)
        return p

    def stop(self, p):
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
        self.procs.remove(p)

    def kill(self, p):
        p.kill()
        p.wait()
        self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def nginx_conf(tmp, name, body):
    path = os.path.join(tmp, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  {body}
}}
""")
    return ["nginx", "-c", path, "-p", tmp, "-g", "daemon off;"]


def upstream_accepts():
    text = http_get(f"http://127.0.0.1:{UPSTREAM}/nginx_status")
    return int(text.splitlines()[2].split()[0])


REDIS_PORT = 18020
BETTER_AUTH_PORT = 18040
JWT_SECRET = "bench-secret-bench-secret-bench-secret!"
BETTER_AUTH_SECRET = "bench-better-auth-secret-0123456789abcdef"


def b64u(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret):
    import hashlib
    import hmac
    head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64u(json.dumps({"sub": "bench-user", "exp": int(time.time()) + 86400, "roles": ["reader"]}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64u(sig)}"


def eddsa_token_and_jwks(tmp):
    """An Ed25519 key made with openssl: a token signed with it, and its JWKS."""
    key = os.path.join(tmp, "ed25519.pem")
    sh(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key])
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64u(der[-32:]), "kid": "bench", "alg": "EdDSA"}]}
    head = b64u(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "bench"}).encode())
    body = b64u(json.dumps({"sub": "bench-user", "exp": int(time.time()) + 86400}).encode())
    data = os.path.join(tmp, "signing-input")
    with open(data, "w") as f:
        f.write(f"{head}.{body}")
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", data],
                         check=True, capture_output=True).stdout
    with open(os.path.join(tmp, "jwks.json"), "w") as f:
        json.dump(jwks, f)
    return f"{head}.{body}.{b64u(sig)}"


def better_auth_session(procs):
    """Starts the tests' real Better Auth server, signs a user up, returns its session cookie."""
    server = os.path.join(ROOT, "tests", "better-auth")
    env = dict(os.environ, PORT=str(BETTER_AUTH_PORT), BETTER_AUTH_SECRET=BETTER_AUTH_SECRET)
    p = subprocess.Popen(["taskset", "-c", LOAD_CORE, "node", "server.mjs"], cwd=server,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    procs.procs.append(p)
    wait_port(BETTER_AUTH_PORT, timeout=30)
    body = json.dumps({"name": "Bench", "email": "bench@example.com", "password": "password1234"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{BETTER_AUTH_PORT}/api/auth/sign-up/email", data=body,
                                 method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        cookies = [c.split(";")[0] for c in r.headers.get_all("Set-Cookie")]
    return next(c for c in cookies if c.startswith("better-auth.session_token="))


FULL_CHAIN = ('{ jwt: { providers: [ { algorithms: [HS256], secret_env: BENCH_JWT_SECRET } ], roles_claim: roles } }, '
              + '{ rate_limit: { limits: [ { name: bench, rate: 100000000/s, key: [user_id] } ] } }')
EDDSA = ('{ jwt: { providers: [ { algorithms: [EdDSA], jwks_url: "http://127.0.0.1:%d/jwks.json" } ] } }' % UPSTREAM)
HS256 = '{ jwt: { providers: [ { algorithms: [HS256], secret_env: BENCH_JWT_SECRET } ] } }'
SESSION = ('{ better_auth: { secret_env: BENCH_BETTER_AUTH_SECRET, session_endpoint: '
           '{ url: "http://127.0.0.1:%d/api/auth/get-session" } } }' % BETTER_AUTH_PORT)
SESSION_NO_REVOCATION = SESSION.replace("} } }", "}, revocation: { enabled: false } } }")
# Revocations of other users' sessions loaded into the session row before it is measured, so
# its check does look something up (with none known it looks nothing up).
REVOKED_OTHERS = 1000
# The full chain with the browser edge in front: CORS (an allowed Origin on every request)
# and security headers.
EDGE = ('{ cors: { allow_origins: ["https://app.example.test"], allow_credentials: true, '
        'expose_headers: [X-Request-Id] } }, { security_headers: {} }')
LOCAL_LIMIT = '{ rate_limit: { limits: [ { name: bench, rate: 100000000/s, key: client_ip } ] } }'
GLOBAL_LIMIT = '{ rate_limit: { limits: [ { name: bench, rate: 100000000/s, key: client_ip, scope: global } ] } }'


def portico_yaml(port, admin, routes=1, headers=False, plugin=None, redis=False, access_log=None,
                 trace_ratio=None, event_interval=None):
    interval = f", event_interval: {event_interval}" if event_interval else ""
    lines = [
        f"server: {{ threads: 1, watch_config: false, upstream_keepalive_pool_size: 1024{interval} }}",
        f"listeners: [ {{ address: 127.0.0.1:{port} }} ]",
        f"admin: {{ address: 127.0.0.1:{admin}, token_env: BENCH_ADMIN_TOKEN }}",
        f"access_log: {{ enabled: true, path: '{access_log}' }}" if access_log else "access_log: { enabled: false }",
        f"upstreams: {{ up: {{ members: [ {{ address: 127.0.0.1:{UPSTREAM} }} ] }} }}",
        "routes:",
    ]
    for i in range(routes - 1):
        lines.append(f"  - {{ name: r{i}, match: {{ prefix: /svc{i} }}, upstream: up }}")
    plugins = ""
    if headers:
        plugins = ', plugins: [ { headers: { request: { set: { X-Client-Ip: "${client_ip}" } }, response: { remove: [Server] } } } ]'
    if plugin:
        plugins = f", plugins: [ {plugin} ]"
    if redis:
        lines.insert(1, f"redis: {{ url: 'redis://127.0.0.1:{REDIS_PORT}' }}")
    if trace_ratio is not None:
        # The upstream nginx accepts the OTLP exports (and discards them).
        lines.insert(1, f"tracing: {{ endpoint: 'http://127.0.0.1:{UPSTREAM}/v1/traces', "
                        f"sampler: traceidratio, sample_ratio: {trace_ratio} }}")
    lines.append(f"  - {{ name: main, match: {{ prefix: / }}, upstream: up{plugins} }}")
    return "\n".join(lines) + "\n"


def alternating(names, r):
    """The targets in round `r`'s order: forward in even rounds, backward in odd ones, so no
    target always runs right after the same neighbour."""
    return names if r % 2 == 0 else list(reversed(names))


def start_portico(procs, tmp, name, port, admin, **kw):
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(portico_yaml(port, admin, **kw))
    env = dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN, BENCH_JWT_SECRET=JWT_SECRET,
               BENCH_BETTER_AUTH_SECRET=BETTER_AUTH_SECRET, PORTICO_LOG="error")
    p = procs.start([PORTICO, "run", "-c", path], PROXY_CORE, env=env, port=port)
    return p, path


# Measured under fixed-rate load: nginx and Portico as a plain proxy and with the full chain.
LATENCY_TARGETS = ["nginx", "portico", "portico-full-chain"]

LAT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def to_ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, seconds, path="/", conns=50, header=None):
    """`header`: one header line, or a list of them."""
    lines = [header] if isinstance(header, str) else (header or [])
    auth = [arg for line in lines for arg in ("-H", line)]
    out = sh(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"] + auth +
             [f"http://127.0.0.1:{port}{path}"]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: to_ms(v, u) for p, v, u in LAT.findall(out)}
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "total": total, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors}


def cpu_ticks(pid):
    """User and system CPU time of a process so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def rate_load(port, rate, seconds, path="/", header=None):
    """Fixed-rate (open-loop) load: latency at a given rate, which wrk cannot measure."""
    out = sh(["taskset", "-c", LOAD_CORE, RATE_LOAD, f"127.0.0.1:{port}", path, str(int(rate)),
              str(seconds), "50"] + ([header] if header else [])).stdout
    return json.loads(out)


def idle_clients_rss(port, pid, n):
    """Opens n keep-alive connections one after another, one request each, and keeps them idle
    (as clients accumulate at an edge), then reads the proxy's resident memory."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.settimeout(10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            s.recv(4096)
            socks.append(s)
        time.sleep(1.0)
        return rss_kib(pid)
    finally:
        for s in socks:
            s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle-clients", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s, 2k idle clients")
    args = ap.parse_args()
    require_portico()
    if args.quick:
        args.seconds, args.rounds, args.idle_clients = 2, 1, 2000

    tmp = tempfile.mkdtemp(prefix="portico-bench-")
    os.chmod(tmp, 0o755)
    procs = Procs()
    hs256 = f"Authorization: Bearer {hs256_token(JWT_SECRET)}"
    headers = {"portico-full-chain": hs256, "portico-hs256": hs256,
               "portico-full-chain-trace-1pct": hs256, "portico-full-chain-trace-100pct": hs256,
               "portico-full-chain-edge": [hs256, "Origin: https://app.example.test"],
               "portico-eddsa-jwks": f"Authorization: Bearer {eddsa_token_and_jwks(tmp)}"}
    results = {}
    try:
        procs.start(nginx_conf(tmp, "upstream", f"""
  server {{
    listen 127.0.0.1:{UPSTREAM} backlog=4096;
    location = /nginx_status {{ stub_status; }}
    location = /jwks.json {{ root {tmp}; }}
    location = /v1/traces {{ client_max_body_size 64m; return 200 ""; }}
    location / {{ return 200 "hello world\\n"; }}
  }}"""), LOAD_CORE, port=UPSTREAM)
        procs.start(nginx_conf(tmp, "proxy", f"""
  upstream backend {{ server 127.0.0.1:{UPSTREAM}; keepalive 128; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}"""), PROXY_CORE, port=PORTS["nginx"])
        hap = os.path.join(tmp, "haproxy.cfg")
        with open(hap, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend be
backend be
  server s1 127.0.0.1:{UPSTREAM}
""")
        hp = procs.start(["haproxy", "-f", hap], PROXY_CORE, port=PORTS["haproxy"])
        procs.start(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no"], LOAD_CORE, port=REDIS_PORT)
        headers["portico-session"] = f"Cookie: {better_auth_session(procs)}"
        headers["portico-session-no-revocation"] = headers["portico-session"]
        targets = dict(PORTS)
        # The process whose CPU time each target costs (the proxy; none for direct).
        master = open(os.path.join(tmp, "proxy.pid")).read().strip()
        # The worker holds the connections and does the work, not the master.
        nginx_pid = int(sh(["pgrep", "-P", master]).stdout.split()[0])
        pids = {"nginx": nginx_pid, "haproxy": hp.pid}
        portico_targets = [
            ("portico", "passthrough", 18010, {}),
            ("portico-headers", "headers", 18012, {"headers": True}),
            ("portico-local-limit", "local-limit", 18030, {"plugin": LOCAL_LIMIT}),
            ("portico-global-limit", "global-limit", 18032, {"plugin": GLOBAL_LIMIT, "redis": True}),
            ("portico-full-chain", "full-chain", 18034,
             {"plugin": FULL_CHAIN, "access_log": os.path.join(tmp, "access.log")}),
            ("portico-full-chain-trace-1pct", "full-chain-trace1", 18048,
             {"plugin": FULL_CHAIN, "access_log": os.path.join(tmp, "access-t1.log"), "trace_ratio": 0.01}),
            ("portico-full-chain-trace-100pct", "full-chain-trace100", 18050,
             {"plugin": FULL_CHAIN, "access_log": os.path.join(tmp, "access-t100.log"), "trace_ratio": 1.0}),
            ("portico-full-chain-edge", "full-chain-edge", 18046,
             {"plugin": EDGE + ", " + FULL_CHAIN, "access_log": os.path.join(tmp, "access-edge.log")}),
            ("portico-hs256", "hs256", 18038, {"plugin": HS256}),
            ("portico-session", "session", 18042, {"plugin": SESSION}),
            ("portico-session-no-revocation", "session-norev", 18044, {"plugin": SESSION_NO_REVOCATION}),
            ("portico-eddsa-jwks", "eddsa", 18036, {"plugin": EDDSA}),
            ("portico-10-routes", "routes10", 18014, {"routes": 10}),
            ("portico-10k-routes", "routes10k", 18016, {"routes": 10000}),
        ]
        portico_procs = {}
        for name, config, port, kw in portico_targets:
            p, _ = start_portico(procs, tmp, config, port, port + 1, **kw)
            targets[name] = port
            pids[name] = p.pid
            portico_procs[name] = p

        for i in range(REVOKED_OTHERS):
            http_get("http://127.0.0.1:18043/revocations", token=ADMIN_TOKEN, method="POST",
                     body=json.dumps({"user_id": f"someone-else-{i}"}).encode())
        for name, port in targets.items():  # warm-up: connections, caches, JWKS fetch
            warm = wrk(port, 1, header=headers.get(name))
            if warm["errors"]:
                raise RuntimeError(f"{name}: {warm['errors']} failed requests while warming up")

        runs = {name: [] for name in targets}
        new_conns = {name: [] for name in targets}
        names = list(targets)
        for r in range(args.rounds):
            for name in alternating(names, r):
                path = "/svc9990/x" if name == "portico-10k-routes" else "/svc5/x" if name == "portico-10-routes" else "/"
                before = upstream_accepts()
                cpu_before = cpu_ticks(pids[name]) if name in pids else None
                res = wrk(targets[name], args.seconds, path=path, header=headers.get(name))
                if cpu_before:
                    user, system = (b - a for a, b in zip(cpu_before, cpu_ticks(pids[name])))
                    res["user_us"] = user / TICK * 1e6 / max(1, res["total"])
                    res["sys_us"] = system / TICK * 1e6 / max(1, res["total"])
                after = upstream_accepts()
                runs[name].append(res)
                if name != "direct":
                    # minus 1: the status request itself opens a connection
                    new_conns[name].append(max(0, after - before - 1) * 100000 / max(1, res["total"]))
                print(f"round {r + 1} {name:20s} {res['rps']:9.0f} req/s  p50 {res['p50']:.2f} ms  p99 {res['p99']:.2f} ms  errors {res['errors']}", file=sys.stderr)

        summary = {}
        for name, rs in runs.items():
            summary[name] = {
                "rps": statistics.median(x["rps"] for x in rs),
                "p50_ms": statistics.median(x["p50"] for x in rs),
                "p99_ms": statistics.median(x["p99"] for x in rs),
                "errors": sum(x["errors"] for x in rs),
                "new_upstream_conns_per_100k": statistics.median(new_conns[name]) if new_conns[name] else None,
                "user_us_per_req": statistics.median(x["user_us"] for x in rs) if "user_us" in rs[0] else None,
                "sys_us_per_req": statistics.median(x["sys_us"] for x in rs) if "sys_us" in rs[0] else None,
            }
        nginx_rps = summary["nginx"]["rps"]
        for s in summary.values():
            s["vs_nginx"] = s["rps"] / nginx_rps
        results["throughput"] = summary
        results["routes_10k_vs_10"] = summary["portico-10k-routes"]["rps"] / summary["portico-10-routes"]["rps"]
        results["local_limit_vs_passthrough"] = summary["portico-local-limit"]["rps"] / summary["portico"]["rps"]
        results["global_vs_local_limit"] = summary["portico-global-limit"]["rps"] / summary["portico-local-limit"]["rps"]
        passthrough = summary["portico"]["rps"]
        results["auth"] = {
            "hs256_vs_passthrough": summary["portico-hs256"]["rps"] / passthrough,
            "eddsa_jwks_vs_hs256": summary["portico-eddsa-jwks"]["rps"] / summary["portico-hs256"]["rps"],
            "session_vs_passthrough": summary["portico-session"]["rps"] / passthrough,
            "session_revocation_vs_none": summary["portico-session"]["rps"]
            / summary["portico-session-no-revocation"]["rps"],
            "full_chain_vs_passthrough": summary["portico-full-chain"]["rps"] / passthrough,
            "edge_vs_full_chain": summary["portico-full-chain-edge"]["rps"]
            / summary["portico-full-chain"]["rps"],
        }
        results["tracing"] = {
            "sampled_1pct_vs_off": summary["portico-full-chain-trace-1pct"]["rps"]
            / summary["portico-full-chain"]["rps"],
            "sampled_100pct_vs_off": summary["portico-full-chain-trace-100pct"]["rps"]
            / summary["portico-full-chain"]["rps"],
        }

        # Reload of the 10k-route config under load, two kinds in turn: one route edited (what
        # an operator's change is; the other routes are taken from the running config) and a
        # line added at the top (every route moves, so the whole file is parsed again).
        path10k = os.path.join(tmp, "routes10k.yaml")
        load = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c50", "-d9s", "--latency",
                                 "http://127.0.0.1:18016/svc9990/x"], stdout=subprocess.PIPE, text=True)
        times = {"edited": [], "moved": []}
        time.sleep(0.5)
        for i in range(5):
            with open(path10k) as f:
                text = f.read()
            edited = text.replace(f"prefix: /svc{1000 * (i + 1)} }}", f"prefix: /edited{i} }}", 1)
            assert edited != text, "the route to edit is missing"
            for kind, new in (("edited", edited), ("moved", f"# change {i}\n" + edited)):
                with open(path10k, "w") as f:
                    f.write(new)
                out = json.loads(http_get("http://127.0.0.1:18017/reload", token=ADMIN_TOKEN, method="POST"))
                times[kind].append(out["elapsed_ms"])
                time.sleep(0.3)
        out, _ = load.communicate()
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        failed = int(m.group(1)) if m else 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            failed += sum(int(x) for x in m.groups())
        results["reload_10k_routes"] = {"elapsed_ms": times["edited"],
                                        "median_ms": statistics.median(times["edited"]),
                                        "whole_parse_elapsed_ms": times["moved"],
                                        "whole_parse_median_ms": statistics.median(times["moved"]),
                                        "failed_requests": failed}

        # Only the proxies measured for latency stay up on the proxy core: near saturation, a
        # tail latency is sensitive to anything else that wakes there.
        for name, p in portico_procs.items():
            if name not in LATENCY_TARGETS:
                procs.kill(p)
        procs.kill(hp)

        # Latency at half of nginx's peak rate, fixed-rate load, alternating rounds.
        rate = nginx_rps / 2
        at_rate = {name: [] for name in LATENCY_TARGETS}
        for r in range(args.rounds):
            for name in alternating(LATENCY_TARGETS, r):
                res = rate_load(targets[name], rate, 2 * args.seconds, header=headers.get(name))
                at_rate[name].append(res)
                print(f"round {r + 1} {name:20s} at {rate:.0f} req/s: p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
                      f"p99.9 {res['p999_ms']:.3f} ms  errors {res['errors']}", file=sys.stderr)
        results["latency_at_half_nginx_peak"] = {
            "rate": rate,
            **{name: {key: statistics.median(x[key] for x in rs) for key in ("achieved_rps", "p50_ms", "p99_ms", "p999_ms")}
               | {"errors": sum(x["errors"] for x in rs)} for name, rs in at_rate.items()},
        }

        # RSS with idle keep-alive clients.
        results["rss_idle"] = {
            "clients": args.idle_clients,
            "portico_baseline_mib": rss_kib(pids["portico"]) / 1024,
            "portico_mib": idle_clients_rss(18010, pids["portico"], args.idle_clients) / 1024,
            "nginx_mib": idle_clients_rss(PORTS["nginx"], nginx_pid, args.idle_clients) / 1024,
        }
    finally:
        procs.stop_all()

    print()
    print(f"{'target':22s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'vs nginx':>9s} {'new upstream conns/100k':>24s}"
          f" {'user us/req':>12s} {'sys us/req':>11s}")
    for name, s in results["throughput"].items():
        nc = s["new_upstream_conns_per_100k"]
        user = "-" if s["user_us_per_req"] is None else f"{s['user_us_per_req']:.1f}"
        system = "-" if s["sys_us_per_req"] is None else f"{s['sys_us_per_req']:.1f}"
        print(f"{name:22s} {s['rps']:9.0f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['vs_nginx']:8.2f}x {('-' if nc is None else f'{nc:.1f}'):>24s}"
              f" {user:>12s} {system:>11s}")
    lat = results["latency_at_half_nginx_peak"]
    print(f"\nLatency at {lat['rate']:.0f} req/s (half of nginx's peak), fixed-rate load:")
    for name in LATENCY_TARGETS:
        s = lat[name]
        print(f"  {name:20s} achieved {s['achieved_rps']:8.0f} req/s  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
              f"p99.9 {s['p999_ms']:.3f} ms  errors {s['errors']}")
    r = results["rss_idle"]
    print(f"\nRSS with {r['clients']} idle keep-alive clients: portico {r['portico_mib']:.1f} MiB (idle {r['portico_baseline_mib']:.1f} MiB), nginx {r['nginx_mib']:.1f} MiB")
    print(f"10k routes vs 10 routes: {results['routes_10k_vs_10']:.3f}x")
    print(f"local rate limit vs passthrough: {results['local_limit_vs_passthrough']:.3f}x; "
          f"global vs local limit: {results['global_vs_local_limit']:.3f}x")
    a = results["auth"]
    print(f"HS256 JWT vs passthrough: {a['hs256_vs_passthrough']:.3f}x; EdDSA/JWKS (cached) vs HS256: "
          f"{a['eddsa_jwks_vs_hs256']:.3f}x; Better Auth session (warm cache) vs passthrough: "
          f"{a['session_vs_passthrough']:.3f}x; full chain vs passthrough: {a['full_chain_vs_passthrough']:.3f}x")
    print(f"full chain with cors + security_headers vs without: {a['edge_vs_full_chain']:.3f}x")
    t = results["tracing"]
    print(f"full chain with tracing, 1 % sampled vs off: {t['sampled_1pct_vs_off']:.3f}x; "
          f"100 % sampled vs off: {t['sampled_100pct_vs_off']:.3f}x")
    print(f"Better Auth session with revocation on ({REVOKED_OTHERS} other users revoked) vs off: "
          f"{a['session_revocation_vs_none']:.3f}x")
    rl = results["reload_10k_routes"]
    print(f"reload of 10k routes: one route edited median {rl['median_ms']:.1f} ms, every route moved (whole "
          f"parse) median {rl['whole_parse_median_ms']:.1f} ms, failed requests during reloads: {rl['failed_requests']}")
    os.makedirs(os.path.join(ROOT, "benches", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "benches", "out", "latest.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
