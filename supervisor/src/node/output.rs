//! The daemon's stdout and stderr: read line by line, scanned for upgrade
//! lines, and forwarded to the supervisor's own stdout/stderr (journald
//! under systemd) — without ever blocking the daemon.
//!
//! Design, and why:
//! - Each pipe is drained by a dedicated OS thread doing blocking reads in
//!   large chunks. It does not share a scheduler with anything else, so the
//!   async runtime being busy can never stall the daemon's writes.
//! - The pipe buffer is enlarged (`F_SETPIPE_SZ`, up to 1 MiB) for slack.
//! - Complete lines travel to a writer thread in *batches* (one chunk of
//!   many lines per message) through a bounded channel with `try_send`. The
//!   reader's cost per chunk is one scan and one allocation, so it drains
//!   faster than any daemon can write. If the consumer (journald, a
//!   terminal, a slow disk) falls behind, whole batches are dropped and
//!   their lines counted — never queued without bound.
//! - Upgrade lines are detected in the reader thread, before any dropping,
//!   and delivered on their own channel: losing log lines must never mean
//!   missing an upgrade.
//! - Over-long lines are truncated at `max_line_bytes` (counted).
//! - With `[logs]`, each batch is also offered to the log shipping
//!   (`crate::logs::tee_daemon_output`: one copy and a `try_send`, dropped
//!   and counted there when its queue is full).

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::config::OutputSettings;
use crate::upgrade::plan::{UpgradePlan, parse_upgrade_line};

/// Bytes read from a pipe per `read(2)`; also the largest batch.
const CHUNK_BYTES: usize = 256 * 1024;

/// Counters shared by the readers and writers, for logs and status.
#[derive(Debug, Default)]
pub struct OutputStats {
    pub lines_forwarded: AtomicU64,
    pub lines_dropped: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub bytes_read: AtomicU64,
}

impl OutputStats {
    pub fn dropped(&self) -> u64 {
        self.lines_dropped.load(Ordering::Relaxed)
    }
}

/// Which of the daemon's streams a reader serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where forwarded lines go.
pub enum Sink {
    /// The supervisor's own stdout/stderr (the default, like Cosmovisor).
    Inherit,
    /// Discard (used by benchmarks).
    Discard,
}

/// Bytes of the daemon's most recent output kept for `logs.tail`.
const RECENT_BYTES: usize = 256 * 1024;

/// The tail of the daemon's output (both streams, in the order written), in
/// a fixed ring of [`RECENT_BYTES`]: one memcpy per batch in the writer
/// threads and no allocation, never anything in the reader threads that
/// drain the daemon's pipes, so the daemon is never slowed by it.
static RECENT: std::sync::Mutex<RecentOutput> = std::sync::Mutex::new(RecentOutput {
    ring: Vec::new(),
    next: 0,
    bytes: 0,
});

struct RecentOutput {
    /// Allocated once, on first use.
    ring: Vec<u8>,
    /// Where the next byte goes.
    next: usize,
    /// Bytes held (at most [`RECENT_BYTES`]).
    bytes: usize,
}

fn remember(batch: &[u8]) {
    let batch = &batch[batch.len().saturating_sub(RECENT_BYTES)..];
    let mut recent = RECENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if recent.ring.is_empty() {
        recent.ring = vec![0; RECENT_BYTES];
    }
    let next = recent.next;
    let first = (RECENT_BYTES - next).min(batch.len());
    recent.ring[next..next + first].copy_from_slice(&batch[..first]);
    recent.ring[..batch.len() - first].copy_from_slice(&batch[first..]);
    recent.next = (next + batch.len()) % RECENT_BYTES;
    recent.bytes = (recent.bytes + batch.len()).min(RECENT_BYTES);
}

/// The last `count` lines the daemon wrote (at most what the last 256 KiB
/// of output hold), oldest first, as lossy UTF-8.
pub fn recent_lines(count: usize) -> Vec<String> {
    let held = {
        let recent = RECENT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = (recent.next + RECENT_BYTES - recent.bytes) % RECENT_BYTES;
        let mut held = Vec::with_capacity(recent.bytes);
        if recent.bytes > 0 && start >= recent.next {
            held.extend_from_slice(&recent.ring[start..]);
            held.extend_from_slice(&recent.ring[..recent.next]);
        } else {
            held.extend_from_slice(&recent.ring[start..recent.next]);
        }
        // A full ring starts mid-line: drop that partial line.
        if recent.bytes == RECENT_BYTES {
            let cut = held
                .iter()
                .position(|&byte| byte == b'\n')
                .map_or(0, |at| at + 1);
            held.drain(..cut);
        }
        held
    };
    let mut lines: Vec<String> = held
        .strip_suffix(b"\n")
        .unwrap_or(&held)
        .rsplit(|&byte| byte == b'\n')
        .filter(|_| !held.is_empty())
        .take(count)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines.reverse();
    lines
}

/// A run of complete lines, each ending in `\n`.
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

/// Running capture of one stream: a reader thread and a writer thread.
pub struct StreamCapture {
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl StreamCapture {
    /// Start draining `pipe`. Upgrade lines are sent on `upgrades`
    /// (a tokio channel, as the main loop awaits it).
    pub fn start(
        stream: Stream,
        pipe: OwnedFd,
        sink: Sink,
        settings: OutputSettings,
        stats: Arc<OutputStats>,
        upgrades: tokio::sync::mpsc::UnboundedSender<UpgradePlan>,
    ) -> io::Result<StreamCapture> {
        enlarge_pipe(&pipe);
        let capacity = (settings.buffer_bytes / CHUNK_BYTES).max(2);
        let (batch_sender, batch_receiver) = sync_channel::<Batch>(capacity);
        let writer_stats = stats.clone();
        let writer = std::thread::Builder::new()
            .name(format!("{stream:?}-writer").to_lowercase())
            .spawn(move || {
                let mut out: Box<dyn Write> = match sink {
                    Sink::Inherit => match stream {
                        Stream::Stdout => Box::new(io::stdout()),
                        Stream::Stderr => Box::new(io::stderr()),
                    },
                    Sink::Discard => Box::new(io::sink()),
                };
                for batch in batch_receiver {
                    remember(&batch.bytes);
                    if out
                        .write_all(&batch.bytes)
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        // The consumer is gone (closed stdout); keep
                        // draining so the reader never blocks.
                        writer_stats
                            .lines_dropped
                            .fetch_add(batch.lines, Ordering::Relaxed);
                        continue;
                    }
                    writer_stats
                        .lines_forwarded
                        .fetch_add(batch.lines, Ordering::Relaxed);
                }
            })?;
        let reader = std::thread::Builder::new()
            .name(format!("{stream:?}-reader").to_lowercase())
            .spawn(move || {
                read_batches(
                    std::fs::File::from(pipe),
                    settings.max_line_bytes,
                    &stats,
                    |bytes, lines| {
                        crate::logs::tee_daemon_output(
                            match stream {
                                Stream::Stdout => crate::logs::LogStream::Stdout,
                                Stream::Stderr => crate::logs::LogStream::Stderr,
                            },
                            &bytes,
                            lines,
                        );
                        forward(bytes, lines, &batch_sender, &stats, &upgrades)
                    },
                );
            })?;
        Ok(StreamCapture {
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// Wait until the daemon closed the pipe and everything buffered was
    /// written. Call from a blocking context.
    pub fn join(mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn forward(
    bytes: Vec<u8>,
    lines: u64,
    sender: &SyncSender<Batch>,
    stats: &OutputStats,
    upgrades: &tokio::sync::mpsc::UnboundedSender<UpgradePlan>,
) {
    for plan in upgrade_lines_in(&bytes) {
        let _ = upgrades.send(plan);
    }
    match sender.try_send(Batch { bytes, lines }) {
        Ok(()) => {}
        Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => {
            stats
                .lines_dropped
                .fetch_add(batch.lines, Ordering::Relaxed);
        }
    }
}

/// Every upgrade line in a batch of complete lines. `memmem` skips the
/// (overwhelmingly common) batches without one at memory speed.
fn upgrade_lines_in(bytes: &[u8]) -> Vec<UpgradePlan> {
    let finder = memchr::memmem::Finder::new(b"NEEDED at ");
    let mut plans = Vec::new();
    let mut from = 0;
    while let Some(found) = finder.find(&bytes[from..]) {
        let at = from + found;
        let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |index| index + 1);
        let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |index| at + index);
        if let Some(plan) = parse_upgrade_line(&String::from_utf8_lossy(&bytes[start..end])) {
            plans.push(plan);
        }
        from = end.min(bytes.len());
        if from == bytes.len() {
            break;
        }
    }
    plans
}

/// Split a byte stream into batches of complete lines. Each batch ends in
/// `\n` (a final line without one gets one). Lines longer than
/// `max_line_bytes` are cut there, marked with `\n`, and the remainder up
/// to the next newline is skipped.
pub fn read_batches(
    mut input: impl Read,
    max_line_bytes: usize,
    stats: &OutputStats,
    mut emit: impl FnMut(Vec<u8>, u64),
) {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    // The unfinished last line of the previous read.
    let mut partial: Vec<u8> = Vec::new();
    let mut skipping_rest_of_long_line = false;
    loop {
        let read = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        stats.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        let mut data = &chunk[..read];
        if skipping_rest_of_long_line {
            // The flag is recomputed below for what follows the newline.
            match memchr::memchr(b'\n', data) {
                Some(index) => data = &data[index + 1..],
                None => continue,
            }
        }
        let Some(last_newline) = memchr::memrchr(b'\n', data) else {
            partial.extend_from_slice(data);
            skipping_rest_of_long_line =
                cut_overlong_partial(&mut partial, max_line_bytes, stats, &mut emit);
            continue;
        };
        let (complete, rest) = data.split_at(last_newline + 1);
        let mut batch = std::mem::take(&mut partial);
        batch.extend_from_slice(complete);
        let lines = memchr::memchr_iter(b'\n', &batch).count() as u64;
        let batch = truncate_long_lines(batch, max_line_bytes, stats);
        emit(batch, lines);
        partial.extend_from_slice(rest);
        skipping_rest_of_long_line =
            cut_overlong_partial(&mut partial, max_line_bytes, stats, &mut emit);
    }
    if !partial.is_empty() && !skipping_rest_of_long_line {
        partial.push(b'\n');
        emit(partial, 1);
    }
}

/// An unfinished line already longer than `max`: emit its first `max`
/// bytes as a line now, and report that the rest (up to the next newline)
/// must be skipped.
fn cut_overlong_partial(
    partial: &mut Vec<u8>,
    max: usize,
    stats: &OutputStats,
    emit: &mut impl FnMut(Vec<u8>, u64),
) -> bool {
    if partial.len() <= max {
        return false;
    }
    partial.truncate(max);
    partial.push(b'\n');
    stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
    emit(std::mem::take(partial), 1);
    true
}

/// Cut lines longer than `max` (rare; the common case returns the batch
/// untouched after one scan).
fn truncate_long_lines(batch: Vec<u8>, max: usize, stats: &OutputStats) -> Vec<u8> {
    let mut start = 0;
    let mut too_long = false;
    for end in memchr::memchr_iter(b'\n', &batch) {
        if end - start > max {
            too_long = true;
            break;
        }
        start = end + 1;
    }
    if !too_long {
        return batch;
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &batch) {
        let line = &batch[start..end];
        if line.len() > max {
            out.extend_from_slice(&line[..max]);
            stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
        } else {
            out.extend_from_slice(line);
        }
        out.push(b'\n');
        start = end + 1;
    }
    out
}

/// Give the daemon up to 1 MiB of pipe buffer (the unprivileged maximum by
/// default) so scheduling hiccups on our side never reach it.
fn enlarge_pipe(pipe: &OwnedFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in reads of at most `step` bytes.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len()).min(buffer.len());
            buffer[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines_of(input: &[u8], max: usize, step: usize) -> (Vec<String>, u64, u64) {
        let stats = OutputStats::default();
        let mut joined = Vec::new();
        let mut counted = 0;
        read_batches(
            Trickle { data: input, step },
            max,
            &stats,
            |bytes, lines| {
                assert_eq!(bytes.last(), Some(&b'\n'), "every batch ends a line");
                joined.extend_from_slice(&bytes);
                counted += lines;
            },
        );
        let text = String::from_utf8(joined).unwrap();
        let lines = text.split_inclusive('\n').map(str::to_string).collect();
        (
            lines,
            counted,
            stats.lines_truncated.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn recent_lines_keep_the_tail_in_order() {
        remember(b"one\ntwo\n");
        remember(b"three\n");
        let last = recent_lines(2);
        assert_eq!(last, ["two", "three"]);
        let all = recent_lines(10_000);
        assert!(all.ends_with(&["one".to_string(), "two".into(), "three".into()]));
        // Bounded: old batches go once the total passes the limit.
        for _ in 0..100 {
            remember(
                &[b'x'; 8191]
                    .iter()
                    .chain(b"\n")
                    .copied()
                    .collect::<Vec<u8>>(),
            );
        }
        let bytes = RECENT.lock().unwrap().bytes;
        assert!(bytes <= RECENT_BYTES + 8192, "{bytes}");
        assert!(!recent_lines(10_000).iter().any(|line| line == "three"));
    }

    #[test]
    fn splits_lines_and_truncates_long_ones() {
        let cases: &[(&[u8], usize, &[&str], u64)] = &[
            (b"a\nb\n", 16, &["a\n", "b\n"], 0),
            (b"a\nno-newline", 16, &["a\n", "no-newline\n"], 0),
            (b"", 16, &[], 0),
            (b"\n\n", 16, &["\n", "\n"], 0),
            (
                b"0123456789abcdef-tail\nnext\n",
                10,
                &["0123456789\n", "next\n"],
                1,
            ),
            (b"0123456789\n", 10, &["0123456789\n"], 0),
            (
                b"short\n0123456789abc\nok\n",
                10,
                &["short\n", "0123456789\n", "ok\n"],
                1,
            ),
        ];
        for step in [1, 3, 7, 1 << 20] {
            for (input, max, expected, truncated) in cases {
                let (lines, counted, count) = lines_of(input, *max, step);
                let label = format!("{:?} step {step}", String::from_utf8_lossy(input));
                assert_eq!(lines, *expected, "{label}");
                assert_eq!(counted as usize, expected.len(), "{label}");
                assert_eq!(count, *truncated, "{label}");
            }
        }
    }

    #[test]
    fn slow_consumer_drops_batches_but_keeps_upgrade_lines() {
        let (sender, receiver) = sync_channel::<Batch>(2);
        let (upgrade_sender, mut upgrade_receiver) = tokio::sync::mpsc::unbounded_channel();
        let stats = OutputStats::default();
        for index in 0..10 {
            forward(
                format!("line {index}\nline {index}b\n").into_bytes(),
                2,
                &sender,
                &stats,
                &upgrade_sender,
            );
        }
        forward(
            b"x\nUPGRADE \"v2\" NEEDED at height: 5: x\ny\n".to_vec(),
            3,
            &sender,
            &stats,
            &upgrade_sender,
        );
        assert_eq!(stats.dropped(), 8 * 2 + 3);
        assert_eq!(receiver.try_iter().count(), 2);
        assert_eq!(upgrade_receiver.try_recv().unwrap().name, "v2");
    }

    #[test]
    fn finds_every_upgrade_line_in_a_batch() {
        let batch = b"UPGRADE \"a\" NEEDED at height: 1: x\nnoise NEEDED at nothing\nUPGRADE \"b\" NEEDED at height 2: y";
        let names: Vec<String> = upgrade_lines_in(batch)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
