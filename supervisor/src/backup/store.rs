//! Where bundles are kept: the [`BackupStore`] abstraction (async and
//! object-safe, so a remote store over SSH to a bastion can implement it) and
//! [`LocalDirStore`], a directory on this host.
//!
//! Stores hold ciphertext only and are not trusted: everything read back is
//! verified by [`crate::backup::open_bundle`]. A store never overwrites a
//! file name; bundles are immutable once published.

use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use palisade_daemon::durable::{self, AtomicWrite, DurableError, Existing};

use super::bundle::BackupFileName;
use super::open::MAX_CIPHERTEXT_BYTES;

/// A boxed, sendable future, so that [`BackupStore`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file name is empty, has `/`, starts with `.`, or has control
    /// characters; such names could escape or hide in the store.
    #[error("invalid backup file name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A file of that name exists already; bundles are never overwritten.
    #[error("{0} already exists in the store")]
    AlreadyExists(String),
    /// No file of that name.
    #[error("{0} is not in the store")]
    NotFound(String),
    /// The stored file is larger than any bundle can be.
    #[error("{name} is {bytes} bytes, more than the {limit}-byte limit")]
    TooLarge {
        name: String,
        bytes: u64,
        limit: usize,
    },
    /// The operation did not finish in time.
    #[error("store did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Retention was asked to keep no backups at all.
    #[error("retention must keep at least one backup")]
    InvalidRetention,
    /// A remote store is unreachable or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A local file-system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A place bundles are published to and gathered from.
pub trait BackupStore: Send + Sync {
    /// A short stable name for reports and logs (e.g. the bastion's name).
    fn name(&self) -> &str;
    /// Stores `bytes` under `file_name` atomically; fails with
    /// [`StoreError::AlreadyExists`] rather than overwrite.
    fn put<'a>(
        &'a self,
        file_name: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Names of the files in the store, sorted.
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// The bytes of one file (at most [`MAX_CIPHERTEXT_BYTES`]).
    fn get<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;
    /// Deletes one file (for retention).
    fn remove<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Checks that a name is a plain file name inside the store
/// (`palisade_wire::backup_store::file_name_problem`, the rule the bastion's
/// store applies too).
pub fn validate_file_name(name: &str) -> Result<(), StoreError> {
    match palisade_wire::backup_store::file_name_problem(name) {
        Some(reason) => Err(StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A store in a local directory (0700, files 0600). Writes go through
/// `palisade_daemon::durable` with [`Existing::Refuse`]: a hidden temporary
/// file that is fsynced, then hard-linked to its final name (which fails if
/// the name exists, so nothing is ever overwritten), then the directory is
/// fsynced. Hidden (`.`) files are not part of the store.
#[derive(Debug)]
pub struct LocalDirStore {
    dir: PathBuf,
    name: String,
}

impl LocalDirStore {
    /// Opens (creating if needed) `dir` as a store named `name`, forcing its
    /// mode to 0700 and removing temporary files left by an interrupted
    /// write. One process should own a directory.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let io_error = |op, source| StoreError::Io {
            op,
            path: dir.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_error("create directory", e))?;
        let metadata = fs::metadata(&dir).map_err(|e| io_error("inspect", e))?;
        if !metadata.is_dir() {
            return Err(io_error(
                "use as a directory",
                io::Error::other("not a directory"),
            ));
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("set mode 0700 on", e))?;
        for entry in fs::read_dir(&dir).map_err(|e| io_error("list", e))? {
            let entry = entry.map_err(|e| io_error("list", e))?;
            let name = entry.file_name();
            if durable::is_temp_file_name(&name)
                || name
                    .as_encoded_bytes()
                    .starts_with(LEGACY_TEMP_PREFIX.as_bytes())
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(LocalDirStore {
            dir,
            name: name.into(),
        })
    }

    /// The directory this store writes to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How this store named its temp files before `palisade_daemon::durable`
/// wrote them; still cleaned up on open.
const LEGACY_TEMP_PREFIX: &str = ".tmp-";

fn io_at<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl From<DurableError> for StoreError {
    fn from(error: DurableError) -> Self {
        StoreError::Io {
            op: error.step.action(),
            path: error.path,
            source: error.source,
        }
    }
}

fn put_blocking(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let target = dir.join(file_name);
    if target.symlink_metadata().is_ok() {
        return Err(StoreError::AlreadyExists(file_name.to_owned()));
    }
    AtomicWrite::new(0o600, Existing::Refuse)
        .write(&target, bytes)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => StoreError::AlreadyExists(file_name.to_owned()),
            _ => StoreError::from(error),
        })
}

fn list_blocking(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at("list", dir))? {
        let entry = entry.map_err(io_at("list", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && validate_file_name(&name).is_ok() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn get_blocking(dir: &Path, file_name: &str) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(file_name);
    let file = fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound(file_name.to_owned())
        } else {
            io_at("open", &path)(e)
        }
    })?;
    let length = file.metadata().map_err(io_at("inspect", &path))?.len();
    let too_large = |bytes| StoreError::TooLarge {
        name: file_name.to_owned(),
        bytes,
        limit: MAX_CIPHERTEXT_BYTES,
    };
    if length > MAX_CIPHERTEXT_BYTES as u64 {
        return Err(too_large(length));
    }
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(MAX_CIPHERTEXT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_at("read", &path))?;
    if bytes.len() > MAX_CIPHERTEXT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn remove_blocking(dir: &Path, file_name: &str) -> Result<(), StoreError> {
    let path = dir.join(file_name);
    fs::remove_file(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound(file_name.to_owned())
        } else {
            io_at("remove", &path)(e)
        }
    })?;
    Ok(durable::fsync_dir(dir)?)
}

/// Runs blocking file-system work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Unavailable(format!(
                "store task failed: {join}"
            )))
        })
}

/// What every store checks before accepting a bundle: a valid name and a
/// size within [`MAX_CIPHERTEXT_BYTES`].
pub fn check_put(file_name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    validate_file_name(file_name)?;
    if bytes.len() > MAX_CIPHERTEXT_BYTES {
        return Err(StoreError::TooLarge {
            name: file_name.to_owned(),
            bytes: bytes.len() as u64,
            limit: MAX_CIPHERTEXT_BYTES,
        });
    }
    Ok(())
}

impl BackupStore for LocalDirStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn put<'a>(
        &'a self,
        file_name: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_put(file_name, bytes)?;
            let (dir, name, bytes) = (self.dir.clone(), file_name.to_owned(), bytes.to_vec());
            blocking(move || put_blocking(&dir, &name, &bytes)).await
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            blocking(move || list_blocking(&dir)).await
        })
    }

    fn get<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            validate_file_name(file_name)?;
            let (dir, name) = (self.dir.clone(), file_name.to_owned());
            blocking(move || get_blocking(&dir, &name)).await
        })
    }

    fn remove<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            validate_file_name(file_name)?;
            let (dir, name) = (self.dir.clone(), file_name.to_owned());
            blocking(move || remove_blocking(&dir, &name)).await
        })
    }
}

/// Keeps the newest `keep` bundles of each (chain, validator) in `store` and
/// removes the older ones; files that are not bundle names are left alone.
/// Returns the removed names. Stops at the first failed removal.
///
/// "Newest" is judged twice, and a bundle goes only when it is old by
/// both: the `keep` highest sequences and the `keep` highest heights
/// (then sequences) stay. So a sequence that started over (a host that
/// lost its high-water record) never makes retention delete the bundles
/// with the highest sign state, and a bundle named with a huge height
/// cannot push out the newest sequences.
pub async fn apply_retention(
    store: &dyn BackupStore,
    keep: usize,
) -> Result<Vec<String>, StoreError> {
    if keep == 0 {
        return Err(StoreError::InvalidRetention);
    }
    /// (sequence, height, file name) of one bundle.
    type Named = (u64, u64, String);
    let mut groups: std::collections::BTreeMap<(String, String), Vec<Named>> = Default::default();
    for name in store.list().await? {
        if let Some(parsed) = BackupFileName::parse(&name) {
            groups
                .entry((parsed.chain_id, parsed.validator_address))
                .or_default()
                .push((parsed.sequence, parsed.height, name));
        }
    }
    let mut removed = Vec::new();
    for mut bundles in groups.into_values() {
        if bundles.len() <= keep {
            continue;
        }
        let mut kept = std::collections::BTreeSet::new();
        bundles.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        kept.extend(bundles.iter().take(keep).map(|(_, _, name)| name.clone()));
        bundles.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        kept.extend(bundles.iter().take(keep).map(|(_, _, name)| name.clone()));
        bundles.sort();
        for (_, _, name) in bundles {
            if kept.contains(&name) {
                continue;
            }
            store.remove(&name).await?;
            tracing::info!(store = store.name(), file = %name, "removed old backup (retention)");
            removed.push(name);
        }
    }
    Ok(removed)
}
