#!/usr/bin/env python3
"""The access log's cost on cache hits: one edge writing a JSON line per request to a file
(`[edge.access_log]`, client addresses cut to /24), against the same edge without it, on the
same core, in one run, taking turns. Both serve the same token-gated asset from cache to the
same requests (a bearer token).

The edges run one Pingora worker thread each, pinned to CPU 0 (the log's writer thread too);
wrk runs pinned to CPU 1. Prints req/s, p50 and p99 per case, and per object the on/off
throughput ratio round by round: its median and spread. Traces (OTLP) are not built, so
only the access log is measured.

Usage: ~/.cache/streamgate-venv/bin/python loadtests/bench_access_log.py [--duration 10] [--rounds 5]
"""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main():
    args = benchlib.on_off_args(__doc__)
    binary = args.binary or benchlib.build_binary()

    work = tempfile.mkdtemp(prefix="sg-bench-access-log-")
    procs = []
    try:
        origin = os.path.join(work, "origin")
        objects = benchlib.write_objects(origin, "demo")
        jwk, mint = benchlib.ed25519_issuer("b1")
        policy = {"id": "viewers", "rule": {"jwt": {"issuer": "bench", "audience": "streamgate"}}}
        with open(os.path.join(work, "snapshot.json"), "w") as f:
            json.dump({"revision": 1, "policies": [policy],
                       "assets": [{"id": "demo", "policy": "viewers"}], "keys": [jwk]}, f)
        token = mint({"iss": "bench", "aud": "streamgate", "sub": "viewer-1", "sg_scope": ["demo"],
                      "exp": int(time.time()) + 3600})
        log = os.path.join(work, "access.log")

        snapshot = os.path.join(work, "snapshot.json")

        def edge(name, extra):
            return benchlib.snapshot_edge(binary, work, name, snapshot, origin, procs, extra)

        off, _ = edge("off", "")
        on, on_admin = edge("on", f'[edge.access_log]\npath = "{log}"\nipv4_prefix = 24')
        hdrs = (f"Authorization: Bearer {token}",)
        results = benchlib.on_off_rounds(objects, {"off": off, "on": on}, hdrs,
                                         args.rounds, args.duration, args.connections)
        time.sleep(0.5)
        lines = sum(1 for _ in open(log))
        _, _, metrics = benchlib.get(on_admin + "/metrics")
        dropped = [l for l in metrics.decode().splitlines()
                   if l.startswith("streamgate_edge_access_log_dropped_total ")]
        served = sum(r["rps"] * args.duration for (o, c), rs in results.items() if c == "on" for r in rs)
        print(f"access log: {lines} lines, {os.path.getsize(log) / 1e6:.0f} MB "
              f"(~{served:.0f} requests served by 'on'); {dropped[0] if dropped else 'no drop counter'}")
        if lines == 0:
            sys.exit("the 'on' edge wrote no access log: the comparison is void")
        benchlib.on_off_report(objects, results, "access log", 0.95)
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
