//! A small EC2 Query API client for Elastic IP rotation (`docs/ec2.md`): DescribeAddresses,
//! AllocateAddress, AssociateAddress, DisassociateAddress and ReleaseAddress.
//!
//! **Why not the AWS SDK.** aws-sdk-ec2 generates thousands of operations and brings its own
//! runtime, HTTP stack and credential chain (which would look for credentials in places
//! Palisade must not: instance metadata, default files). Five calls need a form-encoded POST,
//! a SigV4 signature and a little XML; reqwest (rustls) is already in the tree.
//!
//! **What this crate promises.** Requests are signed with Signature Version 4 as AWS documents
//! it ([`sigv4`], checked byte for byte against AWS's published test suite in
//! `tests/sigv4-vectors/`). Every attempt has a timeout and every answer a size bound. AWS's
//! error answers become a typed [`Error`] that names the call, the address it was about, the
//! region, what AWS said (code, message, request id) and what to do. Throttling
//! (`RequestLimitExceeded`, `Throttling`, HTTP 503) is retried with exponential backoff and
//! full jitter, a bounded number of times; nothing else is retried, because a call that may
//! have taken effect must be looked at, not repeated ([`Error::outcome_unknown`]). The secret
//! key and session token are zeroized, redacted in `Debug` and never logged; the `Authorization`
//! header is marked sensitive.
//!
//! Modules: [`sigv4`] (pure signing), [`credentials`] (the key and where it comes from),
//! `config` ([`Ec2Config`]: endpoint, region, timeout, retries), `client` ([`Ec2Client`]: the
//! calls), `transport` (HTTP, retries, error mapping), `xml` (answers into types), `address`
//! (the types), `error`.
#![forbid(unsafe_code)]

mod address;
mod client;
mod config;
pub mod credentials;
mod error;
pub mod sigv4;
mod transport;
mod xml;

pub use address::{Address, AddressFilter, AllocatedAddress, AssociationTarget};
pub use client::Ec2Client;
pub use config::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BASE_DELAY, DEFAULT_RETRY_MAX_DELAY, DEFAULT_TIMEOUT,
    Ec2Config,
};
pub use credentials::{Credentials, CredentialsError};
pub use error::{AwsMessage, Call, Error};
/// The URL type of [`Ec2Config::endpoint`] (reqwest's re-export of `url::Url`).
pub use reqwest::Url;
/// The zeroizing wrapper of [`Credentials`]' secret fields.
pub use zeroize::Zeroizing;
