//! Types that cross a process boundary between Palisade's binaries.
//!
//! Invariant: this crate holds data shapes only — no I/O, no policy. Anything
//! serialized here is a stable format: add fields with `#[serde(default)]`,
//! never rename or repurpose one.
#![forbid(unsafe_code)]

pub mod backup_store;
pub mod bench;
pub mod names;
pub mod rpc;
pub mod upgrade_record;
