#!/usr/bin/env python3
"""Independent wallet signer for StreamGate's sign-in tests: eth-account for EVM
(EIP-191 personal_sign) and PyNaCl for Solana (ed25519 signMessage), base58 for Solana
encodings. None of StreamGate's own signing code is used.

Reads {"jobs": [...]} on stdin; each job is one of
  {"op": "address", "kind": "evm", "key": "0x<32-byte hex>"}
  {"op": "address", "kind": "solana", "seed": "<32-byte hex>"}
  {"op": "sign", "kind": "evm", "key": ..., "message": "..."}
  {"op": "sign", "kind": "solana", "seed": ..., "message": "..."}
  {"op": "sign_typed", "kind": "evm", "key": ..., "typed_data": {...}}   (EIP-712 v4)
and prints {"results": [...]}: the address (EIP-55 / base58) or the signature
(0x-hex r||s||v / base58).
"""
import json
import sys

import base58
import nacl.signing
from eth_account import Account
from eth_account.messages import encode_defunct


def run(job):
    if job["kind"] == "evm":
        acct = Account.from_key(job["key"])
        if job["op"] == "address":
            return acct.address
        if job["op"] == "sign_typed":
            signed = acct.sign_typed_data(full_message=job["typed_data"])
            return "0x" + bytes(signed.signature).hex()
        signed = acct.sign_message(encode_defunct(text=job["message"]))
        return "0x" + bytes(signed.signature).hex()
    key = nacl.signing.SigningKey(bytes.fromhex(job["seed"]))
    if job["op"] == "address":
        return base58.b58encode(bytes(key.verify_key)).decode()
    sig = key.sign(job["message"].encode()).signature
    return base58.b58encode(sig).decode()


def main():
    jobs = json.load(sys.stdin)["jobs"]
    json.dump({"results": [run(j) for j in jobs]}, sys.stdout)


if __name__ == "__main__":
    main()
