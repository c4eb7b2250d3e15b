#!/usr/bin/env python3
"""RSS of the release gateway after bad input and after connection churn: warm-up, then
rounds of malformed requests, then short connections (`Connection: close`, with wrk), RSS
sampled after each phase. Run it twice to tell retained memory from the allocator keeping
freed pages: as is, and with `MIMALLOC_PURGE_DELAY=0` (freed pages returned at once).

`--malloc-stats` runs a gateway built with glibc's malloc (`--profile profiling --features
portico/system-allocator`) and, after each phase, has gdb call `malloc_stats()` in it: the
bytes the program really holds ("in use") beside what the allocator keeps from the system.
`--wrap "heaptrack -o FILE"` runs that build under a heap profiler.

Usage: benches/soak/churn.py [--connections 100000] [--malloc-stats] [--wrap CMD]
"""

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procs import free_port, rss_kib, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")

BAD_INPUT = [
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n",
    b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"G{T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\nHost: x\nContent-Length: 0\nTransfer-Encoding: chunked\n\n0\n\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03",
]


def send(port, data):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(data)
            s.settimeout(1)
            while s.recv(65536):
                pass
    except OSError:
        pass


def wrk(url, seconds, close):
    args = ["wrk", "-t1", "-c20", f"-d{seconds}s", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0


def malloc_in_use(pid, log_path):
    """glibc's totals from `malloc_stats()`, called in the running gateway by gdb."""
    subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "call (void) malloc_stats()"],
                   capture_output=True)
    with open(log_path) as f:
        totals = re.findall(r"Total \(incl. mmap\):\s+system bytes\s+=\s+(\d+)\s+in use bytes\s+=\s+(\d+)",
                            f.read())
    system, in_use = totals[-1]
    return {"system_kib": int(system) // 1024, "in_use_kib": int(in_use) // 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--bad-rounds", type=int, default=200)
    ap.add_argument("--malloc-stats", action="store_true")
    ap.add_argument("--wrap", default="")
    ap.add_argument("--settle", type=int, default=0,
                    help="seconds to wait before a last sample (Pingora's pool timers last 60 s)")
    args = ap.parse_args()
    glibc = args.malloc_stats or args.wrap
    gateway_bin = os.path.join(ROOT, "target", "profiling" if glibc else "release", "portico")
    work = tempfile.mkdtemp(prefix="portico-churn-")
    up_port, gw_port, admin_port = free_port(), free_port(), free_port()
    up = subprocess.Popen([os.path.join(BIN, "portico-demo-upstream"), f"w=127.0.0.1:{up_port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(work, "portico.yaml")
    with open(config, "w") as f:
        f.write(f"""listeners:
  - address: 127.0.0.1:{gw_port}
admin:
  address: 127.0.0.1:{admin_port}
access_log: {{ enabled: false }}
upstreams:
  w:
    members: [ {{ address: 127.0.0.1:{up_port} }} ]
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: w
""")
    gw_log = os.path.join(work, "portico.log")
    gw = subprocess.Popen(shlex.split(args.wrap) + [gateway_bin, "run", "-c", config],
                          env={**os.environ, "PORTICO_LOG": "error"},
                          stdout=subprocess.DEVNULL, stderr=open(gw_log, "w"))
    pid = gw.pid
    try:
        wait_port(up_port)
        wait_port(gw_port)
        url = f"http://127.0.0.1:{gw_port}/"
        if args.wrap:
            # The profiler starts the gateway as its child.
            time.sleep(1)
            pid = int(subprocess.run(["pgrep", "-n", "-f", f"{gateway_bin} run"],
                                     capture_output=True, text=True).stdout.split()[0])

        def sample(key):
            report[f"{key}_kib"] = rss_kib(pid)
            # Anonymous memory (heap, stacks) apart from file pages (the binary's code paged in).
            with open(f"/proc/{pid}/status") as f:
                parts = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
            report[f"{key}_anon_file_kib"] = [int(parts["RssAnon"].split()[0]),
                                              int(parts["RssFile"].split()[0])]
            if args.malloc_stats:
                report[f"{key}_malloc"] = malloc_in_use(pid, gw_log)

        report = {"env": {k: v for k, v in os.environ.items() if k.startswith("MIMALLOC")},
                  "gateway": gateway_bin, "wrap": args.wrap}
        sample("start")
        report["warmup_requests"] = wrk(url, 3, close=False)
        time.sleep(1)
        sample("after_warmup")
        # Twice: memory the first pass keeps for reuse shows up once; a leak grows again.
        for n in (1, 2):
            for _ in range(args.bad_rounds):
                for data in BAD_INPUT:
                    send(gw_port, data)
            time.sleep(1)
            sample(f"pass{n}_after_bad_input")
            done = 0
            while done < args.connections:
                done += wrk(url, 5, close=True)
            report[f"pass{n}_short_connections"] = done
            time.sleep(2)
            sample(f"pass{n}_after_churn")
        if args.settle:
            time.sleep(args.settle)
            sample("settled")
        report["pass2_vs_pass1"] = round(
            report["pass2_after_churn_kib"] / report["pass1_after_churn_kib"], 3
        )
        print(json.dumps(report, indent=2))
    finally:
        os.kill(pid, 15)
        up.terminate()
        gw.wait()
        up.wait()


if __name__ == "__main__":
    main()
