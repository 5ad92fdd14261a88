#!/usr/bin/env python3
"""Generator memory: the peak RSS of `streamgate load play` holding N idle viewers.

nginx serves a one-hour VOD (two video renditions and separate audio, 60 s segments of a few
bytes each, so the server costs nothing); N viewers arrive over --ramp and fill a 60 s
buffer, after which each is idle: one segment per track per minute, a timer and its one
h2 connection (h2 keeps it to one socket per viewer, as a browser would). The script samples the generator's RSS (VmRSS, and VmHWM at the end), prints
it with the number of viewers active, and fails if the peak is over --limit-mb.

Usage: python3 loadtests/bench_memory.py [--viewers 10000] [--ramp 20s] [--hold 20]
       [--binary target/release/streamgate] [--limit-mb 200]
Needs: nginx (scripts/setup.sh) and a build of streamgate.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SEGMENTS = int(os.environ.get("SG_SEGMENTS", "60"))
SEGMENT_S = 60


def write_asset(root):
    d = os.path.join(root, "idle")
    renditions = {"video/lo": 400000, "video/hi": 1200000, "audio": 128000}
    for r in renditions:
        os.makedirs(os.path.join(d, r), exist_ok=True)
        with open(os.path.join(d, r, "init.mp4"), "wb") as f:
            f.write(b"\0" * 64)
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{SEGMENT_S}", "#EXT-X-MEDIA-SEQUENCE:1",
                 "#EXT-X-PLAYLIST-TYPE:VOD", '#EXT-X-MAP:URI="init.mp4"']
        for i in range(1, SEGMENTS + 1):
            with open(os.path.join(d, r, f"s{i}.m4s"), "wb") as f:
                f.write(b"\0" * 256)
            lines += [f"#EXTINF:{SEGMENT_S}.0,", f"s{i}.m4s"]
        lines.append("#EXT-X-ENDLIST")
        with open(os.path.join(d, r, "index.m3u8"), "w") as f:
            f.write("\n".join(lines) + "\n")
    master = ["#EXTM3U",
              '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",DEFAULT=YES,URI="audio/index.m3u8"',
              '#EXT-X-STREAM-INF:BANDWIDTH=400000,AUDIO="a"', "video/lo/index.m3u8",
              '#EXT-X-STREAM-INF:BANDWIDTH=1200000,AUDIO="a"', "video/hi/index.m3u8"]
    with open(os.path.join(d, "master.m3u8"), "w") as f:
        f.write("\n".join(master) + "\n")


def rss_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=10000)
    ap.add_argument("--ramp", default="20s")
    ap.add_argument("--hold", type=int, default=20, help="seconds to hold them all after the ramp")
    ap.add_argument("--limit-mb", type=float, default=200.0)
    ap.add_argument("--binary", help="streamgate binary (default: build a release one)")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx is missing: run ./scripts/setup.sh")
    binary = args.binary or benchlib.build_binary()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.viewers + 200:
        sys.exit(f"the open-file limit ({hard}) is too low for {args.viewers} viewers")
    work = tempfile.mkdtemp(prefix="sg-mem-")
    os.chmod(work, 0o755)
    procs = []
    try:
        write_asset(os.path.join(work, "www"))
        for dp, dn, fn in os.walk(work):
            os.chmod(dp, 0o755)
        port = benchlib.free_port()
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(f"""
worker_processes 1;
worker_rlimit_nofile {hard};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections {min(hard, 1 << 20)}; }}
http {{
  access_log off; keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f;
  uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{port} backlog=65535 http2; location /v/ {{ alias {work}/www/; }} }}
}}
""")
        procs.append(subprocess.Popen([nginx, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile))
        benchlib.wait_port(port, "nginx")
        ramp_s = float(args.ramp.rstrip("s"))
        gen = subprocess.Popen(
            [binary, "load", "play", f"http://127.0.0.1:{port}/v/idle/master.m3u8", "--viewers", str(args.viewers),
             "--ramp", args.ramp, "--duration", f"{int(ramp_s) + args.hold}s", "--drain", "0s",
             "--protocol", "h2", "--target-buffer", "60", "--startup-buffer", "1", "--session", "1h", "--report", f"{work}/r.json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
        procs.append(gen)
        peak = 0
        t0 = time.time()
        while gen.poll() is None:
            time.sleep(1)
            try:
                rss = rss_kb(gen.pid, "VmRSS")
                hwm = rss_kb(gen.pid, "VmHWM")
            except FileNotFoundError:
                break
            peak = max(peak, hwm)
            print(f"{time.time() - t0:5.0f} s: RSS {rss / 1024:6.1f} MB (peak {hwm / 1024:6.1f} MB)", flush=True)
        out, err = gen.communicate()
        print(out.strip().splitlines()[-1] if out.strip() else err[-2000:])
        mb = peak / 1024
        print(f"\n{args.viewers} idle viewers: generator peak RSS {mb:.1f} MB "
              f"({peak * 1024 / args.viewers / 1024:.1f} KiB per viewer); limit {args.limit_mb:.0f} MB")
        if mb > args.limit_mb:
            sys.exit(1)
    finally:
        benchlib.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
