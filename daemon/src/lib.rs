//! What both daemons, `palisade-supervisor` and `palisade-bastion`, need
//! from the host they run on:
//!
//! - [`socket`]: binding a Unix socket that only its owner (and, where the
//!   caller allows, its group) can reach, replacing a stale socket but never
//!   a live one or another file;
//! - [`systemd`]: `Type=notify` notifications (READY, STATUS, STOPPING,
//!   WATCHDOG) that never block;
//! - [`durable`]: file operations that survive a crash: fsync of a
//!   directory, atomic writes (replace, or never clobber), durable appends,
//!   renames that never replace;
//! - [`metrics`]: the `/metrics` endpoint (a Prometheus registry over a
//!   small, bounded HTTP/1 server).
#![forbid(unsafe_code)]

pub mod durable;
pub mod metrics;
pub mod retry;
pub mod socket;
pub mod systemd;
