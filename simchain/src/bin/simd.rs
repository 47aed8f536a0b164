//! `simd`: simulated gaiad. See `palisade_simchain::node`.
//!
//! Exit codes: 0 normal / signal; 1 error or upgrade exit (`UPGRADE ... NEEDED`, `BINARY
//! UPDATED BEFORE TRIGGER`); 2 simulated crash (`SIMD_CRASH_AFTER`); pre-upgrade exits with
//! `SIMD_PREUPGRADE_EXIT` (default 0).

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use palisade_simchain::node::{self, AppIdentity, CometExit, InitOptions, LogFlags, TestKnobs};
use palisade_simchain::node_config::NodeConfig;

/// Simulated Cosmos SDK node (gaiad's command line, CometBFT's files and RPC).
#[derive(Debug, Parser)]
#[command(name = "simd")]
struct Cli {
    /// Application version this "binary" reports (its identity).
    #[arg(long, global = true, env = "SIMD_VERSION", default_value = "v1.0.0")]
    sim_version: String,
    /// Upgrade handler compiled into this "binary". Repeatable; env takes a comma list.
    #[arg(
        long,
        global = true,
        env = "SIMD_UPGRADE_HANDLERS",
        value_delimiter = ','
    )]
    sim_upgrade_handler: Vec<String>,
    /// The logging format (json|plain); overrides config.toml's log_format.
    #[arg(long = "log_format", global = true)]
    log_format: Option<String>,
    /// Disable colored logs.
    #[arg(long = "log_no_color", global = true)]
    log_no_color: bool,
    /// The logging level; overrides config.toml's log_level.
    #[arg(long = "log_level", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node (other gaiad flags are accepted and ignored).
    Start {
        /// Node home. Default: $SIMD_HOME or ~/.simapp.
        #[arg(long)]
        home: Option<PathBuf>,
        /// Ignored gaiad flags, e.g. --x-crisis-skip-assert-invariants.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., hide = true)]
        ignored: Vec<String>,
    },
    /// Print the application version.
    Version {
        /// Ignored flags (e.g. --long).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., hide = true)]
        ignored: Vec<String>,
    },
    /// Print the node's CometBFT /status result as JSON.
    Status {
        /// Node home, used to find [rpc] laddr when --node is absent.
        #[arg(long)]
        home: Option<PathBuf>,
        /// RPC address, tcp://host:port.
        #[arg(long)]
        node: Option<String>,
    },
    /// Cosmovisor pre-upgrade hook; exits with $SIMD_PREUPGRADE_EXIT (default 0).
    PreUpgrade {
        /// Ignored flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., hide = true)]
        ignored: Vec<String>,
    },
    /// Create a node home: config.toml, keys, sign state, genesis.
    Init {
        /// Node name.
        moniker: String,
        /// Node home.
        #[arg(long)]
        home: Option<PathBuf>,
        /// Chain ID.
        #[arg(long, default_value = "simchain-1")]
        chain_id: String,
        /// simchain-net node address for [simchain] network.
        #[arg(long, default_value = "127.0.0.1:26600")]
        network: String,
        /// RPC listen address.
        #[arg(long, default_value = "tcp://127.0.0.1:26657")]
        rpc_laddr: String,
        /// P2P listen address.
        #[arg(long, default_value = "tcp://0.0.0.0:26656")]
        p2p_laddr: String,
        /// Rewrite config.toml and genesis.json (keys are kept).
        #[arg(long)]
        overwrite: bool,
        /// Pad genesis.json with accounts to about this size (e.g. 256MiB, 1GiB), for tests of
        /// readers that must not load it whole.
        #[arg(long, value_parser = palisade_simchain::genesis::parse_size)]
        genesis_size: Option<u64>,
    },
    /// Print the validator's consensus public key.
    ShowValidator {
        /// Node home.
        #[arg(long)]
        home: Option<PathBuf>,
    },
}

fn default_home(home: Option<PathBuf>) -> PathBuf {
    home.or_else(|| std::env::var_os("SIMD_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".simapp")))
        .unwrap_or_else(|| PathBuf::from(".simapp"))
}

/// `--NAME X` / `--NAME=X` hidden among ignored flags after an unknown one.
fn value_from_ignored(ignored: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let prefix = format!("--{name}=");
    let mut iter = ignored.iter();
    while let Some(arg) = iter.next() {
        if *arg == flag {
            return iter.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&prefix) {
            return Some(value.to_string());
        }
    }
    None
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            if let Some(CometExit(message)) = e.downcast_ref::<CometExit>() {
                // CometBFT's `cmtos.Exit`: the message on stdout, exit code 1.
                println!("{message}");
            } else {
                eprintln!("Error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let identity = AppIdentity {
        version: cli.sim_version,
        upgrade_handlers: cli
            .sim_upgrade_handler
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect(),
    };
    let mut flags = LogFlags {
        log_format: cli.log_format,
        log_no_color: cli.log_no_color,
        log_level: cli.log_level,
    };
    match cli.command {
        Command::Version { .. } => {
            println!("{}", identity.version);
            Ok(0)
        }
        Command::PreUpgrade { .. } => Ok(std::env::var("SIMD_PREUPGRADE_EXIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)),
        Command::Init {
            moniker,
            home,
            chain_id,
            network,
            rpc_laddr,
            p2p_laddr,
            overwrite,
            genesis_size,
        } => {
            let output = node::init_home(&InitOptions {
                home: default_home(home),
                moniker,
                chain_id,
                network,
                rpc_laddr,
                p2p_laddr,
                overwrite,
                genesis_size: genesis_size.unwrap_or(0),
            })?;
            println!("{}", serde_json::to_string(&output)?);
            Ok(0)
        }
        Command::ShowValidator { home } => {
            println!("{}", node::show_validator(&default_home(home))?);
            Ok(0)
        }
        Command::Status { home, node } => {
            let address = match node {
                Some(node) => node,
                None => {
                    let home = default_home(home);
                    match NodeConfig::load(&home) {
                        Ok(config) => format!("tcp://{}", config.rpc_laddr),
                        Err(_) => "tcp://127.0.0.1:26657".to_string(),
                    }
                }
            };
            println!("{}", node::query_status(&address)?);
            Ok(0)
        }
        Command::Start { home, ignored } => {
            let home = default_home(
                home.or_else(|| value_from_ignored(&ignored, "home").map(PathBuf::from)),
            );
            flags.log_format = flags
                .log_format
                .or_else(|| value_from_ignored(&ignored, "log_format"));
            flags.log_level = flags
                .log_level
                .or_else(|| value_from_ignored(&ignored, "log_level"));
            flags.log_no_color |= ignored.iter().any(|a| a == "--log_no_color");
            let knobs = TestKnobs::from_env()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let code = runtime.block_on(node::run_start(&home, identity, knobs, flags));
            // Do not wait for blocking tasks (the log flood thread, file writes) at exit.
            runtime.shutdown_background();
            let code = code?;
            std::process::exit(code);
        }
    }
}
