//! Cosmovisor-compatible upgrades: the folder layout and its atomic
//! `current` switch ([`layout`]), the plan formats ([`plan`]), watching
//! `data/upgrade-info.json` ([`watch`]), performing an upgrade step by step
//! with its record ([`perform`]), auto-download with checksums
//! ([`download`]), the pre-upgrade data snapshot ([`data_backup`]), and
//! upgrades staged ahead over the control RPC ([`stage`]).
//!
//! Only [`layout`] knows the folder layout; only [`plan`] knows the plan
//! formats; only [`download`] does HTTP. When an upgrade runs is decided by
//! the supervision machine; this module performs it.

pub mod data_backup;
pub mod download;
pub(crate) mod layout;
pub(crate) mod perform;
pub(crate) mod plan;
pub(crate) mod stage;
pub(crate) mod watch;
