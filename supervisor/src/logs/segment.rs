//! Segments: the writer thread that formats lines and cuts segments, and
//! the [`Sealer`] that turns a segment's plaintext into its two objects.
//!
//! Sealing, in order: zstd (one frame, level 3), age (binary, to every
//! recipient), then the signed metadata ([`SegmentMetadata`]: names, times,
//! counts, and the ciphertext's length and SHA-256) with an ed25519
//! signature over [`signed_message`]. The signature covers the ciphertext
//! through its hash, so a reader checks it before decrypting.
//!
//! The writer is one OS thread: it takes chunks from the tap's queue, cuts
//! a segment when the next record would pass `segment-bytes` or when
//! `segment-interval` has passed since the segment's first line, seals it
//! and adds it to the spool. It is the queue's only consumer: while it
//! seals, the queue fills and the tap drops (counted); nothing upstream
//! waits.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::{Signer, SigningKey};
use palisade_wire::log_segment::{
    FORMAT, SegmentMetadata, SegmentName, SignatureFile, signed_message, to_hex,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::LogStats;
use super::record::{daemon_level, format_record, timestamp};
use super::spool::Spool;
use super::tap::{Chunk, Origin, QueueReceiver};
use crate::config::LogFormat;

/// zstd's level: fast (hundreds of MB/s) and a good ratio on log text.
const ZSTD_LEVEL: i32 = 3;

/// Loads an unencrypted OpenSSH ed25519 private key (mode 0600 or
/// stricter), as the tunnel uses it.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "permissions {:o} are too open (others can read the key); chmod 600 it",
            metadata.permissions().mode() & 0o777
        ));
    }
    let text = Zeroizing::new(std::fs::read(path).map_err(|error| error.to_string())?);
    let key = russh::keys::ssh_key::PrivateKey::from_openssh(&*text)
        .map_err(|error| format!("not an OpenSSH private key: {error}"))?;
    if key.is_encrypted() {
        return Err("the key has a passphrase, which the supervisor cannot type".into());
    }
    let keypair = key.key_data().ed25519().ok_or_else(|| {
        format!(
            "a {} key: segments are signed with ed25519; set logs.signing-key to an ed25519 key",
            key.algorithm()
        )
    })?;
    let seed = Zeroizing::new(keypair.private.to_bytes());
    Ok(SigningKey::from_bytes(&seed))
}

/// Seals segments: who writes them, to whom, signed with what.
pub struct Sealer {
    validator: String,
    host: String,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    key: SigningKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("validator", &self.validator)
            .field("host", &self.host)
            .field("recipients", &self.recipients.len())
            .field("key", &"REDACTED")
            .finish()
    }
}

/// A sealed segment: its name and its two objects.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub name: SegmentName,
    pub ciphertext: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The lines of a segment being written.
#[derive(Debug, Default)]
pub struct Plaintext {
    pub bytes: Vec<u8>,
    pub lines: u64,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
}

impl Sealer {
    pub fn new(
        validator: &str,
        host: &str,
        recipients: Vec<Box<dyn age::Recipient + Send>>,
        key: SigningKey,
    ) -> Sealer {
        Sealer {
            validator: validator.to_owned(),
            host: host.to_owned(),
            recipients,
            key,
        }
    }

    /// Compress, encrypt and sign `plaintext` as segment `sequence`.
    pub fn seal(
        &self,
        sequence: u64,
        plaintext: &Plaintext,
        lines_dropped_before: u64,
    ) -> Result<Sealed, String> {
        let compressed = zstd::bulk::compress(&plaintext.bytes, ZSTD_LEVEL)
            .map_err(|error| format!("zstd: {error}"))?;
        let encryptor = age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|recipient| recipient.as_ref() as &dyn age::Recipient),
        )
        .map_err(|error| format!("age: {error}"))?;
        let mut ciphertext = Vec::with_capacity(compressed.len() + 4096);
        let mut writer = encryptor
            .wrap_output(&mut ciphertext)
            .map_err(|error| format!("age: {error}"))?;
        writer
            .write_all(&compressed)
            .and_then(|()| writer.finish().map(drop))
            .map_err(|error| format!("age: {error}"))?;
        let now = SystemTime::now();
        let metadata = SegmentMetadata {
            format: FORMAT.into(),
            validator: self.validator.clone(),
            host: self.host.clone(),
            sequence,
            first_ts: timestamp(plaintext.first.unwrap_or(now)),
            last_ts: timestamp(plaintext.last.unwrap_or(now)),
            lines: plaintext.lines,
            lines_dropped_before,
            plaintext_bytes: plaintext.bytes.len() as u64,
            ciphertext_bytes: ciphertext.len() as u64,
            ciphertext_sha256: to_hex(&Sha256::digest(&ciphertext)),
        };
        let signature = self.key.sign(&signed_message(&metadata));
        let name = metadata.name();
        let signature = SignatureFile {
            metadata,
            signature: to_hex(&signature.to_bytes()),
        }
        .to_bytes();
        Ok(Sealed {
            name,
            ciphertext,
            signature,
        })
    }
}

/// How the writer cuts segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterSettings {
    pub segment_bytes: usize,
    pub interval: Duration,
    pub format: LogFormat,
}

/// The running writer thread.
pub(crate) struct WriterHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl WriterHandle {
    /// Seal what it holds and end the thread.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Start the writer thread.
pub(crate) fn spawn_writer(
    settings: WriterSettings,
    sealer: Sealer,
    next_sequence: u64,
    queue: QueueReceiver,
    spool: Arc<Spool>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<LogStats>,
) -> std::io::Result<WriterHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("log-segments".into())
        .spawn(move || {
            let mut writer = Writer {
                settings,
                sealer,
                sequence: next_sequence,
                current: Plaintext::default(),
                opened: Instant::now(),
                dropped_reported: 0,
                spool,
                wake,
                stats,
            };
            writer.run(&queue, &stopping);
        })?;
    Ok(WriterHandle { stop, thread })
}

struct Writer {
    settings: WriterSettings,
    sealer: Sealer,
    sequence: u64,
    current: Plaintext,
    /// When the current segment got its first line.
    opened: Instant,
    /// `lines_dropped` as of the last sealed segment.
    dropped_reported: u64,
    spool: Arc<Spool>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<LogStats>,
}

impl Writer {
    fn run(&mut self, queue: &QueueReceiver, stop: &AtomicBool) {
        let mut record = Vec::new();
        loop {
            let wait = if self.current.lines == 0 {
                Duration::from_millis(200)
            } else {
                self.settings
                    .interval
                    .saturating_sub(self.opened.elapsed())
                    .min(Duration::from_millis(200))
            };
            match queue.recv_timeout(wait) {
                Ok(chunk) => self.take(chunk, &mut record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.current.lines > 0 && self.opened.elapsed() >= self.settings.interval {
                self.cut();
            }
            if stop.load(Ordering::Relaxed) {
                // What is already queued goes into this last segment.
                while let Ok(chunk) = queue.recv_timeout(Duration::ZERO) {
                    self.take(chunk, &mut record);
                }
                break;
            }
        }
        if self.current.lines > 0 {
            self.cut();
        }
    }

    /// Format a chunk's lines into the current segment, cutting as needed.
    fn take(&mut self, chunk: Chunk, record: &mut Vec<u8>) {
        let ts = timestamp(chunk.at);
        match chunk.origin {
            Origin::Daemon(stream) => {
                let bytes = chunk.bytes.strip_suffix(b"\n").unwrap_or(&chunk.bytes);
                for line in bytes.split(|&byte| byte == b'\n') {
                    record.clear();
                    self.format(
                        record,
                        &ts,
                        stream.as_str(),
                        daemon_level(line),
                        "gaiad",
                        line,
                    );
                    self.append(record, chunk.at);
                }
            }
            Origin::Supervisor(level) => {
                record.clear();
                let level = level.as_str().to_ascii_lowercase();
                self.format(
                    record,
                    &ts,
                    "supervisor",
                    Some(&level),
                    "supervisor",
                    &chunk.bytes,
                );
                self.append(record, chunk.at);
            }
        }
    }

    /// One record; a line whose record alone would pass `segment-bytes` is
    /// cut short (the JSON escaping of a control character can make a line
    /// six times longer).
    fn format(
        &self,
        record: &mut Vec<u8>,
        ts: &str,
        stream: &str,
        level: Option<&str>,
        source: &str,
        line: &[u8],
    ) {
        format_record(
            record,
            self.settings.format,
            ts,
            stream,
            level,
            source,
            line,
        );
        if record.len() > self.settings.segment_bytes {
            record.clear();
            let keep = &line[..line.len().min(self.settings.segment_bytes / 8)];
            let mut cut = keep.to_vec();
            cut.extend_from_slice(" …[cut by the log shipping: line too long]".as_bytes());
            format_record(
                record,
                self.settings.format,
                ts,
                stream,
                level,
                source,
                &cut,
            );
        }
    }

    fn append(&mut self, record: &[u8], at: SystemTime) {
        if self.current.lines > 0
            && self.current.bytes.len() + record.len() > self.settings.segment_bytes
        {
            self.cut();
        }
        if self.current.lines == 0 {
            self.opened = Instant::now();
            self.current.first = Some(at);
            self.current.bytes.reserve(self.settings.segment_bytes);
        }
        self.current.bytes.extend_from_slice(record);
        self.current.lines += 1;
        self.current.last = Some(at);
    }

    /// Seal the current segment and spool it.
    fn cut(&mut self) {
        let plaintext = std::mem::take(&mut self.current);
        let dropped = self.stats.lines_dropped.load(Ordering::Relaxed);
        let dropped_before = dropped.saturating_sub(self.dropped_reported);
        let sealed = match self.sealer.seal(self.sequence, &plaintext, dropped_before) {
            Ok(sealed) => sealed,
            Err(reason) => {
                tracing::error!(%reason, lines = plaintext.lines, "cannot seal a log segment; its lines are lost");
                self.stats
                    .lines_dropped
                    .fetch_add(plaintext.lines, Ordering::Relaxed);
                return;
            }
        };
        match self.spool.add(&sealed) {
            Ok(()) => {
                self.sequence += 1;
                self.dropped_reported = dropped;
                self.stats
                    .lines_written
                    .fetch_add(plaintext.lines, Ordering::Relaxed);
                self.stats.segments_written.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_waiters();
            }
            Err(error) => {
                tracing::error!(%error, segment = %sealed.name.stem(), lines = plaintext.lines, "cannot spool a log segment; its lines are lost");
                // The sequence number may be on disk already: never reuse it.
                self.sequence += 1;
                self.stats
                    .lines_dropped
                    .fetch_add(plaintext.lines, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_segment_verifies_and_decrypts_to_its_lines() {
        let identity = age::x25519::Identity::generate();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let sealer = Sealer::new(
            "val-a",
            "host-1",
            vec![Box::new(identity.to_public())],
            key.clone(),
        );
        let plaintext = Plaintext {
            bytes: b"one\ntwo\n".to_vec(),
            lines: 2,
            first: Some(SystemTime::UNIX_EPOCH),
            last: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(5)),
        };
        let sealed = sealer.seal(9, &plaintext, 4).unwrap();
        assert_eq!(
            sealed.name.ciphertext_file(),
            "log-host-1-00000000000000000009.age"
        );
        let file = SignatureFile::parse(&sealed.signature).unwrap();
        assert_eq!(file.metadata.lines, 2);
        assert_eq!(file.metadata.lines_dropped_before, 4);
        assert_eq!(file.metadata.first_ts, "1970-01-01T00:00:00.000Z");
        assert_eq!(file.metadata.last_ts, "1970-01-01T00:00:00.005Z");
        assert_eq!(
            file.metadata.ciphertext_sha256,
            to_hex(&Sha256::digest(&sealed.ciphertext))
        );
        let signature = ed25519_dalek::Signature::from_bytes(&file.signature_bytes().unwrap());
        key.verifying_key()
            .verify_strict(&signed_message(&file.metadata), &signature)
            .unwrap();
        let decryptor = age::Decryptor::new_buffered(&sealed.ciphertext[..]).unwrap();
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap();
        let mut compressed = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut compressed).unwrap();
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn signing_keys_must_be_private_ed25519_and_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(load_signing_key(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_signing_key(&path).unwrap_err().contains("too open"));
        let rsa = dir.path().join("rsa");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&rsa)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(load_signing_key(&rsa).unwrap_err().contains("ed25519"));
        assert!(load_signing_key(&dir.path().join("missing")).is_err());
    }
}
