//! Upgrades staged ahead of time over the control RPC: `upgrade.list`,
//! `upgrade.add` and `upgrade.cancel` (`docs/rpc.md` §3, §7).
//!
//! Staging pre-installs a binary Cosmovisor-style at
//! `$DAEMON_HOME/cosmovisor/upgrades/<name>/bin/$DAEMON_NAME` before the
//! chain reaches the upgrade height; when it does, the supervision executor
//! finds the binary in place and switches without downloading anything.
//!
//! Invariants:
//! - Installing goes through [`crate::upgrade::download`] only (staging directory,
//!   verification, fsync, `RENAME_NOREPLACE`): an upgrade directory appears
//!   complete or not at all, and an existing one is never overwritten —
//!   `upgrade.add` on a staged name is refused ("cancel it first").
//! - One writer per upgrade name: while an `upgrade.add` or
//!   `upgrade.cancel` for a name runs, another one for the same name is
//!   refused.
//! - `upgrade.cancel` never removes what the node runs or is about to run:
//!   it refuses the version `current` points at, and the target of an
//!   upgrade in progress. The check and the rename aside happen under the
//!   [`Board`](crate::supervision::board::Board) lock, which the
//!   supervision executor also takes to publish an upgrade in progress
//!   (before the upgrade's job starts), so the two cannot interleave. The
//!   directory is renamed aside (`upgrades/.cancelled-<name>-<random>`)
//!   in one step and deleted after; a leftover is removed at the next start.
//! - All of this runs in the RPC dispatcher's task, never in the
//!   supervision executor: the node keeps running while a binary downloads.
//! - URLs may carry tokens: only their redacted form reaches answers and
//!   logs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_wire::rpc::params::{
    UpgradeAddParams, UpgradeCancelParams, UpgradeSource, check_upgrade_name,
};
use palisade_wire::rpc::results::{
    PlanOnDisk, StagedUpgrade, UpgradeAddResult, UpgradeCancelResult, UpgradeListResult,
};
use palisade_wire::rpc::{RpcError, code};
use palisade_wire::upgrade_record::UpgradeRecord;

use crate::config::{Config, UpgradeNameCase};
use crate::supervision::board::{NodeState, SharedBoard, board};
use crate::upgrade::download::{
    ArtifactUrl, Checksum, ChecksumPolicy, DownloadError, DownloadLimits, Downloader,
    install_local_binary, parse_artifact_url, parse_checksum_value,
};
use crate::upgrade::layout::{Layout, Version, fsync_dir, upgrade_dir_name};
use crate::upgrade::watch::{FileState, read_plan_file};

/// Longest upgrade directory name (after escaping): leaves room for the
/// staging prefix and suffix within the usual 255-byte file name limit.
const MAX_DIR_NAME_BYTES: usize = 200;
/// Most upgrade records `upgrade.list` returns (the newest ones).
pub const MAX_LISTED_RECORDS: usize = 10;
/// How much of the end of the upgrade record file `upgrade.list` reads.
const RECORD_TAIL_BYTES: u64 = 256 * 1024;
/// Most staged upgrades `upgrade.list` describes.
const MAX_LISTED_STAGED: usize = 100;
/// `upgrade.list`'s answer is kept below this many bytes (the RPC line
/// limit is 64 KiB) by dropping the oldest records first.
const MAX_LIST_BYTES: usize = 60_000;
/// File name of the upgrade record inside `$DAEMON_HOME/cosmovisor`.
const RECORD_FILE: &str = "palisade-upgrades.jsonl";
/// Prefix of an upgrade directory renamed aside by `upgrade.cancel`.
const CANCELLED_PREFIX: &str = ".cancelled-";

/// Where a binary to stage comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSource {
    /// Downloaded by the supervisor; the checksum is always set.
    Url(ArtifactUrl),
    /// A file on the validator host, copied.
    Path {
        path: PathBuf,
        checksum: Option<Checksum>,
    },
}

/// A valid `upgrade.add` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// The name as given (the on-chain plan name).
    pub name: String,
    pub source: StageSource,
}

fn invalid(field: &str, message: impl Into<String>) -> RpcError {
    RpcError::invalid_params(field, message)
}

fn wrong_state(message: impl Into<String>) -> RpcError {
    RpcError::new(code::WRONG_STATE, message)
}

fn internal(message: impl Into<String>) -> RpcError {
    RpcError::new(code::INTERNAL, message)
}

/// The `upgrades/` directory name for `name`, as the supervision executor maps
/// a plan of that name (recasing, then Go's path escaping). The name rule
/// is the contract's (`check_upgrade_name`); the escaped length is ours.
pub fn stage_dir_name(name: &str, case: UpgradeNameCase) -> Result<String, RpcError> {
    check_upgrade_name(name)?;
    let dir = upgrade_dir_name(name, case).map_err(|error| invalid("name", error.to_string()))?;
    if dir.len() > MAX_DIR_NAME_BYTES {
        return Err(invalid(
            "name",
            format!("upgrade name {name:?} is too long once escaped as a directory name"),
        ));
    }
    Ok(dir)
}

/// What the supervisor makes of validated `upgrade.add` params: the URL
/// parsed by the download rules (which redact tokens in every message)
/// and the checksum decoded; a URL's own `?checksum=` must agree with
/// `checksum`.
pub fn add_request(params: UpgradeAddParams) -> Result<AddRequest, RpcError> {
    let checksum = |text: &str| {
        parse_checksum_value(text.trim(), "the checksum field")
            .map_err(|error| invalid("checksum", error.to_string()))
    };
    let source = match params.source() {
        Some(UpgradeSource::Url {
            url,
            checksum: text,
        }) => {
            let mut parsed =
                parse_artifact_url(url).map_err(|error| invalid("url", error.to_string()))?;
            let checksum = checksum(text)?;
            if let Some(in_url) = &parsed.checksum
                && *in_url != checksum
            {
                return Err(invalid(
                    "checksum",
                    format!("the url's ?checksum={in_url} differs from `checksum` {checksum}"),
                ));
            }
            parsed.checksum = Some(checksum);
            StageSource::Url(parsed)
        }
        Some(UpgradeSource::Path {
            path,
            checksum: text,
        }) => StageSource::Path {
            path: PathBuf::from(path),
            checksum: text.map(checksum).transpose()?,
        },
        // `parse_params` validated the shape; this is unreachable from the
        // RPC, and still an answer rather than a panic.
        None => {
            return Err(invalid(
                "url",
                format!(
                    "a binary source is required: {}",
                    palisade_wire::rpc::params::UPGRADE_ADD_SHAPE
                ),
            ));
        }
    };
    Ok(AddRequest {
        name: params.name,
        source,
    })
}

/// Marks an upgrade name as being written; released on drop.
struct WriterSlot {
    writers: Arc<Mutex<BTreeSet<String>>>,
    dir: String,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        lock(&self.writers).remove(&self.dir);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Identity of a file's contents for the digest cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    fn of(metadata: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000
                + i128::from(metadata.ctime_nsec()),
        }
    }
}

type DigestCache = Arc<Mutex<HashMap<PathBuf, (FileKey, String)>>>;

/// Carries out the three `upgrade.*` methods for one supervisor.
pub struct UpgradeStager {
    layout: Layout,
    daemon_name: String,
    recase: UpgradeNameCase,
    upgrade_info_path: PathBuf,
    limits: DownloadLimits,
    board: SharedBoard,
    writers: Arc<Mutex<BTreeSet<String>>>,
    digests: DigestCache,
}

impl UpgradeStager {
    /// Downloads use `[upgrade] download-max-bytes` and
    /// `download-timeout`, like the upgrade-time downloads.
    pub fn new(config: &Config, board: SharedBoard) -> UpgradeStager {
        UpgradeStager {
            layout: Layout::new(&config.daemon_home, &config.daemon_name),
            daemon_name: config.daemon_name.clone(),
            recase: config.recase,
            upgrade_info_path: config.upgrade_info_path(),
            limits: DownloadLimits {
                max_artifact_bytes: config.download_max_bytes,
                overall_timeout: config.download_timeout,
                ..DownloadLimits::default()
            },
            board,
            writers: Arc::new(Mutex::new(BTreeSet::new())),
            digests: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Claim the one writer slot of `dir`.
    fn claim(&self, name: &str, dir: &str) -> Result<WriterSlot, RpcError> {
        let mut writers = lock(&self.writers);
        if !writers.insert(dir.to_owned()) {
            return Err(wrong_state(format!(
                "another upgrade.add or upgrade.cancel for upgrade {name} is running; \
                 wait for it to finish (see upgrade.list)"
            )));
        }
        Ok(WriterSlot {
            writers: self.writers.clone(),
            dir: dir.to_owned(),
        })
    }

    /// `upgrade.add`: stage a binary, answering once it is installed.
    pub async fn add(&self, params: UpgradeAddParams) -> Result<UpgradeAddResult, RpcError> {
        let request = add_request(params)?;
        let name = request.name.as_str();
        let dir = stage_dir_name(name, self.recase)?;
        let _slot = self.claim(name, &dir)?;
        let upgrades_dir = self.layout.upgrades_dir();
        let upgrade_dir = upgrades_dir.join(&dir);
        match std::fs::symlink_metadata(&upgrade_dir) {
            Ok(_) => {
                let running = self.points_at_current(&upgrade_dir);
                return Err(wrong_state(if running {
                    format!(
                        "upgrade {name} is the version the node runs ({}); it cannot be replaced",
                        upgrade_dir.display()
                    )
                } else {
                    format!(
                        "upgrade {name} is already staged at {}; cancel it first (upgrade.cancel)",
                        upgrade_dir.display()
                    )
                }));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(internal(format!(
                    "cannot inspect {}: {error}",
                    upgrade_dir.display()
                )));
            }
        }
        let (source, field) = match &request.source {
            StageSource::Url(url) => (url.to_string(), "url"),
            StageSource::Path { path, .. } => (path.display().to_string(), "path"),
        };
        tracing::info!(upgrade = %name, dir = %dir, %source, "staging an upgrade binary (upgrade.add)");
        let installed = match &request.source {
            StageSource::Url(url) => {
                let downloader = Downloader::new(self.limits.clone())
                    .map_err(|error| internal(error.to_string()))?;
                downloader
                    .install_artifact(
                        url,
                        &upgrades_dir,
                        &dir,
                        &self.daemon_name,
                        ChecksumPolicy::Required,
                    )
                    .await
                    .map(|report| (report.binary_path, None))
            }
            StageSource::Path { path, checksum } => install_local_binary(
                path,
                checksum.as_ref(),
                &upgrades_dir,
                &dir,
                &self.daemon_name,
                &self.limits,
            )
            .await
            .map(|report| {
                (
                    report.binary_path,
                    Some((report.sha256.hex(), report.bytes)),
                )
            }),
        };
        let (binary, digest) = match installed {
            Ok(installed) => installed,
            Err(error) => {
                tracing::warn!(upgrade = %name, %source, %error, "upgrade.add failed; nothing was installed");
                return Err(add_error(name, field, &error));
            }
        };
        let (sha256, size) = match digest {
            Some(digest) => digest,
            None => {
                let path = binary.clone();
                tokio::task::spawn_blocking(move || sha256_file(&path))
                    .await
                    .map_err(|error| internal(format!("hashing task failed: {error}")))?
                    .map_err(|error| {
                        internal(format!("cannot hash {}: {error}", binary.display()))
                    })?
            }
        };
        tracing::info!(upgrade = %name, path = %binary.display(), %sha256, size, %source, "upgrade binary staged");
        Ok(UpgradeAddResult {
            name: name.to_owned(),
            dir,
            path: binary.display().to_string(),
            sha256,
            size,
            source,
        })
    }

    /// Whether `current` resolves to `dir` (any spelling of the link).
    fn points_at_current(&self, dir: &Path) -> bool {
        match (
            std::fs::canonicalize(self.layout.current_link()),
            std::fs::canonicalize(dir),
        ) {
            (Ok(current), Ok(dir)) => current == dir,
            _ => false,
        }
    }

    /// `upgrade.cancel`: remove a staged upgrade.
    pub async fn cancel(
        &self,
        params: UpgradeCancelParams,
    ) -> Result<UpgradeCancelResult, RpcError> {
        let name = params.name;
        let dir = stage_dir_name(&name, self.recase)?;
        let _slot = self.claim(&name, &dir)?;
        let upgrades_dir = self.layout.upgrades_dir();
        let upgrade_dir = upgrades_dir.join(&dir);
        let aside = upgrades_dir.join(format!(
            "{CANCELLED_PREFIX}{dir}-{:016x}",
            rand::random::<u64>()
        ));
        {
            // Held across the checks and the rename: the executor publishes an
            // upgrade in progress under this lock before it looks for the
            // binary, so it either sees the upgrade gone or we see it busy.
            let board = board(&self.board);
            if board.node == NodeState::Upgrading
                && board.upgrading == Some(Version::Upgrade(dir.clone()))
            {
                return Err(wrong_state(format!(
                    "an upgrade to {name} is in progress; it cannot be cancelled now"
                )));
            }
            match std::fs::symlink_metadata(&upgrade_dir) {
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(wrong_state(format!(
                        "upgrade {name} is not staged ({} does not exist)",
                        upgrade_dir.display()
                    )));
                }
                Err(error) => {
                    return Err(internal(format!(
                        "cannot inspect {}: {error}",
                        upgrade_dir.display()
                    )));
                }
            }
            let current_is_it = match self.layout.current_version() {
                Ok(version) => version == Version::Upgrade(dir.clone()),
                Err(_) => false,
            } || self.points_at_current(&upgrade_dir);
            if current_is_it {
                return Err(wrong_state(format!(
                    "upgrade {name} is the version the node runs ({} -> upgrades/{dir}); \
                     it cannot be cancelled",
                    self.layout.current_link().display()
                )));
            }
            std::fs::rename(&upgrade_dir, &aside).map_err(|error| {
                internal(format!(
                    "cannot move {} aside: {error}; nothing was changed",
                    upgrade_dir.display()
                ))
            })?;
        }
        if let Err(error) = fsync_dir(&upgrades_dir) {
            tracing::warn!(%error, "upgrade.cancel: the rename may not be durable yet");
        }
        tracing::info!(upgrade = %name, path = %upgrade_dir.display(), "staged upgrade cancelled");
        let removal = {
            let aside = aside.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&aside)).await
        };
        let mut result = UpgradeCancelResult {
            name: name.clone(),
            dir: dir.clone(),
            removed: upgrade_dir.display().to_string(),
            note: None,
            warning: None,
        };
        match removal {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(path = %aside.display(), %error, "cannot delete a cancelled upgrade; it is removed at the next start");
                result.note = Some(format!(
                    "no longer staged, but {} could not be deleted ({error}); it is removed at the next start",
                    aside.display()
                ));
            }
            Err(error) => {
                tracing::warn!(path = %aside.display(), %error, "cannot delete a cancelled upgrade; it is removed at the next start");
            }
        }
        if let FileState::Plan(plan) = read_plan_file(&self.upgrade_info_path)
            && upgrade_dir_name(&plan.name, self.recase).ok().as_deref() == Some(dir.as_str())
        {
            result.warning = Some(format!(
                "data/upgrade-info.json plans upgrade {} at height {}: stage its binary again \
                 before then, or the node halts there (unless DAEMON_ALLOW_DOWNLOAD_BINARIES \
                 lets it download one)",
                plan.name,
                plan.height
                    .map_or_else(|| "?".to_owned(), |h| h.to_string()),
            ));
        }
        Ok(result)
    }

    /// `upgrade.list`: staged upgrades, the plan on disk, the record.
    pub async fn list(&self) -> Result<UpgradeListResult, RpcError> {
        let (node, upgrading, scheduled) = {
            let board = board(&self.board);
            (
                board.node,
                board.upgrading.clone(),
                board.scheduled_upgrade.clone(),
            )
        };
        let in_progress = match (node, upgrading) {
            (NodeState::Upgrading, Some(version)) => Some(version.to_string()),
            _ => None,
        };
        let staging: Vec<String> = lock(&self.writers).iter().cloned().collect();
        let layout = self.layout.clone();
        let recase = self.recase;
        let upgrade_info_path = self.upgrade_info_path.clone();
        let digests = self.digests.clone();
        let mut listing = tokio::task::spawn_blocking(move || {
            scan(&layout, recase, &upgrade_info_path, &digests)
        })
        .await
        .map_err(|error| internal(format!("listing task failed: {error}")))?;
        listing.in_progress = in_progress;
        listing.scheduled = scheduled;
        listing.staging = staging;
        trim_to_fit(&mut listing);
        Ok(listing)
    }
}

/// The error of a failed `upgrade.add`: the reason, and that nothing was
/// installed. Problems of the given source are `-32602` naming it (`url`
/// or `path`, `checksum` for a mismatch); an unreachable server or a
/// timeout is `-32004` (try again); a local I/O failure `-32010`.
fn add_error(name: &str, field: &str, error: &DownloadError) -> RpcError {
    let message = format!("upgrade {name} was not staged: {error}; nothing was installed");
    match error {
        DownloadError::ChecksumMismatch { .. } => invalid("checksum", message),
        DownloadError::UpgradeDirExists { .. } => wrong_state(format!(
            "upgrade {name} was staged by someone else meanwhile; nothing was changed \
             (cancel it first to replace it)"
        )),
        DownloadError::Request { .. } | DownloadError::Timeout { .. } => wrong_state(message),
        DownloadError::Io { .. } | DownloadError::UnpackTask { .. } => internal(message),
        DownloadError::HttpClient { .. } => internal(message),
        _ => invalid(field, message),
    }
}

/// SHA-256 (hex) and size of a file.
fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// SHA-256 of `path`, from the cache while the file is unchanged.
fn cached_sha256(path: &Path, cache: &DigestCache) -> std::io::Result<String> {
    let key = FileKey::of(&std::fs::metadata(path)?);
    if let Some((cached_key, digest)) = lock(cache).get(path)
        && *cached_key == key
    {
        return Ok(digest.clone());
    }
    let (digest, _) = sha256_file(path)?;
    // Only cache what is still the same file after hashing.
    if FileKey::of(&std::fs::metadata(path)?) == key {
        lock(cache).insert(path.to_path_buf(), (key, digest.clone()));
    }
    Ok(digest)
}

/// The blocking part of `upgrade.list`; `staging`, `in_progress` and
/// `scheduled` are the caller's.
fn scan(
    layout: &Layout,
    recase: UpgradeNameCase,
    upgrade_info_path: &Path,
    digests: &DigestCache,
) -> UpgradeListResult {
    let current = layout.current_version().ok();

    // Staged upgrades: every visible directory under upgrades/.
    let mut names: Vec<String> = match std::fs::read_dir(layout.upgrades_dir()) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let total = names.len();
    let mut seen = HashSet::new();
    let staged: Vec<StagedUpgrade> = names
        .into_iter()
        .take(MAX_LISTED_STAGED)
        .map(|name| {
            let version = Version::Upgrade(name.clone());
            let path = layout.binary(&version);
            let mut entry = StagedUpgrade {
                name,
                path: path.display().to_string(),
                current: current.as_ref() == Some(&version),
                sha256: None,
                size: None,
                error: None,
            };
            let usable = layout.check_binary(&version);
            match usable.map_err(|error| error.to_string()).and_then(|path| {
                let size = std::fs::metadata(&path)
                    .map_err(|error| error.to_string())?
                    .len();
                let digest = cached_sha256(&path, digests).map_err(|error| error.to_string())?;
                Ok((digest, size))
            }) {
                Ok((digest, size)) => {
                    entry.sha256 = Some(digest);
                    entry.size = Some(size);
                    seen.insert(path);
                }
                Err(error) => entry.error = Some(error),
            }
            entry
        })
        .collect();
    lock(digests).retain(|path, _| seen.contains(path));

    // The plan the node wrote, and whether it can be carried out as is.
    let plan_on_disk = match read_plan_file(upgrade_info_path) {
        FileState::Absent => None,
        FileState::Plan(plan) => Some(match upgrade_dir_name(&plan.name, recase) {
            Ok(dir) => {
                let version = Version::Upgrade(dir.clone());
                PlanOnDisk::Usable {
                    staged: layout.check_binary(&version).is_ok(),
                    applied: current.as_ref() == Some(&version),
                    name: plan.name,
                    height: plan.height,
                    dir,
                }
            }
            Err(error) => PlanOnDisk::BadName {
                name: plan.name,
                height: plan.height,
                error: error.to_string(),
            },
        }),
        FileState::Incomplete => Some(PlanOnDisk::Unreadable {
            error: "incomplete (still being written?)".into(),
        }),
        FileState::Invalid(reason) => Some(PlanOnDisk::Unreadable { error: reason }),
    };

    let (records, skipped) = recent_records(&layout.root().join(RECORD_FILE), MAX_LISTED_RECORDS);
    UpgradeListResult {
        current: current.as_ref().map(Version::to_string),
        staged,
        staged_not_listed: (total > MAX_LISTED_STAGED).then(|| (total - MAX_LISTED_STAGED) as u64),
        staging: Vec::new(),
        plan_on_disk,
        in_progress: None,
        scheduled: None,
        records,
        records_unreadable_lines: (skipped > 0).then_some(skipped as u64),
    }
}

/// The newest `max` records (oldest first) from the last
/// [`RECORD_TAIL_BYTES`] of the record file, and how many lines there did
/// not parse. A missing file has no records.
pub fn recent_records(path: &Path, max: usize) -> (Vec<UpgradeRecord>, usize) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(RECORD_TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file
            .take(RECORD_TAIL_BYTES)
            .read_to_end(&mut bytes)
            .is_err()
    {
        return (Vec::new(), 1);
    }
    let mut text: &[u8] = &bytes;
    if start > 0 {
        // Started mid-line: skip to the first whole line.
        match text.iter().position(|&byte| byte == b'\n') {
            Some(newline) => text = &text[newline + 1..],
            None => return (Vec::new(), 0),
        }
    }
    let mut records = Vec::new();
    let mut skipped = 0;
    for line in text.split(|&byte| byte == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<UpgradeRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) => skipped += 1,
        }
    }
    let keep = records.len().saturating_sub(max);
    (records.into_iter().skip(keep).collect(), skipped)
}

/// Drop the oldest records until the answer fits in one RPC line.
fn trim_to_fit(listing: &mut UpgradeListResult) {
    let size = |listing: &UpgradeListResult| {
        serde_json::to_string(listing).map_or(usize::MAX, |text| text.len())
    };
    while size(listing) > MAX_LIST_BYTES && !listing.records.is_empty() {
        listing.records.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use palisade_wire::rpc::methods::{UpgradeAdd, UpgradeCancel, UpgradeList, parse_params};
    use palisade_wire::rpc::params::MAX_UPGRADE_NAME_BYTES as MAX_NAME_BYTES;
    use serde_json::{Value, json};

    use super::*;

    /// What `upgrade.add` makes of `params`: the contract's parse, then ours.
    fn parse_add_params(params: &Value) -> Result<AddRequest, RpcError> {
        parse_params::<UpgradeAdd>(params.clone()).and_then(add_request)
    }

    fn parse_list_params(params: &Value) -> Result<(), RpcError> {
        parse_params::<UpgradeList>(params.clone()).map(drop)
    }

    /// The three methods as the RPC calls them: JSON params in, JSON out.
    impl UpgradeStager {
        async fn add_json(&self, params: &Value) -> Result<Value, RpcError> {
            let params = parse_params::<UpgradeAdd>(params.clone())?;
            Ok(serde_json::to_value(self.add(params).await?).unwrap())
        }

        async fn cancel_json(&self, params: &Value) -> Result<Value, RpcError> {
            let params = parse_params::<UpgradeCancel>(params.clone())?;
            Ok(serde_json::to_value(self.cancel(params).await?).unwrap())
        }

        async fn list_json(&self, params: &Value) -> Result<Value, RpcError> {
            parse_list_params(params)?;
            Ok(serde_json::to_value(self.list().await?).unwrap())
        }
    }

    const SHA256: &str = "aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f";

    /// A parse that succeeds (with a description of the result) or fails
    /// with `-32602` naming (field, message fragment).
    type Expected = Result<&'static str, (&'static str, &'static str)>;

    #[test]
    fn names_table() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let max = "a".repeat(MAX_NAME_BYTES);
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("v2", Ok("v2")),
            ("V2-Gaia", Ok("v2-gaia")),
            ("v2.0.0-rc1", Ok("v2.0.0-rc1")),
            ("v2 beta", Ok("v2%20beta")),
            ("ünï", Ok("%C3%BCn%C3%AF")),
            (&max, Ok(&max)),
            ("", Err("is empty")),
            (".", Err("relative path component")),
            ("..", Err("relative path component")),
            ("a/b", Err("path separator")),
            ("../etc", Err("path separator")),
            ("/abs", Err("path separator")),
            ("a\\b", Err("path separator")),
            ("v2\n", Err("control character")),
            ("v2\u{1b}[31m", Err("control character")),
            ("nul\0", Err("control character")),
            (".staging-v2", Err("starts with '.'")),
            (".cancelled-v2-00", Err("starts with '.'")),
            (" v2", Err("whitespace")),
            ("v2 ", Err("whitespace")),
            (&long, Err("longer than 128 bytes")),
        ];
        for (name, expected) in cases {
            let got = stage_dir_name(name, UpgradeNameCase::Lower);
            match (got, expected) {
                (Ok(dir), Ok(expected)) => assert_eq!(dir, *expected, "{name:?}"),
                (Err(error), Err(fragment)) => {
                    assert_eq!(error.code, code::INVALID_PARAMS, "{name:?}");
                    assert_eq!(error.data, Some(json!({"field": "name"})), "{name:?}");
                    assert!(
                        error.message.contains(fragment),
                        "{name:?}: {}",
                        error.message
                    );
                }
                (got, expected) => panic!("{name:?}: got {got:?}, expected {expected:?}"),
            }
        }
        // Escaping can triple a name's length: a name within the byte
        // limit can still be too long as a directory.
        let wide = "é".repeat(60);
        let error = stage_dir_name(&wide, UpgradeNameCase::AsIs).unwrap_err();
        assert!(error.message.contains("too long once escaped"), "{error:?}");
        assert_eq!(
            stage_dir_name("V2", UpgradeNameCase::AsIs).unwrap(),
            "V2",
            "COSMOVISOR_DISABLE_RECASE keeps the case"
        );
    }

    /// What the supervisor adds to the contract's checks of `upgrade.add`
    /// (which `palisade_wire::rpc::params` tests): the URL parsed and
    /// redacted, the checksum decoded and matched against the URL's own.
    #[test]
    fn add_params_table() {
        let url = "http://127.0.0.1:9/simd";
        let good_checksum = format!("sha256:{SHA256}");
        let other_checksum = format!("sha256:{}", "0".repeat(64));
        // (params, Ok(description) | Err((field, message fragment)))
        let cases: Vec<(Value, Expected)> = vec![
            (
                json!({"name": "v2", "url": url, "checksum": good_checksum}),
                Ok("url sha256"),
            ),
            (
                json!({"name": "v2", "url": url, "checksum": format!("SHA512:{}", "ab".repeat(64))}),
                Ok("url sha512"),
            ),
            (
                json!({"name": "v2", "url": format!("{url}?checksum={good_checksum}"), "checksum": good_checksum}),
                Ok("url sha256"),
            ),
            (json!({"name": "v2", "path": "/opt/gaiad"}), Ok("path")),
            (
                json!({"name": "v2", "path": "/opt/gaiad", "checksum": good_checksum}),
                Ok("path sha256"),
            ),
            (
                json!({"name": "v2", "url": format!("{url}?checksum={other_checksum}"), "checksum": good_checksum}),
                Err(("checksum", "differs")),
            ),
            (
                json!({"name": "v2", "url": "file:///opt/gaiad", "checksum": good_checksum}),
                Err(("url", "unsupported URL scheme")),
            ),
            (
                json!({"name": "v2", "url": "not a url", "checksum": good_checksum}),
                Err(("url", "invalid download URL")),
            ),
        ];
        for (params, expected) in cases {
            match (parse_add_params(&params), expected) {
                (Ok(request), Ok(description)) => {
                    assert_eq!(request.name, "v2", "{params}");
                    let got = match &request.source {
                        StageSource::Url(url) => {
                            assert_eq!(url.url.as_str(), "http://127.0.0.1:9/simd", "{params}");
                            format!("url {}", url.checksum.as_ref().unwrap().algorithm())
                        }
                        StageSource::Path { path, checksum } => {
                            assert_eq!(path, Path::new("/opt/gaiad"), "{params}");
                            match checksum {
                                Some(checksum) => format!("path {}", checksum.algorithm()),
                                None => "path".to_owned(),
                            }
                        }
                    };
                    assert_eq!(got, description, "{params}");
                }
                (Err(error), Err((field, fragment))) => {
                    assert_eq!(error.code, code::INVALID_PARAMS, "{params}");
                    assert_eq!(
                        error.data,
                        Some(json!({"field": field})),
                        "{params}: {error:?}"
                    );
                    assert!(
                        error.message.contains(fragment),
                        "{params}: {}",
                        error.message
                    );
                }
                (got, expected) => panic!("{params}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn urls_with_tokens_are_redacted_in_errors() {
        let error = parse_add_params(&json!({
            "name": "v2",
            "url": "ftp://user:hunter2@example.com/simd?token=hunter2",
            "checksum": format!("sha256:{SHA256}"),
        }))
        .unwrap_err();
        assert!(!error.message.contains("hunter2"), "{}", error.message);
    }

    fn record_line(name: &str) -> String {
        format!(
            r#"{{"name":"{name}","height":5,"detected_by":"upgrade_info_file","detected_at":"t","steps":[],"outcome":{{"status":"completed"}},"switch_ms":9}}"#
        )
    }

    #[test]
    fn recent_records_are_bounded_and_skip_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        assert_eq!(recent_records(&path, 10), (Vec::new(), 0));
        let mut text = String::new();
        for index in 0..15 {
            text.push_str(&record_line(&format!("v{index}")));
            text.push('\n');
            if index == 13 {
                text.push_str("{torn\n\n");
            }
        }
        std::fs::write(&path, &text).unwrap();
        let (records, skipped) = recent_records(&path, 10);
        let records: Vec<Value> = records
            .iter()
            .map(|record| serde_json::to_value(record).unwrap())
            .collect();
        let names: Vec<&str> = records
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14"
            ]
        );
        assert_eq!(skipped, 1);
        assert_eq!(records[0]["outcome"]["status"], "completed");

        // A file longer than the tail: only whole lines from the tail.
        let filler = format!("{}\n", record_line(&"x".repeat(1000)));
        let mut big = String::new();
        while (big.len() as u64) < RECORD_TAIL_BYTES * 2 {
            big.push_str(&filler);
        }
        big.push_str(&record_line("last"));
        big.push('\n');
        std::fs::write(&path, &big).unwrap();
        let (records, skipped) = recent_records(&path, 3);
        assert_eq!(
            skipped, 0,
            "the cut line at the start is not counted as bad"
        );
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].name, "last");
    }

    #[test]
    fn listing_is_trimmed_to_one_line() {
        let big = "x".repeat(20_000);
        let record = |name: &str| {
            serde_json::from_str::<UpgradeRecord>(&record_line(&format!("{name}{big}"))).unwrap()
        };
        let mut listing = UpgradeListResult {
            current: None,
            staged: Vec::new(),
            staged_not_listed: None,
            staging: Vec::new(),
            plan_on_disk: None,
            in_progress: None,
            scheduled: None,
            records: vec![record("a"), record("b"), record("c"), record("d")],
            records_unreadable_lines: None,
        };
        trim_to_fit(&mut listing);
        assert!(serde_json::to_string(&listing).unwrap().len() <= MAX_LIST_BYTES);
        assert_eq!(listing.records.len(), 2);
        assert!(
            listing.records[1].name.starts_with('d'),
            "the newest are kept"
        );
    }

    struct Home {
        dir: tempfile::TempDir,
        stager: UpgradeStager,
        board: SharedBoard,
        layout: Layout,
    }

    fn home() -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let env: std::collections::BTreeMap<String, String> = [
            ("DAEMON_HOME", dir.path().to_str().unwrap()),
            ("DAEMON_NAME", "gaiad"),
            ("UNSAFE_SKIP_BACKUP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::load(None, &env).unwrap();
        let layout = Layout::new(&config.daemon_home, &config.daemon_name);
        let genesis = dir.path().join("genesis-gaiad");
        write_executable(&genesis, b"#!/bin/sh\necho genesis\n");
        layout.init(&genesis).unwrap();
        let board = crate::supervision::board::new_board(false);
        let stager = UpgradeStager::new(&config, board.clone());
        Home {
            dir,
            stager,
            board,
            layout,
        }
    }

    fn write_executable(path: &Path, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    /// Entries of upgrades/, hidden ones included.
    fn upgrades_entries(home: &Home) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(home.layout.upgrades_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn add_by_path_list_and_cancel() {
        let home = home();
        let source = home.dir.path().join("gaiad-v2");
        let contents = b"#!/bin/sh\necho v2\n";
        write_executable(&source, contents);
        let result = home
            .stager
            .add_json(&json!({"name": "V2", "path": source, "checksum": format!("sha256:{}", sha256_hex(contents))}))
            .await
            .unwrap();
        assert_eq!(result["name"], "V2");
        assert_eq!(result["dir"], "v2", "recased like a plan name");
        assert_eq!(result["sha256"], sha256_hex(contents));
        assert_eq!(result["size"], contents.len());
        let binary = home.layout.binary(&Version::Upgrade("v2".into()));
        assert_eq!(result["path"], json!(binary));
        assert_eq!(std::fs::read(&binary).unwrap(), contents);
        assert!(source.exists(), "the source is copied, not moved");
        assert_eq!(upgrades_entries(&home), ["v2"], "no staging leftovers");

        // Staged already: refused, whatever the source.
        let again = home
            .stager
            .add_json(&json!({"name": "v2", "path": source}))
            .await
            .unwrap_err();
        assert_eq!(again.code, code::WRONG_STATE);
        assert!(again.message.contains("cancel it first"), "{again:?}");

        // A plan on disk for it.
        std::fs::write(
            home.dir.path().join("data/upgrade-info.json"),
            r#"{"name":"V2","height":40,"info":""}"#,
        )
        .unwrap();
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["current"], "genesis");
        assert_eq!(listing["staged"][0]["name"], "v2", "{listing}");
        assert_eq!(listing["staged"][0]["sha256"], sha256_hex(contents));
        assert_eq!(listing["staged"][0]["current"], false);
        assert_eq!(
            listing["plan_on_disk"],
            json!({"name": "V2", "height": 40, "dir": "v2", "staged": true, "applied": false})
        );
        assert_eq!(listing["records"], json!([]));
        assert_eq!(listing["in_progress"], Value::Null);

        // In progress: cancel refused; once halted it is allowed.
        {
            let mut board = board(&home.board);
            board.node = NodeState::Upgrading;
            board.upgrading = Some(Version::Upgrade("v2".into()));
        }
        let busy = home
            .stager
            .cancel_json(&json!({"name": "v2"}))
            .await
            .unwrap_err();
        assert_eq!(busy.code, code::WRONG_STATE);
        assert!(busy.message.contains("in progress"), "{busy:?}");
        assert!(binary.exists());
        let listing = home.stager.list_json(&json!({})).await.unwrap();
        assert_eq!(listing["in_progress"], "upgrades/v2");
        board(&home.board).node = NodeState::Halted;

        let cancelled = home
            .stager
            .cancel_json(&json!({"name": "V2"}))
            .await
            .unwrap();
        assert_eq!(cancelled["dir"], "v2");
        assert!(
            cancelled["warning"].as_str().unwrap().contains("height 40"),
            "{cancelled}"
        );
        assert!(
            upgrades_entries(&home).is_empty(),
            "{:?}",
            upgrades_entries(&home)
        );
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["staged"], json!([]));
        assert_eq!(listing["plan_on_disk"]["staged"], false);

        let missing = home
            .stager
            .cancel_json(&json!({"name": "v2"}))
            .await
            .unwrap_err();
        assert_eq!(missing.code, code::WRONG_STATE);
        assert!(missing.message.contains("is not staged"), "{missing:?}");
    }

    #[tokio::test]
    async fn the_current_version_cannot_be_cancelled_or_replaced() {
        let home = home();
        let source = home.dir.path().join("gaiad-v3");
        write_executable(&source, b"#!/bin/sh\n");
        home.stager
            .add_json(&json!({"name": "v3", "path": source}))
            .await
            .unwrap();
        home.layout
            .switch_current(&Version::Upgrade("v3".into()))
            .unwrap();
        let refused = home
            .stager
            .cancel_json(&json!({"name": "v3"}))
            .await
            .unwrap_err();
        assert_eq!(refused.code, code::WRONG_STATE);
        assert!(
            refused.message.contains("the version the node runs"),
            "{refused:?}"
        );
        let replaced = home
            .stager
            .add_json(&json!({"name": "v3", "path": source}))
            .await
            .unwrap_err();
        assert_eq!(replaced.code, code::WRONG_STATE);
        assert!(
            replaced.message.contains("cannot be replaced"),
            "{replaced:?}"
        );
        assert!(
            home.layout
                .check_binary(&Version::Upgrade("v3".into()))
                .is_ok()
        );
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["current"], "upgrades/v3");
        assert_eq!(listing["staged"][0]["current"], true);

        // An absolute `current` (older Cosmovisor) is recognised too.
        std::fs::remove_file(home.layout.current_link()).unwrap();
        std::os::unix::fs::symlink(
            home.layout.upgrades_dir().join("v3"),
            home.layout.current_link(),
        )
        .unwrap();
        let refused = home
            .stager
            .cancel_json(&json!({"name": "v3"}))
            .await
            .unwrap_err();
        assert!(
            refused.message.contains("the version the node runs"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn bad_local_sources_install_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let home = home();
        let dir = home.dir.path();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let empty = dir.join("empty");
        write_executable(&empty, b"");
        let good = dir.join("good");
        write_executable(&good, b"#!/bin/sh\nexit 0\n");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        let link = dir.join("link-to-good");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        // (params, field, fragment)
        let cases = [
            (
                json!({"name": "v2", "path": dir.join("missing")}),
                "path",
                "no such file",
            ),
            (
                json!({"name": "v2", "path": dir}),
                "path",
                "a directory, not a regular file",
            ),
            (
                json!({"name": "v2", "path": plain}),
                "path",
                "not executable (mode 0644)",
            ),
            (
                json!({"name": "v2", "path": empty}),
                "path",
                "the file is empty",
            ),
            (
                json!({"name": "v2", "path": fifo}),
                "path",
                "a special file",
            ),
            (
                json!({"name": "v2", "path": good, "checksum": wrong}),
                "checksum",
                "checksum mismatch",
            ),
        ];
        for (params, field, fragment) in cases {
            let error = home.stager.add_json(&params).await.unwrap_err();
            assert_eq!(error.code, code::INVALID_PARAMS, "{params}: {error:?}");
            assert_eq!(
                error.data,
                Some(json!({"field": field})),
                "{params}: {error:?}"
            );
            assert!(
                error.message.contains(fragment),
                "{params}: {}",
                error.message
            );
            assert!(
                error.message.contains("nothing was installed"),
                "{params}: {}",
                error.message
            );
            assert!(
                upgrades_entries(&home).is_empty(),
                "{params}: {:?}",
                upgrades_entries(&home)
            );
        }
        // A symlink to an executable is followed; the file is copied.
        let result = home
            .stager
            .add_json(&json!({"name": "v2", "path": link}))
            .await
            .unwrap();
        let binary = home.layout.binary(&Version::Upgrade("v2".into()));
        assert!(
            !std::fs::symlink_metadata(&binary)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(result["sha256"], sha256_hex(b"#!/bin/sh\nexit 0\n"));
    }

    #[tokio::test]
    async fn one_writer_per_name() {
        let home = home();
        let source = home.dir.path().join("gaiad-v2");
        write_executable(&source, b"#!/bin/sh\n");
        let slot = home.stager.claim("v2", "v2").unwrap();
        for result in [
            home.stager
                .add_json(&json!({"name": "v2", "path": source}))
                .await,
            home.stager
                .add_json(&json!({"name": "V2", "path": source}))
                .await,
            home.stager.cancel_json(&json!({"name": "v2"})).await,
        ] {
            let error = result.unwrap_err();
            assert_eq!(error.code, code::WRONG_STATE);
            assert!(error.message.contains("is running"), "{error:?}");
        }
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["staging"], json!(["v2"]));
        // Other names are not blocked.
        home.stager
            .add_json(&json!({"name": "v3", "path": source}))
            .await
            .unwrap();
        drop(slot);
        home.stager
            .add_json(&json!({"name": "v2", "path": source}))
            .await
            .unwrap();
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["staging"], json!([]));
        let names: Vec<&str> = listing["staged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["v2", "v3"]);
    }

    #[tokio::test]
    async fn unusable_upgrade_dirs_are_listed_with_the_reason_and_can_be_cancelled() {
        let home = home();
        std::fs::create_dir_all(home.layout.upgrades_dir().join("broken/bin")).unwrap();
        let listing = home.stager.list_json(&Value::Null).await.unwrap();
        assert_eq!(listing["staged"][0]["name"], "broken");
        assert!(
            listing["staged"][0]["error"]
                .as_str()
                .unwrap()
                .contains("does not exist"),
            "{listing}"
        );
        assert!(listing["staged"][0].get("sha256").is_none());
        home.stager
            .cancel_json(&json!({"name": "broken"}))
            .await
            .unwrap();
        assert!(upgrades_entries(&home).is_empty());
    }
}
