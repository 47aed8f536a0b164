#!/usr/bin/env bash
# Benchmarks (release build). Each appends one JSON object per line to
# target/bench/results.jsonl; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
# xfsprogs: the reflink backup; openssh-server/-client: the tunnel benchmarks
# (a throwaway sshd on 127.0.0.1, and `ssh` as the peer).
apt_install xfsprogs openssh-server openssh-client
# moto's server mode: eip_rotation_s rotates an Elastic IP against it.
ensure_moto
log "release build"
cargo build --release --workspace --bins --locked
log "benchmarks"
exec target/release/palisade-bench "$@"
