//! Renderings of `eip.list`, `eip.rotate` and `eip.status`.

use palisade_wire::rpc::results::{
    EipBastion, EipInProgress, EipListResult, EipRotateResult, EipStatusResult,
};

use super::{clean, table, text, utc, utc_ms};

/// What an address or a bastion is associated with: its instance, its
/// network interface, or both.
fn attachment(instance: Option<&str>, interface: Option<&str>) -> String {
    match (instance, interface) {
        (Some(instance), Some(interface)) => format!("{} ({})", clean(instance), clean(interface)),
        (Some(instance), None) => clean(instance),
        (None, Some(interface)) => clean(interface),
        (None, None) => "-".into(),
    }
}

/// `eip.list`: per bastion, what it is and dials, then its addresses as a
/// table, `*` on the one the tunnel dials.
pub(super) fn eip_list(list: EipListResult) -> String {
    if list.bastions.is_empty() {
        return "no [[bastion]] has an eip: no Elastic IPs to show\n".into();
    }
    list.bastions.iter().map(eip_bastion).collect()
}

fn eip_bastion(bastion: &EipBastion) -> String {
    let what = match (&bastion.instance_id, &bastion.network_interface_id) {
        (Some(instance), Some(interface)) => format!(
            "instance {}, network interface {}",
            clean(instance),
            clean(interface)
        ),
        (Some(instance), None) => format!("instance {}", clean(instance)),
        (None, Some(interface)) => format!("network interface {}", clean(interface)),
        (None, None) => "no instance or network interface".into(),
    };
    let dialing = clean(&bastion.dialing);
    let mut out = format!(
        "{} ({what}): the tunnel dials {dialing}\n",
        clean(&bastion.bastion)
    );
    if bastion.addresses.is_empty() {
        out.push_str("  no Elastic IPs\n");
        return out;
    }
    let mut dialed = false;
    let rows: Vec<[String; 5]> = bastion
        .addresses
        .iter()
        .map(|address| {
            let marked = address.public_ip == bastion.dialing;
            dialed |= marked;
            [
                if marked { "*" } else { "" }.to_string(),
                clean(&address.public_ip),
                clean(&address.allocation_id),
                text(address.association_id.as_deref()),
                attachment(
                    address.instance_id.as_deref(),
                    address.network_interface_id.as_deref(),
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            // The marker's column, as wide without a marker.
            " ",
            "PUBLIC IP",
            "ALLOCATION ID",
            "ASSOCIATION ID",
            "ASSOCIATED WITH",
        ],
        &rows,
        "  ",
    ));
    if dialed {
        out.push_str("  (* the address the tunnel dials)\n");
    } else {
        out.push_str(&format!(
            "  (the tunnel dials {dialing}, none of these addresses)\n"
        ));
    }
    out
}

/// Milliseconds as seconds with one decimal.
fn seconds(ms: u64) -> String {
    format!("{}.{} s", ms / 1000, ms % 1000 / 100)
}

/// `eip.rotate`: old → new, the tunnel's time, the old address's fate and
/// each step with its duration.
pub(super) fn eip_rotated(done: EipRotateResult) -> String {
    let new = format!(
        "{} ({})",
        clean(&done.public_ip),
        clean(&done.allocation_id)
    );
    let old = done
        .old_public_ip
        .as_deref()
        .map(|ip| match &done.old_allocation_id {
            Some(allocation) => format!("{} ({})", clean(ip), clean(allocation)),
            None => clean(ip),
        });
    let mut out = format!(
        "{}: {} -> {new}\n  rotation: {}\n  tunnel up on the new address {} after the command\n",
        clean(&done.bastion),
        old.as_deref().unwrap_or("no address"),
        clean(&done.rotation),
        seconds(done.tunnel_up_ms),
    );
    let step_named = |name: &str| done.steps.iter().any(|step| step.step == name);
    out.push_str(&match (&old, done.released_old) {
        (None, _) => "  old address: none was associated\n".to_string(),
        (Some(old), true) => format!("  old address: {old} released\n"),
        (Some(old), false) if step_named("release-failed") => format!(
            "  old address: {old} could NOT be released: still allocated to the account; \
             release it by hand (`eip status` says why)\n"
        ),
        (Some(old), false) if step_named("kept-old") => format!(
            "  old address: {old} kept (--keep-old): still allocated to the account, no longer \
             associated\n"
        ),
        (Some(old), false) => format!(
            "  old address: {old} not released: still allocated to the account, no longer \
             associated (kept, or its release failed: `eip status` says which)\n"
        ),
    });
    if !done.steps.is_empty() {
        out.push_str("  steps:\n");
        let name_width = done
            .steps
            .iter()
            .map(|step| clean(&step.step).chars().count())
            .max()
            .unwrap_or(0);
        let ms_width = done
            .steps
            .iter()
            .map(|step| step.took_ms.to_string().len())
            .max()
            .unwrap_or(0);
        for step in &done.steps {
            out.push_str(&format!(
                "    {:<name_width$}  {:>ms_width$} ms\n",
                clean(&step.step),
                step.took_ms
            ));
        }
    }
    out
}

/// `eip.status`: the rotation under way, then the journal's tail as a
/// table.
pub(super) fn eip_status(status: EipStatusResult) -> String {
    let mut out = match &status.in_progress {
        None => "no rotation in progress\n".to_string(),
        Some(EipInProgress {
            rotation,
            bastion,
            step,
            started,
        }) => format!(
            "rotation in progress: {} of {}, last step {}, started {} UTC\n",
            clean(rotation),
            clean(bastion),
            clean(step),
            utc(*started)
        ),
    };
    if status.journal.is_empty() {
        out.push_str("journal: no records yet\n");
        return out;
    }
    out.push_str(&format!(
        "journal (last {} records, oldest first):\n",
        status.journal.len()
    ));
    let rows: Vec<[String; 9]> = status
        .journal
        .iter()
        .map(|record| {
            [
                utc_ms(record.at_ms),
                clean(&record.rotation),
                clean(&record.bastion),
                clean(&record.step),
                text(record.public_ip.as_deref()),
                text(record.allocation_id.as_deref()),
                text(record.association_id.as_deref()),
                record
                    .took_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
                text(record.detail.as_deref()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TIME (UTC)",
            "ROTATION",
            "BASTION",
            "STEP",
            "PUBLIC IP",
            "ALLOCATION ID",
            "ASSOCIATION ID",
            "TOOK",
            "DETAIL",
        ],
        &rows,
        "  ",
    ));
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
    fn eip_listing() {
        let result = json!({"bastions": [
            {"bastion": "bastion-1", "instance_id": "i-0123456789abcdef0",
             "network_interface_id": null, "dialing": "54.1.2.3",
             "addresses": [
                {"public_ip": "54.1.2.3", "allocation_id": "eipalloc-0aaa",
                 "association_id": "eipassoc-0aaa", "instance_id": "i-0123456789abcdef0",
                 "network_interface_id": "eni-0aaa"},
                {"public_ip": "54.9.9.9", "allocation_id": "eipalloc-0bbb",
                 "association_id": null, "instance_id": null, "network_interface_id": null},
             ]},
            {"bastion": "b2\u{1b}[2J", "instance_id": null, "network_interface_id": "eni-0ccc",
             "dialing": "b2.example.com", "addresses": [
                {"public_ip": "3.3.3.3", "allocation_id": "eipalloc-0ccc",
                 "association_id": "eipassoc-0ccc", "instance_id": null,
                 "network_interface_id": "eni-0ccc"},
             ]},
            {"bastion": "b3", "instance_id": "i-3", "network_interface_id": null,
             "dialing": "4.4.4.4", "addresses": []},
        ]});
        assert_eq!(
            lines("eip.list", result),
            [
                "bastion-1 (instance i-0123456789abcdef0): the tunnel dials 54.1.2.3",
                "     PUBLIC IP  ALLOCATION ID  ASSOCIATION ID  ASSOCIATED WITH",
                "  *  54.1.2.3   eipalloc-0aaa  eipassoc-0aaa   i-0123456789abcdef0 (eni-0aaa)",
                "     54.9.9.9   eipalloc-0bbb  -               -",
                "  (* the address the tunnel dials)",
                "b2\\u{1b}[2J (network interface eni-0ccc): the tunnel dials b2.example.com",
                "     PUBLIC IP  ALLOCATION ID  ASSOCIATION ID  ASSOCIATED WITH",
                "     3.3.3.3    eipalloc-0ccc  eipassoc-0ccc   eni-0ccc",
                "  (the tunnel dials b2.example.com, none of these addresses)",
                "b3 (instance i-3): the tunnel dials 4.4.4.4",
                "  no Elastic IPs",
            ]
        );
        assert_eq!(
            render("eip.list", &json!({"bastions": []})),
            "no [[bastion]] has an eip: no Elastic IPs to show\n"
        );
    }

    #[test]
    fn eip_rotation() {
        let result = json!({
            "bastion": "bastion-1", "rotation": "r-1795390000-1",
            "old_public_ip": "54.1.2.3", "old_allocation_id": "eipalloc-0aaa",
            "public_ip": "54.9.9.9", "allocation_id": "eipalloc-0bbb",
            "released_old": true,
            "steps": [{"step": "allocated", "took_ms": 412}, {"step": "associated", "took_ms": 230},
                      {"step": "tunnel-up", "took_ms": 1650}, {"step": "released", "took_ms": 95}],
            "tunnel_up_ms": 2345,
        });
        assert_eq!(
            lines("eip.rotate", result.clone()),
            [
                "bastion-1: 54.1.2.3 (eipalloc-0aaa) -> 54.9.9.9 (eipalloc-0bbb)",
                "  rotation: r-1795390000-1",
                "  tunnel up on the new address 2.3 s after the command",
                "  old address: 54.1.2.3 (eipalloc-0aaa) released",
                "  steps:",
                "    allocated    412 ms",
                "    associated   230 ms",
                "    tunnel-up   1650 ms",
                "    released      95 ms",
            ]
        );
        let not_released = |steps: serde_json::Value| {
            let mut result = result.clone();
            result["released_old"] = json!(false);
            result["steps"] = steps;
            lines("eip.rotate", result)[3].clone()
        };
        assert_eq!(
            not_released(json!([{"step": "kept-old", "took_ms": 80}])),
            "  old address: 54.1.2.3 (eipalloc-0aaa) kept (--keep-old): still allocated to the \
             account, no longer associated"
        );
        assert_eq!(
            not_released(json!([{"step": "release-failed", "took_ms": 80}])),
            "  old address: 54.1.2.3 (eipalloc-0aaa) could NOT be released: still allocated to \
             the account; release it by hand (`eip status` says why)"
        );
        assert_eq!(
            not_released(json!([{"step": "released", "took_ms": 80}])),
            "  old address: 54.1.2.3 (eipalloc-0aaa) not released: still allocated to the \
             account, no longer associated (kept, or its release failed: `eip status` says which)"
        );
        let mut first = result;
        first["old_public_ip"] = json!(null);
        first["old_allocation_id"] = json!(null);
        first["released_old"] = json!(false);
        first["tunnel_up_ms"] = json!(950);
        let first = lines("eip.rotate", first);
        assert_eq!(
            first[0],
            "bastion-1: no address -> 54.9.9.9 (eipalloc-0bbb)"
        );
        assert_eq!(
            first[2],
            "  tunnel up on the new address 0.9 s after the command"
        );
        assert_eq!(first[3], "  old address: none was associated");
    }

    #[test]
    fn eip_journal() {
        let result = json!({
            "in_progress": {"rotation": "r-2", "bastion": "bastion-1", "step": "associated",
                            "started": 1_795_390_000u64},
            "journal": [
                {"at_ms": 1_795_390_000_123u64, "rotation": "r-2", "bastion": "bastion-1",
                 "step": "started"},
                {"at_ms": 1_795_390_000_540u64, "rotation": "r-2", "bastion": "bastion-1",
                 "step": "allocated", "public_ip": "54.9.9.9", "allocation_id": "eipalloc-0bbb",
                 "took_ms": 417},
                {"at_ms": 1_795_390_000_771u64, "rotation": "r-2", "bastion": "bastion-1",
                 "step": "associated", "public_ip": "54.9.9.9", "allocation_id": "eipalloc-0bbb",
                 "association_id": "eipassoc-0bbb", "took_ms": 231,
                 "detail": "to instance i-0123\u{7}"},
            ],
        });
        assert_eq!(
            lines("eip.status", result),
            [
                "rotation in progress: r-2 of bastion-1, last step associated, started \
                 2026-11-22 23:26:40 UTC",
                "journal (last 3 records, oldest first):",
                "  TIME (UTC)               ROTATION  BASTION    STEP        PUBLIC IP  \
                 ALLOCATION ID  ASSOCIATION ID  TOOK    DETAIL",
                "  2026-11-22 23:26:40.123  r-2       bastion-1  started     -          \
                 -              -               -       -",
                "  2026-11-22 23:26:40.540  r-2       bastion-1  allocated   54.9.9.9   \
                 eipalloc-0bbb  -               417 ms  -",
                "  2026-11-22 23:26:40.771  r-2       bastion-1  associated  54.9.9.9   \
                 eipalloc-0bbb  eipassoc-0bbb   231 ms  to instance i-0123\\u{7}",
            ]
        );
        assert_eq!(
            render("eip.status", &json!({"in_progress": null, "journal": []})),
            "no rotation in progress\njournal: no records yet\n"
        );
    }
}
