//! Renderings of `backup.list`, `backup.restore` and `host.shutdown`.

use palisade_wire::rpc::results::{
    BackupListResult, BackupRestoreResult, HostShutdownResult, ShutdownToken, ShuttingDown,
    StoreListing,
};

use super::{clean, table, text, utc};

/// `backup.list`: per store, its backups newest first as a table, or why
/// the store could not be read.
pub(super) fn backup_list(list: BackupListResult) -> String {
    if list.stores.is_empty() {
        return "no backup stores (no [vault] configured)\n".into();
    }
    let mut out = String::new();
    for store in &list.stores {
        let (name, total, truncated, backups) = match store {
            StoreListing::Unreachable { store, error } => {
                out.push_str(&format!(
                    "{}: UNREACHABLE: {}\n",
                    clean(store),
                    clean(error)
                ));
                continue;
            }
            StoreListing::Reachable {
                store,
                total,
                truncated,
                backups,
            } => (clean(store), total, *truncated, backups),
        };
        if backups.is_empty() {
            out.push_str(&format!("{name}: no backups\n"));
            continue;
        }
        if truncated {
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
                    backup.sequence.to_string(),
                    backup.height.to_string(),
                    text(backup.watermark.as_deref()),
                    backup.at.map(utc).unwrap_or_else(|| "-".into()),
                    clean(&backup.file),
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
pub(super) fn backup_restored(result: BackupRestoreResult) -> String {
    let restored = &result.restored;
    format!(
        "restored the sign state to {} from {} (sequence {}) in store {}\n  file: {}\n  was:  {}\n",
        clean(&restored.watermark),
        clean(&restored.file),
        restored.sequence,
        clean(&restored.store),
        clean(&result.path),
        clean(&result.previous),
    )
}

/// `host.shutdown`: the confirmation offer, or the shutdown under way.
pub(super) fn host_shutdown(result: HostShutdownResult) -> String {
    match result {
        HostShutdownResult::ShuttingDown(ShuttingDown { node, command, .. }) => format!(
            "host shutdown under way (node: {node}): the node stops, a final backup is taken, \
             the keys are wiped, then `{}` runs on the validator host and the supervisor \
             exits\n",
            command_line(&command),
        ),
        HostShutdownResult::TokenIssued(ShutdownToken {
            confirm,
            expires_in_s,
            command,
        }) => format!(
            "to shut the host down (`{}`), confirm within {expires_in_s} s with:\n  \
             palisade-ctl call host.shutdown --params '{{\"confirm\":\"{}\"}}'\n",
            command_line(&command),
            clean(&confirm),
        ),
    }
}

/// A command vector as one line, arguments with spaces quoted.
pub fn command_line(command: &[String]) -> String {
    command
        .iter()
        .map(|part| {
            let text = clean(part);
            if text.is_empty() || text.contains(char::is_whitespace) {
                format!("'{text}'")
            } else {
                text
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use serde_json::json;

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
