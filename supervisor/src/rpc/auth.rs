//! Operator authentication (`docs/rpc.md` §2): one random challenge per
//! connection, an ed25519 signature over
//! [`auth_message`](palisade_wire::rpc::auth_message) bound to the TLS
//! session, and a delay after failures, counted per claimed operator and
//! per source.
//!
//! Invariants:
//! - a challenge is consumed by the first login attempt, right or wrong, so
//!   a signature is good for one attempt on one connection;
//! - an unknown operator and a bad signature fail the same way (no hint
//!   about which names exist);
//! - failures are counted per ([`Source`], claimed operator): a bastion (or
//!   a local user) that fails logins slows only further logins *from itself*
//!   for *that* name, never an operator coming through another bastion, nor
//!   another operator; each failure doubles the pause before that pair's
//!   next answer (1 s up to 60 s);
//! - the throttle's memory is bounded: names that are not configured
//!   operators share one bucket per source, a pair is forgotten
//!   [`FORGET_AFTER`] after its last failure, and past [`MAX_THROTTLED`]
//!   pairs the newcomers share one overflow bucket;
//! - no lock is held across an await: the wait is reserved under a
//!   short synchronous lock, then slept without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// A pair with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// At most this many (source, operator) pairs are remembered; past it, new
/// pairs share one overflow bucket until old ones are forgotten.
pub const MAX_THROTTLED: usize = 1024;

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

    /// Whether `operator` is a configured operator's name.
    fn is_configured(&self, operator: &str) -> bool {
        self.operators.iter().any(|o| o.name == operator)
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

/// Where a connection came from, as far as the server knows without
/// believing the peer: the listener it arrived on, and for the main
/// socket the peer's uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// Through this bastion: the connection arrived on that bastion's
    /// entry socket, where only its reverse forward ends.
    Bastion(Arc<str>),
    /// A process of this uid on the main control socket (`None`: the
    /// kernel did not say).
    Local(Option<u32>),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bastion(name) => write!(f, "bastion:{name}"),
            Source::Local(Some(uid)) => write!(f, "local:uid{uid}"),
            Source::Local(None) => f.write_str("local:unknown"),
        }
    }
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    /// A source and a claimed name: a configured operator's, or `None` for
    /// every other name (made-up names cannot grow the map).
    Pair(Source, Option<String>),
    /// Every pair that arrived while [`MAX_THROTTLED`] pairs were held.
    Overflow,
}

/// One key's failures.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No attempt on this key is answered before this (reserved by the
    /// attempts under way, so that parallel attempts queue up).
    not_before: Instant,
}

/// Failed-login accounting shared by every connection.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<ThrottleKey, Failures>>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThrottleKey, Failures>> {
        // Single inserts, updates and removals: a poisoned map is consistent.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Check one login attempt from `source`, consuming `challenge`
    /// whatever the outcome. Waits (holding no lock) until the delay
    /// earned by this source's earlier failures for this name has passed.
    pub async fn login(
        &self,
        operators: &Operators,
        validator: &str,
        source: &Source,
        challenge: &mut Challenge,
        channel_binding: &[u8; CHALLENGE_BYTES],
        params: &LoginParams,
    ) -> Result<Role, LoginFailure> {
        let issued = std::mem::replace(challenge, Challenge::Consumed);
        let known = operators.is_configured(&params.operator);
        let key = ThrottleKey::Pair(source.clone(), known.then(|| params.operator.clone()));
        let (key, start) = self.reserve(key);
        tokio::time::sleep_until(start).await;
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
        self.record(key, outcome.is_ok());
        outcome
    }

    /// When an attempt on `key` may be answered, and the key its outcome
    /// is recorded under. The next attempt on the same key is pushed one
    /// more delay back, as if this one failed, so parallel attempts do not
    /// all get through at once.
    fn reserve(&self, key: ThrottleKey) -> (ThrottleKey, Instant) {
        let now = Instant::now();
        let mut failures = self.lock();
        failures.retain(|_, failures| now < failures.last + FORGET_AFTER);
        let key = if failures.contains_key(&key) || failures.len() < MAX_THROTTLED {
            key
        } else {
            ThrottleKey::Overflow
        };
        let start = match failures.get_mut(&key) {
            None => now,
            Some(entry) => {
                let start = entry.not_before.max(now);
                entry.not_before = start + failure_delay(entry.count);
                start
            }
        };
        (key, start)
    }

    fn record(&self, key: ThrottleKey, succeeded: bool) {
        let now = Instant::now();
        let mut failures = self.lock();
        if succeeded {
            failures.remove(&key);
            return;
        }
        let key = if failures.contains_key(&key) || failures.len() < MAX_THROTTLED {
            key
        } else {
            ThrottleKey::Overflow
        };
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            not_before: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.not_before = entry.not_before.max(now + failure_delay(entry.count));
    }

    /// How many keys are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.lock().len()
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

    fn b1() -> Source {
        Source::Bastion("b1".into())
    }

    fn b2() -> Source {
        Source::Bastion("b2".into())
    }

    fn two_operators() -> (Operators, SigningKey, SigningKey) {
        let alice = SigningKey::from_bytes(&[7; 32]);
        let bob = SigningKey::from_bytes(&[8; 32]);
        let operators = Operators::new(vec![
            OperatorSettings {
                name: "alice".into(),
                key: alice.verifying_key(),
                role: Role::Operator,
            },
            OperatorSettings {
                name: "bob".into(),
                key: bob.verifying_key(),
                role: Role::Admin,
            },
        ]);
        (operators, alice, bob)
    }

    /// One attempt: `Ok` or not, and how long it took to be answered.
    async fn attempt(
        throttle: &LoginThrottle,
        operators: &Operators,
        source: &Source,
        operator: &str,
        key: &SigningKey,
    ) -> (bool, Duration) {
        let binding = [3; 32];
        let nonce = new_challenge();
        let mut challenge = Challenge::Issued(nonce);
        let params = LoginParams {
            operator: operator.into(),
            signature: BASE64.encode(
                key.sign(&auth_message("val-a", &nonce, &binding))
                    .to_bytes(),
            ),
        };
        let started = Instant::now();
        let outcome = throttle
            .login(
                operators,
                "val-a",
                source,
                &mut challenge,
                &binding,
                &params,
            )
            .await;
        (outcome.is_ok(), started.elapsed())
    }

    /// Issue 16, finding 3: failures are counted per (source, operator).
    /// Table: failures to earn first, then the attempt and its expected
    /// wait.
    #[tokio::test(start_paused = true)]
    async fn failures_slow_only_the_same_operator_from_the_same_source() {
        let (operators, alice, bob) = two_operators();
        let mallory = SigningKey::from_bytes(&[9; 32]);
        let (b1, b2) = (b1(), b2());
        let local = Source::Local(Some(1000));
        // (source, name, key) of three failures earned first; then
        // (source, name, key, succeeds, expected wait).
        type Attempt<'a> = (&'a Source, &'a str, &'a SigningKey);
        let cases: Vec<(Attempt, Attempt, bool, Duration)> = vec![
            // The same operator from the same source: slowed (2^(3-1) s).
            (
                (&b1, "alice", &mallory),
                (&b1, "alice", &alice),
                true,
                Duration::from_secs(4),
            ),
            // Alice through another bastion: not slowed.
            (
                (&b1, "alice", &mallory),
                (&b2, "alice", &alice),
                true,
                Duration::ZERO,
            ),
            // Another operator through the same bastion: not slowed.
            (
                (&b1, "alice", &mallory),
                (&b1, "bob", &bob),
                true,
                Duration::ZERO,
            ),
            // A local user is its own source.
            (
                (&b1, "alice", &mallory),
                (&local, "alice", &alice),
                true,
                Duration::ZERO,
            ),
            // Made-up names share one bucket per source...
            (
                (&b1, "eve", &mallory),
                (&b1, "trent", &mallory),
                false,
                Duration::from_secs(4),
            ),
            // ...which does not slow the real operators.
            (
                (&b1, "eve", &mallory),
                (&b1, "alice", &alice),
                true,
                Duration::ZERO,
            ),
        ];
        for (index, ((f_source, f_name, f_key), (source, name, key), succeeds, wait)) in
            cases.into_iter().enumerate()
        {
            let throttle = LoginThrottle::default();
            for _ in 0..3 {
                let (ok, _) = attempt(&throttle, &operators, f_source, f_name, f_key).await;
                assert!(!ok, "case {index}");
            }
            let (ok, waited) = attempt(&throttle, &operators, source, name, key).await;
            assert_eq!((ok, waited), (succeeds, wait), "case {index}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn made_up_names_do_not_grow_the_throttle_and_failures_are_forgotten() {
        let (operators, alice, _) = two_operators();
        let throttle = LoginThrottle::default();
        for index in 0..50 {
            let name = format!("made-up-{index}");
            attempt(&throttle, &operators, &b1(), &name, &alice).await;
        }
        assert_eq!(throttle.remembered(), 1);
        // Many sources, past the bound: the newcomers share the overflow.
        for uid in 0..(MAX_THROTTLED as u32 + 10) {
            throttle.record(ThrottleKey::Pair(Source::Local(Some(uid)), None), false);
        }
        assert_eq!(throttle.remembered(), MAX_THROTTLED + 1);
        // Forgotten after a quiet spell.
        tokio::time::advance(FORGET_AFTER + Duration::from_secs(60)).await;
        let (ok, waited) = attempt(&throttle, &operators, &b1(), "alice", &alice).await;
        assert!(ok);
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(throttle.remembered(), 0);
    }

    /// The wait holds no lock: while one source waits out its delay,
    /// another's login is answered at once.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_login_blocks_nobody_else() {
        let (operators, alice, _) = two_operators();
        let mallory = SigningKey::from_bytes(&[9; 32]);
        let throttle = LoginThrottle::default();
        for _ in 0..7 {
            attempt(&throttle, &operators, &b1(), "alice", &mallory).await;
        }
        let (b1, b2) = (b1(), b2());
        let slow = attempt(&throttle, &operators, &b1, "alice", &alice);
        let fast = attempt(&throttle, &operators, &b2, "alice", &alice);
        let ((slow_ok, slow_wait), (fast_ok, fast_wait)) = tokio::join!(slow, fast);
        assert!(slow_ok && fast_ok);
        assert_eq!(slow_wait, MAX_FAILURE_DELAY);
        assert_eq!(fast_wait, Duration::ZERO);
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
            .login(&operators, "val-a", &b1(), &mut challenge, &binding, &good)
            .await;
        assert_eq!(role, Ok(Role::Operator));
        assert_eq!(challenge, Challenge::Consumed);
        // The same signature again, on the same connection: refused.
        let replay = throttle
            .login(&operators, "val-a", &b1(), &mut challenge, &binding, &good)
            .await;
        assert_eq!(replay, Err(LoginFailure::NoChallenge));

        // Signed for another channel binding, another validator, or
        // garbage: refused, each slower than the last (the same operator
        // from the same source).
        let cases = [
            params(&key, &nonce, &[0; 32]),
            LoginParams {
                operator: "alice".into(),
                signature: BASE64.encode(
                    key.sign(&auth_message("val-b", &nonce, &binding))
                        .to_bytes(),
                ),
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
                .login(&operators, "val-a", &b1(), &mut challenge, &binding, &case)
                .await;
            assert!(outcome.is_err());
            assert_eq!(started.elapsed(), expected_wait);
            expected_wait *= 2;
        }
        // A success resets the delay (after waiting out the last one).
        let mut challenge = Challenge::Issued(nonce);
        throttle
            .login(&operators, "val-a", &b1(), &mut challenge, &binding, &good)
            .await
            .unwrap();
        let mut challenge = Challenge::Issued(nonce);
        let started = Instant::now();
        throttle
            .login(&operators, "val-a", &b1(), &mut challenge, &binding, &good)
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
