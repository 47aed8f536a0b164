//! `palisade-supervisor`: parses arguments, sets up logging, runs the
//! command, maps the outcome to an exit code. Everything else is in the
//! library.
#![forbid(unsafe_code)]

use clap::Parser;
use palisade_supervisor::cli::{self, Cli, Command, exit_code};
use palisade_supervisor::config::Config;
use palisade_supervisor::node::process::OutputTarget;
use palisade_supervisor::supervision::{RunOptions, RunOutcome, run, shutdown_signals};

fn main() {
    let cli = Cli::parse();
    init_logging();
    // Before any secret is read: no core dump, no same-uid ptrace.
    if let Err(error) = palisade_supervisor::vault::deny_core_dumps() {
        tracing::warn!("{error}; secrets could end up in a core dump");
    }
    if let Err(error) = palisade_supervisor::vault::exclude_thread_stack_from_dumps() {
        tracing::warn!("{error}");
    }
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("palisade-supervisor: {error:#}");
            exit_code::ERROR
        }
    };
    std::process::exit(code);
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The filter applies to both layers: the log shipping (`[logs]`) gets
    // the events journald gets.
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(palisade_supervisor::logs::TracingTap)
        .init();
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let load = || Config::load_from_process_env(cli.config.as_deref());
    match cli.command {
        Command::Version => {
            cli::version(load().ok().as_ref())?;
            Ok(exit_code::OK)
        }
        Command::InitRpc { force } => {
            cli::init_rpc(&load()?, force)?;
            Ok(exit_code::OK)
        }
        Command::RpcFingerprint => {
            cli::rpc_fingerprint(&load()?)?;
            Ok(exit_code::OK)
        }
        Command::Config => {
            cli::print_config(&load()?);
            Ok(exit_code::OK)
        }
        Command::Init { binary } => {
            cli::init(&load()?, &binary)?;
            Ok(exit_code::OK)
        }
        Command::AddUpgrade {
            name,
            binary,
            force,
            upgrade_height,
        } => {
            cli::add_upgrade(&load()?, &name, &binary, force, upgrade_height)?;
            Ok(exit_code::OK)
        }
        Command::ShowUpgradeInfo => {
            cli::show_upgrade_info(&load()?)?;
            Ok(exit_code::OK)
        }
        Command::InitVault {
            passphrase_file,
            no_import,
        } => {
            let config = load()?;
            palisade_supervisor::commands::init_vault::run(
                &config,
                passphrase_file.as_deref(),
                !no_import,
            )?;
            Ok(exit_code::OK)
        }
        Command::ImportAwsCredentials {
            from_env,
            profile,
            profile_file,
        } => {
            let config = load()?;
            let vault = config.vault.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "no [vault] is configured: the AWS key is sealed in the vault (docs/eip.md)"
                )
            })?;
            let source = if from_env {
                palisade_supervisor::eip::credentials::ImportSource::Environment
            } else {
                let file = profile_file
                    .or_else(palisade_supervisor::config::default_profile_file)
                    .ok_or_else(|| anyhow::anyhow!("HOME is not set: give --profile-file"))?;
                palisade_supervisor::eip::credentials::ImportSource::Profile {
                    file,
                    name: profile.unwrap_or_else(|| "default".into()),
                }
            };
            let (key_id, path) =
                palisade_supervisor::eip::credentials::import(&vault.dir, &source)?;
            println!(
                "AWS access key {key_id} sealed in {}; it is usable only while the vault is unlocked",
                path.display()
            );
            Ok(exit_code::OK)
        }
        Command::RestoreState { passphrase_file } => {
            let config = load()?;
            palisade_supervisor::commands::restore_state::run(&config, passphrase_file.as_deref())?;
            Ok(exit_code::OK)
        }
        Command::Run {
            passphrase_fd,
            accept_unreachable_stores,
            args,
        } => {
            let config = load()?;
            // Read an inherited descriptor now, before the runtime opens
            // descriptors of its own.
            let passphrase = palisade_supervisor::passphrase::unattended(
                passphrase_fd,
                config
                    .vault
                    .as_ref()
                    .and_then(|vault| vault.passphrase_file.as_deref()),
            );
            // One thread: children are spawned from the thread that lives
            // as long as the process, which PR_SET_PDEATHSIG requires.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // Blocking-pool threads use the vault's keys too.
                .on_thread_start(|| {
                    if let Err(error) =
                        palisade_supervisor::vault::exclude_thread_stack_from_dumps()
                    {
                        tracing::warn!("{error}");
                    }
                })
                .build()?;
            let outcome = runtime.block_on(async {
                let shutdown = shutdown_signals()?;
                run(
                    RunOptions {
                        config,
                        daemon_args: args,
                        output: OutputTarget::Inherit,
                        passphrase,
                        accept_unreachable_stores,
                    },
                    shutdown,
                )
                .await
            })?;
            tracing::info!(?outcome, "palisade-supervisor exiting");
            Ok(match outcome {
                RunOutcome::Shutdown
                | RunOutcome::DaemonExitedCleanly
                | RunOutcome::UpgradedWithoutRestart
                | RunOutcome::HostShutdown => exit_code::OK,
                RunOutcome::CrashLoop { .. } => exit_code::CRASH_LOOP,
                RunOutcome::RefusedToStart => exit_code::STATE_BEHIND_BACKUP,
                RunOutcome::Failed(reason) => {
                    eprintln!("palisade-supervisor: {reason}");
                    exit_code::ERROR
                }
            })
        }
    }
}
