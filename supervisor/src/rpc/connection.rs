//! One control connection after the greeting and the transport choice:
//! newline-delimited JSON-RPC, authentication, authorization, secret lines
//! and the dispatcher call (`docs/rpc.md` §1 step 3, §2–§5).
//!
//! Invariants:
//! - reads are bounded: at most [`MAX_LINE_BYTES`] buffered, a secret line
//!   at most [`MAX_SECRET_LINE_BYTES`]; a longer line gets −32005 and the
//!   connection is closed;
//! - a connection without a complete line for the idle timeout is closed;
//! - every request gets exactly one response, in order, each write bounded
//!   by [`WRITE_TIMEOUT`](super::WRITE_TIMEOUT);
//! - the secret line of a secret method is always read (even when the call
//!   is refused) so it is never parsed as a request, lives only in
//!   zeroizing buffers, and is never logged; nor are the params of a
//!   secret method;
//! - nothing here panics on input.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use palisade_wire::rpc::methods::{AuthChallenge, AuthLogin, parse_params};
use palisade_wire::rpc::results::{AuthChallengeResult, AuthLoginResult};
use palisade_wire::rpc::{
    CHALLENGE_BYTES, MAX_LINE_BYTES, MAX_SECRET_LINE_BYTES, Request, Response, Role, RpcError,
    SECRET_METHODS, code, parse_request, required_role, unpad_secret,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zeroize::{Zeroize, Zeroizing};

use super::WRITE_TIMEOUT;
use super::auth::{Challenge, LoginThrottle, Operators, Source, new_challenge};
use super::dispatcher::{Caller, Dispatcher};

/// Method prefixes reserved for planned features (`docs/rpc.md` §3).
const RESERVED_PREFIXES: &[&str] = &["ip."];

/// What every connection of one server shares.
pub struct Shared {
    pub validator: String,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub operators: Operators,
    pub throttle: LoginThrottle,
    pub idle_timeout: Duration,
    /// Calls counted by method and role (`super::calls`).
    pub calls: Arc<super::calls::RpcCalls>,
}

/// How a connection starts once its transport is settled.
#[derive(Debug)]
pub struct SessionStart {
    /// `Some` for a trusted local user (no login needed).
    pub caller: Option<Caller>,
    pub tls: bool,
    /// The TLS exporter value, or zeros on plaintext.
    pub channel_binding: [u8; CHALLENGE_BYTES],
    /// For a remote connection: its place among the unauthenticated ones,
    /// given up at login (`super::admission`).
    pub ticket: Option<super::admission::Ticket>,
    /// Where it came from: what its failed logins are counted against.
    pub source: Source,
}

/// A line read from the peer.
#[derive(Debug)]
pub enum LineRead {
    /// One complete line, newline included.
    Line(Zeroizing<Vec<u8>>),
    /// No newline within the limit.
    TooLong,
    /// The peer closed (a partial last line is dropped).
    Closed,
}

/// Bounded line framing over any byte stream. Bytes read past a line stay
/// buffered for the next call; the buffer is zeroized as it is consumed,
/// since it may hold a secret line.
pub struct LineReader {
    buffer: Zeroizing<Vec<u8>>,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new()
    }
}

impl LineReader {
    pub fn new() -> LineReader {
        // Full capacity up front: the buffer never grows, so a secret is
        // never left behind in a freed allocation.
        LineReader {
            buffer: Zeroizing::new(Vec::with_capacity(MAX_LINE_BYTES)),
        }
    }

    /// The next line of at most `max` bytes (newline included, `max` ≤
    /// [`MAX_LINE_BYTES`]). Cancel-safe: dropping the future loses no byte.
    pub async fn next_line<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        max: usize,
    ) -> io::Result<LineRead> {
        let max = max.min(MAX_LINE_BYTES);
        loop {
            let window = self.buffer.len().min(max);
            if let Some(position) = memchr::memchr(b'\n', &self.buffer[..window]) {
                let line = Zeroizing::new(self.buffer[..=position].to_vec());
                self.consume(position + 1);
                return Ok(LineRead::Line(line));
            }
            if self.buffer.len() >= max {
                return Ok(LineRead::TooLong);
            }
            let mut chunk = Zeroizing::new([0u8; 4096]);
            let want = (max - self.buffer.len()).min(chunk.len());
            let read = reader.read(&mut chunk[..want]).await?;
            if read == 0 {
                return Ok(LineRead::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn consume(&mut self, count: usize) {
        let remaining = self.buffer.len() - count;
        self.buffer.copy_within(count.., 0);
        self.buffer[remaining..].zeroize();
        self.buffer.truncate(remaining);
    }
}

/// What to do after a request.
enum Next {
    Answer(Response),
    /// Answer (if any), then close.
    Close(Option<Response>),
}

/// Serve requests on `stream` until the peer leaves, a limit is hit, a
/// login fails or `shutdown`.
pub async fn serve_session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    start: SessionStart,
    shutdown: &CancellationToken,
) {
    let mut session = Session {
        shared,
        caller: start.caller,
        tls: start.tls,
        channel_binding: start.channel_binding,
        challenge: Challenge::NotIssued,
        lines: LineReader::new(),
        ticket: start.ticket,
        source: start.source,
        malformed: 0,
    };
    loop {
        let line = match session.read_line(stream, MAX_LINE_BYTES, shutdown).await {
            Some(LineRead::Line(line)) => line,
            Some(LineRead::TooLong) => {
                let error = RpcError::new(
                    code::LINE_TOO_LONG,
                    format!("request longer than {MAX_LINE_BYTES} bytes; closing"),
                );
                tracing::info!(
                    operator = session.operator_name(),
                    code = code::LINE_TOO_LONG,
                    "rpc: line too long, closing"
                );
                write_response(stream, &Response::err(Value::Null, error)).await;
                return;
            }
            Some(LineRead::Closed) | None => return,
        };
        let next = session.handle(&line, stream, shutdown).await;
        drop(line);
        match next {
            Next::Answer(response) => {
                if !write_response(stream, &response).await {
                    return;
                }
            }
            Next::Close(response) => {
                if let Some(response) = response {
                    write_response(stream, &response).await;
                }
                return;
            }
        }
    }
}

/// Write one response line within the bound; `false` if the peer is gone
/// or stuck.
async fn write_response<S: AsyncWrite + Unpin>(stream: &mut S, response: &Response) -> bool {
    let mut line = response.to_line();
    if line.len() > MAX_LINE_BYTES {
        tracing::error!(
            bytes = line.len(),
            "rpc: a response exceeds the line limit; answering an internal error instead"
        );
        let error = RpcError::new(code::INTERNAL, "the response is too large");
        line = Response::err(response.id.clone(), error.clone()).to_line();
        if line.len() > MAX_LINE_BYTES {
            // The id itself is huge (a request just under the limit): the
            // answer must still fit, so it goes without it.
            line = Response::err(Value::Null, error).to_line();
        }
    }
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&line).await?;
        stream.flush().await
    })
    .await;
    match written {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, "rpc: peer left before the response");
            false
        }
        Err(_) => {
            tracing::info!("rpc: response write timed out; closing");
            false
        }
    }
}

struct Session<'a> {
    shared: &'a Shared,
    caller: Option<Caller>,
    tls: bool,
    channel_binding: [u8; CHALLENGE_BYTES],
    challenge: Challenge,
    lines: LineReader,
    ticket: Option<super::admission::Ticket>,
    source: Source,
    /// Malformed requests so far: the first is logged at info, the rest
    /// at debug and as one count when the connection ends (no log flood).
    malformed: u64,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.malformed > 1 {
            tracing::info!(
                operator = self.operator_name(),
                count = self.malformed,
                "rpc: connection closed after malformed requests"
            );
        }
    }
}

impl Session<'_> {
    fn operator_name(&self) -> &str {
        self.caller
            .as_ref()
            .map(|caller| caller.operator.as_str())
            .unwrap_or("-")
    }

    /// The next line within the idle timeout; `None` on timeout, error or
    /// shutdown (the connection ends).
    async fn read_line<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
        shutdown: &CancellationToken,
    ) -> Option<LineRead> {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return None,
            read = tokio::time::timeout(
                self.shared.idle_timeout,
                self.lines.next_line(stream, max),
            ) => read,
        };
        match read {
            Ok(Ok(line)) => Some(line),
            Ok(Err(error)) => {
                tracing::debug!(%error, "rpc: read failed");
                None
            }
            Err(_) => {
                tracing::debug!(
                    operator = self.operator_name(),
                    "rpc: no complete line within the idle timeout; closing"
                );
                None
            }
        }
    }

    async fn handle<S: AsyncRead + Unpin>(
        &mut self,
        line: &[u8],
        stream: &mut S,
        shutdown: &CancellationToken,
    ) -> Next {
        let Request {
            id, method, params, ..
        } = match parse_request(line) {
            Ok(request) => request,
            Err(error) => {
                self.malformed += 1;
                if self.malformed == 1 {
                    tracing::info!(
                        operator = self.operator_name(),
                        code = error.code,
                        "rpc: malformed request (further ones on this connection are counted)"
                    );
                } else {
                    tracing::debug!(
                        operator = self.operator_name(),
                        code = error.code,
                        "rpc: malformed request"
                    );
                }
                let close = error.code == code::LINE_TOO_LONG;
                let response = Response::err(Value::Null, error);
                return if close {
                    Next::Close(Some(response))
                } else {
                    Next::Answer(response)
                };
            }
        };
        if let Some(prefix) = RESERVED_PREFIXES
            .iter()
            .find(|prefix| method.starts_with(**prefix))
        {
            return self.refuse(
                id,
                &method,
                RpcError {
                    code: code::METHOD_NOT_FOUND,
                    message: format!("{prefix}* is reserved, not available yet"),
                    data: None,
                },
            );
        }
        // The catalogue's own &'static str: the only method text logged.
        let Some(&(method, needed)) = palisade_wire::rpc::METHODS
            .iter()
            .find(|(name, _)| *name == method)
        else {
            return self.refuse(
                id,
                &method,
                RpcError::new(code::METHOD_NOT_FOUND, "unknown method"),
            );
        };
        debug_assert_eq!(required_role(method), Some(needed));
        let Some(needed) = needed else {
            return self.authenticate(id, method, params).await;
        };
        // Read the secret line before deciding, so that a refused call
        // never leaves it to be parsed as the next request.
        let secret = if SECRET_METHODS.contains(&method) {
            match self
                .read_line(stream, MAX_SECRET_LINE_BYTES, shutdown)
                .await
            {
                Some(LineRead::Line(line)) => Some(line),
                Some(LineRead::TooLong) => {
                    self.log_call(method, code::LINE_TOO_LONG);
                    return Next::Close(Some(Response::err(
                        id,
                        RpcError::new(
                            code::LINE_TOO_LONG,
                            format!(
                                "the secret line is longer than {MAX_SECRET_LINE_BYTES} bytes; closing"
                            ),
                        ),
                    )));
                }
                Some(LineRead::Closed) | None => return Next::Close(None),
            }
        } else {
            None
        };
        let Some(caller) = self.caller.clone() else {
            self.log_call(method, code::UNAUTHENTICATED);
            return Next::Answer(Response::err(
                id,
                RpcError::new(
                    code::UNAUTHENTICATED,
                    "not authenticated: call auth.challenge, then auth.login",
                ),
            ));
        };
        if caller.role < needed {
            self.log_call(method, code::FORBIDDEN);
            return Next::Answer(Response::err(
                id,
                RpcError {
                    code: code::FORBIDDEN,
                    message: format!("{method} needs the {needed} role; you are {}", caller.role),
                    data: Some(json!({ "required": needed })),
                },
            ));
        }
        let secret = match secret {
            None => None,
            Some(line) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                // Padded (the client's form) or not (typed by hand); the
                // slice borrows from the zeroizing line.
                let text = match unpad_secret(text) {
                    Ok(text) => std::str::from_utf8(text).map_err(|_| {
                        "the secret line is not UTF-8 (before its padding)".to_string()
                    }),
                    Err(error) => Err(error.to_string()),
                };
                match text {
                    Ok(text) => Some(SecretString::from(text)),
                    Err(message) => {
                        self.log_call(method, code::INVALID_PARAMS);
                        return Next::Answer(Response::err(
                            id,
                            RpcError {
                                code: code::INVALID_PARAMS,
                                message,
                                data: Some(json!({ "field": "secret" })),
                            },
                        ));
                    }
                }
            }
        };
        let outcome = self
            .shared
            .dispatcher
            .call(&caller, method, params.unwrap_or(Value::Null), secret)
            .await;
        match outcome {
            Ok(result) => {
                self.log_call(method, 0);
                Next::Answer(Response::ok(id, result))
            }
            Err(error) => {
                self.log_call(method, error.code);
                Next::Answer(Response::err(id, error))
            }
        }
    }

    /// An unknown or reserved method: logged with a bounded, escaped name.
    fn refuse(&self, id: Value, method: &str, error: RpcError) -> Next {
        let shown: String = method.chars().take(64).collect();
        tracing::info!(
            operator = self.operator_name(),
            method = ?shown,
            code = error.code,
            "rpc call refused"
        );
        Next::Answer(Response::err(id, error))
    }

    /// Every call is logged: who, which method, the outcome (0: success).
    fn log_call(&self, method: &'static str, outcome: i64) {
        self.shared.calls.record(
            method,
            self.caller.as_ref().map(|caller| caller.role),
            outcome != 0,
        );
        match &self.caller {
            Some(caller) => tracing::info!(
                validator = %self.shared.validator,
                operator = %caller.operator,
                role = %caller.role,
                method,
                code = outcome,
                tls = self.tls,
                "rpc call"
            ),
            None => tracing::info!(
                validator = %self.shared.validator,
                operator = "-",
                method,
                code = outcome,
                tls = self.tls,
                "rpc call"
            ),
        }
    }

    async fn authenticate(
        &mut self,
        id: Value,
        method: &'static str,
        params: Option<Value>,
    ) -> Next {
        match method {
            "auth.challenge" => {
                if let Err(error) = parse_params::<AuthChallenge>(params.unwrap_or(Value::Null)) {
                    self.log_call(method, code::INVALID_PARAMS);
                    return Next::Answer(Response::err(id, error));
                }
                if self.challenge != Challenge::NotIssued {
                    self.log_call(method, code::WRONG_STATE);
                    return Next::Answer(Response::err(
                        id,
                        RpcError::new(code::WRONG_STATE, "one challenge per connection"),
                    ));
                }
                let nonce = new_challenge();
                self.challenge = Challenge::Issued(nonce);
                self.log_call(method, 0);
                Next::Answer(Response::ok(
                    id,
                    encode(AuthChallengeResult {
                        challenge: BASE64.encode(nonce),
                    }),
                ))
            }
            _ => self.login(id, params).await,
        }
    }

    async fn login(&mut self, id: Value, params: Option<Value>) -> Next {
        let params = match parse_params::<AuthLogin>(params.unwrap_or(Value::Null)) {
            Ok(params) => params,
            Err(error) => {
                // The challenge is spent: this connection cannot log in.
                self.challenge = Challenge::Consumed;
                tracing::warn!(
                    validator = %self.shared.validator,
                    code = code::INVALID_PARAMS,
                    "rpc login refused: malformed params; closing"
                );
                return Next::Close(Some(Response::err(id, error)));
            }
        };
        let claimed: String = params.operator.chars().take(64).collect();
        // The client has done its part: the throttle's wait is the
        // server's and does not count against the login deadline (the
        // connection stays evictable until it is logged in).
        if let Some(ticket) = &self.ticket {
            ticket.stop_deadline();
        }
        let outcome = self
            .shared
            .throttle
            .login(
                &self.shared.operators,
                &self.shared.validator,
                &self.source,
                &mut self.challenge,
                &self.channel_binding,
                &params,
            )
            .await;
        match outcome {
            Ok(role) => {
                tracing::info!(
                    validator = %self.shared.validator,
                    operator = %params.operator,
                    %role,
                    tls = self.tls,
                    source = %self.source,
                    "rpc login"
                );
                self.caller = Some(Caller {
                    operator: params.operator.clone(),
                    role,
                    tls: self.tls,
                });
                // Logged in: no longer evictable, no login deadline.
                self.ticket = None;
                Next::Answer(Response::ok(
                    id,
                    encode(AuthLoginResult {
                        operator: params.operator,
                        role,
                    }),
                ))
            }
            Err(failure) => {
                tracing::warn!(
                    validator = %self.shared.validator,
                    operator = ?claimed,
                    reason = %failure,
                    code = code::UNAUTHENTICATED,
                    tls = self.tls,
                    source = %self.source,
                    "rpc login refused; closing"
                );
                Next::Close(Some(Response::err(
                    id,
                    RpcError::new(code::UNAUTHENTICATED, "login refused"),
                )))
            }
        }
    }
}

/// The role a trusted local user acts with.
pub const LOCAL_ROLE: Role = Role::Admin;

/// A result as JSON (the contract's types always serialize).
fn encode(result: impl serde::Serialize) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    use super::*;

    /// Echoes what it was called with.
    struct Echo;

    impl Dispatcher for Echo {
        fn call<'a>(
            &'a self,
            caller: &'a Caller,
            method: &'a str,
            params: Value,
            secret: Option<SecretString>,
        ) -> crate::backup::BoxFuture<'a, Result<Value, RpcError>> {
            Box::pin(async move {
                Ok(json!({
                    "operator": caller.operator,
                    "method": method,
                    "params": params,
                    "secret_len": secret.map(|s| s.expose_secret().len()),
                }))
            })
        }
    }

    fn shared() -> Shared {
        Shared {
            validator: "val-a".into(),
            dispatcher: Arc::new(Echo),
            operators: Operators::default(),
            throttle: LoginThrottle::default(),
            idle_timeout: Duration::from_secs(5),
            calls: Arc::default(),
        }
    }

    fn local() -> SessionStart {
        SessionStart {
            caller: Some(Caller {
                operator: "local:root".into(),
                role: LOCAL_ROLE,
                tls: false,
            }),
            tls: false,
            channel_binding: [0; 32],
            ticket: None,
            source: Source::Local(Some(0)),
        }
    }

    /// Feed `input`, close the write side, collect every response line.
    async fn exchange(input: Vec<u8>, start: SessionStart) -> Vec<Response> {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let shared = shared();
        let shutdown = CancellationToken::new();
        let serving = async move {
            serve_session(&mut server, &shared, start, &shutdown).await;
            drop(server);
        };
        let talking = async {
            client.write_all(&input).await.unwrap();
            client.shutdown().await.unwrap();
            let mut output = Vec::new();
            client.read_to_end(&mut output).await.unwrap();
            output
        };
        let ((), output) = tokio::join!(serving, talking);
        output
            .split_inclusive(|b| *b == b'\n')
            .map(|line| {
                assert!(line.ends_with(b"\n"), "{:?}", String::from_utf8_lossy(line));
                serde_json::from_slice::<Response>(line).unwrap()
            })
            .collect()
    }

    fn error_code(response: &Response) -> Option<i64> {
        response.error.as_ref().map(|error| error.code)
    }

    #[tokio::test]
    async fn frames_get_the_right_codes_in_order() {
        let mut input = Vec::new();
        let lines: [&[u8]; 9] = [
            b"not json\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"x\":1}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":7}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"format.disk\"}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ip.rotate\"}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"status\",\"params\":{\"a\":1}}\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"vault.unlock\"}\n",
            b"correct horse battery staple\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"auth.challenge\",\"params\":[1]}\n",
        ];
        for line in lines {
            input.extend_from_slice(line);
        }
        let responses = exchange(input, local()).await;
        let codes: Vec<Option<i64>> = responses.iter().map(error_code).collect();
        assert_eq!(
            codes,
            [
                Some(code::PARSE_ERROR),
                Some(code::INVALID_REQUEST),
                Some(code::INVALID_REQUEST),
                Some(code::METHOD_NOT_FOUND),
                Some(code::METHOD_NOT_FOUND),
                None,
                None,
                Some(code::INVALID_PARAMS),
            ]
        );
        assert!(
            responses[4]
                .error
                .as_ref()
                .unwrap()
                .message
                .contains("reserved")
        );
        let status = responses[5].result.as_ref().unwrap();
        assert_eq!(status["params"], json!({"a": 1}));
        assert_eq!(status["secret_len"], Value::Null);
        let unlock = responses[6].result.as_ref().unwrap();
        assert_eq!(unlock["secret_len"], json!(28));
        assert_eq!(responses[6].id, json!(6));
    }

    #[tokio::test]
    async fn padded_secret_lines_reach_the_method_without_their_padding() {
        let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"vault.unlock\"}\n";
        let padded = |secret: &str| {
            let mut line = request.to_vec();
            palisade_wire::rpc::pad_secret(secret, &mut line).unwrap();
            line.push(b'\n');
            line
        };
        let mut input = padded("correct horse");
        input.extend_from_slice(&padded(&"y".repeat(palisade_wire::rpc::MAX_SECRET_BYTES)));
        // Padding cut short, then text after the padding: refused.
        let mut short = padded("z");
        short.remove(short.len() - 2);
        input.extend_from_slice(&short);
        let mut trailing = padded("z");
        let last = trailing.len() - 2;
        trailing[last] = b'z';
        input.extend_from_slice(&trailing);
        let responses = exchange(input, local()).await;
        assert_eq!(responses.len(), 4);
        assert_eq!(
            responses[0].result.as_ref().unwrap()["secret_len"],
            json!(13)
        );
        assert_eq!(
            responses[1].result.as_ref().unwrap()["secret_len"],
            json!(palisade_wire::rpc::MAX_SECRET_BYTES)
        );
        for refused in &responses[2..] {
            let error = refused.error.as_ref().unwrap();
            assert_eq!(error.code, code::INVALID_PARAMS);
            assert_eq!(error.data, Some(json!({"field": "secret"})));
            assert!(error.message.contains("padded"), "{}", error.message);
        }
    }

    #[tokio::test]
    async fn oversized_lines_close_the_connection() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n");
        let responses = exchange(input, local()).await;
        assert_eq!(responses.len(), 1);
        assert_eq!(error_code(&responses[0]), Some(code::LINE_TOO_LONG));

        let mut input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"vault.unlock\"}\n".to_vec();
        input.extend_from_slice(&[b's'; MAX_SECRET_LINE_BYTES + 1]);
        input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"status\"}\n");
        let responses = exchange(input, local()).await;
        assert_eq!(responses.len(), 1);
        assert_eq!(error_code(&responses[0]), Some(code::LINE_TOO_LONG));
        assert_eq!(responses[0].id, json!(1));
    }

    #[tokio::test]
    async fn unauthenticated_callers_get_only_auth_methods() {
        let start = SessionStart {
            caller: None,
            tls: true,
            channel_binding: [9; 32],
            ticket: None,
            source: Source::Bastion("b1".into()),
        };
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n\
            {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"vault.unlock\"}\nsecret\n\
            {\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"auth.challenge\"}\n\
            {\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"auth.challenge\"}\n\
            {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"auth.login\",\"params\":{\"operator\":\"a\",\"signature\":\"AAAA\"}}\n\
            {\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"status\"}\n"
            .to_vec();
        let responses = exchange(input, start).await;
        let codes: Vec<Option<i64>> = responses.iter().map(error_code).collect();
        assert_eq!(
            codes,
            [
                Some(code::UNAUTHENTICATED),
                Some(code::UNAUTHENTICATED),
                None,
                Some(code::WRONG_STATE),
                Some(code::UNAUTHENTICATED),
            ]
        );
    }

    #[tokio::test]
    async fn line_reader_keeps_pipelined_bytes_and_zeroizes_what_it_consumed() {
        let mut reader = LineReader::new();
        let mut input: &[u8] = b"one\ntwo\nthr";
        let mut lines = Vec::new();
        loop {
            match reader.next_line(&mut input, 16).await.unwrap() {
                LineRead::Line(line) => lines.push(line.to_vec()),
                LineRead::Closed => break,
                LineRead::TooLong => panic!("too long"),
            }
        }
        assert_eq!(lines, [b"one\n".to_vec(), b"two\n".to_vec()]);
        let mut input: &[u8] = b"0123456789abcdef\n";
        assert!(matches!(
            LineReader::new().next_line(&mut input, 16).await.unwrap(),
            LineRead::TooLong
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary lines never panic and each complete line gets exactly
        /// one JSON-RPC response line (or the connection closes on an
        /// oversized line).
        #[test]
        fn arbitrary_lines_get_one_response_each(
            lines in proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
                1..8,
            ),
            authenticated in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut input = Vec::new();
            for line in &lines {
                input.extend_from_slice(line);
                input.push(b'\n');
            }
            let start = if authenticated {
                local()
            } else {
                SessionStart { caller: None, tls: false, channel_binding: [0; 32], ticket: None, source: Source::Local(Some(1000)) }
            };
            let responses = runtime.block_on(exchange(input, start));
            // Secret lines and a failed login consume lines or close early;
            // never more responses than lines.
            prop_assert!(responses.len() <= lines.len());
            prop_assert!(!responses.is_empty());
            for response in &responses {
                prop_assert_eq!(&response.jsonrpc, "2.0");
                prop_assert!(response.result.is_some() != response.error.is_some());
            }
        }

        /// Lines that look like requests (valid JSON objects with arbitrary
        /// fields) are answered one for one.
        #[test]
        fn arbitrary_requests_are_answered_one_for_one(
            requests in proptest::collection::vec(
                (
                    prop_oneof![Just("2.0".to_string()), "[0-9.]{0,4}"],
                    prop_oneof![any::<i64>().prop_map(Value::from), "[a-z]{0,5}".prop_map(Value::from), Just(Value::Null)],
                    prop_oneof![
                        Just("status".to_string()),
                        Just("node.stop".to_string()),
                        Just("auth.challenge".to_string()),
                        Just("ip.rotate".to_string()),
                        "[a-z.]{0,12}".prop_filter(
                            "secret and login calls consume more than their line",
                            |method| method != "auth.login" && !SECRET_METHODS.contains(&method.as_str()),
                        ),
                    ],
                    proptest::option::of(prop_oneof![Just(Value::Null), Just(json!({"lines": 5})), Just(json!([1, 2]))]),
                ),
                1..8,
            ),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut input = Vec::new();
            for (version, id, method, params) in &requests {
                let mut request = json!({"jsonrpc": version, "id": id, "method": method});
                if let Some(params) = params {
                    request["params"] = params.clone();
                }
                input.extend_from_slice(request.to_string().as_bytes());
                input.push(b'\n');
            }
            let responses = runtime.block_on(exchange(input, local()));
            prop_assert_eq!(responses.len(), requests.len());
        }
    }
}
