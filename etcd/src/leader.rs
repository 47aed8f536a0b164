//! Leadership on an etcd key with a lease, and the fencing token that orders leaders.
//!
//! A host campaigns by creating the leader key (e.g. `/palisade/<validator>/leader`) with its
//! host id as the value, attached to a lease of its own, in one txn that succeeds only if the
//! key is absent. The key lives as long as the lease: the leader keeps it alive with
//! keep-alives; if it stops (crash, partition), etcd expires the lease, deletes the key, and
//! another host's campaign can succeed.
//!
//! **Fencing token.** The key's create_revision. etcd's revision only grows, and each new
//! leader creates the key anew, so a later leader always holds a higher token than every
//! earlier one. Whatever a leader writes elsewhere (sign-state, backups) can carry its token,
//! and a reader can refuse anything carrying a lower one than it has seen.
//!
//! **Self-fencing contract.** etcd deletes the key when the lease expires *on the server*; the
//! old leader may not hear of it (it may be partitioned). So the leader keeps a local deadline
//! by its own monotonic clock that is never later than the server's expiry:
//!
//! - the deadline is `send time of the request + TTL etcd answered`, where the send time is
//!   taken *before* the grant or keep-alive request left. The server started the TTL after it
//!   received the request, so later than that by our clock (up to clock-rate drift, which the
//!   margin covers);
//! - the caller must stop signing before `deadline - margin` ([`Acquired::signing_deadline`],
//!   [`Acquired::may_sign`]), margin being how long it needs to stop plus clock-rate drift;
//! - a renewal that fails does not move the deadline, and one whose answer arrives at or after
//!   the signing deadline does not extend it either ([`LeaderError::RenewedTooLate`]): once
//!   the caller had to stop, it campaigns again, with a new token.
//!
//! This module holds no timers and runs no loop: the failover supervisor decides when to
//! renew; the pure arithmetic is in [`lease_deadline`] and [`renewed_deadline`].

use std::fmt;
use std::time::{Duration, Instant};

use crate::client::{Client, Created, KeyValue, LeaseId};
use crate::error::Error;

/// The leader key's create_revision: higher for every later leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub i64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Failures of a campaign, a renewal or a resignation.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// etcd failed or refused (including [`Error::LeaseExpired`]: the lease is gone).
    #[error(transparent)]
    Etcd(#[from] Error),
    /// The campaign's TTL and margin cannot work.
    #[error("invalid campaign for {key}: {reason}")]
    InvalidCampaign {
        /// The leader key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The answer came at or after the signing deadline: this leadership is over, whatever
    /// etcd says; the caller has stopped signing and must campaign again.
    #[error("leadership of {key}: the {what} answered {late_by:?} after the signing deadline")]
    TooLate {
        /// The leader key.
        key: String,
        /// "renewal" or "campaign".
        what: &'static str,
        /// How late.
        late_by: Duration,
    },
    /// The leader key is no longer ours (deleted or replaced by hand while our lease lived).
    #[error("leadership of {key}: the key is now held by {holder:?}")]
    Deposed {
        /// The leader key.
        key: String,
        /// Who holds it now, if anyone.
        holder: Option<Holder>,
    },
}

/// What to campaign for, validated.
#[derive(Clone, Debug)]
pub struct Campaign {
    key: String,
    host_id: String,
    ttl_secs: i64,
    margin: Duration,
}

impl Campaign {
    /// A campaign for `key` as `host_id`, with leases of `ttl` (whole seconds, as etcd counts)
    /// and a signing `margin` shorter than the TTL.
    pub fn new(
        key: impl Into<String>,
        host_id: impl Into<String>,
        ttl: Duration,
        margin: Duration,
    ) -> Result<Campaign, LeaderError> {
        let key = key.into();
        let host_id = host_id.into();
        let invalid = |reason: String| LeaderError::InvalidCampaign {
            key: key.clone(),
            reason,
        };
        if key.is_empty() || host_id.is_empty() {
            return Err(invalid("the key and the host id must not be empty".into()));
        }
        if ttl.subsec_nanos() != 0 || ttl.is_zero() {
            return Err(invalid(format!(
                "the TTL {ttl:?} is not a whole number of seconds"
            )));
        }
        let ttl_secs = i64::try_from(ttl.as_secs())
            .ok()
            .filter(|&secs| secs <= crate::client::MAX_LEASE_TTL_SECS)
            .ok_or_else(|| invalid(format!("the TTL {ttl:?} is too long")))?;
        if margin >= ttl {
            return Err(invalid(format!(
                "the margin {margin:?} leaves nothing of the TTL {ttl:?}"
            )));
        }
        Ok(Campaign {
            key,
            host_id,
            ttl_secs,
            margin,
        })
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Tries once to become leader: grants a lease, then creates the key if it is absent.
    /// If another holds it, says who (and revokes the lease it granted, best effort).
    pub async fn try_acquire(&self, client: &Client) -> Result<Acquisition, LeaderError> {
        let sent = Instant::now();
        let lease = client.grant(self.ttl_secs).await?;
        let expires_at_local =
            lease_deadline(sent, lease.ttl_secs).ok_or_else(|| LeaderError::InvalidCampaign {
                key: self.key.clone(),
                reason: format!("etcd granted a TTL of {} s", lease.ttl_secs),
            })?;
        let created = client
            .create_if_absent(&self.key, self.host_id.as_bytes(), Some(lease.id))
            .await;
        let token = match created {
            Ok(Created::Created { revision }) => FencingToken(revision),
            // A lost answer retried elsewhere: the first attempt did create it, with our lease.
            Ok(Created::Existing(kv)) if kv.lease == Some(lease.id) => {
                FencingToken(kv.create_revision)
            }
            Ok(Created::Existing(kv)) => {
                self.revoke_quietly(client, lease.id).await;
                return Ok(Acquisition::HeldBy(Holder::from(&kv)));
            }
            Err(error) => {
                self.revoke_quietly(client, lease.id).await;
                return Err(error.into());
            }
        };
        let acquired = Acquired {
            key: self.key.clone(),
            host_id: self.host_id.clone(),
            lease: lease.id,
            ttl_secs: lease.ttl_secs,
            token,
            expires_at_local,
            margin: self.margin,
        };
        let now = Instant::now();
        if now >= acquired.signing_deadline() {
            let late_by = now - acquired.signing_deadline();
            let _ = resign(client, acquired).await;
            return Err(LeaderError::TooLate {
                key: self.key.clone(),
                what: "campaign",
                late_by,
            });
        }
        tracing::debug!(key = %self.key, %token, lease = %lease.id, ttl_secs = lease.ttl_secs, "leadership acquired");
        Ok(Acquisition::Acquired(acquired))
    }

    async fn revoke_quietly(&self, client: &Client, lease: LeaseId) {
        if let Err(error) = client.revoke(lease).await {
            // It expires on its own; nothing is attached to it.
            tracing::debug!(key = %self.key, %lease, %error, "revoking an unused lease failed");
        }
    }
}

/// The outcome of [`Campaign::try_acquire`].
#[derive(Debug)]
pub enum Acquisition {
    /// This host is leader.
    Acquired(Acquired),
    /// Another holds the key (possibly this very host id under an older lease: after a
    /// restart, a host waits for its old lease to expire like everyone else).
    HeldBy(Holder),
}

/// Who holds a leader key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's host id (the key's value, lossily UTF-8).
    pub host_id: String,
    /// Its fencing token (the key's create_revision).
    pub token: FencingToken,
    /// Its lease; `None` if the key was written without one (by hand: it never expires).
    pub lease: Option<LeaseId>,
}

impl From<&KeyValue> for Holder {
    fn from(kv: &KeyValue) -> Holder {
        Holder {
            host_id: String::from_utf8_lossy(&kv.value).into_owned(),
            token: FencingToken(kv.create_revision),
            lease: kv.lease,
        }
    }
}

/// Leadership held: the lease, the token and the local deadline.
#[derive(Debug)]
pub struct Acquired {
    key: String,
    host_id: String,
    lease: LeaseId,
    ttl_secs: i64,
    token: FencingToken,
    expires_at_local: Instant,
    margin: Duration,
}

impl Acquired {
    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This host's id, the key's value.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The lease the key is attached to.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The TTL etcd granted, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// The fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The conservative local instant of the lease's expiry: never later than etcd's.
    pub fn expires_at_local(&self) -> Instant {
        self.expires_at_local
    }

    /// When signing must have stopped: `expires_at_local - margin`.
    pub fn signing_deadline(&self) -> Instant {
        signing_deadline(self.expires_at_local, self.margin)
    }

    /// Whether this host may still sign at `now`.
    pub fn may_sign(&self, now: Instant) -> bool {
        now < self.signing_deadline()
    }
}

/// Renews the lease once (keep-alive), then checks that the key is still ours; the new
/// `expires_at_local`, also stored in `acquired`. On any error the deadline stays as it was.
pub async fn renew(client: &Client, acquired: &mut Acquired) -> Result<Instant, LeaderError> {
    let sent = Instant::now();
    let ttl_secs = client.keep_alive_once(acquired.lease).await?;
    let holder = client.get(&acquired.key).await?.kv;
    if holder.as_ref().map(|kv| kv.create_revision) != Some(acquired.token.0) {
        return Err(LeaderError::Deposed {
            key: acquired.key.clone(),
            holder: holder.as_ref().map(Holder::from),
        });
    }
    let received = Instant::now();
    let renewed = renewed_deadline(
        acquired.expires_at_local,
        acquired.margin,
        sent,
        received,
        ttl_secs,
    )
    .map_err(|late_by| LeaderError::TooLate {
        key: acquired.key.clone(),
        what: "renewal",
        late_by,
    })?;
    acquired.expires_at_local = renewed;
    Ok(renewed)
}

/// Gives leadership up at once: deletes the key if it is still this incarnation (its
/// create_revision is our token), then revokes the lease. Whether the key was still ours.
/// The caller must have stopped signing before calling.
pub async fn resign(client: &Client, acquired: Acquired) -> Result<bool, LeaderError> {
    let deleted = client
        .delete_if_create_revision(&acquired.key, acquired.token.0)
        .await?;
    match client.revoke(acquired.lease).await {
        Ok(()) => {}
        Err(error) if error.is_lease_expired() => {}
        Err(error) => return Err(error.into()),
    }
    tracing::debug!(key = %acquired.key, token = %acquired.token, deleted, "leadership resigned");
    Ok(deleted)
}

/// Who holds `key` now (a linearizable read), if anyone.
pub async fn current_leader(client: &Client, key: &str) -> Result<Option<Holder>, Error> {
    Ok(client.get(key).await?.kv.as_ref().map(Holder::from))
}

/// The conservative local expiry of a lease granted or renewed for `ttl_secs` by a request
/// sent at `sent`: `sent + ttl`. `None` for a TTL that is not positive (the lease is gone).
pub fn lease_deadline(sent: Instant, ttl_secs: i64) -> Option<Instant> {
    let ttl = Duration::from_secs(u64::try_from(ttl_secs).ok().filter(|&s| s > 0)?);
    sent.checked_add(ttl)
}

/// `expires_at_local - margin`, or `expires_at_local` itself if that would precede the
/// clock's origin (it cannot in practice: margins are shorter than TTLs).
pub fn signing_deadline(expires_at_local: Instant, margin: Duration) -> Instant {
    expires_at_local
        .checked_sub(margin)
        .unwrap_or(expires_at_local)
}

/// The expiry after a renewal sent at `sent` whose answer (`ttl_secs`) arrived at `received`,
/// given the current expiry and margin. `Err(how late)` if the answer arrived at or after
/// the current signing deadline, or said the lease is gone (`Err(ZERO)` then, though
/// `keep_alive_once` reports that first). Never earlier than the current expiry.
pub fn renewed_deadline(
    current: Instant,
    margin: Duration,
    sent: Instant,
    received: Instant,
    ttl_secs: i64,
) -> Result<Instant, Duration> {
    let stop_by = signing_deadline(current, margin);
    if received >= stop_by {
        return Err(received - stop_by);
    }
    let renewed = lease_deadline(sent, ttl_secs).ok_or(Duration::ZERO)?;
    Ok(renewed.max(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn deadlines_count_from_the_send_time() {
        let t0 = Instant::now();
        assert_eq!(lease_deadline(t0, 5), Some(t0 + 5 * S));
        assert_eq!(lease_deadline(t0, 0), None);
        assert_eq!(lease_deadline(t0, -1), None);
        assert_eq!(signing_deadline(t0 + 5 * S, 2 * S), t0 + 3 * S);
    }

    #[test]
    fn renewals_table() {
        let t0 = Instant::now();
        let current = t0 + 10 * S; // signing deadline t0 + 8 s with a 2 s margin
        let margin = 2 * S;
        // (name, sent, received, ttl, expected)
        type Case = (
            &'static str,
            Duration,
            Duration,
            i64,
            Result<Instant, Duration>,
        );
        let cases: &[Case] = &[
            (
                "prompt answer: send time + TTL",
                5 * S,
                5 * S + 30 * MS,
                10,
                Ok(t0 + 15 * S),
            ),
            (
                "slow answer still before the deadline: from the send time, not the answer",
                5 * S,
                7 * S,
                10,
                Ok(t0 + 15 * S),
            ),
            (
                "answer exactly at the signing deadline extends nothing",
                5 * S,
                8 * S,
                10,
                Err(Duration::ZERO),
            ),
            ("answer after it extends nothing", 5 * S, 9 * S, 10, Err(S)),
            (
                "answer after the expiry itself",
                5 * S,
                11 * S,
                10,
                Err(3 * S),
            ),
            (
                "a shorter TTL never moves the deadline back",
                1 * S,
                1 * S + MS,
                2,
                Ok(current),
            ),
            ("a lease gone", 5 * S, 5 * S + MS, 0, Err(Duration::ZERO)),
        ];
        for (name, sent, received, ttl, expected) in cases {
            assert_eq!(
                renewed_deadline(current, margin, t0 + *sent, t0 + *received, *ttl),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn campaigns_need_whole_second_ttls_longer_than_the_margin() {
        let ok = Campaign::new("/palisade/v/leader", "host-a", 5 * S, 2 * S).unwrap();
        assert_eq!((ok.key(), ok.ttl_secs), ("/palisade/v/leader", 5));
        for (ttl, margin) in [
            (5 * S, 5 * S),
            (5 * S, 6 * S),
            (Duration::from_millis(1500), MS),
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_secs(u64::MAX), S),
        ] {
            assert!(
                Campaign::new("/k", "h", ttl, margin).is_err(),
                "{ttl:?} {margin:?}"
            );
        }
        assert!(Campaign::new("", "h", 5 * S, S).is_err());
        assert!(Campaign::new("/k", "", 5 * S, S).is_err());
    }

    #[test]
    fn may_sign_stops_before_the_margin() {
        let t0 = Instant::now();
        let acquired = Acquired {
            key: "/k".into(),
            host_id: "h".into(),
            lease: LeaseId(1),
            ttl_secs: 5,
            token: FencingToken(7),
            expires_at_local: t0 + 5 * S,
            margin: S,
        };
        assert!(acquired.may_sign(t0));
        assert!(acquired.may_sign(t0 + 4 * S - MS));
        assert!(!acquired.may_sign(t0 + 4 * S));
        assert!(FencingToken(8) > acquired.token());
    }
}
