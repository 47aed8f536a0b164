#!/usr/bin/env bash
# The whole test suite, as CI runs it: build, format check, clippy, all
# tests (unit, integration against the real binaries and the simulated
# chain, and the root-only reflink tests on a loop-mounted XFS).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

require_cargo
# xfsprogs: reflink data-backup tests on a loop-mounted XFS; age: backups must
# open with the stock age CLI; curl: demo; openssh-server/-client: the tunnel
# tests run against real sshd (and ssh as the benchmark peer); iproute2: the
# multi-host tests build network namespaces (`ip netns`, root); etcd-server: the
# failover tests run a real 3-member etcd cluster (`palisade_testkit::EtcdCluster`) on
# ports of their own (the package's etcd.service, if systemd starts it, keeps 2379);
# gdb: gcore dumps an unlocked supervisor to prove its keys stay out of cores;
# util-linux: setpriv runs the supervisor as a user with capabilities; zstd: log
# segments must read with the stock `age -d | zstd -d` (docs/log-format.md).
# prometheus: promtool checks and unit-tests packaging/prometheus/palisade-rules.yml
# (bastion/tests/alerting_rules.rs), and the metrics tests run the real server
# (supervisor/tests/metrics_prometheus.rs); prometheus-alertmanager: the Alertmanager
# end-to-end test delivers to a local webhook (`palisade_testkit::alertmanager`).
apt_install xfsprogs curl ca-certificates age zstd openssh-server openssh-client iproute2 tmux etcd-server gdb util-linux prometheus prometheus-alertmanager
ensure_moto
ensure_nextest

# docker-compose.test-deps.yml is for people who run the services with Docker; the tests
# start them natively. Keep the file valid: Debian's docker-compose parses it without an engine.
log "checking docker-compose.test-deps.yml"
command -v docker-compose >/dev/null || apt_install docker-compose
docker-compose -f docker-compose.test-deps.yml config -q

# A clean debug build with every test binary takes about 3.5 GiB (see the
# dev profile in Cargo.toml); say so up front rather than as a compiler ICE.
free_gib=$(df --output=avail -BG . | tail -1 | tr -dc '0-9')
if [ "${free_gib:-0}" -lt 5 ]; then
    log "warning: only ${free_gib} GiB free here; a clean build needs about 4 GiB (cargo clean frees old artifacts)"
fi

log "build"
cargo build --workspace --all-targets --locked
log "format"
cargo fmt --all -- --check
log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "supply chain"
./scripts/audit.sh
log "unit sandboxing"
# systemd's own rating of the shipped units (0 = locked down, 10 = exposed):
# the supervisor's must stay at or below 2.0, the bastion's at or below 1.0.
command -v systemd-analyze >/dev/null || apt_install systemd
systemd-analyze security --offline=yes --threshold=20 packaging/systemd/palisade-supervisor.service >/dev/null
systemd-analyze security --offline=yes --threshold=10 packaging/systemd/palisade-bastion.service >/dev/null
# With the optional drop-ins (packaging/systemd/palisade-bastion.dropins: [metrics] needs
# loopback TCP, [alerts] the internet) the bastion's must stay at or below 2.0.
dropins=$(mktemp -d)
cp packaging/systemd/palisade-bastion.service "$dropins/"
mkdir "$dropins/palisade-bastion.service.d"
cp packaging/systemd/palisade-bastion.dropins/*.conf "$dropins/palisade-bastion.service.d/"
systemd-analyze security --offline=yes --threshold=20 "$dropins/palisade-bastion.service" >/dev/null
rm -r "$dropins"
log "doc tests"
cargo test --workspace --doc --locked
log "tests"
cargo nextest run --workspace --locked --no-fail-fast
