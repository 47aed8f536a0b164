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
        let address = board(&watch.board).validator_address.clone();
        poll(chain, address.as_deref(), &mut next, &watch.stats).await;
    }
}

/// One poll: `/status`, then the commits of the new canonical heights
/// (from `next`), each read once; `next` moves past what was counted or
/// skipped.
async fn poll(chain: &ChainRpc, address: Option<&str>, next: &mut Option<u64>, stats: &ChainStats) {
    let status = match chain.sync_status().await {
        Ok(status) => status,
        Err(error) => {
            if stats.answering.swap(false, Ordering::Relaxed) {
                tracing::debug!(%error, "metrics: the node's RPC does not answer");
            }
            return;
        }
    };
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
    let (Some(address), false) = (address, status.catching_up == Some(true)) else {
        // Nothing to count yet (or now): start after what is there.
        *next = Some(last_canonical + 1);
        return;
    };
    let first = match *next {
        Some(next) => next.max(last_canonical.saturating_sub(MAX_HEIGHTS_PER_POLL - 1)),
        None => last_canonical,
    }
    .max(1);
    let mut height = first;
    while height <= last_canonical {
        match chain.commit(Some(height)).await {
            Ok(view) => {
                let counter = if view.has_precommit_from(address) {
                    &stats.signed
                } else {
                    &stats.missed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                height += 1;
            }
            Err(error) => {
                if let Some(lowest) = pruned_below(&error).filter(|lowest| *lowest > height) {
                    // Below the node's block store (pruned, or a restarted node that keeps
                    // no history): never readable, so not counted; go on from its base.
                    tracing::debug!(
                        height,
                        lowest,
                        "metrics: commits below the node's lowest height are skipped"
                    );
                    height = lowest;
                    continue;
                }
                // Read again at the next poll (counted once all the same).
                tracing::debug!(height, %error, "metrics: cannot read a commit");
                break;
            }
        }
    }
    *next = Some(height.max(first));
}

/// The node's lowest stored height when `error` is CometBFT's refusal of a height below it:
/// `height X is not available, lowest height is Y` (`getHeight` in cometbft
/// `rpc/core/env.go`, the same text from the simulated chain's `/commit`).
fn pruned_below(error: &crate::node::rpc::ChainRpcError) -> Option<u64> {
    let crate::node::rpc::ChainRpcError::Commit {
        source: crate::node::rpc::CommitError::Rpc { data, .. },
        ..
    } = error
    else {
        return None;
    };
    let (_, lowest) = data.split_once("is not available, lowest height is ")?;
    lowest.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const ADDRESS: &str = "E88187840CF563F6C0FB269BDF454EE054923426";

    /// A CometBFT RPC with a scripted height, catching-up flag and the
    /// heights the validator signed; it records the commits asked for.
    #[derive(Default)]
    struct FakeChain {
        height: u64,
        catching_up: bool,
        missed: BTreeSet<u64>,
        commits_asked: Vec<u64>,
        /// The lowest height the node keeps (0: all).
        base: u64,
    }

    fn commit_body(height: u64, signed: bool) -> String {
        let sig = if signed {
            format!(
                r#"{{"block_id_flag":2,"validator_address":"{ADDRESS}","timestamp":"2024-01-01T00:00:01Z","signature":"c2ln"}}"#
            )
        } else {
            r#"{"block_id_flag":1,"validator_address":"","timestamp":"0001-01-01T00:00:00Z","signature":null}"#.to_string()
        };
        format!(
            r#"{{"jsonrpc":"2.0","id":-1,"result":{{"signed_header":{{"header":{{"height":"{height}","time":"2024-01-01T00:00:00Z"}},"commit":{{"height":"{height}","round":0,"block_id":{{"hash":"AB","parts":{{"total":1,"hash":"CD"}}}},"signatures":[{sig}]}}}},"canonical":true}}}}"#
        )
    }

    async fn serve(chain: Arc<Mutex<FakeChain>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = {
                    let mut chain = chain.lock().unwrap();
                    if path == "/status" {
                        format!(
                            r#"{{"result":{{"sync_info":{{"latest_block_height":"{}","catching_up":{}}}}}}}"#,
                            chain.height, chain.catching_up
                        )
                    } else if let Some(height) = path.strip_prefix("/commit?height=") {
                        let height: u64 = height.parse().unwrap();
                        chain.commits_asked.push(height);
                        if height < chain.base {
                            format!(
                                r#"{{"jsonrpc":"2.0","id":-1,"error":{{"code":-32603,"message":"Internal error","data":"height {height} is not available, lowest height is {}"}}}}"#,
                                chain.base
                            )
                        } else {
                            commit_body(height, !chain.missed.contains(&height))
                        }
                    } else {
                        String::new()
                    }
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn each_new_canonical_height_is_read_once_and_counted() {
        let fake = Arc::new(Mutex::new(FakeChain {
            height: 10,
            missed: BTreeSet::from([11, 95]),
            ..FakeChain::default()
        }));
        let chain = ChainRpc::new(&serve(Arc::clone(&fake)).await);
        let stats = ChainStats::default();
        let mut next = None;
        let asked = |fake: &Arc<Mutex<FakeChain>>| -> Vec<u64> {
            std::mem::take(&mut fake.lock().unwrap().commits_asked)
        };

        // The address unknown: the height is shown, nothing is counted.
        poll(&chain, None, &mut next, &stats).await;
        assert_eq!(
            (stats.height(), stats.catching_up()),
            (Some(10), Some(false))
        );
        assert_eq!(asked(&fake), Vec::<u64>::new());
        assert_eq!(next, Some(10));

        // Known now: heights from there up to the latest minus one.
        fake.lock().unwrap().height = 13;
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        assert_eq!(asked(&fake), vec![10, 11, 12]);
        assert_eq!((stats.signed(), stats.missed()), (2, 1));

        // The same height again: no request.
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        assert_eq!(asked(&fake), Vec::<u64>::new());

        // Far behind: only the last MAX_HEIGHTS_PER_POLL are read.
        fake.lock().unwrap().height = 101;
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        let expected: Vec<u64> = (81..=100).collect();
        assert_eq!(asked(&fake), expected);
        assert_eq!((stats.signed(), stats.missed()), (2 + 19, 1 + 1));

        // Catching up: shown, not counted, and what it skipped stays skipped.
        {
            let mut chain = fake.lock().unwrap();
            chain.height = 110;
            chain.catching_up = true;
        }
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        assert_eq!(stats.catching_up(), Some(true));
        assert_eq!(asked(&fake), Vec::<u64>::new());
        {
            let mut chain = fake.lock().unwrap();
            chain.height = 112;
            chain.catching_up = false;
        }
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        assert_eq!(asked(&fake), vec![110, 111]);
        assert_eq!((stats.signed(), stats.missed()), (23, 2));
    }

    #[tokio::test]
    async fn heights_below_a_restarted_or_pruned_nodes_base_are_skipped() {
        let fake = Arc::new(Mutex::new(FakeChain {
            height: 20,
            base: 15,
            missed: BTreeSet::from([16]),
            ..FakeChain::default()
        }));
        let chain = ChainRpc::new(&serve(Arc::clone(&fake)).await);
        let stats = ChainStats::default();
        // Left at height 12 by an earlier poll (say, before the node restarted).
        let mut next = Some(12);
        poll(&chain, Some(ADDRESS), &mut next, &stats).await;
        let asked = std::mem::take(&mut fake.lock().unwrap().commits_asked);
        assert_eq!(asked, vec![12, 15, 16, 17, 18, 19]);
        assert_eq!((stats.signed(), stats.missed()), (4, 1));
        assert_eq!(next, Some(20));
    }

    #[tokio::test]
    async fn an_rpc_that_does_not_answer_hides_the_height() {
        let stats = ChainStats::default();
        stats.answering.store(true, Ordering::Relaxed);
        stats.height.store(5, Ordering::Relaxed);
        let mut next = Some(5);
        poll(
            &ChainRpc::new("http://127.0.0.1:1"),
            Some(ADDRESS),
            &mut next,
            &stats,
        )
        .await;
        assert_eq!((stats.height(), stats.catching_up()), (None, None));
        assert_eq!(next, Some(5));
    }
}
