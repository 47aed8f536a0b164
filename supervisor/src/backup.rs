//! Signed, encrypted backups of the sign state (and optionally the keys),
//! stored on bastions that must not be able to read or forge them.
//!
//! Safety invariants served here (see `docs/backup-format.md`):
//!
//! - **A bastion learns nothing and forges nothing** (DESIGN invariant 4).
//!   A bundle is a tar archive whose `metadata.json` pins every file by
//!   SHA-256 and is signed with the validator's ed25519 backup key; the whole
//!   archive is then age-encrypted to the operator's recipients. Anyone may
//!   encrypt to a public recipient, so decryption proves nothing: only the
//!   signature, checked against the key the caller expects, makes a bundle
//!   authentic.
//! - **Sign state never goes backwards** (DESIGN invariant 2). A bastion can
//!   still withhold bundles or replay old ones; [`open_bundle`] rejects a
//!   bundle older than the caller's known sequence or watermark, and
//!   [`gather_and_verify`] picks the highest watermark among every bundle
//!   that passes all checks, reporting each rejected one with its reason.
//! - Key bytes only ever live in [`zeroize::Zeroizing`] buffers sized up
//!   front, so no reallocation leaves copies behind.
//!
//! Layout: [`bundle`] builds bundles, [`open`] verifies them, [`store`] is the
//! storage abstraction with the local-directory implementation, [`remote`]
//! the client of a bastion's backup store (`palisade-bastion serve-backups`,
//! over a Unix socket that the SSH tunnels will forward), [`restore`]
//! fans out to several stores, [`scheduler`] is the pure debouncer that
//! decides when to back up. None of these modules starts gaiad or touches the
//! vault; keys and recipients are passed in.

pub mod bundle;
pub mod fanout;
pub mod open;
pub mod remote;
pub mod restore;
pub mod scheduler;
pub mod store;

pub use bundle::{
    BackupError, BackupFileName, BackupMetadata, BundleInput, FORMAT_VERSION, FileEntry,
    create_bundle,
};
pub use fanout::StoreFanout;
pub use open::{
    Expectations, MAX_CIPHERTEXT_BYTES, MAX_TAR_ENTRIES, OpenedBundle, Rejection, open_bundle,
    parse_state_watermark,
};
pub use remote::{BoxedStream, DuplexStream, RemoteStore, StreamDialer, UnixDialer};
pub use restore::{
    AcceptedBundle, BestBundle, MAX_BUNDLES_PER_STORE, PublishReport, RejectedBundle,
    RejectionReason, RestoreReport, gather_and_verify, publish,
};
pub use scheduler::BackupScheduler;
pub use store::{
    BackupStore, BoxFuture, LocalDirStore, StoreError, apply_retention, validate_file_name,
};
