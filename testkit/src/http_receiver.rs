//! [`HttpReceiver`]: a small HTTP/1.1 server on a free loopback port that records every request
//! (method, path, headers, body) and answers from a script (then 200): the stand-in for Slack,
//! Discord, Telegram, PagerDuty, a webhook, Alertmanager's webhook receiver or a Loki push
//! endpoint in tests, which then check the recorded requests against each service's documented
//! shape.
//!
//! One connection at a time, `Connection: close` on every answer; bodies by `Content-Length` or
//! chunked; every read bounded by [`IO_TIMEOUT`] and [`MAX_REQUEST_BYTES`]. Stopped on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Error, POLL, Result};

/// Bound on reading one request.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request accepted (headers and body).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{} {}: body is not JSON ({error}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Received>,
    script: VecDeque<Reply>,
}

/// The server; see the module documentation.
pub struct HttpReceiver {
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpReceiver {
    /// Listens on `127.0.0.1:0`.
    pub fn start() -> Result<HttpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::new(format!("binding the HTTP receiver: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::new(format!("HTTP receiver address: {e}")))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::new(format!("HTTP receiver: {e}")))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &shared),
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(HttpReceiver {
            port,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer the next request (after those already scripted) with `reply`.
    pub fn reply_next(&self, reply: Reply) {
        self.shared.lock().unwrap().script.push_back(reply);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Waits up to `timeout` until `condition` holds for the requests so far; returns them.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&[Received]) -> bool,
    ) -> Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if condition(&requests) {
                return Ok(requests);
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = requests
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {}",
                            r.method,
                            r.path,
                            String::from_utf8_lossy(&r.body)
                        )
                    })
                    .collect();
                return Err(Error::new(format!(
                    "timed out after {timeout:?} waiting for {what}; received:\n{}",
                    seen.join("\n")
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, shared: &Mutex<Shared>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    let reply = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(request);
        shared
            .script
            .pop_front()
            .unwrap_or_else(|| Reply::status(200).with_body("ok"))
    };
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&reply.body);
    let _ = writer.write_all(answer.as_bytes());
    let _ = writer.flush();
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        total += header.len();
        if total > MAX_REQUEST_BYTES {
            return None;
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end).ok()?;
                break;
            }
            if body.len() + size > MAX_REQUEST_BYTES {
                return None;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(length) = find("content-length") {
        let length: usize = length.parse().ok()?;
        if length > MAX_REQUEST_BYTES {
            return None;
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Received {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(port: u16, body: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "POST /hook?x=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn records_requests_and_answers_from_the_script() {
        let receiver = HttpReceiver::start().unwrap();
        receiver.reply_next(Reply::status(500).with_header("Retry-After", "1"));
        let first = post(receiver.port(), "{\"a\":1}");
        assert!(first.starts_with("HTTP/1.1 500 "), "{first}");
        assert!(first.contains("Retry-After: 1\r\n"), "{first}");
        let second = post(receiver.port(), "{\"a\":2}");
        assert!(second.starts_with("HTTP/1.1 200 OK"), "{second}");
        let requests = receiver.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/hook?x=1");
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        assert_eq!(requests[1].json(), serde_json::json!({"a": 2}));

        let mut stream = TcpStream::connect(("127.0.0.1", receiver.port())).unwrap();
        stream
            .write_all(
                b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            )
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let all = receiver
            .wait_until("the chunked request", Duration::from_secs(5), |r| {
                r.len() == 3
            })
            .unwrap();
        assert_eq!(all[2].body, b"abcde");
        assert!(
            receiver
                .wait_until("nothing", Duration::from_millis(50), |r| r.len() == 4)
                .is_err()
        );
    }
}
