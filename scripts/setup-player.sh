#!/usr/bin/env bash
# Installs the players the edge serves with its /player page, hls.js and dash.js, from
# dataplane/player/package-lock.json into a cache outside the clone,
# $STREAMGATE_PLAYER_DIR (default ~/.cache/streamgate-player). `streamgate dev` serves them
# from there; for an edge of your own, set [edge.player] libraries to that directory.
# Idempotent: it reinstalls only when the lock file or package.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

src=dataplane/player
dir="${STREAMGATE_PLAYER_DIR:-$HOME/.cache/streamgate-player}"
files=("$src/package.json" "$src/package-lock.json")

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-player: node and npm are missing; the player page needs them to install hls.js and dash.js" >&2
  exit 1
fi
want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
stamp="$dir/.streamgate-stamp"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || [ ! -d "$dir/node_modules/hls.js" ] || [ ! -d "$dir/node_modules/dashjs" ]; then
  echo "setup: installing hls.js and dash.js for the player page into $dir"
  mkdir -p "$dir"
  rm -f "$stamp"
  cp "${files[@]}" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
