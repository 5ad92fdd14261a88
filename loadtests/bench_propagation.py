#!/usr/bin/env python3
"""Policy propagation: 100 policy changes applied through the control plane's gRPC API, and
the time until all three edges (separate processes watching one etcd) enforce each one.

Starts a real etcd (Debian etcd-server, on a tmpfs-backed or regular temp dir), one
`streamgate control` on that etcd, and three `streamgate edge` processes watching it, then
runs `streamgate load propagation`, which alternates an allowing and a denying policy and
polls every edge until it answers with the new verdict. Prints p50/p90/p99/max for all
edges, the Apply call alone, and the time after Apply returned; writes the JSON report and
an SVG percentile plot to loadtests/results/.

The goal (issue 4) is p99 under 50 ms on loopback.

Usage: python3 loadtests/bench_propagation.py [--changes 100] [--edges 3] [--binary PATH]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

RESULTS = os.path.join(benchlib.ROOT, "loadtests", "results")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--binary")
    args = ap.parse_args()
    if not shutil.which("etcd"):
        sys.exit("etcd is not installed: run ./scripts/setup.sh")
    binary = args.binary or benchlib.build_binary()
    work = tempfile.mkdtemp(prefix="sg-bench-prop-")
    procs = []
    env = dict(os.environ, STREAMGATE_LOG="warn")
    try:
        client, peer = benchlib.free_port(), benchlib.free_port()
        etcd_url = f"http://127.0.0.1:{client}"
        procs.append(subprocess.Popen(
            ["etcd", "--name", "b", "--data-dir", os.path.join(work, "etcd"),
             "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"b=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        benchlib.wait_port(client, "etcd")

        token = "bench-admin-token-0123456789"
        with open(os.path.join(work, "admin.token"), "w") as f:
            f.write(token + "\n")
        grpc = benchlib.free_port()
        with open(os.path.join(work, "control.toml"), "w") as f:
            f.write(f"""[control]
listen = "127.0.0.1:{grpc}"
store = "etcd"
etcd_endpoints = ["{etcd_url}"]
admin_token_file = "{work}/admin.token"
""")
        procs.append(subprocess.Popen([binary, "control", "--config", os.path.join(work, "control.toml")], env=env))
        benchlib.wait_port(grpc, "control plane")

        origin = os.path.join(work, "origin", "propagation")
        os.makedirs(origin)
        with open(os.path.join(origin, "master.m3u8"), "w") as f:
            f.write("#EXTM3U\n")
        edges = []
        for i in range(args.edges):
            port, admin = benchlib.free_port(), benchlib.free_port()
            path = os.path.join(work, f"edge-{i}.toml")
            with open(path, "w") as f:
                f.write(f"""[edge]
http_listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
threads = 1
[edge.gate]
etcd = ["{etcd_url}"]
snapshot = "{work}/edge-{i}-lkg.json"
edge_id = "bench-{i}"
[origin]
kind = "fs"
root = "{work}/origin"
""")
            procs.append(subprocess.Popen([binary, "edge", "--config", path], env=env))
            benchlib.wait_port(port, f"edge {i}")
            edges.append(f"http://127.0.0.1:{port}")

        os.makedirs(RESULTS, exist_ok=True)
        report = os.path.join(RESULTS, "propagation.json")
        subprocess.run([binary, "load", "propagation", "--control", f"http://127.0.0.1:{grpc}",
                        "--token", token, "--edge", ",".join(edges), "--changes", str(args.changes),
                        "--json", report], check=True)
        svg = os.path.join(RESULTS, "propagation.svg")
        subprocess.run([binary, "load", "plot", "--out", svg, f"all {args.edges} edges={report}"], check=True)
        print(f"report: {report}\nplot:   {svg}")
    finally:
        # Edges and the control plane first, etcd last, so nothing logs a lost store.
        for p in reversed(procs):
            benchlib.stop([p])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
