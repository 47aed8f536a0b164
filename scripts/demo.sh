#!/usr/bin/env bash
# Local demo of Palisade's whole topology (DESIGN.md "Topology"), on loopback:
#
#   simchain-net (the chain, 1 s blocks)
#     ^ 127.0.0.1:NET_PORT, as seen from the bastion
#   bastion: a real OpenSSH sshd on 127.0.0.1 (temporary config, pinned host
#     key, the validator's key confined by authorized_keys as in
#     docs/bastion-sshd.md) + `palisade-bastion run` (backup store, health
#     checks through the reverse-forwarded control socket)
#     ^ one outbound SSH connection
#   validator: palisade-supervisor (key vault on, started LOCKED) running
#     simd, which reaches the chain ONLY through the tunnel's sentry forward
#     (the supervisor writes its [p2p] persistent_peers: 127.0.0.2:26756);
#     sign-state backups go to the bastion's store.
#   operator: `palisade-ctl --via` from "elsewhere": SSH to the bastion
#     (pinned host key), then the supervisor's socket that the validator's
#     tunnel publishes there, TLS with the pinned certificate end to end and
#     an operator login; `status`, then `unlock` (the passphrase crosses the
#     bastion only inside TLS).
#
# Then: an upgrade plan at a height a few blocks ahead and the switch to the
# new binary; a few blocks later the bastion's sshd is killed (listener and
# its per-connection processes) and restarted SSHD_DOWN_SECONDS later: the
# validator misses blocks while its only tunnel is down and signs again once
# the tunnel heals.
#
# Then an Elastic IP rotation (docs/eip.md; EIP=0 skips it): moto stands in for
# EC2 and a small "cloud" (palisade-loopback-cloud, below) makes moto's associations true on
# loopback: an address associated with the bastion's instance forwards to its
# sshd. `palisade-ctl eip rotate` moves the bastion to a new address; the
# validator's tunnel redials it (host key still pinned) and keeps signing; the
# old address is released. The AWS key lives in the vault.
#
# Then observability (docs/observability.md): the supervisor's Prometheus
# metrics scraped on the bastion's loopback through the tunnel's reverse
# forward, the bastion's own, and the log segments the supervisor shipped to
# the bastion ([logs]: encrypted to the operator's age key, signed with the
# tunnel key), read with the stock `age -d | zstd -d` and with
# `palisade-ctl logs --archive`.
#
# Then failover (docs/failover.md; FAILOVER=0 skips it): two validator hosts
# for one validator (two supervisors sharing one vault), a real 3-member etcd
# cluster and a chain with one sentry per host; a planned handoff
# (`palisade-ctl failover handoff --to val-b`), then the primary's whole host
# SIGKILLed and the standby taking over; the chain's record must show 0
# double signs (palisade-failover-demo, from palisade-testkit).
#
#   ./scripts/demo.sh                          # about 30 s, then stops and summarises
#   UPGRADE_HEIGHT=30 ./scripts/demo.sh
#   SSHD_STOP_HEIGHT=0 ./scripts/demo.sh       # no sshd outage
#
# Knobs: UPGRADE_HEIGHT (12), BLOCKS_AFTER (blocks past the upgrade before
# stopping, 14), SSHD_STOP_HEIGHT (UPGRADE_HEIGHT + 4; 0 = never),
# SSHD_DOWN_SECONDS (3).
#
# Everything lives in target/demo/ (logs included; the Unix sockets move to
# a short directory under /tmp if the repository path is too long for them)
# and is stopped on exit. Runs as root (sshd logs root in) or as any user
# with a shell (sshd then runs as that user and logs only that user in).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
apt_install curl jq ca-certificates openssh-server openssh-client etcd-server age zstd
EIP=${EIP:-1}
[ "$EIP" = 0 ] || ensure_moto

UPGRADE_HEIGHT=${UPGRADE_HEIGHT:-12}
BLOCKS_AFTER=${BLOCKS_AFTER:-14}
SSHD_STOP_HEIGHT=${SSHD_STOP_HEIGHT:-$((UPGRADE_HEIGHT + 4))}
SSHD_DOWN_SECONDS=${SSHD_DOWN_SECONDS:-3}
CHAIN_ID=palisade-demo
VALIDATOR=val1          # moniker, genesis name, [rpc] name = the bastion's [[validator]] name

die() { echo "demo: $*" >&2; exit 1; }

SSHD=/usr/sbin/sshd
[ -x "$SSHD" ] || die "$SSHD is missing (install openssh-server)"
command -v ssh-keygen >/dev/null || die "ssh-keygen is missing (install openssh-client)"
# sshd started as root needs its privilege-separation directory /run/sshd
# (normally made by ssh.service; /run is emptied at boot). Started as
# another user, sshd does no privilege separation and can only log that
# user in (the tunnel user below): it runs without /run/sshd.
if [ ! -d /run/sshd ] && [ "$(id -u)" -eq 0 ]; then
  install -d -m 0755 /run/sshd
fi

log "building (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet
BIN=$PWD/target/debug

DEMO=$PWD/target/demo
# The paths go unquoted into sshd_config and authorized_keys' command="…".
case "$DEMO" in
  *[!A-Za-z0-9/._+-]*) die "the repository path ($PWD) has characters the demo's sshd configuration cannot carry; move it to a plain path" ;;
esac
rm -rf "$DEMO"
mkdir -p "$DEMO/binaries/v1" "$DEMO/binaries/v2"
HOME_DIR=$DEMO/node
SSH_DIR=$DEMO/bastion/ssh               # the bastion's sshd: host key, config, authorized_keys, log
BASTION_DIR=$DEMO/bastion               # palisade-bastion: config, store, log
CLIENT_DIR=$DEMO/validator              # the validator host: client key, known_hosts, palisade.toml
OPERATOR_DIR=$DEMO/operator             # the operator's laptop: operator key, known_hosts, passphrase
mkdir -p "$SSH_DIR" "$CLIENT_DIR" "$OPERATOR_DIR"
chmod 0700 "$BASTION_DIR" "$SSH_DIR" "$CLIENT_DIR" "$OPERATOR_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NET_PORT=$(free_port); HTTP_PORT=$(free_port); RPC_PORT=$(free_port); P2P_PORT=$(free_port)
SSH_PORT=$(free_port)

# Unix sockets: at most 107 bytes of path. Under target/demo when it fits,
# else a short private directory under /tmp.
TMP_SOCKETS=""
SOCKETS=$DEMO/run
longest="$SOCKETS/validator/supervisor.sock"
for candidate in "$SOCKETS/bastion/bastion.sock" "$SOCKETS/bastion/$VALIDATOR.sock"; do
  [ "${#candidate}" -gt "${#longest}" ] && longest=$candidate
done
if [ "$(printf %s "$longest" | wc -c)" -gt 107 ]; then
  TMP_SOCKETS=$(mktemp -d /tmp/palisade-demo.XXXXXX)
  SOCKETS=$TMP_SOCKETS
fi
mkdir -p "$SOCKETS/validator" "$SOCKETS/bastion"
chmod 0700 "$SOCKETS" "$SOCKETS/validator" "$SOCKETS/bastion"
SUPERVISOR_SOCKET=$SOCKETS/validator/supervisor.sock
STORE_SOCKET=$SOCKETS/bastion/bastion.sock
FORWARDED_SOCKET=$SOCKETS/bastion/$VALIDATOR.sock   # where sshd publishes the supervisor's socket
# Decrypted keys while unlocked: tmpfs, inside a directory only we can write
# (the supervisor refuses /dev/shm itself, where anyone could squat the name).
TMPFS_PARENT=/dev/shm/palisade-demo-$$
TMPFS_DIR=$TMPFS_PARENT/keys
mkdir -m 0700 "$TMPFS_PARENT"

pids=()
SSHD_PID=""   # the subreaper below, sshd's parent
# sshd runs under a tiny python3 "subreaper": what is orphaned below it (a
# forced command left running when its SSH connection went away) is
# re-parented to it rather than to init, so kill_sshd finds every process.
SUBREAPER='import ctypes, os, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
if os.fork() == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)'
# Pids of `root` and all its descendants, each stopped (SIGSTOP) before its
# children are listed, so nothing forks behind our back.
process_tree() {
  kill -STOP "$1" 2>/dev/null || return 0
  echo "$1"
  local child
  for child in $(pgrep -P "$1" || true); do process_tree "$child"; done
}
# sshd vanishes as in a crash: SIGKILL to the listener and every
# per-connection sshd. The forced commands below them get SIGTERM (a shell
# killed with SIGKILL while reading its rc files can leave lock files behind,
# e.g. pyenv's), SIGKILL if they linger.
kill_sshd() {
  [ -n "$SSHD_PID" ] || return 0
  local round pid tree
  for round in 1 2 3 4 5 6 7 8 9 10; do
    tree=$(for pid in $(pgrep -P "$SSHD_PID" || true); do process_tree "$pid"; done)
    [ -n "$tree" ] || break
    for pid in $tree; do
      if [ "$round" -gt 5 ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ]; then
        kill -KILL "$pid" 2>/dev/null || true
      else
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
      fi
    done
    sleep 0.1
  done
  kill -TERM "$SSHD_PID" 2>/dev/null || true
  wait "$SSHD_PID" 2>/dev/null || true
  SSHD_PID=""
}
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  kill_sshd
  rm -rf "$TMPFS_PARENT"
  [ -z "$TMP_SOCKETS" ] || rm -rf "$TMP_SOCKETS"
}
trap cleanup EXIT

wait_tcp() { # host port what
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  die "$3 is not listening on $1:$2"
}

log "creating validator home $HOME_DIR (simd init, no peers: the supervisor writes [p2p] persistent_peers from its bastion's sentry)"
"$BIN/simd" init "$VALIDATOR" --home "$HOME_DIR" --chain-id "$CHAIN_ID" \
  --network "" --rpc-laddr "tcp://127.0.0.1:$RPC_PORT" \
  --p2p-laddr "tcp://127.0.0.1:$P2P_PORT" >/dev/null
PUBKEY=$("$BIN/simd" show-validator --home "$HOME_DIR" | jq -r .key)
jq -n --arg chain "$CHAIN_ID" --arg key "$PUBKEY" --arg name "$VALIDATOR" \
  '{chain_id:$chain, validators:[{name:$name, pub_key:{type:"tendermint/PubKeyEd25519", value:$key}, power:"10"}]}' \
  > "$DEMO/genesis.json"

log "starting the simulated chain behind a sentry on 127.0.0.1:$NET_PORT (1 s blocks, upgrade \"v2\" at height $UPGRADE_HEIGHT)"
"$BIN/simchain-net" --listen "sentry=127.0.0.1:$NET_PORT" --node-key "$DEMO/sentry_node_key.json" \
  --http "127.0.0.1:$HTTP_PORT" \
  --chain-id "$CHAIN_ID" --block-time 1s --genesis "$DEMO/genesis.json" \
  --upgrade "v2:$UPGRADE_HEIGHT" --record "$DEMO/record.json" \
  >"$DEMO/network.out" 2>"$DEMO/network.log" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$DEMO/network.out" 2>/dev/null && break; sleep 0.1; done
SENTRY_ID=$(sed -n 's/.* node_ids=\([0-9a-f]*\) .*/\1/p' "$DEMO/network.out")
[[ -n $SENTRY_ID ]] || die "simchain-net did not start: $(cat "$DEMO/network.log")"
echo "  sentry node ID $SENTRY_ID"

# ---------------------------------------------------------------------------
# The bastion: keys, sshd, palisade-bastion.
# ---------------------------------------------------------------------------
TUNNEL_USER=$(id -un)   # the account the validator's key logs in as, and that runs palisade-bastion
log "bastion: ssh-keygen (host key, validator's client key, operator key), sshd on 127.0.0.1:$SSH_PORT as tunnel user '$TUNNEL_USER'"
ssh-keygen -q -t ed25519 -N '' -C "bastion-1" -f "$SSH_DIR/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "$VALIDATOR" -f "$CLIENT_DIR/tunnel_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "demo-operator" -f "$OPERATOR_DIR/operator_ed25519"
# The operator's age identity: the log segments are encrypted to it (docs/log-format.md).
age-keygen -o "$OPERATOR_DIR/logs_age_identity.txt" 2>/dev/null
LOG_RECIPIENT=$(age-keygen -y "$OPERATOR_DIR/logs_age_identity.txt")
# Metrics (docs/metrics.md): the supervisor's endpoint, its reverse forward on the bastion's
# loopback, and the bastion's own endpoint.
METRICS_PORT=$(free_port)
METRICS_ON_BASTION_PORT=$(free_port)
BASTION_METRICS_PORT=$(free_port)
HOST_FINGERPRINT=$(ssh-keygen -lf "$SSH_DIR/host_ed25519.pub" | awk '{print $2}')
# known_hosts pinned to the generated host key (a plain "[host]:port" name).
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")" > "$CLIENT_DIR/known_hosts"
cp "$CLIENT_DIR/known_hosts" "$OPERATOR_DIR/known_hosts"

BASTION_CONFIG=$BASTION_DIR/bastion.toml
BASTION_BACKUPS=$BASTION_DIR/backups
cat > "$BASTION_CONFIG" <<EOF
# palisade-bastion (docs/bastion.md). Health checks at demo speed.
listen-socket = "$STORE_SOCKET"
backup-dir = "$BASTION_BACKUPS"

[health]
interval = "500ms"
timeout = "400ms"

[metrics]
listen = "127.0.0.1:$BASTION_METRICS_PORT"

[[validator]]
name = "$VALIDATOR"
socket = "$FORWARDED_SOCKET"
EOF
"$BIN/palisade-bastion" check-config --config "$BASTION_CONFIG" >/dev/null

# The validator's key, exactly as docs/bastion-sshd.md shows it: every session
# forced into the backup-store relay for this validator, forwarding only to
# the chain's node port. The operator's key: channels only, no commands
# (docs/bastion-sshd.md "authorized_keys for operators").
{
  printf 'command="%s backup-session --config %s --validator %s",restrict,port-forwarding,permitopen="127.0.0.1:%s",permitlisten="127.0.0.1:%s" %s\n' \
    "$BIN/palisade-bastion" "$BASTION_CONFIG" "$VALIDATOR" "$NET_PORT" "$METRICS_ON_BASTION_PORT" \
    "$(cat "$CLIENT_DIR/tunnel_ed25519.pub")"
  printf 'command="/bin/false",restrict,port-forwarding %s\n' "$(cat "$OPERATOR_DIR/operator_ed25519.pub")"
} > "$SSH_DIR/authorized_keys"
cat > "$SSH_DIR/sshd_config" <<EOF
# The bastion's sshd for the demo (docs/bastion-sshd.md); StrictModes no only
# because the files live in the repository's target/ directory.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_ed25519
AuthorizedKeysFile $SSH_DIR/authorized_keys
PidFile $SSH_DIR/sshd.pid
AllowUsers $TUNNEL_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
ClientAliveInterval 5
ClientAliveCountMax 3
LogLevel VERBOSE
EOF
start_sshd() {
  python3 -c "$SUBREAPER" "$SSHD" -D -e -f "$SSH_DIR/sshd_config" </dev/null >/dev/null 2>>"$SSH_DIR/sshd.log" &
  SSHD_PID=$!
  wait_tcp 127.0.0.1 "$SSH_PORT" sshd
}
start_sshd

log "bastion: palisade-bastion run (backup store on $STORE_SOCKET, health checks of $VALIDATOR through $FORWARDED_SOCKET)"
"$BIN/palisade-bastion" run --config "$BASTION_CONFIG" </dev/null >/dev/null 2>"$BASTION_DIR/bastion.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$STORE_SOCKET" ] && break; sleep 0.05; done
[ -S "$STORE_SOCKET" ] || die "palisade-bastion did not start; see $BASTION_DIR/bastion.log"

# ---------------------------------------------------------------------------
# The "cloud": moto (EC2) and the bastion's instance with an Elastic IP.
# ---------------------------------------------------------------------------
# moto allocates addresses in 127.0.0.0/8, all local on Linux. The cloud
# (palisade-loopback-cloud, palisade_testkit::loopback_cloud, which the
# eip_rotation_s benchmark uses too) keeps a TCP forwarder from IP:SSH_PORT to
# the bastion's sshd for every address moto shows associated with the bastion's
# instance, and closes it when the address moves: a rotation really changes
# where the bastion answers.
EIP_TABLE=""
if [ "$EIP" != 0 ]; then
  MOTO_PORT=$(free_port)
  log "cloud: moto (EC2) on 127.0.0.1:$MOTO_PORT, the bastion's instance with an Elastic IP forwarding to its sshd"
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$DEMO/moto.log" 2>&1 &
  pids+=($!)
  wait_tcp 127.0.0.1 "$MOTO_PORT" moto
  "$BIN/palisade-loopback-cloud" "http://127.0.0.1:$MOTO_PORT" "$SSH_PORT" "$DEMO/cloud.instance" 2>"$DEMO/cloud.log" &
  pids+=($!)
  for _ in $(seq 200); do [ -s "$DEMO/cloud.instance" ] && break; sleep 0.05; done
  [ -s "$DEMO/cloud.instance" ] || die "the demo cloud did not start; see $DEMO/cloud.log and $DEMO/moto.log"
  read -r INSTANCE FIRST_IP < "$DEMO/cloud.instance"
  echo "  instance $INSTANCE, Elastic IP $FIRST_IP"
  EIP_TABLE="eip = { instance-id = \"$INSTANCE\" }"
fi

# ---------------------------------------------------------------------------
# The validator host: binaries, palisade.toml, vault.
# ---------------------------------------------------------------------------
# Two "releases" of the node binary: v1 (genesis) and v2 (has the v2 handler).
printf '#!/bin/sh\nexec %q --sim-version v1.0.0 "$@"\n' "$BIN/simd" > "$DEMO/binaries/v1/simd"
printf '#!/bin/sh\nexec %q --sim-version v2.0.0 --sim-upgrade-handler v2 "$@"\n' "$BIN/simd" > "$DEMO/binaries/v2/simd"
chmod 755 "$DEMO/binaries/v1/simd" "$DEMO/binaries/v2/simd"

# The operator knows the passphrase (here: a file on the "laptop", fed to
# `palisade-ctl unlock --passphrase-stdin`); the validator host keeps none.
PASSPHRASE_FILE=$OPERATOR_DIR/passphrase
(umask 077; printf 'demo %s\n' "$(head -c 18 /dev/urandom | base64)" > "$PASSPHRASE_FILE")
PALISADE_CONFIG=$CLIENT_DIR/palisade.toml
cat > "$PALISADE_CONFIG" <<EOF
# palisade-supervisor (docs/configuration.md). Timings at demo speed.
[vault]
swap = "warn"
tmpfs-dir = "$TMPFS_DIR"
scrypt-work-factor = 12          # demo speed; keep the default (18) for real

[backup]
chain-id = "$CHAIN_ID"
debounce = "300ms"

[rpc]
socket = "$SUPERVISOR_SOCKET"
name = "$VALIDATOR"

[[operator]]
name = "demo-operator"
key = "$(cut -d' ' -f1,2 "$OPERATOR_DIR/operator_ed25519.pub")"
role = "admin"

[tunnel]
key-file = "$CLIENT_DIR/tunnel_ed25519"
known-hosts = "$CLIENT_DIR/known_hosts"
connect-timeout = "3s"
keepalive-interval = "1s"
keepalive-max = 2
reconnect-max-delay = "500ms"

[[bastion]]
name = "bastion-1"
host = "127.0.0.1"
port = $SSH_PORT
user = "$TUNNEL_USER"
rpc-socket = "$FORWARDED_SOCKET"
backup-command = "palisade-bastion backup-session"
sentry = { node-id = "$SENTRY_ID", target = "127.0.0.1:$NET_PORT" }
$EIP_TABLE
EOF
cat >> "$PALISADE_CONFIG" <<EOF

[logs]                           # gaiad's and our lines, encrypted to the operator, signed, shipped
recipients = ["$LOG_RECIPIENT"]
segment-interval = "2s"          # demo speed; 10s by default

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
bastion-listen = "127.0.0.1:$METRICS_ON_BASTION_PORT"   # reverse-forwarded to the bastion's loopback
EOF
if [ "$EIP" != 0 ]; then
  cat >> "$PALISADE_CONFIG" <<EOF

[eip]
region = "eu-west-1"
endpoint = "http://127.0.0.1:$MOTO_PORT"   # moto; AWS's own endpoint by default
tunnel-timeout = "10s"
EOF
fi

export DAEMON_HOME=$HOME_DIR DAEMON_NAME=simd DAEMON_POLL_INTERVAL=100ms PALISADE_CONFIG
log "palisade-supervisor init + add-upgrade v2 (Cosmovisor layout), init-vault (keys encrypted, plaintext removed), init-rpc (TLS identity)"
"$BIN/palisade-supervisor" init "$DEMO/binaries/v1/simd"
"$BIN/palisade-supervisor" add-upgrade v2 "$DEMO/binaries/v2/simd"
"$BIN/palisade-supervisor" init-vault --passphrase-file "$PASSPHRASE_FILE" | sed 's/^/  /'
if [ "$EIP" != 0 ]; then
  log "import-aws-credentials: the AWS key sealed in the vault (usable only while it is unlocked)"
  AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY \
    "$BIN/palisade-supervisor" import-aws-credentials --from-env | sed 's/^/  /'
fi
RPC_PIN=$("$BIN/palisade-supervisor" init-rpc)
echo "  RPC certificate pin (for palisade-ctl): $RPC_PIN"
# palisade-ctl as the operator runs it on their laptop, through the bastion.
ctl() {
  "$BIN/palisade-ctl" --via "$TUNNEL_USER@127.0.0.1:$SSH_PORT" --validator "$VALIDATOR" \
    --remote-socket "$FORWARDED_SOCKET" --known-hosts "$OPERATOR_DIR/known_hosts" \
    --pin "$RPC_PIN" --operator demo-operator --key "$OPERATOR_DIR/operator_ed25519" "$@"
}

log "palisade-supervisor run start --home $HOME_DIR   (logs: $DEMO/supervisor.log)"
echo "  tunnel: validator -> ssh $TUNNEL_USER@127.0.0.1:$SSH_PORT (host key $HOST_FINGERPRINT)"
echo "          sentry forward 127.0.0.2:26756 -> 127.0.0.1:$NET_PORT (chain), reverse $FORWARDED_SOCKET -> $SUPERVISOR_SOCKET"
"$BIN/palisade-supervisor" run start --home "$HOME_DIR" >"$DEMO/node.log" 2>"$DEMO/supervisor.log" &
SUPERVISOR=$!
pids+=("$SUPERVISOR")

log "operator: palisade-ctl --via $TUNNEL_USER@127.0.0.1:$SSH_PORT --validator $VALIDATOR (SSH to the bastion, then TLS to the supervisor)"
for _ in $(seq 300); do [ -S "$FORWARDED_SOCKET" ] && break; sleep 0.05; done
[ -S "$FORWARDED_SOCKET" ] || die "the validator's tunnel did not publish $FORWARDED_SOCKET on the bastion; see $DEMO/supervisor.log"
state=$(ctl --json status | jq -r '"node \(.node.state), vault \(if .vault.locked then "locked" else "unlocked" end)"') ||
  die "palisade-ctl status through the bastion failed"
echo "  status: $state"
t_unlock=$(date +%s.%N)
ctl unlock --passphrase-stdin < "$PASSPHRASE_FILE" | sed 's/^/  unlock: /' ||
  die "palisade-ctl unlock through the bastion failed; see $DEMO/supervisor.log"
echo "  unlocked through the bastion in $(awk -v a="$t_unlock" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s (the passphrase crossed the bastion inside TLS only)"

# ---------------------------------------------------------------------------
# Live status.
# ---------------------------------------------------------------------------
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$DEMO/supervisor.log" 2>/dev/null; }
tunnel_state() {
  local last
  last=$(plain_log | grep -oE 'bastion tunnel (up|down)' | tail -n1) || true
  echo "${last#bastion tunnel }"
}
bastion_health() { # the validator's state in palisade-bastion's status file
  local json
  json=$("$BIN/palisade-bastion" status --config "$BASTION_CONFIG" --json 2>/dev/null) || true
  jq -r --arg name "$VALIDATOR" '(.validators[] | select(.name == $name) | .state) // "?"' <<<"$json" 2>/dev/null || echo "?"
}
age_files() { # backups in a store directory (not the store's hidden .tmp-* files)
  find "$1" -maxdepth 1 -type f -name '[!.]*.age' -printf '%f\n' 2>/dev/null | sort
}
bastion_backups() { age_files "$BASTION_BACKUPS/$VALIDATOR" | wc -l; }

record=""; height=0; signed=0
status_line() {
  local missed current version rpc sshd_state tunnel health
  missed=$(jq -r ".validators.$VALIDATOR.missed_count" <<<"$record")
  current=$(readlink "$HOME_DIR/cosmovisor/current" || echo "?")
  version=$("$HOME_DIR/cosmovisor/current/bin/simd" version 2>/dev/null || echo "?")
  if curl -sf "http://127.0.0.1:$RPC_PORT/health" >/dev/null 2>&1; then rpc=up; else rpc=down; fi
  if [ -n "$SSHD_PID" ]; then sshd_state=up; else sshd_state=DOWN; fi
  tunnel=$(tunnel_state); health=$(bastion_health)
  printf '  height %-3s | %s signed %-3s missed %-2s | current -> %-11s (%s) | node rpc %-4s | bastion: sshd %-4s tunnel %-4s health %-7s backups %s\n' \
    "$height" "$VALIDATOR" "$signed" "$missed" "$current" "$version" "$rpc" \
    "$sshd_state" "${tunnel:-...}" "$health" "$(bastion_backups)"
}
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
at_least() { awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN { exit !(b - a >= d) }'; }

log "live status (chain height, votes of $VALIDATOR, Cosmovisor's current link, the tunnel and the bastion)"
announced=""
end=$((UPGRADE_HEIGHT + BLOCKS_AFTER))
outage=none            # none -> down -> back -> healed
if [ "$SSHD_STOP_HEIGHT" -le 0 ]; then
  outage=skipped
elif [ "$end" -lt $((SSHD_STOP_HEIGHT + 8)) ]; then
  end=$((SSHD_STOP_HEIGHT + 8))   # room for the outage and the recovery
fi
printed=""; tunnel_seen=""; t_start=$(now)
while :; do
  if record=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record"); then
    height=$(jq -r .height <<<"$record")
    signed=$(jq -r ".validators.$VALIDATOR.signed_heights" <<<"$record")
    if [ "$outage" = back ] && [ "$signed" -gt "$signed_at_restart" ]; then
      outage=healed; t_signed=$(now); height_signed=$(jq -r ".validators.$VALIDATOR.last_signed_height" <<<"$record")
      echo "  >> $VALIDATOR signs again (height $height_signed), $(seconds "$t_back" "$t_signed") s after sshd came back"
    fi
    if [ "$height" != "$printed" ]; then
      printed=$height
      status_line
    fi
  fi
  if [ -z "$announced" ] && [ -s "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl" ]; then
    announced=1
    jq -r '"  >> upgrade \(.name) at height \(.height): \(.outcome.status), switch \(.switch_ms) ms (" + ([.steps[] | "\(.step) \(.duration_ms)ms"] | join(", ")) + ")"' \
      "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl"
  fi
  if [ "$outage" = none ] && [ "$height" -ge "$SSHD_STOP_HEIGHT" ]; then
    kill_sshd
    outage=down; t_stop=$(now); height_stop=$height
    echo "  >> sshd stopped at height $height (SIGKILL: listener and per-connection processes); back in ${SSHD_DOWN_SECONDS} s"
  elif [ "$outage" = down ] && at_least "$t_stop" "$(now)" "$SSHD_DOWN_SECONDS"; then
    start_sshd
    outage=back; t_back=$(now); height_back=$height; signed_at_restart=$signed
    echo "  >> sshd back at height $height (down $(seconds "$t_stop" "$t_back") s)"
  fi
  if [ "$height" -ge "$end" ]; then
    case $outage in
      healed | skipped) break ;;
      *) [ "$height" -ge $((end + 15)) ] && { echo "  >> $VALIDATOR did not sign again after the sshd outage" >&2; break; } ;;
    esac
  fi
  kill -0 "$SUPERVISOR" 2>/dev/null || die "supervisor exited; see $DEMO/supervisor.log"
  if [ -z "$tunnel_seen" ]; then
    if [ "$(tunnel_state)" = up ]; then
      tunnel_seen=1
    elif at_least "$t_start" "$(now)" 15; then
      { echo "demo: the tunnel to the bastion did not come up within 15 s. Supervisor log:"
        plain_log | grep -iE 'tunnel|bastion|error' | tail -n 5
        echo "sshd log ($SSH_DIR/sshd.log):"; tail -n 5 "$SSH_DIR/sshd.log"; } >&2
      exit 1
    fi
  fi
  sleep 0.2
done

health_json=$("$BIN/palisade-bastion" status --config "$BASTION_CONFIG" --json 2>/dev/null) || true
health_before=$(jq -r --arg name "$VALIDATOR" '.validators[] | select(.name == $name) |
  "\(.state) (supervisor \(.supervisor.validator // "?") \(.supervisor.version // "?"), since \(.since))"' <<<"$health_json" 2>/dev/null || echo "?")

rotation=skipped
if [ "$EIP" != 0 ]; then
  log "Elastic IP rotation of bastion-1 (palisade-ctl eip rotate, on the validator host: a session through the bastion being moved would be cut with its old address)"
  local_ctl() { "$BIN/palisade-ctl" --socket "$SUPERVISOR_SOCKET" "$@"; }
  local_ctl eip list | sed 's/^/  /'
  record=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record")
  signed_before=$(jq -r ".validators.$VALIDATOR.signed_heights" <<<"$record")
  missed_before=$(jq -r ".validators.$VALIDATOR.missed_count" <<<"$record")
  signed_now=$signed_before
  if local_ctl eip rotate bastion-1 | sed 's/^/  /'; then
    NEW_IP=$(local_ctl --json eip list | jq -r '.bastions[0].dialing')
    for _ in $(seq 100); do
      signed_now=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record" | jq -r ".validators.$VALIDATOR.signed_heights")
      [ "$signed_now" -ge $((signed_before + 3)) ] && break
      sleep 0.2
    done
    missed_now=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record" | jq -r ".validators.$VALIDATOR.missed_count")
    echo "  >> $VALIDATOR signed $((signed_now - signed_before)) blocks since the rotation began, through the tunnel to $NEW_IP;" \
      "missed $((missed_now - missed_before)) while gaiad redialed its sentry through the moved tunnel (one bastion only: with two, the other carries the votes meanwhile)"
    if [ "$signed_now" -ge $((signed_before + 3)) ] && [ "$NEW_IP" != "$FIRST_IP" ]; then rotation=done; else rotation=failed; fi
  else
    rotation=failed
  fi
  local_ctl eip status | tail -n 8 | sed 's/^/  /'
fi

echo "  operator's view through the bastion: $(ctl --json status | jq -c '{node: .node.state, height: .node.height, vault: (if .vault.locked then "locked" else "unlocked" end), watermark, tunnels: [.tunnels[] | {name, connected}]}' 2>/dev/null || echo "?")"

log "observability: metrics through the tunnel, and the shipped log segments (docs/observability.md)"
metric() { curl -sf "http://127.0.0.1:$1/metrics" | grep -E "^$2" | head -n 8 | sed 's/^/    /' || true; }
echo "  the supervisor's metrics, scraped on the bastion's loopback (127.0.0.1:$METRICS_ON_BASTION_PORT, through the tunnel):"
metric "$METRICS_ON_BASTION_PORT" 'palisade_(chain_height|validator_(signed|missed)_blocks_total|tunnel_up|tunnel_round_trip_seconds|vault_unlocked|log_segments_shipped_total)'
echo "  the bastion's own (127.0.0.1:$BASTION_METRICS_PORT):"
metric "$BASTION_METRICS_PORT" 'palisade_bastion_(validator_up|store_objects)'
LOG_DIR=$BASTION_BACKUPS/$VALIDATOR/logs
for _ in $(seq 50); do ls "$LOG_DIR"/*.age >/dev/null 2>&1 && break; sleep 0.2; done
segments=$(ls "$LOG_DIR"/*.age 2>/dev/null | wc -l || true)
echo "  $segments log segment(s) on the bastion ($LOG_DIR); the first one with the stock tools (age -d | zstd -d):"
first_segment=$(ls "$LOG_DIR"/*.age 2>/dev/null | head -n 1 || true)
if [ -n "$first_segment" ]; then
  age -d -i "$OPERATOR_DIR/logs_age_identity.txt" "$first_segment" | zstd -dc | head -n 2 | cut -c1-150 | sed 's/^/    /' || true
  echo "  palisade-ctl logs --archive (each segment's signature checked against the pinned tunnel key before decrypting), --grep 'tunnel up':"
  "$BIN/palisade-ctl" logs --archive --validator "$VALIDATOR" --from-dir "$LOG_DIR" --identity "$OPERATOR_DIR/logs_age_identity.txt" \
    --signer "$CLIENT_DIR/tunnel_ed25519.pub" --grep 'tunnel up' | tail -n 3 | cut -c1-150 | sed 's/^/    /' || true
fi

log "stopping the supervisor (SIGTERM: graceful stop of the node, final backup)"
kill -TERM "$SUPERVISOR"; wait "$SUPERVISOR" || true
record=$(curl -sf "http://127.0.0.1:$HTTP_PORT/record")
sleep 1   # one more health probe on the bastion (every 500 ms)
health_json=$("$BIN/palisade-bastion" status --config "$BASTION_CONFIG" --json 2>/dev/null) || true
health_after=$(jq -r --arg name "$VALIDATOR" '.validators[] | select(.name == $name) | "\(.state) (\(.last_error // "-"))"' <<<"$health_json" 2>/dev/null || echo "?")

log "summary"
echo "  upgrade record: $(tail -n1 "$HOME_DIR/cosmovisor/palisade-upgrades.jsonl" | jq -c '{name,height,outcome,switch_ms}')"
echo "  current -> $(readlink "$HOME_DIR/cosmovisor/current")"
echo "  blocks signed by $VALIDATOR: $(jq ".validators.$VALIDATOR.signed_heights" <<<"$record"), missed: $(jq -c ".validators.$VALIDATOR.missed_heights" <<<"$record")"
echo "  double signs: $(jq '.double_signs | length' <<<"$record")"
case $outage in
  skipped) echo "  sshd outage: skipped (SSHD_STOP_HEIGHT=0)" ;;
  healed) echo "  sshd outage: stopped at height $height_stop for $(seconds "$t_stop" "$t_back") s (back at height $height_back);" \
            "$VALIDATOR signed again at height $height_signed, $(seconds "$t_back" "$t_signed") s after sshd came back ($(seconds "$t_stop" "$t_signed") s after it stopped)" ;;
  *) echo "  sshd outage: $VALIDATOR did NOT sign again after sshd was stopped at height $height_stop" ;;
esac
echo "  bastion health of $VALIDATOR: $health_before; after the supervisor stopped: $health_after"
case $rotation in
  skipped) echo "  Elastic IP rotation: skipped (EIP=0)" ;;
  done) echo "  Elastic IP rotation: bastion-1 moved from $FIRST_IP to $NEW_IP; $VALIDATOR kept signing through the new address" ;;
  *) echo "  Elastic IP rotation: FAILED; see $DEMO/supervisor.log" ;;
esac
echo "  backups on the bastion ($BASTION_BACKUPS/$VALIDATOR): $(bastion_backups);" \
  "local: $(age_files "$HOME_DIR/palisade/backups" | wc -l)"
not_on_bastion=$(comm -23 <(age_files "$HOME_DIR/palisade/backups") <(age_files "$BASTION_BACKUPS/$VALIDATOR") |
  sed 's/.*-\(h[0-9]*\.age\)$/…-\1/' | paste -sd' ') || true
[ -z "$not_on_bastion" ] || echo "  local backups not on the bastion (taken while the tunnel was down; later ones supersede them): $not_on_bastion"
echo "  supervisor log, tunnel:"
plain_log | grep "bastion tunnel" | sed 's/^/    /' || echo "    (no \"bastion tunnel\" lines)"
echo "  logs: supervisor $DEMO/supervisor.log, node $DEMO/node.log, sshd $SSH_DIR/sshd.log, palisade-bastion $BASTION_DIR/bastion.log"
[ "$outage" = healed ] || [ "$outage" = skipped ] || exit 1
[ "$rotation" = done ] || [ "$rotation" = skipped ] || exit 1

if [ "${FAILOVER:-1}" != 0 ]; then
  log "failover: two hosts, a planned handoff, then the primary's host killed"
  "$BIN/palisade-failover-demo" "$BIN"
fi
