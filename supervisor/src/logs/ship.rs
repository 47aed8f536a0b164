//! One task per bastion that sends the spooled segments it does not have
//! yet, oldest first, as `put`s of kind `log` ([`palisade_wire::backup_store`])
//! over the bastion's backup session.
//!
//! - One connection carries many segments (the store serves sequential
//!   requests), so a burst does not cost an SSH channel and a forced
//!   command per object; a connection is dropped when the spool holds
//!   nothing for this bastion, after [`SEGMENTS_PER_CONNECTION`] segments,
//!   or after [`CONNECTION_LIFETIME`] (well inside the bastion's session
//!   limit).
//! - `already_exists` counts as delivered (a restart re-offers what was
//!   spooled). A refusal that retrying cannot fix (`quota` for one object,
//!   `too_large`, `invalid_name`) is logged and the segment skipped for this
//!   bastion; anything else (a dead tunnel, `busy`, `internal`, a timeout)
//!   is retried after a backoff with jitter, 1 s doubling to 5 s.
//! - Every exchange is bounded by [`EXCHANGE_TIMEOUT`]; the task ends on
//!   shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use palisade_wire::backup_store::{
    ErrorKind, MAX_RESPONSE_HEADER_BYTES, ObjectKind, Request, Response, decode_response,
    encode_header,
};
use palisade_wire::log_segment::SegmentName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::LogStats;
use super::spool::Spool;
use crate::backup::{BoxedStream, StreamDialer};

/// Bound on one request and its answer (a 1 MiB object over a slow link
/// included).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Segments sent over one connection before it is replaced.
pub const SEGMENTS_PER_CONNECTION: usize = 512;
/// Longest a connection is kept.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// How often an idle shipper looks at the spool without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Short: while a bastion is down a dial fails at once (no network), so
/// retrying often costs nothing and the spool drains soon after the link
/// returns.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What one shipper needs.
pub(crate) struct Shipper {
    pub bastion: String,
    pub index: usize,
    pub dialer: Arc<dyn StreamDialer>,
    pub validator: String,
    pub spool: Arc<Spool>,
    pub wake: Arc<tokio::sync::Notify>,
    pub stats: Arc<LogStats>,
    pub shutdown: CancellationToken,
}

/// How sending one object ended.
#[derive(Debug)]
enum PutOutcome {
    /// Stored, or already there.
    Stored,
    /// Refused for good: skip this segment on this bastion.
    Permanent(String),
    /// Try again later, on a new connection.
    Retry(String),
}

/// Ship until shutdown.
pub(crate) async fn ship_to(shipper: Shipper) {
    let mut failures: u32 = 0;
    loop {
        if shipper.shutdown.is_cancelled() {
            return;
        }
        if shipper.spool.next_for(shipper.index).is_none() {
            let woken = shipper.wake.notified();
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shipper.shutdown.cancelled() => return,
            }
            continue;
        }
        match session(&shipper).await {
            Ok(()) => failures = 0,
            Err(reason) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, rand::random::<f64>());
                tracing::debug!(
                    bastion = %shipper.bastion,
                    %reason,
                    retry_in = ?delay,
                    "log shipping: bastion not reachable; segments wait in the spool"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shipper.shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Delay before retry `failures` (≥ 1): equal jitter over a doubling base.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// One connection: send segments until none is left for this bastion or
/// the connection's budget is spent.
async fn session(shipper: &Shipper) -> Result<(), String> {
    let mut stream = tokio::time::timeout(EXCHANGE_TIMEOUT, shipper.dialer.dial())
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|error| format!("cannot connect: {error}"))?;
    let opened = Instant::now();
    for _ in 0..SEGMENTS_PER_CONNECTION {
        if opened.elapsed() > CONNECTION_LIFETIME || shipper.shutdown.is_cancelled() {
            break;
        }
        let Some(name) = shipper.spool.next_for(shipper.index) else {
            break;
        };
        let (ciphertext, signature) = match shipper.spool.read(&name) {
            Ok(objects) => objects,
            // Dropped from a full spool meanwhile (it left the index first).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(format!(
                    "cannot read {} from the spool: {error}",
                    name.stem()
                ));
            }
        };
        let mut skipped = None;
        for (file, bytes) in [
            (name.ciphertext_file(), &ciphertext),
            (name.signature_file(), &signature),
        ] {
            match put(&mut stream, &shipper.validator, &file, bytes).await {
                PutOutcome::Stored => {}
                PutOutcome::Permanent(reason) => {
                    skipped = Some(reason);
                    break;
                }
                PutOutcome::Retry(reason) => return Err(reason),
            }
        }
        delivered(shipper, &name, skipped);
    }
    Ok(())
}

fn delivered(shipper: &Shipper, name: &SegmentName, skipped: Option<String>) {
    match skipped {
        None => {
            shipper.stats.shipped[shipper.index]
                .segments
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(reason) => tracing::error!(
            bastion = %shipper.bastion,
            segment = %name.stem(),
            %reason,
            "log shipping: the bastion refused a segment for good; it is skipped there"
        ),
    }
    shipper.spool.delivered(name, shipper.index);
}

/// One `put` of kind `log` and its answer.
async fn put(stream: &mut BoxedStream, validator: &str, file: &str, bytes: &[u8]) -> PutOutcome {
    let request = Request::Put {
        validator: validator.to_owned(),
        file: file.to_owned(),
        bytes: bytes.len() as u64,
        kind: ObjectKind::Log,
    };
    let mut message = encode_header(&request);
    message.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    message.extend_from_slice(bytes);
    let exchange = async {
        stream.write_all(&message).await?;
        stream.flush().await?;
        read_response(stream).await
    };
    let response = match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Err(_) => return PutOutcome::Retry(format!("{file}: no answer in time")),
        Ok(Err(error)) => return PutOutcome::Retry(format!("{file}: {error}")),
        Ok(Ok(response)) => response,
    };
    if response.ok {
        return PutOutcome::Stored;
    }
    let Some(error) = response.error else {
        return PutOutcome::Retry(format!("{file}: refused without a reason"));
    };
    let reason = format!("{file}: {}: {}", error.kind, error.message);
    match error.kind {
        ErrorKind::AlreadyExists => PutOutcome::Stored,
        ErrorKind::Quota | ErrorKind::TooLarge | ErrorKind::InvalidName => {
            PutOutcome::Permanent(reason)
        }
        _ => PutOutcome::Retry(reason),
    }
}

async fn read_response(stream: &mut BoxedStream) -> std::io::Result<Response> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_RESPONSE_HEADER_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {length}-byte answer, over the limit"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    decode_response(&body)
        .map_err(|reason| std::io::Error::new(std::io::ErrorKind::InvalidData, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_equal_jitter() {
        // (failures, jitter, expected)
        let rows = [
            (1, 0.0, Duration::from_millis(500)),
            (1, 1.0, Duration::from_secs(1)),
            (2, 0.0, Duration::from_secs(1)),
            (3, 0.5, Duration::from_secs(3)),
            (4, 0.0, Duration::from_millis(2500)),
            (60, 1.0, Duration::from_secs(5)),
        ];
        for (failures, jitter, expected) in rows {
            assert_eq!(backoff(failures, jitter), expected, "{failures} {jitter}");
        }
    }
}
