#!/usr/bin/env python3
"""Miss time-to-first-byte: the StreamGate edge against nginx proxy_cache, both in front of
one origin that sends each body at a limited rate (nginx `limit_rate`, 40 MB/s by default).

Each request is for an object neither cache has seen (a fresh name every time), so every
one is a miss that fills from the origin. The script times, with a raw socket client, when
the first body byte and the last byte arrive, for N objects per round, taking turns between
the servers, and prints the medians per round, the median of the rounds with their spread,
and the edge/nginx ratio of first-byte times. With read-while-write fills the edge's first
byte should come about when the origin's does; a cache that buffers the whole object first
pays the whole transfer (8 MiB at 40 MB/s: ~200 ms) before its first byte.

Usage: python3 loadtests/bench_miss.py [--size-mib 8] [--rate 40m] [--objects 10] [--rounds 3]
       [--binary PATH]
Needs nginx (scripts/setup.sh) and a release build of streamgate (built if not given).
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def timed_get(port, path):
    """GET over a new HTTP/1.1 connection: (status, first body byte s, last byte s, bytes)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    buf = b""
    first = None
    total = 0
    head_len = None
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        if head_len is None:
            buf += chunk
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                continue
            head_len = i + 4
            status = int(buf.split(b" ", 2)[1])
            body = len(buf) - head_len
            if body > 0:
                first = time.perf_counter()
            total = body
        else:
            if first is None:
                first = time.perf_counter()
            total += len(chunk)
    last = time.perf_counter()
    s.close()
    return status, (first or last) - t0, last - t0, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--rate", default="40m", help="nginx limit_rate of the origin (bytes/s, k/m suffixes)")
    ap.add_argument("--objects", type=int, default=10, help="cold objects per server and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx is missing: run ./scripts/setup.sh")
    binary = args.binary or benchlib.build_binary()
    size = args.size_mib << 20

    work = tempfile.mkdtemp(prefix="sg-bench-miss-")
    os.chmod(work, 0o755)
    procs = []
    try:
        objdir = os.path.join(work, "objects", "bench")
        os.makedirs(objdir)
        names = [f"seg-{r}-{s}-{i:03d}.m4s" for r in range(args.rounds) for s in ("edge", "nginx")
                 for i in range(args.objects)]
        body = os.urandom(size)
        for n in names:
            with open(os.path.join(objdir, n), "wb") as f:
                f.write(body)
        os.chmod(os.path.join(work, "objects"), 0o755)
        os.chmod(objdir, 0o755)
        origin_port, nginx_port, edge_port, admin_port = (benchlib.free_port() for _ in range(4))
        conf = f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nodelay on;
  types {{ video/iso.segment m4s; }}
  client_body_temp_path {work}/nx-body; proxy_temp_path {work}/nx-proxy;
  fastcgi_temp_path {work}/nx-fcgi; uwsgi_temp_path {work}/nx-uwsgi; scgi_temp_path {work}/nx-scgi;
  proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=sg:10m max_size=4g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 8; }}
  server {{ listen 127.0.0.1:{origin_port}; root {work}/objects; limit_rate {args.rate}; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location /v/ {{
      proxy_pass http://origin/;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache sg; proxy_cache_valid 200 1h; proxy_cache_lock on;
    }}
  }}
}}
"""
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(conf)
        procs.append(subprocess.Popen(["taskset", "-c", "0", nginx, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with open(os.path.join(work, "edge.toml"), "w") as f:
            f.write(f"""
[edge]
http_listen = "127.0.0.1:{edge_port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = 1
[edge.cache]
max_bytes = "2GiB"
max_object_bytes = "64MiB"
[origin]
kind = "http"
base_url = "http://127.0.0.1:{origin_port}/"
timeout = "30s"
""")
        env = dict(os.environ, STREAMGATE_LOG="warn")
        procs.append(subprocess.Popen(["taskset", "-c", "0", binary, "edge", "--config", f"{work}/edge.toml"],
                                      env=env))
        for port, what in ((origin_port, "origin"), (nginx_port, "nginx"), (edge_port, "edge")):
            benchlib.wait_port(port, what)
        ports = {"edge": edge_port, "nginx": nginx_port}
        # Without a state source the edge gates nothing (as in bench_vs_nginx.py); check.
        st, _, _, _ = timed_get(edge_port, "/v/bench/missing.m4s")
        if st != 404:
            sys.exit(f"the edge answered {st} for a missing object of the bench asset, not 404")
        print(f"{args.objects} cold {args.size_mib} MiB objects per server and round, origin limited to "
              f"{args.rate}B/s, servers on CPU 0", flush=True)
        per_round = {s: [] for s in ports}
        for r in range(args.rounds):
            order = ("edge", "nginx") if r % 2 == 0 else ("nginx", "edge")
            for sname in order:
                firsts, lasts = [], []
                for i in range(args.objects):
                    n = next((x for x in names if f"-{sname}-" in x), None)
                    names.remove(n)
                    st, first, last, got = timed_get(ports[sname], f"/v/bench/{n}")
                    if st != 200 or got != size:
                        sys.exit(f"{sname}: status {st}, {got} of {size} bytes for {n}")
                    firsts.append(first * 1000)
                    lasts.append(last * 1000)
                m = (statistics.median(firsts), statistics.median(lasts))
                per_round[sname].append(m)
                print(f"round {r + 1} {sname:5s}: first byte {m[0]:8.1f} ms, last byte {m[1]:8.1f} ms (medians)",
                      flush=True)
        print()
        print("| server | first byte ms, per round | median | last byte ms (median) |")
        print("|---|---|---|---|")
        med = {}
        for s in ports:
            fb = [x[0] for x in per_round[s]]
            lb = [x[1] for x in per_round[s]]
            med[s] = statistics.median(fb)
            print(f"| {s} | {', '.join(f'{x:.1f}' for x in fb)} | {med[s]:.1f} | {statistics.median(lb):.1f} |")
        ratios = [e[0] / n[0] for e, n in zip(per_round["edge"], per_round["nginx"])]
        print(f"\nmiss first byte, edge/nginx: median {statistics.median(ratios):.2f} "
              f"(rounds {min(ratios):.2f} to {max(ratios):.2f}); goal <= 1.5")
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
