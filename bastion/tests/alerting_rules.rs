//! The shipped Prometheus alerting rules (`packaging/prometheus/palisade-rules.yml`): real
//! `promtool` (Debian package `prometheus`, installed by scripts/test.sh) checks them and runs
//! their unit tests (`palisade-rules.test.yml`), and the tests must cover every alert, each
//! with a case where it fires and one where it stays silent. The alert names are the agreed
//! ones (docs/alerts.md); a renamed or missing rule fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The alerts the rules file must define, no more, no less.
const ALERTS: [&str; 9] = [
    "PalisadeBackupStale",
    "PalisadeBastionValidatorDown",
    "PalisadeLogSpoolFilling",
    "PalisadeMissedBlocks",
    "PalisadeSupervisorDown",
    "PalisadeTunnelDown",
    "PalisadeUpgradeBinaryMissing",
    "PalisadeValidatorNotSigning",
    "PalisadeVaultLockedWhilePrimary",
];

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// Runs `promtool ARGS` in the rules directory; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): install the Debian package `prometheus` \
                 (scripts/test.sh does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `- alert: NAME` entries of the rules file.
fn defined_alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// For each `alertname:` in the test file: whether it has a case expecting it to fire
/// (non-empty `exp_alerts`) and one expecting silence (`exp_alerts: []`).
fn tested_cases(tests: &str) -> BTreeMap<String, (bool, bool)> {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let entry = cases.entry(name.trim().to_string()).or_default();
        match lines.get(index + 1) {
            Some(&"exp_alerts: []") => entry.1 = true,
            Some(&"exp_alerts:") => entry.0 = true,
            other => panic!("alertname {name} is not followed by exp_alerts: {other:?}"),
        }
    }
    cases
}

#[test]
fn promtool_checks_the_rules() {
    let output = promtool(&["check", "rules", "palisade-rules.yml"]);
    assert!(
        output.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{output}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let output = promtool(&["test", "rules", "palisade-rules.test.yml"]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn the_rules_are_the_agreed_alerts_and_each_is_tested_both_ways() {
    let rules = std::fs::read_to_string(rules_dir().join("palisade-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("palisade-rules.test.yml")).unwrap();
    let defined = defined_alerts(&rules);
    let unique: BTreeSet<&str> = defined.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        defined.len(),
        "an alert is defined twice: {defined:?}"
    );
    assert_eq!(unique, BTreeSet::from(ALERTS));
    let cases = tested_cases(&tests);
    for alert in ALERTS {
        assert_eq!(
            cases.get(alert),
            Some(&(true, true)),
            "{alert}: the tests need a case where it fires and one where it stays silent"
        );
    }
    let unknown: Vec<&String> = cases
        .keys()
        .filter(|name| !unique.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts not in the rules: {unknown:?}"
    );
}

#[test]
fn the_coverage_check_sees_a_missing_case() {
    let tests = "    alert_rule_test:\n      - eval_time: 1m\n        alertname: A\n        exp_alerts: []\n\
                 \x20     - eval_time: 2m\n        alertname: B\n        exp_alerts:\n          - exp_labels: {}\n";
    let cases = tested_cases(tests);
    assert_eq!(cases["A"], (false, true));
    assert_eq!(cases["B"], (true, false));
    assert_eq!(
        defined_alerts("rules:\n  - alert: A\n    expr: up == 0\n  - record: x\n"),
        ["A"]
    );
}
