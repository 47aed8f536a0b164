//! Renderings of `backup.list`, `backup.restore` and `host.shutdown`.
//! A result of another shape falls back to the generic rendering.

use palisade_client::peer_text::clean;
use serde_json::{Map, Value};

use super::{generic, scalar, table};

/// `backup.list`: per store, its backups newest first as a table, or why
/// the store could not be read.
pub(super) fn backup_list(fields: &Map<String, Value>) -> String {
    let Some(Value::Array(stores)) = fields.get("stores") else {
        return generic(&Value::Object(fields.clone()));
    };
    if stores.is_empty() {
        return "no backup stores (no [vault] configured)\n".into();
    }
    let mut out = String::new();
    for store in stores {
        let name = scalar(&store["store"]);
        if store["reachable"] != true {
            out.push_str(&format!(
                "{name}: UNREACHABLE: {}\n",
                scalar(&store["error"])
            ));
            continue;
        }
        let backups = store["backups"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let total = store["total"].as_u64().unwrap_or(backups.len() as u64);
        if backups.is_empty() {
            out.push_str(&format!("{name}: no backups\n"));
            continue;
        }
        if store["truncated"] == true {
            out.push_str(&format!(
                "{name}: {} of {total} backups, newest first (--limit N for more)\n",
                backups.len()
            ));
        } else {
            out.push_str(&format!("{name}: {total} backups, newest first\n"));
        }
        let rows: Vec<[String; 5]> = backups
            .iter()
            .map(|backup| {
                [
                    scalar(&backup["sequence"]),
                    scalar(&backup["height"]),
                    scalar(&backup["watermark"]),
                    backup["at"].as_u64().map(utc).unwrap_or_else(|| "-".into()),
                    scalar(&backup["file"]),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SEQUENCE", "HEIGHT", "WATERMARK", "WRITTEN (UTC)", "FILE"],
            &rows,
            "  ",
        ));
    }
    out
}

/// `backup.restore`: what was restored from where, and what it replaced.
pub(super) fn backup_restored(fields: &Map<String, Value>) -> String {
    let Some(Value::Object(restored)) = fields.get("restored") else {
        return generic(&Value::Object(fields.clone()));
    };
    let get = |map: &Map<String, Value>, name: &str| {
        map.get(name).map(scalar).unwrap_or_else(|| "-".into())
    };
    format!(
        "restored the sign state to {} from {} (sequence {}) in store {}\n  file: {}\n  was:  {}\n",
        get(restored, "watermark"),
        get(restored, "file"),
        get(restored, "sequence"),
        get(restored, "store"),
        get(fields, "path"),
        get(fields, "previous"),
    )
}

/// `host.shutdown`: the confirmation offer, or the shutdown under way.
pub(super) fn host_shutdown(fields: &Map<String, Value>) -> String {
    let command = command_line(fields.get("command"));
    if fields.get("shutting_down") == Some(&Value::Bool(true)) {
        return format!(
            "host shutdown under way (node: {}): the node stops, a final backup is taken, the \
             keys are wiped, then `{command}` runs on the validator host and the supervisor \
             exits\n",
            fields.get("node").map(scalar).unwrap_or_else(|| "-".into()),
        );
    }
    if let Some(token) = fields.get("confirm") {
        return format!(
            "to shut the host down (`{command}`), confirm within {} s with:\n  \
             palisade-ctl call host.shutdown --params '{{\"confirm\":\"{}\"}}'\n",
            fields
                .get("expires_in_s")
                .map(scalar)
                .unwrap_or_else(|| "-".into()),
            scalar(token),
        );
    }
    generic(&Value::Object(fields.clone()))
}

/// A command vector as one line, arguments with spaces quoted.
pub fn command_line(command: Option<&Value>) -> String {
    match command {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| {
                let text = match part {
                    Value::String(text) => clean(text),
                    other => scalar(other),
                };
                if text.is_empty() || text.contains(char::is_whitespace) {
                    format!("'{text}'")
                } else {
                    text
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => scalar(other),
        None => "-".into(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC); past year 9999 (only a
/// broken or hostile peer sends that) the plain number.
fn utc(seconds: u64) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
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

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::*;
    use serde_json::json;

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
    }

    #[test]
    fn backup_listing() {
        let result = json!({"stores": [
            {"store": "local", "reachable": true, "total": 3, "truncated": true, "backups": [
                {"file": "backup-sim-1-AB-00000000000000000009-h30.age", "sequence": 9,
                 "height": 30, "watermark": "height 30 round 0 step 3", "at": 1_700_000_000u64},
                {"file": "backup-sim-1-AB-00000000000000000008-h29.age", "sequence": 8,
                 "height": 29, "watermark": null, "at": null},
            ]},
            {"store": "bastion:b1", "reachable": false, "error": "store unavailable:\u{1b}[31m"},
            {"store": "dir1:/mnt/b", "reachable": true, "total": 0, "truncated": false,
             "backups": []},
        ]});
        let text = render("backup.list", &result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "local: 2 of 3 backups, newest first (--limit N for more)",
                "  SEQUENCE  HEIGHT  WATERMARK                 WRITTEN (UTC)        FILE",
                "  9         30      height 30 round 0 step 3  2023-11-14 22:13:20  \
                 backup-sim-1-AB-00000000000000000009-h30.age",
                "  8         29      -                         -                    \
                 backup-sim-1-AB-00000000000000000008-h29.age",
                "bastion:b1: UNREACHABLE: store unavailable:\\u{1b}[31m",
                "dir1:/mnt/b: no backups",
            ]
        );
        assert_eq!(
            render("backup.list", &json!({"stores": []})),
            "no backup stores (no [vault] configured)\n"
        );
    }

    #[test]
    fn restore_and_shutdown() {
        let restored = json!({
            "restored": {"store": "local", "file": "backup-x.age", "sequence": 4,
                         "watermark": "height 12 round 0 step 3"},
            "previous": "height 5 round 0 step 3",
            "path": "/h/data/priv_validator_state.json",
        });
        assert_eq!(
            render("backup.restore", &restored),
            "restored the sign state to height 12 round 0 step 3 from backup-x.age (sequence 4) \
             in store local\n  file: /h/data/priv_validator_state.json\n  was:  height 5 round 0 step 3\n"
        );
        let offer = json!({"confirm": "00ff", "expires_in_s": 60,
                           "command": ["systemctl", "poweroff"]});
        assert_eq!(
            render("host.shutdown", &offer),
            "to shut the host down (`systemctl poweroff`), confirm within 60 s with:\n  \
             palisade-ctl call host.shutdown --params '{\"confirm\":\"00ff\"}'\n"
        );
        let started = json!({"shutting_down": true, "node": "stopping",
                             "command": ["/bin/sh", "-c", "touch /tmp/x"]});
        assert_eq!(
            render("host.shutdown", &started),
            "host shutdown under way (node: stopping): the node stops, a final backup is taken, \
             the keys are wiped, then `/bin/sh -c 'touch /tmp/x'` runs on the validator host \
             and the supervisor exits\n"
        );
        // Other shapes: the generic rendering.
        assert_eq!(render("backup.restore", &json!({"x": 1})), "x: 1\n");
        assert_eq!(render("host.shutdown", &json!({})), "ok\n");
    }
}
