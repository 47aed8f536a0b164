//! The thin effects: reading the local state file and replacing it
//! atomically through `palisade_daemon::durable` (temp file in the same
//! directory, fsync, rename, fsync the directory), refusing before touching
//! anything if the new state is below the highest known watermark.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use palisade_daemon::durable::{self, AtomicWrite, DurableError, Existing};

use super::decision::LocalState;
use super::file::SignState;
use super::{SignStateError, Watermark};

/// Read and parse the local `priv_validator_state.json`. A missing file is
/// [`LocalState::Missing`]; anything else that is not a valid state
/// (permission denied, a directory, empty, truncated, malformed) is
/// [`LocalState::Unreadable`].
pub fn read_local(path: &Path) -> LocalState {
    read_local_state(path).0
}

/// [`read_local`], with the parsed state when it is readable (its sign
/// bytes, for the two-signers check at start).
pub fn read_local_state(path: &Path) -> (LocalState, Option<SignState>) {
    match std::fs::read(path) {
        Ok(bytes) => match SignState::parse(&bytes) {
            Ok(state) => (LocalState::Present(state.watermark()), Some(state)),
            Err(error) => (LocalState::Unreadable(error), None),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (LocalState::Missing, None),
        Err(error) => (
            LocalState::Unreadable(SignStateError::Read(format!("{}: {error}", path.display()))),
            None,
        ),
    }
}

/// Why [`write_atomic`] did not replace the file.
#[derive(Debug, thiserror::Error)]
pub enum SignStateWriteError {
    /// The state is below the highest known watermark; nothing was touched.
    #[error("not writing {path}: {error}")]
    Refused {
        path: PathBuf,
        #[source]
        error: SignStateError,
    },
    /// The path has no file name (e.g. `/` or `..`).
    #[error("cannot write the sign state to {0}: not a file path")]
    NotAFilePath(PathBuf),
    /// A filesystem step failed; `path` is the file or directory involved.
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl From<DurableError> for SignStateWriteError {
    fn from(error: DurableError) -> Self {
        SignStateWriteError::Io {
            action: error.step.action(),
            path: error.path,
            error: error.source,
        }
    }
}

/// Replace `path` with `state`, atomically and durably, in CometBFT's
/// layout (mode 0600).
///
/// Refuses, before touching anything, if `state` is below `highest_known`.
/// Otherwise removes the temp files an interrupted earlier write left beside
/// `path` (this is the file's only writer), then writes it through
/// [`AtomicWrite`]: a new temp file, fsynced, renamed over `path`, and the
/// directory fsynced so the rename survives a crash. On failure the temp
/// file is removed and `path` is left as it was.
pub fn write_atomic(
    path: &Path,
    state: &SignState,
    highest_known: Option<Watermark>,
) -> Result<(), SignStateWriteError> {
    if let Some(known) = highest_known
        && state.watermark() < known
    {
        return Err(SignStateWriteError::Refused {
            path: path.to_path_buf(),
            error: SignStateError::BelowKnownWatermark {
                proposed: state.watermark(),
                known,
                origin: format!("the state to be written to {}", path.display()),
            },
        });
    }
    if path.file_name().is_none() {
        return Err(SignStateWriteError::NotAFilePath(path.to_path_buf()));
    }
    for temp in durable::remove_leftover_temp_files(path)? {
        tracing::info!(temp = %temp.display(), "removed a stale sign-state temp file");
    }
    // Mode 0600, as CometBFT writes it. In a directory of another account
    // (the node's, `[daemon] user`) the file is that account's, so that the
    // node can keep rewriting it; otherwise it is ours.
    let mut write = AtomicWrite::new(0o600, Existing::Replace);
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(directory) = std::fs::metadata(parent)
        && directory.uid() != nix::unistd::geteuid().as_raw()
    {
        write = write.owned_by(directory.uid(), directory.gid());
    }
    write.write(path, &state.to_json())?;
    Ok(())
}
