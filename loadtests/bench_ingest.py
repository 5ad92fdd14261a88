#!/usr/bin/env python3
"""Ingest throughput: StreamGate's tus ingest against @tus/server with @tus/file-store.

The same client (tus-js-client under Node, one PATCH for the whole file, as it sends by
default) uploads the same file to both servers on this machine, alternating, in the same
run. StreamGate runs `streamgate transcode` with a filesystem origin and its embedded
store, with everything it does for real: the SHA-256 of the source computed while it
streams in, an fdatasync and a record write every 64 MiB (its durable offsets), and the
job submitted at the end. @tus/server writes to its file store without fsync, so
StreamGate runs twice per round: as configured by default (fdatasync at each checkpoint:
offsets survive a machine crash) and with `fsync = false` (offsets survive a process crash,
as @tus/server's do at best). Prints the median time of each over the rounds, the spread,
and the ratios (>1.0: StreamGate faster).

Usage: loadtests/bench_ingest.py [--size-mib 1024] [--rounds 3] [--binary PATH]
Needs: node, and scripts/setup.sh (tus-js-client, @tus/server); a release build.
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
from benchlib import ROOT, build_binary, free_port, wait_port  # noqa: E402

TOKEN = "0123456789abcdef0123"
CLIENT = os.path.join(ROOT, "tests/ingest/tus_js_upload.cjs")
PEER = os.path.join(ROOT, "loadtests/tus_node_server.cjs")


def upload(endpoint, path):
    args = {"endpoint": endpoint, "token": TOKEN, "file": path, "metadata": {"asset": "bench", "filename": "src.bin"}}
    out = subprocess.run(["node", CLIENT, json.dumps(args)], capture_output=True, text=True)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    done = [e for e in events if e.get("event") == "success"]
    if not done:
        sys.exit(f"upload to {endpoint} failed: {out.stdout} {out.stderr}")
    return done[0]["ms"] / 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary")
    a = ap.parse_args()
    binary = a.binary or build_binary()
    work = tempfile.mkdtemp(prefix="bench-ingest-")
    src = os.path.join(work, "src.bin")
    print(f"writing a {a.size_mib} MiB source ...", flush=True)
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(a.size_mib):
            f.write(block[i % 251:] + block[:i % 251])
    times = {"streamgate": [], "streamgate-nofsync": [], "tus-server": []}
    try:
        for r in range(a.rounds):
            for name in times:
                store = os.path.join(work, name)
                shutil.rmtree(store, ignore_errors=True)
                os.makedirs(store)
                port = free_port()
                if name.startswith("streamgate"):
                    tokens = os.path.join(work, "tokens")
                    with open(tokens, "w") as f:
                        f.write(f"bench:{TOKEN}\n")
                    cfg = os.path.join(work, "t.toml")
                    with open(cfg, "w") as f:
                        f.write(f'[transcode]\ndata_dir = "{store}/state"\nadmin_token_file = "{tokens}"\n'
                                f'[transcode.ingest]\nlisten = "127.0.0.1:{port}"\n'
                                f'max_size = "{a.size_mib + 1}MiB"\nfsync = {str(name == "streamgate").lower()}\n'
                                f'[origin]\nroot = "{store}/origin"\n')
                    cmd = [binary, "transcode", "--config", cfg]
                else:
                    cmd = ["node", PEER, str(port), os.path.join(store, "files")]
                    os.makedirs(os.path.join(store, "files"))
                env = dict(os.environ, STREAMGATE_LOG="warn")
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
                try:
                    wait_port(port, name)
                    secs = upload(f"http://127.0.0.1:{port}/uploads/", src)
                finally:
                    proc.terminate()
                    proc.wait()
                times[name].append(secs)
                mib_s = a.size_mib / secs
                print(f"round {r + 1}/{a.rounds} {name:18s} {secs:6.2f} s  {mib_s:7.1f} MiB/s", flush=True)
                shutil.rmtree(store, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    med = {}
    for name, ts in times.items():
        med[name] = statistics.median(ts)
        print(f"{name:18s} median {med[name]:6.2f} s ({a.size_mib / med[name]:7.1f} MiB/s), "
              f"spread {min(ts):.2f}-{max(ts):.2f} s over {len(ts)} rounds")
    for name in ("streamgate", "streamgate-nofsync"):
        ratio = med["tus-server"] / med[name]
        print(f"ratio {name} (tus-server time / its time): {ratio:.2f}x  (goal >= 1.0x)")


if __name__ == "__main__":
    main()
