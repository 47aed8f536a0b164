#!/usr/bin/env bash
# Local demo of Palisade on loopback: a simulated chain (1 s blocks), one
# validator node under palisade-supervisor, an upgrade plan at a height a
# few blocks ahead, the switch to the new binary, and the chain carrying on.
#
#   ./scripts/demo.sh                 # about 30 s, then stops and summarises
#   UPGRADE_HEIGHT=30 ./scripts/demo.sh
#
# Everything lives in target/demo/ (logs included) and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
apt_install curl jq ca-certificates

UPGRADE_HEIGHT=${UPGRADE_HEIGHT:-12}
BLOCKS_AFTER=${BLOCKS_AFTER:-6}
CHAIN_ID=palisade-demo

log "building (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet
BIN=$PWD/target/debug

DEMO=$PWD/target/demo
rm -rf "$DEMO"
mkdir -p "$DEMO/binaries/v1" "$DEMO/binaries/v2"
HOME_DIR=$DEMO/node
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NET_PORT=$(free_port); HTTP_PORT=$(free_port); RPC_PORT=$(free_port); P2P_PORT=$(free_port)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

log "creating validator home $HOME_DIR (simd init)"
"$BIN/simd" init val1 --home "$HOME_DIR" --chain-id "$CHAIN_ID" \
  --network "127.0.0.1:$NET_PORT" --rpc-laddr "tcp://127.0.0.1:$RPC_PORT" \
  --p2p-laddr "tcp://127.0.0.1:$P2P_PORT" >/dev/null
PUBKEY=$("$BIN/simd" show-validator --home "$HOME_DIR" | jq -r .key)
jq -n --arg chain "$CHAIN_ID" --arg key "$PUBKEY" \
  '{chain_id:$chain, validators:[{name:"val1", pub_key:{type:"tendermint/PubKeyEd25519", value:$key}, power:"10"}]}' \
  > "$DEMO/genesis.json"

log "starting the simulated chain (1 s blocks, upgrade \"v2\" at height $UPGRADE_HEIGHT)"
"$BIN/simchain-net" --listen "127.0.0.1:$NET_PORT" --http "127.0.0.1:$HTTP_PORT" \
  --chain-id "$CHAIN_ID" --block-time 1s --genesis "$DEMO/genesis.json" \
  --upgrade "v2:$UPGRADE_HEIGHT" --record "$DEMO/record.json" \
  >"$DEMO/network.out" 2>"$DEMO/network.log" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$DEMO/network.out" 2>/dev/null && break; sleep 0.1; done

# Two "releases" of the node binary: v1 (genesis) and v2 (has the v2 handler).
printf '#!/bin/sh\nexec %q --sim-version v1.0.0 "$@"\n' "$BIN/simd" > "$DEMO/binaries/v1/simd"
printf '#!/bin/sh\nexec %q --sim-version v2.0.0 --sim-upgrade-handler v2 "$@"\n' "$BIN/simd" > "$DEMO/binaries/v2/simd"
chmod 755 "$DEMO/binaries/v1/simd" "$DEMO/binaries/v2/simd"

export DAEMON_HOME=$HOME_DIR DAEMON_NAME=simd DAEMON_POLL_INTERVAL=100ms
log "palisade-supervisor init + add-upgrade v2 (Cosmovisor layout)"
"$BIN/palisade-supervisor" init "$DEMO/binaries/v1/simd"
"$BIN/palisade-supervisor" add-upgrade v2 "$DEMO/binaries/v2/simd"

log "palisade-supervisor run start --home $HOME_DIR   (logs: $DEMO/supervisor.log)"
"$BIN/palisade-supervisor" run start --home "$HOME_DIR" >"$DEMO/node.log" 2>"$DEMO/supervisor.log" &
SUPERVISOR=$!
pids+=("$SUPERVISOR")

status_line() {
  local record height signed missed current version
  record=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record") || return 0
  height=$(jq -r .height <<<"$record")
  signed=$(jq -r '.validators.val1.signed_heights' <<<"$record")
  missed=$(jq -r '.validators.val1.missed_count' <<<"$record")
  current=$(readlink "$HOME_DIR/cosmovisor/current" || echo "?")
  version=$("$HOME_DIR/cosmovisor/current/bin/simd" version 2>/dev/null || echo "?")
  if curl -sf "http://127.0.0.1:$RPC_PORT/health" >/dev/null 2>&1; then rpc=up; else rpc=down; fi
  printf '  height %-4s | val1 signed %-4s missed %-3s | current -> %-12s (%s) | node rpc %s\n' \
    "$height" "$signed" "$missed" "$current" "$version" "$rpc"
  echo "$height" > "$DEMO/.height"
}

log "live status (chain height, votes of our validator, Cosmovisor's current link)"
announced=""
end=$((UPGRADE_HEIGHT + BLOCKS_AFTER))
while :; do
  status_line
  if [ -z "$announced" ] && [ -s "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl" ]; then
    announced=1
    jq -r '"  >> upgrade \(.name) at height \(.height): \(.outcome.status), switch \(.switch_ms) ms (" + ([.steps[] | "\(.step) \(.duration_ms)ms"] | join(", ")) + ")"' \
      "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl"
  fi
  height=$(cat "$DEMO/.height" 2>/dev/null || echo 0)
  [ "$height" -ge "$end" ] && break
  kill -0 "$SUPERVISOR" 2>/dev/null || { echo "supervisor exited; see $DEMO/supervisor.log" >&2; exit 1; }
  sleep 1
done

log "stopping the supervisor (SIGTERM: graceful stop of the node)"
kill -TERM "$SUPERVISOR"; wait "$SUPERVISOR" || true
record=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record")
log "summary"
echo "  upgrade record: $(tail -n1 "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl" | jq -c '{name,height,outcome,switch_ms}')"
echo "  current -> $(readlink "$HOME_DIR/cosmovisor/current")"
echo "  blocks signed by val1: $(jq .validators.val1.signed_heights <<<"$record"), missed: $(jq -c .validators.val1.missed_heights <<<"$record")"
echo "  double signs: $(jq '.double_signs | length' <<<"$record")"
echo "  supervisor log: $DEMO/supervisor.log   node output: $DEMO/node.log"
