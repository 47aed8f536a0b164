//! Readable renderings of call results (without `--json`): a few lines of
//! `key: value`, nested values indented. Results the contract types
//! (`palisade_wire::rpc::results`) are read as those types; one that does
//! not read as its type (a newer or odd supervisor) falls back to the
//! generic rendering rather than guessing. Everything printed passes
//! through [`clean`], as results carry text from the chain and from logs.

pub use palisade_client::peer_text::{clean, escape_json_output};
use palisade_wire::rpc::results::{
    FailoverHandoffResult, FailoverStatus, HealthResult, LogsTailResult, PlanOnDisk,
    UpgradeAddResult, UpgradeCancelResult, UpgradeListResult,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

mod backups;
mod eip;
mod tunnels;
pub use backups::command_line;

/// The result of `method`, for people.
pub fn render(method: &str, result: &Value) -> String {
    match method {
        "health" => typed(result, health),
        "logs.tail" => typed(result, |tail: LogsTailResult| {
            tail.lines.iter().map(|line| clean(line) + "\n").collect()
        }),
        "upgrade.list" => typed(result, upgrade_list),
        "upgrade.add" => typed(result, upgrade_added),
        "upgrade.cancel" => typed(result, upgrade_cancelled),
        "backup.list" => typed(result, backups::backup_list),
        "backup.restore" => typed(result, backups::backup_restored),
        "host.shutdown" => typed(result, backups::host_shutdown),
        "failover.status" => typed(result, failover_status),
        "failover.handoff" => typed(result, failover_handoff),
        "eip.list" => typed(result, eip::eip_list),
        "eip.rotate" => typed(result, eip::eip_rotated),
        "eip.status" => typed(result, eip::eip_status),
        "tunnel.list" => typed(result, tunnels::tunnel_list),
        "status" => tunnels::status(result),
        _ => generic(result),
    }
}

/// `render` of `result` read as `T`, or the generic rendering when it does
/// not read as `T`.
fn typed<T: DeserializeOwned>(result: &Value, render: impl FnOnce(T) -> String) -> String {
    match T::deserialize(result) {
        Ok(typed) => render(typed),
        Err(_) => generic(result),
    }
}

/// Text from the supervisor, cleaned; `-` when absent.
fn text(value: Option<&str>) -> String {
    value.map(clean).unwrap_or_else(|| "-".into())
}

/// A number; `-` when absent.
fn number(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |number| number.to_string())
}

/// Past this (year 10000) a time is shown as a number: only a broken or
/// hostile peer sends one.
const YEAR_10000: u64 = 253_402_300_800;

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC); past year 9999 the plain
/// number.
fn utc(seconds: u64) -> String {
    if seconds >= YEAR_10000 {
        return format!("{seconds} (unix seconds)");
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); past year 9999
/// the plain number.
fn utc_ms(ms: u64) -> String {
    if ms / 1000 >= YEAR_10000 {
        return format!("{ms} (unix milliseconds)");
    }
    format!("{}.{:03}", utc(ms / 1000), ms % 1000)
}

/// `health`: healthy or not, and the problems.
fn health(health: HealthResult) -> String {
    let mut out = String::from(if health.ok {
        "healthy\n"
    } else {
        "UNHEALTHY\n"
    });
    for problem in &health.problems {
        out.push_str(&format!("  - {}\n", clean(problem)));
    }
    out
}

/// `failover.status`: this host's role and the leader, the lease, the last
/// handoff, and what this host waits for.
fn failover_status(status: FailoverStatus) -> String {
    let leader = match (&status.leader, status.token) {
        (Some(leader), Some(token)) => format!("{} (token {token})", clean(leader)),
        (Some(leader), None) => clean(leader),
        (None, _) => "none".into(),
    };
    let mut out = format!(
        "{}: {}; leader: {leader}
",
        clean(&status.host_id),
        clean(&status.role)
    );
    match status.signing_deadline_in_ms {
        Some(ms) => out.push_str(&format!(
            "lease: {} s, signing deadline in {:.1} s
",
            status.lease_ttl_s,
            ms as f64 / 1000.0
        )),
        None => out.push_str(&format!(
            "lease: {} s
",
            status.lease_ttl_s
        )),
    }
    out.push_str(&format!(
        "takeover: {}{}; peers: {}
",
        clean(&status.takeover),
        match status.paused {
            Some(true) => " (PAUSED)",
            Some(false) => "",
            None => " (paused: unknown)",
        },
        status
            .peers
            .iter()
            .map(|peer| clean(peer))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(handoff) = &status.last_handoff {
        out.push_str(&format!(
            "last handoff: {} -> {} (token {}, {}{})
",
            clean(&handoff.from),
            clean(&handoff.to),
            handoff.from_token,
            text(handoff.watermark.as_deref()),
            if handoff.verified {
                ""
            } else {
                ", NOT verified"
            }
        ));
    }
    if let Some(error) = &status.etcd_error {
        out.push_str(&format!(
            "etcd: {}
",
            clean(error)
        ));
    }
    if let Some(note) = &status.note {
        out.push_str(&format!(
            "note: {}
",
            clean(note)
        ));
    }
    out
}

/// `failover.handoff`: to whom, what was given up, where the final backup went.
fn failover_handoff(done: FailoverHandoffResult) -> String {
    format!(
        "handed over to {} (token {} given up; final state {}; final backup in {}); this host is {}\n",
        clean(&done.to),
        done.token,
        text(done.watermark.as_deref()),
        if done.stores.is_empty() {
            "no store".to_string()
        } else {
            done.stores
                .iter()
                .map(|store| clean(store))
                .collect::<Vec<_>>()
                .join(", ")
        },
        done.node
    )
}

/// `upgrade.list`: what `current` runs, the staged binaries as a table,
/// adds in flight, the plan on disk, then the upgrade record.
fn upgrade_list(list: UpgradeListResult) -> String {
    let mut out = format!("current: {}\n", text(list.current.as_deref()));
    if list.staged.is_empty() {
        out.push_str("staged: none\n");
    } else {
        out.push_str("staged:\n");
        let rows: Vec<[String; 4]> = list
            .staged
            .iter()
            .map(|entry| {
                let current = if entry.current { "yes" } else { "-" };
                let (size, digest) = match &entry.error {
                    Some(error) => ("-".to_string(), format!("unusable: {}", clean(error))),
                    None => (number(entry.size), text(entry.sha256.as_deref())),
                };
                [clean(&entry.name), current.to_string(), size, digest]
            })
            .collect();
        out.push_str(&table(&["NAME", "CURRENT", "SIZE", "SHA256"], &rows, "  "));
    }
    if let Some(more) = list.staged_not_listed {
        out.push_str(&format!("  … and {more} more not listed\n"));
    }
    if !list.staging.is_empty() {
        let names: Vec<String> = list.staging.iter().map(|name| clean(name)).collect();
        out.push_str(&format!("being staged now: {}\n", names.join(", ")));
    }
    match &list.plan_on_disk {
        None => out.push_str("plan on disk: none\n"),
        Some(PlanOnDisk::BadName { error, .. } | PlanOnDisk::Unreadable { error }) => {
            out.push_str(&format!("plan on disk: unusable: {}\n", clean(error)));
        }
        Some(PlanOnDisk::Usable {
            name,
            height,
            dir,
            staged,
            applied,
        }) => {
            let state = if *applied {
                "applied (current)"
            } else if *staged {
                "binary staged"
            } else {
                "binary NOT staged"
            };
            out.push_str(&format!(
                "plan on disk: {} at height {} -> upgrades/{}: {state}\n",
                clean(name),
                number(*height),
                clean(dir),
            ));
        }
    }
    if let Some(in_progress) = &list.in_progress {
        out.push_str(&format!("upgrade in progress: {}\n", clean(in_progress)));
    }
    if let Some(scheduled) = &list.scheduled {
        out.push_str(&format!("scheduled: {}\n", clean(scheduled)));
    }
    if list.records.is_empty() {
        out.push_str("upgrade record: none yet\n");
    } else {
        out.push_str(&format!("upgrade record (last {}):\n", list.records.len()));
        for line in crate::records::render_table(&list.records).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(skipped) = list.records_unreadable_lines {
        out.push_str(&format!(
            "  ({skipped} unreadable line(s) in the record skipped)\n"
        ));
    }
    out
}

/// `upgrade.add`: what was staged where.
fn upgrade_added(added: UpgradeAddResult) -> String {
    format!(
        "staged {} as upgrades/{}\n  path:   {}\n  sha256: {}\n  size:   {} bytes\n  from:   {}\n",
        clean(&added.name),
        clean(&added.dir),
        clean(&added.path),
        clean(&added.sha256),
        added.size,
        clean(&added.source),
    )
}

/// `upgrade.cancel`: what was removed, and any warning.
fn upgrade_cancelled(cancelled: UpgradeCancelResult) -> String {
    let mut out = format!(
        "cancelled {}: removed {}\n",
        clean(&cancelled.name),
        clean(&cancelled.removed)
    );
    for (key, note) in [("warning", &cancelled.warning), ("note", &cancelled.note)] {
        if let Some(note) = note {
            out.push_str(&format!("{key}: {}\n", clean(note)));
        }
    }
    out
}

/// Left-aligned columns (the last one unpadded), each line indented.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]], indent: &str) -> String {
    let mut widths = header.map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = indent.to_string();
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[column] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn generic(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    if out.is_empty() {
        out.push_str("ok\n");
    }
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    let indent = "  ".repeat(depth);
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                write_member(out, key, field, depth);
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_scalar(item) {
                    out.push_str(&format!("{indent}- {}\n", scalar(item)));
                } else {
                    out.push_str(&format!("{indent}-\n"));
                    write_value(out, item, depth + 1);
                }
            }
        }
        scalar_value => out.push_str(&format!("{indent}{}\n", scalar(scalar_value))),
    }
}

/// One member of an object, `key: value` or `key:` and the value below.
fn write_member(out: &mut String, key: &str, field: &Value, depth: usize) {
    let indent = "  ".repeat(depth);
    if is_scalar(field) {
        out.push_str(&format!("{indent}{}: {}\n", clean(key), scalar(field)));
    } else if is_empty(field) {
        out.push_str(&format!("{indent}{}: none\n", clean(key)));
    } else {
        out.push_str(&format!("{indent}{}:\n", clean(key)));
        write_value(out, field, depth + 1);
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(fields) => fields.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => clean(text),
        Value::Null => "-".into(),
        other => clean(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renderings() {
        let cases = [
            (
                "status",
                json!({"node": {"pid": 42, "state": "running"}, "tunnels": [], "vault": "locked"}),
                "node:\n  pid: 42\n  state: running\ntunnels: none\nvault: locked\n",
            ),
            (
                "health",
                json!({"ok": false, "problems": ["node stopped"]}),
                "UNHEALTHY\n  - node stopped\n",
            ),
            ("health", json!({"ok": true, "problems": []}), "healthy\n"),
            (
                "logs.tail",
                json!({"lines": ["a", "b\u{1b}[31m"]}),
                "a\nb\\u{1b}[31m\n",
            ),
            (
                "backup.list",
                json!([{"seq": 3, "store": "b1"}, "x"]),
                "-\n  seq: 3\n  store: b1\n- x\n",
            ),
            ("node.stop", json!({}), "ok\n"),
            (
                "upgrade.add",
                json!({"name": "V2", "dir": "v2", "path": "/h/cosmovisor/upgrades/v2/bin/gaiad",
                       "sha256": "ab12", "size": 42, "source": "/opt/gaiad-v2"}),
                "staged V2 as upgrades/v2\n  path:   /h/cosmovisor/upgrades/v2/bin/gaiad\n  \
                 sha256: ab12\n  size:   42 bytes\n  from:   /opt/gaiad-v2\n",
            ),
            (
                "upgrade.cancel",
                json!({"name": "v2", "dir": "v2", "removed": "/h/cosmovisor/upgrades/v2",
                       "warning": "plan\u{1b}[31m"}),
                "cancelled v2: removed /h/cosmovisor/upgrades/v2\nwarning: plan\\u{1b}[31m\n",
            ),
            (
                "upgrade.list",
                json!({"current": "genesis", "staged": [], "staging": [], "plan_on_disk": null,
                       "in_progress": null, "scheduled": null, "records": []}),
                "current: genesis\nstaged: none\nplan on disk: none\nupgrade record: none yet\n",
            ),
            (
                "failover.status",
                json!({"host_id": "val-b", "role": "standby", "leader": "val-a", "token": 42,
                       "lease_ttl_s": 10, "signing_deadline_in_ms": null, "paused": true,
                       "takeover": "auto", "peers": ["val-a"], "etcd_error": null,
                       "last_handoff": {"from": "val-b", "to": "val-a", "from_token": 41,
                                        "watermark": "height 9 round 0 step 3", "at_ms": 1,
                                        "verified": true},
                       "note": "standby\u{1b}[31m"}),
                "val-b: standby; leader: val-a (token 42)\nlease: 10 s\ntakeover: auto (PAUSED); \
                 peers: val-a\nlast handoff: val-b -> val-a (token 41, height 9 round 0 step 3)\n\
                 note: standby\\u{1b}[31m\n",
            ),
            (
                "failover.status",
                json!({"host_id": "val-a", "role": "primary", "leader": "val-a", "token": 43,
                       "lease_ttl_s": 10, "signing_deadline_in_ms": 6500, "paused": false,
                       "takeover": "manual", "peers": ["val-b"], "etcd_error": "unreachable",
                       "last_handoff": null, "note": null}),
                "val-a: primary; leader: val-a (token 43)\nlease: 10 s, signing deadline in 6.5 s\n\
                 takeover: manual; peers: val-b\netcd: unreachable\n",
            ),
            (
                "failover.handoff",
                json!({"to": "val-b", "token": 43, "watermark": "height 9 round 0 step 3",
                       "stores": ["local", "bastion:b1"], "node": "standby"}),
                "handed over to val-b (token 43 given up; final state height 9 round 0 step 3; \
                 final backup in local, bastion:b1); this host is standby\n",
            ),
        ];
        for (method, value, expected) in cases {
            assert_eq!(render(method, &value), expected, "{method} {value}");
        }
    }

    #[test]
    fn dates() {
        let cases = [
            (0, "1970-01-01 00:00:00"),
            (951_782_400, "2000-02-29 00:00:00"),
            (1_700_000_000, "2023-11-14 22:13:20"),
            (4_102_444_799, "2099-12-31 23:59:59"),
            (253_402_300_799, "9999-12-31 23:59:59"),
            (253_402_300_800, "253402300800 (unix seconds)"),
            (u64::MAX, "18446744073709551615 (unix seconds)"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(utc(seconds), expected, "{seconds}");
        }
        let cases = [
            (0, "1970-01-01 00:00:00.000"),
            (1_700_000_000_007, "2023-11-14 22:13:20.007"),
            (253_402_300_799_999, "9999-12-31 23:59:59.999"),
            (253_402_300_800_000, "253402300800000 (unix milliseconds)"),
            (u64::MAX, "18446744073709551615 (unix milliseconds)"),
        ];
        for (ms, expected) in cases {
            assert_eq!(utc_ms(ms), expected, "{ms}");
        }
    }

    #[test]
    fn upgrade_list_rendering() {
        let result = json!({
            "current": "upgrades/v2",
            "staged": [
                {"name": "v2", "path": "/p/v2", "sha256": "aa", "size": 1234, "current": true},
                {"name": "v3-long-name", "path": "/p/v3", "sha256": "bb", "size": 7, "current": false},
                {"name": "broken\u{7}", "path": "/p/b", "current": false,
                 "error": "binary /p/b does not exist"},
            ],
            "staging": ["v4"],
            "plan_on_disk": {"name": "v3-long-name", "height": 40, "dir": "v3-long-name",
                             "staged": true, "applied": false},
            "in_progress": null,
            "scheduled": "v3-long-name at height Some(40)",
            "records": [{"name": "v2", "height": 12, "detected_by": "upgrade_info_file",
                         "detected_at": "t", "steps": [{"step": "switch", "duration_ms": 1,
                         "detail": "current: genesis -> upgrades/v2"}],
                         "outcome": {"status": "completed"}, "switch_ms": 80}],
        });
        let text = render("upgrade.list", &result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "current: upgrades/v2");
        assert_eq!(lines[1], "staged:");
        assert_eq!(lines[2], "  NAME          CURRENT  SIZE  SHA256");
        assert_eq!(lines[3], "  v2            yes      1234  aa");
        assert_eq!(lines[4], "  v3-long-name  -        7     bb");
        assert_eq!(
            lines[5],
            "  broken\\u{7}   -        -     unusable: binary /p/b does not exist"
        );
        assert_eq!(lines[6], "being staged now: v4");
        assert_eq!(
            lines[7],
            "plan on disk: v3-long-name at height 40 -> upgrades/v3-long-name: binary staged"
        );
        assert_eq!(lines[8], "scheduled: v3-long-name at height Some(40)");
        assert_eq!(lines[9], "upgrade record (last 1):");
        assert!(lines[10].starts_with("  NAME  HEIGHT"), "{text}");
        assert!(
            lines[11].starts_with("  v2    12") && lines[11].ends_with("completed"),
            "{text}"
        );
        assert_eq!(
            lines[12],
            "      switch  1 ms  current: genesis -> upgrades/v2"
        );

        let unstaged = json!({"current": "genesis", "staged": [], "staging": [],
            "plan_on_disk": {"name": "v9", "height": 5, "dir": "v9", "staged": false, "applied": false},
            "records": [], "records_unreadable_lines": 2});
        let text = render("upgrade.list", &unstaged);
        assert!(
            text.contains("plan on disk: v9 at height 5 -> upgrades/v9: binary NOT staged\n"),
            "{text}"
        );
        assert!(
            text.contains("(2 unreadable line(s) in the record skipped)"),
            "{text}"
        );
        let invalid = json!({"current": "genesis", "staged": [], "staging": [],
            "plan_on_disk": {"error": "height -3 must be positive"}, "records": []});
        assert!(
            render("upgrade.list", &invalid)
                .contains("plan on disk: unusable: height -3 must be positive\n")
        );
    }
}
