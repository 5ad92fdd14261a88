#!/usr/bin/env python3
"""What the transcode farm costs and what segment-parallel encoding buys.

1. Farm overhead: one `streamgate transcode` worker (concurrency 2, both cores) on a 60 s
   1080p30 source, from `ctl job submit` to `done` (probe, split, encode the parts, stage,
   stitch, publish, register), against the bare ffmpeg command line for the same ladder
   (one ffmpeg, the split filter, five libx264 encoders with the same settings and the
   same keyframes, AAC, the hls fMP4 muxer), on the same two cores. Ratio farm/bare.
2. Segment-parallel: 2 workers, each pinned to one core (taskset) with concurrency 1,
   against 1 worker pinned to one core, on a 120 s source. Ratio 1 worker / 2 workers.
3. The realtime factor of the whole ladder on this machine (source seconds per second).

Rounds alternate which side runs first; medians with min-max spread are printed and
written to loadtests/results/bench_farm.json. Every farm run starts on a fresh etcd (job
ids are content-addressed, so the same source would otherwise be the same done job).

  python3 loadtests/bench_farm.py [--rounds 3] [--only overhead|parallel] [--release]
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
from benchlib import ROOT, free_port, wait_port  # noqa: E402

RESULTS = os.path.join(ROOT, "loadtests/results")
TOKEN = "bench:bench-admin-token-0123456789"
# The default ladder (transcode-farm LadderConfig::default()) for a 1080p30 source.
RUNGS = [(1920, 1080, 5000), (1280, 720, 2800), (854, 480, 1400), (640, 360, 800), (426, 240, 400)]
SEG = "3.2"
GOP = 96


def binary(release):
    cmd = ["cargo", "build", "--locked", "-p", "streamgate"] + (["--release"] if release else [])
    print(f"building streamgate ({'release' if release else 'debug'}) ...", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release" if release else "debug", "streamgate")


def source(secs, size):
    path = os.path.join(RESULTS, f"farm-src-{size}-{secs}s.mp4")
    if not os.path.exists(path):
        print(f"making a {secs} s {size} source ...", flush=True)
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
                        "-t", str(secs), "-map", "0:v", "-map", "1:a",
                        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "8M", "-pix_fmt", "yuv420p",
                        "-g", "60", "-c:a", "aac", "-movflags", "+faststart", path], check=True)
    return path


def rungs_for(size):
    h = int(size.split("x")[1])
    return [r for r in RUNGS if r[1] <= h]


def bare_ffmpeg(src, out, size, cpus):
    """The single ffmpeg command line of the same ladder, as transcode-farm builds it."""
    rungs = rungs_for(size)
    n = len(rungs)
    graph = f"[0:v:0]fps=30/1,split={n}" + "".join(f"[s{i}]" for i in range(n))
    for i, (w, h, _) in enumerate(rungs):
        graph += f";[s{i}]scale={w}:{h},setsar=1,format=yuv420p[v{i}]"
    args = ["taskset", "-c", cpus, "ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            "-xerror", "-i", src, "-filter_complex", graph]
    hls = lambda d: ["-map_metadata", "-1", "-f", "hls", "-hls_time", SEG, "-hls_playlist_type", "vod",
                     "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
                     "-hls_segment_options", "movflags=+negative_cts_offsets:use_editlist=0",
                     "-start_number", "1", "-hls_segment_filename", f"{d}/seg-%05d.m4s", f"{d}/p.m3u8"]
    for i, (_, h, kbps) in enumerate(rungs):
        d = os.path.join(out, f"video/{h}p")
        os.makedirs(d, exist_ok=True)
        args += ["-map", f"[v{i}]", "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
                 "-b:v", f"{kbps}k", "-maxrate", f"{kbps * 11 // 10}k", "-bufsize", f"{kbps * 2}k",
                 "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
                 "-force_key_frames", f"expr:gte(t,n_forced*{SEG})", "-an", "-sn", "-dn"] + hls(d)
    d = os.path.join(out, "audio/aac")
    os.makedirs(d, exist_ok=True)
    args += ["-map", "0:a:0", "-c:a", "aac", "-profile:a", "aac_low", "-b:a", "128k", "-ar", "48000",
             "-ac", "2", "-vn", "-sn", "-dn"] + hls(d)
    t0 = time.monotonic()
    subprocess.run(args, check=True)
    return time.monotonic() - t0


class Farm:
    """etcd, a control plane and worker processes, all fresh."""

    def __init__(self, bin_path, workers):
        self.dir = tempfile.mkdtemp(prefix="bench-farm-")
        self.procs = []
        self.bin = bin_path
        cport, pport = free_port(), free_port()
        self.etcd = f"http://127.0.0.1:{cport}"
        self.procs.append(subprocess.Popen(
            ["etcd", "--name", "b", "--data-dir", os.path.join(self.dir, "etcd"),
             "--listen-client-urls", self.etcd, "--advertise-client-urls", self.etcd,
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"b=http://127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(cport, "etcd", 60)
        with open(os.path.join(self.dir, "tokens"), "w") as f:
            f.write(TOKEN + "\n")
        with open(os.path.join(self.dir, "my-token"), "w") as f:
            f.write(TOKEN.split(":", 1)[1] + "\n")
        self.grpc = free_port()
        cfg = os.path.join(self.dir, "control.toml")
        with open(cfg, "w") as f:
            f.write(f'[control]\nlisten = "127.0.0.1:{self.grpc}"\nstore = "etcd"\n'
                    f'etcd_endpoints = ["{self.etcd}"]\nadmin_token_file = "{self.dir}/tokens"\n')
        self.procs.append(subprocess.Popen([bin_path, "control", "--config", cfg],
                                           stdout=subprocess.DEVNULL, env={**os.environ, "STREAMGATE_LOG": "warn"}))
        wait_port(self.grpc, "control plane")
        self.origin = os.path.join(self.dir, "origin")
        for i, (cpus, concurrency) in enumerate(workers):
            wcfg = os.path.join(self.dir, f"w{i}.toml")
            with open(wcfg, "w") as f:
                f.write(f'[transcode]\nstore = "etcd"\netcd_endpoints = ["{self.etcd}"]\n'
                        f'data_dir = "{self.dir}/w{i}"\n[transcode.worker]\nname = "w{i}"\n'
                        f'concurrency = {concurrency}\nadmin_listen = "127.0.0.1:{free_port()}"\n[origin]\nkind = "fs"\nroot = "{self.origin}"\n')
            self.procs.append(subprocess.Popen(["taskset", "-c", cpus, bin_path, "transcode", "--config", wcfg],
                                               stdout=subprocess.DEVNULL,
                                               env={**os.environ, "STREAMGATE_LOG": "warn"}))

    def run(self, src):
        os.makedirs(os.path.join(self.origin, "in"), exist_ok=True)
        shutil.copy(src, os.path.join(self.origin, "in/src.mp4"))
        t0 = time.monotonic()
        out = subprocess.run([self.bin, "ctl", "--endpoint", f"http://127.0.0.1:{self.grpc}",
                              "--token-file", os.path.join(self.dir, "my-token"),
                              "job", "submit", "in/src.mp4", "--asset", "bench", "--wait"],
                             capture_output=True, text=True)
        took = time.monotonic() - t0
        if out.returncode != 0:
            sys.exit(f"the farm job failed: {out.stdout}{out.stderr}")
        return took

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def farm_time(bin_path, workers, src):
    farm = Farm(bin_path, workers)
    try:
        time.sleep(1)
        return farm.run(src)
    finally:
        farm.close()


def bare_time(src, size, cpus):
    out = tempfile.mkdtemp(prefix="bench-bare-")
    try:
        return bare_ffmpeg(src, out, size, cpus)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "rounds": xs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["overhead", "parallel"])
    ap.add_argument("--release", action="store_true", help="build and run the release binary")
    ap.add_argument("--overhead-secs", type=int, default=60)
    ap.add_argument("--parallel-secs", type=int, default=120)
    ap.add_argument("--parallel-size", default="1280x720")
    args = ap.parse_args()
    for tool in ["ffmpeg", "etcd", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: run ./scripts/setup.sh")
    os.makedirs(RESULTS, exist_ok=True)
    bin_path = binary(args.release)
    report = {"binary": "release" if args.release else "debug", "rounds": args.rounds}

    if args.only in (None, "overhead"):
        size = "1920x1080"
        src = source(args.overhead_secs, size)
        bare, farm = [], []
        for r in range(args.rounds):
            order = [("bare", lambda: bare_time(src, size, "0,1")),
                     ("farm", lambda: farm_time(bin_path, [("0,1", 2)], src))]
            if r % 2:
                order.reverse()
            for name, run in order:
                t = run()
                (bare if name == "bare" else farm).append(t)
                print(f"overhead round {r + 1}: {name} {t:.1f} s", flush=True)
        ratios = [f / b for f, b in zip(farm, bare)]
        report["overhead"] = {
            "source": f"{args.overhead_secs} s {size}", "bare_s": summary(bare), "farm_s": summary(farm),
            "ratio_farm_over_bare": summary(ratios),
            "realtime_factor_bare": args.overhead_secs / statistics.median(bare),
            "realtime_factor_farm": args.overhead_secs / statistics.median(farm),
        }

    if args.only in (None, "parallel"):
        size = args.parallel_size
        src = source(args.parallel_secs, size)
        one, two = [], []
        for r in range(args.rounds):
            order = [("1 worker", lambda: farm_time(bin_path, [("0", 1)], src)),
                     ("2 workers", lambda: farm_time(bin_path, [("0", 1), ("1", 1)], src))]
            if r % 2:
                order.reverse()
            for name, run in order:
                t = run()
                (one if name == "1 worker" else two).append(t)
                print(f"parallel round {r + 1}: {name} {t:.1f} s", flush=True)
        speedups = [a / b for a, b in zip(one, two)]
        report["parallel"] = {
            "source": f"{args.parallel_secs} s {size}", "one_worker_s": summary(one),
            "two_workers_s": summary(two), "speedup": summary(speedups),
        }

    with open(os.path.join(RESULTS, "bench_farm.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
