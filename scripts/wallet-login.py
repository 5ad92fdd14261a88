#!/usr/bin/env python3
"""Signs in to a StreamGate edge with an EVM key and prints the session token.

Uses eth-account (installed by ./scripts/setup.sh in ~/.cache/streamgate-venv): asks the
edge for a challenge, signs it with personal_sign (EIP-191), and exchanges it for a token.

  ~/.cache/streamgate-venv/bin/python scripts/wallet-login.py --key 0x... \
      [--edge http://127.0.0.1:8080] [--chain eip155:31337] [--address 0x...]

--address signs in as another account than the key's (an ERC-1271 contract wallet the key
owns). Exits 1 with the edge's reason when sign-in is refused.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request

from eth_account import Account
from eth_account.messages import encode_defunct


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: {e.code} {e.read().decode(errors='replace')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key", required=True, help="the signing key, 0x-hex")
    ap.add_argument("--edge", default="http://127.0.0.1:8080")
    ap.add_argument("--chain", default="eip155:31337")
    ap.add_argument("--address", help="the account to sign in as (default: the key's)")
    args = ap.parse_args()
    acct = Account.from_key(args.key)
    address = args.address or acct.address
    ch = post(f"{args.edge}/auth/challenge", {"address": address, "chain": args.chain})
    sig = acct.sign_message(encode_defunct(text=ch["message"])).signature
    out = post(f"{args.edge}/auth/verify", {"message": ch["message"], "signature": "0x" + bytes(sig).hex()})
    print(out["token"])


if __name__ == "__main__":
    main()
