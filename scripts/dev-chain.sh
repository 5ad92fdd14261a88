#!/usr/bin/env bash
# A local EVM chain for trying NFT gating with `streamgate dev --chain-rpc http://127.0.0.1:8545`:
# starts a hardhat node (from the Node packages ./scripts/setup.sh installs) unless one answers
# on the port, deploys the test contracts (tests/chain), mints ERC-721 token 1 to hardhat
# account #2, writes an `nft` policy for that contract, and prints the commands that bind the
# demo asset to it and sign in as the holder. Stop the node with: kill $(cat <state>/hardhat.pid)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
port="${CHAIN_PORT:-8545}"
url="http://127.0.0.1:$port"
state="${STREAMGATE_DATA_DIR:-streamgate-data}/chain"
node_dir="${STREAMGATE_NODE_DIR:-$HOME/.cache/streamgate-node}"
venv="${STREAMGATE_VENV:-$HOME/.cache/streamgate-venv}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"

rpc() {
  curl -sf -X POST -H 'content-type: application/json' \
    --data "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":[]}" "$url"
}

if ! rpc eth_chainId >/dev/null 2>&1; then
  [ -f "$node_dir/node_modules/hardhat/internal/cli/cli.js" ] || "$repo/scripts/setup-chain.sh"
  echo "dev-chain: starting a hardhat node on $url (log: $state/hardhat.log)"
  # exec: the background subshell becomes the node, so $! is the node's pid.
  (cd "$node_dir" && HARDHAT_DISABLE_TELEMETRY_PROMPT=true DO_NOT_TRACK=1 \
    exec node node_modules/hardhat/internal/cli/cli.js node --hostname 127.0.0.1 --port "$port") \
    </dev/null >"$state/hardhat.log" 2>&1 &
  echo $! >"$state/hardhat.pid"
  for _ in $(seq 1 300); do
    rpc eth_chainId >/dev/null 2>&1 && break
    sleep 0.2
  done
  rpc eth_chainId >/dev/null || { echo "dev-chain: the node did not start; see $state/hardhat.log" >&2; exit 1; }
fi

fixture() { STREAMGATE_NODE_DIR="$node_dir" node "$repo/tests/chain/fixture.mjs" "$@"; }
deploy=$(fixture deploy --rpc "$url")
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" <<<"$deploy"; }
erc721=$(field 'd["contracts"]["erc721"]')
holder=$(field 'd["accounts"][2]["address"]')
key=$(field 'd["accounts"][2]["private_key"]')
fixture mint721 --rpc "$url" --contract "$erc721" --to "$holder" --id 1 >/dev/null

cat >"$state/nft-holders.yaml" <<YAML
id: nft-holders
description: Holders of the local test ERC-721 (scripts/dev-chain.sh)
on_unavailable: fail_closed
rule:
  nft:
    chain: eip155:31337
    standard: erc721
    contract: "$erc721"
YAML

cat <<TEXT
dev-chain: ERC-721 $erc721 on eip155:31337 ($url); token 1 belongs to $holder.

With \`streamgate dev --chain-rpc $url\` running:

  export STREAMGATE_TOKEN=\$(cat ${STREAMGATE_DATA_DIR:-streamgate-data}/admin.token)
  streamgate ctl policy apply -f $state/nft-holders.yaml
  streamgate ctl asset bind demo nft-holders
  TOKEN=\$($venv/bin/python scripts/wallet-login.py --key $key)
  ffplay "http://127.0.0.1:8080/v/demo/master.m3u8?token=\$TOKEN"

Move the token away and the player is refused within a poll interval (500 ms):
  node tests/chain/fixture.mjs transfer721 --rpc $url --contract $erc721 --from-key $key --to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --id 1

Stop the node: kill \$(cat $state/hardhat.pid)
TEXT
