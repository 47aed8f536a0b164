//! The one rule for a validator's name, written once for every program
//! that checks one: the supervisor (`rpc.name`, and the names of its
//! `[[bastion]]` and `[[operator]]` entries), the bastion (`[[validator]]
//! name`, `client.operator`) and `palisade-ctl` (`[[validator]] name`).
//!
//! A validator's name crosses process boundaries (the greeting, the backup
//! protocol) and becomes part of paths on a bastion (its backup directory,
//! `/run/palisade-bastion/NAME.sock`) and of command lines
//! (`backup-session --validator NAME`). Hence: 1 to
//! [`MAX_VALIDATOR_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`, not starting
//! with `-` (it would read as an option) or `.` (a hidden file, `..`).

/// Longest validator name, in bytes (all of them ASCII).
pub const MAX_VALIDATOR_NAME_BYTES: usize = 64;

/// Why `name` is not a valid validator name, or `None` when it is. The
/// reason names the value (quoted and escaped, as it may hold anything) so
/// a configuration can report it as `file: key: reason`.
pub fn validator_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_VALIDATOR_NAME_BYTES {
        return Some(format!(
            "{name:?} is longer than {MAX_VALIDATOR_NAME_BYTES} bytes"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) {
        return Some(format!(
            "{name:?} may use only ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    if name.starts_with(['-', '.']) {
        return Some(format!("{name:?} must not start with '-' or '.'"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_by_one_rule() {
        let longest = "v".repeat(MAX_VALIDATOR_NAME_BYTES);
        let too_long = "v".repeat(MAX_VALIDATOR_NAME_BYTES + 1);
        // (name, None when valid, else a fragment of the reason)
        let rows: &[(&str, Option<&str>)] = &[
            ("val-a", None),
            ("Validator_1.eu", None),
            ("a", None),
            ("0", None),
            ("a-", None),
            ("a.", None),
            ("_a", None),
            ("a..b", None),
            (&longest, None),
            ("", Some("must not be empty")),
            (&too_long, Some("is longer than 64 bytes")),
            ("-a", Some("\"-a\" must not start with '-' or '.'")),
            ("-", Some("must not start with")),
            (".a", Some("must not start with")),
            ("..", Some("must not start with")),
            ("a b", Some("\"a b\" may use only ASCII letters")),
            ("a/b", Some("may use only")),
            ("a\\b", Some("may use only")),
            ("a:b", Some("may use only")),
            ("a\nb", Some("\"a\\nb\" may use only")),
            ("a\u{1b}[2J", Some("\"a\\u{1b}[2J\" may use only")),
            ("välidator", Some("may use only")),
            ("a\u{0}", Some("may use only")),
        ];
        for (name, expected) in rows {
            let problem = validator_name_problem(name);
            match expected {
                None => assert_eq!(problem, None, "{name:?}"),
                Some(fragment) => {
                    let problem = problem.unwrap_or_else(|| panic!("{name:?} accepted"));
                    assert!(problem.contains(fragment), "{name:?}: {problem}");
                }
            }
        }
    }

    #[test]
    fn the_limit_counts_bytes() {
        // 32 two-byte characters are 64 bytes, but not ASCII: refused for
        // the charset, never for the length.
        let name = "é".repeat(32);
        let problem = validator_name_problem(&name).unwrap();
        assert!(problem.contains("may use only"), "{problem}");
        let name = "é".repeat(33);
        let problem = validator_name_problem(&name).unwrap();
        assert!(problem.contains("longer than"), "{problem}");
    }
}
