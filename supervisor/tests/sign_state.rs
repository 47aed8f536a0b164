//! The sign-state file on a real filesystem: `read_local`, `write_atomic`
//! (atomic, durable, 0600, never backwards) and `StateFollower` against
//! CometBFT-style temp+rename writes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use palisade_supervisor::sign_state::{
    KnownWatermark, LocalState, SignState, SignStateError, SignStateWriteError, StartDecision,
    StateFollower, Step, Watermark, WatermarkSource, read_local, start_decision, write_atomic,
};

const NAME: &str = "priv_validator_state.json";
const TEMP: &str = ".priv_validator_state.json.palisade.tmp";

fn mark(height: u64, round: u32, step: Step) -> Watermark {
    Watermark {
        height,
        round,
        step,
    }
}

fn state(height: u64) -> SignState {
    SignState {
        height,
        round: 0,
        step: Step::Precommit,
        signature: vec![7; 64],
        signbytes: vec![0xab; 20],
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Write the way CometBFT's `WriteFileAtomic` does: a temp file in the same
/// directory, then rename over.
fn cometbft_write(path: &Path, state: &SignState) {
    let temp = path.with_file_name("priv_validator_state.json.1234567");
    std::fs::write(&temp, state.to_json()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[test]
fn write_atomic_creates_a_0600_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    let written = state(42);
    write_atomic(&path, &written, None).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), written.to_json());
    assert_eq!(entries(dir.path()), vec![NAME.to_string()]);
    assert_eq!(read_local(&path), LocalState::Present(written.watermark()));

    // Replace it: equal to the highest known and higher are both fine.
    write_atomic(&path, &written, Some(written.watermark())).unwrap();
    write_atomic(&path, &state(43), Some(written.watermark())).unwrap();
    assert_eq!(
        read_local(&path),
        LocalState::Present(mark(43, 0, Step::Precommit))
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(entries(dir.path()), vec![NAME.to_string()]);
}

#[test]
fn write_atomic_replaces_a_stale_temp_without_following_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(TEMP)).unwrap();

    write_atomic(&path, &state(5), None).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    assert_eq!(std::fs::read(&path).unwrap(), state(5).to_json());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(entries(dir.path()), vec![NAME.to_string(), "victim".into()]);

    // A stale regular temp file (left by a crash) is replaced too.
    std::fs::write(dir.path().join(TEMP), b"{\"height\":\"99").unwrap();
    std::fs::set_permissions(
        dir.path().join(TEMP),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    write_atomic(&path, &state(6), None).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(entries(dir.path()), vec![NAME.to_string(), "victim".into()]);
}

#[test]
fn write_atomic_refuses_to_go_below_the_highest_known_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    write_atomic(&path, &state(10), None).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A stale temp file proves that nothing at all was touched.
    std::fs::write(dir.path().join(TEMP), b"stale").unwrap();

    let known = mark(10, 0, Step::Precommit);
    let lower_cases = [
        ("lower height", state(9)),
        (
            "same height, lower step",
            SignState::from_watermark(mark(10, 0, Step::Prevote)),
        ),
        (
            "fresh state",
            SignState::from_watermark(mark(0, 0, Step::None)),
        ),
    ];
    for (name, lower) in lower_cases {
        let error = write_atomic(&path, &lower, Some(known)).expect_err(name);
        match &error {
            SignStateWriteError::Refused {
                path: refused,
                error:
                    SignStateError::BelowKnownWatermark {
                        proposed, known: k, ..
                    },
            } => {
                assert_eq!(refused, &path, "{name}");
                assert_eq!(*proposed, lower.watermark(), "{name}");
                assert_eq!(*k, known, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&known.to_string())
                && message.contains(&lower.watermark().to_string())
                && message.contains(&path.display().to_string()),
            "{name}: {message}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}");
        assert_eq!(
            std::fs::read(dir.path().join(TEMP)).unwrap(),
            b"stale",
            "{name}"
        );
    }
}

#[test]
fn write_atomic_names_the_path_on_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join(NAME);
    let error = write_atomic(&path, &state(1), None).unwrap_err();
    assert!(matches!(error, SignStateWriteError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-dir"), "{error}");
}

#[test]
fn read_local_classifies_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    assert_eq!(read_local(&path), LocalState::Missing);

    std::fs::write(&path, br#"{"height":"0","round":0,"step":0}"#).unwrap();
    assert_eq!(
        read_local(&path),
        LocalState::Present(mark(0, 0, Step::None))
    );

    std::fs::write(&path, b"").unwrap();
    assert_eq!(
        read_local(&path),
        LocalState::Unreadable(SignStateError::Empty)
    );

    std::fs::write(&path, br#"{"height":"12","round":0,"st"#).unwrap();
    assert_eq!(
        read_local(&path),
        LocalState::Unreadable(SignStateError::Truncated)
    );

    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    match read_local(&directory) {
        LocalState::Unreadable(SignStateError::Read(reason)) => {
            assert!(reason.contains("a-directory"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_local_file_with_a_backup_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    std::fs::write(&path, b"").unwrap();
    let backup = KnownWatermark {
        watermark: mark(1000, 0, Step::Precommit),
        source: WatermarkSource::Backup {
            store: "bastion".into(),
            name: "state-7".into(),
            sequence: 7,
        },
    };
    match start_decision(&read_local(&path), &path, std::slice::from_ref(&backup)) {
        StartDecision::Refuse {
            reason, highest, ..
        } => {
            assert_eq!(highest, Some(backup));
            assert!(reason.contains(&path.display().to_string()), "{reason}");
            assert!(reason.contains("backup state-7 (sequence 7) in store bastion"));
            assert!(reason.contains("restore-state"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

async fn next_within(follower: &mut StateFollower, wait: Duration) -> Option<Watermark> {
    tokio::time::timeout(wait, follower.next()).await.ok()
}

#[tokio::test]
async fn follower_yields_only_increases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NAME);
    let quiet = Duration::from_millis(250);
    let soon = Duration::from_secs(3);
    // A long poll interval, so inotify has to do the work...
    let mut follower = StateFollower::new(&path, Duration::from_secs(60));
    assert_eq!(follower.current(), None);
    assert_eq!(next_within(&mut follower, quiet).await, None);

    cometbft_write(&path, &state(1));
    assert_eq!(
        next_within(&mut follower, soon).await,
        Some(mark(1, 0, Step::Precommit))
    );
    assert_eq!(follower.current(), Some(mark(1, 0, Step::Precommit)));

    // A partial write is ignored until the file is complete.
    std::fs::write(&path, &state(2).to_json()[..20]).unwrap();
    assert_eq!(next_within(&mut follower, quiet).await, None);
    cometbft_write(&path, &state(2));
    assert_eq!(
        next_within(&mut follower, soon).await,
        Some(mark(2, 0, Step::Precommit))
    );

    // Unchanged: nothing.
    cometbft_write(&path, &state(2));
    assert_eq!(next_within(&mut follower, quiet).await, None);

    // Each step of a height counts.
    cometbft_write(&path, &SignState::from_watermark(mark(3, 0, Step::Propose)));
    assert_eq!(
        next_within(&mut follower, soon).await,
        Some(mark(3, 0, Step::Propose))
    );

    // A decrease (must never happen) is not yielded; the highest is kept.
    cometbft_write(&path, &state(1));
    assert_eq!(next_within(&mut follower, quiet).await, None);
    assert_eq!(follower.current(), Some(mark(3, 0, Step::Propose)));
    cometbft_write(&path, &state(2));
    assert_eq!(next_within(&mut follower, quiet).await, None);

    cometbft_write(&path, &state(4));
    assert_eq!(
        next_within(&mut follower, soon).await,
        Some(mark(4, 0, Step::Precommit))
    );
    assert_eq!(follower.current(), Some(mark(4, 0, Step::Precommit)));
}

#[tokio::test]
async fn follower_polls_when_the_directory_appears_later_and_honours_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join(NAME);
    let mut follower = StateFollower::new(&path, Duration::from_millis(20)).with_baseline(mark(
        5,
        0,
        Step::Precommit,
    ));
    assert_eq!(follower.current(), Some(mark(5, 0, Step::Precommit)));

    std::fs::create_dir(&data).unwrap();
    cometbft_write(&path, &state(5));
    assert_eq!(
        next_within(&mut follower, Duration::from_millis(250)).await,
        None
    );
    cometbft_write(&path, &state(6));
    assert_eq!(
        next_within(&mut follower, Duration::from_secs(3)).await,
        Some(mark(6, 0, Step::Precommit))
    );
}
