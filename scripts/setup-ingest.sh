#!/usr/bin/env bash
# Installs the independent tus peers of the ingest tests and benchmark: tus-js-client (a
# tus client) and @tus/server with @tus/file-store (the reference Node server the benchmark
# compares against), from tests/ingest/package-lock.json into a cache outside the clone,
# $STREAMGATE_INGEST_NODE_DIR (default ~/.cache/streamgate-ingest-node). Idempotent: it
# reinstalls only when the lock file or package.json changed (their hash is stamped).
set -euo pipefail
cd "$(dirname "$0")/.."

src=tests/ingest
dir="${STREAMGATE_INGEST_NODE_DIR:-$HOME/.cache/streamgate-ingest-node}"
files=("$src/package.json" "$src/package-lock.json")

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-ingest: node and npm are missing; the ingest tests need Node.js >= 20 with npm" >&2
  exit 1
fi
want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
stamp="$dir/.streamgate-stamp"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ ! -d "$dir/node_modules/tus-js-client" ]; then
  echo "setup: installing the ingest tests' Node packages into $dir"
  mkdir -p "$dir"
  rm -f "$stamp"
  cp "${files[@]}" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
