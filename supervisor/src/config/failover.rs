//! `[failover]`: two or more hosts for one validator, exactly one of them
//! signing (see `docs/failover.md`).
//!
//! ```toml
//! [failover]
//! host-id = "val-a"                          # this host; unique among the hosts
//! peers = ["val-b"]                          # the other hosts of this validator
//! etcd-endpoints = ["http://127.0.0.1:23790", "http://127.0.0.1:23791", "http://127.0.0.1:23792"]
//! chain-rpc = ["http://127.0.0.1:26757", "http://127.0.0.1:26758"]   # sentries' CometBFT RPC,
//!                                            # through this host's tunnels (one URL or several)
//! # key-prefix = "/palisade/<id of the vault's backup key>"
//! # lease-ttl = "10s"          # whole seconds, 2 to 300
//! # fence-margin = "3s"        # stop signing this long before the lease can expire
//! # poll-interval = "500ms"    # how often a standby looks at etcd
//! # chain-guard-blocks = 5     # K: the validator's key must be absent from the last K commits
//! # takeover = "auto"          # or "manual": only a planned handoff moves the validator
//! # handoff-timeout = "60s"    # how long a handoff record stays usable
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::Resolver;

/// Most peers in `failover.peers`.
pub const MAX_PEERS: usize = 8;
/// Largest `chain-guard-blocks` (the guard reads one commit per block).
pub const MAX_GUARD_BLOCKS: u64 = 100;

/// `[failover]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFailover {
    pub host_id: Option<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    pub chain_rpc: Option<OneOrMany>,
    pub key_prefix: Option<String>,
    pub lease_ttl: Option<String>,
    pub fence_margin: Option<String>,
    pub poll_interval: Option<String>,
    pub chain_guard_blocks: Option<u64>,
    pub takeover: Option<String>,
    pub handoff_timeout: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Most URLs in `failover.chain-rpc`.
pub const MAX_CHAIN_RPC: usize = 8;

/// Whether a standby takes over by itself when the primary's lease expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverMode {
    /// After the lease expired and the chain guard passed.
    Auto,
    /// Never by itself: only a planned handoff (`failover.handoff`) moves
    /// the validator.
    Manual,
}

impl TakeoverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoverMode::Auto => "auto",
            TakeoverMode::Manual => "manual",
        }
    }
}

/// The validated `[failover]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    pub host_id: String,
    pub peers: Vec<String>,
    pub etcd_endpoints: Vec<String>,
    /// Base URLs of CometBFT RPCs that show this host the chain (sentries',
    /// through this host's own tunnels), tried in order.
    pub chain_rpc: Vec<String>,
    /// `None`: derived from the vault's backup key at start.
    pub key_prefix: Option<String>,
    pub lease_ttl: Duration,
    pub fence_margin: Duration,
    pub poll_interval: Duration,
    pub chain_guard_blocks: u64,
    pub takeover: TakeoverMode,
    pub handoff_timeout: Duration,
}

/// Whether `id` can name a host: 1–64 of `A–Z a–z 0–9 . _ -`.
pub fn valid_host_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    matches!(rest, Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace))
}

pub(super) fn validate_failover(
    r: &mut Resolver<'_>,
    raw: Option<RawFailover>,
    vault: bool,
) -> Option<FailoverSettings> {
    let raw = raw?;
    let start = r.issues.len();
    if !vault {
        let origin = r.file_origin("failover");
        r.report(
            origin,
            "failover needs a [vault]: the hosts share its keys and its signed backups, and \
             handoff records are signed with its key",
        );
    }
    let host_id = raw.host_id.unwrap_or_default();
    if !valid_host_id(&host_id) {
        let origin = r.file_origin("failover.host-id");
        r.report(
            origin,
            format!(
                "'{host_id}' is not a host id: 1 to 64 letters, digits, '.', '_' or '-' \
                 (this host's name among the validator's hosts, e.g. \"val-a\")"
            ),
        );
    }
    if raw.peers.is_empty() {
        let origin = r.file_origin("failover.peers");
        r.report(
            origin,
            "must name at least one other host of this validator (e.g. [\"val-b\"])",
        );
    }
    if raw.peers.len() > MAX_PEERS {
        let origin = r.file_origin("failover.peers");
        r.report(origin, format!("has more than {MAX_PEERS} hosts"));
    }
    for (index, peer) in raw.peers.iter().enumerate() {
        let origin = r.file_origin("failover.peers");
        if !valid_host_id(peer) {
            r.report(origin, format!("'{peer}' is not a host id"));
        } else if *peer == host_id {
            r.report(origin, format!("'{peer}' is this host's own id"));
        } else if raw.peers[..index].contains(peer) {
            r.report(origin, format!("'{peer}' is listed twice"));
        }
    }
    if raw.etcd_endpoints.is_empty() {
        let origin = r.file_origin("failover.etcd-endpoints");
        r.report(
            origin,
            "must list the etcd members (http://host:port each, usually local forwards \
             through the tunnels)",
        );
    }
    for endpoint in &raw.etcd_endpoints {
        if !valid_http_url(endpoint) {
            let origin = r.file_origin("failover.etcd-endpoints");
            r.report(
                origin,
                format!("'{endpoint}' is not an http:// or https:// URL"),
            );
        }
    }
    let chain_rpc = match raw.chain_rpc {
        None => Vec::new(),
        Some(OneOrMany::One(url)) => vec![url],
        Some(OneOrMany::Many(urls)) => urls,
    };
    if chain_rpc.is_empty() || chain_rpc.len() > MAX_CHAIN_RPC {
        let origin = r.file_origin("failover.chain-rpc");
        r.report(
            origin,
            format!(
                "must name 1 to {MAX_CHAIN_RPC} CometBFT RPC URLs through which this host sees \
                 the chain (sentries', through its tunnels)"
            ),
        );
    }
    for url in &chain_rpc {
        if !valid_http_url(url) {
            let origin = r.file_origin("failover.chain-rpc");
            r.report(
                origin,
                format!(
                    "'{url}' is not an http:// or https:// URL: a CometBFT RPC through which \
                     this host sees the chain (a sentry's, through its tunnel)"
                ),
            );
        }
    }
    if let Some(prefix) = &raw.key_prefix
        && (!prefix.starts_with('/') || prefix.len() > 200 || prefix.ends_with('/'))
    {
        let origin = r.file_origin("failover.key-prefix");
        r.report(
            origin,
            format!("'{prefix}' must start with '/', not end with '/', and be at most 200 bytes"),
        );
    }
    let lease_ttl = r.duration(
        None,
        "failover.lease-ttl",
        raw.lease_ttl.as_deref(),
        Duration::from_secs(10),
    );
    if lease_ttl.subsec_nanos() != 0 || !(2..=300).contains(&lease_ttl.as_secs()) {
        let origin = r.file_origin("failover.lease-ttl");
        r.report(origin, "must be whole seconds between 2s and 300s");
    }
    let fence_margin = r.duration(
        None,
        "failover.fence-margin",
        raw.fence_margin.as_deref(),
        Duration::from_secs(3),
    );
    if fence_margin < Duration::from_millis(500) || fence_margin * 2 > lease_ttl {
        let origin = r.file_origin("failover.fence-margin");
        r.report(
            origin,
            format!(
                "must be at least 500ms and at most half of lease-ttl ({}): the primary \
                 stops signing this long before its lease can expire",
                humantime::format_duration(lease_ttl)
            ),
        );
    }
    let poll_interval = r.duration(
        None,
        "failover.poll-interval",
        raw.poll_interval.as_deref(),
        Duration::from_millis(500),
    );
    if poll_interval < Duration::from_millis(100) || poll_interval > lease_ttl {
        let origin = r.file_origin("failover.poll-interval");
        r.report(origin, "must be between 100ms and lease-ttl");
    }
    let chain_guard_blocks = raw.chain_guard_blocks.unwrap_or(5);
    if !(1..=MAX_GUARD_BLOCKS).contains(&chain_guard_blocks) {
        let origin = r.file_origin("failover.chain-guard-blocks");
        r.report(origin, format!("must be between 1 and {MAX_GUARD_BLOCKS}"));
    }
    let takeover = match raw.takeover.as_deref() {
        None | Some("auto") => TakeoverMode::Auto,
        Some("manual") => TakeoverMode::Manual,
        Some(other) => {
            let origin = r.file_origin("failover.takeover");
            r.report(origin, format!("'{other}' is not \"auto\" or \"manual\""));
            TakeoverMode::Auto
        }
    };
    let handoff_timeout = r.duration(
        None,
        "failover.handoff-timeout",
        raw.handoff_timeout.as_deref(),
        Duration::from_secs(60),
    );
    if !(Duration::from_secs(5)..=Duration::from_secs(3600)).contains(&handoff_timeout) {
        let origin = r.file_origin("failover.handoff-timeout");
        r.report(origin, "must be between 5s and 1h");
    }
    if r.issues.len() > start {
        return None;
    }
    Some(FailoverSettings {
        host_id,
        peers: raw.peers,
        etcd_endpoints: raw.etcd_endpoints,
        chain_rpc: chain_rpc
            .iter()
            .map(|url| url.trim_end_matches('/').to_string())
            .collect(),
        key_prefix: raw.key_prefix,
        lease_ttl,
        fence_margin,
        poll_interval,
        chain_guard_blocks,
        takeover,
        handoff_timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::load;

    const VAULT: &str = "[vault]\nswap = \"refuse\"\n";
    const GOOD: &str = "[failover]\nhost-id = \"val-a\"\npeers = [\"val-b\"]\n\
        etcd-endpoints = [\"http://127.0.0.1:2379\"]\nchain-rpc = \"http://127.0.0.1:26657/\"\n";

    #[test]
    fn failover_settings_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let good = load(dir.path(), &format!("{VAULT}{GOOD}")).unwrap();
        let failover = good.failover.unwrap();
        assert_eq!(failover.host_id, "val-a");
        assert_eq!(failover.chain_rpc, ["http://127.0.0.1:26657"]);
        let two = load(
            dir.path(),
            &format!(
                "{VAULT}{}",
                GOOD.replace(
                    "chain-rpc = \"http://127.0.0.1:26657/\"",
                    "chain-rpc = [\"http://127.0.0.1:1\", \"https://127.0.0.1:2/\"]",
                )
            ),
        )
        .unwrap();
        assert_eq!(
            two.failover.unwrap().chain_rpc,
            ["http://127.0.0.1:1", "https://127.0.0.1:2"]
        );
        assert_eq!(failover.lease_ttl.as_secs(), 10);
        assert_eq!(failover.fence_margin.as_secs(), 3);
        assert_eq!(failover.chain_guard_blocks, 5);
        assert_eq!(failover.takeover, super::TakeoverMode::Auto);
        assert!(load(dir.path(), VAULT).unwrap().failover.is_none());

        let cases: &[(&str, &[&str])] = &[
            (GOOD, &["failover needs a [vault]"]),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val a\"\npeers = [\"val-b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\n",
                &["failover.host-id", "'val a' is not a host id"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = []\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\n",
                &["failover.peers", "at least one other host"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"val-a\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\n",
                &["this host's own id"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\", \"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\n",
                &["listed twice"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"127.0.0.1:2379\"]\nchain-rpc = \"http://c\"\n",
                &["failover.etcd-endpoints", "not an http"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\n",
                &["failover.chain-rpc", "must name 1 to 8"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = [\"http://c\", \"tcp://d\"]\n",
                &["failover.chain-rpc", "'tcp://d' is not an http"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = []\n",
                &["failover.chain-rpc", "must name 1 to 8"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\nlease-ttl = \"1500ms\"\n",
                &["failover.lease-ttl", "whole seconds"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\nlease-ttl = \"4s\"\nfence-margin = \"3s\"\n",
                &["failover.fence-margin", "half of lease-ttl"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\nchain-guard-blocks = 0\n",
                &["failover.chain-guard-blocks"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\ntakeover = \"yes\"\n",
                &["failover.takeover", "\"auto\" or \"manual\""],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\npeers = [\"b\"]\netcd-endpoints = [\"http://e\"]\nchain-rpc = \"http://c\"\nkey-prefix = \"palisade\"\n",
                &["failover.key-prefix"],
            ),
            (
                "[vault]\nswap = \"refuse\"\n[failover]\nhost-id = \"val-a\"\nleader = true\n",
                &["unknown field", "leader"],
            ),
        ];
        for (text, words) in cases {
            let message = load(dir.path(), text).expect_err(text).to_string();
            for word in *words {
                assert!(message.contains(word), "{text:?}: {word:?} in {message}");
            }
        }
    }
}
