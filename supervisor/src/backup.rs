//! Signed, encrypted backups of the sign state (and optionally the keys),
//! stored locally and on bastions that must not be able to read or forge
//! them.
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
//!   bundle older than the caller's known sequence or watermark,
//!   [`gather_and_verify`] picks the highest watermark among every bundle
//!   that passes all checks, and a restore ([`restore_sign_state`]) never
//!   writes below the local state or below another valid backup.
//! - Key bytes only ever live in [`zeroize::Zeroizing`] buffers sized up
//!   front, so no reallocation leaves copies behind.
//!
//! Layout. The format and the stores, which never touch the vault (keys
//! and recipients are passed in): [`bundle`] builds bundles, [`open`]
//! verifies them, [`store`] is the storage abstraction with the
//! local-directory implementation, [`remote`] the client of a bastion's
//! backup store, [`stores`] names and opens the configured stores,
//! [`gather`] fans out to several stores, [`fanout`] publishes without one
//! slow store holding up the others, [`scheduler`] is the pure debouncer.
//! The run-time users of an unlocked vault: [`identity`] (whose backups),
//! [`start_check`] (the start rule over every store), [`worker`] (follows
//! the sign state and publishes), [`restore`] (the one restore path) and
//! [`catalog`] (`backup.list`). None of these modules starts gaiad.

pub mod bundle;
pub mod catalog;
pub mod fanout;
pub mod gather;
pub mod identity;
pub mod open;
pub mod remote;
pub mod restore;
pub mod scheduler;
pub mod start_check;
pub mod store;
pub mod stores;
#[cfg(test)]
mod test_support;
pub mod worker;

pub use bundle::{
    BackupError, BackupFileName, BackupMetadata, BundleInput, FORMAT_VERSION, FileEntry,
    create_bundle, parse_state_watermark,
};
pub use catalog::BackupCatalog;
pub use fanout::StoreFanout;
pub use gather::{
    AcceptedBundle, BestBundle, MAX_BUNDLES_PER_STORE, PublishReport, RejectedBundle,
    RejectionReason, RestoreReport, gather_and_verify, publish,
};
pub use identity::ValidatorIdentity;
pub use open::{
    Expectations, MAX_CIPHERTEXT_BYTES, MAX_TAR_ENTRIES, OpenedBundle, Rejection, open_bundle,
};
pub use remote::{BoxedStream, DuplexStream, RemoteStore, StreamDialer, UnixDialer};
pub use restore::{
    RestoreChoice, RestoreError, RestoreKit, Restored, describe_local, restore_sign_state,
};
pub use scheduler::BackupScheduler;
pub use start_check::{StartCheck, start_check};
pub use store::{
    BackupStore, BoxFuture, LocalDirStore, StoreError, apply_retention, validate_file_name,
};
pub use stores::{LOCAL_STORE, bastion_store_name, dir_stores, open_dir_stores};
pub use worker::{BackupNowError, BackupTrigger, BackupWorker, FollowFrom, LastBackup};
