//! The supervisor's lifecycle: one explicit state machine and the one
//! executor that performs its effects.
//!
//! - [`machine`] — pure: `Phase` × `Event` → next phase and `Action`s. No
//!   I/O, no clock, no JSON; table-tested over every phase, event and
//!   control command.
//! - [`executor`] — the only place that performs lifecycle effects
//!   (spawn, signal, timers, systemd notifications, the vault session,
//!   upgrades, restores, answers to commands), with one `select!` that
//!   always feeds the watchdog and always reads commands.
//! - [`command`] — what the control RPC asks of the executor and what it
//!   answers (typed; the control module maps them to the RPC).
//! - [`board`] — what the executor publishes for the control RPC to read.
//! - [`plans`] — which upgrade plans are new (the reads behind a plan
//!   event).
//! - [`run`] — setup (socket, tunnels, RPC server), then the executor.
//!
//! Dependencies point down: `run` → `executor` → `machine` and the
//! subsystems (`node`, `upgrade`, `vault`, `backup`, `tunnel`); `machine`
//! depends only on pure pieces (the restart policy, plan types); `board`
//! and `command` are leaves the control module may use.

pub mod board;
pub mod command;
mod executor;
pub(crate) mod machine;
mod plans;
mod run;

pub use machine::RunOutcome;
pub use run::{EXIT_CRASH_LOOP, RunOptions, ShutdownRequests, run, shutdown_signals};
