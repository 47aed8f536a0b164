//! The key vault: the only place where validator keys exist at rest, and the
//! tmpfs directory where they exist, decrypted, while gaiad runs.
//!
//! Safety invariant 3 of `DESIGN.md` lives here: *keys never touch persistent
//! disk in plaintext.*
//!
//! On-disk layout of a vault directory (0700, every file 0600):
//!
//! ```text
//! vault.json                        public metadata (VaultInfo); no secrets
//! identity.age                      age X25519 identity + backup signing seed,
//!                                   encrypted to the operator's passphrase (scrypt)
//! keys/priv_validator_key.json.age  encrypted to the vault's X25519 recipient
//! keys/node_key.json.age            encrypted to the vault's X25519 recipient
//! ```
//!
//! Invariants:
//! - Plaintext key material is held only in `Zeroizing` buffers, `SecretString`
//!   or types that zeroize on drop (`SigningKey`, `age::x25519::Identity`), and
//!   is written only into a tmpfs/ramfs directory ([`materialize`]).
//! - No secret appears in a `Display`/`Debug` output, an error message or a log
//!   line. Parse errors on secret-bearing JSON report only line and column,
//!   because serde's messages can quote the offending value.
//! - Every file write is atomic (temp file, fsync, rename or link, fsync of the
//!   directory); nothing already stored is overwritten silently.
//! - An imported original is destroyed only after its encrypted copy has been
//!   read back from disk, decrypted and compared byte for byte.
//! - `vault.json` is not authenticated on its own; [`unlock`] cross-checks it
//!   against the passphrase-encrypted identity and refuses on any mismatch, so
//!   a swapped recipient cannot redirect backups. [`read_info`] (no passphrase)
//!   returns unverified data and says so.
//!
//! Overwriting a file with zeros destroys it on tmpfs; on a journaling,
//! copy-on-write or flash-backed filesystem (where imported originals usually
//! live) old blocks may survive, which is why keys should be imported once,
//! right after they are generated, and never written to disk again.

mod error;
mod key_file;
mod memory;
mod secure_fs;
mod store;
mod tmpfs;

pub use error::VaultError;
pub use key_file::KeyKind;
pub use memory::{
    MemoryLock, SwapStatus, check_swap, deny_core_dumps, exclude_thread_stack_from_dumps,
    lock_memory, swap_status,
};
pub use store::{
    IDENTITY_FILE, INFO_FILE, KEYS_DIR, UnlockedVault, WorkFactor, import_key_files, init_vault,
    read_info, seal_file, unlock,
};
pub use tmpfs::{TmpfsKeys, materialize, wipe_leftovers};

/// The consensus address (upper-case hex) in a plaintext
/// `priv_validator_key.json` — the node's own file when there is no vault —
/// after the key-file checks (the address must be its key's). The file's
/// bytes are held in zeroizing memory; errors never quote them.
pub fn validator_address_of_key_file(path: &std::path::Path) -> Result<String, String> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?,
    );
    key_file::validator_address(&bytes).map_err(|reason| format!("{}: {reason}", path.display()))
}
