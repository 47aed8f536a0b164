//! A CometBFT RPC, read-only: where the node listens (`[rpc] laddr` in
//! `config/config.toml`), its latest committed height (`/status`), and the
//! commits of recent blocks (`/commit`, read by [`commit`]).
//!
//! [`NodeRpc`] holds a manually scheduled upgrade (`add-upgrade
//! --upgrade-height`) until the node actually reaches the height; an
//! unreachable node is `None`, never an error that stops supervision.
//! [`ChainRpc`] works with any base URL — the node's own RPC, or a sentry's
//! reached through a tunnel's local forward — and [`signed_in_last`] is the
//! chain's guard for a failover: whether a validator's precommits are in
//! the last K blocks. Every call is bounded: [`CHAIN_RPC_TIMEOUT`] for
//! connect, request and body together, and a size bound on every body.

pub mod commit;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use commit::{CommitError, CommitView, MAX_COMMIT_BODY_BYTES, parse_commit};

/// Bound on one chain RPC call: connecting, sending and reading the whole answer.
pub const CHAIN_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/status` body read.
pub const MAX_STATUS_BODY_BYTES: usize = 256 * 1024;
/// Most heights [`signed_in_last`] reads (one `/commit` each).
pub const MAX_SIGNED_WINDOW: u64 = 1000;

/// Why a chain RPC call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainRpcError {
    /// Connecting, sending or reading failed, or took longer than [`CHAIN_RPC_TIMEOUT`].
    #[error("{url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The answer is larger than allowed.
    #[error("{url}: answer over {limit} bytes")]
    TooLarge {
        /// The URL asked.
        url: String,
        /// The bound.
        limit: usize,
    },
    /// `/status` could not be read.
    #[error("{url}: {reason}")]
    Status {
        /// The URL asked.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `/commit` could not be read, or the node answered an error.
    #[error("{url}: {source}")]
    Commit {
        /// The URL asked.
        url: String,
        /// What is wrong.
        source: CommitError,
    },
    /// The node answered a commit for another height than asked.
    #[error("{url}: asked for height {asked}, got {got}")]
    WrongHeight {
        /// The URL asked.
        url: String,
        /// Height asked for.
        asked: u64,
        /// Height answered.
        got: u64,
    },
    /// A window of more than [`MAX_SIGNED_WINDOW`] heights was asked for.
    #[error("a window of {0} heights is over the bound of {MAX_SIGNED_WINDOW}")]
    WindowTooLarge(u64),
}

#[derive(Deserialize)]
struct StatusEnvelope {
    result: StatusResult,
}

#[derive(Deserialize)]
struct StatusResult {
    sync_info: SyncInfo,
}

#[derive(Deserialize)]
struct SyncInfo {
    latest_block_height: String,
    /// CometBFT v0.34–v0.38 `rpc/core/types/responses.go` `SyncInfo.CatchingUp`
    /// (`"catching_up": false`); absent in answers of other shapes.
    #[serde(default)]
    catching_up: Option<bool>,
}

/// What `/status` says about the node's sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStatus {
    /// The latest committed height.
    pub height: u64,
    /// Whether the node is still catching up (block sync or state sync);
    /// `None` when the answer does not say.
    pub catching_up: Option<bool>,
}

/// `result.sync_info.latest_block_height` of a `/status` answer (a decimal string, as
/// `libs/json` writes int64).
pub fn parse_latest_height(body: &[u8]) -> Result<u64, String> {
    parse_sync_status(body).map(|status| status.height)
}

/// `result.sync_info`'s height and `catching_up` of a `/status` answer.
pub fn parse_sync_status(body: &[u8]) -> Result<SyncStatus, String> {
    let status: StatusEnvelope =
        serde_json::from_slice(body).map_err(|e| format!("/status answer is malformed: {e}"))?;
    let text = status.result.sync_info.latest_block_height;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "/status latest_block_height is not a decimal height: {text:?}"
        ));
    }
    let height = text
        .parse()
        .map_err(|_| format!("/status latest_block_height is out of range: {text:?}"))?;
    Ok(SyncStatus {
        height,
        catching_up: status.result.sync_info.catching_up,
    })
}

/// A read-only client of one CometBFT RPC (`http://host:port`).
#[derive(Debug, Clone)]
pub struct ChainRpc {
    client: reqwest::Client,
    base_url: String,
}

impl ChainRpc {
    /// A client of the RPC at `base_url` (`http://127.0.0.1:26657`; a trailing `/` is fine).
    pub fn new(base_url: &str) -> ChainRpc {
        let client = reqwest::Client::builder()
            .timeout(CHAIN_RPC_TIMEOUT)
            .connect_timeout(CHAIN_RPC_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        ChainRpc {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// The base URL asked.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// GET `path`, reading at most `limit` bytes of the body whatever the status (CometBFT
    /// answers errors with HTTP 500 and a JSON-RPC error body).
    async fn get(&self, path: &str, limit: usize) -> Result<(String, Vec<u8>), ChainRpcError> {
        let url = format!("{}{path}", self.base_url);
        let http = |source| ChainRpcError::Http {
            url: url.clone(),
            source,
        };
        let mut response = self.client.get(&url).send().await.map_err(http)?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > limit {
                return Err(ChainRpcError::TooLarge { url, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((url, body))
    }

    /// The latest committed height (`/status`).
    pub async fn latest_height(&self) -> Result<u64, ChainRpcError> {
        self.sync_status().await.map(|status| status.height)
    }

    /// The latest committed height and whether the node is catching up (`/status`).
    pub async fn sync_status(&self) -> Result<SyncStatus, ChainRpcError> {
        let (url, body) = self.get("/status", MAX_STATUS_BODY_BYTES).await?;
        parse_sync_status(&body).map_err(|reason| ChainRpcError::Status { url, reason })
    }

    /// The commit of `height` (`/commit?height=H`), or of the latest block with `None`.
    pub async fn commit(&self, height: Option<u64>) -> Result<CommitView, ChainRpcError> {
        let path = match height {
            Some(height) => format!("/commit?height={height}"),
            None => "/commit".to_string(),
        };
        let (url, body) = self.get(&path, MAX_COMMIT_BODY_BYTES).await?;
        let view = parse_commit(&body).map_err(|source| ChainRpcError::Commit {
            url: url.clone(),
            source,
        })?;
        match height {
            Some(asked) if asked != view.height => Err(ChainRpcError::WrongHeight {
                url,
                asked,
                got: view.height,
            }),
            _ => Ok(view),
        }
    }
}

/// What the last K commits say about one validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedWindow {
    /// The latest committed height when the window was read.
    pub latest: u64,
    /// The heights read, ascending: the last K up to `latest` (fewer near genesis).
    pub heights_checked: Vec<u64>,
    /// Heights whose commit holds the validator's precommit for the block (flag 2).
    pub signed_heights: Vec<u64>,
    /// Heights where it precommitted nil (flag 3): its key signed, not for the block.
    pub nil_heights: Vec<u64>,
}

impl SignedWindow {
    /// Whether the validator's key signed a precommit anywhere in the window (for the block or
    /// for nil): the failover guard must see `false` before another host may sign.
    pub fn key_active(&self) -> bool {
        !self.signed_heights.is_empty() || !self.nil_heights.is_empty()
    }
}

/// Reads the last `k` commits at `base_url` and reports where `validator_address` (hex, any
/// case) precommitted. Any failure — unreachable, a pruned height, a malformed answer — is an
/// error: absence is only ever concluded from commits actually read.
pub async fn signed_in_last(
    base_url: &str,
    validator_address: &str,
    k: u64,
) -> Result<SignedWindow, ChainRpcError> {
    if k > MAX_SIGNED_WINDOW {
        return Err(ChainRpcError::WindowTooLarge(k));
    }
    let rpc = ChainRpc::new(base_url);
    let latest = rpc.latest_height().await?;
    let first = latest.saturating_sub(k).saturating_add(1).max(1);
    let mut window = SignedWindow {
        latest,
        heights_checked: Vec::new(),
        signed_heights: Vec::new(),
        nil_heights: Vec::new(),
    };
    if k == 0 {
        return Ok(window);
    }
    for height in first..=latest {
        let view = rpc.commit(Some(height)).await?;
        window.heights_checked.push(height);
        if view
            .signed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(validator_address))
        {
            window.signed_heights.push(height);
        } else if view
            .nil_voted
            .iter()
            .any(|a| a.eq_ignore_ascii_case(validator_address))
        {
            window.nil_heights.push(height);
        }
    }
    Ok(window)
}

/// `http://host:port` from `config/config.toml`'s `[rpc] laddr`
/// (`tcp://127.0.0.1:26657`); `None` when absent or not TCP.
pub fn rpc_base_url(daemon_home: &Path) -> Option<String> {
    let text = std::fs::read_to_string(daemon_home.join("config").join("config.toml")).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    let laddr = value.get("rpc")?.get("laddr")?.as_str()?;
    let host_port = laddr.strip_prefix("tcp://")?;
    // A node listening on all interfaces is reached on loopback.
    let host_port = host_port
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| host_port.to_string());
    Some(format!("http://{host_port}"))
}

/// Queries a node's `/status`.
pub struct NodeRpc {
    client: reqwest::Client,
    base_url: Option<String>,
}

impl NodeRpc {
    pub fn new(daemon_home: &Path) -> NodeRpc {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap_or_default();
        NodeRpc {
            client,
            base_url: rpc_base_url(daemon_home),
        }
    }

    /// `result.sync_info.latest_block_height`, if the node answers.
    pub async fn latest_height(&self) -> Option<u64> {
        let base = self.base_url.as_ref()?;
        let response = self
            .client
            .get(format!("{base}/status"))
            .send()
            .await
            .ok()?;
        let body = response.bytes().await.ok()?;
        if body.len() > MAX_STATUS_BODY_BYTES {
            return None;
        }
        parse_latest_height(&body).ok()
    }
}

/// Whether a plan at `plan_height` is due for a node whose latest
/// committed height is `node_height`: the upgrade takes effect *at* the
/// plan height, so the node must have committed the block before it.
pub fn plan_is_due(plan_height: u64, node_height: u64) -> bool {
    node_height + 1 >= plan_height
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_address_from_config_toml() {
        let cases = [
            (
                "[rpc]\nladdr = \"tcp://127.0.0.1:26657\"\n",
                Some("http://127.0.0.1:26657"),
            ),
            (
                "[rpc]\nladdr = \"tcp://0.0.0.0:26657\"\n",
                Some("http://127.0.0.1:26657"),
            ),
            ("[rpc]\nladdr = \"unix:///run/node.sock\"\n", None),
            ("moniker = \"x\"\n", None),
            ("not toml [", None),
        ];
        for (text, expected) in cases {
            let home = tempfile::tempdir().unwrap();
            std::fs::create_dir(home.path().join("config")).unwrap();
            std::fs::write(home.path().join("config/config.toml"), text).unwrap();
            assert_eq!(rpc_base_url(home.path()).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn latest_height_is_a_decimal_string() {
        let status = |height: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":-1,"result":{{"sync_info":{{"latest_block_height":{height}}}}}}}"#
            )
        };
        assert_eq!(parse_latest_height(status("\"42\"").as_bytes()), Ok(42));
        for bad in ["42", "\"\"", "\"-1\"", "\"4x\"", "null"] {
            assert!(
                parse_latest_height(status(bad).as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(parse_latest_height(b"{}").is_err());
    }

    #[test]
    fn catching_up_is_read_when_present() {
        let status = |extra: &str| {
            format!(r#"{{"result":{{"sync_info":{{"latest_block_height":"7"{extra}}}}}}}"#)
        };
        assert_eq!(
            parse_sync_status(status(r#","catching_up":true"#).as_bytes()),
            Ok(SyncStatus {
                height: 7,
                catching_up: Some(true)
            })
        );
        assert_eq!(
            parse_sync_status(status("").as_bytes()),
            Ok(SyncStatus {
                height: 7,
                catching_up: None
            })
        );
        assert!(parse_sync_status(status(r#","catching_up":"no""#).as_bytes()).is_err());
    }

    #[tokio::test]
    async fn a_window_over_the_bound_is_refused_before_any_call() {
        let error = signed_in_last("http://127.0.0.1:1", "AA", MAX_SIGNED_WINDOW + 1)
            .await
            .unwrap_err();
        assert!(matches!(error, ChainRpcError::WindowTooLarge(_)), "{error}");
    }

    #[test]
    fn due_when_the_previous_block_is_committed() {
        for (plan, node, due) in [
            (100, 98, false),
            (100, 99, true),
            (100, 100, true),
            (1, 0, true),
        ] {
            assert_eq!(plan_is_due(plan, node), due, "plan {plan} node {node}");
        }
    }
}
