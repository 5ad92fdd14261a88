#!/usr/bin/env bash
# Installs the independent tus peers of the ingest tests and benchmark: tus-js-client (a
# tus client) and @tus/server with @tus/file-store (the reference Node server the benchmark
# compares against), from tests/ingest/package-lock.json into a cache outside the clone,
# $STREAMGATE_INGEST_NODE_DIR (default ~/.cache/streamgate-ingest-node). Idempotent: it
# reinstalls only when the lock file or package.json changed (their hash is stamped).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/npm-cache.sh
npm_cache_install "the ingest tests' Node packages" tests/ingest \
  "${STREAMGATE_INGEST_NODE_DIR:-$HOME/.cache/streamgate-ingest-node}" tus-js-client @tus/server
