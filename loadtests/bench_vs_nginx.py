#!/usr/bin/env python3
"""Cache-hit benchmark: the StreamGate edge against nginx, both caching in front of one origin.

Both servers get one worker (one Pingora thread; one nginx worker process) pinned to CPU 0;
the client, wrk, runs pinned to CPU 1. They take turns on the same objects (a 1 MiB segment
and an HLS playlist), several rounds each, in one run. The script prints requests/s, p50
and p99 latency per server, and the edge/nginx throughput ratio.

Usage: python3 loadtests/bench_vs_nginx.py [--duration 10] [--rounds 3] [--connections 32]
Needs: nginx, wrk (scripts/setup.sh installs both) and a release build of streamgate.
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
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="turns per server and object")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary", help="streamgate binary (default: build a release one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: run ./scripts/setup.sh")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    binary = args.binary or benchlib.build_binary()

    work = tempfile.mkdtemp(prefix="sg-bench-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    procs = []
    try:
        objs = benchlib.write_objects(os.path.join(work, "objects"), "bench")
        origin_port, nginx_port, edge_port, admin_port = (benchlib.free_port() for _ in range(4))
        conf = f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }}
  client_body_temp_path {work}/nx-body; proxy_temp_path {work}/nx-proxy;
  fastcgi_temp_path {work}/nx-fcgi; uwsgi_temp_path {work}/nx-uwsgi; scgi_temp_path {work}/nx-scgi;
  proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=sg:10m max_size=1g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
  server {{ listen 127.0.0.1:{origin_port}; root {work}/objects; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location /v/ {{
      proxy_pass http://origin/;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache sg; proxy_cache_valid 200 1h; proxy_cache_lock on;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"""
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(conf)
        # The origin runs in the same nginx; its work happens only on misses, before timing.
        procs.append(subprocess.Popen(["taskset", "-c", "0", nginx, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with open(os.path.join(work, "edge.toml"), "w") as f:
            f.write(f"""
[edge]
http_listen = "127.0.0.1:{edge_port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = 1
[edge.cache]
max_bytes = "1GiB"
manifest_ttl = "1h"
[origin]
kind = "http"
base_url = "http://127.0.0.1:{origin_port}/"
""")
        env = dict(os.environ, STREAMGATE_LOG="warn")
        procs.append(subprocess.Popen(["taskset", "-c", "0", binary, "edge", "--config", f"{work}/edge.toml"], env=env))
        for port, what in ((origin_port, "origin"), (nginx_port, "nginx"), (edge_port, "edge")):
            benchlib.wait_port(port, what)

        servers = {"edge": f"http://127.0.0.1:{edge_port}", "nginx": f"http://127.0.0.1:{nginx_port}"}
        for name, base in servers.items():
            for path in objs.values():
                benchlib.warm(base + path)
        print(f"both caches warm; {args.rounds} rounds x {args.duration} s per server and object, "
              f"{args.connections} connections, server on CPU 0, wrk on CPU 1", flush=True)

        results = {o: {s: [] for s in servers} for o in objs}
        total = len(objs) * args.rounds * len(servers)
        n = 0
        for oname, path in objs.items():
            for r in range(args.rounds):
                for sname, base in servers.items():
                    n += 1
                    print(f"[{n}/{total}] {oname:14s} {sname:5s} round {r + 1} ...", end="", flush=True)
                    res = benchlib.wrk(base + path, args.duration, args.connections)
                    results[oname][sname].append(res)
                    print(f" {res['rps']:>10.0f} req/s  p99 {res['p99_ms']:.2f} ms", flush=True)

        print()
        print("| object | server | req/s (median) | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        summary = {}
        for oname in objs:
            for sname in servers:
                rs = results[oname][sname]
                med = lambda k: statistics.median(x[k] for x in rs)
                summary.setdefault(oname, {})[sname] = {k: med(k) for k in ("rps", "p50_ms", "p99_ms")}
                s = summary[oname][sname]
                print(f"| {oname} | {sname} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
        print()
        for oname in objs:
            ratio = summary[oname]["edge"]["rps"] / summary[oname]["nginx"]["rps"]
            summary[oname]["ratio"] = ratio
            print(f"{oname}: edge/nginx throughput ratio {ratio:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "summary": summary}, f, indent=2)
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
