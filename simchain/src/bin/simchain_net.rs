//! `simchain-net`: the simulated CometBFT network process. See `palisade_simchain::network`.
//!
//! Exit codes: 0 after SIGTERM/SIGINT (record written), 1 on configuration or bind errors.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use palisade_simchain::clock::parse_duration;
use palisade_simchain::network::{
    self, BoundNetwork, Genesis, ListenerSpec, NetworkConfig, parse_listen_spec, parse_upgrade_plan,
};
use palisade_simchain::protocol::UpgradePlan;

/// Simulated CometBFT network: commits a block every --block-time, records every vote from
/// external validators (simd nodes), flags double signs and missed blocks.
///
/// Prints `simchain-net listening nodes=ADDR[,ADDR…] node_ids=ID[,ID…] names=NAME[,NAME…]
/// http=ADDR[ rpc=ADDR|-,…]` on stdout once ready (`rpc=` only with --rpc). HTTP: GET /record,
/// GET /status, POST /upgrade {"name","height","info"}, POST /listeners/NAME/down and /up.
#[derive(Debug, Parser)]
#[command(name = "simchain-net", version)]
struct Cli {
    /// A listener for nodes, `[NAME=]IP:PORT`: a sentry with its own node ID in front of the
    /// one chain. Repeatable. Port 0 picks a free port. Names default to sentry-1, sentry-2…
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_listen_spec)]
    listen: Vec<ListenerSpec>,
    /// node_key.json of the listener at the same position (the first --node-key for the
    /// first --listen…), created when missing. A listener without one gets a fresh key.
    #[arg(long)]
    node_key: Vec<PathBuf>,
    /// `NAME=IP:PORT`: the listener (sentry) NAME also serves CometBFT's RPC there — /status
    /// (the network's view, the sentry's node ID and moniker) and /commit[?height=H]. NAME is
    /// a --listen name, or sentry-N for the N-th unnamed one. Repeatable; port 0 picks a
    /// free port.
    #[arg(long = "rpc", value_name = "NAME=ADDR", value_parser = network::parse_rpc_spec)]
    rpcs: Vec<(String, SocketAddr)>,
    /// HTTP query endpoint address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Chain ID (must match the genesis file's, if it has one). Default: simchain-1.
    #[arg(long)]
    chain_id: Option<String>,
    /// Time between blocks: 200ms, 1s, 1.5s, 2m; a bare number is milliseconds.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    block_time: Duration,
    /// Genesis JSON with the external validators:
    /// {"chain_id":..,"validators":[{"name","pub_key":{"type","value"},"power":"10"}]}.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Validators simulated in-process that always vote, so the chain keeps committing.
    #[arg(long, default_value_t = 3)]
    internal_validators: u32,
    /// Voting power of each internal validator.
    #[arg(long, default_value_t = 100)]
    internal_power: u64,
    /// Upgrade plan NAME:HEIGHT[:INFO], as if a governance proposal passed. Repeatable.
    #[arg(long = "upgrade", value_name = "NAME:HEIGHT[:INFO]", value_parser = parse_upgrade_plan)]
    upgrades: Vec<UpgradePlan>,
    /// JSON record file, rewritten atomically after every commit and on exit.
    #[arg(long)]
    record: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simchain-net: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let genesis = match &cli.genesis {
        Some(path) => Genesis::load(path)?,
        None => Genesis::default(),
    };
    let chain_id = match (cli.chain_id, genesis.chain_id) {
        (Some(cli_id), Some(genesis_id)) if cli_id != genesis_id => {
            return Err(network::NetworkConfigError::ChainIdMismatch {
                cli: cli_id,
                genesis: genesis_id,
            }
            .into());
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => "simchain-1".to_string(),
    };
    anyhow::ensure!(!cli.block_time.is_zero(), "--block-time must be positive");
    anyhow::ensure!(
        cli.node_key.len() <= cli.listen.len(),
        "{} --node-key files for {} --listen addresses",
        cli.node_key.len(),
        cli.listen.len()
    );
    let mut listeners = cli.listen.clone();
    for (listener, key) in listeners.iter_mut().zip(&cli.node_key) {
        listener.node_key = Some(key.clone());
    }
    network::assign_rpc_addresses(&mut listeners, &cli.rpcs).map_err(anyhow::Error::msg)?;
    let config = NetworkConfig {
        chain_id,
        block_time: cli.block_time,
        validators: genesis.validators,
        internal_validators: cli.internal_validators,
        internal_power: cli.internal_power,
        upgrade_plans: cli.upgrades,
        record_path: cli.record,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bound = BoundNetwork::bind(&listeners, cli.http)
            .await
            .context("binding listeners")?;
        let (nodes, http) = bound.local_addrs()?;
        let join = |f: &dyn Fn(&network::ListenerInfo) -> String| {
            nodes.iter().map(f).collect::<Vec<_>>().join(",")
        };
        // `rpc=` only when a sentry serves RPC, so the line stays as it was otherwise.
        let rpc = if nodes.iter().any(|l| l.rpc_addr.is_some()) {
            format!(
                " rpc={}",
                join(&|l| l.rpc_addr.map_or("-".to_string(), |a| a.to_string()))
            )
        } else {
            String::new()
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "simchain-net listening nodes={} node_ids={} names={} http={http}{rpc}",
            join(&|l| l.addr.to_string()),
            join(&|l| l.node_id.clone()),
            join(&|l| l.name.clone()),
        )?;
        stdout.flush()?;
        drop(stdout);
        network::serve(config, bound, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut terminate), Ok(mut interrupt)) => {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        }
        _ => std::future::pending().await,
    }
}
