#!/usr/bin/env bash
# Renders each dashboard of deploy/observability/ from live data, without Grafana:
# `streamgate dev` on free ports, viewers from `streamgate load play` (plus a few requests
# without a token), a real Prometheus on the shipped prometheus.yml, then
# deploy/observability/preview.html in headless chromium, one PNG per dashboard in docs/.
# Usage: scripts/dashboard-screenshots.sh [SECONDS_OF_LOAD] (default 120).
# Needs: a built streamgate (STREAMGATE_BIN, default target/debug/streamgate), prometheus,
# chromium (Debian packages; scripts/setup.sh does not install chromium: it is only for
# this script), python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-120}"
bin="${STREAMGATE_BIN:-${CARGO_TARGET_DIR:-target}/debug/streamgate}"
for t in prometheus chromium python3 curl; do
  command -v "$t" >/dev/null || { echo "$t is missing (apt-get install $t)" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "build streamgate first (cargo build), or set STREAMGATE_BIN" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
http=$(port) tls=$(port) admin=$(port) control=$(port) cadmin=$(port) fadmin=$(port) ingest=$(port)
prom=$(port) web=$(port)
STREAMGATE_LOG=warn "$bin" dev --data-dir "$work/data" --http-port "$http" --tls-port "$tls" \
  --admin-port "$admin" --control-port "$control" --control-admin-port "$cadmin" \
  --farm-admin-port "$fadmin" --ingest-port "$ingest" >"$work/dev.log" 2>&1 &
pids+=($!)
until grep -q 'master.m3u8?token=' "$work/dev.log"; do sleep 1; done
url=$(grep -m1 -o "http://127.0.0.1:$http/v/demo/master.m3u8?token=[^ ]*" "$work/dev.log")
sed -e "s/127.0.0.1:9100/127.0.0.1:$admin/; s/127.0.0.1:9101/127.0.0.1:$cadmin/; s/127.0.0.1:9102/127.0.0.1:$fadmin/" \
  -e "s/scrape_interval: 15s/scrape_interval: 2s/; s/evaluation_interval: 15s/evaluation_interval: 2s/" \
  -e "s|- alerts.yaml|- $PWD/deploy/observability/alerts.yaml|" \
  deploy/observability/prometheus.yml >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom" --log.level=warn &
pids+=($!)
python3 -m http.server "$web" --bind 127.0.0.1 --directory deploy/observability >/dev/null 2>&1 &
pids+=($!)
sleep 5
echo "playing for $secs s"
"$bin" ctl --endpoint "http://127.0.0.1:$control" --token-file "$work/data/admin.token" policy list >/dev/null
for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$http/v/demo/master.m3u8"; done
"$bin" load play "$url" --viewers 4 --duration "${secs}s" >/dev/null
for dh in edge:2950 control:1420 farm:800; do
  d=${dh%:*}
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="1600,${dh#*:}" \
    --virtual-time-budget=20000 --screenshot="$PWD/docs/dashboard-$d.png" \
    "http://127.0.0.1:$web/preview.html?dashboard=dashboards/$d.json&prometheus=http://127.0.0.1:$prom&minutes=$(( (secs + 59) / 60 + 1 ))" 2>/dev/null
  echo "docs/dashboard-$d.png"
done
