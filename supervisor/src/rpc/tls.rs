//! The RPC server's TLS identity: a self-signed ed25519 certificate that
//! clients pin by fingerprint (`docs/rpc.md` §1).
//!
//! Files, under `[rpc] tls-dir` (default `$DAEMON_HOME/palisade/rpc`):
//! `cert.pem` and `key.pem`, both 0600 in a 0700 directory owned by the
//! supervisor's user, made by `palisade-supervisor init-rpc`. The pin is
//! `sha256:<hex of the SHA-256 of the certificate's DER>`.
//!
//! Invariants:
//! - an existing identity is never replaced without an explicit `--force`
//!   (replacing it breaks every operator's pin);
//! - a key readable by anyone but its owner is refused, not used;
//! - only TLS 1.3 is offered; there is no client certificate (operators
//!   authenticate inside the channel, bound to it by the exporter).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use palisade_daemon::durable::{self, AtomicWrite, Existing};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// The certificate's file name inside the TLS directory.
pub const CERT_FILE: &str = "cert.pem";
/// The private key's file name inside the TLS directory.
pub const KEY_FILE: &str = "key.pem";

/// Largest PEM file read (an ed25519 certificate is well under 1 KiB).
const MAX_PEM_BYTES: u64 = 16 * 1024;

/// The pin of a certificate: `sha256:<64 hex>` of its DER (one definition,
/// shared with the clients).
pub use palisade_wire::rpc::fingerprint_of;

/// Whether `init-rpc` may replace an existing identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceIdentity {
    No,
    Yes,
}

/// Create `dir` (0700) with a new self-signed ed25519 certificate and key
/// for `validator`; return the certificate's pin.
pub fn init_identity(
    dir: &Path,
    validator: &str,
    replace: ReplaceIdentity,
) -> anyhow::Result<String> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if replace == ReplaceIdentity::No
        && let Some(existing) = [&cert_path, &key_path]
            .into_iter()
            .find(|path| fs::symlink_metadata(path).is_ok())
    {
        bail!(
            "{} already exists; replacing the RPC certificate breaks every operator's pin. \
             Pass --force to replace it, or print the current pin with rpc-fingerprint",
            existing.display()
        );
    }
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    check_private_dir(dir)?;

    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).context("generating the ed25519 key")?;
    let mut params = rcgen::CertificateParams::new(vec!["palisade-supervisor".to_string()])
        .context("certificate parameters")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("palisade-supervisor {validator}"),
    );
    let certificate = params
        .self_signed(&key_pair)
        .context("self-signing the certificate")?;
    let key_pem = Zeroizing::new(key_pair.serialize_pem());
    // Key first: a certificate never exists without its key.
    write_private_file(&key_path, key_pem.as_bytes())?;
    write_private_file(&cert_path, certificate.pem().as_bytes())?;
    Ok(fingerprint_of(certificate.der()))
}

/// The pin of the certificate in `dir`.
pub fn read_fingerprint(dir: &Path) -> anyhow::Result<String> {
    let cert = read_certificate(&dir.join(CERT_FILE))?;
    Ok(fingerprint_of(&cert))
}

/// The server side of the RPC's TLS.
#[derive(Clone)]
pub struct ServerIdentity {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate's pin, for the log.
    pub fingerprint: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Load the identity in `dir` and build the TLS 1.3 server configuration.
pub fn load_identity(dir: &Path) -> anyhow::Result<ServerIdentity> {
    check_private_dir(dir)?;
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert = read_certificate(&cert_path)?;
    let key_pem = read_private_file(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| anyhow::anyhow!("{}: no private key: {error}", key_path.display()))?;
    let fingerprint = fingerprint_of(&cert);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 configuration")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .with_context(|| {
            format!(
                "{} and {} do not make a usable TLS identity",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(ServerIdentity {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
    })
}

fn read_certificate(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    let pem = read_private_file(path)?;
    CertificateDer::from_pem_slice(&pem)
        .map_err(|error| anyhow::anyhow!("{}: no certificate: {error}", path.display()))
}

/// The directory must be ours and closed to group and others.
fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let metadata =
        fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if !metadata.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    check_owner_and_mode(dir, &metadata, "chmod 700")
}

fn check_owner_and_mode(path: &Path, metadata: &fs::Metadata, fix: &str) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        bail!(
            "{} is owned by uid {}, not by this process (uid {euid})",
            path.display(),
            metadata.uid()
        );
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{} has mode {mode:04o}: group and others must have no access ({fix})",
            path.display()
        );
    }
    Ok(())
}

/// Read a small file that must be ours, 0600 or stricter, not a symlink.
fn read_private_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} (create the RPC certificate with `palisade-supervisor init-rpc`)",
                path.display()
            )
        })?;
    let metadata = file
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if !metadata.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    check_owner_and_mode(path, &metadata, "chmod 600")?;
    if metadata.len() > MAX_PEM_BYTES {
        bail!(
            "{} is {} bytes; a PEM file here is at most {MAX_PEM_BYTES}",
            path.display(),
            metadata.len()
        );
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(metadata.len() as usize));
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PEM_BYTES), &mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// Write `bytes` to `path` atomically and durably, mode 0600, first
/// removing what an interrupted earlier `init-rpc` left (a temp file may
/// hold a private key).
fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let _ = durable::remove_leftover_temp_files(path);
    AtomicWrite::new(0o600, Existing::Replace).write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_writes_a_private_identity_and_never_overwrites_silently() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("palisade/rpc");
        let pin = init_identity(&dir, "val-a", ReplaceIdentity::No).unwrap();
        assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
        assert_eq!(read_fingerprint(&dir).unwrap(), pin);
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CERT_FILE)), 0o600);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let identity = load_identity(&dir).unwrap();
        assert_eq!(identity.fingerprint, pin);

        let error = init_identity(&dir, "val-a", ReplaceIdentity::No)
            .unwrap_err()
            .to_string();
        assert!(error.contains("Pass --force"), "{error}");
        assert_eq!(read_fingerprint(&dir).unwrap(), pin);
        let replaced = init_identity(&dir, "val-a", ReplaceIdentity::Yes).unwrap();
        assert_ne!(replaced, pin);
        assert_eq!(read_fingerprint(&dir).unwrap(), replaced);
    }

    #[test]
    fn lax_permissions_and_missing_files_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("rpc");
        let error = load_identity(&dir).unwrap_err().to_string();
        assert!(error.contains("inspecting"), "{error}");
        init_identity(&dir, "val-a", ReplaceIdentity::No).unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o640)).unwrap();
        let error = format!("{:#}", load_identity(&dir).unwrap_err());
        assert!(error.contains("chmod 600"), "{error}");
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let error = format!("{:#}", load_identity(&dir).unwrap_err());
        assert!(error.contains("chmod 700"), "{error}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join(CERT_FILE), "garbage").unwrap();
        let error = format!("{:#}", load_identity(&dir).unwrap_err());
        assert!(error.contains("no certificate"), "{error}");
        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        let error = format!("{:#}", read_fingerprint(&dir).unwrap_err());
        assert!(error.contains("init-rpc"), "{error}");
    }
}
