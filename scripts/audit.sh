#!/usr/bin/env bash
# Supply-chain check: every crate in Cargo.lock against the RustSec advisory
# database, with the exceptions and their reasons in .cargo/audit.toml.
#
# Uses the upstream database when github.com is reachable, otherwise the
# snapshot in $PALISADE_ADVISORY_DB (default ../shared/advisory-db, next to
# the repository). Installs cargo-audit only when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
if ! cargo audit --version >/dev/null 2>&1; then
    log "installing cargo-audit (cargo install; several minutes, once)"
    cargo install --locked cargo-audit >/dev/null
fi

snapshot=${PALISADE_ADVISORY_DB:-../shared/advisory-db}
if timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    log "cargo audit (upstream advisory database)"
    exec cargo audit
elif [ -d "$snapshot/crates" ]; then
    log "cargo audit (snapshot $snapshot: github.com is not reachable)"
    exec cargo audit --db "$snapshot" --no-fetch
else
    echo "audit: github.com is not reachable and there is no advisory database snapshot at $snapshot;" >&2
    echo "audit: set PALISADE_ADVISORY_DB to a copy of https://github.com/rustsec/advisory-db" >&2
    exit 1
fi
