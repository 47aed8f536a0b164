//! [`RemoteStore`] against real `palisade-bastion serve-backups` processes:
//! publishing real bundles to two bastions, gathering and verifying them,
//! one bastion dying, and restoring from either.
//!
//! The bastion binary comes from `cargo build --workspace` (the README's
//! test command builds every binary first), like the simulated chain's.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::timing::{LONG, OPERATION};
use ed25519_dalek::SigningKey;
use palisade_supervisor::backup::{
    BackupStore, BundleInput, Expectations, RejectionReason, RemoteStore, StoreError,
    apply_retention, create_bundle, gather_and_verify, publish,
};
use palisade_supervisor::sign_state::{Step, Watermark};
use zeroize::Zeroizing;

const CHAIN: &str = "testchain-1";
const ADDRESS: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678";

fn bastion_binary() -> PathBuf {
    common::workspace_binary("palisade-bastion")
}

struct Bastion {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Bastion {
    fn start() -> Bastion {
        let mut bastion = Bastion {
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        std::fs::write(
            bastion.dir.path().join("bastion.toml"),
            format!(
                "listen-socket = \"{0}/run/bastion.sock\"\n\
                 backup-dir = \"{0}/backups\"\n\
                 [[validator]]\nname = \"val-a\"\nsocket = \"{0}/run/val-a.sock\"\n",
                bastion.dir.path().display()
            ),
        )
        .unwrap();
        bastion.restart();
        bastion
    }

    fn restart(&mut self) {
        self.kill();
        let child = Command::new(bastion_binary())
            .arg("serve-backups")
            .arg("--config")
            .arg(self.dir.path().join("bastion.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        common::wait_until(LONG, "the bastion to listen", || {
            std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/bastion.sock")
    }

    fn store(&self, name: &str) -> Arc<dyn BackupStore> {
        Arc::new(RemoteStore::unix(self.socket(), "val-a", name).with_timeout(OPERATION))
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Fixture {
    signing_key: SigningKey,
    identity: age::x25519::Identity,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            signing_key: SigningKey::from_bytes(&rand::random()),
            identity: age::x25519::Identity::generate(),
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

    /// A real bundle at `sequence` / `height`, and its file name.
    fn bundle(&self, sequence: u64, height: u64) -> (String, Vec<u8>) {
        let watermark = Watermark {
            height,
            round: 0,
            step: Step::Precommit,
        };
        let input = BundleInput {
            chain_id: CHAIN.into(),
            validator_address: ADDRESS.to_ascii_lowercase(),
            watermark,
            sequence,
            host_id: "validator-a".into(),
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            software_version: "0.1.0-test".into(),
            priv_validator_state: format!(
                "{{\n  \"height\": \"{height}\",\n  \"round\": 0,\n  \"step\": {},\n  \
                 \"signature\": \"c2lnbmF0dXJl\",\n  \"signbytes\": \"6B080211\"\n}}",
                Step::Precommit as u8
            )
            .into_bytes(),
            priv_validator_key: Some(Zeroizing::new(b"{\"key\":\"not real\"}".to_vec())),
            node_key: None,
        };
        let recipients: Vec<Box<dyn age::Recipient + Send>> =
            vec![Box::new(self.identity.to_public())];
        let bytes = create_bundle(&input, &self.signing_key, &recipients).unwrap();
        (input.file_name().to_string(), bytes)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_restore_across_two_bastions_with_one_dying() {
    let fixture = Fixture::new();
    let mut first = Bastion::start();
    let mut second = Bastion::start();
    let stores = vec![first.store("bastion-1"), second.store("bastion-2")];

    for (sequence, height) in [(1, 10), (2, 20)] {
        let (name, bytes) = fixture.bundle(sequence, height);
        let report = publish(&stores, &name, &bytes, OPERATION).await;
        assert!(report.stored_everywhere(), "{report:?}");
        assert_eq!(report.stored, ["bastion-1", "bastion-2"]);
    }
    let report = gather_and_verify(
        &stores,
        &fixture.identity,
        &fixture.expectations(),
        OPERATION,
    )
    .await;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    // One per store: each store's newest valid bundle stops its scan.
    assert_eq!(report.accepted.len(), 2);
    let best = report.best.unwrap();
    assert_eq!(
        (best.bundle.metadata.sequence, best.store.as_str()),
        (2, "bastion-1")
    );

    // Bastion 2 dies: publishing still lands on bastion 1.
    second.kill();
    let (name3, bytes3) = fixture.bundle(3, 30);
    let started = Instant::now();
    let report = publish(&stores, &name3, &bytes3, OPERATION).await;
    assert!(started.elapsed() < OPERATION, "a dead bastion fails fast");
    assert_eq!(report.stored, ["bastion-1"]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "bastion-2");
    assert!(
        report.failed[0].1.contains("store unavailable"),
        "{report:?}"
    );

    let report = gather_and_verify(
        &stores,
        &fixture.identity,
        &fixture.expectations(),
        OPERATION,
    )
    .await;
    let best = report.best.as_ref().unwrap();
    assert_eq!(
        (best.bundle.metadata.sequence, best.store.as_str()),
        (3, "bastion-1")
    );
    assert_eq!(best.bundle.metadata.watermark.height, 30);
    assert_eq!(report.rejected.len(), 1, "{:?}", report.rejected);
    let rejected = &report.rejected[0];
    assert_eq!(rejected.store, "bastion-2");
    assert_eq!(rejected.file_name, None);
    assert!(matches!(rejected.reason, RejectionReason::Store(_)));

    // Restore from either: bastion 2 comes back (replacing its stale
    // socket) and bastion 1 dies; bastion 2 still has sequence 2.
    second.restart();
    first.kill();
    let report = gather_and_verify(
        &stores,
        &fixture.identity,
        &fixture.expectations(),
        OPERATION,
    )
    .await;
    let best = report.best.as_ref().unwrap();
    assert_eq!(
        (best.bundle.metadata.sequence, best.store.as_str()),
        (2, "bastion-2")
    );
    assert_eq!(best.bundle.metadata.watermark.height, 20);
    assert!(best.bundle.priv_validator_key.is_some());
    assert_eq!(report.accepted.len(), 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].store, "bastion-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_errors_map_to_store_errors() {
    let bastion = Bastion::start();
    let store = RemoteStore::unix(bastion.socket(), "val-a", "bastion-1").with_timeout(OPERATION);
    let fixture = Fixture::new();
    let (name, bytes) = fixture.bundle(1, 10);

    store.put(&name, &bytes).await.unwrap();
    assert!(matches!(
        store.put(&name, b"forgery").await,
        Err(StoreError::AlreadyExists(n)) if n == name
    ));
    assert_eq!(store.get(&name).await.unwrap(), bytes);
    assert!(matches!(
        store.get("missing.age").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put("../escape", b"x").await,
        Err(StoreError::InvalidName { .. })
    ));
    assert!(matches!(
        store.put("x", &vec![0; 16 * 1024 * 1024 + 1]).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.list().await.unwrap(), std::slice::from_ref(&name));

    // Retention through the remote store's remove.
    for (sequence, height) in [(2, 20), (3, 30)] {
        let (name, bytes) = fixture.bundle(sequence, height);
        store.put(&name, &bytes).await.unwrap();
    }
    let removed = apply_retention(&store, 2).await.unwrap();
    assert_eq!(removed, std::slice::from_ref(&name));
    assert_eq!(store.list().await.unwrap().len(), 2);
    assert!(matches!(
        store.remove(&name).await,
        Err(StoreError::NotFound(_))
    ));

    let stranger = RemoteStore::unix(bastion.socket(), "val-z", "bastion-1");
    match stranger.list().await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("unknown_validator"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    let nowhere = RemoteStore::unix(bastion.dir.path().join("none.sock"), "val-a", "gone");
    assert!(matches!(
        nowhere.list().await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_silent_bastion_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let store =
        RemoteStore::unix(&socket, "val-a", "silent").with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    assert!(matches!(store.list().await, Err(StoreError::Timeout(_))));
    assert!(matches!(
        store.get("x.age").await,
        Err(StoreError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}
