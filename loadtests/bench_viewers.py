#!/usr/bin/env python3
"""Viewer capacity: the gated StreamGate edge against nginx proxy_cache, with the same
virtual viewers (`streamgate load play --find-capacity`).

The edge is `streamgate dev` (the gated demo asset, a dev token per viewer in the query);
nginx serves the same files, public, through proxy_cache from an origin server block. Both
are pinned with taskset to the same core(s) (--server-cpus, default 0); the generator runs
on the others (--client-cpus, default 1). Each round runs one capacity search per server
(closed model: --start viewers, times --step until the late-segment ratio passes 1 % or the
rebuffer ratio 0.5 %), alternating servers. The script prints every round, the median
capacity of each with its spread, and the edge/nginx ratio. A round whose generator run was
invalid (it could not keep up) is reported as such and left out of the medians.

Usage: python3 loadtests/bench_viewers.py [--rounds 3] [--start 50] [--step 1.5]
       [--session 20s] [--binary target/release/streamgate] [--json out.json]
Needs: nginx, ffmpeg, taskset (scripts/setup.sh) and a release build of streamgate.
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


def start_dev(binary, work, cpus):
    ports = {k: benchlib.free_port() for k in ("http", "tls", "admin", "control", "ingest")}
    env = dict(os.environ, STREAMGATE_LOG="warn")
    out = open(os.path.join(work, "dev.out"), "w")
    p = subprocess.Popen(
        ["taskset", "-c", cpus, binary, "dev", "--data-dir", os.path.join(work, "dev"),
         "--http-port", str(ports["http"]), "--tls-port", str(ports["tls"]),
         "--admin-port", str(ports["admin"]), "--control-port", str(ports["control"]),
         "--ingest-port", str(ports["ingest"])],
        stdout=out, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    token = None
    while time.time() < deadline and token is None:
        time.sleep(0.5)
        with open(os.path.join(work, "dev.out")) as f:
            for line in f:
                if ".m3u8?token=" in line:
                    token = line.strip().split("?token=", 1)[1]
                    break
        if p.poll() is not None:
            sys.exit("streamgate dev exited; see its output in " + work)
    if token is None:
        sys.exit("streamgate dev did not print its URLs in 5 minutes")
    return p, ports["http"], token


def start_nginx(nginx, work, objects, cpus):
    origin, port = benchlib.free_port(), benchlib.free_port()
    conf = f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 65535; }}
worker_rlimit_nofile 65535;
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types {{ application/vnd.apple.mpegurl m3u8; application/dash+xml mpd; video/iso.segment m4s; video/mp4 mp4; }}
  client_body_temp_path {work}/nx-body; proxy_temp_path {work}/nx-proxy;
  fastcgi_temp_path {work}/nx-fcgi; uwsgi_temp_path {work}/nx-uwsgi; scgi_temp_path {work}/nx-scgi;
  proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=sg:10m max_size=1g inactive=1h use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; }}
  server {{ listen 127.0.0.1:{origin}; root {objects}; }}
  server {{
    listen 127.0.0.1:{port};
    location /v/ {{
      proxy_pass http://origin/;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache sg; proxy_cache_valid 200 1h; proxy_cache_lock on;
      proxy_cache_key $uri;
    }}
  }}
}}
"""
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(conf)
    p = subprocess.Popen(["taskset", "-c", cpus, nginx, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    benchlib.wait_port(port, "nginx")
    return p, port


def capacity(binary, url, args, work, name, extra):
    report = os.path.join(work, f"{name}.json")
    cmd = ["taskset", "-c", args.client_cpus, binary, "load", "play", url,
           "--viewers", str(args.start), "--find-capacity", "--capacity-step", str(args.step),
           "--max-viewers", str(args.max_viewers), "--ramp", args.ramp, "--duration", args.duration,
           "--drain", "0s", "--session", args.session, "--target-buffer", str(args.target_buffer),
           "--threads", str(args.threads), "--quiet", "--report", report] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(report) as f:
        r = json.load(f)
    c = r["capacity"]
    return {"viewers": c["viewers"], "limited_by": c["limited_by"], "steps": c["steps"],
            "generator_cpu": r["generator_cpu"], "valid": c["limited_by"] != "generator"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--start", type=int, default=50, help="viewers at the first level")
    ap.add_argument("--step", type=float, default=1.5, help="factor between levels")
    ap.add_argument("--max-viewers", type=int, default=20000)
    ap.add_argument("--ramp", default="5s")
    ap.add_argument("--duration", default="20s", help="time at each level")
    ap.add_argument("--session", default="end", help="viewer session length (load play --session)")
    ap.add_argument("--target-buffer", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1, help="generator threads")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--client-cpus", default="1")
    ap.add_argument("--binary", help="streamgate binary (default: build a release one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    for tool in ("nginx", "taskset", "ffmpeg"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is missing: run ./scripts/setup.sh")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    binary = args.binary or benchlib.build_binary()

    work = tempfile.mkdtemp(prefix="sg-viewers-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    procs = []
    try:
        dev, edge_port, token = start_dev(binary, work, args.server_cpus)
        procs.append(dev)
        objects = os.path.join(work, "dev", "origin")
        os.chmod(os.path.join(work, "dev"), 0o755)
        for d, _, files in os.walk(objects):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        ngx, nginx_port = start_nginx(nginx, work, objects, args.server_cpus)
        procs.append(ngx)
        servers = {
            "edge": (f"http://127.0.0.1:{edge_port}/v/demo/master.m3u8", ["--token", token]),
            "nginx": (f"http://127.0.0.1:{nginx_port}/v/demo/master.m3u8", []),
        }
        for name, (url, extra) in servers.items():
            # Warm both caches with one viewer, unmeasured.
            subprocess.run([binary, "load", "play", url, "--viewers", "1", "--duration", "1s", "--quiet"] + extra,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"servers on CPU {args.server_cpus}, generator on CPU {args.client_cpus}; {args.rounds} rounds; "
              f"levels from {args.start} viewers x{args.step}, {args.duration} each; limits late 1 %, rebuffer 0.5 %",
              flush=True)
        results = {s: [] for s in servers}
        for r in range(args.rounds):
            for name, (url, extra) in servers.items():
                print(f"round {r + 1} {name:5s} ...", end="", flush=True)
                res = capacity(binary, url, args, work, f"{name}-{r}", extra)
                results[name].append(res)
                print(f" {res['viewers']:>6d} viewers (limited by {res['limited_by']}, generator CPU "
                      f"{res['generator_cpu'] * 100:.0f} %)", flush=True)
        print()
        summary = {}
        print("| server | capacity (median viewers) | rounds | spread |")
        print("|---|---|---|---|")
        for name in servers:
            vals = [x["viewers"] for x in results[name] if x["valid"]]
            if not vals:
                print(f"| {name} | invalid | 0 | - |")
                continue
            summary[name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "rounds": vals}
            print(f"| {name} | {summary[name]['median']:.0f} | {vals} | {min(vals)}-{max(vals)} |")
        if "edge" in summary and "nginx" in summary and summary["nginx"]["median"] > 0:
            ratio = summary["edge"]["median"] / summary["nginx"]["median"]
            summary["ratio"] = ratio
            print(f"\nedge/nginx viewer capacity ratio {ratio:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "results": results, "summary": summary}, f, indent=2)
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
