#!/usr/bin/env python3
"""Gating overhead: cache hits of a token-gated asset (valid token in the Authorization
header) against the same objects when public, on one edge, in one run, taking turns.

The edge runs one Pingora worker thread pinned to CPU 0; wrk runs pinned to CPU 1. Tokens
are minted with PyJWT (Ed25519). Prints req/s, p50 and p99 for each case and the
gated/public throughput ratio, and the ratio against the public asset requested with the
same Authorization header (identical request bytes: the gate's own cost). Also measures a playlist fetched with ?token=, which the edge
rewrites per request.

With --peer-binary (another build, e.g. of an earlier commit), a second edge on the same
core serves the same objects and the gated cases run against both, taking turns, and the
script prints this build's throughput against the peer's (median of the rounds, with their
spread): the check that a change to the gate did not slow it down.

Usage: ~/.cache/streamgate-venv/bin/python loadtests/bench_gate.py [--duration 10] [--rounds 5]
       [--peer-binary PATH]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary")
    ap.add_argument("--peer-binary", help="an earlier build to compare the gated cases against")
    args = ap.parse_args()
    binary = args.binary or benchlib.build_binary()

    work = tempfile.mkdtemp(prefix="sg-bench-gate-")
    procs = []
    try:
        origin = os.path.join(work, "origin")
        gated = benchlib.write_objects(origin, "gated")
        public = benchlib.write_objects(origin, "open")
        jwk, mint = benchlib.ed25519_issuer("b1")
        snapshot = {
            "revision": 1,
            "policies": [
                {"id": "viewers", "rule": {"jwt": {"issuer": "bench", "audience": "streamgate"}}},
                {"id": "open", "rule": {"public": True}},
            ],
            "assets": [{"id": "gated", "policy": "viewers"}, {"id": "open", "policy": "open"}],
            "keys": [jwk],
        }
        with open(os.path.join(work, "snapshot.json"), "w") as f:
            json.dump(snapshot, f)
        token = mint({"iss": "bench", "aud": "streamgate", "exp": int(time.time()) + 3600,
                      "sg_scope": ["gated"]})
        def edge(bin_path, name):
            snapshot = os.path.join(work, "snapshot.json")
            return benchlib.snapshot_edge(bin_path, work, name, snapshot, origin, procs)[0]

        base = edge(binary, "this")
        peer = edge(args.peer_binary, "peer") if args.peer_binary else None
        auth = f"Authorization: Bearer {token}"
        cases = []
        for oname in gated:
            cases.append((oname, "public", base + public[oname], ()))
            # The same request bytes as the gated case: the public policy ignores the
            # header, so this isolates the gate's own cost from the ~250 header bytes.
            cases.append((oname, "public + same header", base + public[oname], (auth,)))
            cases.append((oname, "gated", base + gated[oname], (auth,)))
        cases.append(("playlist", "gated ?token= (rewritten)", base + gated["playlist"] + "?token=" + token, ()))
        if peer:
            for oname in gated:
                cases.append((oname, "gated, peer build", peer + gated[oname], (auth,)))
            cases.append(("playlist", "gated ?token=, peer build", peer + gated["playlist"] + "?token=" + token, ()))
        for _, _, url, hdrs in cases:
            benchlib.warm(url, dict(h.split(": ", 1) for h in hdrs))
        # An anonymous request to the gated asset must be refused, or the benchmark is void.
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", base + gated["playlist"]],
                           capture_output=True, text=True)
        assert r.stdout == "401", f"gated asset answered {r.stdout} without a token"
        print(f"caches warm; {args.rounds} rounds x {args.duration} s, {args.connections} connections, "
              "edge on CPU 0 (1 thread), wrk on CPU 1", flush=True)
        results = {(o, c): [] for o, c, _, _ in cases}
        total = args.rounds * len(cases)
        n = 0
        for r in range(args.rounds):
            for oname, case, url, hdrs in cases:
                n += 1
                print(f"[{n}/{total}] {oname:14s} {case:26s} round {r + 1} ...", end="", flush=True)
                res = benchlib.wrk(url, args.duration, args.connections, hdrs)
                results[(oname, case)].append(res)
                print(f" {res['rps']:>10.0f} req/s  p99 {res['p99_ms']:.2f} ms", flush=True)
        print()
        print("| object | case | req/s (median) | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        med = {}
        for key, rs in results.items():
            med[key] = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_ms", "p99_ms")}
            m = med[key]
            print(f"| {key[0]} | {key[1]} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
        print()
        for oname in gated:
            ratio = med[(oname, "gated")]["rps"] / med[(oname, "public")]["rps"]
            same = med[(oname, "gated")]["rps"] / med[(oname, "public + same header")]["rps"]
            print(f"{oname}: gated/public throughput ratio {ratio:.3f}; "
                  f"against public with the same header {same:.3f}")
        if peer:
            for oname, mine, theirs in [(o, "gated", "gated, peer build") for o in gated] + [
                    ("playlist", "gated ?token= (rewritten)", "gated ?token=, peer build")]:
                # Round by round (both ran in the same round), then the median and spread.
                per = [a["rps"] / b["rps"] for a, b in zip(results[(oname, mine)], results[(oname, theirs)])]
                print(f"{oname} {mine}: this build / peer build {statistics.median(per):.3f} "
                      f"(rounds {min(per):.3f} to {max(per):.3f})")
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
