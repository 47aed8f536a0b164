//! Pre-upgrade data backup on real filesystems: an identical tree, naming
//! and collisions, cleanup on failure, the byte-copy fallback on tmpfs and
//! reflinks on a loop-mounted XFS.
//!
//! The tmpfs and XFS tests mount filesystems, so they need root (and
//! mkfs.xfs from xfsprogs); without them they fail with a message saying
//! so rather than passing silently.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_supervisor::upgrade::data_backup::{
    BackupMethod, BackupProgress, DataBackupError, DataBackupReport, backup_data_dir,
    backup_dir_name,
};

fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A small node-like data dir with nested dirs, modes, symlinks and an
/// empty file.
fn build_data_dir(root: &Path) -> PathBuf {
    let data = root.join("data");
    let write = |relative: &str, contents: &[u8], mode: u32| {
        let path = data.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("application.db/000001.log", &vec![7u8; 300_000], 0o644);
    write("application.db/MANIFEST-000002", b"manifest", 0o640);
    write("cs.wal/wal", b"wal entries", 0o600);
    write(
        "priv_validator_state.json",
        br#"{"height":"100","round":0,"step":3}"#,
        0o600,
    );
    write("empty", b"", 0o644);
    write("tools/run.sh", b"#!/bin/sh\n", 0o755);
    write("sealed/inside", b"read-only dir content", 0o444);
    std::fs::set_permissions(data.join("sealed"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(
        data.join("application.db"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("application.db/000001.log", data.join("latest")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", data.join("dangling")).unwrap();
    data
}

/// Every entry of `original` exists in `copy` with the same type, mode,
/// contents, symlink target and file mtime, and nothing else exists.
fn assert_identical_trees(original: &Path, copy: &Path) {
    let list = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        list(original),
        list(copy),
        "entries of {}",
        original.display()
    );
    for name in list(original) {
        let (a, b) = (original.join(&name), copy.join(&name));
        let (meta_a, meta_b) = (
            std::fs::symlink_metadata(&a).unwrap(),
            std::fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(meta_a.file_type(), meta_b.file_type(), "{}", a.display());
        if meta_a.is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap(),
                "{}",
                a.display()
            );
            continue;
        }
        assert_eq!(meta_a.mode(), meta_b.mode(), "mode of {}", a.display());
        if meta_a.is_dir() {
            assert_identical_trees(&a, &b);
        } else {
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "contents of {}",
                a.display()
            );
            assert_eq!(
                meta_a.modified().unwrap(),
                meta_b.modified().unwrap(),
                "mtime of {}",
                a.display()
            );
        }
    }
}

fn backup(
    data: &Path,
    backup_root: &Path,
) -> (
    Result<DataBackupReport, DataBackupError>,
    Vec<BackupProgress>,
) {
    let mut calls = Vec::new();
    let result = backup_data_dir(data, backup_root, "v2.0.0", fixed_now(), &mut |progress| {
        calls.push(progress.clone())
    });
    (result, calls)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn check_backup(data: &Path, backup_root: &Path) -> DataBackupReport {
    let (result, calls) = backup(data, backup_root);
    let report = result.unwrap();
    assert_identical_trees(data, &report.path);
    assert_eq!(report.files, 7);
    assert_eq!(report.symlinks, 2);
    assert_eq!(report.directories, 4);
    assert_eq!(report.bytes, 300_000 + 8 + 11 + 35 + 10 + 21);
    let last = calls.last().expect("a final progress call");
    assert_eq!(
        *last,
        BackupProgress {
            bytes_done: report.bytes,
            bytes_total: report.bytes,
            files_done: 7,
            files_total: 7
        }
    );
    assert!(
        !entries(backup_root)
            .iter()
            .any(|name| name.ends_with(".partial"))
    );
    report
}

#[test]
fn backup_is_an_identical_tree() {
    let temp = tempfile::tempdir().unwrap();
    let data = build_data_dir(temp.path());
    let report = check_backup(&data, &temp.path().join("backups"));
    assert_eq!(
        report.path,
        temp.path()
            .join("backups/data-backup-v2.0.0-20231114T221320Z")
    );
    assert_eq!(report.files_reflinked + report.files_copied, report.files);
}

#[test]
fn names_are_timestamped_and_never_collide() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    let backups = temp.path().join("backups");
    let base = "data-backup-v2.0.0-20231114T221320Z";
    assert_eq!(backup_dir_name("v2.0.0", fixed_now()), base);
    for _ in 0..3 {
        backup(&data, &backups).0.unwrap();
    }
    // A leftover partial from a crashed run is skipped, not reused.
    std::fs::create_dir(backups.join(format!("{base}-3.partial"))).unwrap();
    let report = backup(&data, &backups).0.unwrap();
    assert_eq!(report.path, backups.join(format!("{base}-4")));
    assert_eq!(
        entries(&backups),
        [
            base.to_owned(),
            format!("{base}-1"),
            format!("{base}-2"),
            format!("{base}-3.partial"),
            format!("{base}-4")
        ]
    );
}

#[test]
fn invalid_roots_are_refused_with_the_path() {
    let temp = tempfile::tempdir().unwrap();
    let data = build_data_dir(temp.path());
    let file_root = temp.path().join("not-a-dir");
    std::fs::write(&file_root, b"").unwrap();
    let error = backup(&data, &file_root).0.unwrap_err();
    assert!(error.to_string().contains("not-a-dir"), "{error}");

    let error = backup(&data, &data.join("backups")).0.unwrap_err();
    assert!(
        matches!(error, DataBackupError::BackupRootInsideDataDir { .. }),
        "{error:?}"
    );
    assert!(!data.join("backups").exists() || entries(&data.join("backups")).is_empty());

    let error = backup(&data.join("empty"), &temp.path().join("b"))
        .0
        .unwrap_err();
    assert!(
        matches!(error, DataBackupError::DataDirNotDirectory { .. }),
        "{error:?}"
    );
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test} needs root: it mounts a filesystem (tmpfs or loop-mounted XFS). Run the test suite as root \
         (CI does); it is not skipped because the reflink/copy paths would then go untested."
    );
}

/// A mounted filesystem on a temp dir, unmounted on drop.
struct Mounted {
    mount_point: tempfile::TempDir,
    _image_dir: Option<tempfile::TempDir>,
}

impl Mounted {
    fn tmpfs(size: &str) -> Mounted {
        let mount_point = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point.path()));
        Mounted {
            mount_point,
            _image_dir: None,
        }
    }

    fn xfs_with_reflink() -> Mounted {
        let mkfs = ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs", "mkfs.xfs"]
            .into_iter()
            .find(|candidate| {
                Command::new(candidate)
                    .arg("-V")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("the reflink test needs mkfs.xfs: install xfsprogs (apt-get install xfsprogs)");
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("xfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        run(Command::new(mkfs)
            .args(["-q", "-m", "reflink=1"])
            .arg(&image));
        let mount_point = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(mount_point.path()));
        Mounted {
            mount_point,
            _image_dir: Some(image_dir),
        }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount_point.path()).status();
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn copy_fallback_on_tmpfs_reports_copy() {
    require_root("copy_fallback_on_tmpfs_reports_copy");
    let mounted = Mounted::tmpfs("512m");
    let data = build_data_dir(mounted.path());
    let report = check_backup(&data, &mounted.path().join("backups"));
    assert_eq!(report.method, BackupMethod::Copy);
    assert_eq!(report.files_copied, 7);
}

#[test]
fn reflink_on_xfs_reports_reflink() {
    require_root("reflink_on_xfs_reports_reflink");
    let mounted = Mounted::xfs_with_reflink();
    let data = build_data_dir(mounted.path());
    let report = check_backup(&data, &mounted.path().join("backups"));
    assert_eq!(report.method, BackupMethod::Reflink);
    assert_eq!(report.files_reflinked, 7);
    // Copy-on-write: changing the original leaves the backup untouched.
    std::fs::write(
        data.join("application.db/000001.log"),
        b"rewritten by the new binary",
    )
    .unwrap();
    let backed_up = std::fs::read(report.path.join("application.db/000001.log")).unwrap();
    assert_eq!(backed_up, vec![7u8; 300_000]);
}

#[test]
fn failed_backup_removes_the_partial_dir() {
    let temp = tempfile::tempdir().unwrap();
    let data = build_data_dir(temp.path());
    if is_root() {
        // Root reads everything, so fail on space instead: the byte copy
        // into a 1 MiB tmpfs is refused after the partial dir exists.
        let mounted = Mounted::tmpfs("1m");
        let backups = mounted.path().join("backups");
        let error = backup(&data, &backups).0.unwrap_err();
        assert!(
            matches!(error, DataBackupError::InsufficientSpace { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("not enough space"), "{error}");
        assert_eq!(entries(&backups), Vec::<String>::new());
    } else {
        std::fs::set_permissions(
            data.join("cs.wal/wal"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let backups = temp.path().join("backups");
        let error = backup(&data, &backups).0.unwrap_err();
        assert!(error.to_string().contains("cs.wal/wal"), "{error}");
        assert_eq!(entries(&backups), Vec::<String>::new());
    }
}
