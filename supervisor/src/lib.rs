//! palisade-supervisor: runs gaiad (or any Cosmos SDK daemon) under
//! supervision with Cosmovisor-compatible upgrades.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map.
//!
//! `unsafe` is denied everywhere except in [`sys`], the one small audited
//! module for the syscalls that have no safe wrapper.
#![deny(unsafe_code)]

pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod eip;
pub mod failover;
pub(crate) mod file_watch;
pub mod logs;
pub mod loki;
pub mod metrics;
pub mod node;
pub mod passphrase;
pub mod rpc;
pub mod sign_state;
pub mod supervision;
pub(crate) mod sys;
pub mod tunnel;
pub mod upgrade;
pub mod vault;
