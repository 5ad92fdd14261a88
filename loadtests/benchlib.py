"""Shared pieces of StreamGate's benchmark scripts: ports, processes, objects, wrk."""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=15):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"GET {url}: {e.code} {e.read()[:200]!r}")


def build_binary():
    """Builds the release binary and returns its path."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    print("building streamgate (release) ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "streamgate"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "streamgate")


def write_objects(root, asset):
    """A 1 MiB segment and a 60-segment HLS media playlist under root/asset/video/."""
    d = os.path.join(root, asset, "video")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seg-00001.m4s"), "wb") as f:
        f.write(os.urandom(1 << 20))
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:4", "#EXT-X-MEDIA-SEQUENCE:1",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS", '#EXT-X-MAP:URI="init.mp4"']
    for i in range(1, 61):
        lines += ["#EXTINF:3.200000,", f"seg-{i:05d}.m4s"]
    lines.append("#EXT-X-ENDLIST")
    with open(os.path.join(d, "index.m3u8"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"segment 1 MiB": f"/v/{asset}/video/seg-00001.m4s", "playlist": f"/v/{asset}/video/index.m3u8"}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * units[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "non2xx": int(errors.group(1)) if errors else 0}


def wrk(url, duration, connections, headers=()):
    """One wrk run pinned to CPU 1; fails on any non-2xx answer."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    res = parse_wrk(subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout)
    if res["non2xx"]:
        sys.exit(f"{url}: {res['non2xx']} non-2xx responses")
    return res


def stop(procs):
    import signal
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def start_edge(binary, work, config, port):
    """Writes `config` as the edge's TOML, starts the edge pinned to CPU 0, waits for `port`."""
    path = os.path.join(work, "edge.toml")
    with open(path, "w") as f:
        f.write(config)
    env = dict(os.environ, STREAMGATE_LOG="warn")
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "edge", "--config", path], env=env)
    wait_port(port, "edge")
    return proc


def warm(url, headers=None):
    """Fetches `url` twice and checks that the second answer is a cache hit."""
    get(url, headers)
    status, h, _ = get(url, headers)
    if status != 200 or h.get("x-cache") != "HIT":
        sys.exit(f"{url}: not a cache hit after warming ({status}, x-cache {h.get('x-cache')})")


def ed25519_issuer(kid):
    """A fresh Ed25519 signing key for benchmark tokens (PyJWT): its JWK entry for a policy
    snapshot, and a function that mints a token with the given claims."""
    try:
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        sys.exit("needs PyJWT and cryptography: run with ~/.cache/streamgate-venv/bin/python (scripts/setup.sh makes it)")
    import base64
    key = ed25519.Ed25519PrivateKey.generate()
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kid": kid, "alg": "EdDSA", "crv": "Ed25519",
           "x": base64.urlsafe_b64encode(x).rstrip(b"=").decode()}
    return jwk, lambda claims: jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def on_off_rounds(objects, bases, hdrs, rounds, duration, connections):
    """Warms every (object, off/on) case, then runs `rounds` rounds of wrk over them, taking
    turns ("off" first in even rounds, "on" first in odd ones). Returns
    {(object, case): [wrk result per round]}."""
    hmap = dict(h.split(": ", 1) for h in hdrs)
    cases = [(o, c, bases[c] + path) for o, path in objects.items() for c in ("off", "on")]
    for _, _, url in cases:
        warm(url, hmap)
    print(f"caches warm; {rounds} rounds x {duration} s, {connections} connections, "
          "edges on CPU 0 (1 thread each, one loaded at a time), wrk on CPU 1", flush=True)
    results = {(o, c): [] for o, c, _ in cases}
    total, n = rounds * len(cases), 0
    for r in range(rounds):
        order = cases if r % 2 == 0 else [c for pair in zip(cases[1::2], cases[0::2]) for c in pair]
        for oname, case, url in order:
            n += 1
            print(f"[{n}/{total}] {oname:14s} {case:4s} round {r + 1} ...", end="", flush=True)
            res = wrk(url, duration, connections, hdrs)
            results[(oname, case)].append(res)
            print(f" {res['rps']:>10.0f} req/s  p99 {res['p99_ms']:.2f} ms", flush=True)
    return results


def on_off_report(objects, results, what, goal):
    """Prints the medians per case and the on/off ratio per object, round by round."""
    import statistics
    print()
    print(f"| object | {what} | req/s (median) | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for key_, rs in results.items():
        m = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_ms", "p99_ms")}
        print(f"| {key_[0]} | {key_[1]} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
    print()
    for oname in objects:
        per = [a["rps"] / b["rps"] for a, b in zip(results[(oname, "on")], results[(oname, "off")])]
        print(f"{oname}: on / off throughput {statistics.median(per):.3f} "
              f"(rounds {min(per):.3f} to {max(per):.3f}; goal >= {goal})")


def snapshot_edge(binary, work, name, snapshot, origin, procs, extra=""):
    """Starts an edge on one Pingora thread (pinned to CPU 0 by start_edge) serving the
    filesystem `origin` under the policy `snapshot` file, with `extra` TOML after its
    `[edge.gate]` table; appends it to `procs`. Returns (base URL, admin URL)."""
    port, admin = free_port(), free_port()
    home = os.path.join(work, name)
    os.makedirs(home, exist_ok=True)
    procs.append(start_edge(binary, home, f"""
[edge]
http_listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
threads = 1
[edge.cache]
max_bytes = "1GiB"
manifest_ttl = "1h"
[edge.gate]
snapshot = "{snapshot}"
{extra}
[origin]
kind = "fs"
root = "{origin}"
""", port))
    return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"


def on_off_args(doc):
    """The command line of the on/off benchmarks."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary")
    return ap.parse_args()
