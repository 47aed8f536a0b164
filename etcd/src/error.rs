//! The client's errors: each names the operation and, when one answered or failed, the
//! endpoint.

use std::fmt;

use crate::client::wire::LeaseId;

/// An etcd operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was given no endpoint.
    #[error("no etcd endpoint configured")]
    NoEndpoints,
    /// An endpoint is not an `http://` or `https://` URL with a host and nothing after the port.
    #[error("etcd endpoint {endpoint:?} is invalid: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the etcd HTTP client: {0}")]
    Build(String),
    /// An argument etcd would refuse or misread (e.g. a TTL of 0); nothing was sent.
    #[error("etcd {operation}: {reason}")]
    InvalidArgument {
        /// The operation.
        operation: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No endpoint gave an answer: each one's failure, in the order tried. Nothing was
    /// applied through an endpoint whose failure is a refused connection; after a timeout or
    /// a broken connection the request may still have been applied.
    #[error("etcd {operation}: no endpoint answered: {}", FailureList(.failures))]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// Each endpoint's failure.
        failures: Vec<EndpointFailure>,
    },
    /// A conditional write (txn) was sent and its answer lost (timeout, broken connection):
    /// it may or may not have been applied. It is not retried on another endpoint, where a
    /// compare-and-swap that did apply would be misreported as lost.
    #[error("etcd {operation} via {endpoint}: outcome unknown: {reason}")]
    OutcomeUnknown {
        /// The operation.
        operation: &'static str,
        /// The endpoint the request went to.
        endpoint: String,
        /// What happened (timeout after …, connection reset, …).
        reason: String,
    },
    /// etcd answered with an error (`{"error":…,"code":…}`).
    #[error("etcd {operation} via {endpoint}: {message} (gRPC code {code}, HTTP {status})")]
    Server {
        /// The operation.
        operation: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The gRPC status code (5 not found, 9 failed precondition, 14 unavailable, …).
        code: i64,
        /// etcd's message, bounded, control characters escaped.
        message: String,
    },
    /// The lease does not exist any more: it expired or was revoked.
    #[error("etcd {operation} via {endpoint}: lease {lease} has expired or was revoked")]
    LeaseExpired {
        /// The operation.
        operation: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// The lease.
        lease: LeaseId,
    },
    /// An HTTP error whose body is not etcd's error shape (not etcd, or a proxy).
    #[error("etcd {operation} via {endpoint}: HTTP {status}: {body}")]
    Http {
        /// The operation.
        operation: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, bounded and escaped.
        body: String,
    },
    /// The answer is larger than [`crate::ClientOptions::max_response_bytes`].
    #[error("etcd {operation} via {endpoint}: the answer exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The operation.
        operation: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// The limit.
        limit: usize,
    },
    /// The answer is not what etcd sends.
    #[error("etcd {operation} via {endpoint}: malformed answer: {reason}")]
    Malformed {
        /// The operation.
        operation: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether this says the lease is gone (expired or revoked).
    pub fn is_lease_expired(&self) -> bool {
        matches!(self, Error::LeaseExpired { .. })
    }
}

/// Why one endpoint gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// The endpoint.
    pub endpoint: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details (the transport's message), for people.
    pub detail: String,
}

/// What kind of failure an endpoint had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made (refused, unreachable, connect timeout): nothing sent.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke after the request was sent.
    Broken,
    /// etcd answered gRPC code 14 (no leader, request timed out, leader changed).
    ServerUnavailable,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Connect => "cannot connect",
            FailureKind::Timeout => "timed out",
            FailureKind::Broken => "connection broken",
            FailureKind::ServerUnavailable => "unavailable",
        })
    }
}

struct FailureList<'a>(&'a [EndpointFailure]);

impl fmt::Display for FailureList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, failure) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{}: {} ({})",
                failure.endpoint, failure.kind, failure.detail
            )?;
        }
        Ok(())
    }
}
