#!/usr/bin/env python3
"""The soak (`make soak`): Portico under a steady, moderate load for an hour while its
world changes around it — a config reload every minute, an upstream member restarted every
five, Redis restarted every fifteen — sampling the gateway's RSS and open file descriptors
every minute. It passes when, after a warm-up, RSS stays within 10 % and descriptors do not
grow, and prints every failed request by kind.

Everything runs on this machine's loopback: Redis, two demo upstreams (one static member,
one that registers itself in the Redis registry with a heartbeat), and the release build of
Portico. Usage: benches/soak/soak.py [--minutes 60] [--rate 200]
"""

import argparse
import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procs import free_port, rss_kib, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")


class Proc:
    def __init__(self, args, env=None, log=None):
        self.args, self.env, self.log = args, env, log
        self.p = None
        self.start()

    def start(self):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.p = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out)

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def restart(self):
        self.stop()
        self.start()


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rate", type=int, default=200, help="requests per second in all")
    ap.add_argument("--warmup-minutes", type=float, default=5)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="portico-soak-")
    redis_port, reg_port = free_port(), free_port()
    static_ports = [free_port(), free_port()]
    gw_port, admin_port = free_port(), free_port()
    redis = Proc(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--dir", work])
    wait_port(redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}"
    upstream = os.path.join(BIN, "portico-demo-upstream")
    statics = [Proc([upstream, f"static-{i}=127.0.0.1:{port}"])
               for i, port in enumerate(static_ports)]
    registered = Proc([upstream, f"registered=127.0.0.1:{reg_port}"])
    for port in static_ports + [reg_port]:
        wait_port(port)
    heartbeat = Proc([os.path.join(BIN, "portico"), "registry", "--redis", redis_url,
                      "register", "--service", "reg", "--id", "reg-1",
                      "--addr", f"127.0.0.1:{reg_port}", "--ttl", "6s", "--heartbeat"])
    config = os.path.join(work, "portico.yaml")
    version = [0]

    def write_config():
        version[0] += 1
        with open(config + ".tmp", "w") as f:
            f.write(f"""# soak config, version {version[0]}
listeners:
  - address: 127.0.0.1:{gw_port}
admin:
  address: 127.0.0.1:{admin_port}
access_log: {{ enabled: true, path: {work}/access.log }}
redis:
  url: {redis_url}
  resync_interval: 2s
  registry_grace: 10s
upstreams:
  static:
    members: [ {{ address: 127.0.0.1:{static_ports[0]} }}, {{ address: 127.0.0.1:{static_ports[1]} }} ]
    passive_health: {{ consecutive_failures: 1 }}
  reg:
    discovery: redis
    service: reg
routes:
  - name: static
    match: {{ prefix: /static }}
    upstream: static
    plugins:
      - rate_limit: {{ limits: [ {{ name: all, rate: 100000/s, key: route, scope: global }} ] }}
  - name: reg
    match: {{ prefix: /reg }}
    upstream: reg
""")
        os.replace(config + ".tmp", config)

    write_config()
    gateway = Proc([os.path.join(BIN, "portico"), "run", "-c", config],
                   env={**os.environ, "PORTICO_LOG": "warn"}, log=os.path.join(work, "portico.log"))
    wait_port(gw_port)
    pid = gateway.p.pid

    stop = threading.Event()
    ok = [0]
    failures = collections.Counter()
    lock = threading.Lock()

    def client(path, rate):
        conn = None
        interval = 1.0 / rate
        next_at = time.time()
        while not stop.is_set():
            next_at += interval
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", gw_port, timeout=5)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                with lock:
                    if r.status == 200:
                        ok[0] += 1
                    else:
                        failures[f"{path} {r.status} {body[:80]!r}"] += 1
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # every failure is recorded by kind
                with lock:
                    failures[f"{path} {type(e).__name__}: {e}"] += 1
                if conn:
                    conn.close()
                conn = None
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)

    per_client = args.rate / 4
    threads = [threading.Thread(target=client, args=(p, per_client), daemon=True)
               for p in ["/static/a", "/static/b", "/reg/a", "/reg/b"]]
    for t in threads:
        t.start()

    samples = []
    start = time.time()
    end = start + args.minutes * 60
    minute = 0
    try:
        while time.time() < end:
            time.sleep(max(0, start + (minute + 1) * 60 - time.time()))
            minute += 1
            write_config()  # a reload a minute (the file watch picks it up)
            if minute % 5 == 0:
                statics[(minute // 5) % 2].restart()
            if minute % 15 == 0:
                redis.restart()
            with lock:
                sample = {"minute": minute, "rss_kib": rss_kib(pid), "fds": open_fds(pid),
                          "ok": ok[0], "failed": sum(failures.values())}
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for p in [gateway, heartbeat, registered, redis] + statics:
            p.stop()

    warm = [s for s in samples if s["minute"] > args.warmup_minutes] or samples
    rss = [s["rss_kib"] for s in warm]
    fds = [s["fds"] for s in warm]
    spread = (max(rss) - min(rss)) / max(min(rss), 1)
    report = {
        "minutes": minute,
        "requests_ok": ok[0],
        "failures": dict(failures),
        "rss_kib_after_warmup": {"min": min(rss), "max": max(rss), "spread": round(spread, 3)},
        "fds_after_warmup": {"min": min(fds), "max": max(fds)},
        "samples": samples,
    }
    out = os.path.join(ROOT, "benches", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "soak.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    passed = spread <= 0.10 and max(fds) - min(fds) <= 4
    print("soak: " + ("passed" if passed else "FAILED") + f" (logs in {work})")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
