#!/usr/bin/env python3
"""What NFT gating costs: warm and cold decisions, RPC calls per viewer, time to revoke.

Starts a hardhat node (the Node packages that scripts/setup.sh installs), deploys the test
contracts with tests/chain/fixture.mjs, mints ERC-721 tokens to a holder and a viewer, then
runs the edge's `nft` benchmark (`cargo bench -p streamgate-edge --features internals --bench
nft`, the gate in-process) against it twice: with automine and 0 confirmations, and with a
block every second and 2 confirmations. Writes JSON reports and a percentile plot (SVG) of
the cold decisions and the raw eth_call round trips to loadtests/results/.

  python3 loadtests/bench_web3.py [--warm 200000] [--cold 300] [--transfers 5]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, build_binary, free_port  # noqa: E402

NODE_DIR = os.environ.get("STREAMGATE_NODE_DIR", os.path.expanduser("~/.cache/streamgate-node"))


def rpc(url, method, params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        v = json.load(r)
    if "error" in v:
        sys.exit(f"{method}: {v['error']}")
    return v["result"]


def fixture(*args):
    out = subprocess.run(["node", os.path.join(ROOT, "tests/chain/fixture.mjs"), *args],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "STREAMGATE_NODE_DIR": NODE_DIR})
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=int, default=200_000)
    ap.add_argument("--cold", type=int, default=300)
    ap.add_argument("--transfers", type=int, default=5)
    args = ap.parse_args()
    binary = build_binary()
    cli = os.path.join(NODE_DIR, "node_modules/hardhat/internal/cli/cli.js")
    if not os.path.exists(cli):
        sys.exit(f"no hardhat in {NODE_DIR}: run ./scripts/setup.sh")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(ROOT, "loadtests/results/hardhat.log"), "w")
    node = subprocess.Popen(["node", cli, "node", "--hostname", "127.0.0.1", "--port", str(port)],
                            cwd=NODE_DIR, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "DO_NOT_TRACK": "1"})
    try:
        t0 = time.time()
        while True:
            try:
                rpc(url, "eth_chainId", [])
                break
            except OSError:
                if time.time() - t0 > 60:
                    sys.exit("hardhat node did not start")
                time.sleep(0.1)
        print(f"hardhat node up in {time.time() - t0:.1f} s; deploying ...", flush=True)
        d = fixture("deploy", "--rpc", url)
        c, accts = d["contracts"], d["accounts"]
        holder, other, viewer = accts[2]["address"], accts[3]["address"], accts[4]["address"]
        fixture("mint721", "--rpc", url, "--contract", c["erc721"], "--to", holder, "--id", "1")
        fixture("mint721", "--rpc", url, "--contract", c["erc721"], "--to", viewer, "--id", "2")
        fixture("mint721", "--rpc", url, "--contract", c["erc721"], "--to", viewer, "--id", "3")
        runs = [("automine, 0 confirmations, poll 250 ms", "0", "250ms", None, "2"),
                ("1 s blocks, 2 confirmations, poll 500 ms", "2", "500ms", 1000, "3")]
        reports = []
        for i, (label, conf, poll, interval, _) in enumerate(runs):
            if interval:
                rpc(url, "evm_setAutomine", [False])
                rpc(url, "evm_setIntervalMining", [interval])
            # A fresh viewer for each run: token 2 or 3 moves to a fresh account first.
            fresh = accts[5 + i]["address"]
            tok = runs[i][4]
            data = "0x23b872dd" + viewer[2:].lower().rjust(64, "0") + fresh[2:].lower().rjust(64, "0") + int(tok).to_bytes(32, "big").hex()
            rpc(url, "eth_sendTransaction", [{"from": viewer, "to": c["erc721"], "data": data}])
            if interval:
                time.sleep(interval / 1000 * 2)
            out = os.path.join(ROOT, f"loadtests/results/web3-{i}.json")
            print(f"== {label}", flush=True)
            subprocess.run(["cargo", "bench", "--locked", "-q", "-p", "streamgate-edge", "--features", "internals",
                            "--bench", "nft", "--", "--rpc", url, "--erc721", c["erc721"], "--erc1155", c["erc1155"],
                            "--multicall3", c["multicall3"], "--holder", holder, "--other", other, "--viewer", fresh,
                            "--warm", str(args.warm), "--cold", str(args.cold), "--transfers", str(args.transfers),
                            "--confirmations", conf, "--poll-interval", poll, "--json", out],
                           check=True, cwd=ROOT, env={**os.environ, "STREAMGATE_LOG": "warn"})
            reports.append((label, out))
        # The plot: cold decisions against the raw eth_call round trip of the first run.
        raw = os.path.join(ROOT, "loadtests/results/web3-raw.json")
        with open(reports[0][1]) as f:
            r0 = json.load(f)
        with open(raw, "w") as f:
            json.dump(r0["raw_eth_call"], f)
        two = os.path.join(ROOT, "loadtests/results/web3-two.json")
        with open(two, "w") as f:
            json.dump(r0["cold_two_contracts_multicall"], f)
        svg = os.path.join(ROOT, "loadtests/results/web3-cold.svg")
        subprocess.run([binary, "load", "plot", "--out", svg, f"cold nft decision={reports[0][1]}",
                        f"cold, two contracts (Multicall3)={two}", f"raw eth_call={raw}"], check=True)
        print(f"plot: {svg}")
    finally:
        node.terminate()
        node.wait()


if __name__ == "__main__":
    main()
