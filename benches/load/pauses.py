#!/usr/bin/env python3
"""`make bench-pauses`: tail latency at a fixed rate, and what the proxy core did meanwhile.

nginx and Portico (passthrough, and the full chain) run pinned to the proxy core as in
`make bench`; the upstream and the load generator run on the other core. Each target gets
the same fixed rate (`--rate`, default half of nginx's peak measured first) in alternating
rounds; the script prints p50/p99/p99.9 per round, the time the hypervisor took from each core
during it (`steal` in /proc/stat: noise from outside the machine), for Portico's rounds the share of
requests that took over 0.5 and over 1 ms inside Portico (its `portico_request_duration_seconds`,
head read to response written, read before and after the round) and the same share of the
waits for the upstream's response head in them (`portico_upstream_duration_seconds`), and a
summary with the worst p99 of each target, its ratio to nginx's in the same round, and the
run's ratio: the median of its rounds' p99 over nginx's median, as `make bench` reports the
median of its rounds.

`nginx-twin` is a second nginx with the same configuration, measured in the same rounds and
held to the same ratio: how often nginx itself stays within 2x of nginx's p99 is the floor
that the machine's noise sets for that criterion.

`portico-eiN` (in `--targets`) is Portico passthrough with `server.event_interval: N`, to
compare settings in the same rounds. `--peak` first measures every target's peak (wrk, three
alternating rounds of 5 s, median), which is what a lower interval costs.

`--waits` also runs `socket_waits.bt` (bpftrace) on every round and prints the 99th
percentile of each stage of a request as the kernel sees it: the request waiting in the
proxy's socket, request read to response sent, the upstream answering, the answer waiting in
the proxy's upstream socket, the response waiting for the client's read, and the client's
whole round trip. That tells a proxy that is behind from an upstream that is slow, and both
from the load generator's own delays. It needs root and bpftrace.

`--sched` also records every Portico round with `perf sched` on the proxy core and prints,
from the scheduler trace, the longest time a Portico thread was runnable but not running
(and which task ran instead), how much of the core other tasks took, and Portico's threads
ranked by CPU time. Recording changes what it records: with it, Portico's p99 at 19k req/s
went from 0.2-1 ms to 47-77 ms (nginx's did not move), so the latency of a recorded round is
not a measurement. Run it alone on the machine.

Usage: benches/load/pauses.py [--rounds 5] [--seconds 8] [--rate N] [--targets nginx,portico] [--peak] [--waits] [--sched]
"""

import argparse
import collections
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench import (ADMIN_TOKEN, FULL_CHAIN, JWT_SECRET, LOAD_CORE, PROXY_CORE, TICK, UPSTREAM,  # noqa: E402
                   Procs, alternating, hs256_token, http_get, nginx_conf, rate_load, require_portico,
                   start_portico, wrk)

NGINX = 18001
NGINX_TWIN = 18002
TARGETS = {"nginx": NGINX, "portico": 18010, "nginx-twin": NGINX_TWIN, "portico-full-chain": 18034}
EVENT_INTERVAL = re.compile(r"^portico-ei(\d+)$")


def target_port(name, names):
    """The listening port of a target; `portico-eiN` targets get 18040, 18042, ... in order."""
    if EVENT_INTERVAL.match(name):
        return 18040 + 2 * [n for n in names if EVENT_INTERVAL.match(n)].index(name)
    if name not in TARGETS:
        sys.exit(f"unknown target {name}: one of {', '.join(TARGETS)} or portico-eiN")
    return TARGETS[name]


DURATIONS = {"portico_request_duration_seconds": "inside Portico",
             "portico_upstream_duration_seconds": "of it waiting for the upstream"}


def stolen_ticks():
    """Clock ticks the hypervisor gave to other guests while each core had work (`steal` in
    /proc/stat): the machine's share of a round's noise that no process on it can cause."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"^cpu(\d+) " + r"(\d+) " * 8, line)
            if m:
                ticks[m.group(1)] = int(m.group(9))
    return ticks


def duration_buckets(admin_port):
    """Portico's own histograms, each summed over its series: metric -> upper bound in
    seconds -> requests at or under it. `portico_request_duration_seconds` spans head read
    to response written; `portico_upstream_duration_seconds`, inside it, the wait from
    choosing a member to the upstream's response head."""
    text = http_get(f"http://127.0.0.1:{admin_port}/metrics", token=ADMIN_TOKEN)
    buckets = {metric: collections.Counter() for metric in DURATIONS}
    names = "|".join(DURATIONS)
    for m in re.finditer(rf'^({names})_bucket\{{[^}}]*le="([^"]+)"[^}}]*\}} (\d+)$', text, re.M):
        buckets[m.group(1)][float(m.group(2))] += int(m.group(3))  # float("+Inf") is inf
    return buckets


def in_portico(before, after):
    """The share of a round's requests that took over 0.5 and over 1 ms inside Portico, and
    the share of their upstream waits that did."""
    line = ""
    for metric, what in DURATIONS.items():
        b, a = before[metric], after[metric]
        total = a[float("inf")] - b[float("inf")]
        if total <= 0:
            continue
        over = {le: 100 * (1 - (a[le] - b[le]) / total) for le in (0.0005, 0.001)}
        line += f"\n    {what}: {over[0.0005]:.2f} % over 0.5 ms, {over[0.001]:.2f} % over 1 ms"
    return line


WAITS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "socket_waits.bt")


def start_waits(port):
    """bpftrace on the proxy listening on `port`, returned once its probes are attached."""
    trace = subprocess.Popen(["bpftrace", WAITS_SCRIPT, str(port), str(socket.htons(UPSTREAM)),
                              str(socket.htons(port))],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in trace.stdout:
        if line.startswith("Attaching"):
            return trace
    raise RuntimeError(f"bpftrace did not attach its probes (exit {trace.wait()}); it needs root")


def waits_summary(trace):
    """Stops bpftrace and reads its histograms: the 99th percentile of each (to its bucket)."""
    trace.send_signal(signal.SIGINT)
    text, _ = trace.communicate()
    hists, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^@(\w+):", line)
        if m:
            current = hists.setdefault(m.group(1), [])
            continue
        m = re.match(r"^\[(\d+)([KM]?)(?:, [\dKM]+\)|\])\s+(\d+)", line)
        if m and current is not None:
            unit = {"": 1, "K": 1 << 10, "M": 1 << 20}[m.group(2)]
            current.append((int(m.group(1)) * unit, int(m.group(3))))

    def p99(name):
        """The upper bound of the bucket that holds the histogram's 99th percentile (bpftrace's
        buckets are [0], [1], then [2^k, 2^(k+1)))."""
        h = sorted(hists.get(name, []))
        total, seen = sum(n for _, n in h), 0
        for low, n in h:
            seen += n
            if total and seen >= 0.99 * total:
                return f"<{2 * low if low >= 2 else low + 1} us"
        return "-"

    stages = [("requests waiting in the proxy's sockets", "client_ready_to_read_us"),
              ("request read to response sent", "proxy_turnaround_us"),
              ("upstream answering", "upstream_reply_us"),
              ("upstream answers waiting in the proxy's sockets", "upstream_ready_to_read_us"),
              ("response sent to the client's read", "response_to_client_read_us"),
              ("the client's send to its read of the answer", "client_round_trip_us")]
    return "\n    p99 of " + "; ".join(f"{what} {p99(name)}" for what, name in stages)


def sched_summary(data, pids):
    """What `perf sched timehist` says of the proxy core during one round."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", data, "-C", PROXY_CORE],
                         capture_output=True, text=True).stdout
    worst = {}  # portico thread -> (longest sched delay ms, the task that ran before it)
    others = collections.Counter()
    ours = collections.Counter()
    previous = ""
    # time  cpu  task[tid]  wait  sch-delay  run
    row = re.compile(r"^\s*[\d.]+\s+\[\d+\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
    for line in out.splitlines():
        m = row.match(line)
        if not m:
            continue
        comm, tid, pid, _wait, delay, run = m.groups()
        pid = int(pid or tid)
        if pid in pids:
            ours[comm] += float(run)
            if float(delay) > worst.get(comm, (0.0, ""))[0]:
                worst[comm] = (float(delay), previous)
        elif comm != "<idle>":
            others[comm] += float(run)
        previous = comm
    return worst, others, ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rate", type=float, default=0, help="req/s; default half of nginx's peak")
    # The twin sits between Portico's two targets, so that in alternating rounds it is as far
    # from nginx's round as they are on average.
    ap.add_argument("--targets", default="nginx,portico,nginx-twin,portico-full-chain")
    ap.add_argument("--peak", action="store_true",
                    help="measure each target's peak first (wrk, 3 alternating rounds of 5 s)")
    ap.add_argument("--waits", action="store_true",
                    help="measure with bpftrace how long data waited in the proxy's sockets")
    ap.add_argument("--sched", action="store_true",
                    help="record Portico's rounds with perf sched (which inflates their latency)")
    args = ap.parse_args()
    require_portico()
    names = args.targets.split(",")
    ports = {name: target_port(name, names) for name in names}
    tmp = tempfile.mkdtemp(prefix="portico-pauses-")
    os.chmod(tmp, 0o755)
    procs = Procs()
    token = f"Authorization: Bearer {hs256_token(JWT_SECRET)}"
    headers = {"portico-full-chain": token}
    pids = {}
    try:
        procs.start(nginx_conf(tmp, "upstream", f"""
  server {{ listen 127.0.0.1:{UPSTREAM} backlog=4096; location / {{ return 200 "hello world\\n"; }} }}"""),
                    LOAD_CORE, port=UPSTREAM)
        for name in ("nginx", "nginx-twin"):
            if name == "nginx" or name in names:
                procs.start(nginx_conf(tmp, name, f"""
  upstream backend {{ server 127.0.0.1:{UPSTREAM}; keepalive 128; keepalive_requests 100000000; }}
  server {{ listen 127.0.0.1:{TARGETS[name]} backlog=4096;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""),
                            PROXY_CORE, port=TARGETS[name])
        if "portico" in names:
            pids["portico"] = start_portico(procs, tmp, "passthrough", 18010, 18011)[0].pid
        if "portico-full-chain" in names:
            pids["portico-full-chain"] = start_portico(procs, tmp, "full-chain", 18034, 18035,
                                                       plugin=FULL_CHAIN)[0].pid
        for name in names:
            m = EVENT_INTERVAL.match(name)
            if m:
                pids[name] = start_portico(procs, tmp, name, ports[name], ports[name] + 1,
                                           event_interval=int(m.group(1)))[0].pid
        for name in names:
            wrk(ports[name], 1, header=headers.get(name))  # warm-up
        peaks = {name: [] for name in names}
        for r in range(3 if args.peak else 0):
            for name in alternating(names, r):
                peaks[name].append(wrk(ports[name], 5, header=headers.get(name))["rps"])
        for name, rps in peaks.items():
            if rps:
                print(f"peak {name:20s} {statistics.median(rps):8.0f} req/s  "
                      f"({', '.join(f'{x:.0f}' for x in rps)})", file=sys.stderr)
        rate = args.rate or wrk(NGINX, 5)["rps"] / 2
        print(f"rate: {rate:.0f} req/s", file=sys.stderr)
        results = {name: [] for name in names}
        for r in range(args.rounds):
            for name in alternating(names, r):
                trace = None
                if args.sched and name in pids:
                    data = os.path.join(tmp, f"{name}-{r}.sched")
                    trace = subprocess.Popen(["perf", "sched", "record", "-C", PROXY_CORE, "-o", data,
                                              "--", "sleep", str(args.seconds + 1)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                waits = start_waits(ports[name]) if args.waits else None
                admin = ports[name] + 1 if name in pids else None
                before = duration_buckets(admin) if admin else None
                stolen = stolen_ticks()
                res = rate_load(ports[name], rate, args.seconds, header=headers.get(name))
                stolen = {core: (n - stolen[core]) * 1000 / TICK for core, n in stolen_ticks().items()}
                line = (f"round {r + 1} {name:20s} p50 {res['p50_ms']:8.3f} ms  p99 {res['p99_ms']:8.3f} ms  "
                        f"p99.9 {res['p999_ms']:8.3f} ms  achieved {res['achieved_rps']:.0f}  errors {res['errors']}  "
                        f"stolen ms: proxy core {stolen.get(PROXY_CORE, 0):.0f}, load core {stolen.get(LOAD_CORE, 0):.0f}")
                if admin:
                    line += in_portico(before, duration_buckets(admin))
                if waits:
                    line += waits_summary(waits)
                if trace:
                    trace.wait()
                    threads = {int(t) for t in os.listdir(f"/proc/{pids[name]}/task")}
                    worst, others, ours = sched_summary(data, threads | {pids[name]})
                    top_others = ", ".join(f"{c} {ms:.0f} ms" for c, ms in others.most_common(3))
                    top_ours = ", ".join(f"{c} {ms:.0f} ms" for c, ms in ours.most_common(4))
                    waits = ", ".join(f"{c} {d:.2f} ms (after {b or '-'})" for c, (d, b)
                                      in sorted(worst.items(), key=lambda w: -w[1][0])[:3])
                    line += (f"\n    longest waits to run: {waits}\n    CPU on the core: portico threads "
                             f"{top_ours}; others {top_others or '-'}")
                results[name].append(res)
                print(line, file=sys.stderr)
    finally:
        procs.stop_all()
    print(f"\nAt {rate:.0f} req/s, {args.rounds} rounds (median, worst p99):")
    for name, rs in results.items():
        p99s = [x["p99_ms"] for x in rs]
        print(f"  {name:20s} p50 {statistics.median(x['p50_ms'] for x in rs):8.3f} ms  "
              f"p99 {statistics.median(p99s):8.3f} ms  worst p99 {max(p99s):8.3f} ms  "
              f"all p99: {', '.join(f'{p:.2f}' for p in p99s)}")
    if "nginx" in results:
        base = [x["p99_ms"] for x in results["nginx"]]
        for name, rs in results.items():
            if name == "nginx":
                continue
            ratios = [x["p99_ms"] / b for x, b in zip(rs, base) if b > 0]
            within = sum(r <= 2 for r in ratios)
            run_ratio = statistics.median(x["p99_ms"] for x in rs) / statistics.median(base)
            print(f"  {name:20s} p99 / nginx's p99 of the same round: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}; within 2x in {within} of {len(ratios)}; "
                  f"the run's (median p99 over nginx's median p99): {run_ratio:.2f}")


if __name__ == "__main__":
    main()
