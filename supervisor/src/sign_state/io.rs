//! The thin effects: reading the local state file and replacing it
//! atomically (temp file in the same directory, fsync, rename, fsync the
//! directory), refusing before touching anything if the new state is below
//! the highest known watermark.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::decision::LocalState;
use super::file::SignState;
use super::{SignStateError, Watermark};

/// Read and parse the local `priv_validator_state.json`. A missing file is
/// [`LocalState::Missing`]; anything else that is not a valid state
/// (permission denied, a directory, empty, truncated, malformed) is
/// [`LocalState::Unreadable`].
pub fn read_local(path: &Path) -> LocalState {
    match std::fs::read(path) {
        Ok(bytes) => match SignState::parse(&bytes) {
            Ok(state) => LocalState::Present(state.watermark()),
            Err(error) => LocalState::Unreadable(error),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => LocalState::Missing,
        Err(error) => {
            LocalState::Unreadable(SignStateError::Read(format!("{}: {error}", path.display())))
        }
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

/// Replace `path` with `state`, atomically and durably, in CometBFT's
/// layout.
///
/// Refuses, before touching anything, if `state` is below `highest_known`.
/// Otherwise: removes a stale `.<name>.palisade.tmp` in the same directory,
/// creates it anew (`O_EXCL`, mode 0600), writes, fsyncs it, renames it
/// over `path`, and fsyncs the directory so the rename survives a crash.
/// On failure the temp file is removed and `path` is left as it was.
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
    let Some(name) = path.file_name() else {
        return Err(SignStateWriteError::NotAFilePath(path.to_path_buf()));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(".palisade.tmp");
    let temp = dir.join(temp_name);

    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |error| SignStateWriteError::Io {
            action,
            path,
            error,
        }
    };

    match std::fs::remove_file(&temp) {
        Ok(()) => tracing::info!(temp = %temp.display(), "removed a stale sign-state temp file"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io("remove the stale temp file", &temp)(error)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io("create", &temp))?;
    let written = file
        .write_all(&state.to_json())
        .map_err(io("write", &temp))
        .and_then(|()| file.sync_all().map_err(io("fsync", &temp)));
    drop(file);
    if let Err(error) =
        written.and_then(|()| std::fs::rename(&temp, path).map_err(io("rename over", path)))
    {
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync the directory", dir))?;
    Ok(())
}
