//! `palisade-bench`: Palisade's benchmarks, measured on the real binaries.
//!
//! Run it in release mode after building every binary:
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p palisade-bench -- [--only NAME,...] [--out FILE]
//! ```
//!
//! It drives `palisade-supervisor`, `simd` and `simchain-net` found next to its
//! own executable. Benchmarks (names are stable):
//!
//! - `upgrade_switch_ms` (target 200): a chain with 200 ms blocks, the supervisor
//!   with `UNSAFE_SKIP_BACKUP=true` and `DAEMON_POLL_INTERVAL=50ms`, an upgrade
//!   `v2` scheduled a few blocks ahead; the value is the median `switch_ms`
//!   (detected → new binary spawned) of the records appended to
//!   `cosmovisor/palisade-upgrades.jsonl`, over `--upgrade-runs` fresh homes.
//! - `data_backup_2gib_reflink_s` / `data_backup_2gib_copy_s`: seconds taken by
//!   the supervisor's `backup_data_dir` on a 2 GiB data directory, on a
//!   loop-mounted XFS image with reflink (needs root and xfsprogs) and on the
//!   filesystem of `target/bench` (byte copy). Warm page cache.
//! - `supervisor_idle_rss_mib` (target 20) / `supervisor_idle_cpu_pct` (target 1):
//!   the supervisor process alone (not the daemon) while its validator signs,
//!   sampled from `/proc` over `--idle-secs`.
//! - `supervisor_start_genesis_1gib_rss_mib` (target 32): the supervisor's
//!   peak RSS (`VmHWM`) when it starts a validator whose `genesis.json` is
//!   1 GiB and reads the chain id from it at unlock (see [`genesis`]).
//! - `tunnel_connect_ms`, `tunnel_throughput_mib_s` and
//!   `tunnel_throughput_<cipher>_mib_s` per cipher, `tunnel_heal_s` (target
//!   0.25): the SSH tunnel library against a real OpenSSH sshd on 127.0.0.1
//!   that the benchmark starts, with the OpenSSH client as the peer (see
//!   [`tunnel`]). `--only tunnel_throughput` selects every throughput figure
//!   (a prefix selects every name that starts with it and `_`).
//! - `tunnel_vote_latency_ms_p50`, `tunnel_vote_latency_ms_p99`,
//!   `tunnel_vote_latency_added_ms_p99` (target 5), `tunnel_bulk_goodput_mbit_s`:
//!   300-byte votes at 80/s through a forward of the tunnel on a link shaped
//!   to 50 Mbit/s and 10 ms each way (a network namespace, `tc tbf`, a delay
//!   proxy; needs root), idle and while bulk shares the SSH connection,
//!   against plain TCP on the same link (the limit) and OpenSSH (see
//!   [`votes`]). `--only tunnel_vote` selects all four.
//! - `rpc_local_p50_ms` / `rpc_local_p99_ms` (target 1 for p99): `status`
//!   round trips on the supervisor's local control socket, one plaintext
//!   connection as a trusted local user through the client library
//!   (`palisade-client`), 2000 timed after 100 warm-up (see [`rpc`]).
//! - `rpc_bastion_p50_ms` / `rpc_bastion_p99_ms` (target 5 for p99): the
//!   same through a real OpenSSH sshd on 127.0.0.1, as `palisade-ctl --via`
//!   does it (SSH, direct-streamlocal to the supervisor's reverse-forwarded
//!   socket, pinned TLS, operator login). `--only rpc` selects all four.
//! - `failover_planned_missed_blocks` (target 1), `failover_planned_s`,
//!   `failover_takeover_s`, `chaos_schedules_run`, `chaos_double_signs`
//!   (target 0): two validator hosts, real etcd, the simulated chain (see
//!   [`failover`]). `--only failover` / `--only chaos` select them.
//! - `eip_rotation_s` (target 5): `palisade-ctl eip rotate` against moto on loopback, until
//!   the tunnel is up on the new address (see [`eip`]).
//!
//! - `log_ship_lines_per_s` (goal ≥ 100000), `log_ship_missed_blocks`
//!   (target 0): `simd` floods its stdout while the supervisor ships it
//!   (`[logs]`) to a real sshd + `palisade-bastion` store (see [`logs`]).
//!   `--only log_ship` selects both.
//!
//! Each benchmark that succeeds appends one JSON object per line
//! ([`palisade_wire::bench::BenchResult`]) to `target/bench/results.jsonl` in
//! the workspace root (or `--out`); a failed benchmark writes nothing, the
//! others still run, and the exit status is 1.

mod backup;
mod eip;
mod failover;
mod fixture;
mod genesis;
mod idle;
mod logs;
mod metrics;
mod rpc;
mod shaping;
mod sign_backup;
mod sshd;
mod tunnel;
mod upgrade;
mod votes;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use palisade_wire::bench::BenchResult;

use crate::fixture::Binaries;

const UPGRADE_SWITCH: &str = "upgrade_switch_ms";
const BACKUP_REFLINK: &str = "data_backup_2gib_reflink_s";
const BACKUP_COPY: &str = "data_backup_2gib_copy_s";
const IDLE_RSS: &str = "supervisor_idle_rss_mib";
const IDLE_CPU: &str = "supervisor_idle_cpu_pct";
const GENESIS_RSS: &str = genesis::NAME;
const BACKUP_CREATE_P50: &str = "backup_create_ms_p50";
const BACKUP_CREATE_P99: &str = "backup_create_ms_p99";
const TUNNEL_CONNECT: &str = tunnel::CONNECT;
const TUNNEL_THROUGHPUT: &str = tunnel::THROUGHPUT;
const TUNNEL_HEAL: &str = tunnel::HEAL;
const RPC_LOCAL_P50: &str = rpc::P50;
const RPC_LOCAL_P99: &str = rpc::P99;
const RPC_BASTION_P50: &str = rpc::BASTION_P50;
const RPC_BASTION_P99: &str = rpc::BASTION_P99;
const FAILOVER_PLANNED_MISSED: &str = failover::PLANNED_MISSED;
const FAILOVER_PLANNED_S: &str = failover::PLANNED_S;
const FAILOVER_TAKEOVER_S: &str = failover::TAKEOVER_S;
const CHAOS_RUN: &str = failover::CHAOS_RUN;
const CHAOS_DOUBLE_SIGNS: &str = failover::CHAOS_DOUBLE_SIGNS;
const EIP_ROTATION: &str = eip::NAME;

const METRICS_SCRAPE_P50: &str = "metrics_scrape_ms_p50";
const METRICS_SCRAPE_P99: &str = "metrics_scrape_ms_p99";

/// Every benchmark, in the order they run.
const ALL: [&str; 32] = [
    UPGRADE_SWITCH,
    BACKUP_REFLINK,
    BACKUP_COPY,
    IDLE_RSS,
    IDLE_CPU,
    GENESIS_RSS,
    BACKUP_CREATE_P50,
    BACKUP_CREATE_P99,
    TUNNEL_CONNECT,
    TUNNEL_THROUGHPUT,
    tunnel::THROUGHPUT_AES256_GCM,
    tunnel::THROUGHPUT_CHACHA20_POLY1305,
    tunnel::THROUGHPUT_AES128_GCM,
    TUNNEL_HEAL,
    votes::P50,
    votes::P99,
    votes::ADDED_P99,
    votes::GOODPUT,
    RPC_LOCAL_P50,
    RPC_LOCAL_P99,
    RPC_BASTION_P50,
    RPC_BASTION_P99,
    FAILOVER_PLANNED_MISSED,
    FAILOVER_PLANNED_S,
    FAILOVER_TAKEOVER_S,
    CHAOS_RUN,
    CHAOS_DOUBLE_SIGNS,
    EIP_ROTATION,
    METRICS_SCRAPE_P50,
    METRICS_SCRAPE_P99,
    logs::LINES_PER_S,
    logs::MISSED_BLOCKS,
];

const LONG_ABOUT: &str = "\
Palisade's benchmarks, measured on the real binaries (palisade-supervisor, simd,
simchain-net), which must sit next to this executable: run
`cargo build --release --workspace --bins` first, then
`cargo run --release -p palisade-bench -- [--only NAME,...]`.

Benchmarks (stable names):

  upgrade_switch_ms (target 200)
      Chain with 200 ms blocks; supervisor with UNSAFE_SKIP_BACKUP=true and
      DAEMON_POLL_INTERVAL=50ms; upgrade `v2` scheduled a few blocks ahead.
      Value: median `switch_ms` (upgrade detected -> new binary spawned, from
      cosmovisor/palisade-upgrades.jsonl) over --upgrade-runs fresh homes.

  data_backup_2gib_reflink_s
      Seconds for the supervisor's pre-upgrade data backup of a 2 GiB data dir
      on a 3 GiB XFS image (mkfs.xfs -m reflink=1) loop-mounted in
      target/bench. Needs root and xfsprogs; otherwise it fails and is skipped.

  data_backup_2gib_copy_s
      The same backup on the filesystem of target/bench, which must not support
      reflink (the backup must report a byte copy).
      Both backups run with a warm page cache (the data was just written).

  supervisor_idle_rss_mib (target 20), supervisor_idle_cpu_pct (target 1)
      Chain with 1 s blocks and the supervisor running simd; once the validator
      signs, the supervisor process alone (not the daemon) is sampled from
      /proc for --idle-secs: VmRSS at the end in MiB, and utime+stime as a
      percentage of one core over the window.

  supervisor_start_genesis_1gib_rss_mib (target 32)
      The same chain with config/genesis.json replaced by a 1 GiB one in the
      Cosmos SDK v0.50 shape (padded with accounts); a vault (init-vault,
      unattended unlock from [vault] passphrase-file) and no [backup]
      chain-id, so the supervisor reads the chain id from the genesis at
      unlock. Value: the supervisor's VmHWM (peak RSS, not the daemon's) once
      the validator signs and a backup-sim-1-* bundle exists. Needs ~1 GiB of
      free disk in the temporary directory.

  backup_create_ms_p50, backup_create_ms_p99 (target 100)
      200 sign-state backups as the supervisor makes them on every watermark
      change: bundle (state + both key files) signed with the vault's key,
      age-encrypted to the vault and a recovery recipient, written atomically
      to a local store. Must stay well under one block time.

  tunnel_connect_ms, tunnel_throughput_mib_s, tunnel_throughput_<cipher>_mib_s,
  tunnel_heal_s (target 0.25)
      The SSH tunnel (russh) against a real OpenSSH sshd on 127.0.0.1 started
      by the benchmark (needs openssh-server and openssh-client), the OpenSSH
      client measured in the same run with the same algorithms as the peer:
      connect = TCP + handshake + ed25519 auth, p50 of 20, vs `ssh -v -N`
      until `Authenticated to`; throughput = best of 3 x 256 MiB uploads
      through a local TCP forward to a counting sink, vs `ssh -N -L`, once
      per cipher (aes256_gcm, chacha20_poly1305, aes128_gcm; OpenSSH forced
      to the same one), tunnel_throughput_mib_s being the cipher preferred on
      this CPU (target ratio >= 1.0); heal = sshd killed, down 3 s, restarted:
      from sshd accepting TCP to a byte echoed through the forward, p50 of 5
      (default probes and backoff). `--only tunnel` selects them all.

  tunnel_vote_latency_ms_p50, tunnel_vote_latency_ms_p99,
  tunnel_vote_latency_added_ms_p99 (target 5), tunnel_bulk_goodput_mbit_s
      Votes (300 B, 80/s, echoed) through a local TCP forward of the tunnel
      on a shaped link: a network namespace for the bastion (sshd, echo
      server, sink), a veth into it with `tc tbf` 50 Mbit/s on both ends,
      and a proxy inside the namespace adding 10 ms each way (needs root, ip
      and tc; otherwise it fails). Idle 8 s, then 12 s while a bulk stream
      through a second forward and an exec-session upload share the SSH
      connection. Values: the round trip's p50/p99 under bulk (peer: one
      `ssh -L -L` connection with the same streams); added p99 = the
      tunnel's p99 minus plain TCP's on the same link under the same bulk
      (goal <= 5 ms and below OpenSSH's); bulk goodput at the sink (goal >=
      80 % of the rate). `--only tunnel_vote` selects all four (about 66 s).

  rpc_local_p50_ms, rpc_local_p99_ms (target 1 for p99)
      Chain with 1 s blocks and the supervisor running simd (no vault), its
      [rpc] socket in the fixture's temporary directory (PALISADE_CONFIG).
      One plaintext connection as a trusted local user (root or the
      supervisor's own user) with the client library (palisade-client); 100
      warm-up `status` calls, then 2000 timed (request written -> response
      read and parsed).

  rpc_bastion_p50_ms, rpc_bastion_p99_ms (target 5 for p99)
      The same supervisor, reached as `palisade-ctl --via` does: SSH to an
      OpenSSH sshd on 127.0.0.1 that the benchmark starts (the supervisor's
      own tunnel publishes its socket there), direct-streamlocal to that
      socket, TLS 1.3 with the pinned certificate, operator login (viewer);
      then 100 warm-up and 2000 timed `status` calls on that one
      connection. `--only rpc` selects all four.

  failover_planned_missed_blocks (target 1), failover_planned_s
      Two validator hosts sharing one vault (two real supervisors), a real
      3-member etcd cluster, the simulated chain with 1 s blocks and one
      sentry per host. `palisade-ctl failover handoff --to` back and forth,
      --handoffs times: blocks missed from the command to the new primary's
      first vote (the worst run), and seconds from the command to that vote
      (the chain's first vote through the new primary's sentry; median).

  failover_takeover_s
      The same cluster: the primary's whole host SIGKILLed, seconds until the
      standby's first vote (median of 3): the lease running out (lease-ttl
      3 s) plus the takeover rule (a new block, the key absent from the last
      3 commits).

  chaos_schedules_run, chaos_double_signs (target 0)
      --chaos-schedules seeded random fault schedules (seeds 1000, 1001, ...;
      palisade_testkit::failover::random_schedule) on one cluster with 300 ms
      blocks: kills, SIGSTOP/SIGCONT, etcd and chain links cut, etcd members
      killed, concurrent handoffs; after each, the chain's record is checked
      for double signs and heights signed by both hosts, and both hosts' sign
      states for regressions (any regression fails the benchmark).

  eip_rotation_s (target 5)
      moto (EC2, server mode) on 127.0.0.1 with an instance whose Elastic IP
      is the bastion's configured address, and a loopback 'cloud'
      forwarding every address moto shows on the instance to a real OpenSSH
      sshd (moto's addresses are in 127/8). The supervisor signs on the
      simulated chain with one [[bastion]] (eip = { instance-id }) and [eip]
      (credentials from the environment). 5 times `palisade-ctl eip rotate
      b1`: seconds from the command to the journal's tunnel-up record (the
      tunnel up on the new address); median.

  metrics_scrape_ms_p50, metrics_scrape_ms_p99 (target 10 for p99)
      Chain with 1 s blocks and the supervisor running simd (no vault) with
      [metrics] listen on a free loopback port; once the validator signs, 20
      warm-up and 1000 timed GET /metrics as Prometheus asks (OpenMetrics),
      each on a new connection, from connect to the last byte: the render of
      every supervisor metric (docs/metrics.md). `--only metrics_scrape_ms`
      selects both.

  log_ship_lines_per_s (goal >= 100000), log_ship_missed_blocks (target 0)
      Chain with 400 ms blocks whose simd floods stdout ([simchain]
      log_flood); the supervisor with a vault (unattended unlock) and [logs]
      ships to a real OpenSSH sshd on 127.0.0.1 whose forced command is
      `palisade-bastion backup-session`, into a real `palisade-bastion
      serve-backups` store (palisade-bastion must sit next to this
      executable). Once the validator signs, the segments arriving in the
      store during 20 s are counted: lines per second from their signed
      metadata (JSON lines, zstd, age, ed25519, spooled, shipped), and the
      validator's missed blocks over the same heights. `--only log_ship`
      selects both.

Each successful benchmark appends one JSON line
{name, value, unit, target?, peer?, peer_value?} to
<workspace>/target/bench/results.jsonl (or --out) and a summary table is
printed. A failed benchmark writes nothing; the others still run and the exit
status is 1.";

#[derive(Debug, Parser)]
#[command(
    name = "palisade-bench",
    version,
    about = "Palisade's benchmarks: drives the real binaries and appends results to target/bench/results.jsonl",
    long_about = LONG_ABOUT
)]
struct Args {
    /// Run only these benchmarks (comma-separated names, or prefixes such as
    /// `tunnel` for every `tunnel_*`; default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    only: Vec<String>,
    /// File the results are appended to (default: <workspace>/target/bench/results.jsonl).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Upgrades measured for upgrade_switch_ms, each in a fresh home.
    #[arg(long, default_value_t = 5, value_name = "N")]
    upgrade_runs: usize,
    /// Length of the idle sampling window, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    idle_secs: u64,
    /// Planned handoffs measured for failover_planned_*.
    #[arg(long, default_value_t = 5, value_name = "N")]
    handoffs: usize,
    /// Seeded fault schedules run for chaos_* (at least 50 for the record).
    #[arg(long, default_value_t = 50, value_name = "N")]
    chaos_schedules: usize,
    /// The first seed of the chaos schedules (seeds FIRST, FIRST+1, …).
    #[arg(long, default_value_t = 1000, value_name = "FIRST")]
    chaos_first_seed: u64,
    /// Print the benchmark names and exit.
    #[arg(long)]
    list: bool,
}

/// A result plus a human-readable note for the summary table.
pub struct Measured {
    pub result: BenchResult,
    pub detail: String,
}

pub fn result(name: &str, value: f64, unit: &str, target: Option<f64>) -> BenchResult {
    BenchResult {
        name: name.to_owned(),
        value,
        unit: unit.to_owned(),
        target,
        peer: None,
        peer_value: None,
    }
}

/// Rounded to two decimals for the results file.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("palisade-bench: error: {error:#}");
            std::process::exit(2);
        }
    }
}

/// Runs the selected benchmarks; `Ok(false)` if any of them failed.
fn run(args: Args) -> anyhow::Result<bool> {
    if args.list {
        for name in ALL {
            println!("{name}");
        }
        return Ok(true);
    }
    let selected: Vec<&str> = if args.only.is_empty() {
        ALL.to_vec()
    } else {
        let mut selected = Vec::new();
        for name in &args.only {
            let name = name.trim();
            // An exact name, a group measured together (`tunnel_vote`), or a
            // prefix (`tunnel`) for every `tunnel_*`.
            let matching: Vec<&str> = match ALL.iter().find(|known| **known == name) {
                Some(known) => vec![*known],
                None if name == votes::GROUP => votes::NAMES.to_vec(),
                None => ALL
                    .iter()
                    .copied()
                    .filter(|known| known.starts_with(&format!("{name}_")))
                    .collect(),
            };
            if matching.is_empty() {
                bail!("unknown benchmark {name:?}; known: {}", ALL.join(", "));
            }
            for known in matching {
                if !selected.contains(&known) {
                    selected.push(known);
                }
            }
        }
        selected
    };
    let wants = |name: &str| selected.contains(&name);

    let root = workspace_root()?;
    let scratch = root.join("target").join("bench");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| scratch.join("results.jsonl"));
    let needs_binaries = wants(UPGRADE_SWITCH)
        || wants(IDLE_RSS)
        || wants(IDLE_CPU)
        || wants(GENESIS_RSS)
        || wants(RPC_LOCAL_P50)
        || wants(RPC_LOCAL_P99)
        || wants(RPC_BASTION_P50)
        || wants(RPC_BASTION_P99)
        || wants(FAILOVER_PLANNED_MISSED)
        || wants(FAILOVER_PLANNED_S)
        || wants(FAILOVER_TAKEOVER_S)
        || wants(CHAOS_RUN)
        || wants(CHAOS_DOUBLE_SIGNS)
        || wants(EIP_ROTATION)
        || wants(METRICS_SCRAPE_P50)
        || wants(METRICS_SCRAPE_P99)
        || wants(logs::LINES_PER_S)
        || wants(logs::MISSED_BLOCKS);
    let bins = if needs_binaries {
        Some(Binaries::locate()?)
    } else {
        None
    };

    let started = Instant::now();
    let mut done: Vec<Measured> = Vec::new();
    let mut failed: Vec<(&str, String)> = Vec::new();
    let mut record = |outcome: anyhow::Result<Measured>, name: &'static str| match outcome {
        Ok(measured) => {
            if let Err(error) = append(&out, &measured.result) {
                eprintln!("palisade-bench: {name}: cannot record the result: {error:#}");
                failed.push((name, format!("{error:#}")));
            } else {
                eprintln!(
                    "palisade-bench: {name} = {} {} ({})",
                    measured.result.value, measured.result.unit, measured.detail
                );
                done.push(measured);
            }
        }
        Err(error) => {
            eprintln!("palisade-bench: {name} FAILED: {error:#}");
            failed.push((name, format!("{error:#}")));
        }
    };

    if let (true, Some(bins)) = (wants(UPGRADE_SWITCH), &bins) {
        eprintln!(
            "palisade-bench: running {UPGRADE_SWITCH} ({} runs)",
            args.upgrade_runs
        );
        record(upgrade::run(bins, args.upgrade_runs), UPGRADE_SWITCH);
    }
    if wants(BACKUP_REFLINK) {
        eprintln!("palisade-bench: running {BACKUP_REFLINK}");
        record(backup::run_reflink(&scratch), BACKUP_REFLINK);
    }
    if wants(BACKUP_COPY) {
        eprintln!("palisade-bench: running {BACKUP_COPY}");
        record(backup::run_copy(&scratch), BACKUP_COPY);
    }
    if let (true, Some(bins)) = (wants(IDLE_RSS) || wants(IDLE_CPU), &bins) {
        eprintln!(
            "palisade-bench: running {IDLE_RSS} / {IDLE_CPU} ({} s window)",
            args.idle_secs
        );
        match idle::run(bins, Duration::from_secs(args.idle_secs.max(1))) {
            Ok(figures) => {
                if wants(IDLE_RSS) {
                    record(Ok(figures.rss), IDLE_RSS);
                }
                if wants(IDLE_CPU) {
                    record(Ok(figures.cpu), IDLE_CPU);
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in [IDLE_RSS, IDLE_CPU] {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }

    if let (true, Some(bins)) = (wants(GENESIS_RSS), &bins) {
        eprintln!("palisade-bench: running {GENESIS_RSS}");
        record(genesis::run(bins), GENESIS_RSS);
    }

    if wants(BACKUP_CREATE_P50) || wants(BACKUP_CREATE_P99) {
        eprintln!("palisade-bench: running {BACKUP_CREATE_P50} / {BACKUP_CREATE_P99}");
        match sign_backup::run(&scratch) {
            Ok((p50, p99)) => {
                if wants(BACKUP_CREATE_P50) {
                    record(Ok(p50), BACKUP_CREATE_P50);
                }
                if wants(BACKUP_CREATE_P99) {
                    record(Ok(p99), BACKUP_CREATE_P99);
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in [BACKUP_CREATE_P50, BACKUP_CREATE_P99] {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }

    for (name, run) in [
        (
            TUNNEL_CONNECT,
            tunnel::run_connect as fn(&Path) -> anyhow::Result<Measured>,
        ),
        (TUNNEL_HEAL, tunnel::run_heal),
    ] {
        if wants(name) {
            eprintln!("palisade-bench: running {name}");
            record(run(&scratch), name);
        }
    }
    for (name, outcome) in tunnel::run_throughput_ciphers(&scratch, wants) {
        record(outcome, name);
    }
    if votes::NAMES.iter().any(|name| wants(name)) {
        eprintln!("palisade-bench: running {}", votes::NAMES.join(" / "));
        match votes::run(&scratch) {
            Ok(results) => {
                for (name, measured) in results {
                    if wants(name) {
                        record(Ok(measured), name);
                    }
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in votes::NAMES {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }

    let log_names = [logs::LINES_PER_S, logs::MISSED_BLOCKS];
    if let (true, Some(bins)) = (log_names.iter().any(|name| wants(name)), &bins) {
        eprintln!("palisade-bench: running {}", log_names.join(" / "));
        match logs::run(bins) {
            Ok((lines, missed)) => {
                if wants(logs::LINES_PER_S) {
                    record(Ok(lines), logs::LINES_PER_S);
                }
                if wants(logs::MISSED_BLOCKS) {
                    record(Ok(missed), logs::MISSED_BLOCKS);
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in log_names {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }

    let rpc_names = [
        RPC_LOCAL_P50,
        RPC_LOCAL_P99,
        RPC_BASTION_P50,
        RPC_BASTION_P99,
    ];
    if let (true, Some(bins)) = (rpc_names.iter().any(|name| wants(name)), &bins) {
        eprintln!("palisade-bench: running {}", rpc_names.join(" / "));
        let mut outcomes: Vec<(&str, anyhow::Result<Measured>)> = Vec::new();
        match rpc::run(bins) {
            Ok(results) => {
                outcomes.push((RPC_LOCAL_P50, Ok(results.local.0)));
                outcomes.push((RPC_LOCAL_P99, Ok(results.local.1)));
                match results.bastion {
                    Ok((p50, p99)) => {
                        outcomes.push((RPC_BASTION_P50, Ok(p50)));
                        outcomes.push((RPC_BASTION_P99, Ok(p99)));
                    }
                    Err(error) => {
                        let message = format!("{error:#}");
                        for name in [RPC_BASTION_P50, RPC_BASTION_P99] {
                            outcomes.push((name, Err(anyhow::anyhow!("{message}"))));
                        }
                    }
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in rpc_names {
                    outcomes.push((name, Err(anyhow::anyhow!("{message}"))));
                }
            }
        }
        for (name, outcome) in outcomes {
            if wants(name) {
                record(outcome, name);
            }
        }
    }

    let handoff_names = [
        FAILOVER_PLANNED_MISSED,
        FAILOVER_PLANNED_S,
        FAILOVER_TAKEOVER_S,
    ];
    if let (true, Some(bins)) = (handoff_names.iter().any(|name| wants(name)), &bins) {
        eprintln!(
            "palisade-bench: running {} ({} handoffs)",
            handoff_names.join(" / "),
            args.handoffs
        );
        match failover::run_handoffs(bins, args.handoffs) {
            Ok((missed, planned, takeover)) => {
                for (name, measured) in handoff_names.into_iter().zip([missed, planned, takeover]) {
                    if wants(name) {
                        record(Ok(measured), name);
                    }
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in handoff_names {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }
    if let (true, Some(bins)) = (wants(EIP_ROTATION), &bins) {
        eprintln!("palisade-bench: running {EIP_ROTATION}");
        record(eip::run(bins), EIP_ROTATION);
    }
    if let (true, Some(bins)) = (wants(CHAOS_RUN) || wants(CHAOS_DOUBLE_SIGNS), &bins) {
        eprintln!(
            "palisade-bench: running {CHAOS_RUN} / {CHAOS_DOUBLE_SIGNS} ({} schedules)",
            args.chaos_schedules
        );
        match failover::run_chaos(bins, args.chaos_first_seed, args.chaos_schedules) {
            Ok((run, double_signs)) => {
                for (name, measured) in [(CHAOS_RUN, run), (CHAOS_DOUBLE_SIGNS, double_signs)] {
                    if wants(name) {
                        record(Ok(measured), name);
                    }
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in [CHAOS_RUN, CHAOS_DOUBLE_SIGNS] {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }
    if let (true, Some(bins)) = (
        wants(METRICS_SCRAPE_P50) || wants(METRICS_SCRAPE_P99),
        &bins,
    ) {
        eprintln!("palisade-bench: running {METRICS_SCRAPE_P50} / {METRICS_SCRAPE_P99}");
        match metrics::run(bins) {
            Ok((p50, p99)) => {
                for (name, measured) in [(METRICS_SCRAPE_P50, p50), (METRICS_SCRAPE_P99, p99)] {
                    if wants(name) {
                        record(Ok(measured), name);
                    }
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for name in [METRICS_SCRAPE_P50, METRICS_SCRAPE_P99] {
                    if wants(name) {
                        record(Err(anyhow::anyhow!("{message}")), name);
                    }
                }
            }
        }
    }

    print_summary(&done, &failed, &out, started.elapsed());
    Ok(failed.is_empty())
}

/// Appends one JSON line to `out`, creating its directory.
fn append(out: &Path, result: &BenchResult) -> anyhow::Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut line = serde_json::to_string(result)?;
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .with_context(|| format!("appending to {}", out.display()))
}

fn print_summary(done: &[Measured], failed: &[(&str, String)], out: &Path, elapsed: Duration) {
    println!();
    println!(
        "{:<38} {:>10} {:<4} {:>8} {:<6} detail",
        "benchmark", "value", "unit", "target", "status"
    );
    println!("{}", "-".repeat(110));
    for measured in done {
        let result = &measured.result;
        let (target, status) = match result.target {
            Some(target) if result.value <= target => (format!("{target}"), "ok"),
            Some(target) => (format!("{target}"), "OVER"),
            None => ("-".to_owned(), "-"),
        };
        println!(
            "{:<38} {:>10} {:<4} {:>8} {:<6} {}",
            result.name, result.value, result.unit, target, status, measured.detail
        );
    }
    for (name, error) in failed {
        let first_line = error.lines().next().unwrap_or_default();
        println!(
            "{name:<38} {:>10} {:<4} {:>8} {:<6} {first_line}",
            "-", "", "", "FAILED"
        );
    }
    println!(
        "\n{} result(s) appended to {} in {:.1} s{}",
        done.len(),
        out.display(),
        elapsed.as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; {} benchmark(s) failed", failed.len())
        }
    );
}

/// The directory holding the workspace's `Cargo.toml` (the one with
/// `[workspace]`), searched upwards from the current directory and then from
/// this executable.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let manifest = dir.join("Cargo.toml");
            if std::fs::read_to_string(&manifest)
                .is_ok_and(|text| text.lines().any(|line| line.trim() == "[workspace]"))
            {
                return Ok(dir.to_path_buf());
            }
        }
    }
    bail!("no Cargo.toml with [workspace] above the current directory or this executable")
}
