//! The control RPC's `backup.list` and `backup.restore`.
//!
//! - [`BackupCatalog::list`] reads every store's listing — the local
//!   directories and each bastion's store reachable now — and reports, per
//!   store, its backups newest first (bounded), or why the store could not
//!   be read. It needs no secret: what a name carries (sequence, height),
//!   the file time of a local store, and the full watermark of the last
//!   backup this supervisor wrote. Round and step of the others are inside
//!   the encrypted bundle and shown as unknown.
//! - [`restore_one`] restores the sign state from one named backup, with
//!   the checks of `palisade-supervisor restore-state`: decryption with the
//!   vault's identity, the signature of the validator's backup key, chain,
//!   validator, the name against the signed metadata, the watermark inside
//!   against the metadata. It never lowers the sign state: a backup at or
//!   below the local state, or below another valid backup in any reachable
//!   store, is refused and nothing is written. The write is the sign
//!   state's atomic writer ([`crate::sign_state::write_atomic`]).
//!
//! Decrypting needs the vault's age identity, which exists only while the
//! vault is unlocked: the supervision loop runs [`RestoreKit::restore`]
//! only with the node stopped by an operator and the vault unlocked, and
//! holds the loop while it runs, so the node cannot start half-way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use palisade_wire::rpc::{RpcError, code};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::backup::{
    AcceptedBundle, BackupFileName, BackupStore, Expectations, Rejection, StoreError,
    gather_and_verify, open_bundle, validate_file_name,
};
use crate::config::VaultSettings;
use crate::control::LastBackup;
use crate::keys::ValidatorIdentity;
use crate::sign_state::{
    KnownWatermark, LocalState, SignState, SignStateError, SignStateWriteError, Watermark,
    WatermarkSource, read_local, restore_decision, write_atomic,
};
use crate::vault::UnlockedVault;

/// Backups listed per store when the call does not say.
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Most backups listed per store.
pub const MAX_LIST_LIMIT: usize = 100;
/// Most backups listed in one answer, all stores together, so that the
/// answer stays well within the RPC's line limit.
pub const MAX_LISTED_TOTAL: usize = 200;
/// Bound on one store operation (list, get).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading every store for the highest valid backup during a
/// restore; with the fetch of the backup itself this stays below the
/// control RPC's wait for the loop (60 s), so an answer is never "busy"
/// while the restore goes on behind it.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(40);

fn invalid_params(field: &str, message: String) -> RpcError {
    let mut error = RpcError::new(code::INVALID_PARAMS, message);
    error.data = Some(json!({ "field": field }));
    error
}

/// `backup.list` params: none, `{}` or `{"limit": N}` (1–[`MAX_LIST_LIMIT`]);
/// returns the per-store limit.
pub fn parse_list_params(params: &Value) -> Result<usize, RpcError> {
    let map = match params {
        Value::Null => return Ok(DEFAULT_LIST_LIMIT),
        Value::Object(map) => map,
        other => {
            return Err(invalid_params(
                "params",
                format!("params must be an object, not {other}"),
            ));
        }
    };
    if let Some(unknown) = map.keys().find(|key| *key != "limit") {
        return Err(invalid_params(
            unknown,
            format!("unknown field `{unknown}`"),
        ));
    }
    match map.get("limit") {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(value) => match value.as_u64() {
            Some(limit) if (1..=MAX_LIST_LIMIT as u64).contains(&limit) => Ok(limit as usize),
            _ => Err(invalid_params(
                "limit",
                format!("limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {value}"),
            )),
        },
    }
}

/// What `backup.restore` names: one file in one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    pub store: String,
    pub file: String,
}

/// `backup.restore` params: exactly `{"store": NAME, "file": NAME}`, the
/// file a plain backup file name.
pub fn parse_restore_params(params: &Value) -> Result<RestoreRequest, RpcError> {
    let Value::Object(map) = params else {
        return Err(invalid_params(
            "params",
            "params must be {\"store\": NAME, \"file\": NAME}".into(),
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|key| !["store", "file"].contains(&key.as_str()))
    {
        return Err(invalid_params(
            unknown,
            format!("unknown field `{unknown}`"),
        ));
    }
    let text = |field: &str| match map.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        _ => Err(invalid_params(
            field,
            format!("{field} must be a non-empty string (see backup.list)"),
        )),
    };
    let store = text("store")?;
    let file = text("file")?;
    if let Err(error) = validate_file_name(&file) {
        return Err(invalid_params("file", error.to_string()));
    }
    if BackupFileName::parse(&file).is_none() {
        return Err(invalid_params(
            "file",
            format!(
                "{file:?} is not a backup file name \
                 (backup-<chain>-<ADDRESS>-<sequence>-h<height>.age, see backup.list)"
            ),
        ));
    }
    Ok(RestoreRequest { store, file })
}

/// The configured directory stores, named as [`crate::keys::stores`]
/// names them: `local` for `backup.dir`, `dir<N>:<path>` for the extra
/// directories.
pub fn local_store_dirs(settings: &VaultSettings) -> Vec<(String, PathBuf)> {
    std::iter::once(&settings.backup.dir)
        .chain(&settings.backup.extra_dirs)
        .enumerate()
        .map(|(index, dir)| {
            let name = if index == 0 {
                "local".to_string()
            } else {
                format!("dir{index}:{}", dir.display())
            };
            (name, dir.clone())
        })
        .collect()
}

/// One backup as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    file: String,
    sequence: u64,
    height: u64,
    /// Unix seconds, when known.
    at: Option<u64>,
}

/// Every store `backup.list` reads.
#[derive(Clone, Default)]
pub struct BackupCatalog {
    /// Directory stores, read directly (read-only: no store object is
    /// opened, which would clean up the backup worker's temporary files).
    local: Vec<(String, PathBuf)>,
    /// The bastions' stores.
    remote: Vec<Arc<dyn BackupStore>>,
}

impl BackupCatalog {
    /// The directory stores of `vault` (none without a vault).
    pub fn new(vault: Option<&VaultSettings>) -> BackupCatalog {
        BackupCatalog {
            local: vault.map(local_store_dirs).unwrap_or_default(),
            remote: Vec::new(),
        }
    }

    /// Also list these (the bastions' stores, through the tunnels).
    pub fn with_remote(mut self, stores: Vec<Arc<dyn BackupStore>>) -> BackupCatalog {
        self.remote = stores;
        self
    }

    /// The names of every store, in order.
    pub fn store_names(&self) -> Vec<String> {
        self.local
            .iter()
            .map(|(name, _)| name.clone())
            .chain(self.remote.iter().map(|store| store.name().to_owned()))
            .collect()
    }

    /// `backup.list`: every store, concurrently, each bounded by
    /// [`STORE_TIMEOUT`]; `last` fills in what this supervisor knows of
    /// the backup it wrote last.
    pub async fn list(&self, limit: usize, last: Option<&LastBackup>) -> Value {
        let mut tasks = JoinSet::new();
        for (index, (_, dir)) in self.local.iter().enumerate() {
            let dir = dir.clone();
            tasks.spawn(async move {
                let listed = tokio::task::spawn_blocking(move || list_dir(&dir))
                    .await
                    .unwrap_or_else(|join| Err(format!("listing task failed: {join}")));
                (index, listed)
            });
        }
        for (offset, store) in self.remote.iter().enumerate() {
            let store = Arc::clone(store);
            let index = self.local.len() + offset;
            tasks.spawn(async move {
                let listed = match tokio::time::timeout(STORE_TIMEOUT, store.list()).await {
                    Ok(Ok(names)) => Ok(names
                        .into_iter()
                        .filter_map(|name| listed(name, None))
                        .collect()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(StoreError::Timeout(STORE_TIMEOUT).to_string()),
                };
                (index, listed)
            });
        }
        let names = self.store_names();
        let mut results: Vec<Option<Result<Vec<Listed>, String>>> = vec![None; names.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, listed)) = joined {
                results[index] = Some(listed);
            }
        }
        let mut budget = MAX_LISTED_TOTAL;
        let stores: Vec<Value> = names
            .into_iter()
            .zip(results)
            .map(|(name, result)| {
                match result.unwrap_or_else(|| Err("listing task failed".into())) {
                    Ok(backups) => store_json(&name, backups, limit, &mut budget, last),
                    Err(error) => json!({ "store": name, "reachable": false, "error": error }),
                }
            })
            .collect();
        json!({ "stores": stores })
    }
}

/// A store's answer: its backups newest first, at most `limit` (and what
/// is left of the answer's `budget`).
fn store_json(
    name: &str,
    mut backups: Vec<Listed>,
    limit: usize,
    budget: &mut usize,
    last: Option<&LastBackup>,
) -> Value {
    backups.sort_by(|a, b| (b.sequence, &b.file).cmp(&(a.sequence, &a.file)));
    let total = backups.len();
    let shown = total.min(limit).min(*budget);
    *budget -= shown;
    let entries: Vec<Value> = backups
        .into_iter()
        .take(shown)
        .map(|backup| {
            let known = last.filter(|last| last.file == backup.file);
            json!({
                "file": backup.file,
                "sequence": backup.sequence,
                "height": backup.height,
                "watermark": known.map(|last| last.watermark.clone()),
                "at": backup.at.or(known.map(|last| last.at)),
            })
        })
        .collect();
    json!({
        "store": name,
        "reachable": true,
        "total": total,
        "truncated": shown < total,
        "backups": entries,
    })
}

fn listed(file: String, at: Option<u64>) -> Option<Listed> {
    let parsed = BackupFileName::parse(&file)?;
    Some(Listed {
        file,
        sequence: parsed.sequence,
        height: parsed.height,
        at,
    })
}

/// The backups in a directory store, with their file times. Hidden and
/// non-backup files are not part of the store; a directory not created
/// yet (no unlock since `init-vault`) holds none.
fn list_dir(dir: &Path) -> Result<Vec<Listed>, String> {
    let cannot = |error: std::io::Error| format!("cannot list {}: {error}", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(cannot(error)),
    };
    let mut backups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(cannot)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.is_file() || validate_file_name(&name).is_err() {
            continue;
        }
        let at = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|elapsed| elapsed.as_secs());
        backups.extend(listed(name, at));
    }
    Ok(backups)
}

/// Why a restore did not happen. Every variant leaves the sign state as it
/// was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No store of that name.
    #[error("no backup store named {store}")]
    UnknownStore { store: String, known: Vec<String> },
    /// The store does not hold the file.
    #[error("{file} is not in store {store}; nothing was changed")]
    NotInStore { store: String, file: String },
    /// The store could not return the file.
    #[error("cannot read {file} from store {store}: {reason}; nothing was changed")]
    Store {
        store: String,
        file: String,
        reason: String,
    },
    /// The backup failed verification (not ours, forged, damaged, renamed…).
    #[error("backup {file} in store {store} is rejected: {reason}; nothing was changed")]
    Rejected {
        store: String,
        file: String,
        reason: Rejection,
    },
    /// The backup is not above the local sign state.
    #[error(
        "backup {file} is at {backup}, not above the local sign state at {local}: a restore \
         never lowers or rewrites the sign state; nothing was changed"
    )]
    NotAbove {
        file: String,
        backup: Watermark,
        local: Watermark,
    },
    /// Another valid backup is higher: restoring this one could let the
    /// node sign again what was already signed.
    #[error(
        "backup {file} is at {backup}, but backup {} in store {} is higher at {}: never \
         restore below the highest known backup (restore that one); nothing was changed",
        higher.file_name, higher.store, higher.watermark
    )]
    HigherBackupExists {
        file: String,
        backup: Watermark,
        higher: AcceptedBundle,
    },
    /// The stores could not all be read in time, so the highest valid
    /// backup is unknown.
    #[error(
        "the backup stores did not all answer within {}; the highest valid backup is \
         unknown; nothing was changed",
        humantime::format_duration(*.0)
    )]
    StoresTooSlow(Duration),
    /// The sign-state rules refused the move.
    #[error("{0}; nothing was changed")]
    Decision(SignStateError),
    /// Writing the state file failed; [`write_atomic`] left it as it was.
    #[error("{0}; the sign state file was left as it was")]
    Write(SignStateWriteError),
}

impl From<RestoreError> for RpcError {
    fn from(error: RestoreError) -> RpcError {
        let message = error.to_string();
        match error {
            RestoreError::UnknownStore { known, .. } => {
                let mut rpc = RpcError::new(code::INVALID_PARAMS, message);
                rpc.data = Some(json!({ "field": "store", "known": known }));
                rpc
            }
            RestoreError::Write(SignStateWriteError::Refused { .. }) => {
                RpcError::new(code::WRONG_STATE, message)
            }
            RestoreError::Write(_) => RpcError::new(code::INTERNAL, message),
            _ => RpcError::new(code::WRONG_STATE, message),
        }
    }
}

/// A restore that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub store: String,
    pub file: String,
    pub sequence: u64,
    pub watermark: Watermark,
    /// What the state file held before.
    pub previous: LocalState,
    pub path: PathBuf,
}

impl Restored {
    /// The `backup.restore` answer.
    pub fn to_json(&self) -> Value {
        json!({
            "restored": {
                "store": self.store,
                "file": self.file,
                "sequence": self.sequence,
                "watermark": self.watermark.to_string(),
            },
            "previous": describe_local(&self.previous),
            "path": self.path.display().to_string(),
        })
    }
}

fn describe_local(local: &LocalState) -> String {
    match local {
        LocalState::Present(watermark) => watermark.to_string(),
        LocalState::Missing => "missing".into(),
        LocalState::Unreadable(error) => format!("unreadable ({error})"),
    }
}

/// Restore the sign state at `state_path` from `request.file` in
/// `request.store`. See the module docs for the checks; the order is: the
/// store, the file, its verification, the local state, every store's
/// highest valid backup, the sign-state rule, the atomic write.
pub async fn restore_one(
    stores: &[Arc<dyn BackupStore>],
    identity: &age::x25519::Identity,
    expectations: &Expectations,
    state_path: &Path,
    request: &RestoreRequest,
) -> Result<Restored, RestoreError> {
    let RestoreRequest { store, file } = request;
    let Some(source) = stores.iter().find(|s| s.name() == store) else {
        return Err(RestoreError::UnknownStore {
            store: store.clone(),
            known: stores.iter().map(|s| s.name().to_owned()).collect(),
        });
    };
    let bytes = match tokio::time::timeout(STORE_TIMEOUT, source.get(file)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(StoreError::NotFound(_))) => {
            return Err(RestoreError::NotInStore {
                store: store.clone(),
                file: file.clone(),
            });
        }
        Ok(Err(error)) => {
            return Err(RestoreError::Store {
                store: store.clone(),
                file: file.clone(),
                reason: error.to_string(),
            });
        }
        Err(_) => {
            return Err(RestoreError::Store {
                store: store.clone(),
                file: file.clone(),
                reason: StoreError::Timeout(STORE_TIMEOUT).to_string(),
            });
        }
    };
    let rejected = |reason| RestoreError::Rejected {
        store: store.clone(),
        file: file.clone(),
        reason,
    };
    let bundle = open_bundle(&bytes, identity, expectations).map_err(rejected)?;
    let expected_name = BackupFileName::for_metadata(&bundle.metadata).to_string();
    if &expected_name != file {
        return Err(rejected(Rejection::NameMismatch {
            file_name: file.clone(),
            expected: expected_name,
        }));
    }
    let candidate = KnownWatermark {
        watermark: bundle.metadata.watermark,
        source: WatermarkSource::Backup {
            store: store.clone(),
            name: file.clone(),
            sequence: bundle.metadata.sequence,
        },
    };

    let local = read_local(state_path);
    if let LocalState::Present(local) = local
        && candidate.watermark <= local
    {
        return Err(RestoreError::NotAbove {
            file: file.clone(),
            backup: candidate.watermark,
            local,
        });
    }

    let report = tokio::time::timeout(
        GATHER_TIMEOUT,
        gather_and_verify(stores, identity, expectations, STORE_TIMEOUT),
    )
    .await
    .map_err(|_| RestoreError::StoresTooSlow(GATHER_TIMEOUT))?;
    if let Some(higher) = report
        .accepted
        .iter()
        .filter(|accepted| accepted.watermark > candidate.watermark)
        .max_by_key(|accepted| (accepted.watermark, accepted.sequence))
    {
        return Err(RestoreError::HigherBackupExists {
            file: file.clone(),
            backup: candidate.watermark,
            higher: higher.clone(),
        });
    }
    let highest_known = match local {
        LocalState::Present(local) => local.max(candidate.watermark),
        _ => candidate.watermark,
    };
    restore_decision(&local, &candidate, highest_known).map_err(RestoreError::Decision)?;
    let state = SignState::parse(&bundle.state).map_err(RestoreError::Decision)?;
    write_atomic(state_path, &state, Some(highest_known)).map_err(RestoreError::Write)?;
    let restored = Restored {
        store: store.clone(),
        file: file.clone(),
        sequence: bundle.metadata.sequence,
        watermark: candidate.watermark,
        previous: local,
        path: state_path.to_path_buf(),
    };
    tracing::warn!(
        from = %describe_local(&restored.previous),
        to = %restored.watermark,
        source = %candidate.source,
        path = %state_path.display(),
        "sign state restored from a backup over the control RPC"
    );
    Ok(restored)
}

/// What the loop needs to restore while the vault is unlocked: the vault
/// (for its age identity and backup key), who the validator is, every
/// store (the same objects the backup worker writes to) and the state
/// file. Dropped when the vault is locked, with the vault's last handle.
#[derive(Clone)]
pub struct RestoreKit {
    vault: Arc<UnlockedVault>,
    validator: ValidatorIdentity,
    stores: Vec<Arc<dyn BackupStore>>,
    state_path: PathBuf,
}

impl RestoreKit {
    pub fn new(
        vault: Arc<UnlockedVault>,
        validator: ValidatorIdentity,
        stores: Vec<Arc<dyn BackupStore>>,
        state_path: PathBuf,
    ) -> RestoreKit {
        RestoreKit {
            vault,
            validator,
            stores,
            state_path,
        }
    }

    /// [`restore_one`] with the vault's identity and expectations.
    pub async fn restore(&self, request: &RestoreRequest) -> Result<Restored, RestoreError> {
        let expectations = Expectations {
            verifying_key: self.vault.verifying_key(),
            chain_id: self.validator.chain_id.clone(),
            validator_address: self.validator.address.clone(),
            min_sequence: None,
            min_watermark: None,
        };
        restore_one(
            &self.stores,
            self.vault.age_identity(),
            &expectations,
            &self.state_path,
            request,
        )
        .await
    }
}

/// Names the stores, never the vault's secrets.
impl std::fmt::Debug for RestoreKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores: Vec<&str> = self.stores.iter().map(|s| s.name()).collect();
        f.debug_struct("RestoreKit")
            .field("vault", &"REDACTED")
            .field("validator", &self.validator)
            .field("stores", &stores)
            .field("state_path", &self.state_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::backup::{BoxFuture, BundleInput, LocalDirStore, create_bundle};
    use crate::sign_state::Step;

    const CHAIN: &str = "sim-1";
    const ADDRESS: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678";

    fn name(sequence: u64, height: u64) -> String {
        BackupFileName {
            chain_id: CHAIN.into(),
            validator_address: ADDRESS.into(),
            sequence,
            height,
        }
        .to_string()
    }

    #[test]
    fn list_params_table() {
        let cases: Vec<(Value, Result<usize, &str>)> = vec![
            (Value::Null, Ok(DEFAULT_LIST_LIMIT)),
            (json!({}), Ok(DEFAULT_LIST_LIMIT)),
            (json!({ "limit": 1 }), Ok(1)),
            (json!({ "limit": 100 }), Ok(100)),
            (json!({ "limit": 0 }), Err("limit")),
            (json!({ "limit": 101 }), Err("limit")),
            (json!({ "limit": -1 }), Err("limit")),
            (json!({ "limit": 2.5 }), Err("limit")),
            (json!({ "limit": "5" }), Err("limit")),
            (json!({ "store": "local" }), Err("store")),
            (json!([1]), Err("params")),
            (json!("all"), Err("params")),
        ];
        for (params, expected) in cases {
            match (parse_list_params(&params), expected) {
                (Ok(limit), Ok(want)) => assert_eq!(limit, want, "{params}"),
                (Err(error), Err(field)) => {
                    assert_eq!(error.code, code::INVALID_PARAMS, "{params}");
                    assert_eq!(error.data.unwrap()["field"], field, "{params}");
                }
                (got, want) => panic!("{params}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn restore_params_table() {
        let file = name(4, 12);
        let cases: Vec<(Value, Result<RestoreRequest, &str>)> = vec![
            (
                json!({ "store": "local", "file": file }),
                Ok(RestoreRequest {
                    store: "local".into(),
                    file: file.clone(),
                }),
            ),
            (
                json!({ "store": "bastion:b1", "file": file }),
                Ok(RestoreRequest {
                    store: "bastion:b1".into(),
                    file: file.clone(),
                }),
            ),
            (Value::Null, Err("params")),
            (json!({}), Err("store")),
            (json!({ "file": file }), Err("store")),
            (json!({ "store": "local" }), Err("file")),
            (json!({ "store": "", "file": file }), Err("store")),
            (json!({ "store": 1, "file": file }), Err("store")),
            (json!({ "store": "local", "file": 7 }), Err("file")),
            (json!({ "store": "local", "file": "" }), Err("file")),
            (
                json!({ "store": "local", "file": "../../etc/passwd" }),
                Err("file"),
            ),
            (
                json!({ "store": "local", "file": ".hidden.age" }),
                Err("file"),
            ),
            (
                json!({ "store": "local", "file": "notes.txt" }),
                Err("file"),
            ),
            (
                json!({ "store": "local", "file": file, "force": true }),
                Err("force"),
            ),
            (json!(["local", file]), Err("params")),
        ];
        for (params, expected) in cases {
            match (parse_restore_params(&params), expected) {
                (Ok(request), Ok(want)) => assert_eq!(request, want, "{params}"),
                (Err(error), Err(field)) => {
                    assert_eq!(error.code, code::INVALID_PARAMS, "{params}");
                    assert_eq!(error.data.unwrap()["field"], field, "{params}");
                }
                (got, want) => panic!("{params}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A store whose every operation fails, or that holds given files.
    struct Scripted {
        name: String,
        files: Option<Vec<(String, Vec<u8>)>>,
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

    fn listed_entry(sequence: u64, height: u64) -> Listed {
        Listed {
            file: name(sequence, height),
            sequence,
            height,
            at: Some(1_700_000_000 + sequence),
        }
    }

    #[test]
    fn listings_are_newest_first_and_bounded() {
        let backups = vec![listed_entry(2, 5), listed_entry(9, 30), listed_entry(5, 12)];
        let last = LastBackup {
            file: name(9, 30),
            sequence: 9,
            watermark: "height 30 round 1 step 3".into(),
            stores: vec!["local".into()],
            at: 1_800_000_000,
        };
        let mut budget = 100;
        let all = store_json("local", backups.clone(), 10, &mut budget, Some(&last));
        assert_eq!(budget, 97);
        let sequences: Vec<u64> = all["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(sequences, [9, 5, 2]);
        assert_eq!(all["total"], 3);
        assert_eq!(all["truncated"], false);
        // The last backup written has its full watermark; the others have
        // only what their name says.
        assert_eq!(all["backups"][0]["watermark"], "height 30 round 1 step 3");
        assert_eq!(all["backups"][0]["height"], 30);
        assert_eq!(all["backups"][0]["at"], 1_700_000_009u64);
        assert_eq!(all["backups"][1]["watermark"], Value::Null);

        let limited = store_json("local", backups.clone(), 2, &mut budget, None);
        assert_eq!(limited["backups"].as_array().unwrap().len(), 2);
        assert_eq!(limited["total"], 3);
        assert_eq!(limited["truncated"], true);
        let mut small = 1;
        let budgeted = store_json("b", backups, 10, &mut small, None);
        assert_eq!(budgeted["backups"].as_array().unwrap().len(), 1);
        assert_eq!(budgeted["truncated"], true);
        assert_eq!(small, 0);
    }

    #[tokio::test]
    async fn list_reports_each_store_and_never_fails_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("backups");
        std::fs::create_dir(&local).unwrap();
        for (sequence, height) in [(1, 3), (2, 7)] {
            std::fs::write(local.join(name(sequence, height)), b"ciphertext").unwrap();
        }
        // Not backups: ignored.
        std::fs::write(local.join(".tmp-1-0-x"), b"").unwrap();
        std::fs::write(local.join("README"), b"").unwrap();
        std::fs::create_dir(local.join(name(3, 9))).unwrap();
        let catalog = BackupCatalog {
            local: vec![
                ("local".into(), local.clone()),
                ("dir1:/missing".into(), dir.path().join("missing")),
                ("dir2:/a-file".into(), local.join("README")),
            ],
            remote: vec![
                Arc::new(Scripted {
                    name: "bastion:down".into(),
                    files: None,
                }),
                Arc::new(Scripted {
                    name: "bastion:up".into(),
                    files: Some(vec![(name(2, 7), vec![]), ("junk".into(), vec![])]),
                }),
            ],
        };
        let listing = catalog.list(DEFAULT_LIST_LIMIT, None).await;
        let stores = listing["stores"].as_array().unwrap();
        let names: Vec<&str> = stores
            .iter()
            .map(|s| s["store"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "local",
                "dir1:/missing",
                "dir2:/a-file",
                "bastion:down",
                "bastion:up"
            ]
        );
        assert_eq!(stores[0]["reachable"], true);
        assert_eq!(stores[0]["total"], 2);
        assert_eq!(stores[0]["backups"][0]["file"], name(2, 7));
        assert!(stores[0]["backups"][0]["at"].as_u64().unwrap() > 1_600_000_000);
        // Not created yet: empty. Not a directory: an error.
        assert_eq!(stores[1]["reachable"], true);
        assert_eq!(stores[1]["total"], 0);
        assert_eq!(stores[2]["reachable"], false);
        assert!(
            stores[2]["error"].as_str().unwrap().contains("cannot list"),
            "{listing}"
        );
        assert_eq!(stores[3]["reachable"], false);
        assert!(
            stores[3]["error"]
                .as_str()
                .unwrap()
                .contains("bastion down"),
            "{listing}"
        );
        assert_eq!(stores[4]["total"], 1);
        assert_eq!(stores[4]["backups"][0]["at"], Value::Null);
    }

    #[test]
    fn directory_stores_are_named_as_the_backup_worker_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let settings = VaultSettings {
            dir: dir.path().join("vault"),
            tmpfs_dir: dir.path().join("tmpfs"),
            passphrase_file: None,
            swap: crate::config::SwapPolicy::Warn,
            scrypt_work_factor: 10,
            recovery_recipients: vec![],
            backup: crate::config::BackupSettings {
                dir: dir.path().join("b0"),
                extra_dirs: vec![dir.path().join("b1"), dir.path().join("b2")],
                retention: 10,
                debounce: Duration::from_millis(100),
                chain_id: None,
            },
        };
        let ours: Vec<String> = local_store_dirs(&settings)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let workers: Vec<String> = crate::keys::stores(&settings)
            .unwrap()
            .iter()
            .map(|store| store.name().to_owned())
            .collect();
        assert_eq!(ours, workers);
        assert_eq!(ours[0], "local");
    }

    /// A validator's keys, and bundles made with them.
    struct Fixture {
        signing_key: SigningKey,
        identity: age::x25519::Identity,
        dir: tempfile::TempDir,
        store: Arc<LocalDirStore>,
    }

    fn wm(height: u64, round: u32, step: Step) -> Watermark {
        Watermark {
            height,
            round,
            step,
        }
    }

    fn state_json(watermark: Watermark) -> Vec<u8> {
        SignState::from_watermark(watermark).to_json()
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("data")).unwrap();
            let store = Arc::new(LocalDirStore::new(dir.path().join("store"), "local").unwrap());
            Fixture {
                signing_key: SigningKey::from_bytes(&rand::random()),
                identity: age::x25519::Identity::generate(),
                dir,
                store,
            }
        }

        fn expectations(&self) -> Expectations {
            Expectations {
                verifying_key: self.signing_key.verifying_key(),
                chain_id: CHAIN.into(),
                validator_address: ADDRESS.into(),
                min_sequence: None,
                min_watermark: None,
            }
        }

        fn bundle_with(&self, key: &SigningKey, sequence: u64, watermark: Watermark) -> Vec<u8> {
            let input = BundleInput {
                chain_id: CHAIN.into(),
                validator_address: ADDRESS.into(),
                watermark,
                sequence,
                host_id: "host-a".into(),
                created_at: SystemTime::now(),
                software_version: "test".into(),
                priv_validator_state: state_json(watermark),
                priv_validator_key: None,
                node_key: None,
            };
            let recipients: Vec<Box<dyn age::Recipient + Send>> =
                vec![Box::new(self.identity.to_public())];
            create_bundle(&input, key, &recipients).unwrap()
        }

        /// Publishes a genuine backup and returns its name.
        async fn publish(&self, sequence: u64, watermark: Watermark) -> String {
            let file = name(sequence, watermark.height);
            let bytes = self.bundle_with(&self.signing_key, sequence, watermark);
            self.store.put(&file, &bytes).await.unwrap();
            file
        }

        fn state_path(&self) -> PathBuf {
            self.dir.path().join("data/priv_validator_state.json")
        }

        fn write_local(&self, watermark: Watermark) {
            std::fs::write(self.state_path(), state_json(watermark)).unwrap();
        }

        fn local_bytes(&self) -> Option<Vec<u8>> {
            std::fs::read(self.state_path()).ok()
        }

        async fn restore(
            &self,
            extra: Vec<Arc<dyn BackupStore>>,
            store: &str,
            file: &str,
        ) -> Result<Restored, RestoreError> {
            let mut stores: Vec<Arc<dyn BackupStore>> = vec![self.store.clone()];
            stores.extend(extra);
            restore_one(
                &stores,
                &self.identity,
                &self.expectations(),
                &self.state_path(),
                &RestoreRequest {
                    store: store.into(),
                    file: file.into(),
                },
            )
            .await
        }
    }

    #[tokio::test]
    async fn restores_raise_the_sign_state_and_nothing_else_changes_it() {
        let low = wm(10, 0, Step::Precommit);
        let mid = wm(20, 1, Step::Prevote);
        let high = wm(30, 0, Step::Precommit);

        // Local state lost: the highest backup restores it.
        let fixture = Fixture::new();
        let older = fixture.publish(1, mid).await;
        let newest = fixture.publish(2, high).await;
        let restored = fixture.restore(vec![], "local", &newest).await.unwrap();
        assert_eq!(restored.watermark, high);
        assert_eq!(restored.previous, LocalState::Missing);
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));
        assert_eq!(restored.to_json()["restored"]["sequence"], 2);
        assert_eq!(restored.to_json()["previous"], "missing");

        // At or below the local state: refused, file untouched.
        for file in [&older, &newest] {
            let before = fixture.local_bytes();
            let error = fixture.restore(vec![], "local", file).await.unwrap_err();
            assert!(matches!(error, RestoreError::NotAbove { .. }), "{error}");
            let rpc: RpcError = error.into();
            assert_eq!(rpc.code, code::WRONG_STATE);
            assert!(rpc.message.contains("never lowers"), "{}", rpc.message);
            assert!(
                rpc.message.contains("nothing was changed"),
                "{}",
                rpc.message
            );
            assert_eq!(fixture.local_bytes(), before);
        }

        // Local lagging: an older backup above it is still refused while a
        // higher valid one exists — in any store.
        let fixture = Fixture::new();
        fixture.write_local(low);
        let older = fixture.publish(1, mid).await;
        let bastion_only = fixture.bundle_with(&fixture.signing_key, 2, high);
        let bastion: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:b1".into(),
            files: Some(vec![(name(2, high.height), bastion_only)]),
        });
        let error = fixture
            .restore(vec![bastion.clone()], "local", &older)
            .await
            .unwrap_err();
        match &error {
            RestoreError::HigherBackupExists { higher, .. } => {
                assert_eq!(higher.store, "bastion:b1");
                assert_eq!(higher.watermark, high);
            }
            other => panic!("{other}"),
        }
        assert_eq!(fixture.local_bytes().unwrap(), state_json(low));
        // The highest one, from the bastion, restores; a down store does
        // not stop it.
        let down: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:down".into(),
            files: None,
        });
        let restored = fixture
            .restore(vec![bastion, down], "bastion:b1", &name(2, high.height))
            .await
            .unwrap();
        assert_eq!(restored.previous, LocalState::Present(low));
        assert_eq!(fixture.local_bytes().unwrap(), state_json(high));

        // An unreadable local state is replaced by the highest backup.
        let fixture = Fixture::new();
        std::fs::write(fixture.state_path(), b"{\"height\":").unwrap();
        let file = fixture.publish(1, mid).await;
        let restored = fixture.restore(vec![], "local", &file).await.unwrap();
        assert!(matches!(restored.previous, LocalState::Unreadable(_)));
        assert_eq!(fixture.local_bytes().unwrap(), state_json(mid));
    }

    #[tokio::test]
    async fn bad_backups_and_bad_stores_are_refused_and_change_nothing() {
        let low = wm(10, 0, Step::Precommit);
        let high = wm(30, 0, Step::Precommit);
        let fixture = Fixture::new();
        fixture.write_local(low);
        let genuine = fixture.publish(1, high).await;
        let genuine_bytes = fixture.store.get(&genuine).await.unwrap();

        // Forged: our chain and validator, encrypted to us, signed by another key.
        let forger = SigningKey::from_bytes(&rand::random());
        let forged = name(5, 40);
        let bytes = fixture.bundle_with(&forger, 5, wm(40, 0, Step::Precommit));
        fixture.store.put(&forged, &bytes).await.unwrap();
        // Renamed: a genuine bundle under a name claiming a higher height.
        let renamed = name(6, 50);
        fixture.store.put(&renamed, &genuine_bytes).await.unwrap();
        // Garbage under a backup name.
        let garbage = name(7, 60);
        fixture.store.put(&garbage, b"not age").await.unwrap();
        let down: Arc<dyn BackupStore> = Arc::new(Scripted {
            name: "bastion:down".into(),
            files: None,
        });

        let cases: Vec<(&str, String, &str, i64)> = vec![
            (
                "nowhere",
                genuine.clone(),
                "no backup store named nowhere",
                code::INVALID_PARAMS,
            ),
            (
                "local",
                name(9, 99),
                "is not in store local",
                code::WRONG_STATE,
            ),
            (
                "bastion:down",
                genuine.clone(),
                "cannot read",
                code::WRONG_STATE,
            ),
            ("local", forged, "signature is bad", code::WRONG_STATE),
            (
                "local",
                renamed,
                "does not match its signed metadata",
                code::WRONG_STATE,
            ),
            ("local", garbage, "cannot be decrypted", code::WRONG_STATE),
        ];
        for (store, file, words, want_code) in cases {
            let error = fixture
                .restore(vec![down.clone()], store, &file)
                .await
                .unwrap_err();
            let rpc: RpcError = error.into();
            assert_eq!(rpc.code, want_code, "{store} {file}: {}", rpc.message);
            assert!(
                rpc.message.contains(words),
                "{store} {file}: {}",
                rpc.message
            );
            if want_code == code::WRONG_STATE {
                assert!(
                    rpc.message.contains("nothing was changed"),
                    "{}",
                    rpc.message
                );
            } else {
                assert_eq!(rpc.data.unwrap()["known"], json!(["local", "bastion:down"]));
            }
            assert_eq!(
                fixture.local_bytes().unwrap(),
                state_json(low),
                "{store} {file}"
            );
        }
        // The genuine one still works afterwards (the junk is skipped).
        let restored = fixture
            .restore(vec![down], "local", &genuine)
            .await
            .unwrap();
        assert_eq!(restored.watermark, high);
    }

    #[tokio::test]
    async fn a_bundle_of_another_validator_is_refused() {
        let fixture = Fixture::new();
        let mut expectations = fixture.expectations();
        expectations.validator_address = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".into();
        let file = fixture.publish(1, wm(5, 0, Step::Precommit)).await;
        let stores: Vec<Arc<dyn BackupStore>> = vec![fixture.store.clone()];
        let error = restore_one(
            &stores,
            &fixture.identity,
            &expectations,
            &fixture.state_path(),
            &RestoreRequest {
                store: "local".into(),
                file,
            },
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("is for validator"), "{error}");
        assert_eq!(fixture.local_bytes(), None);
    }
}
