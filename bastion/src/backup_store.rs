//! The bastion's backup store (`palisade-bastion run`, or alone as
//! `palisade-bastion serve-backups`).
//!
//! Listens on the configuration's `listen-socket` (a Unix socket, mode 0600
//! in a 0700 directory; with `tunnel-user`, 0660 for that user's group in a
//! directory others cannot enter, [`crate::store_access`]), serves only the
//! peers that rule allows, and speaks [`palisade_wire::backup_store`]. Files
//! live in `backup-dir/<validator>/` (directories 0700, files 0600). The
//! bastion holds ciphertext it cannot read (DESIGN invariant 4): it checks
//! names, sizes and framing only, never a bundle's contents.
//!
//! - Writes are atomic (`palisade_daemon::durable`, never clobbering): the
//!   payload is streamed to a hidden temporary file, fsynced, hard-linked to
//!   its final name (which fails if the name exists: nothing is ever
//!   overwritten), and the directory is fsynced.
//! - Retention: after a put, only the newest `keep` files of the validator
//!   remain ("newest" = latest modification time, i.e. arrival, ties broken
//!   by name). The per-validator size cap applies to what remains after
//!   retention; a put that would exceed it fails with `quota` and changes
//!   nothing.
//! - Log segments (objects of kind `log`, `docs/log-format.md`) live apart,
//!   in `backup-dir/<validator>/logs/`, and only under segment names
//!   ([`SegmentName`]); the backup kind never sees them. Their retention
//!   is a ring (`[logs]`): a put removes the oldest segments — both objects
//!   of a segment, `.age` and `.sig`, together — until the new one fits
//!   under `logs.quota-bytes`, and every segment older than `logs.max-age`.
//! - An account of `logs.archive-users` (the operators', for
//!   `palisade-ctl logs --archive` through `rpc-relay`) is served `list` and
//!   `get` of log objects only; any other request ends its connection.
//! - Operations on one validator are serialized; at most `max_connections`
//!   connections are served at once (more wait in the listen backlog).
//! - A connection counts against a validator from its first request naming
//!   it; one validator may hold at most `max_connections_per_validator`
//!   connections, and one more is answered `busy` and closed. With the
//!   header timeout below, one validator's key (through `backup-session`,
//!   which connects only once it holds a request) cannot take the slots
//!   the others need.
//! - A new connection's first header frame must arrive whole within the
//!   header timeout (short: a client that sends nothing frees its slot),
//!   each later one within the idle timeout; a payload gets the idle
//!   timeout plus one second per 64 KiB. A client that stalls is
//!   disconnected.
//! - Memory per connection is bounded by a header frame and one
//!   [`GET_CHUNK_BYTES`] buffer: a `get` streams the file from disk, it is
//!   never read whole (a slow reader would otherwise pin a whole bundle).
//! - Shutdown (SIGTERM / SIGINT, or `run`'s shutdown): stop accepting,
//!   remove the socket, give in-flight requests a few seconds, exit 0.
//!
//! `serve-backups` runs only this; `run` runs it beside the health checks
//! through [`BackupStoreServer`].

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use palisade_client::peer_text::clean;
use palisade_daemon::durable::{self, AtomicWrite, Existing, StagedFile};
use palisade_wire::backup_store::{
    ErrorKind, MAX_LIST_ENTRIES, MAX_REQUEST_HEADER_BYTES, ObjectKind, Request, Response,
    decode_request, encode_header, file_name_problem, max_payload_bytes,
};
use palisade_wire::log_segment::SegmentName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::config::{BackupStoreOptions, BastionConfig, LogStoreOptions};
use crate::store_access::{SessionAccess, StoreAccess};

/// Bytes read from disk and written to the client at a time by a `get`.
pub const GET_CHUNK_BYTES: usize = 64 * 1024;

/// The directory of a validator's log segments, inside its backup
/// directory (a directory, so the backup kind's listing skips it).
pub const LOG_DIR_NAME: &str = "logs";

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How the store named its temporary files before `palisade_daemon::durable`
/// wrote them; still cleaned up at start-up.
const LEGACY_TEMP_PREFIX: &str = ".tmp-";

/// The options as `serve-backups` flags may have overridden them: the
/// configuration checked its own `[backups]` values, but not the flags.
fn check_options(options: &BackupStoreOptions) -> anyhow::Result<()> {
    if options.keep == 0 || options.keep > MAX_LIST_ENTRIES {
        bail!("--keep must be between 1 and {MAX_LIST_ENTRIES}");
    }
    if options.quota_bytes == 0 {
        bail!("--quota-bytes must be positive");
    }
    if options.idle_timeout.is_zero() {
        bail!("--idle-timeout-ms must be positive");
    }
    if options.max_connections == 0 {
        bail!("--max-connections must be positive");
    }
    if options.max_connections_per_validator == 0
        || options.max_connections_per_validator > options.max_connections
    {
        bail!(
            "--max-connections-per-validator must be between 1 and max-connections ({})",
            options.max_connections
        );
    }
    if options.header_timeout.is_zero() {
        bail!("--header-timeout-ms must be positive");
    }
    Ok(())
}

/// A request failure reported to the client.
#[derive(Debug)]
struct Failure {
    kind: ErrorKind,
    message: String,
}

fn failure(kind: ErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

fn internal(op: &str, path: &Path, error: io::Error) -> Failure {
    tracing::error!(path = %path.display(), %error, "backup store: cannot {op}");
    failure(ErrorKind::Internal, format!("bastion storage error ({op})"))
}

/// What the store keeps per configured validator.
struct ValidatorSlots {
    /// Serializes the validator's operations.
    lock: Arc<Mutex<()>>,
    /// `max_connections_per_validator` permits; a connection holds one from
    /// its first request naming the validator until it closes.
    connections: Arc<Semaphore>,
}

struct Store {
    root: PathBuf,
    validators: HashMap<String, ValidatorSlots>,
    options: BackupStoreOptions,
    logs: LogStoreOptions,
    sessions: Arc<SessionCounts>,
}

/// Sessions served, for the metrics: connections open now, and per
/// configured validator the connections that named it (counted at their
/// first request naming it, when they get its slot). Relaxed atomics.
#[derive(Debug, Default)]
pub struct SessionCounts {
    active: std::sync::atomic::AtomicU64,
    by_validator: Vec<(String, std::sync::atomic::AtomicU64)>,
}

impl SessionCounts {
    fn new(validators: &[crate::config::Validator]) -> SessionCounts {
        SessionCounts {
            active: Default::default(),
            by_validator: validators
                .iter()
                .map(|validator| (validator.name.clone(), Default::default()))
                .collect(),
        }
    }

    /// Connections being served now.
    pub fn active(&self) -> u64 {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sessions per validator since the store started, in configuration order.
    pub fn by_validator(&self) -> Vec<(String, u64)> {
        self.by_validator
            .iter()
            .map(|(name, count)| {
                (
                    name.clone(),
                    count.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn opened(&self, validator: &str) {
        if let Some((_, count)) = self.by_validator.iter().find(|(name, _)| name == validator) {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Store {
    fn open(config: &BastionConfig, options: BackupStoreOptions) -> anyhow::Result<Store> {
        let root = config.backup_dir.clone();
        make_private_dir(&root)?;
        let mut validators = HashMap::new();
        for validator in &config.validators {
            let backups = root.join(&validator.name);
            let logs = backups.join(LOG_DIR_NAME);
            make_private_dir(&backups)?;
            make_private_dir(&logs)?;
            for dir in [backups, logs] {
                for entry in
                    fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
                {
                    let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
                    let name = entry.file_name();
                    if durable::is_temp_file_name(&name)
                        || name
                            .as_encoded_bytes()
                            .starts_with(LEGACY_TEMP_PREFIX.as_bytes())
                    {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            validators.insert(
                validator.name.clone(),
                ValidatorSlots {
                    lock: Arc::new(Mutex::new(())),
                    connections: Arc::new(Semaphore::new(options.max_connections_per_validator)),
                },
            );
        }
        Ok(Store {
            root,
            validators,
            options,
            sessions: Arc::new(SessionCounts::new(&config.validators)),
            logs: config.logs.clone(),
        })
    }

    /// The directory of the validator's objects of `kind`, and the
    /// validator's lock, or `unknown_validator`.
    fn validator(
        &self,
        name: &str,
        kind: ObjectKind,
    ) -> Result<(PathBuf, Arc<Mutex<()>>), Failure> {
        match self.validators.get(name) {
            Some(slots) => {
                let dir = match kind {
                    ObjectKind::Backup => self.root.join(name),
                    ObjectKind::Log => self.root.join(name).join(LOG_DIR_NAME),
                };
                Ok((dir, Arc::clone(&slots.lock)))
            }
            None => Err(failure(
                ErrorKind::UnknownValidator,
                format!("validator {name:?} is not configured on this bastion"),
            )),
        }
    }

    fn payload_deadline(&self, bytes: u64) -> Duration {
        self.options.idle_timeout + Duration::from_secs(bytes / (64 * 1024))
    }
}

fn check_name(name: &str, kind: ObjectKind) -> Result<(), Failure> {
    match file_name_problem(name) {
        Some(reason) => Err(failure(
            ErrorKind::InvalidName,
            format!("invalid file name {name:?}: {reason}"),
        )),
        None if kind == ObjectKind::Log && SegmentName::parse(name).is_none() => Err(failure(
            ErrorKind::InvalidName,
            format!(
                "invalid file name {name:?}: a log object is named \
                 log-<host>-<20-digit sequence>.age or .sig"
            ),
        )),
        None => Ok(()),
    }
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    let metadata = fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if !metadata.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
}

/// A bound backup store: directories prepared, socket listening, not yet
/// accepting. Binding is separate from serving so that `run` can report
/// every startup error before it tells systemd it is ready.
pub struct BackupStoreServer {
    store: Arc<Store>,
    listener: UnixListener,
    socket: PathBuf,
    access: StoreAccess,
}

impl BackupStoreServer {
    /// Checks `options`, binds the listen socket and creates the backup
    /// directories. Must be called inside a Tokio runtime.
    ///
    /// The socket comes first: binding fails if another instance is
    /// listening, and only then may leftover temporary files be cleaned up
    /// (they could be that instance's uploads in flight).
    pub fn bind(config: &BastionConfig, options: BackupStoreOptions) -> anyhow::Result<Self> {
        check_options(&options)?;
        let access = StoreAccess::resolve(config)?;
        let listener = access.bind(&config.listen_socket)?;
        let store = match Store::open(config, options) {
            Ok(store) => Arc::new(store),
            Err(error) => {
                drop(listener);
                let _ = fs::remove_file(&config.listen_socket);
                return Err(error);
            }
        };
        Ok(BackupStoreServer {
            store,
            listener,
            socket: config.listen_socket.clone(),
            access,
        })
    }

    /// The sessions it serves, counted (for the metrics).
    pub fn sessions(&self) -> Arc<SessionCounts> {
        Arc::clone(&self.store.sessions)
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, removes
    /// the socket and gives in-flight requests a few seconds.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let BackupStoreServer {
            store,
            listener,
            socket,
            access,
        } = self;
        let max_connections = store.options.max_connections;
        let slots = Arc::new(Semaphore::new(max_connections));
        tracing::info!(
            socket = %socket.display(),
            backup_dir = %store.root.display(),
            validators = store.validators.len(),
            keep = store.options.keep,
            quota_bytes = store.options.quota_bytes,
            log_quota_bytes = store.logs.quota_bytes,
            log_max_age = %humantime::format_duration(store.logs.max_age),
            max_connections,
            max_connections_per_validator = store.options.max_connections_per_validator,
            serves = %access.describe(),
            "backup store listening"
        );

        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => permit.context("connection semaphore closed")?,
                _ = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            // The socket's mode already keeps others out; this holds even
            // if someone loosens it or adds an account to the group.
            let (session_access, peer_uid) = match stream.peer_cred() {
                Ok(peer) => match access.session_access(peer.uid()) {
                    Some(session_access) => (session_access, peer.uid()),
                    None => {
                        tracing::warn!(
                            uid = peer.uid(),
                            pid = peer.pid(),
                            "backup store: refused a connection from an account that may not use it"
                        );
                        continue;
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "backup store: refused a connection whose peer is unknown");
                    continue;
                }
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                store.sessions.active.fetch_add(1, Relaxed);
                serve_connection(stream, &store, session_access, peer_uid).await;
                store.sessions.active.fetch_sub(1, Relaxed);
                drop(permit);
            });
        }

        tracing::info!("backup store: no longer accepting connections");
        drop(listener);
        let _ = fs::remove_file(&socket);
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        if timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("in-flight backup requests did not finish in time; exiting anyway");
        }
        Ok(())
    }
}

/// Runs the backup store alone (`serve-backups`) until SIGTERM or SIGINT.
pub async fn serve(config: &BastionConfig, options: BackupStoreOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};

    // Handlers first, so a signal sent as soon as the socket appears is not
    // lost.
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let server = BackupStoreServer::bind(config, options)?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    server.serve(shutdown).await
}

/// How reading one frame failed.
enum FrameError {
    /// The peer closed the connection between requests.
    Closed,
    /// The frame announced more than the limit.
    TooLarge(u32),
    Io(io::Error),
}

/// Reads one length prefix; `None` on a clean end of stream.
async fn read_prefix<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<u32>> {
    let mut prefix = [0u8; 4];
    let first = reader.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut prefix[first..]).await?;
    Ok(Some(u32::from_be_bytes(prefix)))
}

async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let length = match read_prefix(reader).await {
        Ok(Some(length)) => length,
        Ok(None) => return Err(FrameError::Closed),
        Err(error) => return Err(FrameError::Io(error)),
    };
    if length as usize > MAX_REQUEST_HEADER_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body).await.map_err(FrameError::Io)?;
    Ok(body)
}

/// What to do after answering a request.
enum After {
    Continue,
    Close,
}

async fn serve_connection(
    mut stream: UnixStream,
    store: &Store,
    session_access: SessionAccess,
    peer_uid: u32,
) {
    let idle = store.options.idle_timeout;
    // The per-validator permits this connection holds, one per validator
    // its requests have named (a `backup-session` relay names only one).
    let mut held: HashMap<String, OwnedSemaphorePermit> = HashMap::new();
    let mut first = true;
    loop {
        let wait = if first {
            store.options.header_timeout
        } else {
            idle
        };
        first = false;
        let body = match timeout(wait, read_header(&mut stream)).await {
            Err(_) if held.is_empty() => {
                tracing::info!("backup client sent no request in time; disconnecting");
                return;
            }
            Err(_) => {
                tracing::info!("backup client idle or too slow; disconnecting");
                return;
            }
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(FrameError::Io(error))) => {
                tracing::debug!(%error, "backup client connection failed");
                return;
            }
            Ok(Err(FrameError::TooLarge(length))) => {
                let message = format!(
                    "header frame of {length} bytes exceeds the {MAX_REQUEST_HEADER_BYTES}-byte limit"
                );
                tracing::warn!("{message}");
                let _ = send(
                    &mut stream,
                    idle,
                    &Response::error(ErrorKind::TooLarge, message),
                )
                .await;
                return;
            }
            Ok(Ok(body)) => body,
        };
        let request = match decode_request(&body) {
            Ok(request) => request,
            Err(message) => {
                tracing::warn!("{message}");
                let _ = send(
                    &mut stream,
                    idle,
                    &Response::error(ErrorKind::BadFrame, message),
                )
                .await;
                return;
            }
        };
        // The validator is the client's word until the store knows it:
        // cleaned for the logs (a configured name is unchanged).
        let (op, validator) = (request.op(), clean(request.validator()));
        if let Some(reason) = session_access.refusal(&request) {
            tracing::warn!(
                op,
                kind = %request.kind(),
                validator = %validator,
                uid = peer_uid,
                "backup store: refused a log archive reader's request for more than log reads"
            );
            let _ = send(
                &mut stream,
                idle,
                &Response::error(ErrorKind::UnknownValidator, reason),
            )
            .await;
            return;
        }
        if let Some(slots) = store.validators.get(&validator)
            && !held.contains_key(&validator)
        {
            match Arc::clone(&slots.connections).try_acquire_owned() {
                Ok(permit) => {
                    store.sessions.opened(&validator);
                    held.insert(validator.clone(), permit);
                }
                Err(_) => {
                    let limit = store.options.max_connections_per_validator;
                    tracing::warn!(
                        op,
                        validator = %validator,
                        limit,
                        "backup client refused: the validator already holds its connections"
                    );
                    let message = format!(
                        "validator {validator} already has {limit} connections open \
                         (backups.max-connections-per-validator); try again later"
                    );
                    let _ = send(
                        &mut stream,
                        idle,
                        &Response::error(ErrorKind::Busy, message),
                    )
                    .await;
                    return;
                }
            }
        }
        let (outcome, after) = handle(request, &mut stream, store).await;
        let sent = match outcome {
            Ok((response, payload)) => {
                tracing::debug!(op, validator = %validator, "backup request served");
                match send(&mut stream, idle, &response).await {
                    Ok(()) => match payload {
                        Some(payload) => {
                            let deadline = store.payload_deadline(payload.bytes);
                            send_payload(&mut stream, deadline, payload).await
                        }
                        None => Ok(()),
                    },
                    Err(error) => Err(error),
                }
            }
            Err(Failure { kind, message }) => {
                tracing::warn!(op, validator = %validator, %kind, %message, "backup request refused");
                send(&mut stream, idle, &Response::error(kind, message)).await
            }
        };
        if sent.is_err() || matches!(after, After::Close) {
            return;
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    limit: Duration,
    response: &Response,
) -> io::Result<()> {
    let frame = encode_header(response);
    match timeout(limit, writer.write_all(&frame)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// A stored file opened for a `get`: streamed from disk, never held whole.
struct Payload {
    file: fs::File,
    /// The file's size when opened, announced in the response.
    bytes: u64,
}

/// Writes the payload frame, [`GET_CHUNK_BYTES`] at a time. A file that
/// ends before its announced size fails the connection (the client sees a
/// short frame, never bytes it was not promised).
async fn send_payload<W: AsyncWrite + Unpin>(
    writer: &mut W,
    limit: Duration,
    payload: Payload,
) -> io::Result<()> {
    let Payload { file, bytes } = payload;
    let write = async {
        writer.write_all(&(bytes as u32).to_be_bytes()).await?;
        let mut file = tokio::fs::File::from_std(file);
        let mut chunk = vec![0u8; GET_CHUNK_BYTES.min(bytes as usize)];
        let mut remaining = bytes;
        while remaining > 0 {
            let want = chunk.len().min(remaining as usize);
            let n = file.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored file shrank while being sent",
                ));
            }
            writer.write_all(&chunk[..n]).await?;
            remaining -= n as u64;
        }
        writer.flush().await
    };
    match timeout(limit, write).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

type Outcome = Result<(Response, Option<Payload>), Failure>;

async fn handle(request: Request, stream: &mut UnixStream, store: &Store) -> (Outcome, After) {
    match request {
        Request::Put {
            validator,
            file,
            bytes,
            kind,
        } => put(stream, store, &validator, &file, bytes, kind).await,
        Request::List {
            validator,
            kind,
            after,
        } => (
            list(store, &validator, kind, after.as_deref()).await,
            After::Continue,
        ),
        Request::Get {
            validator,
            file,
            kind,
        } => (get(store, &validator, &file, kind).await, After::Continue),
        Request::Remove {
            validator,
            file,
            kind,
        } => (
            remove(store, &validator, &file, kind).await,
            After::Continue,
        ),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(failure(ErrorKind::Internal, format!("task failed: {join}"))))
}

async fn put(
    stream: &mut UnixStream,
    store: &Store,
    validator: &str,
    file: &str,
    bytes: u64,
    kind: ObjectKind,
) -> (Outcome, After) {
    let limit = max_payload_bytes(kind);
    if bytes > limit as u64 {
        let message = format!("{bytes} bytes exceeds the {limit}-byte limit of a {kind} object");
        return (Err(failure(ErrorKind::TooLarge, message)), After::Close);
    }
    let deadline = store.payload_deadline(bytes);
    let prefix = match timeout(store.options.idle_timeout, read_prefix(stream)).await {
        Ok(Ok(Some(length))) => length,
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
            let message = "payload frame missing or incomplete";
            return (Err(failure(ErrorKind::BadFrame, message)), After::Close);
        }
    };
    if u64::from(prefix) != bytes {
        let message = format!("payload frame of {prefix} bytes, but the header announced {bytes}");
        return (Err(failure(ErrorKind::BadFrame, message)), After::Close);
    }
    // Validate before storing anything, but consume the payload either way
    // so that the connection stays in step.
    let target = store
        .validator(validator, kind)
        .and_then(|target| check_name(file, kind).map(|()| target));
    let (dir, lock) = match target {
        Ok(target) => target,
        Err(refusal) => {
            let drained = timeout(
                deadline,
                tokio::io::copy(&mut (&mut *stream).take(bytes), &mut tokio::io::sink()),
            )
            .await;
            let after = match drained {
                Ok(Ok(n)) if n == bytes => After::Continue,
                _ => After::Close,
            };
            return (Err(refusal), after);
        }
    };

    // The temp file is removed when `staged` is dropped uncommitted: on
    // every refusal below, and when the connection's task is cancelled.
    let received = match AtomicWrite::new(0o600, Existing::Refuse).stage(&dir.join(file)) {
        Err(error) => Err((
            internal(error.step.action(), &error.path, error.source),
            After::Close,
        )),
        Ok(staged) => match timeout(deadline, receive_to_file(stream, &staged, bytes)).await {
            Ok(Ok(())) => Ok(staged),
            Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => Err((
                failure(ErrorKind::BadFrame, "payload frame incomplete"),
                After::Close,
            )),
            Ok(Err(error)) => Err((internal("write", staged.temp_path(), error), After::Close)),
            Err(_) => Err((
                failure(ErrorKind::BadFrame, "payload not received in time"),
                After::Close,
            )),
        },
    };
    let staged = match received {
        Ok(staged) => staged,
        Err((refusal, after)) => return (Err(refusal), after),
    };

    let guard = lock.lock().await;
    let (keep, quota) = (store.options.keep, store.options.quota_bytes);
    let logs = store.logs.clone();
    let name = file.to_owned();
    let committed = blocking(move || match kind {
        ObjectKind::Backup => commit(&dir, staged, &name, bytes, keep, quota),
        ObjectKind::Log => commit_log(&dir, staged, &name, bytes, &logs, SystemTime::now()),
    })
    .await;
    drop(guard);
    match committed {
        Ok(removed) => {
            match kind {
                ObjectKind::Backup => tracing::info!(validator, file, bytes, "backup stored"),
                ObjectKind::Log => tracing::debug!(validator, file, bytes, "log object stored"),
            }
            for old in removed {
                tracing::info!(validator, %kind, file = %old, "removed old object (retention)");
            }
            (Ok((Response::ok(), None)), After::Continue)
        }
        Err(refusal) => (Err(refusal), After::Continue),
    }
}

/// Streams the payload into the staged file and fsyncs it, before the
/// validator's lock is taken.
async fn receive_to_file(
    stream: &mut UnixStream,
    staged: &StagedFile,
    bytes: u64,
) -> io::Result<()> {
    let mut file = tokio::fs::File::from_std(staged.file().try_clone()?);
    let copied = tokio::io::copy(&mut stream.take(bytes), &mut file).await?;
    if copied != bytes {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    file.flush().await?;
    file.sync_all().await
}

/// One stored file.
struct Entry {
    modified: SystemTime,
    name: String,
    size: u64,
}

/// The validator's stored files, oldest first.
fn entries(dir: &Path) -> Result<Vec<Entry>, Failure> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| internal("list", dir, e))? {
        let entry = entry.map_err(|e| internal("list", dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if file_name_problem(&name).is_some() {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        entries.push(Entry {
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            name,
            size: metadata.len(),
        });
    }
    entries.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
    Ok(entries)
}

fn sync_dir(dir: &Path) -> Result<(), Failure> {
    durable::fsync_dir(dir)
        .map_err(|error| internal(error.step.action(), &error.path, error.source))
}

/// Links the received `staged` file in as `name` unless that exists, applying
/// retention and the quota; returns the names removed by retention. Changes
/// nothing when it fails before the link.
fn commit(
    dir: &Path,
    staged: StagedFile,
    name: &str,
    bytes: u64,
    keep: usize,
    quota: u64,
) -> Result<Vec<String>, Failure> {
    let target = dir.join(name);
    let exists = || failure(ErrorKind::AlreadyExists, format!("{name} already exists"));
    if target.symlink_metadata().is_ok() {
        return Err(exists());
    }
    let existing = entries(dir)?;
    // The new file is the newest; retention removes the oldest beyond `keep`.
    let excess = (existing.len() + 1).saturating_sub(keep);
    let (victims, survivors) = existing.split_at(excess.min(existing.len()));
    let total = survivors.iter().map(|e| e.size).sum::<u64>() + bytes;
    if total > quota {
        return Err(failure(
            ErrorKind::Quota,
            format!(
                "storing {name} would bring this validator to {total} bytes, \
                 over the bastion's {quota}-byte cap"
            ),
        ));
    }
    staged.commit().map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => exists(),
        _ => internal(error.step.action(), &error.path, error.source),
    })?;
    let mut removed = Vec::new();
    for victim in victims {
        let path = dir.join(&victim.name);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(victim.name.clone()),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "retention could not remove")
            }
        }
    }
    sync_dir(dir)?;
    Ok(removed)
}

/// Links a received log object in as `name` unless that exists, after
/// making room: the segments older than `options.max_age` and then the
/// oldest ones until the new object fits under `options.quota_bytes` are
/// removed, each with its sibling object (same stem). Returns the names
/// removed. A single object larger than the quota is refused (`quota`).
fn commit_log(
    dir: &Path,
    staged: StagedFile,
    name: &str,
    bytes: u64,
    options: &LogStoreOptions,
    now: SystemTime,
) -> Result<Vec<String>, Failure> {
    let target = dir.join(name);
    let exists = || failure(ErrorKind::AlreadyExists, format!("{name} already exists"));
    if target.symlink_metadata().is_ok() {
        return Err(exists());
    }
    if bytes > options.quota_bytes {
        return Err(failure(
            ErrorKind::Quota,
            format!(
                "{name} alone ({bytes} bytes) is over the bastion's {}-byte log cap",
                options.quota_bytes
            ),
        ));
    }
    let existing = entries(dir)?;
    let victims = log_victims(&existing, bytes, options, now);
    staged.commit().map_err(|error| match error.kind() {
        io::ErrorKind::AlreadyExists => exists(),
        _ => internal(error.step.action(), &error.path, error.source),
    })?;
    let mut removed = Vec::new();
    for victim in victims {
        let path = dir.join(&victim);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(victim),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "log retention could not remove")
            }
        }
    }
    sync_dir(dir)?;
    Ok(removed)
}

/// The stem of a log object's name (without `.age` / `.sig`).
fn log_stem(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(stem, _)| stem)
}

/// Which of `existing` (oldest first) log retention removes before an
/// object of `incoming` bytes is added: every object older than
/// `max_age`, then the oldest until the rest plus `incoming` fit the
/// quota; always whole segments (a victim's siblings go with it).
fn log_victims(
    existing: &[Entry],
    incoming: u64,
    options: &LogStoreOptions,
    now: SystemTime,
) -> Vec<String> {
    // Whole segments, in the order their first object arrived.
    let mut segments: Vec<(&str, u64, SystemTime)> = Vec::new();
    for entry in existing {
        let stem = log_stem(&entry.name);
        match segments.iter_mut().find(|(s, _, _)| *s == stem) {
            Some(segment) => segment.1 += entry.size,
            None => segments.push((stem, entry.size, entry.modified)),
        }
    }
    let mut total: u64 = segments.iter().map(|s| s.1).sum::<u64>() + incoming;
    let mut doomed = std::collections::HashSet::new();
    for (stem, size, arrived) in segments {
        let too_old = now
            .duration_since(arrived)
            .is_ok_and(|age| age > options.max_age);
        if too_old || total > options.quota_bytes {
            doomed.insert(stem);
            total -= size;
        }
    }
    existing
        .iter()
        .filter(|entry| doomed.contains(log_stem(&entry.name)))
        .map(|entry| entry.name.clone())
        .collect()
}

async fn list(store: &Store, validator: &str, kind: ObjectKind, after: Option<&str>) -> Outcome {
    let (dir, lock) = store.validator(validator, kind)?;
    let _guard = lock.lock().await;
    let names: Vec<String> = blocking(move || entries(&dir))
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    Ok((Response::listing(listing_page(names, after)), None))
}

/// The names a `list` answers, sorted: without `after` the newest
/// [`MAX_LIST_ENTRIES`], with it the first ones sorting after it.
fn listing_page(mut names: Vec<String>, after: Option<&str>) -> Vec<String> {
    names.sort();
    match after {
        None => {
            if names.len() > MAX_LIST_ENTRIES {
                names.drain(..names.len() - MAX_LIST_ENTRIES);
            }
        }
        Some(after) => {
            names.retain(|name| name.as_str() > after);
            names.truncate(MAX_LIST_ENTRIES);
        }
    }
    names
}

/// Opens the file under the validator's lock; it is sent after the lock is
/// released (stored files never change, and an open file outlives its
/// removal by retention).
async fn get(store: &Store, validator: &str, file: &str, kind: ObjectKind) -> Outcome {
    let (dir, lock) = store.validator(validator, kind)?;
    check_name(file, kind)?;
    let guard = lock.lock().await;
    let name = file.to_owned();
    let payload = blocking(move || open_file(&dir, &name, max_payload_bytes(kind))).await?;
    drop(guard);
    Ok((Response::payload(payload.bytes), Some(payload)))
}

fn open_file(dir: &Path, name: &str, limit: usize) -> Result<Payload, Failure> {
    let path = dir.join(name);
    let not_found = || failure(ErrorKind::NotFound, format!("{name} is not stored here"));
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(internal("open", &path, e)),
    };
    let metadata = file.metadata().map_err(|e| internal("inspect", &path, e))?;
    if !metadata.is_file() {
        return Err(not_found());
    }
    if metadata.len() > limit as u64 {
        return Err(failure(
            ErrorKind::TooLarge,
            format!("{name} is {} bytes, over the limit", metadata.len()),
        ));
    }
    Ok(Payload {
        file,
        bytes: metadata.len(),
    })
}

async fn remove(store: &Store, validator: &str, file: &str, kind: ObjectKind) -> Outcome {
    let (dir, lock) = store.validator(validator, kind)?;
    check_name(file, kind)?;
    let _guard = lock.lock().await;
    let name = file.to_owned();
    blocking(move || {
        let path = dir.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                return Err(failure(
                    ErrorKind::NotFound,
                    format!("{name} is not stored here"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(failure(
                    ErrorKind::NotFound,
                    format!("{name} is not stored here"),
                ));
            }
            Err(e) => return Err(internal("inspect", &path, e)),
        }
        fs::remove_file(&path).map_err(|e| internal("remove", &path, e))?;
        sync_dir(&dir)
    })
    .await?;
    tracing::info!(validator, %kind, file, "object removed on request");
    Ok((Response::ok(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, seconds: u64) -> Entry {
        Entry {
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            name: name.into(),
            size,
        }
    }

    #[test]
    fn log_retention_removes_whole_segments_oldest_first() {
        let options = LogStoreOptions {
            quota_bytes: 1000,
            max_age: Duration::from_secs(100),
            archive_users: Vec::new(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(150);
        let existing = [
            entry("log-h-00000000000000000001.age", 300, 60),
            entry("log-h-00000000000000000001.sig", 10, 61),
            entry("log-h-00000000000000000002.age", 300, 70),
            entry("log-h-00000000000000000002.sig", 10, 71),
            entry("log-h-00000000000000000003.age", 300, 80),
            entry("log-h-00000000000000000003.sig", 10, 81),
        ];
        // (incoming bytes, max age, removed)
        let rows: &[(u64, u64, &[&str])] = &[
            (10, 100, &[]),
            (70, 100, &[]),
            (71, 100, &["1.age", "1.sig"]),
            (400, 100, &["1.age", "1.sig", "2.age", "2.sig"]),
            (10, 85, &["1.age", "1.sig"]),
            (
                1000,
                100,
                &["1.age", "1.sig", "2.age", "2.sig", "3.age", "3.sig"],
            ),
        ];
        for (incoming, max_age, removed) in rows {
            let options = LogStoreOptions {
                max_age: Duration::from_secs(*max_age),
                ..options.clone()
            };
            let victims = log_victims(&existing, *incoming, &options, now);
            let expected: Vec<String> = removed
                .iter()
                .map(|tail| format!("log-h-0000000000000000000{tail}"))
                .collect();
            assert_eq!(victims, expected, "incoming {incoming}, max age {max_age}");
        }
    }

    #[test]
    fn listings_page_after_a_name_or_keep_the_newest() {
        let names: Vec<String> = (0..MAX_LIST_ENTRIES + 10)
            .map(|index| format!("f{index:06}"))
            .collect();
        let newest = listing_page(names.clone(), None);
        assert_eq!(newest.len(), MAX_LIST_ENTRIES);
        assert_eq!(newest[0], "f000010");
        let first = listing_page(names.clone(), Some(""));
        assert_eq!(first.len(), MAX_LIST_ENTRIES);
        assert_eq!(first[0], "f000000");
        let rest = listing_page(names, Some(first.last().unwrap()));
        assert_eq!(rest.len(), 10);
        assert_eq!(rest[0], format!("f{:06}", MAX_LIST_ENTRIES));
    }

    #[test]
    fn log_objects_must_have_segment_names() {
        assert!(check_name("log-h-00000000000000000001.age", ObjectKind::Log).is_ok());
        assert!(check_name("log-h-00000000000000000001.sig", ObjectKind::Log).is_ok());
        for bad in ["backup-x.age", "log-h-1.age", "notes.txt"] {
            let refusal = check_name(bad, ObjectKind::Log).unwrap_err();
            assert_eq!(refusal.kind, ErrorKind::InvalidName, "{bad}");
        }
        assert!(check_name("backup-x.age", ObjectKind::Backup).is_ok());
    }
}
