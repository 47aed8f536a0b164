//! Where the vault passphrase comes from, locally: an inherited file
//! descriptor (`run --passphrase-fd N`), a systemd credential
//! (`LoadCredential=palisade-passphrase:…`, read from
//! `$CREDENTIALS_DIRECTORY`), or a file the operator opted into explicitly
//! (`vault.passphrase-file`) for unattended hosts. The RPC unlock (a later
//! release) feeds the same unlock path.
//!
//! The passphrase is read into a zeroizing buffer, a single trailing
//! newline is removed, and it is never logged.

use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

/// The systemd credential name the unit passes with `LoadCredential=`.
pub const CREDENTIAL_NAME: &str = "palisade-passphrase";

/// Longest passphrase accepted (a guard against reading a wrong, huge file).
const MAX_PASSPHRASE_BYTES: usize = 4096;

/// Where a passphrase was found (logged; the passphrase never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    FileDescriptor(i32),
    SystemdCredential(PathBuf),
    File(PathBuf),
}

impl std::fmt::Display for PassphraseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassphraseSource::FileDescriptor(fd) => write!(f, "file descriptor {fd}"),
            PassphraseSource::SystemdCredential(path) => {
                write!(f, "systemd credential {}", path.display())
            }
            PassphraseSource::File(path) => write!(f, "passphrase file {}", path.display()),
        }
    }
}

/// Errors reading a passphrase; they name the source, never the content.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    /// The source could not be read.
    #[error("cannot read the passphrase from {source_name}: {error}")]
    Read {
        source_name: String,
        error: std::io::Error,
    },
    /// The source was empty.
    #[error("the passphrase from {0} is empty")]
    Empty(String),
    /// The source was larger than any sane passphrase.
    #[error("{0} holds more than {MAX_PASSPHRASE_BYTES} bytes: not a passphrase file?")]
    TooLong(String),
    /// A passphrase file readable by group or others.
    #[error("{} is readable by group or others (mode {mode:o}); chmod 600 it", path.display())]
    InsecureFile { path: PathBuf, mode: u32 },
    /// A passphrase file that is a symbolic link (it could be pointed
    /// anywhere by whoever may write its directory).
    #[error("{} is a symbolic link; name the file itself", path.display())]
    Symlink { path: PathBuf },
    /// A passphrase file owned by another user, who could change it.
    #[error("{} is owned by uid {owner}, not by this process's user (uid {user}); chown it", path.display())]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    /// Terminal prompt failed.
    #[error("cannot read the passphrase from the terminal: {0}")]
    Prompt(std::io::Error),
    /// The two entries at the prompt differ.
    #[error("the passphrases do not match")]
    Mismatch,
}

/// Reads at most [`MAX_PASSPHRASE_BYTES`] (one more to tell "too long")
/// into `buffer`, whose capacity must already hold that many: it never
/// grows.
fn read_into(
    mut reader: impl Read,
    name: &str,
    buffer: &mut Zeroizing<Vec<u8>>,
) -> Result<(), PassphraseError> {
    debug_assert!(buffer.capacity() > MAX_PASSPHRASE_BYTES);
    reader
        .by_ref()
        .take(MAX_PASSPHRASE_BYTES as u64 + 1)
        .read_to_end(buffer)
        .map_err(|error| PassphraseError::Read {
            source_name: name.to_string(),
            error,
        })?;
    if buffer.len() > MAX_PASSPHRASE_BYTES {
        return Err(PassphraseError::TooLong(name.to_string()));
    }
    Ok(())
}

fn read_bounded(reader: impl Read, name: &str) -> Result<SecretString, PassphraseError> {
    // Allocated once, at the largest size read: a buffer that grew would
    // leave the earlier, shorter copies of the passphrase behind in freed
    // memory, where zeroizing the final one does not reach.
    let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_BYTES + 1));
    read_into(reader, name, &mut buffer)?;
    let mut end = buffer.len();
    if buffer[..end].ends_with(b"\n") {
        end -= 1;
        if buffer[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(PassphraseError::Empty(name.to_string()));
    }
    let text = String::from_utf8(buffer[..end].to_vec()).map_err(|_| PassphraseError::Read {
        source_name: name.to_string(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    Ok(SecretString::from(text))
}

/// Read a passphrase file; it must not be readable by group or others.
pub fn from_file(path: &Path) -> Result<SecretString, PassphraseError> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let name = PassphraseSource::File(path.to_path_buf()).to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(nix::libc::ELOOP) {
                PassphraseError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                PassphraseError::Read {
                    source_name: name.clone(),
                    error,
                }
            }
        })?;
    let metadata = file.metadata().map_err(|error| PassphraseError::Read {
        source_name: name.clone(),
        error,
    })?;
    let user = nix::unistd::geteuid().as_raw();
    if metadata.uid() != user {
        return Err(PassphraseError::ForeignOwner {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            user,
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PassphraseError::InsecureFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_bounded(file, &name)
}

/// Read (and close) an inherited file descriptor, e.g. a pipe. Call this
/// before anything else opens descriptors (before the async runtime), so a
/// number the parent did not actually pass cannot name one of ours.
pub fn from_fd(fd: i32) -> Result<SecretString, PassphraseError> {
    let name = PassphraseSource::FileDescriptor(fd).to_string();
    if fd < 3 {
        return Err(PassphraseError::Read {
            source_name: name,
            error: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "use a descriptor above 2 (0-2 are stdin/stdout/stderr)",
            ),
        });
    }
    let owned = crate::sys::take_inherited_fd(fd).map_err(|error| PassphraseError::Read {
        source_name: name.clone(),
        error,
    })?;
    read_bounded(std::fs::File::from(owned), &name)
}

/// The systemd credential, when the unit passes one.
pub fn from_systemd_credential() -> Option<(PassphraseSource, Result<SecretString, PassphraseError>)>
{
    let directory = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&directory).join(CREDENTIAL_NAME);
    if !path.exists() {
        return None;
    }
    let source = PassphraseSource::SystemdCredential(path.clone());
    let name = source.to_string();
    let result = std::fs::File::open(&path)
        .map_err(|error| PassphraseError::Read {
            source_name: name.clone(),
            error,
        })
        .and_then(|file| read_bounded(file, &name));
    Some((source, result))
}

/// The passphrase for an unattended unlock, in order of precedence: the
/// descriptor given on the command line, the systemd credential, the
/// configured file. `None` when no source is configured: the supervisor
/// stays locked until unlocked another way.
pub fn unattended(
    fd: Option<i32>,
    file: Option<&Path>,
) -> Option<(PassphraseSource, Result<SecretString, PassphraseError>)> {
    if let Some(fd) = fd {
        return Some((PassphraseSource::FileDescriptor(fd), from_fd(fd)));
    }
    if let Some(found) = from_systemd_credential() {
        return Some(found);
    }
    file.map(|path| (PassphraseSource::File(path.to_path_buf()), from_file(path)))
}

/// Prompt on the terminal without echo (twice when `confirm`).
pub fn prompt(message: &str, confirm: bool) -> Result<SecretString, PassphraseError> {
    let first =
        Zeroizing::new(rpassword::prompt_password(message).map_err(PassphraseError::Prompt)?);
    if first.is_empty() {
        return Err(PassphraseError::Empty("the terminal".into()));
    }
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .map_err(PassphraseError::Prompt)?,
        );
        if *first != *second {
            return Err(PassphraseError::Mismatch);
        }
    }
    Ok(SecretString::from(first.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&[u8], u32, Result<&str, &str>)] = &[
            (b"correct horse\n", 0o600, Ok("correct horse")),
            (b"no newline", 0o400, Ok("no newline")),
            (b"crlf\r\n", 0o600, Ok("crlf")),
            (b"two lines\n\n", 0o600, Ok("two lines\n")),
            (b"\n", 0o600, Err("is empty")),
            (b"", 0o600, Err("is empty")),
            (
                b"secret\n",
                0o640,
                Err("readable by group or others (mode 640)"),
            ),
            (&[0xff, 0xfe], 0o600, Err("not UTF-8")),
        ];
        for (index, (content, mode, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("p{index}"));
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
            match (from_file(&path), expected) {
                (Ok(secret), Ok(text)) => assert_eq!(secret.expose_secret(), *text),
                (Err(error), Err(needle)) => {
                    let message = error.to_string();
                    assert!(message.contains(needle), "{message}");
                    // Errors never carry the content.
                    assert!(!message.contains("secret\n") && !message.contains("horse"));
                }
                (got, expected) => panic!(
                    "case {index}: {:?} vs {expected:?}",
                    got.map(|_| "<secret>")
                ),
            }
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_PASSPHRASE_BYTES + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(from_file(&big), Err(PassphraseError::TooLong(_))));

        // A symbolic link is refused, even to a good file.
        let good = dir.path().join("p0");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let error = from_file(&link).unwrap_err().to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
        // A file owned by another user is refused (run as root: chown).
        if nix::unistd::geteuid().is_root() {
            let foreign = dir.path().join("foreign");
            std::fs::write(&foreign, b"secret\n").unwrap();
            std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
            let error = from_file(&foreign).unwrap_err().to_string();
            assert!(error.contains("owned by uid 65534"), "{error}");
        }
    }

    /// The buffer never grows: no shorter copy of the passphrase is left
    /// behind in memory the allocator freed.
    #[test]
    fn the_read_buffer_is_allocated_once() {
        for length in [
            1,
            255,
            256,
            257,
            1000,
            MAX_PASSPHRASE_BYTES,
            MAX_PASSPHRASE_BYTES + 1,
        ] {
            let input = vec![b'p'; length];
            let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_BYTES + 1));
            let (capacity, pointer) = (buffer.capacity(), buffer.as_ptr());
            let _ = read_into(&input[..], "test", &mut buffer);
            assert_eq!(buffer.capacity(), capacity, "grew at {length} bytes");
            assert_eq!(buffer.as_ptr(), pointer, "moved at {length} bytes");
        }
    }

    #[test]
    fn low_descriptors_are_refused() {
        assert!(from_fd(0).unwrap_err().to_string().contains("above 2"));
    }
}
