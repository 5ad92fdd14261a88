#!/usr/bin/env python3
"""Independent EVM signer for StreamGate's Web3-gating tests, built on eth-account.

Reads one JSON job from stdin and prints {"signature", "address", "hash"}: the 65-byte
r || s || v signature (v = 27 or 28) as 0x-hex, the signer's EIP-55 address, and the
32-byte digest that was signed (what an ERC-1271 wallet's isValidSignature receives).

  {"op": "sign_hash", "key": K, "hash": "0x<32 bytes>"}   raw ECDSA over the digest as given
  {"op": "personal_sign", "key": K, "message": TEXT}      EIP-191 version 0x45, as wallets do
  {"op": "personal_sign", "key": K, "message_hex": HEX}   the same over raw bytes
  {"op": "typed_data", "key": K, "typed_data": {...}}     EIP-712: types, primaryType, domain, message
"""
import json
import sys

from eth_account import Account
from eth_account.messages import encode_defunct


def hex0x(b):
    return "0x" + bytes(b).hex()


def main():
    job = json.load(sys.stdin)
    key = job["key"]
    op = job["op"]
    if op == "sign_hash":
        signed = Account.unsafe_sign_hash(job["hash"], key)
    elif op == "personal_sign":
        if "message_hex" in job:
            msg = encode_defunct(hexstr=job["message_hex"])
        else:
            msg = encode_defunct(text=job["message"])
        signed = Account.sign_message(msg, key)
    elif op == "typed_data":
        signed = Account.sign_typed_data(key, full_message=job["typed_data"])
    else:
        sys.exit(f"eth_sign.py: unknown op {op!r}")
    print(json.dumps({
        "signature": hex0x(signed.signature),
        "address": Account.from_key(key).address,
        "hash": hex0x(signed.message_hash),
    }))


if __name__ == "__main__":
    main()
