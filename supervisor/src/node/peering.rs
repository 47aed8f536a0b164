//! gaiad's peering, from the bastion mesh: when `[[bastion]]`s name their
//! sentries, the supervisor writes the node's `[p2p]` so that it peers
//! with exactly those sentries, through the tunnels' local forwards.
//!
//! - `persistent_peers` = `<sentry node ID>@<forward's loopback address>`
//!   for every sentry, in configuration order. The addresses are local, so
//!   they stay the same when a bastion's public address changes (an Elastic
//!   IP rotation does not touch `config.toml`).
//! - `pex = false` (never learn or advertise other addresses: the validator
//!   talks to its sentries only) and `addr_book_strict = false` (loopback
//!   addresses are not routable, and a strict address book would drop them).
//! - `[consensus] double_sign_check_height` (`daemon.double-sign-check-height`):
//!   CometBFT's own last guard, which refuses to start signing while its
//!   key signed one of the last N blocks.
//!
//! CometBFT refuses a second connection to an IP it is already connected to
//! unless `allow_duplicate_ip` is on (`config/config.go`, the
//! `ConnDuplicateIPFilter` of `node/setup.go`, applied to dials too in
//! `p2p/transport.go`). Two sentries forwarded on one IP would leave the
//! validator with one: [`plan`] refuses that, naming the fix, rather than
//! weakening the filter. It also refuses a forward that would take a port
//! gaiad itself listens on.
//!
//! [`plan`] is pure; [`apply`] reads and writes `config.toml` through
//! [`super::config_toml`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::config_toml::{Change, ConfigToml, ConfigTomlError};
use crate::config::Config;

/// One sentry the node should peer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentry {
    /// The `[[bastion]]` it is behind (for messages).
    pub bastion: String,
    /// Its CometBFT node ID, lower-case hex.
    pub node_id: String,
    /// The local end of its forward.
    pub listen: SocketAddr,
}

/// What the node's `config.toml` says that matters to the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeP2p {
    /// `[p2p] allow_duplicate_ip` (CometBFT's default: `false`).
    pub allow_duplicate_ip: bool,
    /// `[p2p] laddr` and `[rpc] laddr`, as written (`tcp://0.0.0.0:26656`).
    pub listen_addresses: Vec<(&'static str, String)>,
}

/// The values to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peering {
    pub persistent_peers: String,
    pub double_sign_check_height: u64,
}

/// Why the peering cannot be written as configured. Nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeeringError {
    /// Two sentries share an IP while CometBFT's filter is on.
    #[error(
        "the sentries of bastions {} are forwarded on the same IP {ip}, and config.toml has \
         [p2p] allow_duplicate_ip = false: CometBFT would keep only one of them connected \
         (its duplicate-IP filter). Give each sentry its own loopback address (leave \
         sentry.listen out for the default 127.0.0.<2+n>:{}, or set e.g. \
         listen = \"127.0.0.3:{}\"), or set allow_duplicate_ip = true in config.toml",
        bastions.join(" and "),
        crate::config::DEFAULT_SENTRY_PORT,
        crate::config::DEFAULT_SENTRY_PORT
    )]
    DuplicateIp { ip: IpAddr, bastions: Vec<String> },
    /// A forward would take an address gaiad listens on.
    #[error(
        "the sentry forward of bastion {bastion} listens on {listen}, which gaiad's {what} \
         ({laddr}) takes too: choose another sentry.listen port"
    )]
    PortClash {
        bastion: String,
        listen: SocketAddr,
        what: &'static str,
        laddr: String,
    },
    /// `config.toml` itself.
    #[error("{0}")]
    ConfigToml(String),
}

impl From<ConfigTomlError> for PeeringError {
    fn from(error: ConfigTomlError) -> PeeringError {
        PeeringError::ConfigToml(error.to_string())
    }
}

/// The sentries of `config`'s `[[bastion]]`s.
pub fn sentries(config: &Config) -> Vec<Sentry> {
    config
        .tunnels
        .iter()
        .flat_map(|tunnels| tunnels.sentries())
        .map(|(bastion, sentry)| Sentry {
            bastion: bastion.to_owned(),
            node_id: sentry.node_id.clone(),
            listen: sentry.listen,
        })
        .collect()
}

/// What to write for `sentries` on a node whose config says `node`.
pub fn plan(
    sentries: &[Sentry],
    double_sign_check_height: u64,
    node: &NodeP2p,
) -> Result<Peering, PeeringError> {
    if !node.allow_duplicate_ip {
        let mut by_ip: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for sentry in sentries {
            by_ip
                .entry(sentry.listen.ip())
                .or_default()
                .push(sentry.bastion.clone());
        }
        if let Some((ip, bastions)) = by_ip.into_iter().find(|(_, b)| b.len() > 1) {
            return Err(PeeringError::DuplicateIp { ip, bastions });
        }
    }
    for sentry in sentries {
        for (what, laddr) in &node.listen_addresses {
            if let Some(taken) = tcp_listen_address(laddr)
                && taken.port() == sentry.listen.port()
                && (taken.ip().is_unspecified() || taken.ip() == sentry.listen.ip())
            {
                return Err(PeeringError::PortClash {
                    bastion: sentry.bastion.clone(),
                    listen: sentry.listen,
                    what,
                    laddr: laddr.clone(),
                });
            }
        }
    }
    Ok(Peering {
        persistent_peers: sentries
            .iter()
            .map(|sentry| format!("{}@{}", sentry.node_id, sentry.listen))
            .collect::<Vec<_>>()
            .join(","),
        double_sign_check_height,
    })
}

/// `tcp://host:port` (CometBFT's laddr form) as a socket address.
fn tcp_listen_address(laddr: &str) -> Option<SocketAddr> {
    laddr.strip_prefix("tcp://").unwrap_or(laddr).parse().ok()
}

/// Write the peering of `config`'s sentries into the node's `config.toml`
/// (nothing when no `[[bastion]]` names a sentry); the changes made.
pub fn apply(config: &Config) -> Result<Vec<Change>, PeeringError> {
    let sentries = sentries(config);
    if sentries.is_empty() {
        return Ok(Vec::new());
    }
    apply_to(
        &config.daemon_home,
        &sentries,
        config.double_sign_check_height,
    )
}

/// What [`apply`] would write, without writing (`None`: peering not
/// managed), or why it would refuse.
pub fn preview(config: &Config) -> Result<Option<Peering>, PeeringError> {
    let sentries = sentries(config);
    if sentries.is_empty() {
        return Ok(None);
    }
    let toml = ConfigToml::open(&config.daemon_home)?;
    plan(&sentries, config.double_sign_check_height, &node_p2p(&toml)).map(Some)
}

fn node_p2p(toml: &ConfigToml) -> NodeP2p {
    let text = |table, key| {
        toml.get(Some(table), key)
            .and_then(|value| value.as_str())
            .map(str::to_owned)
    };
    NodeP2p {
        allow_duplicate_ip: toml
            .get(Some("p2p"), "allow_duplicate_ip")
            .and_then(toml_edit::Value::as_bool)
            .unwrap_or(false),
        listen_addresses: [
            ("P2P laddr", text("p2p", "laddr")),
            ("RPC laddr", text("rpc", "laddr")),
        ]
        .into_iter()
        .filter_map(|(what, laddr)| laddr.map(|laddr| (what, laddr)))
        .collect(),
    }
}

fn apply_to(
    daemon_home: &Path,
    sentries: &[Sentry],
    double_sign_check_height: u64,
) -> Result<Vec<Change>, PeeringError> {
    let mut toml = ConfigToml::open(daemon_home)?;
    let peering = plan(sentries, double_sign_check_height, &node_p2p(&toml))?;
    toml.set(Some("p2p"), "persistent_peers", peering.persistent_peers)?;
    toml.set(Some("p2p"), "pex", false)?;
    toml.set(Some("p2p"), "addr_book_strict", false)?;
    toml.set(
        Some("consensus"),
        "double_sign_check_height",
        i64::try_from(peering.double_sign_check_height).unwrap_or(i64::MAX),
    )?;
    Ok(toml.save()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn sentry(bastion: &str, node_id: &str, listen: &str) -> Sentry {
        Sentry {
            bastion: bastion.into(),
            node_id: node_id.into(),
            listen: listen.parse().unwrap(),
        }
    }

    fn node(allow_duplicate_ip: bool, laddrs: &[(&'static str, &str)]) -> NodeP2p {
        NodeP2p {
            allow_duplicate_ip,
            listen_addresses: laddrs.iter().map(|(w, l)| (*w, l.to_string())).collect(),
        }
    }

    #[test]
    fn plans_table() {
        let default_node = node(
            false,
            &[
                ("P2P laddr", "tcp://0.0.0.0:26656"),
                ("RPC laddr", "tcp://127.0.0.1:26657"),
            ],
        );
        let two = [
            sentry("ba", A, "127.0.0.2:26756"),
            sentry("bb", B, "127.0.0.3:26756"),
        ];
        let same_ip = [
            sentry("ba", A, "127.0.0.1:26701"),
            sentry("bb", B, "127.0.0.1:26702"),
        ];
        // (sentries, node, expected persistent_peers or error words)
        let on_26656 = [sentry("ba", A, "127.0.0.2:26656")];
        let on_rpc = [sentry("ba", A, "127.0.0.1:26657")];
        let other_ip = [sentry("ba", A, "127.0.0.2:26657")];
        let cases: Vec<(&[Sentry], NodeP2p, Result<String, &str>)> = vec![
            (
                &two,
                default_node.clone(),
                Ok(format!("{A}@127.0.0.2:26756,{B}@127.0.0.3:26756")),
            ),
            (
                &two[..1],
                default_node.clone(),
                Ok(format!("{A}@127.0.0.2:26756")),
            ),
            // The naive setup: refused, naming the filter and both fixes.
            (
                &same_ip,
                default_node.clone(),
                Err("same IP 127.0.0.1, and config.toml has [p2p] allow_duplicate_ip = false"),
            ),
            // With the filter off, the operator's choice stands.
            (
                &same_ip,
                node(true, &[]),
                Ok(format!("{A}@127.0.0.1:26701,{B}@127.0.0.1:26702")),
            ),
            // gaiad on 0.0.0.0:26656 holds that port on every loopback IP.
            (
                &on_26656,
                default_node.clone(),
                Err("which gaiad's P2P laddr (tcp://0.0.0.0:26656) takes too"),
            ),
            (
                &on_rpc,
                default_node.clone(),
                Err("RPC laddr (tcp://127.0.0.1:26657)"),
            ),
            // Same port on another specific IP: no clash.
            (&other_ip, default_node, Ok(format!("{A}@127.0.0.2:26657"))),
        ];
        for (sentries, node, expected) in cases {
            let got = plan(sentries, 10, &node);
            match (got, expected) {
                (Ok(peering), Ok(peers)) => {
                    assert_eq!(peering.persistent_peers, peers);
                    assert_eq!(peering.double_sign_check_height, 10);
                }
                (Err(error), Err(words)) => {
                    let message = error.to_string();
                    assert!(message.contains(words), "{message}");
                }
                (got, expected) => panic!("{sentries:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn apply_writes_the_peering_and_only_once() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("config")).unwrap();
        let path = home.path().join("config/config.toml");
        std::fs::write(
            &path,
            "moniker = \"val\"\n[p2p]\nladdr = \"tcp://0.0.0.0:26656\"\npersistent_peers = \"\"\npex = true\n",
        )
        .unwrap();
        let sentries = [
            sentry("ba", A, "127.0.0.2:26756"),
            sentry("bb", B, "127.0.0.3:26756"),
        ];
        let changes = apply_to(home.path(), &sentries, 10).unwrap();
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "p2p.persistent_peers",
                "p2p.pex",
                "p2p.addr_book_strict",
                "consensus.double_sign_check_height"
            ]
        );
        let written: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(
            written["p2p"]["persistent_peers"].as_str().unwrap(),
            format!("{A}@127.0.0.2:26756,{B}@127.0.0.3:26756")
        );
        assert_eq!(written["p2p"]["pex"].as_bool(), Some(false));
        assert_eq!(written["moniker"].as_str(), Some("val"));
        assert!(apply_to(home.path(), &sentries, 10).unwrap().is_empty());

        // A refusal writes nothing.
        let before = std::fs::read_to_string(&path).unwrap();
        let clash = [sentry("ba", A, "127.0.0.2:26656")];
        assert!(apply_to(home.path(), &clash, 10).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}
