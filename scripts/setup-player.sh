#!/usr/bin/env bash
# Installs the players the edge serves with its /player page, hls.js and dash.js, from
# dataplane/player/package-lock.json into a cache outside the clone,
# $STREAMGATE_PLAYER_DIR (default ~/.cache/streamgate-player). `streamgate dev` serves them
# from there; for an edge of your own, set [edge.player] libraries to that directory.
# Idempotent: it reinstalls only when the lock file or package.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/npm-cache.sh
npm_cache_install "hls.js and dash.js for the player page" dataplane/player \
  "${STREAMGATE_PLAYER_DIR:-$HOME/.cache/streamgate-player}" hls.js dashjs
