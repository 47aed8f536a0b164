//! What the node's own RPC says, for the metrics: its height and
//! `catching_up` from `/status`, and for each new block whether the
//! validator's key signed it, from `/commit`.
//!
//! One task polls `/status` every [`POLL_INTERVAL`]; when the height has
//! moved it reads the commit of each new *canonical* height (up to the
//! latest minus one: the latest block's commit is only the node's seen
//! commit) exactly once, at most [`MAX_HEIGHTS_PER_POLL`] per poll — older
//! ones are skipped, not counted, so a node that was down or is catching
//! up never makes a burst of requests. Every call is bounded by
//! [`crate::node::rpc::CHAIN_RPC_TIMEOUT`]. Nothing waits on this task:
//! it only stores atomics the scrape reads.
//!
//! A block counts as signed when the commit holds the validator's
//! precommit, for the block or for nil, as CometBFT's x/slashing counts
//! liveness (`BlockIDFlagAbsent` is the only miss). Blocks are counted
//! only once the validator's address is known (the vault's key at the
//! first unlock, or the node's key file without a vault) and while the
//! node is not catching up.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::rpc::{ChainRpc, rpc_base_url};
use crate::supervision::board::{SharedBoard, board};

/// Pause between two `/status` polls.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Most commits read after one poll.
pub const MAX_HEIGHTS_PER_POLL: u64 = 20;

const CATCHING_UP_UNKNOWN: u8 = 2;

/// The chain's state as last read (written by the poll task only).
#[derive(Debug)]
pub struct ChainStats {
    answering: AtomicBool,
    height: AtomicU64,
    catching_up: AtomicU8,
    signed: AtomicU64,
    missed: AtomicU64,
}

impl Default for ChainStats {
    fn default() -> ChainStats {
        ChainStats {
            answering: AtomicBool::new(false),
            height: AtomicU64::new(0),
            catching_up: AtomicU8::new(CATCHING_UP_UNKNOWN),
            signed: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }
}

impl ChainStats {
    /// The latest height, while the node's RPC answers.
    pub fn height(&self) -> Option<u64> {
        self.answering
            .load(Ordering::Relaxed)
            .then(|| self.height.load(Ordering::Relaxed))
    }

    /// Whether the node is catching up, while its RPC answers and says.
    pub fn catching_up(&self) -> Option<bool> {
        if !self.answering.load(Ordering::Relaxed) {
            return None;
        }
        match self.catching_up.load(Ordering::Relaxed) {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// Blocks the validator signed, since the supervisor started.
    pub fn signed(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }

    /// Blocks the validator missed, since the supervisor started.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Where the task reads from.
pub struct ChainWatch {
    pub daemon_home: PathBuf,
    /// Holds the validator's address once known.
    pub board: SharedBoard,
    pub stats: Arc<ChainStats>,
}

/// Polls until `shutdown`.
pub fn spawn(watch: ChainWatch, shutdown: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(watch) => {}
        }
    });
}

async fn run(watch: ChainWatch) {
    let mut rpc: Option<ChainRpc> = None;
    // The next canonical height to read the commit of.
    let mut next: Option<u64> = None;
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if rpc.is_none() {
            // config.toml is read again until it names a TCP RPC.
            rpc = rpc_base_url(&watch.daemon_home).map(|url| ChainRpc::new(&url));
        }
        let Some(chain) = &rpc else { continue };
        let status = match chain.sync_status().await {
            Ok(status) => status,
            Err(error) => {
                if watch.stats.answering.swap(false, Ordering::Relaxed) {
                    tracing::debug!(%error, "metrics: the node's RPC does not answer");
                }
                continue;
            }
        };
        let stats = &watch.stats;
        stats.height.store(status.height, Ordering::Relaxed);
        stats.catching_up.store(
            match status.catching_up {
                Some(false) => 0,
                Some(true) => 1,
                None => CATCHING_UP_UNKNOWN,
            },
            Ordering::Relaxed,
        );
        stats.answering.store(true, Ordering::Relaxed);
        // Canonical commits: up to the latest height minus one.
        let last_canonical = status.height.saturating_sub(1);
        let address = board(&watch.board).validator_address.clone();
        let (Some(address), false) = (address, status.catching_up == Some(true)) else {
            // Nothing to count yet (or now): start after what is there.
            next = Some(last_canonical + 1);
            continue;
        };
        let first = match next {
            Some(next) => next.max(last_canonical.saturating_sub(MAX_HEIGHTS_PER_POLL - 1)),
            None => last_canonical,
        }
        .max(1);
        let mut height = first;
        while height <= last_canonical {
            match chain.commit(Some(height)).await {
                Ok(view) => {
                    let counter = if view.has_precommit_from(&address) {
                        &stats.signed
                    } else {
                        &stats.missed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    height += 1;
                }
                Err(error) => {
                    // Read again at the next poll (still once counted).
                    tracing::debug!(height, %error, "metrics: cannot read a commit");
                    break;
                }
            }
        }
        next = Some(height);
    }
}
