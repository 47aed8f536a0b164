//! The etcd v3 operations Palisade needs, one HTTP request each: single-key get, put and
//! delete, leases, and the three compare-and-swap transactions that leadership is built on.
//!
//! May call: `transport` (HTTP) and `wire` (JSON). Must never: log a value, panic on an
//! answer, or wait without a timeout.

pub(crate) mod transport;
pub mod wire;

use std::time::Duration;

use transport::{Retry, Transport};
use wire::{CompareTarget, KeepAlive, Malformed, TxnOp};
pub use wire::{KeyValue, LeaseId, MemberStatus};

use crate::error::Error;

/// The largest TTL etcd grants (`MaxLeaseTTL` in etcd's `lease/lessor.go`).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// Timeouts and limits of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one request to one endpoint may take, connect to last byte. A request that
    /// may go on to other endpoints can take up to this times the number of endpoints (but a
    /// refused connection fails at once). Default 2 s.
    pub request_timeout: Duration,
    /// How long making a connection may take. Default 1 s.
    pub connect_timeout: Duration,
    /// The largest answer accepted; a larger one is refused with [`Error::TooLarge`].
    /// Default 1 MiB (an answer about one key is under 1 KiB plus the value).
    pub max_response_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// The answer to [`Client::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Get {
    /// The store's revision when it answered.
    pub revision: i64,
    /// The key, if it exists.
    pub kv: Option<KeyValue>,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The TTL etcd granted, in seconds (it may raise a short one to its minimum).
    pub ttl_secs: i64,
}

/// What [`Client::time_to_live`] learnt about a lease that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Seconds left (0: under a second).
    pub remaining_secs: i64,
    /// The TTL it was granted.
    pub granted_secs: i64,
}

/// What [`Client::create_if_absent`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and is now created, at this revision (its create_revision).
    Created {
        /// The new key's create_revision (and mod_revision).
        revision: i64,
    },
    /// The key exists; nothing was written.
    Existing(KeyValue),
}

/// An etcd v3 client over the JSON gateway. Cheap to share (`&Client` from many tasks).
pub struct Client {
    transport: Transport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.transport.endpoints())
            .field("preferred", &self.transport.preferred())
            .finish_non_exhaustive()
    }
}

fn malformed(operation: &'static str, endpoint: String) -> impl FnOnce(Malformed) -> Error {
    move |Malformed(reason)| Error::Malformed {
        operation,
        endpoint,
        reason,
    }
}

impl Client {
    /// A client of the cluster whose members answer at `endpoints` (`http://127.0.0.1:2379`,
    /// …). Nothing is contacted yet.
    pub fn new(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, Error> {
        Ok(Client {
            transport: Transport::new(
                endpoints,
                options.connect_timeout,
                options.request_timeout,
                options.max_response_bytes,
            )?,
        })
    }

    /// The endpoints, normalized (no trailing slash).
    pub fn endpoints(&self) -> &[String] {
        self.transport.endpoints()
    }

    /// The endpoint the next request tries first: the last one that answered.
    pub fn current_endpoint(&self) -> &str {
        self.transport.preferred()
    }

    /// Reads `key` (linearizable: through the Raft leader's read index).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Get, Error> {
        const OP: &str = "get";
        let key = key.as_ref();
        let (endpoint, body) = self
            .transport
            .call(
                OP,
                "/v3/kv/range",
                &wire::range_request(key),
                Retry::Elsewhere,
            )
            .await?;
        let range = wire::parse_range(&body, key).map_err(malformed(OP, endpoint))?;
        Ok(Get {
            revision: range.header.revision,
            kv: range.kv,
        })
    }

    /// Writes `key` (attached to `lease` if given); the revision of the write.
    ///
    /// Retried on another endpoint after a lost answer: writing the same value twice leaves
    /// the same value (with a higher mod_revision).
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, Error> {
        const OP: &str = "put";
        let (endpoint, body) = self
            .call_with_lease(
                OP,
                "/v3/kv/put",
                &wire::put_request(key.as_ref(), value, lease),
                Retry::Elsewhere,
                lease,
            )
            .await?;
        let header = wire::parse_header(&body, OP).map_err(malformed(OP, endpoint))?;
        Ok(header.revision)
    }

    /// Deletes `key`; whether it existed (as far as the answering attempt saw).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        const OP: &str = "delete";
        let (endpoint, body) = self
            .transport
            .call(
                OP,
                "/v3/kv/deleterange",
                &wire::delete_request(key.as_ref()),
                Retry::Elsewhere,
            )
            .await?;
        let (_, deleted) = wire::parse_delete(&body).map_err(malformed(OP, endpoint))?;
        Ok(deleted > 0)
    }

    /// Grants a lease of `ttl_secs` seconds (1 to [`MAX_LEASE_TTL_SECS`]).
    ///
    /// Retried after a lost answer: a lease granted by a lost attempt is never used and
    /// expires on its own.
    pub async fn grant(&self, ttl_secs: i64) -> Result<Lease, Error> {
        const OP: &str = "lease grant";
        if !(1..=MAX_LEASE_TTL_SECS).contains(&ttl_secs) {
            return Err(Error::InvalidArgument {
                operation: OP,
                reason: format!("a TTL of {ttl_secs} s is outside 1..={MAX_LEASE_TTL_SECS}"),
            });
        }
        let (endpoint, body) = self
            .transport
            .call(
                OP,
                "/v3/lease/grant",
                &wire::grant_request(ttl_secs),
                Retry::Elsewhere,
            )
            .await?;
        let (id, ttl_secs) = wire::parse_grant(&body).map_err(malformed(OP, endpoint))?;
        Ok(Lease { id, ttl_secs })
    }

    /// Renews `lease` once; the TTL in seconds it has from the moment etcd renewed it.
    /// [`Error::LeaseExpired`] if it is gone.
    pub async fn keep_alive_once(&self, lease: LeaseId) -> Result<i64, Error> {
        const OP: &str = "lease keep-alive";
        let (endpoint, body) = self
            .transport
            .call(
                OP,
                "/v3/lease/keepalive",
                &wire::lease_request(lease),
                Retry::Elsewhere,
            )
            .await?;
        match wire::parse_keep_alive(&body, lease).map_err(malformed(OP, endpoint.clone()))? {
            KeepAlive::Renewed(ttl) => Ok(ttl),
            KeepAlive::Gone => Err(Error::LeaseExpired {
                operation: OP,
                endpoint,
                lease,
            }),
        }
    }

    /// Revokes `lease`, deleting the keys attached to it. [`Error::LeaseExpired`] if it was
    /// already gone.
    pub async fn revoke(&self, lease: LeaseId) -> Result<(), Error> {
        const OP: &str = "lease revoke";
        let (endpoint, body) = self
            .call_with_lease(
                OP,
                "/v3/lease/revoke",
                &wire::lease_request(lease),
                Retry::Elsewhere,
                Some(lease),
            )
            .await?;
        wire::parse_header(&body, OP).map_err(malformed(OP, endpoint))?;
        Ok(())
    }

    /// How long `lease` has left. [`Error::LeaseExpired`] if it is gone.
    pub async fn time_to_live(&self, lease: LeaseId) -> Result<LeaseTimeToLive, Error> {
        const OP: &str = "lease time-to-live";
        let (endpoint, body) = self
            .transport
            .call(
                OP,
                "/v3/lease/timetolive",
                &wire::lease_request(lease),
                Retry::Elsewhere,
            )
            .await?;
        match wire::parse_time_to_live(&body, lease).map_err(malformed(OP, endpoint.clone()))? {
            Some((remaining_secs, granted_secs)) => Ok(LeaseTimeToLive {
                remaining_secs,
                granted_secs,
            }),
            None => Err(Error::LeaseExpired {
                operation: OP,
                endpoint,
                lease,
            }),
        }
    }

    /// Creates `key` with `value` (attached to `lease`) if it does not exist: a txn comparing
    /// its create_revision with 0. If it exists, its current state, and nothing is written.
    ///
    /// Retried on another endpoint after a lost answer; if the lost attempt did create the
    /// key, the retry answers [`Created::Existing`] with this `value` and `lease` (which is how
    /// a caller with a lease of its own recognises its key).
    pub async fn create_if_absent(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Created, Error> {
        const OP: &str = "txn create-if-absent";
        let key = key.as_ref();
        let request = wire::txn_request(
            key,
            CompareTarget::Create,
            0,
            TxnOp::Put(wire::put_request(key, value, lease)),
        );
        let (endpoint, body) = self
            .call_with_lease(OP, "/v3/kv/txn", &request, Retry::Elsewhere, lease)
            .await?;
        let txn = wire::parse_txn(&body, key).map_err(malformed(OP, endpoint.clone()))?;
        match (txn.succeeded, txn.range) {
            (true, None) => Ok(Created::Created {
                revision: txn.header.revision,
            }),
            (false, Some(Some(existing))) => Ok(Created::Existing(existing)),
            // The compare said "exists" but the read in the same txn found nothing.
            _ => Err(Error::Malformed {
                operation: OP,
                endpoint,
                reason: "a txn answer contradicting itself".into(),
            }),
        }
    }

    /// Writes `key` only if its mod_revision is still `mod_revision`; whether it did.
    /// Not retried elsewhere once sent ([`Error::OutcomeUnknown`] instead).
    pub async fn put_if_mod_revision(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        mod_revision: i64,
        lease: Option<LeaseId>,
    ) -> Result<bool, Error> {
        const OP: &str = "txn put-if-mod-revision";
        let key = key.as_ref();
        let request = wire::txn_request(
            key,
            CompareTarget::Mod,
            mod_revision,
            TxnOp::Put(wire::put_request(key, value, lease)),
        );
        let (endpoint, body) = self
            .call_with_lease(OP, "/v3/kv/txn", &request, Retry::OnlyIfUnsent, lease)
            .await?;
        let txn = wire::parse_txn(&body, key).map_err(malformed(OP, endpoint))?;
        Ok(txn.succeeded)
    }

    /// Deletes `key` only if its mod_revision is still `mod_revision`; whether it did.
    /// Not retried elsewhere once sent ([`Error::OutcomeUnknown`] instead).
    pub async fn delete_if_mod_revision(
        &self,
        key: impl AsRef<[u8]>,
        mod_revision: i64,
    ) -> Result<bool, Error> {
        self.delete_if(key.as_ref(), CompareTarget::Mod, mod_revision)
            .await
    }

    /// Deletes `key` only if its create_revision is still `create_revision` (the same
    /// incarnation of the key, whatever was written to it since); whether it did.
    /// Not retried elsewhere once sent ([`Error::OutcomeUnknown`] instead).
    pub async fn delete_if_create_revision(
        &self,
        key: impl AsRef<[u8]>,
        create_revision: i64,
    ) -> Result<bool, Error> {
        self.delete_if(key.as_ref(), CompareTarget::Create, create_revision)
            .await
    }

    /// If `guard`'s create_revision is still `create_revision`, writes `put_key` = `value`
    /// (no lease) and deletes `guard`, in one txn; whether it did. A leader hands over with
    /// this: the handoff record appears exactly when its leader key goes, and only while the
    /// key is still the leader's own incarnation. Not retried elsewhere once sent
    /// ([`Error::OutcomeUnknown`] instead).
    pub async fn put_and_delete_if_create_revision(
        &self,
        guard: impl AsRef<[u8]>,
        create_revision: i64,
        put_key: impl AsRef<[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        const OP: &str = "txn put-and-delete-if-create-revision";
        if create_revision <= 0 {
            return Err(Error::InvalidArgument {
                operation: OP,
                reason: format!("revision {create_revision} is not a revision of an existing key"),
            });
        }
        let guard = guard.as_ref();
        let request = wire::txn_request_many(
            guard,
            CompareTarget::Create,
            create_revision,
            vec![
                TxnOp::Put(wire::put_request(put_key.as_ref(), value, None)),
                TxnOp::Delete(wire::delete_request(guard)),
            ],
        );
        let (endpoint, body) = self
            .transport
            .call(OP, "/v3/kv/txn", &request, Retry::OnlyIfUnsent)
            .await?;
        let succeeded = wire::parse_txn_succeeded(&body).map_err(malformed(OP, endpoint))?;
        Ok(succeeded)
    }

    async fn delete_if(
        &self,
        key: &[u8],
        target: CompareTarget,
        revision: i64,
    ) -> Result<bool, Error> {
        const OP: &str = "txn delete-if-revision";
        // A create_revision of 0 would match an absent key: "delete if absent" is not a
        // question anyone means to ask.
        if revision <= 0 {
            return Err(Error::InvalidArgument {
                operation: OP,
                reason: format!("revision {revision} is not a revision of an existing key"),
            });
        }
        let request = wire::txn_request(
            key,
            target,
            revision,
            TxnOp::Delete(wire::delete_request(key)),
        );
        let (endpoint, body) = self
            .transport
            .call(OP, "/v3/kv/txn", &request, Retry::OnlyIfUnsent)
            .await?;
        let txn = wire::parse_txn(&body, key).map_err(malformed(OP, endpoint))?;
        Ok(txn.succeeded && txn.deleted.unwrap_or(0) > 0)
    }

    /// The status of the member at `endpoint` (which need not be one of the client's), asked
    /// of that member only: for tests and diagnostics.
    pub async fn member_status(&self, endpoint: &str) -> Result<MemberStatus, Error> {
        const OP: &str = "member status";
        let body = self
            .transport
            .call_one(
                OP,
                endpoint,
                "/v3/maintenance/status",
                &serde_json::json!({}),
            )
            .await?;
        wire::parse_status(&body).map_err(malformed(OP, endpoint.to_string()))
    }

    /// [`Transport::call`], with etcd's "requested lease not found" (gRPC 5) turned into
    /// [`Error::LeaseExpired`].
    async fn call_with_lease(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
        retry: Retry,
        lease: Option<LeaseId>,
    ) -> Result<(String, Vec<u8>), Error> {
        match (
            self.transport.call(operation, path, body, retry).await,
            lease,
        ) {
            (
                Err(Error::Server {
                    endpoint,
                    code: 5,
                    message,
                    ..
                }),
                Some(lease),
            ) if message.contains("lease not found") => Err(Error::LeaseExpired {
                operation,
                endpoint,
                lease,
            }),
            (outcome, _) => outcome,
        }
    }
}
