//! A deliberately small HTTP/1.1 server (tokio) and blocking client, enough for JSON query
//! endpoints on loopback.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] concurrent connections (extra ones get `503` and are
//! closed), request head ≤ [`MAX_HEAD_BYTES`], body ≤ [`MAX_BODY_BYTES`], and the whole exchange
//! within [`REQUEST_TIMEOUT`]. Every response closes the connection.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Concurrent connections served.
pub const MAX_CONNECTIONS: usize = 64;
/// Request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Deadline for reading a request and writing its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response the client accepts.
pub const MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string after `?` (raw, not decoded); empty when there is none.
    pub query: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A JSON response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl HttpResponse {
    /// 200 with a JSON value.
    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            body: value.to_string(),
        }
    }

    /// An error status with `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            body: serde_json::json!({ "error": message }).to_string(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn encode_response(response: &HttpResponse) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        reason(response.status),
        response.body.len(),
        response.body
    )
    .into_bytes()
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve<F>(listener: TcpListener, handler: F)
where
    F: Fn(HttpRequest) -> HttpResponse + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = encode_response(&HttpResponse::error(503, "too many connections"));
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&busy)).await;
            });
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let response = match read_request(&mut stream).await {
                    Ok(request) => handler(request),
                    Err(response) => response,
                };
                let _ = stream.write_all(&encode_response(&response)).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Result<HttpRequest, HttpResponse> {
    let mut buffer = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(pos) = find(&buffer, b"\r\n\r\n") {
            break pos;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(HttpResponse::error(431, "request head too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HttpResponse::error(400, "read error"))?;
        if n == 0 {
            return Err(HttpResponse::error(400, "incomplete request"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end])
        .map_err(|_| HttpResponse::error(400, "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default();
    if method.is_empty() || !target.starts_with('/') {
        return Err(HttpResponse::error(400, "malformed request line"));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| HttpResponse::error(400, "bad content-length"))?;
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(HttpResponse::error(413, "body too large"));
    }
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HttpResponse::error(400, "read error"))?;
        if n == 0 {
            return Err(HttpResponse::error(400, "incomplete body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    Ok(HttpRequest {
        method,
        path,
        query,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Errors of the blocking client.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// Connecting, writing or reading failed.
    #[error("http {address}: {source}")]
    Io {
        /// Server address.
        address: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The server's answer is not HTTP.
    #[error("http {address}: malformed response")]
    Malformed {
        /// Server address.
        address: String,
    },
}

/// Blocking request to `address` (`host:port`, optionally prefixed by `tcp://` or `http://`).
/// Returns status and body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), HttpClientError> {
    let host = address
        .trim_start_matches("tcp://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let io_err = |source| HttpClientError::Io {
        address: host.to_string(),
        source,
    };
    let socket = host
        .to_socket_addrs()
        .map_err(io_err)?
        .next()
        .ok_or_else(|| io_err(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    stream.write_all(body.as_bytes()).map_err(io_err)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .map_err(io_err)?;
    let malformed = || HttpClientError::Malformed {
        address: host.to_string(),
    };
    let head_end = find(&response, b"\r\n\r\n").ok_or_else(malformed)?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| malformed())?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    let body = String::from_utf8_lossy(&response[head_end + 4..]).into_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn serves_json_and_enforces_limits() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, |request: HttpRequest| {
            HttpResponse::json(&serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": String::from_utf8_lossy(&request.body),
            }))
        }));
        let address_clone = address.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            request(
                &address_clone,
                "POST",
                "/x?y=1",
                Some("{\"a\":1}"),
                Duration::from_secs(2),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(status, 200);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["path"], "/x");
        assert_eq!(value["query"], "y=1");
        assert_eq!(value["body"], "{\"a\":1}");
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let (status, _) = tokio::task::spawn_blocking(move || {
            request(&address, "POST", "/", Some(&big), Duration::from_secs(2))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(status, 413);
    }
}
