#!/usr/bin/env bash
# The whole test suite: setup, formatting, lints, then every test of every crate.
# Integration tests start real components (the Pingora edge, ffmpeg, HTTP origins).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/streamgate-test.log"
# Say plainly how many tests ran, so a run that tested nothing is visible.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' \
  "${TMPDIR:-/tmp}/streamgate-test.log"
