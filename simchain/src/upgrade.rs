//! The SDK's x/upgrade behaviour, as pure decisions.
//!
//! At each height the node asks [`decide`] what to do about the chain's plans:
//!
//! | plan state (not yet applied)                       | binary has handler | action |
//! |----------------------------------------------------|--------------------|--------|
//! | height reached (plan height ≤ current height)      | yes                | [`UpgradeAction::Apply`] |
//! | reached at exactly this height, or while running    | no                 | [`UpgradeAction::Halt`]: write `upgrade-info.json`, log `UPGRADE "name" NEEDED at height: H: info`, stop signing |
//! | already passed when the process starts             | no                 | [`UpgradeAction::ExitNeeded`]: same file and line, exit non-zero (the real app panics) |
//! | not reached yet                                    | yes                | [`UpgradeAction::UpdatedBeforeTrigger`]: `BINARY UPDATED BEFORE TRIGGER!`, exit non-zero |
//!
//! `data/upgrade-info.json` is what the SDK's `DumpUpgradeInfoToDisk` writes
//! ([`upgrade_info_json`]): `{"name":"v2","time":"0001-01-01T00:00:00Z","height":50,"info":"..."}`,
//! `info` left out when empty, mode 0600, written in place (not atomically).

use crate::protocol::UpgradePlan;

/// What the node must do about upgrade plans at a height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeAction {
    /// Nothing pending.
    Continue,
    /// Run the handler, record the upgrade as applied, continue.
    Apply(UpgradePlan),
    /// Upgrade needed: write upgrade-info, log the line, stop signing, stay alive.
    Halt(UpgradePlan),
    /// Upgrade needed at start: write upgrade-info, log the line, exit non-zero.
    ExitNeeded(UpgradePlan),
    /// The binary already carries a handler for a plan the chain has not reached.
    UpdatedBeforeTrigger(UpgradePlan),
}

/// Whether this is the first height seen since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// First height after start: passed plans mean this binary is too old to run at all.
    Startup,
    /// Later heights.
    Running,
}

/// Decides for the plans known at `height`. Plans are considered in height order.
pub fn decide(
    plans: &[UpgradePlan],
    applied: &[String],
    handlers: &[String],
    height: u64,
    phase: Phase,
) -> UpgradeAction {
    let mut pending: Vec<&UpgradePlan> = plans
        .iter()
        .filter(|p| !applied.contains(&p.name))
        .collect();
    pending.sort_by_key(|p| p.height);
    for plan in pending {
        let has_handler = handlers.contains(&plan.name);
        if plan.height <= height {
            return if has_handler {
                UpgradeAction::Apply(plan.clone())
            } else if plan.height < height && phase == Phase::Startup {
                UpgradeAction::ExitNeeded(plan.clone())
            } else {
                UpgradeAction::Halt(plan.clone())
            };
        }
        if has_handler {
            return UpgradeAction::UpdatedBeforeTrigger(plan.clone());
        }
    }
    UpgradeAction::Continue
}

/// The contents of `data/upgrade-info.json` for `plan` halting at `height`.
///
/// `x/upgrade/keeper/keeper.go` `DumpUpgradeInfoToDisk` (SDK v0.47, v0.50) builds
/// `types.Plan{Name, Height: blockHeight, Info}` and writes `json.Marshal` of it. `Plan`'s Go
/// struct tags (`x/upgrade/types/upgrade.pb.go`) give the shape: `name` and `info` are
/// `omitempty`, `height` is `omitempty` and a bare number (plain `encoding/json`, not Amino), and
/// the deprecated `time` is a non-pointer `time.Time` without `omitempty`, so the zero time
/// `"0001-01-01T00:00:00Z"` is always there. Keys come in struct order, compact, no newline.
pub fn upgrade_info_json(plan: &UpgradePlan, height: u64) -> String {
    let mut out = String::from("{");
    if !plan.name.is_empty() {
        out.push_str("\"name\":");
        go_json_string(&mut out, &plan.name);
        out.push(',');
    }
    out.push_str("\"time\":\"0001-01-01T00:00:00Z\"");
    if height != 0 {
        out.push_str(&format!(",\"height\":{height}"));
    }
    if !plan.info.is_empty() {
        out.push_str(",\"info\":");
        go_json_string(&mut out, &plan.info);
    }
    out.push('}');
    out
}

/// Go's `encoding/json` string encoding (Go 1.22+, which SDK v0.50 builds with): `"` and `\`
/// escaped, `\b \f \n \r \t` short, other control bytes as `\u00xx`, and the HTML-safe escapes
/// `<` `>` `&` (`\u003c` …) and U+2028/U+2029.
pub fn go_json_string(out: &mut String, text: &str) {
    crate::console_log::escaped_json_string(out, text, |c| {
        matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}')
    });
}

/// The SDK's upgrade-needed message (Cosmovisor's legacy regex matches it).
pub fn upgrade_needed_message(plan: &UpgradePlan) -> String {
    format!(
        "UPGRADE \"{}\" NEEDED at height: {}: {}",
        plan.name, plan.height, plan.info
    )
}

/// The SDK's message for a binary that is newer than the chain.
pub fn updated_before_trigger_message(plan: &UpgradePlan) -> String {
    format!(
        "BINARY UPDATED BEFORE TRIGGER! UPGRADE \"{}\" - in binary but not executed on chain. Downgrade your binary",
        plan.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, height: u64) -> UpgradePlan {
        UpgradePlan {
            name: name.into(),
            height,
            info: "i".into(),
        }
    }

    #[test]
    fn decisions_table() {
        use Phase::*;
        use UpgradeAction::*;
        let plans = vec![plan("v2", 10)];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases = [
            ("before, no handler", 9, s(&[]), s(&[]), Running, Continue),
            (
                "before, handler",
                9,
                s(&[]),
                s(&["v2"]),
                Running,
                UpdatedBeforeTrigger(plan("v2", 10)),
            ),
            (
                "at height, no handler",
                10,
                s(&[]),
                s(&[]),
                Running,
                Halt(plan("v2", 10)),
            ),
            (
                "at height on start, no handler",
                10,
                s(&[]),
                s(&[]),
                Startup,
                Halt(plan("v2", 10)),
            ),
            (
                "at height, handler",
                10,
                s(&[]),
                s(&["v2"]),
                Running,
                Apply(plan("v2", 10)),
            ),
            (
                "past on start, no handler",
                15,
                s(&[]),
                s(&[]),
                Startup,
                ExitNeeded(plan("v2", 10)),
            ),
            (
                "past while running, no handler",
                15,
                s(&[]),
                s(&[]),
                Running,
                Halt(plan("v2", 10)),
            ),
            (
                "past, handler",
                15,
                s(&[]),
                s(&["v2"]),
                Startup,
                Apply(plan("v2", 10)),
            ),
            ("already applied", 15, s(&["v2"]), s(&[]), Startup, Continue),
            (
                "applied, handler kept",
                15,
                s(&["v2"]),
                s(&["v2"]),
                Running,
                Continue,
            ),
        ];
        for (name, height, applied, handlers, phase, expected) in cases {
            assert_eq!(
                decide(&plans, &applied, &handlers, height, phase),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn upgrade_info_has_the_sdk_plan_shape() {
        let with_info = UpgradePlan {
            name: "v2".into(),
            height: 50,
            info: r#"{"binaries":{"linux/amd64":"https://x/y?a=1&b=<2>"}}"#.into(),
        };
        assert_eq!(
            upgrade_info_json(&with_info, 50),
            r#"{"name":"v2","time":"0001-01-01T00:00:00Z","height":50,"info":"{\"binaries\":{\"linux/amd64\":\"https://x/y?a=1\u0026b=\u003c2\u003e\"}}"}"#
        );
        let bare = UpgradePlan {
            name: "v3".into(),
            height: 7,
            info: String::new(),
        };
        assert_eq!(
            upgrade_info_json(&bare, 7),
            r#"{"name":"v3","time":"0001-01-01T00:00:00Z","height":7}"#
        );
        let mut out = String::new();
        go_json_string(&mut out, "a\u{1}\n\u{2028}\u{7f}");
        assert_eq!(out, "\"a\\u0001\\n\\u2028\u{7f}\"");
    }

    #[test]
    fn message_matches_cosmovisor_regex_shape() {
        let message = upgrade_needed_message(&UpgradePlan {
            name: "v2".into(),
            height: 50,
            info: "{\"a\":1}".into(),
        });
        assert_eq!(message, "UPGRADE \"v2\" NEEDED at height: 50: {\"a\":1}");
    }
}
