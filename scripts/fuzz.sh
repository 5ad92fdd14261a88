#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each). Not part of the test suite: it
# needs cargo-fuzz (installed here if missing) and libFuzzer's nightly flags, which a
# stable toolchain allows through RUSTC_BOOTSTRAP=1. Crashes land in <crate>/fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
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
