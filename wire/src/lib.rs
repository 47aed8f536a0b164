//! Types that cross a process boundary between Palisade's binaries.
//!
//! Invariant: this crate holds data shapes and the pure rules their values
//! follow (the control RPC's params validation, [`peer_text`]'s cleaning of
//! text a peer sent) — no I/O, no state, no
//! dependency heavier than serde. Anything serialized here is a stable
//! format: add fields with `#[serde(default)]`, never rename or repurpose
//! one.
#![forbid(unsafe_code)]

pub mod backup_store;
pub mod bench;
pub mod log_segment;
pub mod names;
pub mod peer_text;
pub mod rpc;
pub mod upgrade_record;
