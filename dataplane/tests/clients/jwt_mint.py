#!/usr/bin/env python3
"""Independent JWT issuer for StreamGate's gate tests, built on PyJWT and cryptography.

Reads a JSON job from stdin: {"hs_secret_file": PATH, "tokens": [{"name", "kid", "alg",
"claims", "tamper"?, "header"?}]}. It generates one RSA-2048, one P-256 and one Ed25519
key pair and an HS256 secret (written to hs_secret_file), and prints
{"keys": [public JWK entries as StreamGate takes them], "tokens": {name: token}}.

Special algs: "none" (unsigned), "HS256-with-rsa-public" (HMAC keyed with the RSA public
key's PEM, the classic algorithm-confusion attack). "tamper": true flips the payload after
signing, so the signature no longer matches.
"""
import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def int_b64(n):
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def main():
    job = json.load(sys.stdin)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    secret = os.urandom(48).hex().encode()
    with open(job["hs_secret_file"], "wb") as f:
        f.write(secret + b"\n")

    rn = rsa_key.public_key().public_numbers()
    en = ec_key.public_key().public_numbers()
    ed_raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys = [
        {"kid": "rsa-1", "alg": "RS256", "kty": "RSA", "n": int_b64(rn.n), "e": int_b64(rn.e)},
        {"kid": "ec-1", "alg": "ES256", "kty": "EC", "crv": "P-256",
         "x": b64(en.x.to_bytes(32, "big")), "y": b64(en.y.to_bytes(32, "big"))},
        {"kid": "ed-1", "alg": "EdDSA", "kty": "OKP", "crv": "Ed25519", "x": b64(ed_raw)},
        {"kid": "hs-1", "alg": "HS256", "kty": "oct", "secret_ref": "file:" + job["hs_secret_file"]},
    ]
    signing = {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key, "HS256": secret}
    rsa_pub_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    tokens = {}
    for t in job["tokens"]:
        header = {"kid": t["kid"], **t.get("header", {})}
        alg = t["alg"]
        if alg == "none":
            tok = jwt.encode(t["claims"], None, algorithm="none", headers=header)
        elif alg == "HS256-with-rsa-public":
            h = b64(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
            p = b64(json.dumps(t["claims"]).encode())
            sig = hmac.new(rsa_pub_pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
            tok = f"{h}.{p}.{b64(sig)}"
        else:
            tok = jwt.encode(t["claims"], signing[alg], algorithm=alg, headers=header)
        if t.get("tamper"):
            h, p, s = tok.split(".")
            claims = dict(t["claims"], sub="someone-else")
            tok = f"{h}.{b64(json.dumps(claims).encode())}.{s}"
        tokens[t["name"]] = tok
    json.dump({"keys": keys, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
