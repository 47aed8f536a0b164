//! The supervised node (gaiad): spawning it into its own process group and
//! reaping it ([`process`]), draining its output without ever blocking it
//! ([`output`]), the pure restart decision after it exits
//! ([`restart_policy`]), the files its `config.toml` names ([`files`]) and
//! its read-only CometBFT RPC and the chain's record of who signed recent
//! blocks ([`rpc`]), its `config.toml` as an editable
//! document ([`config_toml`]) and the peering written into it from the
//! bastion mesh ([`peering`]).
//!
//! Only [`process`] sends signals or calls `waitpid`; only the supervision
//! executor decides when.

pub mod account;
pub(crate) mod config_toml;
pub mod files;
pub(crate) mod output;
pub(crate) mod peering;
pub mod process;
pub(crate) mod restart_policy;
pub mod rpc;
