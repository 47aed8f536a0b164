//! [`RemoteStore`]: a bastion's backup store, speaking
//! [`palisade_wire::backup_store`] over a stream from a [`StreamDialer`]:
//! on the validator, a `direct-streamlocal` channel through the bastion's
//! SSH tunnel to its `listen-socket` (see `crate::tunnel`); in tests and
//! on the bastion itself, a plain Unix socket ([`RemoteStore::unix`]).
//!
//! The bastion is not trusted: everything read back is verified by
//! [`crate::backup::open_bundle`], and every answer is size-checked here
//! before it is read. Each operation opens a fresh connection and is bounded
//! as a whole by the store's timeout (connect, write and read included).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_wire::backup_store::{
    ErrorKind, MAX_RESPONSE_HEADER_BYTES, ObjectKind, Request, Response, decode_response,
    encode_header,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::open::MAX_CIPHERTEXT_BYTES;
use super::store::{BackupStore, BoxFuture, StoreError, check_put, validate_file_name};

/// Default bound on one whole operation.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bidirectional byte stream (Unix socket, SSH channel).
pub trait DuplexStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DuplexStream for T {}

/// A boxed [`DuplexStream`].
pub type BoxedStream = Box<dyn DuplexStream>;

/// Opens a fresh connection to a backup store for each operation.
pub trait StreamDialer: Send + Sync {
    /// Connect; errors are reported as the store being unavailable.
    fn dial(&self) -> BoxFuture<'_, std::io::Result<BoxedStream>>;
    /// Where it connects, for messages.
    fn describe(&self) -> String;
}

/// Dials a local Unix socket.
#[derive(Debug, Clone)]
pub struct UnixDialer(pub PathBuf);

impl StreamDialer for UnixDialer {
    fn dial(&self) -> BoxFuture<'_, std::io::Result<BoxedStream>> {
        Box::pin(async move {
            let stream = UnixStream::connect(&self.0).await?;
            Ok(Box::new(stream) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// A bastion's backup store for one validator.
#[derive(Clone)]
pub struct RemoteStore {
    dialer: Arc<dyn StreamDialer>,
    validator: String,
    name: String,
    timeout: Duration,
}

impl RemoteStore {
    /// The store behind the Unix socket `socket_path`, holding the backups
    /// of `validator_name` (as configured on the bastion); `store_name`
    /// names it in reports.
    pub fn unix(
        socket_path: impl Into<PathBuf>,
        validator_name: impl Into<String>,
        store_name: impl Into<String>,
    ) -> RemoteStore {
        RemoteStore::new(
            Arc::new(UnixDialer(socket_path.into())),
            validator_name,
            store_name,
        )
    }

    /// The store reached through `dialer` (e.g. a bastion tunnel).
    pub fn new(
        dialer: Arc<dyn StreamDialer>,
        validator_name: impl Into<String>,
        store_name: impl Into<String>,
    ) -> RemoteStore {
        RemoteStore {
            dialer,
            validator: validator_name.into(),
            name: store_name.into(),
            timeout: DEFAULT_REMOTE_TIMEOUT,
        }
    }

    /// Bounds each whole operation by `timeout` instead of
    /// [`DEFAULT_REMOTE_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> RemoteStore {
        self.timeout = timeout;
        self
    }

    /// Sends `request` (and `payload`), returns the response header and, for
    /// a successful `get`, the payload. Bounded by the store's timeout.
    async fn exchange(
        &self,
        request: Request,
        payload: Option<&[u8]>,
    ) -> Result<(Response, Option<Vec<u8>>), StoreError> {
        match tokio::time::timeout(self.timeout, self.exchange_unbounded(request, payload)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn exchange_unbounded(
        &self,
        request: Request,
        payload: Option<&[u8]>,
    ) -> Result<(Response, Option<Vec<u8>>), StoreError> {
        let unavailable =
            |what: &str, error: std::io::Error| StoreError::Unavailable(format!("{what}: {error}"));
        let mut stream = self.dialer.dial().await.map_err(|e| {
            unavailable(&format!("cannot connect to {}", self.dialer.describe()), e)
        })?;
        let is_get = matches!(request, Request::Get { .. });
        let mut message = encode_header(&request);
        if let Some(payload) = payload {
            message.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            message.extend_from_slice(payload);
        }
        let written = async {
            stream.write_all(&message).await?;
            stream.flush().await
        }
        .await;
        // The bastion may refuse (and close) before reading everything; its
        // answer is still worth reading.
        let response = match read_response(&mut stream).await {
            Ok(response) => response,
            Err(read_error) => {
                return Err(match written {
                    Err(write_error) => unavailable("cannot send the request", write_error),
                    Ok(()) => read_error,
                });
            }
        };
        if !response.ok || !is_get {
            return Ok((response, None));
        }
        let announced = response.bytes.ok_or_else(|| {
            StoreError::Unavailable("bastion answered a get without a length".into())
        })?;
        if announced > MAX_CIPHERTEXT_BYTES as u64 {
            let file = match &request {
                Request::Get { file, .. } => file.clone(),
                _ => String::new(),
            };
            return Err(StoreError::TooLarge {
                name: file,
                bytes: announced,
                limit: MAX_CIPHERTEXT_BYTES,
            });
        }
        let length = read_prefix(&mut stream).await?;
        if u64::from(length) != announced {
            return Err(StoreError::Unavailable(format!(
                "bastion announced {announced} bytes but sent a {length}-byte frame"
            )));
        }
        let mut bytes = vec![0u8; length as usize];
        stream
            .read_exact(&mut bytes)
            .await
            .map_err(|e| unavailable("cannot read the file from the bastion", e))?;
        Ok((response, Some(bytes)))
    }

    /// Maps a refusal from the bastion to a [`StoreError`].
    fn refusal(&self, response: Response, file: &str) -> StoreError {
        let Some(error) = response.error else {
            return StoreError::Unavailable("bastion refused without a reason".into());
        };
        match error.kind {
            ErrorKind::AlreadyExists => StoreError::AlreadyExists(file.to_owned()),
            ErrorKind::NotFound => StoreError::NotFound(file.to_owned()),
            ErrorKind::TooLarge => StoreError::TooLarge {
                name: file.to_owned(),
                bytes: 0,
                limit: MAX_CIPHERTEXT_BYTES,
            },
            ErrorKind::InvalidName => StoreError::InvalidName {
                name: file.to_owned(),
                reason: "refused by the bastion",
            },
            kind => StoreError::Unavailable(format!(
                "bastion {} refused ({kind}): {}",
                self.name, error.message
            )),
        }
    }

    async fn simple(
        &self,
        request: Request,
        payload: Option<&[u8]>,
        file: &str,
    ) -> Result<Response, StoreError> {
        let (response, _) = self.exchange(request, payload).await?;
        if response.ok {
            Ok(response)
        } else {
            Err(self.refusal(response, file))
        }
    }
}

async fn read_prefix<R: AsyncRead + Unpin>(reader: &mut R) -> Result<u32, StoreError> {
    let mut prefix = [0u8; 4];
    reader
        .read_exact(&mut prefix)
        .await
        .map_err(|e| StoreError::Unavailable(format!("no answer from the bastion: {e}")))?;
    Ok(u32::from_be_bytes(prefix))
}

async fn read_response<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Response, StoreError> {
    let length = read_prefix(reader).await?;
    if length as usize > MAX_RESPONSE_HEADER_BYTES {
        return Err(StoreError::Unavailable(format!(
            "bastion sent a {length}-byte header, over the {MAX_RESPONSE_HEADER_BYTES}-byte limit"
        )));
    }
    let mut body = vec![0u8; length as usize];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| StoreError::Unavailable(format!("incomplete answer from the bastion: {e}")))?;
    decode_response(&body).map_err(StoreError::Unavailable)
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("endpoint", &self.dialer.describe())
            .field("validator", &self.validator)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl BackupStore for RemoteStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn put<'a>(
        &'a self,
        file_name: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_put(file_name, bytes)?;
            let request = Request::Put {
                validator: self.validator.clone(),
                file: file_name.to_owned(),
                bytes: bytes.len() as u64,
                kind: ObjectKind::Backup,
            };
            self.simple(request, Some(bytes), file_name).await.map(drop)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let request = Request::List {
                validator: self.validator.clone(),
                kind: ObjectKind::Backup,
                after: None,
            };
            let response = self.simple(request, None, "").await?;
            let mut names: Vec<String> = response
                .files
                .ok_or_else(|| StoreError::Unavailable("bastion listing without files".into()))?
                .into_iter()
                .filter(|name| validate_file_name(name).is_ok())
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    fn get<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            validate_file_name(file_name)?;
            let request = Request::Get {
                validator: self.validator.clone(),
                file: file_name.to_owned(),
                kind: ObjectKind::Backup,
            };
            match self.exchange(request, None).await? {
                (response, _) if !response.ok => Err(self.refusal(response, file_name)),
                (_, Some(bytes)) => Ok(bytes),
                (_, None) => Err(StoreError::Unavailable("bastion sent no file".into())),
            }
        })
    }

    fn remove<'a>(&'a self, file_name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            validate_file_name(file_name)?;
            let request = Request::Remove {
                validator: self.validator.clone(),
                file: file_name.to_owned(),
                kind: ObjectKind::Backup,
            };
            self.simple(request, None, file_name).await.map(drop)
        })
    }
}
