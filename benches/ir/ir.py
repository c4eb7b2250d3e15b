#!/usr/bin/env python3
"""`make bench-ir`: instructions per proxied request under callgrind, for nginx `proxy_pass`
and Portico (passthrough; with 10 and with 10k routes; with its access log; full chain; full
chain traced with 1 % of requests sampled), in one table. Instructions do not drift with the
machine's load the way requests per second do (the same binary and inputs give the same
count), so this is the ruler every performance change is held to.

Each proxy runs under `valgrind --tool=callgrind` with instrumentation off; wrk warms it up
for 3 s, then instrumentation is switched on for `--seconds` of load (wrk -t1 -c10) and off
again; the total over that window divided by the requests wrk made is the figure. Beside it,
the atomic operations per request (`locked.py`): one instruction each to the ruler, ~20
cycles each to the CPU.

Usage: benches/ir/ir.py [--seconds 15] [--only passthrough ...]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "load"))
from procs import free_port, wait_port  # noqa: E402
from locked import locked_executed  # noqa: E402
from bench import FULL_CHAIN, JWT_SECRET, hs256_token, nginx_conf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The plain release build: its count follows the code alone (PORTICO_BIN measures another).
PORTICO = os.environ.get("PORTICO_BIN") or os.path.join(ROOT, "target", "release", "portico")
LOAD_CORE = "1"


def sh(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def wrk(port, seconds, header, path="/"):
    args = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c10", f"-d{seconds}s"]
    if header:
        args += ["-H", header]
    out = sh(args + [f"http://127.0.0.1:{port}{path}"]).stdout
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0


def measure(name, cmd, port, seconds, header, tmp, path="/"):
    out_file = os.path.join(tmp, f"{name}.callgrind")
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=yes",
                           "--compress-pos=no", "--compress-strings=no",
                           f"--callgrind-out-file={out_file}"] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        wrk(port, 3, header, path)  # warm-up: connections, caches
        sh(["callgrind_control", "-i", "on", str(vg.pid)])
        requests = wrk(port, seconds, header, path)
        sh(["callgrind_control", "-i", "off", str(vg.pid)])
        # Written now: a process that is slow to exit after the signal below is killed, and
        # would take its profile with it.
        sh(["callgrind_control", "-d", str(vg.pid)])
    finally:
        vg.terminate()
        try:
            vg.wait(timeout=30)
        except subprocess.TimeoutExpired:
            vg.kill()
            vg.wait()
    total = 0
    profiles = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith(f"{name}.callgrind")]
    for path in profiles:
        text = sh(["callgrind_annotate", path]).stdout
        m = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text) or re.search(r"([\d,]+)\s+PROGRAM TOTALS", text)
        if m:
            total += int(m.group(1).replace(",", ""))
    return total // max(1, requests), locked_executed(profiles) / max(1, requests), requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--only", action="append", default=[],
                    help="measure only the rows whose name contains this (repeatable)")
    args = ap.parse_args()
    os.environ.update(BENCH_JWT_SECRET=JWT_SECRET, PORTICO_LOG="error")
    tmp = tempfile.mkdtemp(prefix="portico-ir-")
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", LOAD_CORE] + nginx_conf(tmp, "upstream", f"""
  server {{ listen 127.0.0.1:{up_port};
    location = /v1/traces {{ client_max_body_size 64m; return 200 ""; }}
    location / {{ return 200 "hello world\\n"; }} }}"""),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = f"Authorization: Bearer {hs256_token(JWT_SECRET)}"
    rows = []
    try:
        wait_port(up_port)
        nginx_port = free_port()
        nginx = nginx_conf(tmp, "proxy", f"""
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")
        # One process, in the foreground, so callgrind sees the worker's work.
        nginx[-1] = "daemon off; master_process off;"
        wanted = lambda name: not args.only or any(o in name for o in args.only)  # noqa: E731
        if wanted("nginx proxy_pass"):
            rows.append(("nginx proxy_pass",) + measure("nginx", nginx, nginx_port, args.seconds, None, tmp))
        # The traced row exports to the upstream nginx, which accepts and discards OTLP.
        traced = (f"tracing: {{ endpoint: 'http://127.0.0.1:{up_port}/v1/traces', "
                  "sampler: traceidratio, sample_ratio: 0.01 }\n")
        # The access log is on only in its own row: it costs a thread of its own, and the rows
        # above it are the request path alone.
        logged = f"{{ enabled: true, path: '{os.path.join(tmp, 'access.log')}' }}"
        # The routes rows are passthrough with 9 or 9,999 more routes before its own, requested
        # at one of them: the router's cost should not grow with their number.
        more = {"portico 10 routes": 9, "portico 10k routes": 9999}
        for name, plugins, header, extra, access_log in [
                ("portico passthrough", None, None, "", "{ enabled: false }"),
                ("portico 10 routes", None, None, "", "{ enabled: false }"),
                ("portico 10k routes", None, None, "", "{ enabled: false }"),
                ("portico access log", None, None, "", logged),
                ("portico full chain", FULL_CHAIN, token, "", "{ enabled: false }"),
                ("portico traced 1 %", FULL_CHAIN, token, traced, "{ enabled: false }")]:
            if not wanted(name):
                continue
            port = free_port()
            config = os.path.join(tmp, f"{name.replace(' ', '-')}.yaml")
            with open(config, "w") as f:
                f.write(f"""server: {{ threads: 1, watch_config: false }}
listeners: [ {{ address: 127.0.0.1:{port} }} ]
admin: {{ address: "" }}
access_log: {access_log}
upstreams: {{ up: {{ members: [ {{ address: 127.0.0.1:{up_port} }} ] }} }}
routes:
{"".join(f"  - {{ name: r{i}, match: {{ prefix: /svc{i} }}, upstream: up }}{chr(10)}" for i in range(more.get(name, 0)))}  - {{ name: main, match: {{ prefix: / }}, upstream: up{', plugins: [ ' + plugins + ' ]' if plugins else ''} }}
{extra}""")
            rows.append((name,) + measure(name.replace(" ", "-").replace("%", "pct"), [PORTICO, "run", "-c", config],
                                          port, args.seconds, header, tmp, "/svc5/x" if name in more else "/"))
    finally:
        upstream.terminate()
        upstream.wait()
    print(f"{'target':22s} {'instructions/request':>21s} {'atomic ops/request':>19s} {'requests':>9s}")
    for name, ir, locked, requests in rows:
        print(f"{name:22s} {ir:21,d} {locked:19.1f} {requests:9d}")


if __name__ == "__main__":
    main()
