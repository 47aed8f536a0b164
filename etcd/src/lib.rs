//! An etcd v3 client and a leadership primitive with a fencing token: the groundwork of
//! failover (a standby host takes over when the leader's etcd lease expires).
//!
//! **Why the JSON gateway.** etcd serves its v3 API over gRPC and, on the same port, as JSON
//! through grpc-gateway (`/v3/kv/range`, `/v3/lease/grant`, …; the shapes are in
//! [`client::wire`]). The `etcd-client` crate speaks gRPC, which brings tonic, prost and a
//! build-time `protoc`; the gateway needs only HTTP and JSON, and reqwest, serde and base64
//! are already in the tree. Palisade needs a handful of single-key operations and leases, for
//! which one request per operation is enough (keep-alive is sent one message at a time).
//!
//! **What this crate promises.** Every request has a timeout and every answer a size bound;
//! a member that cannot be reached, or does not answer in time, is skipped for the next (for
//! operations that may be repeated; a compare-and-swap whose answer was lost is reported as
//! [`Error::OutcomeUnknown`] instead); an etcd error answer is a typed [`Error`] naming the
//! operation and endpoint. Nothing panics on a server's answer and no value is logged (values
//! may one day hold sign-state records); requests are traced at debug level.
//!
//! Modules: [`client`] (operations; `wire` holds the JSON shapes, `transport` the HTTP),
//! [`leader`] (campaign, renew, resign, the self-fencing contract), `error`.
#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod leader;

pub use client::{
    Client, ClientOptions, Created, Get, KeyValue, Lease, LeaseId, LeaseTimeToLive, MemberStatus,
};
pub use error::{EndpointFailure, Error, FailureKind};
pub use leader::{Acquired, Acquisition, Campaign, FencingToken, Holder, LeaderError};
