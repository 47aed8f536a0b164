//! The supervisor's control socket: the parts other binaries rely on today.
//!
//! The supervisor listens on a Unix socket (`[rpc] socket`); the tunnels
//! publish it on every bastion with an SSH reverse Unix-socket forward. On
//! every new connection the supervisor first writes one line, the
//! [`Greeting`]: a JSON object terminated by `\n`, at most
//! [`MAX_GREETING_BYTES`] bytes including the newline. It carries no secret
//! and no state, only who is answering, so a bastion's health check can
//! prove the whole path (bastion socket → sshd → tunnel → supervisor) is
//! alive without any credentials.
//!
//! The request protocol that follows the greeting (JSON-RPC, TLS and
//! operator authentication) is specified separately; a client that only
//! wants liveness reads the greeting and closes the connection.

use serde::{Deserialize, Serialize};

/// Value of [`Greeting::service`].
pub const SERVICE: &str = "palisade-supervisor";

/// Version of the control protocol announced in the greeting.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest greeting line, newline included. A reader gives up after this
/// many bytes without a newline.
pub const MAX_GREETING_BYTES: usize = 1024;

/// First line the supervisor writes on every control-socket connection.
///
/// ```json
/// {"service":"palisade-supervisor","protocol":1,"version":"0.1.0","validator":"val-a"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// Always [`SERVICE`].
    pub service: String,
    /// [`PROTOCOL_VERSION`] of the answering supervisor.
    pub protocol: u32,
    /// The supervisor's release (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The validator's name (`[rpc] name`, default the host name), so a
    /// bastion serving several validators can tell it reached the right one.
    pub validator: String,
}

/// Why a greeting line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GreetingError {
    /// More than [`MAX_GREETING_BYTES`] without a newline.
    TooLong,
    /// Not a JSON greeting object.
    Malformed(String),
    /// Valid JSON from something other than a palisade supervisor.
    WrongService(String),
}

impl std::fmt::Display for GreetingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GreetingError::TooLong => {
                write!(f, "greeting longer than {MAX_GREETING_BYTES} bytes")
            }
            GreetingError::Malformed(reason) => write!(f, "malformed greeting: {reason}"),
            GreetingError::WrongService(service) => {
                write!(f, "peer is {service:?}, not {SERVICE:?}")
            }
        }
    }
}

impl std::error::Error for GreetingError {}

impl Greeting {
    /// The greeting of this build for `validator`.
    pub fn new(validator: impl Into<String>, version: impl Into<String>) -> Greeting {
        Greeting {
            service: SERVICE.to_string(),
            protocol: PROTOCOL_VERSION,
            version: version.into(),
            validator: validator.into(),
        }
    }

    /// The line as written on the socket, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("greeting serializes");
        line.push(b'\n');
        line
    }

    /// Parse one line (with or without its trailing newline).
    pub fn parse(line: &[u8]) -> Result<Greeting, GreetingError> {
        if line.len() > MAX_GREETING_BYTES {
            return Err(GreetingError::TooLong);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let greeting: Greeting = serde_json::from_slice(line)
            .map_err(|error| GreetingError::Malformed(error.to_string()))?;
        if greeting.service != SERVICE {
            return Err(GreetingError::WrongService(greeting.service));
        }
        Ok(greeting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trips_and_rejects_bad_lines() {
        let greeting = Greeting::new("val-a", "0.1.0");
        let line = greeting.to_line();
        assert_eq!(
            line,
            b"{\"service\":\"palisade-supervisor\",\"protocol\":1,\"version\":\"0.1.0\",\"validator\":\"val-a\"}\n"
        );
        assert_eq!(Greeting::parse(&line), Ok(greeting));
        type Expect = fn(&GreetingError) -> bool;
        let cases: [(&[u8], Expect); 4] = [
            (b"", |e| matches!(e, GreetingError::Malformed(_))),
            (b"SSH-2.0-OpenSSH_9.2\n", |e| {
                matches!(e, GreetingError::Malformed(_))
            }),
            (
                b"{\"service\":\"other\",\"protocol\":1,\"version\":\"1\",\"validator\":\"v\"}\n",
                |e| matches!(e, GreetingError::WrongService(_)),
            ),
            (&[b'x'; MAX_GREETING_BYTES + 1], |e| {
                matches!(e, GreetingError::TooLong)
            }),
        ];
        for (line, expected) in cases {
            let error = Greeting::parse(line).unwrap_err();
            assert!(
                expected(&error),
                "{:?}: {error:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
