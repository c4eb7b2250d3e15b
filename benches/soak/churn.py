#!/usr/bin/env python3
"""RSS of the release gateway after bad input and after connection churn: warm-up, then
rounds of malformed requests, then short connections (`Connection: close`, with wrk), RSS
sampled after each phase. Run it twice to tell retained memory from the allocator keeping
freed pages: as is, and with `MIMALLOC_PURGE_DELAY=0` (freed pages returned at once).

Usage: benches/soak/churn.py [--connections 100000]
"""

import argparse
import json
import os
import re
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--bad-rounds", type=int, default=200)
    args = ap.parse_args()
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
    gw = subprocess.Popen([os.path.join(BIN, "portico"), "run", "-c", config],
                          env={**os.environ, "PORTICO_LOG": "error"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(up_port)
        wait_port(gw_port)
        url = f"http://127.0.0.1:{gw_port}/"
        report = {"env": {k: v for k, v in os.environ.items() if k.startswith("MIMALLOC")}}
        report["start_kib"] = rss_kib(gw.pid)
        report["warmup_requests"] = wrk(url, 3, close=False)
        time.sleep(1)
        report["after_warmup_kib"] = rss_kib(gw.pid)
        # Twice: memory the first pass keeps for reuse shows up once; a leak grows again.
        for n in (1, 2):
            for _ in range(args.bad_rounds):
                for data in BAD_INPUT:
                    send(gw_port, data)
            time.sleep(1)
            report[f"pass{n}_after_bad_input_kib"] = rss_kib(gw.pid)
            done = 0
            while done < args.connections:
                done += wrk(url, 5, close=True)
            report[f"pass{n}_short_connections"] = done
            time.sleep(2)
            report[f"pass{n}_after_churn_kib"] = rss_kib(gw.pid)
        report["pass2_vs_pass1"] = round(
            report["pass2_after_churn_kib"] / report["pass1_after_churn_kib"], 3
        )
        print(json.dumps(report, indent=2))
    finally:
        gw.terminate()
        up.terminate()
        gw.wait()
        up.wait()


if __name__ == "__main__":
    main()
