//! The node's CometBFT RPC, read-only: where it listens (`[rpc] laddr` in
//! `config/config.toml`) and its latest committed height (`/status`).
//!
//! Used to hold a manually scheduled upgrade (`add-upgrade
//! --upgrade-height`) until the node actually reaches the height. Every
//! call has a short timeout; an unreachable node is `None`, never an error
//! that stops supervision.

use std::path::Path;
use std::time::Duration;

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
        let body: serde_json::Value = response.json().await.ok()?;
        body.pointer("/result/sync_info/latest_block_height")?
            .as_str()?
            .parse()
            .ok()
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
