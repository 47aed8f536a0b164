//! `[eip]` and each `[[bastion]]`'s `eip`: Elastic IP rotation of the
//! bastions' public addresses through the EC2 API (`docs/eip.md`).
//!
//! ```toml
//! [eip]
//! region = "eu-west-1"
//! # endpoint = "https://ec2.eu-west-1.amazonaws.com"   # the default; moto in tests
//! # credentials = "vault"        # default; or "environment", "profile" (explicit opt-ins)
//! # profile = "palisade"         # with credentials = "profile"
//! # profile-file = "/etc/palisade/aws-credentials"
//! # tunnel-timeout = "20s"       # the new address must carry the tunnel within this
//!
//! [[bastion]]
//! name = "b1"
//! # …
//! eip = { instance-id = "i-0123456789abcdef0" }   # or network-interface-id = "eni-…"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Resolver;

/// `[eip]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEip {
    /// Required: the AWS region of the bastions' addresses.
    pub region: Option<String>,
    /// Default AWS's endpoint for the region. `http://` only on loopback.
    pub endpoint: Option<String>,
    /// Default `"vault"`: the access key imported into the vault
    /// (`palisade-supervisor import-aws-credentials`), readable only while
    /// it is unlocked. `"environment"` (`AWS_ACCESS_KEY_ID`, …) and
    /// `"profile"` are explicit opt-ins: those keys sit on the host at rest.
    pub credentials: Option<String>,
    /// Default `"default"`: the profile with `credentials = "profile"`.
    pub profile: Option<String>,
    /// Default `$HOME/.aws/credentials`.
    pub profile_file: Option<PathBuf>,
    /// Default `20s`: how long the tunnel may take to come up on a new
    /// address before the rotation rolls back.
    pub tunnel_timeout: Option<String>,
    /// Default `10s`: each EC2 request's timeout.
    pub request_timeout: Option<String>,
    /// Default none: no automatic rotation.
    pub auto: Option<RawEipAuto>,
}

/// `[eip.auto]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEipAuto {
    /// Default `60s`: how long a bastion's tunnel must stay down, while
    /// another's is up, before its address is rotated.
    pub after: Option<String>,
    /// Default `15m`: no second automatic rotation of the same bastion
    /// within this.
    pub cooldown: Option<String>,
    /// Default `2`: automatic rotations in any hour, all bastions together.
    pub max_per_hour: Option<u32>,
    /// Default none: a bastion whose tunnel's round trip stays above this
    /// for `after`, while another's is up and under it, is rotated too.
    pub slow_above: Option<String>,
}

/// The validated `[eip.auto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EipAuto {
    pub after: Duration,
    pub cooldown: Duration,
    pub max_per_hour: u32,
    /// `None`: only a tunnel that is down counts.
    pub slow_above: Option<Duration>,
}

/// A bastion's `eip = { … }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBastionEip {
    /// The bastion's EC2 instance (`i-…`).
    pub instance_id: Option<String>,
    /// Or its network interface (`eni-…`).
    pub network_interface_id: Option<String>,
}

/// Where the AWS access key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Imported into the vault; available only while it is unlocked.
    Vault,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Environment,
    /// A profile of an AWS credentials file.
    Profile { file: PathBuf, name: String },
}

/// The validated `[eip]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EipSettings {
    pub region: String,
    /// `None`: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    pub credentials: CredentialSource,
    pub tunnel_timeout: Duration,
    pub request_timeout: Duration,
    /// `None`: rotations only on request.
    pub auto: Option<EipAuto>,
}

/// What a bastion's address is associated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EipTarget {
    Instance(String),
    NetworkInterface(String),
}

/// Validates `[eip]`; `vault` says whether `[vault]` exists (the default
/// credentials live there).
pub(super) fn validate_eip(
    r: &mut Resolver<'_>,
    raw: Option<RawEip>,
    vault: bool,
) -> Option<EipSettings> {
    let raw = raw?;
    let region = match raw.region {
        Some(region) if is_region(&region) => Some(region),
        Some(region) => {
            let origin = r.file_origin("eip.region");
            r.report(
                origin,
                format!("'{region}' is not an AWS region name (like eu-west-1)"),
            );
            None
        }
        None => {
            let origin = r.file_origin("eip.region");
            r.report(
                origin,
                "is required: the AWS region of the bastions' addresses",
            );
            None
        }
    };
    if let Some(endpoint) = &raw.endpoint {
        let ok = endpoint.starts_with("https://")
            || endpoint.starts_with("http://127.")
            || endpoint.starts_with("http://localhost")
            || endpoint.starts_with("http://[::1]");
        if !ok || reqwest::Url::parse(endpoint).is_err() {
            let origin = r.file_origin("eip.endpoint");
            r.report(
                origin,
                format!("'{endpoint}' must be an https:// URL (http:// only on loopback)"),
            );
        }
    }
    let credentials = match raw.credentials.as_deref().unwrap_or("vault") {
        "vault" => {
            if !vault {
                let origin = r.file_origin("eip.credentials");
                r.report(
                    origin,
                    "\"vault\" (the default) needs a [vault]; or opt in to \"environment\" or \"profile\"",
                );
            }
            Some(CredentialSource::Vault)
        }
        "environment" => Some(CredentialSource::Environment),
        "profile" => {
            let file = raw.profile_file.or_else(default_profile_file);
            if file.is_none() {
                let origin = r.file_origin("eip.profile-file");
                r.report(origin, "is required: HOME is not set");
            }
            file.map(|file| CredentialSource::Profile {
                file,
                name: raw.profile.unwrap_or_else(|| "default".into()),
            })
        }
        other => {
            let origin = r.file_origin("eip.credentials");
            r.report(
                origin,
                format!("'{other}' is not one of \"vault\", \"environment\", \"profile\""),
            );
            None
        }
    };
    let tunnel_timeout = r.duration(
        None,
        "eip.tunnel-timeout",
        raw.tunnel_timeout.as_deref(),
        Duration::from_secs(20),
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(30)).contains(&tunnel_timeout) {
        let origin = r.file_origin("eip.tunnel-timeout");
        r.report(
            origin,
            "must be between 1s and 30s (a rotation, rollback included, answers within a minute)",
        );
    }
    let request_timeout = r.duration(
        None,
        "eip.request-timeout",
        raw.request_timeout.as_deref(),
        Duration::from_secs(10),
    );
    if !(Duration::from_millis(100)..=Duration::from_secs(30)).contains(&request_timeout) {
        let origin = r.file_origin("eip.request-timeout");
        r.report(origin, "must be between 100ms and 30s");
    }
    let auto = raw.auto.map(|auto| {
        let after = r.duration(
            None,
            "eip.auto.after",
            auto.after.as_deref(),
            Duration::from_secs(60),
        );
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&after) {
            let origin = r.file_origin("eip.auto.after");
            r.report(origin, "must be between 1s and 1h");
        }
        let cooldown = r.duration(
            None,
            "eip.auto.cooldown",
            auto.cooldown.as_deref(),
            Duration::from_secs(15 * 60),
        );
        if cooldown < Duration::from_secs(10) {
            let origin = r.file_origin("eip.auto.cooldown");
            r.report(origin, "must be at least 10s");
        }
        let max_per_hour = auto.max_per_hour.unwrap_or(2);
        if !(1..=60).contains(&max_per_hour) {
            let origin = r.file_origin("eip.auto.max-per-hour");
            r.report(origin, "must be between 1 and 60");
        }
        let slow_above = auto.slow_above.as_deref().map(|written| {
            let slow_above = r.duration(
                None,
                "eip.auto.slow-above",
                Some(written),
                Duration::from_secs(1),
            );
            if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&slow_above) {
                let origin = r.file_origin("eip.auto.slow-above");
                r.report(origin, "must be between 50ms and 60s");
            }
            slow_above
        });
        EipAuto {
            after,
            cooldown,
            max_per_hour,
            slow_above,
        }
    });
    Some(EipSettings {
        auto,
        region: region?,
        endpoint: raw.endpoint,
        credentials: credentials?,
        tunnel_timeout,
        request_timeout,
    })
}

/// The AWS CLI's credentials file, `$HOME/.aws/credentials` (`None`
/// without `HOME`).
pub fn default_profile_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".aws").join("credentials"))
}

/// Validates one bastion's `eip`; `field` is its position for messages.
pub(super) fn validate_bastion_eip(
    r: &mut Resolver<'_>,
    field: &str,
    raw: RawBastionEip,
) -> Option<EipTarget> {
    let report = |r: &mut Resolver<'_>, reason: String| {
        let origin = r.file_origin(format!("{field}.eip"));
        r.report(origin, reason);
    };
    match (raw.instance_id, raw.network_interface_id) {
        (Some(id), None) if is_aws_id(&id, "i-") => Some(EipTarget::Instance(id)),
        (None, Some(id)) if is_aws_id(&id, "eni-") => Some(EipTarget::NetworkInterface(id)),
        (Some(id), None) => {
            report(
                r,
                format!("instance-id '{id}' is not an instance id (i- and hex digits)"),
            );
            None
        }
        (None, Some(id)) => {
            report(
                r,
                format!(
                    "network-interface-id '{id}' is not a network interface id (eni- and hex digits)"
                ),
            );
            None
        }
        (Some(_), Some(_)) => {
            report(
                r,
                "give instance-id or network-interface-id, not both".into(),
            );
            None
        }
        (None, None) => {
            report(r, "needs instance-id or network-interface-id".into());
            None
        }
    }
}

fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

fn is_aws_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        (8..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::load;

    const FINGERPRINT: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    fn config(dir: &std::path::Path, vault: bool, eip: &str, bastion_eip: &str) -> String {
        let key = dir.join("tunnel_ed25519");
        std::fs::write(&key, "not parsed at load time").unwrap();
        format!(
            "{}{eip}\n[tunnel]\nkey-file = {key:?}\n[[bastion]]\nname = \"ba\"\nhost = \"203.0.113.10\"\n\
             user = \"t\"\nhost-key-fingerprints = [\"{FINGERPRINT}\"]\n{bastion_eip}\n",
            if vault {
                "[vault]\nswap = \"warn\"\n"
            } else {
                ""
            }
        )
    }

    #[test]
    fn eip_settings_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let good = load(
            dir.path(),
            &config(
                dir.path(),
                true,
                "[eip]\nregion = \"eu-west-1\"\nendpoint = \"http://127.0.0.1:5000\"",
                "eip = { instance-id = \"i-0123456789abcdef0\" }",
            ),
        )
        .unwrap();
        let eip = good.eip.clone().unwrap();
        assert_eq!(eip.region, "eu-west-1");
        assert_eq!(eip.credentials, CredentialSource::Vault);
        assert_eq!(eip.tunnel_timeout, Duration::from_secs(20));
        assert_eq!(
            good.tunnels.unwrap().bastions[0].eip,
            Some(EipTarget::Instance("i-0123456789abcdef0".into()))
        );
        let shown = good_lines(dir.path());
        assert!(
            shown
                .iter()
                .any(|line| line == "eip.credentials=vault (aws-credentials.age)"),
            "{shown:?}"
        );

        let cases: [(bool, &str, &str, &str); 13] = [
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\n[eip.auto]\nslow-above = \"10ms\"",
                "",
                "eip.auto.slow-above",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\n[eip.auto]\nslow-above = \"fast\"",
                "",
                "eip.auto.slow-above",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\n[eip.auto]\nmax-per-hour = 0",
                "",
                "between 1 and 60",
            ),
            (true, "[eip]", "", "eip.region"),
            (true, "[eip]\nregion = \"EU west\"", "", "not an AWS region"),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\nendpoint = \"http://203.0.113.1\"",
                "",
                "http:// only on loopback",
            ),
            (
                false,
                "[eip]\nregion = \"eu-west-1\"",
                "",
                "needs a [vault]",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\ncredentials = \"instance-role\"",
                "",
                "not one of",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"\ntunnel-timeout = \"5m\"",
                "",
                "between 1s and 30s",
            ),
            (
                true,
                "",
                "eip = { instance-id = \"i-0123456789abcdef0\" }",
                "there is no [eip]",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"",
                "eip = { instance-id = \"vol-1\" }",
                "not an instance id",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"",
                "eip = { instance-id = \"i-0123456789abcdef0\", network-interface-id = \"eni-0123456789abcdef0\" }",
                "not both",
            ),
            (
                true,
                "[eip]\nregion = \"eu-west-1\"",
                "eip = {}",
                "needs instance-id or network-interface-id",
            ),
        ];
        for (vault, eip, bastion_eip, expected) in cases {
            let text = config(dir.path(), vault, eip, bastion_eip);
            let message = load(dir.path(), &text).expect_err(&text).to_string();
            assert!(message.contains(expected), "{text}\n→ {message}");
        }
        // The opt-ins need no vault.
        let env = load(
            dir.path(),
            &config(
                dir.path(),
                false,
                "[eip]\nregion = \"eu-west-1\"\ncredentials = \"environment\"",
                "",
            ),
        )
        .unwrap();
        assert_eq!(env.eip.unwrap().credentials, CredentialSource::Environment);
        // slow-above is off unless written.
        let auto = |extra: &str| {
            load(
                dir.path(),
                &config(
                    dir.path(),
                    true,
                    &format!("[eip]\nregion = \"eu-west-1\"\n[eip.auto]\n{extra}"),
                    "",
                ),
            )
            .unwrap()
            .eip
            .unwrap()
            .auto
            .unwrap()
        };
        assert_eq!(auto("").slow_above, None);
        assert_eq!(
            auto("slow-above = \"750ms\"").slow_above,
            Some(Duration::from_millis(750))
        );
    }

    fn good_lines(dir: &std::path::Path) -> Vec<String> {
        let config = load(
            dir,
            &config(
                dir,
                true,
                "[eip]\nregion = \"eu-west-1\"",
                "eip = { network-interface-id = \"eni-0123456789abcdef0\" }",
            ),
        )
        .unwrap();
        config
            .describe()
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    }
}
