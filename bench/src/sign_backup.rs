//! `backup_create_ms_p50` / `backup_create_ms_p99`: one sign-state backup as
//! the supervisor makes it on every watermark change — a bundle of a typical
//! `priv_validator_state.json` and both key files, signed with the vault's
//! ed25519 key, age-encrypted to the vault and one recovery recipient, and
//! written atomically (temp, fsync, link, fsync dir) to a local store.
//! Must stay well under one block time.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use palisade_supervisor::backup::{BackupStore, BundleInput, LocalDirStore, create_bundle};
use palisade_supervisor::sign_state::{SignState, Step, Watermark};
use palisade_supervisor::vault::{WorkFactor, init_vault, unlock};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::{Measured, result};

const RUNS: usize = 200;
/// A tenth of a fast (1 s) block.
const TARGET_P99_MS: f64 = 100.0;

const PRIV_VALIDATOR_KEY: &str = r#"{
  "address": "A3F1C2D4E5B6A7980112233445566778899AABBC",
  "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "mO3l1c8S0cF1t0oL3sJ7y5cB6a2f9X2a0hQ7l1c8S0c="},
  "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": "q0Qk7n3Yw8x3m9H0c2bA5r6t7y8u9i0o1p2a3s4d5f6g7h8j9k0l1z2x3c4v5b6n7m8q9w0e1r2t3y4u5i6o7p8a9s=="}
}"#;
const NODE_KEY: &str = r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"q0Qk7n3Yw8x3m9H0c2bA5r6t7y8u9i0o1p2a3s4d5f6g7h8j9k0l1z2x3c4v5b6n7m8q9w0e1r2t3y4u5i6o7p8a9s=="}}"#;

pub fn run(scratch: &Path) -> anyhow::Result<(Measured, Measured)> {
    std::fs::create_dir_all(scratch)?;
    let dir = tempfile::tempdir_in(scratch)?;
    let passphrase = SecretString::from("benchmark passphrase".to_string());
    let recovery = age::x25519::Identity::generate().to_public().to_string();
    init_vault(
        &dir.path().join("vault"),
        &passphrase,
        WorkFactor::new(10)?,
        &[recovery],
    )?;
    let vault = unlock(&dir.path().join("vault"), &passphrase)?;
    let recipients = vault.backup_recipients()?;
    let store = LocalDirStore::new(dir.path().join("store"), "local")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let mut samples = Vec::with_capacity(RUNS);
    for sequence in 1..=RUNS as u64 {
        let watermark = Watermark {
            height: 1_000_000 + sequence,
            round: 0,
            step: Step::Precommit,
        };
        let state = SignState::from_watermark(watermark).to_json();
        let started = Instant::now();
        let input = BundleInput {
            chain_id: "cosmoshub-4".into(),
            validator_address: "A3F1C2D4E5B6A7980112233445566778899AABBC".into(),
            watermark,
            sequence,
            host_id: "bench".into(),
            created_at: SystemTime::now(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            priv_validator_state: state,
            priv_validator_key: Some(Zeroizing::new(PRIV_VALIDATOR_KEY.as_bytes().to_vec())),
            node_key: Some(Zeroizing::new(NODE_KEY.as_bytes().to_vec())),
        };
        let ciphertext = create_bundle(&input, vault.signing_key(), &recipients)?;
        runtime
            .block_on(store.put(&input.file_name().to_string(), &ciphertext))
            .context("writing the bundle")?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let percentile = |p: f64| -> f64 {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        (samples[index].as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    };
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    let detail = format!(
        "{RUNS} bundles (state + 2 keys, 2 recipients) written to a local store; min {:.3} ms, max {:.3} ms",
        samples[0].as_secs_f64() * 1000.0,
        samples
            .last()
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1000.0
    );
    Ok((
        Measured {
            result: result("backup_create_ms_p50", p50, "ms", Some(TARGET_P99_MS)),
            detail: detail.clone(),
        },
        Measured {
            result: result("backup_create_ms_p99", p99, "ms", Some(TARGET_P99_MS)),
            detail,
        },
    ))
}
