//! `tunnel_vote_latency_ms_p50` / `_p99`, `tunnel_vote_latency_added_ms_p99`
//! and `tunnel_bulk_goodput_mbit_s`: vote-sized messages through the tunnel
//! on a link shaped like a validator's uplink (see [`crate::shaping`]:
//! 50 Mbit/s each way with `tc tbf`, 10 ms one-way delay added by a proxy in
//! the bastion's namespace, after the shaped link), idle and while bulk
//! traffic shares the SSH connection.
//!
//! Three sides, in this order, in one run over the same link:
//!
//! - **the limit**: plain TCP through the shaped link, no SSH: the votes on
//!   one connection to the echo server's delay proxy, the bulk on two
//!   connections to the sink's;
//! - **palisade**: `BastionTunnel` (one SSH connection to sshd in the
//!   namespace, through its delay proxy) with two `LocalTcpForward`s, to the
//!   echo server (votes) and to the sink (bulk), and under bulk also an exec
//!   session on the same connection (`BastionTunnel::dialer` with
//!   `DialTarget::Exec`, as the backup store opens it) running
//!   `cat >/dev/tcp/127.0.0.1/<sink>`: a backup-like upload;
//! - **the peer**: one `ssh` process (one SSH connection) with the same two
//!   `-L` forwards and the same remote command fed from its stdin, forced to
//!   the algorithms russh negotiated.
//!
//! Each side: an idle phase ([`IDLE`], votes only) then a bulk phase
//! ([`BULK`], votes while the bulk streams write as fast as they can).
//! Votes are [`VOTE_SIZE`]-byte messages (sequence number, send time,
//! padding) sent every [`VOTE_INTERVAL`] (80/s) on one connection and
//! echoed back; a vote's latency is its round trip through the forward (two
//! one-way delays plus every queue on the way). Votes sent in the first
//! [`SKIP`] of a phase are not counted; one not back within [`LOST_AFTER`]
//! counts as that long and as lost. Goodput is what the sink received from
//! [`SKIP`] to the end of the bulk phase, all bulk streams together.
//!
//! The tunnel runs on a current-thread tokio runtime, as in
//! `palisade-supervisor run`; the votes and the TCP bulk stream are written
//! and read by threads of their own (the exec upload is a task on the
//! tunnel's runtime, as the supervisor's backup upload is).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use palisade_supervisor::backup::StreamDialer;
use palisade_supervisor::tunnel::{BastionTunnel, DialTarget, LocalTcpForward};
use palisade_wire::bench::BenchResult;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::shaping::{self, Bastion, DelayProxy, NS_ADDR, NsServer, ONE_WAY_DELAY, RATE_MBIT};
use crate::sshd::{ChildGuard, Negotiated, Placement, Sshd, WAIT, openssh_version};
use crate::{Measured, result, round2};

pub const P50: &str = "tunnel_vote_latency_ms_p50";
pub const P99: &str = "tunnel_vote_latency_ms_p99";
pub const ADDED_P99: &str = "tunnel_vote_latency_added_ms_p99";
pub const GOODPUT: &str = "tunnel_bulk_goodput_mbit_s";
/// `--only tunnel_vote` selects these four (one run measures them all).
pub const GROUP: &str = "tunnel_vote";
pub const NAMES: [&str; 4] = [P50, P99, ADDED_P99, GOODPUT];

const VOTE_SIZE: usize = 300;
/// 80 votes per second.
const VOTE_INTERVAL: Duration = Duration::from_micros(12_500);
const IDLE: Duration = Duration::from_secs(8);
const BULK: Duration = Duration::from_secs(12);
/// Not counted at the start of each phase (connections, slow start).
const SKIP: Duration = Duration::from_secs(1);
/// A vote not echoed within this counts as this long, and as lost.
const LOST_AFTER: Duration = Duration::from_secs(2);
/// Goal (printed, not enforced): the tunnel adds at most this to the p99
/// under bulk, and less than OpenSSH adds.
const ADDED_P99_GOAL_MS: f64 = 5.0;
/// Goal (printed, not enforced): bulk goodput at least this share of the
/// shaped rate, so that a fix that merely starves bulk shows.
const GOODPUT_GOAL: f64 = 0.8;
/// sshd's port inside the namespace (empty but for this benchmark).
const SSHD_PORT: u16 = 2222;
/// How often the uplink socket's queue is sampled during the bulk phase.
const QUEUE_SAMPLE: Duration = Duration::from_millis(100);
const CHUNK: usize = 64 << 10;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn with_peer(mut result: BenchResult, peer: String, peer_value: f64) -> BenchResult {
    result.peer = Some(peer);
    result.peer_value = Some(peer_value);
    result
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Incompressible bytes for the bulk streams.
fn random_chunk() -> Vec<u8> {
    let mut chunk = vec![0u8; CHUNK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut chunk {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    chunk
}

/// The backup-like upload's remote command: stdin to the sink.
fn upload_command(sink_port: u16) -> String {
    format!("exec bash -c 'exec cat >/dev/tcp/127.0.0.1/{sink_port}'")
}

// ---------------------------------------------------------------------------
// Votes

/// The votes of one phase.
#[derive(Debug, Clone)]
struct VoteStats {
    /// Counted votes (sent after the first [`SKIP`]).
    samples: usize,
    lost: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Votes on one connection to `addr` from `start` until `end`, every
/// [`VOTE_INTERVAL`]; returns when all are back or [`LOST_AFTER`] after the
/// last was sent.
fn vote_stream(addr: SocketAddr, start: Instant, end: Instant) -> anyhow::Result<VoteStats> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting the votes to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut reader = stream.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_millis(20)))?;
    // (votes sent, last send) once the sender is done.
    let finished: Arc<Mutex<Option<(usize, Instant)>>> = Arc::new(Mutex::new(None));
    let receiver = {
        let finished = finished.clone();
        std::thread::Builder::new().name("votes-rx".into()).spawn(
            move || -> anyhow::Result<Vec<Duration>> {
                let mut rtts = Vec::new();
                let mut pending = Vec::with_capacity(4 * VOTE_SIZE);
                let mut buffer = [0u8; 4096];
                loop {
                    match reader.read(&mut buffer) {
                        Ok(0) => return Ok(rtts),
                        Ok(read) => {
                            let now = Instant::now();
                            pending.extend_from_slice(&buffer[..read]);
                            while pending.len() >= VOTE_SIZE {
                                let vote: Vec<u8> = pending.drain(..VOTE_SIZE).collect();
                                let seq = u64::from_le_bytes(vote[0..8].try_into()?);
                                let sent_ns = u64::from_le_bytes(vote[8..16].try_into()?);
                                ensure!(
                                    seq == rtts.len() as u64
                                        && vote[16..].iter().all(|byte| *byte == seq as u8),
                                    "vote {} came back as {seq} or garbled",
                                    rtts.len()
                                );
                                rtts.push(now - (start + Duration::from_nanos(sent_ns)));
                            }
                        }
                        Err(error) if is_timeout(&error) => {}
                        Err(error) => return Err(error).context("reading the echoed votes"),
                    }
                    let done = *finished.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((sent, last)) = done
                        && (rtts.len() >= sent || Instant::now() >= last + LOST_AFTER)
                    {
                        return Ok(rtts);
                    }
                }
            },
        )?
    };

    let mut writer = stream;
    let mut sent_at = Vec::new();
    let mut vote = [0u8; VOTE_SIZE];
    let sending = loop {
        let seq = sent_at.len();
        let at = start + VOTE_INTERVAL * seq as u32;
        if at >= end {
            break Ok(());
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        let now = Instant::now();
        vote[0..8].copy_from_slice(&(seq as u64).to_le_bytes());
        vote[8..16].copy_from_slice(&((now - start).as_nanos() as u64).to_le_bytes());
        vote[16..].fill(seq as u8);
        if let Err(error) = writer.write_all(&vote) {
            break Err(error);
        }
        sent_at.push(now);
    };
    let last = sent_at.last().copied().unwrap_or(start);
    *finished.lock().unwrap_or_else(|p| p.into_inner()) = Some((sent_at.len(), last));
    let rtts = match receiver.join() {
        Ok(rtts) => rtts,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let _ = writer.shutdown(Shutdown::Both);
    sending.with_context(|| format!("sending votes to {addr}"))?;
    let rtts = rtts?;

    let mut values = Vec::new();
    let mut lost = 0;
    for (seq, at) in sent_at.iter().enumerate() {
        if *at < start + SKIP {
            continue;
        }
        match rtts.get(seq) {
            Some(rtt) if *rtt <= LOST_AFTER => values.push(ms(*rtt)),
            _ => {
                lost += 1;
                values.push(ms(LOST_AFTER));
            }
        }
    }
    ensure!(!values.is_empty(), "no votes were counted");
    values.sort_by(f64::total_cmp);
    Ok(VoteStats {
        samples: values.len(),
        lost,
        p50: percentile(&values, 50.0),
        p99: percentile(&values, 99.0),
        max: values[values.len() - 1],
    })
}

// ---------------------------------------------------------------------------
// Bulk streams

/// One bulk upload, on a thread of its own, writing as fast as it can until
/// its flag is set; returns the bytes it wrote.
type Bulk = Box<dyn FnOnce(Arc<AtomicBool>) -> anyhow::Result<u64> + Send>;

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// A TCP connection to `addr`.
fn tcp_bulk(addr: SocketAddr) -> Bulk {
    Box::new(move |stop| {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting the bulk stream to {addr}"))?;
        stream.set_write_timeout(Some(Duration::from_millis(200)))?;
        let chunk = random_chunk();
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match stream.write(&chunk) {
                Ok(written) => sent += written as u64,
                Err(error) if is_timeout(&error) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("bulk to {addr} after {sent} B"));
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        Ok(sent)
    })
}

/// `ssh`'s stdin, which its session carries to the remote command.
fn pipe_bulk(mut stdin: ChildStdin) -> Bulk {
    Box::new(move |stop| {
        let chunk = random_chunk();
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match stdin.write(&chunk) {
                Ok(written) => sent += written as u64,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("ssh's stdin after {sent} B"));
                }
            }
        }
        Ok(sent)
    })
}

/// An exec session on the tunnel's connection, opened as the backup store
/// opens its sessions (`StreamDialer` of `BastionTunnel::dialer`) and
/// written by a task on the tunnel's runtime.
fn exec_bulk(runtime: tokio::runtime::Handle, dialer: impl StreamDialer + 'static) -> Bulk {
    Box::new(move |stop| {
        let task = runtime.spawn(async move {
            let mut stream = StreamDialer::dial(&dialer)
                .await
                .context("opening the exec session on the tunnel")?;
            let chunk = random_chunk();
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                stream
                    .write_all(&chunk)
                    .await
                    .with_context(|| format!("the exec upload after {sent} B"))?;
                sent += chunk.len() as u64;
            }
            let _ = stream.shutdown().await;
            Ok::<u64, anyhow::Error>(sent)
        });
        runtime
            .block_on(task)
            .context("the exec upload task failed")?
    })
}

// ---------------------------------------------------------------------------
// Phases

/// What a phase measures besides the votes: the sink's byte count, and the
/// queue of the uplink sockets to `NS_ADDR:<queue_port>` (the SSH
/// connection, or the limit's bulk connections).
#[derive(Clone)]
struct Meter {
    received: Arc<AtomicU64>,
    queue_port: u16,
}

#[derive(Debug, Clone)]
struct QueueStats {
    median_kib: f64,
    max_kib: f64,
}

#[derive(Debug, Clone)]
struct PhaseResult {
    votes: VoteStats,
    /// Mbit/s at the sink, bulk phases only.
    goodput: Option<f64>,
    queue: Option<QueueStats>,
}

/// Idle and bulk phase of one side.
struct Side {
    idle: PhaseResult,
    bulk: PhaseResult,
}

/// Bytes sent but not yet acknowledged (`tx_queue` in `/proc/net/tcp`,
/// queued and in flight) of this process's namespace's TCP sockets to
/// `NS_ADDR:port`, summed.
fn uplink_queue(port: u16) -> u64 {
    let remote = format!("{:08X}:{port:04X}", u32::from_ne_bytes(NS_ADDR.octets()));
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2) != Some(&remote.as_str()) {
                return None;
            }
            let (tx, _) = fields.get(4)?.split_once(':')?;
            u64::from_str_radix(tx, 16).ok()
        })
        .sum()
}

/// Waits until the sink has received nothing for 500 ms (at most 20 s), so
/// that the next phase starts on an empty link.
fn wait_drained(received: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = received.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
    eprintln!("  warning: the sink was still receiving 20 s after the bulk stopped");
}

fn phase(
    label: &str,
    votes: SocketAddr,
    bulks: Vec<Bulk>,
    duration: Duration,
    meter: &Meter,
) -> anyhow::Result<PhaseResult> {
    let has_bulk = !bulks.is_empty();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut bulk_threads = Vec::new();
    for (index, bulk) in bulks.into_iter().enumerate() {
        let stop = stop.clone();
        bulk_threads.push(
            std::thread::Builder::new()
                .name(format!("bulk-{index}"))
                .spawn(move || bulk(stop))?,
        );
    }
    let end = start + duration;
    let voter = std::thread::Builder::new()
        .name("votes-tx".into())
        .spawn(move || vote_stream(votes, start, end))?;

    // Sample the sink and the uplink queue meanwhile.
    let mut first: Option<(Instant, u64)> = None;
    let mut queue = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= start + SKIP {
            if first.is_none() {
                first = Some((now, meter.received.load(Ordering::Relaxed)));
            }
            queue.push(uplink_queue(meter.queue_port) as f64 / 1024.0);
        }
        std::thread::sleep(QUEUE_SAMPLE.min(end - now));
    }
    let last = (Instant::now(), meter.received.load(Ordering::Relaxed));

    // The votes first (bulk still flowing while the last ones come back).
    let votes = match voter.join() {
        Ok(votes) => votes,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    stop.store(true, Ordering::SeqCst);
    let mut bulk_errors = Vec::new();
    for thread in bulk_threads {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => bulk_errors.push(format!("{error:#}")),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    if has_bulk {
        wait_drained(&meter.received);
    }
    let votes = votes.with_context(|| format!("{label}: votes"))?;
    if !bulk_errors.is_empty() {
        bail!("{label}: bulk stream failed: {}", bulk_errors.join("; "));
    }
    let (goodput, queue) = match first {
        Some((at, bytes)) if has_bulk => {
            let seconds = (last.0 - at).as_secs_f64();
            let goodput = (last.1 - bytes) as f64 * 8.0 / seconds / 1e6;
            queue.sort_by(f64::total_cmp);
            let stats = QueueStats {
                median_kib: percentile(&queue, 50.0),
                max_kib: queue.last().copied().unwrap_or(0.0),
            };
            (Some(goodput), Some(stats))
        }
        _ => (None, None),
    };
    let outcome = PhaseResult {
        votes,
        goodput,
        queue,
    };
    eprintln!("  {label}: {}", describe(&outcome));
    Ok(outcome)
}

fn describe(phase: &PhaseResult) -> String {
    let votes = &phase.votes;
    let mut text = format!(
        "votes p50 {:.1} p99 {:.1} max {:.1} ms ({} counted, {} lost)",
        votes.p50, votes.p99, votes.max, votes.samples, votes.lost
    );
    if let Some(goodput) = phase.goodput {
        text.push_str(&format!("; bulk goodput {goodput:.1} Mbit/s"));
    }
    if let Some(queue) = &phase.queue {
        text.push_str(&format!(
            "; uplink socket queue median {:.0} KiB, max {:.0} KiB",
            queue.median_kib, queue.max_kib
        ));
    }
    text
}

// ---------------------------------------------------------------------------
// The three sides

/// The shaped link and what sits behind it in the bastion's namespace.
/// Fields drop in order: proxies and servers before sshd, sshd before the
/// namespace.
struct Link {
    sshd_proxy: DelayProxy,
    echo_proxy: DelayProxy,
    sink_proxy: DelayProxy,
    sshd: Sshd,
    echo: NsServer,
    sink: NsServer,
    received: Arc<AtomicU64>,
    bastion: Bastion,
}

impl Link {
    fn start(scratch: &Path) -> anyhow::Result<Link> {
        let bastion = Bastion::create()?;
        let received = Arc::new(AtomicU64::new(0));
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let echo = NsServer::start(&bastion, "echo", any, shaping::echo_handler())?;
        let sink = NsServer::start(
            &bastion,
            "sink",
            any,
            shaping::sink_handler(received.clone()),
        )?;
        let echo_proxy = DelayProxy::start(&bastion, "echo", echo.port())?;
        let sink_proxy = DelayProxy::start(&bastion, "sink", sink.port())?;
        let mut sshd = Sshd::start_placed(
            scratch,
            &[echo.port(), sink.port()],
            Placement {
                exec_prefix: bastion.exec_prefix(),
                probe: Some(bastion.probe()),
                port: Some(SSHD_PORT),
            },
        )
        .context("starting sshd in the bastion's namespace")?;
        let sshd_proxy = DelayProxy::start(&bastion, "sshd", SSHD_PORT)?;
        sshd.reach_via(&NS_ADDR.to_string(), sshd_proxy.addr().port())?;
        Ok(Link {
            sshd_proxy,
            echo_proxy,
            sink_proxy,
            sshd,
            echo,
            sink,
            received,
            bastion,
        })
    }

    fn meter(&self, queue_port: u16) -> Meter {
        Meter {
            received: self.received.clone(),
            queue_port,
        }
    }
}

/// Plain TCP through the shaped link.
fn measure_limit(link: &Link) -> anyhow::Result<Side> {
    let meter = link.meter(link.sink_proxy.addr().port());
    let votes = link.echo_proxy.addr();
    let idle = phase("limit, idle", votes, Vec::new(), IDLE, &meter)?;
    let sink = link.sink_proxy.addr();
    let bulk = phase(
        "limit, bulk",
        votes,
        vec![tcp_bulk(sink), tcp_bulk(sink)],
        BULK,
        &meter,
    )?;
    Ok(Side { idle, bulk })
}

/// The palisade tunnel: votes and bulk through its two local forwards, the
/// exec upload over the same connection.
fn measure_palisade(link: &Link) -> anyhow::Result<(Side, Negotiated)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = link.sshd.config();
        for port in [link.echo.port(), link.sink.port()] {
            config.local_tcp_forwards.push(LocalTcpForward {
                listen: "127.0.0.1:0".parse()?,
                target_host: "127.0.0.1".into(),
                target_port: port,
            });
        }
        let shutdown = CancellationToken::new();
        let offset = link.sshd.log_len();
        let tunnel = BastionTunnel::start(config, shutdown.clone())
            .await
            .context("starting the palisade tunnel")?;
        if !tunnel.wait_connected(WAIT).await {
            shutdown.cancel();
            bail!(
                "the palisade tunnel did not connect through the shaped link: {:?}",
                tunnel.snapshot().last_error
            );
        }
        let russh = link.sshd.negotiated_since(offset)?;
        let addrs = tunnel.local_tcp_addrs().to_vec();
        let dialer = tunnel.dialer(DialTarget::Exec(upload_command(link.sink.port())));
        let handle = tokio::runtime::Handle::current();
        let meter = link.meter(link.sshd_proxy.addr().port());
        let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<Side> {
            let idle = phase("palisade, idle", addrs[0], Vec::new(), IDLE, &meter)?;
            let bulk = phase(
                "palisade, bulk",
                addrs[0],
                vec![tcp_bulk(addrs[1]), exec_bulk(handle, dialer)],
                BULK,
                &meter,
            )?;
            Ok(Side { idle, bulk })
        })
        .await;
        let state = tunnel.snapshot();
        shutdown.cancel();
        let stopped = tokio::time::timeout(WAIT, tunnel.stopped()).await;
        let side = measured.context("the palisade measurement panicked")??;
        ensure!(
            state.connected_since.is_some() && state.reconnects == 0,
            "the palisade tunnel did not stay connected during the measurement: {state:?}"
        );
        stopped
            .context("the palisade tunnel did not stop")?
            .context("the palisade tunnel")?;
        Ok((side, russh))
    })
}

/// One `ssh` connection: two `-L` forwards and the upload command.
fn measure_openssh(link: &Link, russh: &Negotiated) -> anyhow::Result<Side> {
    let client = link.sshd.client(russh);
    let vote_addr = SocketAddr::from(([127, 0, 0, 1], palisade_simchain::testkit::free_port()));
    let bulk_addr = SocketAddr::from(([127, 0, 0, 1], palisade_simchain::testkit::free_port()));
    let spec = |addr: SocketAddr, port: u16| format!("127.0.0.1:{}:127.0.0.1:{port}", addr.port());
    let (vote_spec, bulk_spec) = (
        spec(vote_addr, link.echo.port()),
        spec(bulk_addr, link.sink.port()),
    );
    let log = link.sshd.path("ssh-votes.log");
    let mut command = client.command(&["-T", "-L", &vote_spec, "-L", &bulk_spec]);
    command
        .arg(upload_command(link.sink.port()))
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    let offset = link.sshd.log_len();
    let mut child = ChildGuard(command.spawn().context("starting ssh -L -L")?);
    let deadline = Instant::now() + WAIT;
    for addr in [vote_addr, bulk_addr] {
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.0.try_wait()? {
                bail!(
                    "ssh exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "ssh did not listen on {addr} within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let openssh = link.sshd.negotiated_since(offset)?;
    ensure!(
        russh.same_algorithms(&openssh),
        "OpenSSH negotiated {openssh:?}, russh {russh:?}"
    );
    let stdin = child.0.stdin.take().context("ssh's stdin")?;
    let meter = link.meter(link.sshd_proxy.addr().port());
    let idle = phase("OpenSSH, idle", vote_addr, Vec::new(), IDLE, &meter)?;
    let bulk = phase(
        "OpenSSH, bulk",
        vote_addr,
        vec![tcp_bulk(bulk_addr), pipe_bulk(stdin)],
        BULK,
        &meter,
    );
    let bulk = bulk.with_context(|| {
        format!(
            "ssh's log: {}",
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        )
    })?;
    Ok(Side { idle, bulk })
}

/// Runs the three sides and makes the four results.
pub fn run(scratch: &Path) -> anyhow::Result<Vec<(&'static str, Measured)>> {
    shaping::require_root()?;
    let version = openssh_version()?;
    let link = Link::start(scratch)?;
    eprintln!(
        "  link: {RATE_MBIT} Mbit/s each way (tc tbf burst {} latency {}), +{} ms each way \
         (delay proxy in {}); {} B votes every {} ms",
        shaping::TBF_BURST,
        shaping::TBF_LATENCY,
        ONE_WAY_DELAY.as_millis(),
        link.bastion.name(),
        VOTE_SIZE,
        VOTE_INTERVAL.as_secs_f64() * 1000.0
    );
    let limit = measure_limit(&link).context("the limit (plain TCP)")?;
    let (palisade, russh) = measure_palisade(&link).context("palisade")?;
    let openssh = measure_openssh(&link, &russh).context("the OpenSSH peer")?;
    eprintln!("  qdiscs: {}", link.bastion.qdisc_stats());
    drop(link);
    Ok(results(&limit, &palisade, &openssh, &russh, &version))
}

fn results(
    limit: &Side,
    palisade: &Side,
    openssh: &Side,
    russh: &Negotiated,
    version: &str,
) -> Vec<(&'static str, Measured)> {
    let peer = format!("{version} ssh -L");
    let shaped = format!(
        "{RATE_MBIT} Mbit/s, +{} ms each way",
        ONE_WAY_DELAY.as_millis()
    );
    let counted = format!(
        "{} votes of {VOTE_SIZE} B at 80/s counted under bulk, {} idle",
        palisade.bulk.votes.samples, palisade.idle.votes.samples
    );
    let lost = |side: &Side| side.idle.votes.lost + side.bulk.votes.lost;
    let lost_note = if lost(limit) + lost(palisade) + lost(openssh) > 0 {
        format!(
            "; LOST (> {} s): limit {}, palisade {}, OpenSSH {}",
            LOST_AFTER.as_secs(),
            lost(limit),
            lost(palisade),
            lost(openssh)
        )
    } else {
        String::new()
    };

    let p50 = Measured {
        result: with_peer(
            result(P50, round2(palisade.bulk.votes.p50), "ms", None),
            peer.clone(),
            round2(openssh.bulk.votes.p50),
        ),
        detail: format!(
            "vote RTT under bulk, {shaped}; limit {:.1}; idle: palisade {:.1}, OpenSSH {:.1}, \
             limit {:.1} ms; {counted}",
            limit.bulk.votes.p50,
            palisade.idle.votes.p50,
            openssh.idle.votes.p50,
            limit.idle.votes.p50,
        ),
    };
    let p99 = Measured {
        result: with_peer(
            result(P99, round2(palisade.bulk.votes.p99), "ms", None),
            peer.clone(),
            round2(openssh.bulk.votes.p99),
        ),
        detail: format!(
            "vote RTT under bulk, {shaped}; limit {:.1}; max palisade {:.0}, OpenSSH {:.0}, \
             limit {:.0}; idle: palisade {:.1}, OpenSSH {:.1}, limit {:.1} ms{lost_note}",
            limit.bulk.votes.p99,
            palisade.bulk.votes.max,
            openssh.bulk.votes.max,
            limit.bulk.votes.max,
            palisade.idle.votes.p99,
            openssh.idle.votes.p99,
            limit.idle.votes.p99,
        ),
    };
    let added = palisade.bulk.votes.p99 - limit.bulk.votes.p99;
    let peer_added = openssh.bulk.votes.p99 - limit.bulk.votes.p99;
    let queue = |side: &Side| {
        side.bulk
            .queue
            .as_ref()
            .map(|queue| format!("{:.0}/{:.0}", queue.median_kib, queue.max_kib))
            .unwrap_or_else(|| "?".into())
    };
    let added_p99 = Measured {
        result: with_peer(
            result(ADDED_P99, round2(added), "ms", Some(ADDED_P99_GOAL_MS)),
            peer.clone(),
            round2(peer_added),
        ),
        detail: format!(
            "p99 under bulk minus the limit's {:.1} ms; goals: <= {ADDED_P99_GOAL_MS} ms {}, \
             below OpenSSH's {peer_added:.1} ms {}; uplink socket queue median/max KiB: \
             palisade {}, OpenSSH {}, limit's bulk {}",
            limit.bulk.votes.p99,
            if added <= ADDED_P99_GOAL_MS {
                "ok"
            } else {
                "OVER"
            },
            if added < peer_added { "ok" } else { "NOT MET" },
            queue(palisade),
            queue(openssh),
            queue(limit),
        ),
    };
    let goodput = palisade.bulk.goodput.unwrap_or(0.0);
    let goal = GOODPUT_GOAL * f64::from(RATE_MBIT);
    let goodput = Measured {
        result: with_peer(
            result(GOODPUT, round2(goodput), "Mbit/s", None),
            peer,
            round2(openssh.bulk.goodput.unwrap_or(0.0)),
        ),
        detail: format!(
            "forward + exec upload at the sink, {shaped}; limit (2 TCP streams) {:.1} Mbit/s; \
             goal >= {goal:.0} ({:.0} % of the rate): {}; {}",
            limit.bulk.goodput.unwrap_or(0.0),
            GOODPUT_GOAL * 100.0,
            if goodput >= goal { "ok" } else { "BELOW" },
            russh.summary()
        ),
    };
    vec![
        (P50, p50),
        (P99, p99),
        (ADDED_P99, added_p99),
        (GOODPUT, goodput),
    ]
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values[..10], 99.0), 10.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
    }

    #[test]
    fn the_uplink_queue_address_matches_proc_net_tcp() {
        // 10.213.0.2 as the kernel prints it on this host's byte order.
        let printed = format!(
            "{:08X}",
            u32::from_ne_bytes(Ipv4Addr::new(10, 213, 0, 2).octets())
        );
        if cfg!(target_endian = "little") {
            assert_eq!(printed, "0200D50A");
        }
    }
}
