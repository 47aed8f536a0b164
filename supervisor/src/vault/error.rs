//! Error kinds of the key vault. Every variant names the path involved and
//! the reason; none ever carries secret material.

use std::fmt;
use std::path::PathBuf;

use palisade_daemon::durable::DurableError;

use super::KeyKind;

/// A recovery recipient that is not an age X25519 (`age1…`) or `ssh-ed25519`
/// public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecipient {
    /// The value as given (public keys are not secret). A value that looks like
    /// a *secret* key is replaced by a placeholder so it never reaches a log.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

impl fmt::Display for InvalidRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.value, self.reason)
    }
}

fn list_invalid(invalid: &[InvalidRecipient]) -> String {
    invalid
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of the key vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A filesystem operation on a vault, key, config or tmpfs path failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "create", "rename into", ...).
        action: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `init` found an existing vault, or the remains of one, and will not overwrite it.
    #[error("a vault already exists here: {} is present; refusing to overwrite it", path.display())]
    AlreadyInitialized {
        /// The existing file.
        path: PathBuf,
    },
    /// There is no vault in the directory (no `vault.json`).
    #[error("no vault at {}: {} is missing (initialize the vault first)", dir.display(), path.display())]
    NotInitialized {
        /// The vault directory.
        dir: PathBuf,
        /// The missing `vault.json`.
        path: PathBuf,
    },
    /// A vault file that must exist beside `vault.json` is missing.
    #[error("vault file {} is missing", path.display())]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A directory that must be private is a symlink, not a directory, owned by
    /// someone else, or readable by group/other.
    #[error("refusing to use {}: {reason}", path.display())]
    InsecureDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file to import or wipe is not a regular file (e.g. a symlink).
    #[error("refusing to use {}: {reason}", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The scrypt work factor is outside the accepted range.
    #[error("scrypt work factor {value} is out of range {min}..={max} (log2 of N)")]
    InvalidWorkFactor {
        /// The rejected value.
        value: u8,
        /// The lowest accepted value (`WorkFactor::MIN_FOR_TESTS`).
        min: u8,
        /// The highest accepted value (`WorkFactor::MAX`).
        max: u8,
    },
    /// One or more recovery recipients are not age X25519 or ssh-ed25519 public keys.
    #[error("invalid recovery recipients: {}", list_invalid(invalid))]
    InvalidRecoveryRecipients {
        /// Every rejected recipient, with the reason.
        invalid: Vec<InvalidRecipient>,
    },
    /// `init` was given an empty (or all-whitespace) passphrase.
    #[error("the vault passphrase must not be empty")]
    EmptyPassphrase,
    /// The passphrase does not decrypt `identity.age`.
    #[error("wrong passphrase for {}", path.display())]
    WrongPassphrase {
        /// The `identity.age` file.
        path: PathBuf,
    },
    /// A vault file exists but is not what Palisade wrote (truncated, altered, wrong format).
    #[error("vault file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `vault.json` disagrees with the passphrase-protected identity: it was altered.
    #[error(
        "{} does not match the encrypted identity ({field} differs); it may have been tampered with",
        path.display()
    )]
    MetadataMismatch {
        /// The `vault.json` file.
        path: PathBuf,
        /// Which field differs.
        field: &'static str,
    },
    /// The pages that keep the unlocked keys out of core dumps could not be
    /// set up (`sys::SecretCell`): the vault stays locked.
    #[error("cannot set up memory for the unlocked keys that core dumps leave out: {0}")]
    SecretMemory(String),
    /// A vault file has a format version this build does not understand.
    #[error("{} has format version {found}; this build supports version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// A key file given for import is not the CometBFT JSON of its kind.
    #[error("{} is not a valid {kind}: {reason}", path.display())]
    InvalidKeyFile {
        /// The expected kind.
        kind: KeyKind,
        /// The file.
        path: PathBuf,
        /// What is wrong (never quotes key material).
        reason: String,
    },
    /// The vault already holds a key of this kind; importing again would overwrite it.
    #[error("the vault already holds a {kind} ({}); refusing to overwrite it", path.display())]
    KeyAlreadyImported {
        /// The kind.
        kind: KeyKind,
        /// The stored encrypted file.
        path: PathBuf,
    },
    /// The same key kind was given twice in one import.
    #[error("{kind} was given more than once in one import")]
    DuplicateKeyKind {
        /// The kind.
        kind: KeyKind,
    },
    /// The vault holds no key of this kind.
    #[error("the vault at {} holds no {kind}; import it first", dir.display())]
    KeyNotImported {
        /// The vault directory.
        dir: PathBuf,
        /// The kind.
        kind: KeyKind,
    },
    /// The encrypted copy did not decrypt back to the original; the original was kept.
    #[error(
        "verification of {} failed ({reason}); the encrypted copy was removed and the original {} was left in place",
        stored.display(),
        original.display()
    )]
    VerificationFailed {
        /// The encrypted file that failed verification.
        stored: PathBuf,
        /// The original, untouched.
        original: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// age encryption failed.
    #[error("cannot encrypt {}: {reason}", path.display())]
    Encrypt {
        /// The file being written.
        path: PathBuf,
        /// age's reason.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("operating-system randomness unavailable: {reason}")]
    Randomness {
        /// The OS error.
        reason: String,
    },
    /// The directory for decrypted keys is not on tmpfs or ramfs.
    #[error(
        "refusing to place decrypted keys in {}: it is on {filesystem}, not tmpfs or ramfs",
        path.display()
    )]
    NotTmpfs {
        /// The directory checked.
        path: PathBuf,
        /// Its filesystem (name, or magic number when unknown).
        filesystem: String,
    },
    /// The vault holds no keys, so there is nothing to materialize.
    #[error("the vault at {} holds no keys to materialize", dir.display())]
    NoKeysImported {
        /// The vault directory.
        dir: PathBuf,
    },
    /// A decrypted key file is already in the tmpfs directory (a leftover).
    #[error("{} already exists; wipe leftovers before materializing keys", path.display())]
    TmpfsFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The daemon's `config.toml` cannot be read, parsed, edited or
    /// written (the message names the file).
    #[error("{0}")]
    Config(#[from] crate::node::config_toml::ConfigTomlError),
}

impl VaultError {
    /// Helper for `map_err`: an I/O error on `path` while doing `action`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// A failed atomic write, directory fsync or the like, as the vault reports
/// every filesystem failure.
impl From<DurableError> for VaultError {
    fn from(error: DurableError) -> Self {
        Self::Io {
            action: error.step.action(),
            path: error.path,
            source: error.source,
        }
    }
}
