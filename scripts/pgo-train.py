#!/usr/bin/env python3
"""The training run of the profile-guided build (scripts/release.sh).

Usage: scripts/pgo-train.py PORTICO DEMO_UPSTREAM

Runs the instrumented PORTICO as an edge in front of the demo upstream and puts it under the
traffic it exists for, so that the profile the compiler optimises for is the request path as
it is used: what the profile never sees is laid out as cold. Every kind of traffic below is
there for that reason; the shares follow what an edge mostly does (plain HTTP/1.1 keep-alive
and TLS) without leaving any path at zero.

- HTTP/1.1 keep-alive, plain and over TLS (wrk): passthrough; JWT (HS256) with a per-user
  rate limit and identity headers; CORS, security headers and compressed answers; POST
  bodies; requests refused for want of a token.
- HTTP/2 over TLS (ALPN) and in cleartext (h2load).
- WebSocket upgrades with a few echoed messages.
- The access log, written to a file, and traces for 5 % of requests (exported to the demo
  upstream, which accepts anything).

Config reloads are left out on purpose: trained with them (five of a config with 10,000
routes, or three with 2,000), a reload of 10k routes took the same time and a passthrough
request 1 % more instructions (docs/performance.md).

Every load client's result is checked: a round that got errors, or no answers at all, fails
the build rather than training on failures.
"""
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

BENCHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benches")
sys.path[:0] = [BENCHES, os.path.join(BENCHES, "load")]
from procs import free_port, wait_port  # noqa: E402  (the benchmarks' process helpers)
from bench import hs256_token  # noqa: E402

SECONDS = 4  # per load round: about 45 s in all
JWT_SECRET = "pgo-training-secret-0123456789abcdef"


def certificate(tmp):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", f"{tmp}/key.pem",
                    "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)


def config(tmp, plain, tls, upstream):
    path = os.path.join(tmp, "portico.yaml")
    with open(path, "w") as f:
        f.write(f"""server: {{ threads: 1, watch_config: false, grace_period: 1s }}
listeners:
  - {{ address: 127.0.0.1:{plain}, h2c: true }}
  - {{ address: 127.0.0.1:{tls}, tls: {{ certificates: [ {{ cert: cert.pem, key: key.pem }} ] }} }}
admin: {{ address: "" }}
access_log: {{ enabled: true, path: {tmp}/access.log }}
tracing: {{ endpoint: "http://127.0.0.1:{upstream}/v1/traces", sampler: traceidratio, sample_ratio: 0.05 }}
upstreams: {{ app: {{ members: [ {{ address: 127.0.0.1:{upstream} }} ] }} }}
routes:
  - name: api
    match: {{ prefix: /api }}
    upstream: app
    plugins:
      - {{ jwt: {{ providers: [ {{ algorithms: [HS256], secret_env: PGO_JWT_SECRET }} ], roles_claim: roles }} }}
      - {{ rate_limit: {{ limits: [ {{ name: per-user, rate: 100000000/s, key: [user_id] }} ] }} }}
  - name: web
    match: {{ prefix: /web }}
    upstream: app
    compression: {{ min_size: 64 }}
    plugins:
      - {{ cors: {{ allow_origins: ["https://app.example.test"], allow_credentials: true }} }}
      - {{ security_headers: {{}} }}
      - {{ headers: {{ request: {{ set: {{ X-Client-Ip: "${{client_ip}}" }} }} }} }}
  - {{ name: main, match: {{ prefix: / }}, upstream: app }}
""")
    return path


def wrk(url, headers=(), script=None, seconds=SECONDS):
    args = ["wrk", "-t1", "-c16", f"-d{seconds}s"]
    for h in headers:
        args += ["-H", h]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True)
    m = re.search(r"(\d+) requests in", out.stdout)
    errors = re.search(r"Socket errors: (.*)", out.stdout)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    return (int(m.group(1)) if m else 0), (errors.group(1) if errors else None), (int(bad.group(1)) if bad else 0), out


def h2load(url, headers=()):
    args = ["h2load", "-c8", "-m4", f"-D{SECONDS}"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True)
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out.stdout)
    if not m:
        return 0, "no summary", 0, out
    done, _succeeded, failed, errored = map(int, m.groups())
    # Counted from the other classes, not as `done` less the 2xx: at the deadline h2load can
    # count the status of a request it does not count as done (105,128 2xx of 105,127 done).
    status = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    if not status:
        return done, "no status codes", 0, out
    return done, (f"{failed} failed, {errored} errored" if failed or errored else None), \
        sum(map(int, status.groups())), out


def websockets(port, rounds=200):
    """Upgrades, echoes a few messages through the tunnel, closes; returns how many worked."""
    done = 0
    key = base64.b64encode(os.urandom(16)).decode()
    for _ in range(rounds):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                continue
            message = b"\x81\x85\x00\x00\x00\x00hello"  # a masked text frame; echoed as is
            for _ in range(5):
                s.sendall(message)
                got = b""
                while len(got) < len(message):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                if got != message:
                    break
            else:
                done += 1
    return done


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scripts/pgo-train.py PORTICO DEMO_UPSTREAM")
    portico, demo = sys.argv[1:]
    tmp = tempfile.mkdtemp(prefix="portico-pgo-")
    upstream, plain, tls = free_port(), free_port(), free_port()
    token = hs256_token(JWT_SECRET)
    body = os.path.join(tmp, "post.lua")
    with open(body, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("x", 2048)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    env = dict(os.environ, PGO_JWT_SECRET=JWT_SECRET, PORTICO_LOG="error")
    up = subprocess.Popen([demo, f"app=127.0.0.1:{upstream}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    proxy = None
    try:
        wait_port(upstream)
        log = open(os.path.join(tmp, "portico.err"), "w+")
        certificate(tmp)
        proxy = subprocess.Popen([portico, "run", "-c", config(tmp, plain, tls, upstream)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log)
        wait_port(plain)
        wait_port(tls)
        auth = f"Authorization: Bearer {token}"
        origin = "Origin: https://app.example.test"
        gzip = "Accept-Encoding: gzip, br"
        rounds = [
            ("HTTP/1.1 passthrough", wrk, (f"http://127.0.0.1:{plain}/",), {}),
            ("HTTP/1.1 JWT + rate limit", wrk, (f"http://127.0.0.1:{plain}/api/items",), {"headers": [auth]}),
            ("HTTP/1.1 CORS + headers + compression", wrk, (f"http://127.0.0.1:{plain}/web/page",),
             {"headers": [origin, gzip]}),
            ("HTTP/1.1 POST bodies", wrk, (f"http://127.0.0.1:{plain}/upload",), {"script": body}),
            ("HTTPS passthrough", wrk, (f"https://127.0.0.1:{tls}/",), {}),
            ("HTTPS JWT + rate limit", wrk, (f"https://127.0.0.1:{tls}/api/items",), {"headers": [auth]}),
            ("HTTP/2 TLS passthrough", h2load, (f"https://127.0.0.1:{tls}/",), {}),
            ("HTTP/2 TLS JWT", h2load, (f"https://127.0.0.1:{tls}/api/items",), {"headers": [auth]}),
            ("HTTP/2 cleartext", h2load, (f"http://127.0.0.1:{plain}/web/page",), {"headers": [origin]}),
            ("HTTP/1.1 passthrough again", wrk, (f"http://127.0.0.1:{plain}/",), {}),
        ]
        for name, client, args, kw in rounds:
            answered, errors, non_2xx, out = client(*args, **kw)
            if answered == 0 or errors or non_2xx:
                sys.exit(f"pgo-train: {name}: {answered} answered, errors: {errors}, "
                         f"not 2xx: {non_2xx}\n{out.stdout}{out.stderr}")
            print(f"pgo-train: {name}: {answered} requests", flush=True)
        # Refusals are part of an edge's work too: no token, and no route for the method.
        refused, _, non_2xx, out = wrk(f"http://127.0.0.1:{plain}/api/items", seconds=1)
        if refused == 0 or non_2xx != refused:
            sys.exit(f"pgo-train: unauthenticated requests: {refused} made, {non_2xx} refused\n{out.stdout}")
        print(f"pgo-train: refused without a token: {refused} requests", flush=True)
        upgraded = websockets(plain)
        if upgraded == 0:
            sys.exit("pgo-train: no WebSocket upgrade went through")
        print(f"pgo-train: WebSocket sessions: {upgraded}", flush=True)
    finally:
        if proxy:
            # A clean exit is what writes the profile.
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proxy.kill()
                sys.exit("pgo-train: Portico did not stop after SIGTERM; no profile written")
            if proxy.returncode != 0:
                log.seek(0)
                sys.exit(f"pgo-train: Portico exited with {proxy.returncode}: {log.read()[-2000:]}")
        up.terminate()
        up.wait()


if __name__ == "__main__":
    main()
