//! The segment writer: one OS thread, at nice 10, that takes chunks from
//! the tap's queue, formats their lines ([`super::record`]), cuts a segment
//! when the next record would pass `segment-bytes` or when
//! `segment-interval` has passed since the segment's first line, seals it
//! ([`super::segment::Sealer`]) and adds it to the spool. It is the queue's
//! only consumer: while it seals, the queue fills and the tap drops
//! (counted); nothing upstream waits.
//!
//! With `[logs.loki]`, each record written into a segment is also offered
//! to the Loki client ([`crate::loki::LokiSender::try_push_with`]): a full
//! Loki queue drops the line for Loki (counted there) and the segment keeps
//! it; nothing here waits on Loki.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::LogStats;
use super::record::{daemon_level, format_record, timestamp};
use super::segment::{Plaintext, Sealer};
use super::spool::Spool;
use super::tap::{Chunk, Origin, QueueReceiver};
use crate::config::LogFormat;
use crate::loki::{LokiEntry, LokiSender};

/// How the writer cuts segments, and where else its records go.
#[derive(Debug, Clone)]
pub(crate) struct WriterSettings {
    pub segment_bytes: usize,
    pub interval: Duration,
    pub format: LogFormat,
    /// `[logs.loki]`'s client, if set: offered each record.
    pub loki: Option<LokiSender>,
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
            // Sealing is CPU work (JSON, zstd, age, SHA-256): under a flood
            // the node's own threads must win every contest for a core.
            if let Err(error) = crate::sys::lower_current_thread_priority(10) {
                tracing::warn!(%error, "cannot lower the log writer's priority");
            }
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
                    self.to_loki(chunk.at, stream.as_str(), record);
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
                self.to_loki(chunk.at, "supervisor", record);
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

    /// Offer the record (without its newline) to Loki, never waiting.
    fn to_loki(&self, at: SystemTime, stream: &str, record: &[u8]) {
        if let Some(loki) = &self.settings.loki {
            loki.try_push_with(|| LokiEntry {
                time: at,
                stream: stream.to_owned(),
                line: String::from_utf8_lossy(record.strip_suffix(b"\n").unwrap_or(record))
                    .into_owned(),
            });
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
