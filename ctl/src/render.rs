//! Readable renderings of call results (without `--json`): a few lines of
//! `key: value`, nested values indented. Everything printed passes through
//! [`clean`], as results carry text from the chain and from logs.

use palisade_client::peer_text::clean;
use serde_json::{Map, Value};

mod backups;
pub use backups::command_line;

/// The result of `method`, for people.
pub fn render(method: &str, result: &Value) -> String {
    match (method, result) {
        ("health", Value::Object(fields)) => {
            let ok = fields.get("ok").and_then(Value::as_bool).unwrap_or(false);
            let mut out = String::from(if ok { "healthy\n" } else { "UNHEALTHY\n" });
            if let Some(Value::Array(problems)) = fields.get("problems") {
                for problem in problems {
                    out.push_str(&format!("  - {}\n", scalar(problem)));
                }
            }
            out
        }
        ("logs.tail", _) => {
            let lines = match result {
                Value::Object(fields) => fields.get("lines").unwrap_or(result),
                _ => result,
            };
            match lines {
                Value::Array(lines) => lines.iter().map(|line| scalar(line) + "\n").collect(),
                other => generic(other),
            }
        }
        ("upgrade.list", Value::Object(fields)) => upgrade_list(fields),
        ("upgrade.add", Value::Object(fields)) => upgrade_added(fields),
        ("upgrade.cancel", Value::Object(fields)) => upgrade_cancelled(fields),
        ("backup.list", Value::Object(fields)) => backups::backup_list(fields),
        ("backup.restore", Value::Object(fields)) => backups::backup_restored(fields),
        ("host.shutdown", Value::Object(fields)) => backups::host_shutdown(fields),
        _ => generic(result),
    }
}

/// `upgrade.list`: what `current` runs, the staged binaries as a table,
/// adds in flight, the plan on disk, then the upgrade record.
fn upgrade_list(fields: &Map<String, Value>) -> String {
    let field = |name: &str| fields.get(name).unwrap_or(&Value::Null);
    let mut out = format!("current: {}\n", scalar(field("current")));
    match field("staged") {
        Value::Array(staged) if !staged.is_empty() => {
            out.push_str("staged:\n");
            let rows: Vec<[String; 4]> = staged
                .iter()
                .map(|entry| {
                    let current = if entry["current"] == true { "yes" } else { "-" };
                    let (size, digest) = match entry.get("error") {
                        Some(error) => ("-".to_string(), format!("unusable: {}", scalar(error))),
                        None => (scalar(&entry["size"]), scalar(&entry["sha256"])),
                    };
                    [scalar(&entry["name"]), current.to_string(), size, digest]
                })
                .collect();
            out.push_str(&table(&["NAME", "CURRENT", "SIZE", "SHA256"], &rows, "  "));
        }
        _ => out.push_str("staged: none\n"),
    }
    if let Some(more) = fields.get("staged_not_listed") {
        out.push_str(&format!("  … and {} more not listed\n", scalar(more)));
    }
    if let Value::Array(staging) = field("staging")
        && !staging.is_empty()
    {
        let names: Vec<String> = staging.iter().map(scalar).collect();
        out.push_str(&format!("being staged now: {}\n", names.join(", ")));
    }
    let plan = field("plan_on_disk");
    match plan {
        Value::Null => out.push_str("plan on disk: none\n"),
        Value::Object(plan_fields)
            if plan_fields.contains_key("error") && !plan_fields.contains_key("dir") =>
        {
            out.push_str(&format!(
                "plan on disk: unusable: {}\n",
                scalar(&plan["error"])
            ));
        }
        _ => {
            let state = if plan["applied"] == true {
                "applied (current)".to_string()
            } else if plan["staged"] == true {
                "binary staged".to_string()
            } else if let Some(error) = plan.get("error") {
                format!("unusable: {}", scalar(error))
            } else {
                "binary NOT staged".to_string()
            };
            out.push_str(&format!(
                "plan on disk: {} at height {} -> upgrades/{}: {state}\n",
                scalar(&plan["name"]),
                scalar(&plan["height"]),
                scalar(&plan["dir"]),
            ));
        }
    }
    if !field("in_progress").is_null() {
        out.push_str(&format!(
            "upgrade in progress: {}\n",
            scalar(field("in_progress"))
        ));
    }
    if !field("scheduled").is_null() {
        out.push_str(&format!("scheduled: {}\n", scalar(field("scheduled"))));
    }
    let records = field("records");
    let parsed: Option<Vec<palisade_wire::upgrade_record::UpgradeRecord>> =
        serde_json::from_value(records.clone()).ok();
    match parsed {
        Some(records) if records.is_empty() => out.push_str("upgrade record: none yet\n"),
        Some(records) => {
            out.push_str(&format!("upgrade record (last {}):\n", records.len()));
            for line in crate::records::render_table(&records).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        None if records.is_null() => {}
        None => {
            out.push_str("upgrade record:\n");
            write_value(&mut out, records, 1);
        }
    }
    if let Some(skipped) = fields.get("records_unreadable_lines") {
        out.push_str(&format!(
            "  ({} unreadable line(s) in the record skipped)\n",
            scalar(skipped)
        ));
    }
    out
}

/// `upgrade.add`: what was staged where.
fn upgrade_added(fields: &Map<String, Value>) -> String {
    let get = |name: &str| fields.get(name).map(scalar).unwrap_or_else(|| "-".into());
    format!(
        "staged {} as upgrades/{}\n  path:   {}\n  sha256: {}\n  size:   {} bytes\n  from:   {}\n",
        get("name"),
        get("dir"),
        get("path"),
        get("sha256"),
        get("size"),
        get("source"),
    )
}

/// `upgrade.cancel`: what was removed, and any warning.
fn upgrade_cancelled(fields: &Map<String, Value>) -> String {
    let get = |name: &str| fields.get(name).map(scalar).unwrap_or_else(|| "-".into());
    let mut out = format!("cancelled {}: removed {}\n", get("name"), get("removed"));
    for key in ["warning", "note"] {
        if let Some(text) = fields.get(key) {
            out.push_str(&format!("{key}: {}\n", scalar(text)));
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
                if is_scalar(field) {
                    out.push_str(&format!("{indent}{}: {}\n", clean(key), scalar(field)));
                } else if is_empty(field) {
                    out.push_str(&format!("{indent}{}: none\n", clean(key)));
                } else {
                    out.push_str(&format!("{indent}{}:\n", clean(key)));
                    write_value(out, field, depth + 1);
                }
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
        ];
        for (method, value, expected) in cases {
            assert_eq!(render(method, &value), expected, "{method} {value}");
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

        let unstaged = json!({"current": "genesis", "staged": [],
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
        let invalid = json!({"current": "genesis", "staged": [],
            "plan_on_disk": {"error": "height -3 must be positive"}, "records": []});
        assert!(
            render("upgrade.list", &invalid)
                .contains("plan on disk: unusable: height -3 must be positive\n")
        );
    }
}
