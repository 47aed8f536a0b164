//! Where lines enter the log shipping: gaiad's output batches
//! ([`tee_daemon_output`], called from `node::output`'s reader threads) and
//! the supervisor's own tracing events ([`TracingTap`]).
//!
//! Both only copy and `try_send`: the queue is bounded by bytes
//! (`logs.buffer-bytes`), and what does not fit is dropped and counted. No
//! lock is held while sending, and nothing here can block the caller (a
//! reader thread draining gaiad's pipe, or any thread that logs). While no
//! log shipping runs, both are a read of an empty slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::LogStats;

/// Messages the queue holds at most (its real bound is in bytes).
const QUEUE_SLOTS: usize = 64 * 1024;

/// Which of gaiad's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Who wrote a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// gaiad: complete lines, each ending in `\n`.
    Daemon(LogStream),
    /// The supervisor: one event, rendered on one line (no `\n`).
    Supervisor(tracing::Level),
}

/// Lines on their way to the segment writer.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// When the lines were read (one time for a whole batch).
    pub at: SystemTime,
    pub origin: Origin,
    pub bytes: Vec<u8>,
}

/// The sending half of the queue.
pub(crate) struct QueueSender {
    sender: SyncSender<Chunk>,
    queued: Arc<AtomicUsize>,
}

/// The segment writer's half of the queue.
pub(crate) struct QueueReceiver {
    receiver: Receiver<Chunk>,
    queued: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next chunk, within `timeout`.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<Chunk, RecvTimeoutError> {
        let chunk = self.receiver.recv_timeout(timeout)?;
        self.queued.fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
        Ok(chunk)
    }
}

/// A new queue.
pub(crate) fn queue() -> (QueueSender, QueueReceiver) {
    let (sender, receiver) = sync_channel(QUEUE_SLOTS);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            sender,
            queued: Arc::clone(&queued),
        },
        QueueReceiver { receiver, queued },
    )
}

struct Tap {
    queue: QueueSender,
    limit: usize,
    stats: Arc<LogStats>,
}

impl Tap {
    /// Queue the chunk `make` builds from `bytes` bytes of `lines` lines,
    /// unless that would pass the byte bound: then count the lines as
    /// dropped without building it (no copy of a batch that is dropped).
    fn offer(&self, bytes: usize, lines: u64, make: impl FnOnce() -> Chunk) {
        let before = self.queue.queued.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.limit {
            self.queue.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.lines_dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        match self.queue.sender.try_send(make()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queue.queued.fetch_sub(bytes, Ordering::Relaxed);
                self.stats.lines_dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }
}

static TAP: RwLock<Option<Tap>> = RwLock::new(None);

/// Start feeding `queue`; false if a tap is already installed.
pub(crate) fn install(queue: QueueSender, limit: usize, stats: Arc<LogStats>) -> bool {
    let mut slot = TAP.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    if slot.is_some() {
        return false;
    }
    *slot = Some(Tap {
        queue,
        limit,
        stats,
    });
    true
}

/// Stop feeding the queue (the writer then sees it disconnected).
pub(crate) fn uninstall() {
    TAP.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
}

/// The installed tap's counters.
pub(crate) fn stats() -> Option<Arc<LogStats>> {
    TAP.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_ref()
        .map(|tap| Arc::clone(&tap.stats))
}

fn with_tap(offer: impl FnOnce(&Tap)) {
    // `try_read`: a writer holds the lock only to install or remove the
    // tap; a line offered meanwhile is not worth waiting for.
    if let Ok(slot) = TAP.try_read()
        && let Some(tap) = slot.as_ref()
    {
        offer(tap);
    }
}

/// Hand a batch of gaiad's complete lines (each ending in `\n`) to the log
/// shipping, if it runs. Copies once; never blocks.
pub fn tee_daemon_output(stream: LogStream, bytes: &[u8], lines: u64) {
    with_tap(|tap| {
        tap.offer(bytes.len(), lines, || Chunk {
            at: SystemTime::now(),
            origin: Origin::Daemon(stream),
            bytes: bytes.to_vec(),
        })
    });
}

/// A `tracing` layer that hands the supervisor's own events (those the
/// subscriber's filter lets through) to the log shipping, if it runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingTap;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TracingTap {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        with_tap(|tap| {
            let mut line = EventLine::default();
            event.record(&mut line);
            let bytes = line.finish().into_bytes();
            tap.offer(bytes.len(), 1, || Chunk {
                at: SystemTime::now(),
                origin: Origin::Supervisor(*event.metadata().level()),
                bytes,
            });
        });
    }
}

/// An event as one line: the message, then `key=value` for each field.
#[derive(Default)]
struct EventLine {
    message: String,
    fields: String,
}

impl EventLine {
    fn finish(self) -> String {
        let mut line = self.message;
        line.push_str(&self.fields);
        // One event, one line.
        line.replace(['\n', '\r'], " ")
    }
}

impl Visit for EventLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            use std::fmt::Write;
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let (sender, receiver) = queue();
        let stats = Arc::new(LogStats::default());
        let tap = Tap {
            queue: sender,
            limit: 100,
            stats: Arc::clone(&stats),
        };
        let chunk = |bytes: usize| Chunk {
            at: SystemTime::now(),
            origin: Origin::Daemon(LogStream::Stdout),
            bytes: vec![b'x'; bytes],
        };
        let offer = |bytes: usize, lines: u64| tap.offer(bytes, lines, || chunk(bytes));
        offer(60, 3);
        offer(60, 5);
        offer(40, 2);
        assert_eq!(stats.lines_dropped.load(Ordering::Relaxed), 5);
        // The chunks queued are the first (60 bytes) and the third (40).
        assert_eq!(
            receiver.recv_timeout(Duration::ZERO).unwrap().bytes.len(),
            60
        );
        assert_eq!(
            receiver.recv_timeout(Duration::ZERO).unwrap().bytes.len(),
            40
        );
        // Room again once the writer took them.
        offer(100, 7);
        assert_eq!(
            receiver.recv_timeout(Duration::ZERO).unwrap().bytes.len(),
            100
        );
        drop(receiver);
        offer(1, 1);
        assert_eq!(stats.lines_dropped.load(Ordering::Relaxed), 6);
    }
}
