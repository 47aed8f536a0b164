//! The boundary between the RPC transport (this module's siblings) and the
//! code that carries out calls: by the time [`Dispatcher::call`] runs, the
//! frame is valid JSON-RPC, the method is known, the caller is
//! authenticated and its role allows the method.

use palisade_wire::rpc::{Role, RpcError};
use secrecy::SecretString;

use crate::backup::BoxFuture;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `[[operator]]` name, or `local:<user>` for a trusted local user.
    pub operator: String,
    pub role: Role,
    /// Whether the call came over TLS.
    pub tls: bool,
}

/// Carries out authorized calls.
pub trait Dispatcher: Send + Sync {
    /// Run `method` (one of [`palisade_wire::rpc::METHODS`], not an
    /// `auth.*` one) for `caller`. `params` is `Value::Null` when absent;
    /// `secret` is the secret line of the
    /// [`SECRET_METHODS`](palisade_wire::rpc::SECRET_METHODS), `None` for
    /// the others. The error is sent to the caller as is.
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        method: &'a str,
        params: serde_json::Value,
        secret: Option<SecretString>,
    ) -> BoxFuture<'a, Result<serde_json::Value, RpcError>>;
}
