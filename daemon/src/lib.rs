//! What both daemons, `palisade-supervisor` and `palisade-bastion`, need
//! from the host they run on:
//!
//! - [`socket`]: binding a Unix socket that only its owner (and, where the
//!   caller allows, its group) can reach, replacing a stale socket but never
//!   a live one or another file;
//! - [`systemd`]: `Type=notify` notifications (READY, STATUS, STOPPING,
//!   WATCHDOG) that never block.
#![forbid(unsafe_code)]

pub mod socket;
pub mod systemd;
