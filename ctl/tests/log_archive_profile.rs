//! `palisade-ctl logs --archive` with its signer and identity from the
//! config file (`log-signer`, `log-identity` in a `[[validator]]`): the
//! real binary reads segments sealed here as the supervisor seals them
//! (zstd, age, the signed metadata of `palisade_wire::log_segment`) from
//! `--from-dir`, and the precedence is `--signer` > `PALISADE_LOG_SIGNER`
//! > `log-signer`, `--identity` > `log-identity`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use palisade_wire::log_segment::{
    FORMAT, SegmentMetadata, SegmentName, SignatureFile, signed_message, to_hex,
};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

/// The `ssh-ed25519 AAAA…` line of `key`'s public half.
fn public_line(key: &SigningKey) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(key.verifying_key().as_bytes());
    format!(
        "ssh-ed25519 {} test-signer",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Writes segment `sequence` of `val-a`/`host-a` holding `lines` into
/// `dir`, sealed for `recipient` and signed with `key`.
fn seal(
    dir: &Path,
    sequence: u64,
    lines: &[&str],
    recipient: &age::x25519::Recipient,
    key: &SigningKey,
) {
    let plaintext: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let compressed = zstd::bulk::compress(plaintext.as_bytes(), 3).unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let mut ciphertext = Vec::new();
    let mut writer = encryptor.wrap_output(&mut ciphertext).unwrap();
    writer.write_all(&compressed).unwrap();
    writer.finish().unwrap();
    let metadata = SegmentMetadata {
        format: FORMAT.into(),
        validator: "val-a".into(),
        host: "host-a".into(),
        sequence,
        first_ts: "2026-12-07T08:00:00.000Z".into(),
        last_ts: "2026-12-07T08:00:09.000Z".into(),
        lines: lines.len() as u64,
        lines_dropped_before: 0,
        plaintext_bytes: plaintext.len() as u64,
        ciphertext_bytes: ciphertext.len() as u64,
        ciphertext_sha256: to_hex(&Sha256::digest(&ciphertext)),
    };
    let signature = key.sign(&signed_message(&metadata));
    let name = SegmentName {
        host: "host-a".into(),
        sequence,
    };
    let file = SignatureFile {
        metadata,
        signature: to_hex(&signature.to_bytes()),
    };
    std::fs::write(dir.join(name.ciphertext_file()), &ciphertext).unwrap();
    std::fs::write(dir.join(name.signature_file()), file.to_bytes()).unwrap();
}

/// Two sealed segments, the operator's identity file and the keys.
struct Fixture {
    dir: tempfile::TempDir,
    logs: PathBuf,
    identity: PathBuf,
    signer: String,
    other_signer: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let operator = age::x25519::Identity::generate();
        let identity = dir.path().join("age.key");
        std::fs::write(
            &identity,
            format!("{}\n", operator.to_string().expose_secret()),
        )
        .unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let recipient = operator.to_public();
        seal(&logs, 0, &["first line ERR"], &recipient, &key);
        seal(&logs, 1, &["second line"], &recipient, &key);
        Fixture {
            logs,
            identity,
            signer: public_line(&key),
            other_signer: public_line(&SigningKey::from_bytes(&[8; 32])),
            dir,
        }
    }

    /// A config file whose one `[[validator]]` (val-a) has `extra`.
    fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("ctl.toml");
        std::fs::write(
            &path,
            format!(
                "[[validator]]\nname = \"val-a\"\nsocket = \"/run/palisade/supervisor.sock\"\n{extra}\n"
            ),
        )
        .unwrap();
        path
    }

    /// `extra` as `log-signer = …` and `log-identity = …` lines.
    fn profile(&self, signer: &str, identity: &Path) -> PathBuf {
        self.config(&format!(
            "log-signer = \"{signer}\"\nlog-identity = \"{}\"",
            identity.display()
        ))
    }

    /// `palisade-ctl --config CONFIG --validator VALIDATOR logs --archive
    /// --from-dir LOGS ARGS…`, with `PALISADE_LOG_SIGNER` set to `env` (or
    /// unset) and nothing else from the environment.
    fn run(&self, config: &Path, validator: &str, args: &[&str], env: Option<&str>) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_palisade-ctl"));
        command
            .arg("--config")
            .arg(config)
            .args(["--validator", validator, "logs", "--archive", "--from-dir"])
            .arg(&self.logs)
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PALISADE_CTL_CONFIG")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PALISADE_LOG_SIGNER");
        if let Some(value) = env {
            command.env("PALISADE_LOG_SIGNER", value);
        }
        command.output().unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Both segments read and printed.
fn assert_read(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let out = stdout(output);
    assert_eq!(out, "first line ERR\nsecond line\n", "{output:?}");
    assert!(stderr(output).contains("2 segment(s) read"), "{output:?}");
}

/// Both segments refused: the pin in force is not their signer's.
fn assert_refused(output: &Output) {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(output), "", "{output:?}");
    let err = stderr(output);
    assert_eq!(
        err.matches("does not verify under the pinned signer key")
            .count(),
        2,
        "{err}"
    );
}

#[test]
fn the_profiles_signer_and_identity_are_used_without_flags() {
    let fixture = Fixture::new();
    let config = fixture.profile(&fixture.signer, &fixture.identity);
    assert_read(&fixture.run(&config, "val-a", &[], None));
    // The filters still apply.
    let output = fixture.run(&config, "val-a", &["--grep", "ERR"], None);
    assert_eq!(stdout(&output), "first line ERR\n", "{output:?}");
    // The profile's pin is really checked: the other key refuses them.
    let wrong = fixture.profile(&fixture.other_signer, &fixture.identity);
    assert_refused(&fixture.run(&wrong, "val-a", &[], None));
}

#[test]
fn flag_then_environment_then_profile() {
    let fixture = Fixture::new();
    let (right, wrong) = (fixture.signer.as_str(), fixture.other_signer.as_str());
    // The environment beats the profile.
    let config = fixture.profile(right, &fixture.identity);
    assert_refused(&fixture.run(&config, "val-a", &[], Some(wrong)));
    let config = fixture.profile(wrong, &fixture.identity);
    assert_read(&fixture.run(&config, "val-a", &[], Some(right)));
    // An empty variable counts as unset: the profile's pin (here the
    // wrong one) is checked, not a file named "".
    assert_refused(&fixture.run(&config, "val-a", &[], Some("")));
    // The flag beats both.
    assert_read(&fixture.run(&config, "val-a", &["--signer", right], Some(wrong)));
    let config = fixture.profile(right, &fixture.identity);
    assert_refused(&fixture.run(&config, "val-a", &["--signer", wrong], Some(right)));
    // --identity beats log-identity (here an unreadable one).
    let missing = fixture.dir.path().join("no-such.key");
    let config = fixture.profile(right, &missing);
    let identity = fixture.identity.to_str().unwrap();
    assert_read(&fixture.run(&config, "val-a", &["--identity", identity], None));
}

#[test]
fn bad_profile_values_name_the_config_key_and_read_nothing() {
    let fixture = Fixture::new();
    // An unreadable log-identity: a usage error naming the file, the
    // validator and the key, before any segment is read.
    let missing = fixture.dir.path().join("no-such.key");
    let config = fixture.profile(&fixture.signer, &missing);
    let output = fixture.run(&config, "val-a", &[], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "{}: validator 'val-a': log-identity {}: No such file",
            config.display(),
            missing.display()
        )),
        "{err}"
    );
    assert!(!err.contains("segment(s) read"), "{err}");
    assert_eq!(stdout(&output), "");
    // A log-identity that is not an identity.
    let config = fixture.profile(
        &fixture.signer,
        &fixture.logs.join("log-host-a-00000000000000000000.sig"),
    );
    let output = fixture.run(&config, "val-a", &[], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("log-identity")
            && stderr(&output).contains("neither an age identity file"),
        "{output:?}"
    );
    // log-signer values that are not an ed25519 public key line: the
    // config is refused, naming the key.
    for (value, reason) in [
        (
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ x",
            "not an ssh-ed25519 public key",
        ),
        ("ssh-ed25519 !!!", "the key's base64 does not decode"),
        (
            "~/val-a-tunnel.pub",
            "not an ssh-ed25519 public key: give the key line itself",
        ),
    ] {
        let config = fixture.profile(value, &fixture.identity);
        let output = fixture.run(&config, "val-a", &[], None);
        assert_eq!(output.status.code(), Some(2), "{value}: {output:?}");
        let err = stderr(&output);
        assert!(
            err.contains(&format!(
                "{}: validator[0].log-signer: {reason}",
                config.display()
            )),
            "{value}: {err}"
        );
        assert_eq!(stdout(&output), "");
    }
    // A relative log-identity.
    let config = fixture.config("log-identity = \"age.key\"");
    let output = fixture.run(&config, "val-a", &["--signer", &fixture.signer], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("validator[0].log-identity: 'age.key' is not an absolute path"),
        "{output:?}"
    );
}

#[test]
fn without_a_signer_anywhere_the_error_says_where_one_goes() {
    let fixture = Fixture::new();
    let identity = fixture.identity.to_str().unwrap();
    let config = fixture.config("");
    let output = fixture.run(&config, "val-a", &["--identity", identity], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = stderr(&output);
    assert!(
        err.contains("--archive needs --signer (or PALISADE_LOG_SIGNER)")
            && err.contains(&format!(
                "or `log-signer` in {}: validator 'val-a'",
                config.display()
            )),
        "{err}"
    );
    let output = fixture.run(&config, "val-a", &["--signer", &fixture.signer], None);
    assert!(
        stderr(&output).contains("or `log-identity` in"),
        "{output:?}"
    );
    // A validator the config does not list: flags alone still work, and
    // a missing setting's message says why the config gave none.
    let config = fixture.profile(&fixture.signer, &fixture.identity);
    let output = fixture.run(&config, "val-b", &["--identity", identity], None);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("no validator 'val-b' in the config (known: val-a)"),
        "{output:?}"
    );
    let output = fixture.run(
        &config,
        "val-b",
        &["--identity", identity, "--signer", &fixture.signer],
        None,
    );
    // Read, and each segment refused: signed for val-a, not val-b.
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("signed for validator \"val-a\", not \"val-b\""),
        "{output:?}"
    );
}
