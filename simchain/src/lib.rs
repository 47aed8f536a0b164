//! Palisade's simulated chain: a stand-in for `gaiad` plus a CometBFT network.
//!
//! Two binaries share this library:
//!
//! - `simchain-net` ([`network`]): produces blocks on a timer, verifies every vote against the
//!   genesis keys, flags double signs and missed blocks, and serves the [`record::Record`].
//! - `simd` ([`node`]): a validator node with gaiad's command line, CometBFT's files
//!   ([`key`], [`sign_state`], [`node_config`], [`genesis`]) and RPC JSON, FilePV's double-sign
//!   rules, the SDK's upgrade halt ([`upgrade`]) and log formats ([`console_log`]), and
//!   CometBFT's peering rules ([`p2p`], run by [`switch`]).
//!
//! Wire formats are in [`protocol`], sign bytes in [`vote`], the CometBFT RPC JSON both
//! binaries serve (`/status`, `/commit`) in [`rpc`]. [`testkit`] drives both binaries
//! from other crates' tests.
//!
//! Invariants: [`sign_state`] and [`upgrade`] decide without I/O; the node persists its sign
//! state before any vote leaves the process; the network never waits for a node.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod console_log;
pub mod genesis;
pub mod http;
pub mod key;
pub mod network;
pub mod node;
pub mod node_config;
pub mod p2p;
pub mod protocol;
pub mod record;
pub mod rpc;
pub mod sign_state;
pub mod switch;
pub mod testkit;
pub mod upgrade;
pub mod vote;
