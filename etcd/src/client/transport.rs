//! One JSON POST to one of the endpoints: timeouts, the size bound, failover between
//! endpoints, and turning HTTP answers into bodies or typed errors. Knows nothing of the
//! messages (that is `wire`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire;
use crate::error::{EndpointFailure, Error, FailureKind};

/// When a request may go on to the next endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// After any failure to get an answer, and after etcd's "unavailable" (gRPC 14): the
    /// operation is a read, or applying it twice is the same as applying it once.
    Elsewhere,
    /// Only when the connection could not be made (so nothing was sent): a compare-and-swap,
    /// whose second attempt would misreport a first that was applied.
    OnlyIfUnsent,
}

/// Connection settings and the endpoint list.
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last: the first one tried.
    preferred: AtomicUsize,
    request_timeout: Duration,
    max_response_bytes: usize,
}

/// How one attempt ended without a body.
enum Attempt {
    /// No answer; `sent` tells whether the request may have reached the server.
    NoAnswer {
        kind: FailureKind,
        detail: String,
        sent: bool,
    },
    /// An answer that ends the operation (etcd error, garbage, too large).
    Final(Error),
}

impl Transport {
    pub(crate) fn new(
        endpoints: Vec<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Transport, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = endpoints
            .into_iter()
            .map(|endpoint| normalize(&endpoint))
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            // etcd traffic goes straight to the members: never through an `HTTP_PROXY` from
            // the environment, never to wherever a redirect points.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            // A fresh connection per request: on a pooled one, a member that died since
            // shows as "connection closed before message completed", which cannot be told
            // from a crash after the request arrived, so a compare-and-swap could not move on
            // to the next member. A refused connect is unambiguous; a loopback or LAN
            // handshake per request is cheap at Palisade's rate (about one per second).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| Error::Build(e.to_string()))?;
        Ok(Transport {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            request_timeout,
            max_response_bytes,
        })
    }

    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint the next request goes to first.
    pub(crate) fn preferred(&self) -> &str {
        let index = self.preferred.load(Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[index]
    }

    /// POSTs `body` to `path` on the preferred endpoint, then on the others in turn as
    /// `retry` allows; the answering endpoint and the body of its 2xx answer.
    pub(crate) async fn call(
        &self,
        operation: &'static str,
        path: &str,
        body: &Value,
        retry: Retry,
    ) -> Result<(String, Vec<u8>), Error> {
        let body = wire::to_body(body);
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % count;
        let mut failures = Vec::new();
        for offset in 0..count {
            let index = (first + offset) % count;
            let endpoint = &self.endpoints[index];
            match self.attempt(operation, endpoint, path, &body).await {
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), answer));
                }
                Err(Attempt::Final(error)) => {
                    // It answered: stay with it.
                    self.preferred.store(index, Ordering::Relaxed);
                    return Err(error);
                }
                Err(Attempt::NoAnswer { kind, detail, sent }) => {
                    // The next request starts with the next endpoint.
                    self.preferred.store((index + 1) % count, Ordering::Relaxed);
                    if sent && retry == Retry::OnlyIfUnsent {
                        return Err(Error::OutcomeUnknown {
                            operation,
                            endpoint: endpoint.clone(),
                            reason: format!("{kind} ({detail})"),
                        });
                    }
                    failures.push(EndpointFailure {
                        endpoint: endpoint.clone(),
                        kind,
                        detail,
                    });
                }
            }
        }
        Err(Error::Unavailable {
            operation,
            failures,
        })
    }

    /// POSTs to `path` on `endpoint` only, for diagnostics of one member.
    pub(crate) async fn call_one(
        &self,
        operation: &'static str,
        endpoint: &str,
        path: &str,
        body: &Value,
    ) -> Result<Vec<u8>, Error> {
        let endpoint = normalize(endpoint)?;
        match self
            .attempt(operation, &endpoint, path, &wire::to_body(body))
            .await
        {
            Ok(answer) => Ok(answer),
            Err(Attempt::Final(error)) => Err(error),
            Err(Attempt::NoAnswer { kind, detail, .. }) => Err(Error::Unavailable {
                operation,
                failures: vec![EndpointFailure {
                    endpoint,
                    kind,
                    detail,
                }],
            }),
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        endpoint: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Attempt> {
        let started = Instant::now();
        // reqwest's own timeout covers connect, send and the body; the outer one also bounds
        // whatever it might not (belt and braces on the one thing that must never hang).
        let exchange = self.exchange(operation, endpoint, path, body);
        let outcome = match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Attempt::NoAnswer {
                kind: FailureKind::Timeout,
                detail: format!("no answer within {:?}", self.request_timeout),
                sent: true,
            }),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(answer) => tracing::debug!(
                operation,
                endpoint,
                elapsed_ms,
                bytes = answer.len(),
                "etcd answered"
            ),
            Err(Attempt::NoAnswer { kind, detail, .. }) => tracing::debug!(
                operation,
                endpoint,
                elapsed_ms,
                %kind,
                detail,
                "etcd gave no answer"
            ),
            Err(Attempt::Final(error)) => {
                tracing::debug!(operation, endpoint, elapsed_ms, %error, "etcd refused")
            }
        }
        outcome
    }

    async fn exchange(
        &self,
        operation: &'static str,
        endpoint: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Attempt> {
        let no_answer = |error: reqwest::Error| {
            let (kind, sent) = if error.is_connect() {
                (FailureKind::Connect, false)
            } else if error.is_timeout() {
                (FailureKind::Timeout, true)
            } else {
                (FailureKind::Broken, true)
            };
            Attempt::NoAnswer {
                kind,
                detail: error_chain(&error),
                sent,
            }
        };
        let mut response = self
            .http
            .post(format!("{endpoint}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(no_answer)?;
        let status = response.status();
        let too_large = || {
            Attempt::Final(Error::TooLarge {
                operation,
                endpoint: endpoint.to_string(),
                limit: self.max_response_bytes,
            })
        };
        if response
            .content_length()
            .is_some_and(|length| length > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(no_answer)? {
            if answer.len() + chunk.len() > self.max_response_bytes {
                return Err(too_large());
            }
            answer.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(answer);
        }
        let endpoint = endpoint.to_string();
        Err(match wire::parse_error(&answer) {
            // "no leader", "request timed out", "leader changed": another member may do
            // better (the caller decides whether the request may be repeated).
            Some(error) if error.code == 14 => Attempt::NoAnswer {
                kind: FailureKind::ServerUnavailable,
                detail: format!("HTTP {}: {}", status.as_u16(), error.message),
                // A server-side timeout may still apply the request later.
                sent: true,
            },
            Some(error) => Attempt::Final(Error::Server {
                operation,
                endpoint,
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            }),
            None => Attempt::Final(Error::Http {
                operation,
                endpoint,
                status: status.as_u16(),
                body: wire::bounded(&String::from_utf8_lossy(&answer)),
            }),
        })
    }
}

/// reqwest's message with its causes ("error sending request: … : Connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `http://host:port` (or https), without a trailing slash; an error for anything else.
fn normalize(endpoint: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("an endpoint has no path, query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in an endpoint"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_urls() {
        assert_eq!(
            normalize("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize("https://etcd-1.example:2379").unwrap(),
            "https://etcd-1.example:2379"
        );
        for bad in [
            "127.0.0.1:2379",
            "unix:///run/etcd.sock",
            "http://127.0.0.1:2379/v3",
            "http://user:pw@127.0.0.1:2379",
            "http://127.0.0.1:2379?x=1",
            "",
        ] {
            assert!(
                matches!(normalize(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn no_endpoints_is_an_error() {
        assert!(matches!(
            Transport::new(
                Vec::new(),
                Duration::from_secs(1),
                Duration::from_secs(1),
                1
            ),
            Err(Error::NoEndpoints)
        ));
    }
}
