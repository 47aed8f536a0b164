//! SSH pieces shared by `palisade-supervisor` (its tunnels) and
//! `palisade-ctl` (remote mode through a bastion):
//!
//! - [`host_key`]: deciding whether a host key is the pinned one;
//! - [`dial`]: one authenticated SSH connection to a bastion, used to open
//!   `direct-streamlocal` channels to Unix sockets there;
//! - [`agent`]: signing with a key held by ssh-agent (an operator's key
//!   that has a passphrase);
//! - [`ciphers`]: the AEAD ciphers offered, AES-GCM first where the CPU
//!   has AES instructions.
//!
//! Invariant: no code path here accepts an SSH host key that is not pinned
//! by fingerprint or known_hosts (trust-on-first-use only where the caller
//! configures it explicitly).
#![forbid(unsafe_code)]

pub mod agent;
pub mod ciphers;
pub mod dial;
pub mod host_key;
