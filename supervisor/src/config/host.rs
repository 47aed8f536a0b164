//! `[host]`: what the supervisor does to the machine it runs on — today the
//! command that `host.shutdown` runs (see `docs/rpc.md` §3 and
//! `docs/configuration.md`).
//!
//! ```toml
//! [host]
//! shutdown-command = ["systemctl", "poweroff"]   # the default
//! ```
//!
//! The command is an argument vector, never a shell line: nothing in it is
//! interpreted. The program is an absolute path or a bare name looked up in
//! `PATH` when it runs; a relative path with `/` would depend on the
//! supervisor's working directory, so it is refused.

use serde::Deserialize;

use super::Resolver;

/// Most arguments (program included) in `host.shutdown-command`.
pub const MAX_SHUTDOWN_ARGS: usize = 32;
/// Longest single argument of `host.shutdown-command`, in bytes.
pub const MAX_SHUTDOWN_ARG_BYTES: usize = 4096;

/// `[host]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHost {
    /// Default `["systemctl", "poweroff"]`: program and arguments run by a
    /// confirmed `host.shutdown`, after the node is stopped, the final
    /// backup taken and the keys wiped.
    pub shutdown_command: Option<Vec<String>>,
}

/// The validated `[host]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// Program and arguments; never empty, the program is an absolute path
    /// or a bare name.
    pub shutdown_command: Vec<String>,
}

impl Default for HostSettings {
    fn default() -> HostSettings {
        HostSettings {
            shutdown_command: vec!["systemctl".into(), "poweroff".into()],
        }
    }
}

/// Why a shutdown command is unusable, or `Ok`.
pub fn check_shutdown_command(command: &[String]) -> Result<(), String> {
    let Some(program) = command.first() else {
        return Err(
            "must name a program, e.g. [\"systemctl\", \"poweroff\"] (an empty list would \
             leave the host running)"
                .into(),
        );
    };
    if command.len() > MAX_SHUTDOWN_ARGS {
        return Err(format!(
            "has {} elements, more than {MAX_SHUTDOWN_ARGS}",
            command.len()
        ));
    }
    if let Some(index) = command.iter().position(|arg| arg.contains('\0')) {
        return Err(format!("element {} contains a NUL byte", index + 1));
    }
    if let Some(index) = command
        .iter()
        .position(|arg| arg.len() > MAX_SHUTDOWN_ARG_BYTES)
    {
        return Err(format!(
            "element {} is longer than {MAX_SHUTDOWN_ARG_BYTES} bytes",
            index + 1
        ));
    }
    if program.trim().is_empty() {
        return Err("the program (first element) is empty".into());
    }
    if program.contains('/') && !program.starts_with('/') {
        return Err(format!(
            "the program '{program}' must be an absolute path or a bare name found in PATH, \
             not a relative path"
        ));
    }
    Ok(())
}

pub(super) fn validate_host(r: &mut Resolver<'_>, raw: RawHost) -> HostSettings {
    let Some(command) = raw.shutdown_command else {
        return HostSettings::default();
    };
    if let Err(reason) = check_shutdown_command(&command) {
        let origin = r.file_origin("host.shutdown-command");
        r.report(origin, reason);
        return HostSettings::default();
    }
    HostSettings {
        shutdown_command: command,
    }
}

#[cfg(test)]
mod tests {

    use crate::config::test_support::load;

    #[test]
    fn shutdown_command_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let many = format!(
            "[{}]",
            std::iter::repeat_n("\"x\"", 33)
                .collect::<Vec<_>>()
                .join(",")
        );
        let long = format!("[\"/bin/echo\", \"{}\"]", "a".repeat(4097));
        /// The command, or the words of the error.
        type Expected = Result<Vec<&'static str>, &'static [&'static str]>;
        let cases: Vec<(String, Expected)> = vec![
            (String::new(), Ok(vec!["systemctl", "poweroff"])),
            ("[host]\n".into(), Ok(vec!["systemctl", "poweroff"])),
            (
                "[host]\nshutdown-command = [\"/sbin/shutdown\", \"-h\", \"now\"]\n".into(),
                Ok(vec!["/sbin/shutdown", "-h", "now"]),
            ),
            (
                "[host]\nshutdown-command = [\"poweroff\"]\n".into(),
                Ok(vec!["poweroff"]),
            ),
            (
                "[host]\nshutdown-command = []\n".into(),
                Err(&["host.shutdown-command", "must name a program"]),
            ),
            (
                "[host]\nshutdown-command = [\"\"]\n".into(),
                Err(&["host.shutdown-command", "program (first element) is empty"]),
            ),
            (
                "[host]\nshutdown-command = [\"bin/poweroff\"]\n".into(),
                Err(&["host.shutdown-command", "not a relative path"]),
            ),
            (
                "[host]\nshutdown-command = [\"/bin/echo\", \"a\\u0000b\"]\n".into(),
                Err(&["host.shutdown-command", "element 2 contains a NUL byte"]),
            ),
            (
                format!("[host]\nshutdown-command = {many}\n"),
                Err(&["host.shutdown-command", "more than 32"]),
            ),
            (
                format!("[host]\nshutdown-command = {long}\n"),
                Err(&["element 2 is longer than 4096 bytes"]),
            ),
            (
                "[host]\nshutdown-command = \"systemctl poweroff\"\n".into(),
                Err(&["invalid type"]),
            ),
            (
                "[host]\nreboot-command = [\"reboot\"]\n".into(),
                Err(&["unknown field", "reboot-command"]),
            ),
        ];
        for (text, expected) in cases {
            let result = load(dir.path(), &text);
            match expected {
                Ok(command) => {
                    let config = result.unwrap_or_else(|error| panic!("{text:?}: {error}"));
                    assert_eq!(config.host.shutdown_command, command, "{text:?}");
                }
                Err(words) => {
                    let message = result.expect_err(&text).to_string();
                    for word in words {
                        assert!(message.contains(word), "{text:?}: {word:?} in {message}");
                    }
                }
            }
        }
    }
}
