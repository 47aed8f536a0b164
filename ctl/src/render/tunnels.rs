//! Renderings of the tunnels (`tunnel.list`, and `status`'s `tunnels`):
//! each one's state, the address it dials after an Elastic IP rotation,
//! its traffic and its last errors.

use palisade_wire::rpc::results::{TunnelEntry, TunnelListResult};
use serde::Deserialize;
use serde_json::Value;

use super::{clean, generic, utc, write_member};

/// `tunnel.list`: each tunnel's lines.
pub(super) fn tunnel_list(list: TunnelListResult) -> String {
    if list.tunnels.is_empty() {
        return "no tunnels (no [[bastion]] configured)\n".into();
    }
    list.tunnels.iter().map(tunnel_lines).collect()
}

/// One tunnel: its state and, after a rotation, the address it dials;
/// then its traffic and last errors, indented.
pub(super) fn tunnel_lines(tunnel: &TunnelEntry) -> String {
    let state = match (tunnel.connected, tunnel.connected_since, tunnel.stopped) {
        (true, Some(since), _) => format!("connected since {} UTC", utc(since)),
        (true, None, _) => "connected".to_string(),
        (false, _, true) => "STOPPED for good".to_string(),
        (false, _, false) => "down".to_string(),
    };
    let mut out = format!("{}: {state}", clean(&tunnel.name));
    if let Some(address) = &tunnel.address {
        out.push_str(&format!(", dialing {} (rotated)", clean(address)));
    }
    if let Some(round_trip) = tunnel.round_trip_ms {
        out.push_str(&format!(", round trip {round_trip} ms"));
    }
    out.push_str(&format!(
        "\n  bytes: {} to the bastion, {} from it; reconnects: {}\n",
        tunnel.bytes_to_bastion, tunnel.bytes_from_bastion, tunnel.reconnects
    ));
    for (what, error) in [
        ("last error", &tunnel.last_error),
        ("last forward error", &tunnel.last_forward_error),
    ] {
        if let Some(error) = error {
            out.push_str(&format!("  {what}: {}\n", clean(error)));
        }
    }
    out
}

/// `status`: the generic rendering, member by member in the answer's
/// order, except `tunnels`, which reads as the tunnels do in `tunnel.list`.
pub(super) fn status(result: &Value) -> String {
    let Value::Object(members) = result else {
        return generic(result);
    };
    let mut out = String::new();
    for (key, member) in members {
        let tunnels = (key == "tunnels")
            .then(|| Vec::<TunnelEntry>::deserialize(member).ok())
            .flatten()
            .filter(|tunnels| !tunnels.is_empty());
        match tunnels {
            Some(tunnels) => {
                out.push_str("tunnels:\n");
                for tunnel in &tunnels {
                    for line in tunnel_lines(tunnel).lines() {
                        out.push_str(&format!("  {line}\n"));
                    }
                }
            }
            None => write_member(&mut out, key, member, 0),
        }
    }
    if out.is_empty() {
        out.push_str("ok\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use serde_json::json;

    fn lines(method: &str, result: serde_json::Value) -> Vec<String> {
        render(method, &result).lines().map(String::from).collect()
    }

    #[test]
    fn tunnels_show_the_rotated_address() {
        let rotated = json!({"name": "bastion-1", "connected": true,
            "connected_since": 1_795_390_000u64, "last_error": "connection refused",
            "last_forward_error": null, "bytes_to_bastion": 10, "bytes_from_bastion": 20,
            "reconnects": 1, "stopped": false, "address": "54.9.9.9", "round_trip_ms": 12});
        let down = json!({"name": "b2", "connected": false, "connected_since": null,
            "last_error": null, "last_forward_error": "refused", "bytes_to_bastion": 0,
            "bytes_from_bastion": 0, "reconnects": 0, "stopped": false});
        let stopped = json!({"name": "b3", "connected": false, "connected_since": null,
            "last_error": "host key changed", "last_forward_error": null,
            "bytes_to_bastion": 0, "bytes_from_bastion": 0, "reconnects": 0, "stopped": true});
        assert_eq!(
            lines(
                "tunnel.list",
                json!({"tunnels": [rotated.clone(), down, stopped]})
            ),
            [
                "bastion-1: connected since 2026-11-22 23:26:40 UTC, dialing 54.9.9.9 (rotated), round trip 12 ms",
                "  bytes: 10 to the bastion, 20 from it; reconnects: 1",
                "  last error: connection refused",
                "b2: down",
                "  bytes: 0 to the bastion, 0 from it; reconnects: 0",
                "  last forward error: refused",
                "b3: STOPPED for good",
                "  bytes: 0 to the bastion, 0 from it; reconnects: 0",
                "  last error: host key changed",
            ]
        );
        assert_eq!(
            render("tunnel.list", &json!({"tunnels": []})),
            "no tunnels (no [[bastion]] configured)\n"
        );
        // In `status`, the other members keep the generic rendering, in
        // their order.
        assert_eq!(
            lines(
                "status",
                json!({"node": {"state": "running"}, "tunnels": [rotated], "vault": "unlocked"})
            ),
            [
                "node:",
                "  state: running",
                "tunnels:",
                "  bastion-1: connected since 2026-11-22 23:26:40 UTC, dialing 54.9.9.9 (rotated), round trip 12 ms",
                "    bytes: 10 to the bastion, 20 from it; reconnects: 1",
                "    last error: connection refused",
                "vault: unlocked",
            ]
        );
    }
}
