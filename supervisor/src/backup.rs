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
//! [`start_check`] (the start rule over a quorum of stores and the host's
//! [`high_water`] record), [`worker`] (follows
//! the sign state and publishes), [`restore`] (the one restore path) and
//! [`catalog`] (`backup.list`). None of these modules starts gaiad.

pub(crate) mod bundle;
pub(crate) mod catalog;
pub(crate) mod fanout;
pub(crate) mod gather;
pub(crate) mod high_water;
pub(crate) mod identity;
pub(crate) mod open;
pub(crate) mod remote;
pub(crate) mod restore;
pub(crate) mod scheduler;
pub(crate) mod start_check;
pub(crate) mod store;
pub(crate) mod stores;
#[cfg(test)]
mod test_support;
pub(crate) mod worker;

pub use bundle::{BackupFileName, BackupMetadata, BundleInput, FileEntry, create_bundle};
pub use catalog::BackupCatalog;
pub use fanout::StoreFanout;
pub use gather::{RejectionReason, gather_and_verify, publish};
pub use identity::ValidatorIdentity;
pub use open::{Expectations, MAX_CIPHERTEXT_BYTES, OpenedBundle, Rejection, open_bundle};
pub use remote::{BoxedStream, RemoteStore, StreamDialer};
pub(crate) use restore::RestoreKit;
pub use restore::{RestoreChoice, RestoreError, Restored, describe_local, restore_sign_state};
pub use scheduler::BackupScheduler;
pub(crate) use start_check::{StartCheckError, StartRule, start_check};
pub use store::{BackupStore, BoxFuture, LocalDirStore, StoreError, apply_retention};
pub(crate) use stores::bastion_store_name;
pub use stores::open_dir_stores;
pub use worker::{BackupTrigger, LastBackup};
pub(crate) use worker::{BackupWorker, FollowFrom};
