//! Deciding whether a bastion's SSH host key is the one we expect (the
//! supervisor's tunnels and `palisade-ctl --via` both use this).
//!
//! Invariant: a key is accepted only if it is pinned (by fingerprint or in a
//! known_hosts file) or if trust-on-first-use was explicitly configured and
//! the host has no key on record at all. A host with keys on record that
//! offers a different one is a hard failure (`HostKeyChanged`), never a
//! prompt and never a silent update of the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::{HashAlg, PublicKey};

/// Why a host key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The host has no key on record and trust-on-first-use is off.
    #[error("host key of {host} is unknown (offered {offered}); pin it or add it to known_hosts")]
    Unknown { host: String, offered: String },
    /// The host offered a key other than the pinned one(s): possible
    /// man-in-the-middle, never accepted automatically.
    #[error(
        "HOST KEY CHANGED for {host}: expected {expected}, offered {offered}; refusing to connect"
    )]
    Changed {
        host: String,
        expected: String,
        offered: String,
    },
    /// The offered key is marked `@revoked` in known_hosts.
    #[error("host key {offered} of {host} is revoked in known_hosts")]
    Revoked { host: String, offered: String },
    /// A pinned fingerprint is not in `SHA256:<base64>` form.
    #[error("pinned fingerprint {value:?} is not of the form SHA256:<base64> (ssh-keygen -lf)")]
    InvalidFingerprint { value: String },
    /// The known_hosts file could not be read or appended to.
    #[error("known_hosts file {}: {source}", path.display())]
    KnownHosts {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether an unknown host may be trusted on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstUse {
    /// Unknown hosts are refused (the default: keys are provisioned).
    #[default]
    Refuse,
    /// Accept the first key of a host that has none on record and append it
    /// to the known_hosts file, which must then be configured.
    TrustAndRecord,
}

/// Which host keys a bastion connection accepts.
#[derive(Debug, Clone, Default)]
pub struct HostKeyPolicy {
    /// Fingerprints as `ssh-keygen -lf` prints them (`SHA256:<base64>`).
    pub pinned_fingerprints: Vec<String>,
    /// An OpenSSH known_hosts file; entries for `host` (port 22) or
    /// `[host]:port` count as pinned keys.
    pub known_hosts_file: Option<PathBuf>,
    /// Trust-on-first-use, off unless asked for.
    pub first_use: FirstUse,
}

/// One usable known_hosts entry: the host names and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownHostEntry {
    hosts: Vec<HostName>,
    revoked: bool,
    fingerprint: String,
}

/// A host name field of known_hosts: a pattern (`host`, `[host]:port`,
/// with `*` and `?` wildcards, `!` to exclude; compared case-insensitively,
/// as OpenSSH does) or a name hashed as OpenSSH writes it with
/// `HashKnownHosts yes` (the default on Debian and Ubuntu):
/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    Pattern { negated: bool, glob: String },
    Hashed { salt: Vec<u8>, mac: Vec<u8> },
}

impl HostName {
    /// `None` for a hashed field that is not `|1|salt|mac` with valid
    /// base64 and a 20-byte MAC: such a field can only match nothing.
    fn parse(field: &str) -> Option<HostName> {
        use base64::Engine as _;
        let Some(hashed) = field.strip_prefix("|1|") else {
            let (negated, glob) = match field.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, field),
            };
            return Some(HostName::Pattern {
                negated,
                glob: glob.to_ascii_lowercase(),
            });
        };
        let (salt, mac) = hashed.split_once('|')?;
        let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).ok();
        let (salt, mac) = (decode(salt)?, decode(mac)?);
        (mac.len() == 20).then_some(HostName::Hashed { salt, mac })
    }

    /// Whether `name` (lowercase, as [`known_hosts_name`] gives it) is
    /// this field's, ignoring negation ([`entry_matches`] applies it).
    fn matches(&self, name: &str) -> bool {
        use hmac::{KeyInit as _, Mac as _};
        match self {
            HostName::Pattern { glob, .. } => glob_matches(glob.as_bytes(), name.as_bytes()),
            HostName::Hashed { salt, mac } => {
                let Ok(mut hmac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                hmac.update(name.as_bytes());
                hmac.verify_slice(mac).is_ok()
            }
        }
    }
}

/// Whether a known_hosts line's host field (comma-separated) names `name`:
/// some field matches and no negated one does (OpenSSH's rule).
fn entry_matches(hosts: &[HostName], name: &str) -> bool {
    let mut found = false;
    for host in hosts {
        if host.matches(name) {
            match host {
                HostName::Pattern { negated: true, .. } => return false,
                _ => found = true,
            }
        }
    }
    found
}

/// `*` matches any run of bytes, `?` any one byte, everything else itself.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has taken up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&byte) if byte == b'?' || byte == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte and try again.
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// `SHA256:<base64>` exactly as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Check that `text` is a fingerprint as `ssh-keygen -lf` prints it:
/// `SHA256:` and 43 characters of unpadded base64 (32 bytes).
pub fn parse_fingerprint(text: &str) -> Result<(), HostKeyError> {
    use base64::Engine as _;
    let invalid = || HostKeyError::InvalidFingerprint {
        value: text.to_string(),
    };
    let encoded = text.strip_prefix("SHA256:").ok_or_else(invalid)?;
    match base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(invalid()),
    }
}

/// The name a host is recorded under in known_hosts (OpenSSH convention:
/// lowercase, bare name on port 22, `[name]:port` otherwise).
pub fn known_hosts_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Parse known_hosts text. Comments, blank lines, `@cert-authority` lines,
/// malformed hashed names and lines whose key does not parse are skipped:
/// skipping can only make a host look unknown, which fails closed.
fn parse_known_hosts(text: &str) -> Vec<KnownHostEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                _ => continue,
            }
            first = match fields.next() {
                Some(field) => field,
                None => continue,
            };
        }
        let (Some(key_type), Some(key_base64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = PublicKey::from_openssh(&format!("{key_type} {key_base64}")) else {
            continue;
        };
        entries.push(KnownHostEntry {
            hosts: first.split(',').filter_map(HostName::parse).collect(),
            revoked,
            fingerprint: fingerprint(&key),
        });
    }
    entries
}

impl HostKeyPolicy {
    /// Accept `offered` for `host:port`, or say why not.
    pub fn check(&self, host: &str, port: u16, offered: &PublicKey) -> Result<(), HostKeyError> {
        let name = known_hosts_name(host, port);
        let offered_fingerprint = fingerprint(offered);
        for pinned in &self.pinned_fingerprints {
            parse_fingerprint(pinned)?;
        }
        let entries = match &self.known_hosts_file {
            Some(path) => read_known_hosts(path)?,
            None => Vec::new(),
        };
        let for_host: Vec<&KnownHostEntry> = entries
            .iter()
            .filter(|entry| entry_matches(&entry.hosts, &name))
            .collect();
        if for_host
            .iter()
            .any(|entry| entry.revoked && entry.fingerprint == offered_fingerprint)
        {
            return Err(HostKeyError::Revoked {
                host: name,
                offered: offered_fingerprint,
            });
        }
        let mut expected: Vec<String> = self.pinned_fingerprints.clone();
        expected.extend(
            for_host
                .iter()
                .filter(|entry| !entry.revoked)
                .map(|entry| entry.fingerprint.clone()),
        );
        if expected.contains(&offered_fingerprint) {
            return Ok(());
        }
        if !expected.is_empty() {
            expected.dedup();
            return Err(HostKeyError::Changed {
                host: name,
                expected: expected.join(", "),
                offered: offered_fingerprint,
            });
        }
        match (self.first_use, &self.known_hosts_file) {
            (FirstUse::TrustAndRecord, Some(path)) => {
                append_known_host(path, &name, offered)?;
                tracing::warn!(
                    host = %name,
                    fingerprint = %offered_fingerprint,
                    known_hosts = %path.display(),
                    "trusting bastion host key on first use"
                );
                Ok(())
            }
            _ => Err(HostKeyError::Unknown {
                host: name,
                offered: offered_fingerprint,
            }),
        }
    }
}

fn read_known_hosts(path: &Path) -> Result<Vec<KnownHostEntry>, HostKeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_known_hosts(&text)),
        // A missing file is an empty one: TOFU creates it.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HostKeyError::KnownHosts {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn append_known_host(path: &Path, name: &str, key: &PublicKey) -> Result<(), HostKeyError> {
    let io_error = |source| HostKeyError::KnownHosts {
        path: path.to_path_buf(),
        source,
    };
    let key_text = key
        .to_openssh()
        .map_err(|error| io_error(std::io::Error::other(error.to_string())))?;
    // Drop the key's comment: known_hosts lines are `name type base64`.
    let mut parts = key_text.split_whitespace();
    let (key_type, key_base64) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error)?;
    writeln!(file, "{name} {key_type} {key_base64}").map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two fixed ed25519 public keys (from `ssh-keygen -t ed25519`).
    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDykifv2ZK/CsdqNSH2MMODZWTUK3NL1aTBks5nJyETx";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKCadxMLjrce+KlMsNhCL4uY7T1VdEgLntAg1wpAnWb";

    // `bastion-1.example` and `[10.0.0.7]:2222` as `ssh-keygen -H` (OpenSSH
    // 9.2) hashed them; a well-formed salt with a MAC of the wrong length.
    const HASHED_BASTION_1: &str = "|1|/42BZCbnJ0JsSd81kSoxRcnzrb4=|Sm0XJB02X3UmBA5PHV0fmWW6dpo=";
    const HASHED_10_0_0_7_2222: &str =
        "|1|vdQsu8v7wN6YIGBcl9AZHMZQZuI=|ZlQHF1ysljQWzwH3L4oLIR1w0hI=";
    const SALT: &str = "/42BZCbnJ0JsSd81kSoxRcnzrb4=";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn known_hosts_name_follows_openssh() {
        assert_eq!(known_hosts_name("bastion", 22), "bastion");
        assert_eq!(known_hosts_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
        assert_eq!(known_hosts_name("Bastion.Example", 22), "bastion.example");
    }

    #[test]
    fn check_outcomes_table() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!(
                "# comment\n\n|1|hashed= {KEY_A}\n[b1]:2222,other {KEY_A}\nb2 garbage\n@revoked b3 {KEY_A}\nb3 {KEY_B}\n\
                 {HASHED_BASTION_1} {KEY_A}\n{HASHED_10_0_0_7_2222} {KEY_B}\n|1|{SALT}|c2hvcnQ= {KEY_A}\n"
            ),
        )
        .unwrap();
        let fp_a = fingerprint(&key(KEY_A));
        let fp_b = fingerprint(&key(KEY_B));
        let from_file = HostKeyPolicy {
            known_hosts_file: Some(known_hosts.clone()),
            ..HostKeyPolicy::default()
        };
        let nothing = HostKeyPolicy::default();
        let pinned_a = HostKeyPolicy {
            pinned_fingerprints: vec![fp_a.clone()],
            ..HostKeyPolicy::default()
        };
        // (policy, host, port, offered, expected outcome as a short label)
        let cases: Vec<(&HostKeyPolicy, &str, u16, &str, &str)> = vec![
            (&from_file, "b1", 2222, KEY_A, "ok"),
            (&from_file, "other", 22, KEY_A, "ok"),
            (&from_file, "b1", 2222, KEY_B, "changed"),
            (&from_file, "b1", 22, KEY_A, "unknown"),
            (&from_file, "b2", 22, KEY_A, "unknown"),
            (&from_file, "b3", 22, KEY_A, "revoked"),
            (&from_file, "b3", 22, KEY_B, "ok"),
            (&pinned_a, "anything", 22, KEY_A, "ok"),
            (&pinned_a, "anything", 22, KEY_B, "changed"),
            (&nothing, "b1", 2222, KEY_A, "unknown"),
            // Hashed names (ssh-keygen -H): the name and port must both match.
            (&from_file, "bastion-1.example", 22, KEY_A, "ok"),
            (&from_file, "bastion-1.example", 22, KEY_B, "changed"),
            (&from_file, "bastion-1.example", 2222, KEY_A, "unknown"),
            (&from_file, "bastion-2.example", 22, KEY_A, "unknown"),
            (&from_file, "10.0.0.7", 2222, KEY_B, "ok"),
            (&from_file, "10.0.0.7", 2222, KEY_A, "changed"),
            (&from_file, "10.0.0.7", 22, KEY_B, "unknown"),
        ];
        for (policy, host, port, offered, expected) in cases {
            let outcome = match policy.check(host, port, &key(offered)) {
                Ok(()) => "ok",
                Err(HostKeyError::Changed {
                    expected, offered, ..
                }) => {
                    assert!(expected.contains("SHA256:") && offered.starts_with("SHA256:"));
                    "changed"
                }
                Err(HostKeyError::Unknown { .. }) => "unknown",
                Err(HostKeyError::Revoked { .. }) => "revoked",
                Err(other) => panic!("{host}:{port}: unexpected {other}"),
            };
            assert_eq!(outcome, expected, "{host}:{port} offering {offered}");
        }
        let changed = pinned_a
            .check("b", 22, &key(KEY_B))
            .unwrap_err()
            .to_string();
        assert!(
            changed.contains(&fp_a) && changed.contains(&fp_b),
            "{changed}"
        );
    }

    #[test]
    fn first_use_records_then_pins() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let policy = HostKeyPolicy {
            known_hosts_file: Some(known_hosts.clone()),
            first_use: FirstUse::TrustAndRecord,
            ..HostKeyPolicy::default()
        };
        policy.check("b1", 2222, &key(KEY_A)).unwrap();
        let text = std::fs::read_to_string(&known_hosts).unwrap();
        assert_eq!(text, format!("[b1]:2222 {KEY_A}\n"));
        // Recorded now: the same key passes, a different one is a change.
        policy.check("b1", 2222, &key(KEY_A)).unwrap();
        assert!(matches!(
            policy.check("b1", 2222, &key(KEY_B)),
            Err(HostKeyError::Changed { .. })
        ));
    }

    /// What stock `ssh-keygen -H` writes today is matched, with a fresh salt
    /// per line: plain and hashed files give the same outcome for every name.
    #[test]
    fn files_hashed_by_ssh_keygen_match_like_plain_ones() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let hashed = dir.path().join("hashed");
        let text = format!("b1 {KEY_A}\n[b2]:2222 {KEY_B}\n[::1]:2200,b3 {KEY_A}\n");
        std::fs::write(&plain, &text).unwrap();
        std::fs::write(&hashed, &text).unwrap();
        let status = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&hashed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("ssh-keygen (openssh-client) must be installed");
        assert!(status.success());
        let written = std::fs::read_to_string(&hashed).unwrap();
        assert_eq!(written.matches("|1|").count(), 4, "{written}");
        // Every host field is hashed (the salt and hash are random base64,
        // which may contain "b1" by chance: look at the fields, not the text).
        assert!(
            written.lines().all(|line| {
                let hosts = line.split_whitespace().next().unwrap_or_default();
                hosts.starts_with("|1|") && !hosts.contains(',') && !hosts.contains('[')
            }),
            "{written}"
        );
        let policy = |path: &Path| HostKeyPolicy {
            known_hosts_file: Some(path.to_path_buf()),
            ..HostKeyPolicy::default()
        };
        let label = |result: Result<(), HostKeyError>| match result {
            Ok(()) => "ok",
            Err(HostKeyError::Changed { .. }) => "changed",
            Err(HostKeyError::Unknown { .. }) => "unknown",
            Err(other) => panic!("unexpected {other}"),
        };
        let names = [
            ("b1", 22),
            ("b1", 2222),
            ("b2", 2222),
            ("b2", 22),
            ("::1", 2200),
            ("b3", 22),
            ("b4", 22),
        ];
        for (host, port) in names {
            for offered in [KEY_A, KEY_B] {
                let want = label(policy(&plain).check(host, port, &key(offered)));
                let got = label(policy(&hashed).check(host, port, &key(offered)));
                assert_eq!(got, want, "{host}:{port} offering {offered}");
            }
        }
        assert_eq!(label(policy(&hashed).check("b2", 2222, &key(KEY_B))), "ok");
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.example.org", "b1.example.org", true),
            ("*.example.org", "example.org", false),
            ("*.example.org", "b1.example.org.evil", false),
            ("b*1*", "b11", true),
            ("*a*b", "xaybzab", true),
            ("*a*b", "xaybza", false),
            ("[gw?.example.com]:2200", "[gw1.example.com]:2200", true),
            ("[gw?.example.com]:2200", "[gw10.example.com]:2200", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_matches(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} ~ {text:?}"
            );
        }
    }

    /// Which names a known_hosts file pins is what OpenSSH's own lookup
    /// (`ssh-keygen -F`) says, for wildcards, negation, ports and case.
    #[test]
    fn matching_agrees_with_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            format!(
                "*.example.org {KEY_A}\n!bad.example.net,*.example.net {KEY_A}\n\
                 [gw?.example.com]:2200 {KEY_A}\nExact.Example.COM {KEY_A}\n10.0.0.* {KEY_A}\n"
            ),
        )
        .unwrap();
        let policy = HostKeyPolicy {
            known_hosts_file: Some(path.clone()),
            ..HostKeyPolicy::default()
        };
        let names = [
            ("b1.example.org", 22),
            ("B1.Example.ORG", 22),
            ("b1.example.org", 2222),
            ("example.org", 22),
            ("good.example.net", 22),
            ("bad.example.net", 22),
            ("gw1.example.com", 2200),
            ("gw10.example.com", 2200),
            ("gw1.example.com", 22),
            ("exact.example.com", 22),
            ("10.0.0.7", 22),
            ("10.0.1.7", 22),
        ];
        for (host, port) in names {
            let lookup = std::process::Command::new("ssh-keygen")
                .arg("-F")
                .arg(known_hosts_name(host, port))
                .arg("-f")
                .arg(&path)
                .output()
                .expect("ssh-keygen (openssh-client) must be installed");
            let openssh = String::from_utf8_lossy(&lookup.stdout)
                .lines()
                .any(|line| !line.starts_with('#') && !line.trim().is_empty());
            let ours = policy.check(host, port, &key(KEY_A)).is_ok();
            assert_eq!(ours, openssh, "{host}:{port}");
        }
        // And a key that differs is a change, not unknown, where a pattern
        // pins the name.
        assert!(matches!(
            policy.check("b2.example.org", 22, &key(KEY_B)),
            Err(HostKeyError::Changed { .. })
        ));
    }

    #[test]
    fn first_use_without_a_file_refuses() {
        let policy = HostKeyPolicy {
            first_use: FirstUse::TrustAndRecord,
            ..HostKeyPolicy::default()
        };
        assert!(matches!(
            policy.check("b1", 22, &key(KEY_A)),
            Err(HostKeyError::Unknown { .. })
        ));
    }

    #[test]
    fn malformed_pinned_fingerprint_is_an_error() {
        let policy = HostKeyPolicy {
            pinned_fingerprints: vec!["MD5:aa:bb".into()],
            ..HostKeyPolicy::default()
        };
        assert!(matches!(
            policy.check("b1", 22, &key(KEY_A)),
            Err(HostKeyError::InvalidFingerprint { .. })
        ));
    }
}
