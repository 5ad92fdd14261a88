#!/usr/bin/env bash
# Runs every fuzz target for a while and reports, per target, the executions and the
# crashes. Not part of the test suite: it needs cargo-fuzz (installed here if missing)
# and libFuzzer's nightly flags, which a stable toolchain allows through RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh [SECONDS]            # each target for SECONDS (default 60)
#   FUZZ_RUNS=10000000 scripts/fuzz.sh   # each target for that many executions instead
#   FUZZ_MINIMIZE=1 scripts/fuzz.sh      # then minimise each corpus in place (cargo fuzz cmin)
#   FUZZ_ONLY="jwt_verify store_log" scripts/fuzz.sh   # only the targets named
#
# Corpora live in <crate>/fuzz/corpus/<target> and are committed (minimised): a run starts
# from what earlier campaigns found. Crashes land in <crate>/fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
runs="${FUZZ_RUNS:-}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# One build cache for every fuzz crate, outside the clone.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/streamgate-fuzz-target}"
# The CMAF reader needs real boxes to start from: seed its corpus with a fragmented MP4
# from ffmpeg, split into an init segment and a media segment (first byte = split point).
seed_cmaf() {
  local dir=transcode-farm/fuzz/corpus/cmaf_parse
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return 0
  command -v ffmpeg >/dev/null 2>&1 || return 0
  mkdir -p "$dir"
  local tmp; tmp=$(mktemp -d)
  ffmpeg -v error -f lavfi -i testsrc2=size=160x90:rate=30:d=2 -f lavfi -i sine=d=2 \
    -c:v libx264 -g 30 -c:a aac -map 0 -f mp4 -movflags cmaf+frag_keyframe+empty_moov+default_base_moof \
    "$tmp/v.mp4"
  python3 - "$tmp/v.mp4" "$dir" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
boxes, i = [], 0
while i + 8 <= len(data):
    size, kind = struct.unpack(">I4s", data[i:i + 8])
    boxes.append((kind, data[i:i + size])); i += size
init = b"".join(b for k, b in boxes if k in (b"ftyp", b"moov"))
frag = b"".join(b for k, b in boxes if k in (b"moof", b"mdat"))
rest = init + frag
split = min(255, len(init) * 255 // len(rest) + 1)
open(f"{sys.argv[2]}/seed-init-and-fragments", "wb").write(bytes([split]) + rest)
PY
  rm -rf "$tmp"
}
seed_cmaf

report=$(mktemp)
status=0
for crate in dataplane web3 store transcode-farm; do
  for target in $(cd "$crate/fuzz" && cargo fuzz list); do
    if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $target "* ]]; then continue; fi
    mkdir -p "$crate/fuzz/corpus/$target"
    if [ -n "$runs" ]; then limit="-runs=$runs"; else limit="-max_total_time=$secs"; fi
    echo "== $crate: $target ($limit)"
    log=$(mktemp)
    if (cd "$crate/fuzz" && cargo fuzz run -s none -O "$target" -- "$limit" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1); then
      crashes=0
    else
      crashes=1; status=1
      tail -30 "$log"
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    corpus=$(ls "$crate/fuzz/corpus/$target" | wc -l)
    printf '%-16s %-20s %12s execs  %d crashes  corpus %d\n' "$crate" "$target" "${execs:-?}" "$crashes" "$corpus" | tee -a "$report"
    if [ -n "${FUZZ_MINIMIZE:-}" ] && [ "$crashes" = 0 ]; then
      (cd "$crate/fuzz" && cargo fuzz cmin -s none -O "$target" >/dev/null 2>&1) || true
    fi
    rm -f "$log"
  done
done
echo
echo "== summary"
cat "$report"
rm -f "$report"
exit $status
