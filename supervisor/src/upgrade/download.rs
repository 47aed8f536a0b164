//! Upgrade binary download, checksum verification and installation
//! (`DAEMON_ALLOW_DOWNLOAD_BINARIES`).
//!
//! Cosmovisor hands plan URLs to go-getter; Palisade implements the small
//! subset validators actually use (http/https, `?checksum=sha256:` or
//! `sha512:`, raw binaries, zip and tar.gz) and refuses everything else with
//! a named reason.
//!
//! Invariants:
//! - An upgrade directory appears under `upgrades/` only complete: the
//!   artifact is downloaded, verified and unpacked in a `.staging-*`
//!   directory on the same filesystem, the binary is checked (regular file,
//!   executable), everything is fsynced, and only then is the tree renamed
//!   into place with `RENAME_NOREPLACE`. Any failure removes the staging
//!   directory, so nothing is installed.
//! - An existing `upgrades/<name>` is never overwritten or modified.
//! - With [`ChecksumPolicy::Required`] (Palisade's default) nothing without
//!   a sha256/sha512 checksum is fetched; md5/sha1 are always refused.
//! - Archive contents are never given permissions they did not carry: an
//!   archive whose binary lacks the executable bit is refused, not chmod-ed.
//! - URLs may carry access tokens: logs and errors show them through
//!   [`redact_url`] (no userinfo, no query string except the checksum).
//! - Binaries staged ahead of time over the control RPC (`upgrade.add`,
//!   [`crate::upgrade::stage`]) take the same path: a URL through
//!   [`Downloader::install_artifact`], a file on this host through
//!   [`install_local_binary`] (copied, never moved, installed as is).

mod archive;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_daemon::durable::{self, DurableError};
use rand::RngExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

pub use archive::ArtifactFormat;

/// The query parameter go-getter reads the expected digest from.
const CHECKSUM_PARAM: &str = "checksum";

/// Name of the downloaded artifact inside the staging directory.
const STAGED_ARTIFACT: &str = "artifact";
/// Name of the tree inside the staging directory that becomes
/// `upgrades/<name>`.
const STAGED_TREE: &str = "tree";

/// Errors of the download-and-install path. Every message names the
/// (redacted) URL or the path involved and the reason, on one line.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The artifact URL does not parse.
    #[error("invalid download URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The URL scheme is not http or https (`file://`, `s3://`, git, ...).
    #[error(
        "unsupported URL scheme {scheme:?} in {url}: only http and https downloads are allowed"
    )]
    UnsupportedScheme { url: String, scheme: String },
    /// The `checksum` parameter is malformed (no algorithm, bad hex, wrong length, repeated).
    #[error("malformed checksum in {url}: {reason}")]
    MalformedChecksum { url: String, reason: String },
    /// md5 or sha1: collision-broken, refused even though go-getter accepts them.
    #[error(
        "checksum algorithm {algorithm} in {url} is refused as cryptographically broken; use sha256 or sha512"
    )]
    WeakChecksumAlgorithm { url: String, algorithm: String },
    /// An algorithm that is neither supported nor known-weak.
    #[error("unknown checksum algorithm {algorithm:?} in {url}; use sha256 or sha512")]
    UnknownChecksumAlgorithm { url: String, algorithm: String },
    /// [`ChecksumPolicy::Required`] and the URL has no `?checksum=`.
    #[error(
        "{url} has no ?checksum=sha256:... or sha512:... and checksums are required (DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM)"
    )]
    ChecksumRequired { url: String },
    /// The plan info is neither a JSON object with `binaries` nor a URL.
    #[error("plan info has no binaries map and is not a URL: {reason}")]
    NoBinariesInPlanInfo { reason: String },
    /// The plan info (or the info file) is JSON but not of the expected shape.
    #[error("invalid plan info JSON{}: {reason}", source_suffix(.source_url))]
    InvalidPlanInfo {
        source_url: Option<String>,
        reason: String,
    },
    /// The plan's binaries map has neither this platform nor `any`.
    #[error("plan binaries have no entry for {os_arch} and no \"any\" entry (keys present: {})", display_keys(.available))]
    NoBinaryForPlatform {
        os_arch: String,
        available: Vec<String>,
    },
    /// The upgrade directory or daemon name is not a single safe path component.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// A local binary to be staged (`upgrade.add` with a path) is unusable:
    /// missing, not a regular file, not executable, not absolute.
    #[error("cannot stage {}: {reason}", .path.display())]
    LocalSource { path: PathBuf, reason: String },
    /// `upgrades/<name>` already exists; it is never overwritten.
    #[error("upgrade directory {} already exists; refusing to overwrite it", .path.display())]
    UpgradeDirExists { path: PathBuf },
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {reason}")]
    HttpClient { reason: String },
    /// Connecting, sending or reading failed (TLS, DNS, reset, ...).
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    /// The body exceeds the configured size cap.
    #[error("{url} is larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    /// A timeout fired.
    #[error("{url}: {phase} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        url: String,
        phase: &'static str,
        after: Duration,
    },
    /// The downloaded bytes do not hash to the expected digest.
    #[error(
        "checksum mismatch for {url}: expected {algorithm}:{expected}, got {algorithm}:{actual}"
    )]
    ChecksumMismatch {
        url: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// The artifact is an archive format Palisade does not unpack.
    #[error(
        "{url} is a {format} archive, which is not supported (use zip, tar.gz or a raw binary)"
    )]
    UnsupportedFormat { url: String, format: &'static str },
    /// An archive entry would escape the upgrade directory or is of a refused type.
    #[error("unsafe archive entry {entry:?}: {reason}")]
    UnsafeArchiveEntry { entry: String, reason: String },
    /// The archive exceeds the unpacked-size or entry-count cap.
    #[error("archive exceeds the limit of {limit} {what}")]
    ArchiveLimit { what: &'static str, limit: u64 },
    /// The archive cannot be read (truncated, bad compression, bad headers).
    #[error("corrupt archive from {url}: {reason}")]
    CorruptArchive { url: String, reason: String },
    /// Neither `bin/$DAEMON_NAME` nor `$DAEMON_NAME` at the root was unpacked.
    #[error("archive contains neither bin/{daemon_name} nor {daemon_name} at its root (top-level entries: {})", display_keys(.top_level))]
    BinaryMissing {
        daemon_name: String,
        top_level: Vec<String>,
    },
    /// `bin/$DAEMON_NAME` is a directory, symlink or other non-regular file.
    #[error("archive contains bin/{daemon_name} but it is a {kind}, not a regular file")]
    BinaryNotRegularFile {
        daemon_name: String,
        kind: &'static str,
    },
    /// `bin/$DAEMON_NAME` has no executable bit; archives are not chmod-ed.
    #[error("archive contains bin/{daemon_name} but it is not executable (mode {mode:04o})")]
    BinaryNotExecutable { daemon_name: String, mode: u32 },
    /// A filesystem operation failed.
    #[error("cannot {operation} {}: {source}", .path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The blocking unpack task panicked or was cancelled.
    #[error("unpack task failed: {reason}")]
    UnpackTask { reason: String },
}

fn source_suffix(source_url: &Option<String>) -> String {
    source_url
        .as_ref()
        .map(|url| format!(" from {url}"))
        .unwrap_or_default()
}

fn display_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        operation,
        path,
        source,
    }
}

/// An expected artifact digest from `?checksum=ALGO:HEX`.
#[derive(Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha256([u8; 32]),
    Sha512([u8; 64]),
}

impl Checksum {
    /// The go-getter algorithm name (`sha256`, `sha512`).
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Sha512(_) => "sha512",
        }
    }

    /// The digest bytes.
    pub fn digest(&self) -> &[u8] {
        match self {
            Checksum::Sha256(digest) => digest,
            Checksum::Sha512(digest) => digest,
        }
    }

    /// The digest as lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.digest())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parsed download URL: what is fetched (checksum parameter removed) and
/// the digest the body must have.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactUrl {
    pub url: url::Url,
    pub checksum: Option<Checksum>,
}

impl fmt::Display for ArtifactUrl {
    /// The redacted form, safe for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))?;
        if let Some(checksum) = &self.checksum {
            write!(f, "?checksum={checksum}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ArtifactUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactUrl({self})")
    }
}

/// `url` without userinfo, query string or fragment: URLs may carry tokens.
pub fn redact_url(url: &url::Url) -> String {
    let mut redacted = url.clone();
    // Setting these cannot fail for http(s) URLs; for others the original
    // parts are dropped below by rebuilding from scheme/host/path.
    let _ = redacted.set_username("");
    let _ = redacted.set_password(None);
    redacted.set_query(None);
    redacted.set_fragment(None);
    redacted.to_string()
}

/// Best-effort redaction of a string that did not parse as a URL.
fn redact_raw_url(raw: &str) -> String {
    let without_query = raw.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => without_query.chars().take(200).collect(),
    }
}

/// Parse a go-getter style URL with an optional `?checksum=ALGO:HEX`.
///
/// Only http and https are accepted; only sha256 and sha512 digests. The
/// checksum parameter is removed from the URL that will be fetched; other
/// query parameters are kept byte for byte.
pub fn parse_artifact_url(s: &str) -> Result<ArtifactUrl, DownloadError> {
    let trimmed = s.trim();
    let mut url = url::Url::parse(trimmed).map_err(|error| DownloadError::InvalidUrl {
        url: redact_raw_url(trimmed),
        reason: error.to_string(),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(DownloadError::UnsupportedScheme {
            url: redact_url(&url),
            scheme: url.scheme().to_owned(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(DownloadError::InvalidUrl {
            url: redact_url(&url),
            reason: "no host".to_owned(),
        });
    }

    let mut checksum_values = Vec::new();
    let mut kept_pairs = Vec::new();
    if let Some(query) = url.query() {
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_encoding::percent_decode_str(raw_key).decode_utf8_lossy();
            if key == CHECKSUM_PARAM {
                checksum_values.push(
                    percent_encoding::percent_decode_str(raw_value)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            } else {
                kept_pairs.push(pair.to_owned());
            }
        }
    }
    let kept_query = kept_pairs.join("&");
    url.set_query(if kept_query.is_empty() {
        None
    } else {
        Some(&kept_query)
    });

    let redacted = redact_url(&url);
    let checksum = match checksum_values.as_slice() {
        [] => None,
        [value] => Some(parse_checksum(value, &redacted)?),
        _ => {
            return Err(DownloadError::MalformedChecksum {
                url: redacted,
                reason: "the checksum parameter appears more than once".to_owned(),
            });
        }
    };
    Ok(ArtifactUrl { url, checksum })
}

fn parse_checksum(value: &str, redacted_url: &str) -> Result<Checksum, DownloadError> {
    use palisade_wire::rpc::params::{ChecksumAlgorithm, ChecksumProblem};
    let url = redacted_url.to_owned();
    match palisade_wire::rpc::params::parse_checksum(value) {
        Ok((ChecksumAlgorithm::Sha256, digest)) => Ok(Checksum::Sha256(
            digest
                .try_into()
                .expect("parse_checksum checked the length"),
        )),
        Ok((ChecksumAlgorithm::Sha512, digest)) => Ok(Checksum::Sha512(
            digest
                .try_into()
                .expect("parse_checksum checked the length"),
        )),
        Err(ChecksumProblem::Weak { algorithm }) => {
            Err(DownloadError::WeakChecksumAlgorithm { url, algorithm })
        }
        Err(ChecksumProblem::Unknown { algorithm }) => {
            Err(DownloadError::UnknownChecksumAlgorithm { url, algorithm })
        }
        Err(malformed) => Err(DownloadError::MalformedChecksum {
            url,
            reason: malformed.malformed_reason().unwrap_or_default(),
        }),
    }
}

/// Parse a checksum given on its own (`sha256:HEX` or `sha512:HEX`, as in
/// `upgrade.add`'s `checksum`), with the same rules as a URL's
/// `?checksum=`. `what` names it in errors.
pub fn parse_checksum_value(value: &str, what: &str) -> Result<Checksum, DownloadError> {
    parse_checksum(value, what)
}

/// Whether a download URL must carry a checksum
/// (`DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Palisade's default: a URL without a checksum is refused.
    Required,
    /// `DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM=false`: a missing checksum is
    /// allowed with a warning (an md5/sha1 checksum is still refused).
    Optional,
}

/// This platform in Go's `GOOS/GOARCH` notation, the key of the plan's
/// `binaries` map (`linux/amd64`, `linux/arm64`, `darwin/arm64`, ...).
pub fn os_arch() -> String {
    go_os_arch(std::env::consts::OS, std::env::consts::ARCH)
}

/// Map Rust's `OS`/`ARCH` constants to Go's names.
pub fn go_os_arch(rust_os: &str, rust_arch: &str) -> String {
    let os = match rust_os {
        "macos" => "darwin",
        other => other,
    };
    let arch = match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    format!("{os}/{arch}")
}

/// Where the plan says binaries come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanBinaries {
    /// The info was JSON with a `binaries` map: os/arch (or `any`) → URL.
    /// URLs are parsed only when selected, so a malformed entry for another
    /// platform does not block this one.
    Map(BTreeMap<String, String>),
    /// The info was a URL of a JSON file with a `binaries` map.
    InfoUrl(ArtifactUrl),
}

impl PlanBinaries {
    /// The artifact URL for `os_arch`: the exact key, else `any`. Only valid
    /// for [`PlanBinaries::Map`]; an info URL must be fetched first.
    pub fn select(&self, os_arch: &str) -> Result<ArtifactUrl, DownloadError> {
        match self {
            PlanBinaries::Map(binaries) => {
                let raw = binaries
                    .get(os_arch)
                    .or_else(|| binaries.get("any"))
                    .ok_or_else(|| DownloadError::NoBinaryForPlatform {
                        os_arch: os_arch.to_owned(),
                        available: binaries.keys().cloned().collect(),
                    })?;
                parse_artifact_url(raw)
            }
            PlanBinaries::InfoUrl(url) => Err(DownloadError::InvalidPlanInfo {
                source_url: Some(url.to_string()),
                reason: "an info URL must be fetched before a binary can be selected".to_owned(),
            }),
        }
    }
}

/// Interpret an upgrade plan's `info` string.
pub fn binaries_from_info(info: &str) -> Result<PlanBinaries, DownloadError> {
    let trimmed = info.trim();
    if trimmed.starts_with('{') {
        return binaries_map_from_json(trimmed, None).map(PlanBinaries::Map);
    }
    if trimmed.contains("://") {
        return parse_artifact_url(trimmed).map(PlanBinaries::InfoUrl);
    }
    Err(DownloadError::NoBinariesInPlanInfo {
        reason: if trimmed.is_empty() {
            "the info field is empty".to_owned()
        } else {
            "the info field is neither a JSON object nor an http(s) URL".to_owned()
        },
    })
}

fn binaries_map_from_json(
    json: &str,
    source_url: Option<&str>,
) -> Result<BTreeMap<String, String>, DownloadError> {
    let invalid = |reason: String| DownloadError::InvalidPlanInfo {
        source_url: source_url.map(str::to_owned),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|error| invalid(error.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("not a JSON object".to_owned()))?;
    let Some(binaries) = object.get("binaries") else {
        return Err(DownloadError::NoBinariesInPlanInfo {
            reason: format!(
                "JSON{} has no \"binaries\" key",
                source_url
                    .map(|url| format!(" from {url}"))
                    .unwrap_or_default()
            ),
        });
    };
    let binaries = binaries
        .as_object()
        .ok_or_else(|| invalid("\"binaries\" is not an object".to_owned()))?;
    binaries
        .iter()
        .map(|(key, value)| match value.as_str() {
            Some(url) => Ok((key.clone(), url.to_owned())),
            None => Err(invalid(format!("binaries[{key:?}] is not a string"))),
        })
        .collect()
}

/// Timeouts and size caps of a [`Downloader`].
#[derive(Clone, Debug)]
pub struct DownloadLimits {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Cap on one whole fetch (info file or artifact), headers to last byte.
    pub overall_timeout: Duration,
    /// Longest wait for the next body chunk: a stalled server fails fast
    /// instead of holding the upgrade until the overall timeout.
    pub idle_timeout: Duration,
    /// Largest artifact accepted (compressed size).
    pub max_artifact_bytes: u64,
    /// Largest info JSON file accepted.
    pub max_info_bytes: u64,
    /// Largest total size of an archive's unpacked files (zip/gzip bombs).
    pub max_unpacked_bytes: u64,
    /// Most entries an archive may have.
    pub max_archive_entries: u64,
}

impl Default for DownloadLimits {
    /// 30 s connect, 30 min overall, 60 s idle, 1 GiB artifact, 1 MiB info
    /// file, 4 GiB unpacked, 10 000 entries: a gaiad release is ~100 MB.
    fn default() -> Self {
        DownloadLimits {
            connect_timeout: Duration::from_secs(30),
            overall_timeout: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(60),
            max_artifact_bytes: 1 << 30,
            max_info_bytes: 1 << 20,
            max_unpacked_bytes: 4 << 30,
            max_archive_entries: 10_000,
        }
    }
}

/// What [`Downloader::install_upgrade`] installed.
#[derive(Clone, Debug)]
pub struct InstallReport {
    /// The artifact URL, redacted (no userinfo, no query except checksum).
    pub url: String,
    /// The checksum that was verified; `None` only under
    /// [`ChecksumPolicy::Optional`] when the URL carried none.
    pub checksum: Option<Checksum>,
    /// The digest of the downloaded bytes (same algorithm as `checksum`,
    /// sha256 when there was none), for the operator's records.
    pub observed_digest: Checksum,
    /// Downloaded (compressed) size.
    pub bytes: u64,
    pub format: ArtifactFormat,
    pub download_duration: Duration,
    /// Verification, unpacking, checks and fsyncs.
    pub unpack_duration: Duration,
    /// `upgrades/<name>`.
    pub upgrade_dir: PathBuf,
    /// `upgrades/<name>/bin/<daemon>`.
    pub binary_path: PathBuf,
}

/// Downloads and installs upgrade binaries.
pub struct Downloader {
    client: reqwest::Client,
    limits: DownloadLimits,
}

impl Downloader {
    pub fn new(limits: DownloadLimits) -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            // The overall timeout is enforced around send() and each chunk
            // (see `fetch`), so reqwest's own timeouts are connect and read.
            .read_timeout(limits.idle_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("palisade-supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| DownloadError::HttpClient {
                reason: error.without_url().to_string(),
            })?;
        Ok(Downloader { client, limits })
    }

    /// Download the plan's binary for this platform and install it as
    /// `upgrades_dir/upgrade_dir_name/bin/daemon_name`. See the module
    /// invariants: on error nothing is installed.
    pub async fn install_upgrade(
        &self,
        plan_info: &str,
        upgrades_dir: &Path,
        upgrade_dir_name: &str,
        daemon_name: &str,
        policy: ChecksumPolicy,
    ) -> Result<InstallReport, DownloadError> {
        validate_component("upgrade directory name", upgrade_dir_name)?;
        validate_component("daemon name", daemon_name)?;
        refuse_existing(&upgrades_dir.join(upgrade_dir_name))?;
        let artifact_url = self.resolve_artifact_url(plan_info, policy).await?;
        self.install_artifact(
            &artifact_url,
            upgrades_dir,
            upgrade_dir_name,
            daemon_name,
            policy,
        )
        .await
    }

    /// Download one artifact (a raw binary, zip or tar.gz) and install it
    /// as `upgrades_dir/upgrade_dir_name/bin/daemon_name`, verified against
    /// the URL's checksum. Used by [`Downloader::install_upgrade`] and by
    /// `upgrade.add` over the control RPC. On error nothing is installed.
    pub async fn install_artifact(
        &self,
        artifact_url: &ArtifactUrl,
        upgrades_dir: &Path,
        upgrade_dir_name: &str,
        daemon_name: &str,
        policy: ChecksumPolicy,
    ) -> Result<InstallReport, DownloadError> {
        validate_component("upgrade directory name", upgrade_dir_name)?;
        validate_component("daemon name", daemon_name)?;
        check_policy(artifact_url, policy)?;
        let upgrade_dir = upgrades_dir.join(upgrade_dir_name);
        refuse_existing(&upgrade_dir)?;
        tokio::fs::create_dir_all(upgrades_dir)
            .await
            .map_err(io_error("create", upgrades_dir))?;
        let staging = StagingDir::create(upgrades_dir, upgrade_dir_name)?;

        let download_started = Instant::now();
        let artifact_path = staging.path.join(STAGED_ARTIFACT);
        let fetched = self
            .fetch_to_file(artifact_url, &artifact_path, self.limits.max_artifact_bytes)
            .await?;
        let download_duration = download_started.elapsed();
        info!(url = %artifact_url, bytes = fetched.bytes, elapsed = ?download_duration, "downloaded upgrade binary");

        let unpack_started = Instant::now();
        verify_checksum(artifact_url, &fetched.digest)?;
        let tree = staging.path.join(STAGED_TREE);
        let unpack = archive::UnpackRequest {
            artifact: artifact_path,
            tree: tree.clone(),
            daemon_name: daemon_name.to_owned(),
            url: artifact_url.to_string(),
            max_unpacked_bytes: self.limits.max_unpacked_bytes,
            max_entries: self.limits.max_archive_entries,
        };
        let format = tokio::task::spawn_blocking(move || archive::unpack_and_check(&unpack))
            .await
            .map_err(|error| DownloadError::UnpackTask {
                reason: error.to_string(),
            })??;

        move_into_place(&tree, upgrades_dir, &upgrade_dir)?;
        drop(staging);
        let unpack_duration = unpack_started.elapsed();
        let binary_path = upgrade_dir.join("bin").join(daemon_name);
        info!(
            url = %artifact_url,
            format = %format,
            path = %binary_path.display(),
            elapsed = ?unpack_duration,
            "installed upgrade binary"
        );
        Ok(InstallReport {
            url: artifact_url.to_string(),
            checksum: artifact_url.checksum.clone(),
            observed_digest: fetched.digest,
            bytes: fetched.bytes,
            format,
            download_duration,
            unpack_duration,
            upgrade_dir,
            binary_path,
        })
    }

    /// Resolve the plan info (fetching an info file if needed) to the URL
    /// for this platform, applying the checksum policy to both URLs.
    async fn resolve_artifact_url(
        &self,
        plan_info: &str,
        policy: ChecksumPolicy,
    ) -> Result<ArtifactUrl, DownloadError> {
        let binaries = match binaries_from_info(plan_info)? {
            PlanBinaries::InfoUrl(info_url) => {
                check_policy(&info_url, policy)?;
                let body = self
                    .fetch_to_memory(&info_url, self.limits.max_info_bytes)
                    .await?;
                let text = String::from_utf8(body).map_err(|_| DownloadError::InvalidPlanInfo {
                    source_url: Some(info_url.to_string()),
                    reason: "not UTF-8".to_owned(),
                })?;
                let source = info_url.to_string();
                info!(url = %info_url, "fetched upgrade info file");
                PlanBinaries::Map(binaries_map_from_json(&text, Some(&source))?)
            }
            map => map,
        };
        let artifact_url = binaries.select(&os_arch())?;
        check_policy(&artifact_url, policy)?;
        Ok(artifact_url)
    }

    async fn fetch_to_memory(
        &self,
        url: &ArtifactUrl,
        max_bytes: u64,
    ) -> Result<Vec<u8>, DownloadError> {
        let mut sink = Sink::Memory(Vec::new());
        let fetched = self.fetch(url, max_bytes, &mut sink).await?;
        verify_checksum(url, &fetched.digest)?;
        match sink {
            Sink::Memory(body) => Ok(body),
            Sink::File { .. } => unreachable!("memory sink"),
        }
    }

    async fn fetch_to_file(
        &self,
        url: &ArtifactUrl,
        path: &Path,
        max_bytes: u64,
    ) -> Result<Fetched, DownloadError> {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(io_error("create", path))?;
        let mut sink = Sink::File { file, path };
        let fetched = self.fetch(url, max_bytes, &mut sink).await?;
        if let Sink::File { mut file, path } = sink {
            file.flush().await.map_err(io_error("write", path))?;
            file.sync_all().await.map_err(io_error("fsync", path))?;
        }
        Ok(fetched)
    }

    /// Fetch `url` into `sink`, hashing as it streams and enforcing the
    /// size cap and the overall and idle timeouts.
    async fn fetch(
        &self,
        url: &ArtifactUrl,
        max_bytes: u64,
        sink: &mut Sink<'_>,
    ) -> Result<Fetched, DownloadError> {
        let deadline = tokio::time::Instant::now() + self.limits.overall_timeout;
        let mut response = self.start(url, max_bytes, deadline).await?;
        let mut hasher = Hasher::for_checksum(url.checksum.as_ref());
        let mut bytes = 0u64;
        while let Some(chunk) = self.next_chunk(url, &mut response, deadline).await? {
            bytes += chunk.len() as u64;
            if bytes > max_bytes {
                return Err(DownloadError::TooLarge {
                    url: url.to_string(),
                    limit: max_bytes,
                });
            }
            hasher.update(&chunk);
            match sink {
                Sink::Memory(body) => body.extend_from_slice(&chunk),
                Sink::File { file, path } => file
                    .write_all(&chunk)
                    .await
                    .map_err(io_error("write", path))?,
            }
        }
        Ok(Fetched {
            bytes,
            digest: hasher.finalize(),
        })
    }

    async fn start(
        &self,
        url: &ArtifactUrl,
        max_bytes: u64,
        deadline: tokio::time::Instant,
    ) -> Result<reqwest::Response, DownloadError> {
        let request = self.client.get(url.url.clone()).send();
        let response = tokio::time::timeout_at(deadline, request)
            .await
            .map_err(|_| DownloadError::Timeout {
                url: url.to_string(),
                phase: "request",
                after: self.limits.overall_timeout,
            })?
            .map_err(|error| request_error(url, error, &self.limits))?;
        let status = response.status();
        if !status.is_success() {
            return Err(DownloadError::HttpStatus {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|length| length > max_bytes)
        {
            return Err(DownloadError::TooLarge {
                url: url.to_string(),
                limit: max_bytes,
            });
        }
        Ok(response)
    }

    async fn next_chunk(
        &self,
        url: &ArtifactUrl,
        response: &mut reqwest::Response,
        deadline: tokio::time::Instant,
    ) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>, DownloadError> {
        let idle_deadline = (tokio::time::Instant::now() + self.limits.idle_timeout).min(deadline);
        match tokio::time::timeout_at(idle_deadline, response.chunk()).await {
            Ok(result) => result.map_err(|error| request_error(url, error, &self.limits)),
            Err(_) if idle_deadline == deadline => Err(DownloadError::Timeout {
                url: url.to_string(),
                phase: "download",
                after: self.limits.overall_timeout,
            }),
            Err(_) => Err(DownloadError::Timeout {
                url: url.to_string(),
                phase: "waiting for data",
                after: self.limits.idle_timeout,
            }),
        }
    }
}

/// What [`install_local_binary`] installed.
#[derive(Clone, Debug)]
pub struct LocalInstallReport {
    /// The file that was copied (it is left in place).
    pub source: PathBuf,
    /// The checksum that was verified, if one was given.
    pub checksum: Option<Checksum>,
    /// SHA-256 of the installed binary.
    pub sha256: Checksum,
    /// Size of the installed binary.
    pub bytes: u64,
    pub duration: Duration,
    /// `upgrades/<name>`.
    pub upgrade_dir: PathBuf,
    /// `upgrades/<name>/bin/<daemon>`.
    pub binary_path: PathBuf,
}

/// Install a binary that is already on this host (`upgrade.add` with a
/// path) as `upgrades_dir/upgrade_dir_name/bin/daemon_name`, through the
/// same staging directory, checks, fsyncs and `RENAME_NOREPLACE` as a
/// download: the source must be an absolute path to a regular executable
/// file (symlinks are followed) of at most `limits.max_artifact_bytes`; it
/// is copied, never moved or modified, and installed as is (no unpacking),
/// mode 0755. With `checksum`, the copied bytes must match it. The copy
/// gives up after `limits.overall_timeout`. On error nothing is installed.
pub async fn install_local_binary(
    source: &Path,
    checksum: Option<&Checksum>,
    upgrades_dir: &Path,
    upgrade_dir_name: &str,
    daemon_name: &str,
    limits: &DownloadLimits,
) -> Result<LocalInstallReport, DownloadError> {
    let source = source.to_path_buf();
    let checksum = checksum.cloned();
    let upgrades_dir = upgrades_dir.to_path_buf();
    let upgrade_dir_name = upgrade_dir_name.to_owned();
    let daemon_name = daemon_name.to_owned();
    let limits = limits.clone();
    tokio::task::spawn_blocking(move || {
        install_local_blocking(
            &source,
            checksum,
            &upgrades_dir,
            &upgrade_dir_name,
            &daemon_name,
            &limits,
        )
    })
    .await
    .map_err(|error| DownloadError::UnpackTask {
        reason: error.to_string(),
    })?
}

fn install_local_blocking(
    source: &Path,
    checksum: Option<Checksum>,
    upgrades_dir: &Path,
    upgrade_dir_name: &str,
    daemon_name: &str,
    limits: &DownloadLimits,
) -> Result<LocalInstallReport, DownloadError> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let deadline = started + limits.overall_timeout;
    validate_component("upgrade directory name", upgrade_dir_name)?;
    validate_component("daemon name", daemon_name)?;
    let upgrade_dir = upgrades_dir.join(upgrade_dir_name);
    refuse_existing(&upgrade_dir)?;
    let mut input = open_local_source(source, limits.max_artifact_bytes)?;
    std::fs::create_dir_all(upgrades_dir).map_err(io_error("create", upgrades_dir))?;
    let staging = StagingDir::create(upgrades_dir, upgrade_dir_name)?;
    let artifact_path = staging.path.join(STAGED_ARTIFACT);
    let shown = source.display().to_string();

    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&artifact_path)
        .map_err(io_error("create", &artifact_path))?;
    let mut sha256 = Hasher::for_checksum(None);
    let mut expected_hasher = match &checksum {
        Some(Checksum::Sha512(_)) => Some(Hasher::for_checksum(checksum.as_ref())),
        _ => None,
    };
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(DownloadError::Timeout {
                url: shown,
                phase: "copy",
                after: limits.overall_timeout,
            });
        }
        let read = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error("read", source)(error)),
        };
        bytes += read as u64;
        if bytes > limits.max_artifact_bytes {
            return Err(DownloadError::TooLarge {
                url: shown,
                limit: limits.max_artifact_bytes,
            });
        }
        sha256.update(&buffer[..read]);
        if let Some(hasher) = &mut expected_hasher {
            hasher.update(&buffer[..read]);
        }
        output
            .write_all(&buffer[..read])
            .map_err(io_error("write", &artifact_path))?;
    }
    output
        .sync_all()
        .map_err(io_error("fsync", &artifact_path))?;
    drop(output);
    if bytes == 0 {
        return Err(DownloadError::LocalSource {
            path: source.to_path_buf(),
            reason: "the file is empty".to_owned(),
        });
    }
    let sha256 = sha256.finalize();
    let observed = match expected_hasher {
        Some(hasher) => hasher.finalize(),
        None => sha256.clone(),
    };
    if let Some(expected) = &checksum
        && *expected != observed
    {
        return Err(DownloadError::ChecksumMismatch {
            url: shown,
            algorithm: expected.algorithm(),
            expected: expected.hex(),
            actual: observed.hex(),
        });
    }

    let tree = staging.path.join(STAGED_TREE);
    archive::unpack_as(
        &archive::UnpackRequest {
            artifact: artifact_path,
            tree: tree.clone(),
            daemon_name: daemon_name.to_owned(),
            url: shown,
            max_unpacked_bytes: limits.max_unpacked_bytes,
            max_entries: limits.max_archive_entries,
        },
        ArtifactFormat::Raw,
    )?;
    move_into_place(&tree, upgrades_dir, &upgrade_dir)?;
    drop(staging);
    let binary_path = upgrade_dir.join("bin").join(daemon_name);
    info!(
        source = %source.display(),
        path = %binary_path.display(),
        bytes,
        "installed upgrade binary from a local file"
    );
    Ok(LocalInstallReport {
        source: source.to_path_buf(),
        checksum,
        sha256,
        bytes,
        duration: started.elapsed(),
        upgrade_dir,
        binary_path,
    })
}

/// Open a local binary to stage: absolute, a regular file once opened (no
/// FIFO or device can make the copy hang), executable, not too large.
fn open_local_source(source: &Path, max_bytes: u64) -> Result<std::fs::File, DownloadError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let refuse = |reason: String| DownloadError::LocalSource {
        path: source.to_path_buf(),
        reason,
    };
    if !source.is_absolute() {
        return Err(refuse("not an absolute path".to_owned()));
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(source)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(refuse("no such file".to_owned()));
        }
        Err(error) => return Err(refuse(format!("cannot open it: {error}"))),
    };
    let metadata = file
        .metadata()
        .map_err(|error| refuse(format!("cannot inspect it: {error}")))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(refuse(format!("it is {what}, not a regular file")));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(refuse(format!("it is not executable (mode {mode:04o})")));
    }
    if metadata.len() > max_bytes {
        return Err(DownloadError::TooLarge {
            url: source.display().to_string(),
            limit: max_bytes,
        });
    }
    Ok(file)
}

/// Rename a complete, fsynced staging tree to `upgrade_dir` without ever
/// replacing an existing one, and make the rename durable. Not durable
/// means not installed: on an fsync failure the tree is taken back out.
fn move_into_place(
    tree: &Path,
    upgrades_dir: &Path,
    upgrade_dir: &Path,
) -> Result<(), DownloadError> {
    refuse_existing(upgrade_dir)?;
    durable::rename_no_replace(tree, upgrade_dir).map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => DownloadError::UpgradeDirExists {
            path: upgrade_dir.to_path_buf(),
        },
        _ => DownloadError::from(error),
    })?;
    if let Err(error) = durable::fsync_dir(upgrades_dir) {
        let _ = std::fs::remove_dir_all(upgrade_dir);
        return Err(error.into());
    }
    Ok(())
}

/// Where a fetched body goes.
enum Sink<'a> {
    Memory(Vec<u8>),
    File {
        file: tokio::fs::File,
        path: &'a Path,
    },
}

fn request_error(
    url: &ArtifactUrl,
    error: reqwest::Error,
    limits: &DownloadLimits,
) -> DownloadError {
    if error.is_timeout() {
        let (phase, after) = if error.is_connect() {
            ("connect", limits.connect_timeout)
        } else {
            ("waiting for data", limits.idle_timeout)
        };
        return DownloadError::Timeout {
            url: url.to_string(),
            phase,
            after,
        };
    }
    DownloadError::Request {
        url: url.to_string(),
        source: error.without_url(),
    }
}

struct Fetched {
    bytes: u64,
    digest: Checksum,
}

/// Streaming digest of the algorithm the checksum names (sha256 if none).
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn for_checksum(checksum: Option<&Checksum>) -> Self {
        match checksum {
            Some(Checksum::Sha512(_)) => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(hasher) => hasher.update(data),
            Hasher::Sha512(hasher) => hasher.update(data),
        }
    }

    fn finalize(self) -> Checksum {
        match self {
            Hasher::Sha256(hasher) => Checksum::Sha256(hasher.finalize().into()),
            Hasher::Sha512(hasher) => Checksum::Sha512(hasher.finalize().into()),
        }
    }
}

fn check_policy(url: &ArtifactUrl, policy: ChecksumPolicy) -> Result<(), DownloadError> {
    match (&url.checksum, policy) {
        (Some(_), _) => Ok(()),
        (None, ChecksumPolicy::Required) => Err(DownloadError::ChecksumRequired {
            url: url.to_string(),
        }),
        (None, ChecksumPolicy::Optional) => {
            warn!(url = %url, "downloading without a checksum (DAEMON_DOWNLOAD_MUST_HAVE_CHECKSUM=false)");
            Ok(())
        }
    }
}

fn verify_checksum(url: &ArtifactUrl, observed: &Checksum) -> Result<(), DownloadError> {
    match &url.checksum {
        Some(expected) if expected != observed => Err(DownloadError::ChecksumMismatch {
            url: url.to_string(),
            algorithm: expected.algorithm(),
            expected: expected.hex(),
            actual: observed.hex(),
        }),
        Some(_) => Ok(()),
        None => {
            warn!(url = %url, digest = %observed, "no checksum to verify against; recorded digest");
            Ok(())
        }
    }
}

/// Upgrade and daemon names become path components: one normal component.
fn validate_component(what: &'static str, name: &str) -> Result<(), DownloadError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name == "." || name == ".." {
        Some("is a relative path component")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.starts_with(".staging-") {
        Some("collides with Palisade's staging directories")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DownloadError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn refuse_existing(upgrade_dir: &Path) -> Result<(), DownloadError> {
    match std::fs::symlink_metadata(upgrade_dir) {
        Ok(_) => Err(DownloadError::UpgradeDirExists {
            path: upgrade_dir.to_path_buf(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error("inspect", upgrade_dir)(error)),
    }
}

/// `upgrades_dir/.staging-<name>-<random>`, removed on drop.
struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    fn create(upgrades_dir: &Path, upgrade_dir_name: &str) -> Result<Self, DownloadError> {
        use std::os::unix::fs::DirBuilderExt;
        let suffix: u64 = rand::rng().random();
        let path = upgrades_dir.join(format!(".staging-{upgrade_dir_name}-{suffix:016x}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_error("create", &path))?;
        Ok(StagingDir { path })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), %error, "cannot remove download staging directory");
        }
    }
}

/// A failed durable step (fsync, rename), as every filesystem failure of a
/// download is reported.
impl From<DurableError> for DownloadError {
    fn from(error: DurableError) -> Self {
        DownloadError::Io {
            operation: error.step.action(),
            path: error.path,
            source: error.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_HEX: &str = "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f";

    #[test]
    fn parse_artifact_url_table() {
        let sha512_hex = "ab".repeat(64);
        struct Case {
            input: String,
            expect: Result<(&'static str, Option<&'static str>), &'static str>,
        }
        let cases = [
            Case {
                input: format!("https://example.com/gaia.zip?checksum=sha256:{SHA256_HEX}"),
                expect: Ok(("https://example.com/gaia.zip", Some("sha256"))),
            },
            Case {
                input: format!("https://example.com/gaia.zip?checksum=SHA512:{sha512_hex}"),
                expect: Ok(("https://example.com/gaia.zip", Some("sha512"))),
            },
            Case {
                input: format!(
                    "https://example.com/g?token=a%2Bb&checksum=sha256:{SHA256_HEX}&x=1"
                ),
                expect: Ok(("https://example.com/g?token=a%2Bb&x=1", Some("sha256"))),
            },
            Case {
                input: "http://example.com/gaiad".to_owned(),
                expect: Ok(("http://example.com/gaiad", None)),
            },
            Case {
                input: "file:///tmp/gaiad".to_owned(),
                expect: Err("unsupported URL scheme \"file\""),
            },
            Case {
                input: "s3::https://bucket/x".to_owned(),
                expect: Err("unsupported URL scheme"),
            },
            Case {
                input: "not a url".to_owned(),
                expect: Err("invalid download URL"),
            },
            Case {
                input: "https://e.com/g?checksum=md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
                expect: Err("checksum algorithm md5"),
            },
            Case {
                input: "https://e.com/g?checksum=sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"
                    .to_owned(),
                expect: Err("checksum algorithm sha1"),
            },
            Case {
                input: "https://e.com/g?checksum=blake3:00".to_owned(),
                expect: Err("unknown checksum algorithm \"blake3\""),
            },
            Case {
                input: format!("https://e.com/g?checksum={SHA256_HEX}"),
                expect: Err("has no algorithm"),
            },
            Case {
                input: "https://e.com/g?checksum=sha256:zz".to_owned(),
                expect: Err("is not hex"),
            },
            Case {
                input: "https://e.com/g?checksum=sha256:abcd".to_owned(),
                expect: Err("has 4 hex digits, expected 64"),
            },
            Case {
                input: format!("https://e.com/g?checksum=sha512:{SHA256_HEX}"),
                expect: Err("expected 128"),
            },
            Case {
                input: format!(
                    "https://e.com/g?checksum=sha256:{SHA256_HEX}&checksum=sha256:{SHA256_HEX}"
                ),
                expect: Err("more than once"),
            },
        ];
        for case in cases {
            let result = parse_artifact_url(&case.input);
            match (result, case.expect) {
                (Ok(parsed), Ok((url, algorithm))) => {
                    assert_eq!(parsed.url.as_str(), url, "{}", case.input);
                    assert_eq!(
                        parsed.checksum.as_ref().map(Checksum::algorithm),
                        algorithm,
                        "{}",
                        case.input
                    );
                }
                (Err(error), Err(fragment)) => {
                    assert!(
                        error.to_string().contains(fragment),
                        "{}: {error}",
                        case.input
                    );
                }
                (result, expect) => panic!("{}: got {result:?}, expected {expect:?}", case.input),
            }
        }
    }

    #[test]
    fn urls_are_redacted_in_display_and_errors() {
        let parsed = parse_artifact_url(&format!(
            "https://user:secret@example.com/g?token=secret&checksum=sha256:{SHA256_HEX}"
        ))
        .unwrap();
        let shown = parsed.to_string();
        assert_eq!(
            shown,
            format!("https://example.com/g?checksum=sha256:{SHA256_HEX}")
        );
        let error = parse_artifact_url("https://user:secret@e.com/g?token=secret&checksum=md5:00")
            .unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
        let error = parse_artifact_url("ftp://user:secret@e.com/g?token=secret").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn binaries_from_info_table() {
        let url = format!("https://e.com/gaiad?checksum=sha256:{SHA256_HEX}");
        struct Case {
            info: String,
            expect: Result<&'static str, &'static str>,
        }
        let cases = [
            Case {
                info: format!(
                    r#"{{"binaries":{{"linux/amd64":"{url}","any":"{url}"}},"changelog":"x"}}"#
                ),
                expect: Ok("map:any,linux/amd64"),
            },
            Case {
                info: format!("  {url}  "),
                expect: Ok("info-url"),
            },
            Case {
                info: r#"{"changelog":"x"}"#.to_owned(),
                expect: Err("plan info has no binaries map and is not a URL"),
            },
            Case {
                info: "".to_owned(),
                expect: Err("plan info has no binaries map and is not a URL"),
            },
            Case {
                info: "v2.0.0 see notes".to_owned(),
                expect: Err("plan info has no binaries map and is not a URL"),
            },
            Case {
                info: r#"{"binaries":"x"}"#.to_owned(),
                expect: Err("\"binaries\" is not an object"),
            },
            Case {
                info: r#"{"binaries":{"any":1}}"#.to_owned(),
                expect: Err("binaries[\"any\"] is not a string"),
            },
            Case {
                info: r#"{"binaries":"#.to_owned(),
                expect: Err("invalid plan info JSON"),
            },
            Case {
                info: "file:///etc/info.json".to_owned(),
                expect: Err("unsupported URL scheme"),
            },
        ];
        for case in cases {
            match (binaries_from_info(&case.info), case.expect) {
                (Ok(PlanBinaries::Map(map)), Ok(expected)) => {
                    let keys: Vec<_> = map.keys().cloned().collect();
                    assert_eq!(format!("map:{}", keys.join(",")), expected, "{}", case.info);
                }
                (Ok(PlanBinaries::InfoUrl(_)), Ok("info-url")) => {}
                (Err(error), Err(fragment)) => {
                    assert!(
                        error.to_string().contains(fragment),
                        "{}: {error}",
                        case.info
                    );
                }
                (result, expect) => panic!("{}: got {result:?}, expected {expect:?}", case.info),
            }
        }
    }

    #[test]
    fn select_prefers_exact_platform_then_any() {
        let map = |pairs: &[(&str, &str)]| {
            PlanBinaries::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let exact = map(&[
            ("linux/amd64", "https://e.com/exact"),
            ("any", "https://e.com/any"),
        ]);
        assert_eq!(
            exact.select("linux/amd64").unwrap().url.as_str(),
            "https://e.com/exact"
        );
        assert_eq!(
            exact.select("linux/arm64").unwrap().url.as_str(),
            "https://e.com/any"
        );
        let error = map(&[("darwin/arm64", "https://e.com/d")])
            .select("linux/amd64")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "plan binaries have no entry for linux/amd64 and no \"any\" entry (keys present: darwin/arm64)"
        );
    }

    #[test]
    fn go_os_arch_table() {
        for (os, arch, expected) in [
            ("linux", "x86_64", "linux/amd64"),
            ("linux", "aarch64", "linux/arm64"),
            ("macos", "aarch64", "darwin/arm64"),
            ("linux", "x86", "linux/386"),
            ("linux", "riscv64", "linux/riscv64"),
        ] {
            assert_eq!(go_os_arch(os, arch), expected);
        }
    }

    #[test]
    fn component_validation() {
        for bad in ["", ".", "..", "a/b", ".staging-x"] {
            assert!(
                validate_component("upgrade directory name", bad).is_err(),
                "{bad:?}"
            );
        }
        validate_component("upgrade directory name", "v2.0.0%20rc").unwrap();
    }
}
