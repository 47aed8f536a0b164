//! `[metrics]`: the supervisor's Prometheus endpoint (`docs/metrics.md`).
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9810"           # loopback only; no [metrics]: off
//! bastion-listen = "127.0.0.1:9810"   # optional: on every bastion's loopback, through its tunnel
//! ```
//!
//! The endpoint is on loopback only: the validator host has no public
//! address, and whoever scrapes it does so on the host itself or on a
//! bastion, where `bastion-listen` adds a reverse TCP forward (sshd's
//! `tcpip-forward`, like `remote-forwards`) to every `[[bastion]]`. That
//! address is on the bastion's loopback too, so only the bastion's own
//! Prometheus (or an SSH user there) reaches it.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Resolver;
use crate::tunnel::ReverseTcpForward;

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    /// Required: the loopback `address:port` the endpoint listens on.
    pub listen: Option<String>,
    /// Optional: the loopback `address:port` sshd listens on, on every
    /// bastion, forwarding to `listen`.
    pub bastion_listen: Option<String>,
}

/// The validated `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A loopback address with a port.
    pub listen: SocketAddr,
    /// Where each bastion's sshd listens for it (a loopback address and
    /// port), when forwarded.
    pub bastion_listen: Option<SocketAddr>,
}

impl MetricsSettings {
    /// The reverse forward `bastion-listen` adds to each bastion.
    pub fn bastion_forward(&self) -> Option<ReverseTcpForward> {
        self.bastion_listen.map(|remote| ReverseTcpForward {
            remote_address: remote.ip().to_string(),
            remote_port: remote.port(),
            local_target: self.listen,
        })
    }
}

/// Why an address is not a usable metrics address, or `Ok`.
pub fn loopback_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not an IP address and port (e.g. \"127.0.0.1:9810\")"))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "'{text}' is not a loopback address: the metrics are served on loopback only \
             (127.0.0.1 or ::1); scrape them on this host or through a bastion with \
             bastion-listen"
        ));
    }
    if address.port() == 0 {
        return Err(format!(
            "'{text}' has port 0: a fixed port is needed (Prometheus and the bastions' \
             forwards name it)"
        ));
    }
    Ok(address)
}

pub(super) fn validate_metrics(
    r: &mut Resolver<'_>,
    raw: Option<RawMetrics>,
) -> Option<MetricsSettings> {
    let raw = raw?;
    let listen = match raw.listen.as_deref().map(loopback_address) {
        Some(Ok(listen)) => Some(listen),
        Some(Err(reason)) => {
            let origin = r.file_origin("metrics.listen");
            r.report(origin, reason);
            None
        }
        None => {
            let origin = r.file_origin("metrics.listen");
            r.report(
                origin,
                "is required in [metrics] (e.g. \"127.0.0.1:9810\"); remove [metrics] to \
                 turn the endpoint off",
            );
            None
        }
    };
    let bastion_listen = match raw.bastion_listen.as_deref().map(loopback_address) {
        Some(Ok(address)) => Some(Some(address)),
        Some(Err(reason)) => {
            let origin = r.file_origin("metrics.bastion-listen");
            r.report(origin, reason);
            None
        }
        None => Some(None),
    };
    Some(MetricsSettings {
        listen: listen?,
        bastion_listen: bastion_listen?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::load;

    const FINGERPRINT: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    fn bastions(dir: &std::path::Path, remote_forwards: &str) -> String {
        let key = dir.join("tunnel_ed25519");
        std::fs::write(&key, "not parsed at load time").unwrap();
        let mut text = format!("[tunnel]\nkey-file = {key:?}\n");
        for name in ["b1", "b2"] {
            text.push_str(&format!(
                "[[bastion]]\nname = \"{name}\"\nhost = \"203.0.113.10\"\nuser = \"t\"\n\
                 host-key-fingerprints = [\"{FINGERPRINT}\"]\n{remote_forwards}\n"
            ));
        }
        text
    }

    #[test]
    fn no_section_is_off_and_bastion_listen_forwards_to_every_bastion() {
        let dir = tempfile::tempdir().unwrap();
        let config = load(dir.path(), "").unwrap();
        assert_eq!(config.metrics, None);
        assert!(
            config
                .describe()
                .contains(&("metrics".into(), "off (no [metrics])".into()))
        );
        let config = load(
            dir.path(),
            &format!(
                "[metrics]\nlisten = \"127.0.0.1:9810\"\nbastion-listen = \"127.0.0.1:9811\"\n{}",
                bastions(dir.path(), "")
            ),
        )
        .unwrap();
        assert!(config.describe().contains(&(
            "metrics.listen".into(),
            "http://127.0.0.1:9810/metrics".into()
        )));
        let metrics = config.metrics.unwrap();
        assert_eq!(metrics.listen, "127.0.0.1:9810".parse().unwrap());
        let tunnels = config.tunnels.unwrap();
        for bastion in &tunnels.bastions {
            let tunnel = tunnels.bastion_config(bastion, &config.rpc.socket);
            assert_eq!(
                tunnel.reverse_tcp_forwards,
                vec![ReverseTcpForward {
                    remote_address: "127.0.0.1".into(),
                    remote_port: 9811,
                    local_target: "127.0.0.1:9810".parse().unwrap(),
                }],
                "{}",
                bastion.name
            );
        }
    }

    #[test]
    fn bad_metrics_settings_are_refused_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let with_bastions = bastions(
            dir.path(),
            "remote-forwards = [{ listen = \"127.0.0.1:9811\", target = \"127.0.0.1:26660\" }]",
        );
        for (text, expected) in [
            ("[metrics]\n".to_string(), "metrics.listen`: is required"),
            (
                "[metrics]\nlisten = \"0.0.0.0:9810\"\n".into(),
                "metrics.listen`: '0.0.0.0:9810' is not a loopback address",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9810\"\nbastion-listen = \"0.0.0.0:9810\"\n"
                    .into(),
                "metrics.bastion-listen`: '0.0.0.0:9810' is not a loopback address",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9810\"\nbastion-listen = \"127.0.0.1:9811\"\n"
                    .into(),
                "there is no [[bastion]] to forward the metrics to",
            ),
            (
                format!(
                    "[metrics]\nlisten = \"127.0.0.1:9810\"\nbastion-listen = \"127.0.0.1:9811\"\n{with_bastions}"
                ),
                "port 9811 is already forwarded on bastion b1",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9810\"\nport = 1\n".into(),
                "unknown field `port`",
            ),
        ] {
            let error = load(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}\n{error}");
        }
    }

    #[test]
    fn only_loopback_addresses_with_a_port_are_accepted() {
        assert_eq!(
            loopback_address("127.0.0.1:9810").unwrap(),
            "127.0.0.1:9810".parse().unwrap()
        );
        assert!(loopback_address("[::1]:9810").is_ok());
        for (text, expected) in [
            ("0.0.0.0:9810", "not a loopback address"),
            ("10.0.0.5:9810", "not a loopback address"),
            ("[::]:9810", "not a loopback address"),
            ("127.0.0.1:0", "port 0"),
            ("localhost:9810", "not an IP address and port"),
            ("127.0.0.1", "not an IP address and port"),
        ] {
            let error = loopback_address(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
