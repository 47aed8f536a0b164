//! CometBFT's RPC JSON, as both binaries serve it: `simd` on `[rpc] laddr` and each
//! `simchain-net` sentry on its `--rpc NAME=ADDR` — one rendering, two servers.
//!
//! A URI request (`GET /commit?height=5`) is answered with the JSON-RPC envelope
//! `{"jsonrpc":"2.0","id":-1,"result":…}` (`rpc/jsonrpc/server/http_uri_handler.go`, v0.38:
//! URI requests carry no ID, so the answer's is −1). A failure is
//! `{"jsonrpc":"2.0","id":-1,"error":{"code":…,"message":…,"data":…}}` with HTTP 500
//! (`WriteRPCResponseHTTPError`; `rpc/jsonrpc/types/types.go` `RPCError`: `data` left out when
//! empty), an unknown path `-32601 Method not found` with HTTP 404.
//!
//! [`status`] renders `/status`, [`commit`] `/commit` and keeps the bounded commit history
//! behind it. Pure: no sockets, no clocks.

pub mod commit;
pub mod status;

use serde::Serialize;

use crate::http::{HttpRequest, HttpResponse};

use self::commit::{CommitHistory, commit_response};
use self::status::{NodeStatus, RpcIdentity, status_result};

/// The ID of every answer to a URI request (`types.JSONRPCIntID(-1)`).
const URI_REQUEST_ID: i64 = -1;

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: i64,
    result: &'a T,
}

#[derive(Serialize)]
struct Failure {
    jsonrpc: &'static str,
    id: i64,
    error: RpcError,
}

/// `rpc/jsonrpc/types/types.go` `RPCError`.
#[derive(Serialize)]
struct RpcError {
    code: i32,
    message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    data: String,
}

/// HTTP 200 with `result` in the envelope; `null` for `None`, as CometBFT answers when a
/// handler returns a nil result.
pub fn success<T: Serialize>(result: &T) -> HttpResponse {
    let body = serde_json::to_string(&Success {
        jsonrpc: "2.0",
        id: URI_REQUEST_ID,
        result,
    })
    .expect("RPC results serialize");
    HttpResponse { status: 200, body }
}

fn failure(status: u16, code: i32, message: &'static str, data: String) -> HttpResponse {
    let body = serde_json::to_string(&Failure {
        jsonrpc: "2.0",
        id: URI_REQUEST_ID,
        error: RpcError {
            code,
            message,
            data,
        },
    })
    .expect("RPC errors serialize");
    HttpResponse { status, body }
}

/// A handler's error (`types.RPCInternalError`: −32603, HTTP 500), e.g. `getHeight`'s.
pub fn internal_error(data: String) -> HttpResponse {
    failure(500, -32603, "Internal error", data)
}

/// A parameter that does not convert (`types.RPCInvalidParamsError`: −32602, HTTP 500).
pub fn invalid_params(data: String) -> HttpResponse {
    failure(500, -32602, "Invalid params", data)
}

/// An unknown path (`types.RPCMethodNotFoundError`: −32601, HTTP 404).
pub fn method_not_found() -> HttpResponse {
    failure(404, -32601, "Method not found", String::new())
}

/// The routes every server of the simulation answers alike: `/status`, `/commit` and
/// `/health`. `None` for any other path (the caller adds its own, or answers
/// [`method_not_found`]).
pub fn answer_chain_route(
    request: &HttpRequest,
    identity: &RpcIdentity,
    status: &NodeStatus,
    commits: &CommitHistory,
) -> Option<HttpResponse> {
    match request.path.as_str() {
        "/status" => Some(success(&status_result(identity, status))),
        "/commit" => Some(commit_response(
            &status.chain_id,
            commits,
            status.latest_height,
            &request.query,
        )),
        "/health" => Some(success(&serde_json::json!({}))),
        _ => None,
    }
}

/// The first value of `name` in a raw query string, percent-decoded (`+` is a space), as Go's
/// `URL.Query().Get` reads it; `None` when the parameter is absent.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_cometbft_field_order() {
        assert_eq!(
            success(&serde_json::json!({})).body,
            r#"{"jsonrpc":"2.0","id":-1,"result":{}}"#
        );
        let error = internal_error(
            "height 9 must be less than or equal to the current blockchain height 5".into(),
        );
        assert_eq!(error.status, 500);
        assert_eq!(
            error.body,
            r#"{"jsonrpc":"2.0","id":-1,"error":{"code":-32603,"message":"Internal error","data":"height 9 must be less than or equal to the current blockchain height 5"}}"#
        );
        let missing = method_not_found();
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.body,
            r#"{"jsonrpc":"2.0","id":-1,"error":{"code":-32601,"message":"Method not found"}}"#
        );
    }

    #[test]
    fn query_params_are_decoded() {
        let cases = [
            ("height=5", "height", Some("5")),
            ("a=1&height=%2212%22", "height", Some("\"12\"")),
            ("height=", "height", Some("")),
            ("heights=5", "height", None),
            ("", "height", None),
            ("height=5%", "height", Some("5%")),
            ("height=%zz", "height", Some("%zz")),
        ];
        for (query, name, expected) in cases {
            assert_eq!(query_param(query, name).as_deref(), expected, "{query}");
        }
    }
}
