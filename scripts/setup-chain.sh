#!/usr/bin/env bash
# Installs the Node packages of the local EVM chain fixture (tests/chain: hardhat, solc-js,
# OpenZeppelin, ethers) from tests/chain/package-lock.json into a cache outside the clone,
# $STREAMGATE_NODE_DIR (default ~/.cache/streamgate-node). Idempotent: it reinstalls only
# when the lock file, package.json or the hardhat config changed (their hash is stamped).
set -euo pipefail
cd "$(dirname "$0")/.."

src=tests/chain
dir="${STREAMGATE_NODE_DIR:-$HOME/.cache/streamgate-node}"
files=("$src/package.json" "$src/package-lock.json" "$src/hardhat.config.cjs")

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-chain: node and npm are missing; the chain tests need Node.js >= 20 with npm" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "setup-chain: node $(node --version) is too old; hardhat's EDR needs Node.js >= 20" >&2
  exit 1
fi

want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
stamp="$dir/.streamgate-stamp"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ ! -d "$dir/node_modules/hardhat" ]; then
  echo "setup: installing the chain fixture's Node packages into $dir"
  mkdir -p "$dir"
  rm -f "$stamp"
  cp "${files[@]}" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
