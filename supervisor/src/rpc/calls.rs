//! Counts of control-RPC calls by method and role, for the metrics
//! (`palisade_rpc_requests_total`, `palisade_rpc_errors_total`).
//!
//! Lock-free: one pair of atomics per known method and role, so counting
//! costs two relaxed additions per call. Only methods of
//! [`palisade_wire::rpc::METHODS`] are counted (an unknown method's name
//! never becomes a label); `role` is the caller's, `none` before login.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_wire::rpc::{METHODS, Role};

/// The `role` label's values, by index.
pub const ROLE_LABELS: [&str; 4] = ["none", "viewer", "operator", "admin"];

fn role_index(role: Option<Role>) -> usize {
    match role {
        None => 0,
        Some(Role::Viewer) => 1,
        Some(Role::Operator) => 2,
        Some(Role::Admin) => 3,
    }
}

/// One method and role's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCount {
    pub method: &'static str,
    pub role: &'static str,
    pub requests: u64,
    pub errors: u64,
}

/// The counters (shared by every connection of one server).
#[derive(Debug)]
pub struct RpcCalls {
    requests: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
}

impl Default for RpcCalls {
    fn default() -> RpcCalls {
        let slots = METHODS.len() * ROLE_LABELS.len();
        RpcCalls {
            requests: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RpcCalls {
    /// Counts one answered call of `method` (a name from `METHODS`; any
    /// other is ignored) by a caller with `role`; `failed`: answered an error.
    pub fn record(&self, method: &str, role: Option<Role>, failed: bool) {
        let Some(position) = METHODS.iter().position(|(name, _)| *name == method) else {
            return;
        };
        let slot = position * ROLE_LABELS.len() + role_index(role);
        self.requests[slot].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every method and role called at least once.
    pub fn counts(&self) -> Vec<CallCount> {
        let mut counts = Vec::new();
        for (position, (method, _)) in METHODS.iter().enumerate() {
            for (index, role) in ROLE_LABELS.iter().enumerate() {
                let slot = position * ROLE_LABELS.len() + index;
                let requests = self.requests[slot].load(Ordering::Relaxed);
                if requests > 0 {
                    counts.push(CallCount {
                        method,
                        role,
                        requests,
                        errors: self.errors[slot].load(Ordering::Relaxed),
                    });
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_role_and_unknown_methods_are_not() {
        let calls = RpcCalls::default();
        calls.record("status", Some(Role::Viewer), false);
        calls.record("status", Some(Role::Viewer), true);
        calls.record("status", Some(Role::Admin), false);
        calls.record("auth.challenge", None, false);
        calls.record("no.such.method", Some(Role::Admin), true);
        assert_eq!(
            calls.counts(),
            vec![
                CallCount {
                    method: "auth.challenge",
                    role: "none",
                    requests: 1,
                    errors: 0
                },
                CallCount {
                    method: "status",
                    role: "viewer",
                    requests: 2,
                    errors: 1
                },
                CallCount {
                    method: "status",
                    role: "admin",
                    requests: 1,
                    errors: 0
                },
            ]
        );
    }
}
