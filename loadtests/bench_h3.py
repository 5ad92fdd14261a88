#!/usr/bin/env python3
"""HTTP/3 against HTTP/2 and HTTP/1.1 on cache hits, one edge, one client, one run.

The edge (one Pingora worker thread, and one thread for the HTTP/3 listener's runtime,
pinned to CPU 0) serves a 1 MiB segment and an HLS playlist from its cache over TLS on TCP
(HTTP/1.1, h2) and QUIC (h3) on the same port. The client is `streamgate load proto`, the
same worker code for all three protocols (hyper for h1/h2, quinn + h3 for h3), pinned to
CPU 1. Protocols take turns, several rounds each. The script prints req/s, MB/s, p50 and
p99 per protocol, the h3/h2 throughput ratio, and writes a percentile plot per object.

Usage: python3 loadtests/bench_h3.py [--duration 10] [--rounds 3] [--connections 4] [--streams 8]
       [--http3 key=value ...]   (extra [edge.http3] settings, to experiment with tuning)
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", default="10s")
    ap.add_argument("--warmup", default="2s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--binary")
    ap.add_argument("--http3", action="append", default=[], help="extra [edge.http3] key=value")
    ap.add_argument("--max-udp-payload", type=int, default=1452,
                    help="client MTU-discovery bound; pair with --http3 max_udp_payload=N")
    ap.add_argument("--plots", default=os.path.join(benchlib.ROOT, "loadtests", "results"))
    args = ap.parse_args()
    binary = args.binary or benchlib.build_binary()
    os.makedirs(args.plots, exist_ok=True)

    work = tempfile.mkdtemp(prefix="sg-bench-h3-")
    procs = []
    try:
        origin = os.path.join(work, "origin")
        objs = benchlib.write_objects(origin, "bench")
        # The edge's own dev-certificate code makes the self-signed pair via `streamgate dev`'s
        # library; here openssl does it, so the script does not depend on dev.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem"],
                       check=True, capture_output=True)
        http_port, tls_port, admin = (benchlib.free_port() for _ in range(3))
        extra = "\n".join(args.http3)
        procs.append(benchlib.start_edge(binary, work, f"""
[edge]
http_listen = "127.0.0.1:{http_port}"
tls_listen = "127.0.0.1:{tls_port}"
admin_listen = "127.0.0.1:{admin}"
tls_cert = "{work}/cert.pem"
tls_key = "{work}/key.pem"
threads = 1
[edge.http3]
{extra}
[edge.cache]
max_bytes = "1GiB"
manifest_ttl = "1h"
[origin]
kind = "fs"
root = "{origin}"
""", http_port))
        for path in objs.values():
            benchlib.warm(f"http://127.0.0.1:{http_port}{path}")
        protos = ["h1", "h2", "h3"]
        print(f"cache warm; {args.rounds} rounds x {args.duration} per protocol and object, "
              f"{args.connections} connections x {args.streams} streams, edge on CPU 0, client on CPU 1", flush=True)
        results = {(o, p): [] for o in objs for p in protos}
        total = len(results) * args.rounds
        n = 0
        for oname, path in objs.items():
            for r in range(args.rounds):
                for p in protos:
                    n += 1
                    out = os.path.join(work, f"{oname}-{p}-{r}.json".replace(" ", "_"))
                    print(f"[{n}/{total}] {oname:14s} {p} round {r + 1} ...", end="", flush=True)
                    subprocess.run(["taskset", "-c", "1", binary, "load", "proto", "--proto", p, "--insecure",
                                    "--server-name", "localhost", "--connections", str(args.connections),
                                    "--streams", str(args.streams), "--duration", args.duration,
                                    "--warmup", args.warmup, "--quiet", "--json", out,
                                    "--max-udp-payload", str(args.max_udp_payload),
                                    f"https://127.0.0.1:{tls_port}{path}"],
                                   check=True, capture_output=True, text=True)
                    with open(out) as f:
                        rep = json.load(f)
                    rep["file"] = out
                    results[(oname, p)].append(rep)
                    print(f" {rep['rps']:>9.0f} req/s  {rep['mbps']:>7.1f} MB/s  p99 {rep['p99_ms']:.2f} ms", flush=True)
        print()
        print("| object | protocol | req/s (median) | MB/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        med = {}
        for (oname, p), reps in results.items():
            m = {k: statistics.median(x[k] for x in reps) for k in ("rps", "mbps", "p50_ms", "p99_ms")}
            med[(oname, p)] = m
            print(f"| {oname} | {p} | {m['rps']:.0f} | {m['mbps']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
        print()
        for oname in objs:
            ratio = med[(oname, "h3")]["rps"] / med[(oname, "h2")]["rps"]
            print(f"{oname}: h3/h2 throughput ratio {ratio:.2f}; p99 h1 {med[(oname, 'h1')]['p99_ms']:.2f} ms, "
                  f"h2 {med[(oname, 'h2')]['p99_ms']:.2f} ms, h3 {med[(oname, 'h3')]['p99_ms']:.2f} ms")
            # Plot the median round of each protocol.
            runs = []
            for p in protos:
                reps = sorted(results[(oname, p)], key=lambda x: x["rps"])
                runs.append(f"{p}={reps[len(reps) // 2]['file']}")
            svg = os.path.join(args.plots, f"h3-{oname.split()[0]}.svg")
            subprocess.run([binary, "load", "plot", "--out", svg] + runs, check=True)
            print(f"  plot: {svg}")
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
