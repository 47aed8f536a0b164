//! palisade-supervisor: runs gaiad (or any Cosmos SDK daemon) under
//! supervision with Cosmovisor-compatible upgrades.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map.
//!
//! `unsafe` is denied everywhere except in [`sys`], the one small audited
//! module for the syscalls that have no safe wrapper.
#![deny(unsafe_code)]

pub mod backup;
pub mod backup_rpc;
pub mod cli;
pub mod config;
pub mod control;
pub mod data_backup;
pub mod download;
pub mod file_watch;
pub mod host_shutdown;
pub mod keys;
pub mod layout;
pub mod node_rpc;
pub mod output;
pub mod passphrase;
pub mod process;
pub mod restart_policy;
pub mod rpc;
pub mod run;
pub mod sign_state;
pub mod sys;
pub mod tunnel;
pub mod upgrade;
pub mod upgrade_plan;
pub mod upgrade_stage;
pub mod upgrade_watch;
pub mod vault;
