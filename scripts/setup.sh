#!/usr/bin/env bash
# Installs what StreamGate's build, `streamgate dev` and the test suite need on a fresh
# Debian machine. Idempotent: it installs only what is missing, so it is cheap to re-run.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(build-essential)
have cmake || need+=(cmake)
have pkg-config || need+=(pkg-config)
have protoc || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
have ffmpeg || need+=(ffmpeg)
have ffprobe || need+=(ffmpeg)
have nginx || need+=(nginx-light)
have wrk || need+=(wrk)
have curl || need+=(curl)
have openssl || need+=(openssl)
have etcd || need+=(etcd-server)
have etcdctl || need+=(etcd-client)
# promtool (Debian ships it with the prometheus package) checks the metrics exposition and
# the alert rules; tests/observability.rs runs the prometheus server itself.
have promtool || need+=(prometheus)
have prometheus || need+=(prometheus)
# Headless Chromium plays the player page in tests/player.rs (Debian's build has the
# H.264 and AAC decoders the demo needs).
have chromium || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python test peers live in a virtualenv outside the clone: moto's S3-compatible server
# (S3 origin tests), aioquic (an independent HTTP/3 client), PyJWT (an independent token
# issuer), eth-account and PyNaCl (independent wallet signers), tuspy (an independent tus
# client for the ingest tests), grpcio-reflection (the stock Python gRPC reflection client).
venv="${STREAMGATE_VENV:-$HOME/.cache/streamgate-venv}"
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import aioquic, jwt, eth_account, nacl, base58, tusclient, grpc_reflection' 2>/dev/null; then
  echo "setup: installing the Python test peers into $venv"
  have python3 || { echo "setup: python3 is missing" >&2; exit 1; }
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' 'aioquic>=1.2,<2' 'pyjwt[crypto]>=2.8,<3' \
    'eth-account>=0.13,<0.14' 'pynacl>=1.5,<2' 'base58>=2.1,<3' 'tuspy==1.1.0' \
    'grpcio>=1.60,<2' 'grpcio-reflection>=1.60,<2'
fi

# tus-js-client and @tus/server for the ingest tests and benchmark, in a Node cache.
"$(dirname "$0")/setup-ingest.sh"

# hls.js and dash.js, which the edge serves with its /player page.
"$(dirname "$0")/setup-player.sh"

# The local EVM chain (hardhat node) and contract tooling, in a Node cache outside the clone.
"$(dirname "$0")/setup-chain.sh"

if ! have cargo; then
  echo "setup: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
echo "setup: ok (ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3), $(cargo --version))"
