#!/usr/bin/env bash
# Benchmarks (release build). Each appends one JSON object per line to
# target/bench/results.jsonl; see docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
apt_install xfsprogs
log "release build"
cargo build --release --workspace --bins --locked
log "benchmarks"
exec target/release/palisade-bench "$@"
