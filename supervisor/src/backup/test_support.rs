//! Test doubles for the backup modules' unit tests.

use super::bundle::BackupFileName;
use super::store::{BackupStore, BoxFuture, StoreError};

pub const CHAIN: &str = "sim-1";
pub const ADDRESS: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678";

/// The file name of backup `sequence` at `height` of [`CHAIN`] and [`ADDRESS`].
pub fn name(sequence: u64, height: u64) -> String {
    BackupFileName {
        chain_id: CHAIN.into(),
        validator_address: ADDRESS.into(),
        sequence,
        height,
    }
    .to_string()
}

/// A read-only store whose every operation fails (`files: None`), or
/// that holds the given files.
pub struct Scripted {
    pub name: String,
    pub files: Option<Vec<(String, Vec<u8>)>>,
}

impl BackupStore for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn put<'a>(&'a self, _: &'a str, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("read-only".into())) })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            match &self.files {
                Some(files) => Ok(files.iter().map(|(name, _)| name.clone()).collect()),
                None => Err(StoreError::Unavailable("bastion down".into())),
            }
        })
    }
    fn get<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            match &self.files {
                Some(files) => files
                    .iter()
                    .find(|(name, _)| name == file)
                    .map(|(_, bytes)| bytes.clone())
                    .ok_or_else(|| StoreError::NotFound(file.to_owned())),
                None => Err(StoreError::Unavailable("bastion down".into())),
            }
        })
    }
    fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("read-only".into())) })
    }
}
