//! Operator authentication (`docs/rpc.md` §2): one random challenge per
//! connection, an ed25519 signature over
//! [`auth_message`](palisade_wire::rpc::auth_message) bound to the TLS
//! session, and a global delay after failures.
//!
//! Invariants:
//! - a challenge is consumed by the first login attempt, right or wrong, so
//!   a signature is good for one attempt on one connection;
//! - an unknown operator and a bad signature fail the same way (no hint
//!   about which names exist);
//! - login attempts are answered one at a time, each failure doubling the
//!   pause before the next answer (1 s up to 60 s), so guessing is slow
//!   whatever the number of connections.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use palisade_wire::rpc::{CHALLENGE_BYTES, Role, auth_message};
use tokio::time::Instant;

use crate::config::OperatorSettings;

/// The first pause after a failed login.
pub const FIRST_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// The longest pause after failed logins.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(60);

/// The pause before answering a login after `failures` consecutive failed ones.
pub fn failure_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    FIRST_FAILURE_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_FAILURE_DELAY)
}

/// The configured operators.
#[derive(Debug, Clone, Default)]
pub struct Operators {
    operators: Vec<OperatorSettings>,
}

impl Operators {
    pub fn new(operators: Vec<OperatorSettings>) -> Operators {
        Operators { operators }
    }

    /// The role of `operator` if `signature` signs `message` with its key.
    fn verify(&self, operator: &str, message: &[u8], signature: &[u8]) -> Option<Role> {
        let settings = self.operators.iter().find(|o| o.name == operator)?;
        let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
        settings
            .key
            .verify_strict(message, &signature)
            .ok()
            .map(|()| settings.role)
    }
}

/// Failed-login accounting shared by every connection.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    state: tokio::sync::Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    failures: u32,
    last_failure: Option<Instant>,
}

/// Where a connection is in the challenge–response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    NotIssued,
    Issued([u8; CHALLENGE_BYTES]),
    /// A login was attempted: no further attempt on this connection.
    Consumed,
}

/// `auth.login` params (the contract's type).
pub use palisade_wire::rpc::params::AuthLoginParams as LoginParams;

/// Why a login failed (for the log; the peer only learns "refused").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    NoChallenge,
    BadSignatureEncoding,
    Refused,
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoginFailure::NoChallenge => "no challenge issued on this connection, or reused",
            LoginFailure::BadSignatureEncoding => "signature is not base64 of 64 bytes",
            LoginFailure::Refused => "unknown operator or wrong signature",
        })
    }
}

impl LoginThrottle {
    /// Check one login attempt, consuming `challenge` whatever the outcome.
    /// Waits, holding the throttle, until the delay earned by earlier
    /// failures has passed since the last one.
    pub async fn login(
        &self,
        operators: &Operators,
        validator: &str,
        challenge: &mut Challenge,
        channel_binding: &[u8; CHALLENGE_BYTES],
        params: &LoginParams,
    ) -> Result<Role, LoginFailure> {
        let issued = std::mem::replace(challenge, Challenge::Consumed);
        let mut state = self.state.lock().await;
        if let Some(last) = state.last_failure {
            tokio::time::sleep_until(last + failure_delay(state.failures)).await;
        }
        let outcome = match issued {
            Challenge::Issued(nonce) => match BASE64.decode(params.signature.as_bytes()) {
                Ok(signature) => operators
                    .verify(
                        &params.operator,
                        &auth_message(validator, &nonce, channel_binding),
                        &signature,
                    )
                    .ok_or(LoginFailure::Refused),
                Err(_) => Err(LoginFailure::BadSignatureEncoding),
            },
            Challenge::NotIssued | Challenge::Consumed => Err(LoginFailure::NoChallenge),
        };
        match outcome {
            Ok(_) => *state = ThrottleState::default(),
            Err(_) => {
                state.failures = state.failures.saturating_add(1);
                state.last_failure = Some(Instant::now());
            }
        }
        outcome
    }
}

/// A fresh challenge.
pub fn new_challenge() -> [u8; CHALLENGE_BYTES] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn failure_delay_doubles_from_one_second_to_a_minute() {
        let cases = [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (1000, 60)];
        for (failures, seconds) in cases {
            assert_eq!(
                failure_delay(failures),
                Duration::from_secs(seconds),
                "{failures}"
            );
        }
    }

    fn operators() -> (Operators, SigningKey) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let operators = Operators::new(vec![OperatorSettings {
            name: "alice".into(),
            key: key.verifying_key(),
            role: Role::Operator,
        }]);
        (operators, key)
    }

    fn params(key: &SigningKey, nonce: &[u8; 32], binding: &[u8; 32]) -> LoginParams {
        LoginParams {
            operator: "alice".into(),
            signature: BASE64.encode(key.sign(&auth_message("val-a", nonce, binding)).to_bytes()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_challenge_is_good_for_one_attempt_and_failures_slow_the_next_answer() {
        let (operators, key) = operators();
        let throttle = LoginThrottle::default();
        let binding = [3; 32];
        let nonce = new_challenge();

        let mut challenge = Challenge::Issued(nonce);
        let good = params(&key, &nonce, &binding);
        let role = throttle
            .login(&operators, "val-a", &mut challenge, &binding, &good)
            .await;
        assert_eq!(role, Ok(Role::Operator));
        assert_eq!(challenge, Challenge::Consumed);
        // The same signature again, on the same connection: refused.
        let replay = throttle
            .login(&operators, "val-a", &mut challenge, &binding, &good)
            .await;
        assert_eq!(replay, Err(LoginFailure::NoChallenge));

        // Signed for another channel binding, another validator, another
        // operator name, or garbage: refused, each slower than the last.
        let cases = [
            params(&key, &nonce, &[0; 32]),
            LoginParams {
                operator: "mallory".into(),
                ..params(&key, &nonce, &binding)
            },
            LoginParams {
                operator: "alice".into(),
                signature: "not base64!".into(),
            },
        ];
        let mut expected_wait = failure_delay(1);
        for case in cases {
            let mut challenge = Challenge::Issued(nonce);
            let started = Instant::now();
            let outcome = throttle
                .login(&operators, "val-a", &mut challenge, &binding, &case)
                .await;
            assert!(outcome.is_err());
            assert_eq!(started.elapsed(), expected_wait);
            expected_wait *= 2;
        }
        // A success resets the delay (after waiting out the last one).
        let mut challenge = Challenge::Issued(nonce);
        throttle
            .login(&operators, "val-a", &mut challenge, &binding, &good)
            .await
            .unwrap();
        let mut challenge = Challenge::Issued(nonce);
        let started = Instant::now();
        throttle
            .login(&operators, "val-a", &mut challenge, &binding, &good)
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
