#!/usr/bin/env python3
"""Abuse control's cost on cache hits: one edge with rate limits (per network, per token
subject and per wallet, set high enough never to refuse), playback sessions under a
stream cap and CMCD parsing (session ids and the QoE aggregates) on, against one with all
of them off, on the same core, in
one run, taking turns. Requests carry a token in the Authorization header and CMCD
headers (`CMCD-Session` with a sid, `CMCD-Request`) in both cases, so the request bytes
are identical; only the edge's work differs.

The edges run one Pingora worker thread each, pinned to CPU 0; wrk runs pinned to CPU 1.
Prints req/s, p50 and p99 per case, and per object the on/off throughput ratio round by
round: its median and spread. The goal (issue 13) is a median ratio of at least 0.95.

Usage: ~/.cache/streamgate-venv/bin/python loadtests/bench_abuse.py [--duration 10] [--rounds 5]
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

    work = tempfile.mkdtemp(prefix="sg-bench-abuse-")
    procs = []
    try:
        origin = os.path.join(work, "origin")
        objects = benchlib.write_objects(origin, "demo")
        jwk, mint = benchlib.ed25519_issuer("b1")
        rule = {"jwt": {"issuer": "bench", "audience": "streamgate"}}
        never = {"rate": 10000, "burst": 1000000}
        limits = {
            "max_streams": 10000,
            "rate": {c: {"per_ip": never, "per_subject": never, "per_wallet": never}
                     for c in ("playlist", "segment")},
        }
        keys = [jwk]
        for name, policy in [("off", {"id": "viewers", "rule": rule}),
                             ("on", {"id": "viewers", "rule": rule, "limits": limits})]:
            with open(os.path.join(work, f"snapshot-{name}.json"), "w") as f:
                json.dump({"revision": 1, "policies": [policy],
                           "assets": [{"id": "demo", "policy": "viewers"}], "keys": keys}, f)
        token = mint({"iss": "bench", "aud": "streamgate", "sub": "viewer-1", "sg_scope": ["demo"],
                      "exp": int(time.time()) + 3600})

        def edge(name, extra):
            snapshot = os.path.join(work, f"snapshot-{name}.json")
            url, admins[name] = benchlib.snapshot_edge(binary, work, name, snapshot, origin, procs, extra)
            return url

        admins = {}
        edge_limits = "\n".join(
            f'[edge.rate_limit.{c}]\nper_ip = {{ rate = 10000, burst = 1000000 }}' for c in ("playlist", "segment"))
        # "off": no CMCD read at all (analytics is on by default); "on": rate limits,
        # sessions under a cap, CMCD parsed for the session id and the QoE aggregates.
        bases = {"off": edge("off", "[edge.analytics]\nenabled = false"), "on": edge("on", edge_limits)}
        hdrs = (f"Authorization: Bearer {token}",
                'CMCD-Session: cid="demo",sid="6e2fb550-c457-11e9-bb97-0800200c9a66",sf=h,st=v',
                "CMCD-Request: bl=21300,dl=18500,mtp=48100,su")
        results = benchlib.on_off_rounds(objects, bases, hdrs, args.rounds, args.duration, args.connections)
        # The "on" edge really tracked the session and its limits never refused.
        _, _, metrics = benchlib.get(admins["on"] + "/metrics")
        text = metrics.decode()
        if "streamgate_edge_sessions_active 1" not in text:
            sys.exit("the 'on' edge tracked no playback session: the comparison is void")
        if 'streamgate_edge_qoe_cmcd_requests_total{asset="demo"}' not in text:
            sys.exit("the 'on' edge aggregated no CMCD: the comparison is void")
        refused = [l for l in text.splitlines()
                   if l.startswith("streamgate_edge_rate_limited_total{") and not l.endswith(" 0")]
        if refused:
            sys.exit(f"the limits refused requests: {refused}")
        benchlib.on_off_report(objects, results, "abuse control", 0.95)
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
