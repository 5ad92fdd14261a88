#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each). Not part of the test suite: it
# needs cargo-fuzz (installed here if missing) and libFuzzer's nightly flags, which a
# stable toolchain allows through RUSTC_BOOTSTRAP=1. Crashes land in <crate>/fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
status=0
for crate in dataplane transcode-farm; do
  for target in $(cd "$crate/fuzz" && cargo fuzz list); do
    echo "== $crate: $target (${secs}s)"
    if ! (cd "$crate/fuzz" && cargo fuzz run -s none -O "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -2); then
      status=1
    fi
  done
done
exit $status
