//! The daemon's stdout and stderr: read line by line, scanned for upgrade
//! lines, and forwarded to the supervisor's own stdout/stderr (journald
//! under systemd) — without ever blocking the daemon.
//!
//! Design, and why:
//! - Each pipe is drained by a dedicated OS thread doing blocking reads in
//!   large chunks. It does not share a scheduler with anything else, so the
//!   async runtime being busy can never stall the daemon's writes.
//! - The pipe buffer is enlarged (`F_SETPIPE_SZ`, up to 1 MiB) for slack.
//! - Lines go to a writer thread through a bounded channel with
//!   `try_send`: if the consumer (journald, a terminal, a slow disk) falls
//!   behind, lines are dropped and counted, never queued without bound.
//! - Upgrade lines are detected in the reader thread, before any dropping,
//!   and delivered on their own channel: losing log lines must never mean
//!   missing an upgrade.
//! - Over-long lines are truncated at `max_line_bytes` (counted).

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use crate::config::OutputSettings;
use crate::upgrade_plan::{UpgradePlan, may_be_upgrade_line, parse_upgrade_line};

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
    /// Any writer (used by tests).
    Writer(Box<dyn Write + Send>),
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
        let (line_sender, line_receiver) = sync_channel::<Vec<u8>>(settings.buffer_lines);
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
                    Sink::Writer(writer) => writer,
                };
                for line in line_receiver {
                    if out.write_all(&line).is_err() {
                        // The consumer is gone (closed stdout); keep
                        // draining so the reader never blocks.
                        writer_stats.lines_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    writer_stats.lines_forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = out.flush();
                }
            })?;
        let reader = std::thread::Builder::new()
            .name(format!("{stream:?}-reader").to_lowercase())
            .spawn(move || {
                read_lines(
                    std::fs::File::from(pipe),
                    settings.max_line_bytes,
                    &stats,
                    |line| {
                        forward(line, &line_sender, &stats, &upgrades);
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
    line: Vec<u8>,
    sender: &SyncSender<Vec<u8>>,
    stats: &OutputStats,
    upgrades: &tokio::sync::mpsc::UnboundedSender<UpgradePlan>,
) {
    if may_be_upgrade_line(&line)
        && let Some(plan) = parse_upgrade_line(&String::from_utf8_lossy(&line))
    {
        let _ = upgrades.send(plan);
    }
    match sender.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            stats.lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Split a byte stream into lines (each keeps its `\n`; a final line
/// without one gets one). Lines longer than `max_line_bytes` are cut there,
/// marked with `\n`, and the remainder up to the next newline is skipped.
pub fn read_lines(
    mut input: impl Read,
    max_line_bytes: usize,
    stats: &OutputStats,
    mut emit: impl FnMut(Vec<u8>),
) {
    let mut chunk = vec![0u8; 256 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut skipping_rest_of_long_line = false;
    loop {
        let read = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        stats.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        let mut rest = &chunk[..read];
        while !rest.is_empty() {
            let newline = rest.iter().position(|&byte| byte == b'\n');
            let (piece, ends_line) = match newline {
                Some(index) => (&rest[..=index], true),
                None => (rest, false),
            };
            rest = &rest[piece.len()..];
            if skipping_rest_of_long_line {
                if ends_line {
                    skipping_rest_of_long_line = false;
                }
                continue;
            }
            let room = max_line_bytes.saturating_sub(line.len());
            if piece.len() > room {
                line.extend_from_slice(&piece[..room]);
                line.push(b'\n');
                stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
                emit(std::mem::replace(&mut line, Vec::with_capacity(256)));
                skipping_rest_of_long_line = !ends_line;
                continue;
            }
            line.extend_from_slice(piece);
            if ends_line {
                emit(std::mem::replace(&mut line, Vec::with_capacity(256)));
            }
        }
    }
    if !line.is_empty() {
        line.push(b'\n');
        emit(line);
    }
}

/// Give the daemon up to 1 MiB of pipe buffer (the unprivileged maximum by
/// default) so scheduling hiccups on our side never reach it.
fn enlarge_pipe(pipe: &OwnedFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], max: usize) -> (Vec<String>, u64) {
        let stats = OutputStats::default();
        let mut out = Vec::new();
        read_lines(input, max, &stats, |line| {
            out.push(String::from_utf8(line).unwrap())
        });
        (out, stats.lines_truncated.load(Ordering::Relaxed))
    }

    #[test]
    fn splits_lines_and_truncates_long_ones() {
        let cases: &[(&[u8], usize, &[&str], u64)] = &[
            (b"a\nb\n", 16, &["a\n", "b\n"], 0),
            (b"a\nno-newline", 16, &["a\n", "no-newline\n"], 0),
            (b"", 16, &[], 0),
            (b"\n\n", 16, &["\n", "\n"], 0),
            (b"0123456789abcdef-tail\nnext\n", 10, &["0123456789\n", "next\n"], 1),
            (b"0123456789\n", 10, &["0123456789\n"], 1),
        ];
        for (input, max, expected, truncated) in cases {
            let (lines, count) = lines_of(input, *max);
            assert_eq!(lines, *expected, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(count, *truncated, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn slow_consumer_drops_lines_but_keeps_upgrade_lines() {
        let (sender, receiver) = sync_channel::<Vec<u8>>(2);
        let (upgrade_sender, mut upgrade_receiver) = tokio::sync::mpsc::unbounded_channel();
        let stats = OutputStats::default();
        for index in 0..10 {
            forward(
                format!("line {index}\n").into_bytes(),
                &sender,
                &stats,
                &upgrade_sender,
            );
        }
        forward(
            b"UPGRADE \"v2\" NEEDED at height: 5: x\n".to_vec(),
            &sender,
            &stats,
            &upgrade_sender,
        );
        assert_eq!(stats.dropped(), 9);
        assert_eq!(receiver.try_iter().count(), 2);
        assert_eq!(upgrade_receiver.try_recv().unwrap().name, "v2");
    }
}
