//! `data_backup_2gib_reflink_s` and `data_backup_2gib_copy_s`: the
//! supervisor's pre-upgrade data backup (`backup_data_dir`) of a 2 GiB data
//! directory, once on XFS with reflink (a loop-mounted image) and once on
//! the regular filesystem of `target/bench` (byte copy).
//!
//! The source files are written and fsynced just before the backup, so they
//! are usually still in the page cache: the figures measure the backup with
//! a warm cache (dropping caches is out of scope).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};
use palisade_supervisor::upgrade::data_backup::{BackupMethod, backup_data_dir};

use crate::{Measured, result};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// 8 × 256 MiB database files.
const BIG_FILES: u64 = 8;
const BIG_FILE_SIZE: u64 = 256 * MIB;
const CHUNK: usize = 4 << 20;
/// Size of the XFS image (sparse).
const IMAGE_SIZE: u64 = 3 * GIB;

/// Reflink backup on a freshly made XFS (`mkfs.xfs -m reflink=1`) loop mount
/// in `scratch` (needs root and xfsprogs).
pub fn run_reflink(scratch: &Path) -> anyhow::Result<Measured> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root to loop-mount an XFS image (run as root, or skip it with --only)");
    }
    fs::create_dir_all(scratch)?;
    let mount = XfsMount::create(scratch)?;
    measure(
        &mount.mountpoint.join("node"),
        "data_backup_2gib_reflink_s",
        BackupMethod::Reflink,
    )
}

/// Byte-copy backup on the filesystem holding `scratch`.
pub fn run_copy(scratch: &Path) -> anyhow::Result<Measured> {
    fs::create_dir_all(scratch)?;
    let dir = tempfile::Builder::new()
        .prefix("copy-")
        .tempdir_in(scratch)
        .with_context(|| format!("creating a directory in {}", scratch.display()))?;
    measure(dir.path(), "data_backup_2gib_copy_s", BackupMethod::Copy)
}

fn measure(node: &Path, name: &str, expected: BackupMethod) -> anyhow::Result<Measured> {
    let data = node.join("data");
    let bytes = write_data_dir(&data)?;
    let report = backup_data_dir(
        &data,
        &node.join("backups"),
        "bench",
        SystemTime::now(),
        &mut |_| {},
    )
    .with_context(|| format!("backing up {}", data.display()))?;
    if report.method != expected {
        bail!(
            "{name}: the backup used {:?}, expected {expected:?} (is {} on the filesystem this benchmark assumes?)",
            report.method,
            node.display()
        );
    }
    if report.bytes != bytes {
        bail!("{name}: backed up {} bytes, wrote {bytes}", report.bytes);
    }
    let seconds = report.duration.as_secs_f64();
    Ok(Measured {
        result: result(name, round(seconds, 4), "s", None),
        detail: format!(
            "{:?} of {} files, {:.0} MiB{}",
            report.method,
            report.files,
            bytes as f64 / MIB as f64,
            if expected == BackupMethod::Copy {
                format!(
                    ", {:.0} MiB/s",
                    bytes as f64 / MIB as f64 / seconds.max(1e-9)
                )
            } else {
                String::new()
            }
        ),
    })
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// A node-like data dir: 8 × 256 MiB "database" files of pseudo-random bytes
/// plus a few small files. Returns the total bytes of regular files.
fn write_data_dir(data: &Path) -> anyhow::Result<u64> {
    let db = data.join("application.db");
    fs::create_dir_all(&db)?;
    fs::create_dir_all(data.join("blockstore.db"))?;
    let mut total = 0;
    let mut buffer = vec![0u8; CHUNK];
    for index in 0..BIG_FILES {
        fill_random(&mut buffer, 0x9e37_79b9_7f4a_7c15 ^ (index + 1));
        let path = db.join(format!("{:06}.sst", index + 1));
        let mut file = File::create(&path)?;
        for chunk in 0..BIG_FILE_SIZE / CHUNK as u64 {
            // Make every chunk distinct without regenerating it.
            buffer[..8].copy_from_slice(&chunk.to_le_bytes());
            file.write_all(&buffer)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        file.sync_all()?;
        total += BIG_FILE_SIZE;
    }
    let small: [(PathBuf, &[u8]); 5] = [
        (
            data.join("priv_validator_state.json"),
            br#"{"height":"1000","round":0,"step":3}"#,
        ),
        (db.join("CURRENT"), b"MANIFEST-000002\n"),
        (db.join("MANIFEST-000002"), &[7u8; 4096]),
        (db.join("LOG"), b"bench data directory\n"),
        (
            data.join("blockstore.db").join("000001.log"),
            &[1u8; 64 * 1024],
        ),
    ];
    for (path, contents) in small {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        total += contents.len() as u64;
    }
    Ok(total)
}

/// xorshift64: fast, incompressible-looking bytes.
fn fill_random(buffer: &mut [u8], seed: u64) {
    let mut state = seed | 1;
    for word in buffer.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
}

/// A sparse XFS image with reflink, loop-mounted; unmounted and deleted on drop.
struct XfsMount {
    image: PathBuf,
    mountpoint: PathBuf,
    mounted: bool,
}

impl XfsMount {
    fn create(scratch: &Path) -> anyhow::Result<XfsMount> {
        let pid = std::process::id();
        let mut mount = XfsMount {
            image: scratch.join(format!("xfs-reflink-{pid}.img")),
            mountpoint: scratch.join(format!("xfs-reflink-{pid}.mnt")),
            mounted: false,
        };
        File::create(&mount.image)
            .and_then(|f| f.set_len(IMAGE_SIZE))
            .with_context(|| format!("creating {}", mount.image.display()))?;
        let output = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&mount.image)
            .output()
            .map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    anyhow::anyhow!("mkfs.xfs not found: install xfsprogs")
                } else {
                    anyhow::anyhow!("running mkfs.xfs: {error}")
                }
            })?;
        if !output.status.success() {
            bail!(
                "mkfs.xfs -m reflink=1 {} failed: {}",
                mount.image.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        fs::create_dir_all(&mount.mountpoint)?;
        let output = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&mount.image)
            .arg(&mount.mountpoint)
            .output()
            .context("running mount")?;
        if !output.status.success() {
            bail!(
                "mount -o loop {} failed (needs root and loop devices): {}",
                mount.image.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        mount.mounted = true;
        Ok(mount)
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        if self.mounted {
            let unmounted = Command::new("umount")
                .arg(&self.mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                eprintln!(
                    "warning: could not unmount {}; detaching lazily",
                    self.mountpoint.display()
                );
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        }
        let _ = fs::remove_dir(&self.mountpoint);
        let _ = fs::remove_file(&self.image);
    }
}
