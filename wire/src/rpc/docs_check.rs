//! `docs/rpc.md` is checked against the typed contract:
//!
//! - every method row of the §3 table names a method with a type, with the
//!   same role, and the params members the row shows are exactly that
//!   method's params fields; every method that needs a role has a row;
//! - every example request of §2 and §7 (`→ {…}` lines) goes through its
//!   method's [`parse_params`](super::methods::parse_params): it must parse
//!   when the answer shown is a result or an error other than −32602, and
//!   fail with the same field and message when the answer is −32602 —
//!   unless that answer carries `data.known`, the mark of a check against
//!   the supervisor's own configuration (a store or bastion name), which
//!   the params types cannot make;
//! - every example `result` contains only members the result type knows,
//!   at every depth, and one shown whole (no `…` member) deserializes into
//!   that type.
//!
//! The examples' notation is §7's: `…` inside a string matches any text,
//! `…` as an object member stands for other members, as the last array
//! element for more elements; a request value `"<name>"` is a placeholder
//! that the supervisor's replay (`supervisor/tests/rpc_docs.rs`) fills in,
//! here with a value of the right form from [`PLACEHOLDERS`].
//!
//! The members a result type knows come from serializing example values
//! with every optional member set and every variant present
//! ([`Examples`]), so a member the type lacks is never "known".

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::methods::{
    AuthChallenge, AuthLogin, BackupList, BackupNow, BackupRestore, CATALOGUE, EipList, EipRotate,
    EipStatus, Health, HostShutdown, LogsTail, Method, NodeRestart, NodeStart, NodeStop, Status,
    TunnelList, TunnelReconnect, UpgradeAdd, UpgradeCancel, UpgradeList, VaultLock, VaultUnlock,
    method_info,
};
use super::results::*;
use super::{Role, code};
use crate::upgrade_record::{
    DetectionSource, StepRecord, UpgradeOutcome, UpgradeRecord, UpgradeStep,
};

/// Request placeholders of the examples and a value of the form the
/// supervisor's replay fills in.
const PLACEHOLDERS: &[(&str, &str)] = &[
    // An executable copy of the simulated daemon: an absolute path.
    ("staged binary", "/tmp/palisade-rpc-docs/simd-v2"),
    // The newest backup `backup.list` showed.
    (
        "newest",
        "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000005-h14.age",
    ),
    // The token `host.shutdown {}` returned.
    ("token", "0123456789abcdef0123456789abcdef"),
    // §2's signature (the login, not the params, checks its encoding).
    ("base64", "AAAA"),
];

/// The marker an object member `…` becomes while parsing.
const ANY_MEMBERS: &str = "…";
/// The marker an array element `…` becomes while parsing.
const MORE_ELEMENTS: &str = "\u{0}…more";

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rpc.md");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The numbered lines of the section whose heading starts with `heading`
/// (`## 3.`), up to the next `## ` heading.
fn section<'a>(document: &'a str, heading: &str) -> Vec<(usize, &'a str)> {
    let mut inside = false;
    let mut lines = Vec::new();
    for (index, text) in document.lines().enumerate() {
        if text.starts_with("## ") {
            inside = text.starts_with(heading);
            continue;
        }
        if inside {
            lines.push((index + 1, text));
        }
    }
    assert!(!lines.is_empty(), "docs/rpc.md has no `{heading}` section");
    lines
}

// ------------------------------------------------------------- §3 table

/// One method row of §3: its methods, role and the params members shown.
#[derive(Debug)]
struct Row {
    line: usize,
    methods: Vec<String>,
    role: String,
    params: Vec<String>,
}

/// The text inside backticks, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The member names of a params sketch such as `{"name","path"[,"checksum"]}`
/// or `{"lines":N}`: the quoted strings not in a value position.
fn sketch_members(sketch: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut rest = sketch;
    let mut after_colon = false;
    while let Some(start) = rest.find(['"', ':', ',', '{', '[']) {
        let symbol = rest.as_bytes()[start];
        rest = &rest[start + 1..];
        match symbol {
            b'"' => {
                let end = rest.find('"').expect("closed string in a params sketch");
                if !after_colon {
                    members.push(rest[..end].to_string());
                }
                rest = &rest[end + 1..];
                after_colon = false;
            }
            b':' => after_colon = true,
            _ => after_colon = false,
        }
    }
    members
}

/// The params a row's last cell shows. Its clauses are separated by `→`:
/// params, then results. The first clause is all params; a later clause
/// that is not the last (`…; then {"confirm":…} → …`) starts with the
/// previous call's result, and its params come after that first code span.
/// Only code spans that are JSON objects are params sketches.
fn row_params(cell: &str) -> Vec<String> {
    let clauses: Vec<&str> = cell.split('→').collect();
    let mut params = Vec::new();
    for (index, clause) in clauses.iter().enumerate().take(clauses.len() - 1) {
        let spans = code_spans(clause);
        let spans = if index == 0 {
            &spans[..]
        } else {
            &spans[1.min(spans.len())..]
        };
        for span in spans.iter().filter(|span| span.starts_with('{')) {
            params.extend(sketch_members(span));
        }
    }
    params.sort();
    params.dedup();
    params
}

fn section_3_rows(document: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (line, text) in section(document, "## 3.") {
        if !text.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = text
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            cells.len(),
            3,
            "docs/rpc.md:{line}: a method row has 3 cells: {text}"
        );
        rows.push(Row {
            line,
            methods: code_spans(cells[0]).iter().map(|s| s.to_string()).collect(),
            role: cells[1].to_string(),
            params: row_params(cells[2]),
        });
    }
    assert!(rows.len() > 10, "too few method rows in §3: {rows:?}");
    rows
}

#[test]
fn section_3_names_every_method_with_its_role_and_params() {
    let document = document();
    let mut listed = Vec::new();
    for row in section_3_rows(&document) {
        for method in &row.methods {
            if method.ends_with(".*") {
                // Reserved prefixes: no method exists yet.
                assert_eq!(row.role, "admin", "docs/rpc.md:{}", row.line);
                continue;
            }
            let info = method_info(method)
                .unwrap_or_else(|| panic!("docs/rpc.md:{}: {method} has no type", row.line));
            let role = info.role.map(|role| role.to_string()).unwrap_or_default();
            assert_eq!(row.role, role, "docs/rpc.md:{}: role of {method}", row.line);
            let mut fields: Vec<String> = (info.param_fields)()
                .iter()
                .map(|s| s.to_string())
                .collect();
            fields.sort();
            assert_eq!(
                row.params, fields,
                "docs/rpc.md:{}: params of {method} (the row, the type)",
                row.line
            );
            listed.push(method.clone());
        }
    }
    for info in CATALOGUE.iter().filter(|info| info.role.is_some()) {
        assert!(
            listed.iter().any(|name| name == info.name),
            "{} needs a role but has no row in docs/rpc.md §3",
            info.name
        );
    }
}

#[test]
fn row_params_read_the_sketches() {
    let cases: &[(&str, &[&str])] = &[
        ("→ `{\"ok\":bool}`", &[]),
        ("secret line (§4) → `{\"locked\":false}`", &[]),
        ("`{\"lines\":N}` (1–1000) → `{\"lines\":[…]}`", &["lines"]),
        (
            "`{\"name\",\"url\",\"checksum\"}` (checksum `sha256:…`) or \
             `{\"name\",\"path\"[,\"checksum\"]}` → `{name, dir}`",
            &["checksum", "name", "path", "url"],
        ),
        (
            "`{}` → `{\"confirm\":\"<token>\",\"expires_in_s\":60}`; then \
             `{\"confirm\":\"<token>\"}` → `{\"shutting_down\":true}`",
            &["confirm"],
        ),
        (
            "`{\"store\",\"file\"}` (as `backup.list` names them) → x",
            &["file", "store"],
        ),
    ];
    for (cell, expected) in cases {
        assert_eq!(row_params(cell), *expected, "{cell}");
    }
}

// ----------------------------------------------------------- examples

/// Turn the bare `…` of an example line (outside strings) into JSON: an
/// object member [`ANY_MEMBERS`]`:true`, or the array element
/// [`MORE_ELEMENTS`].
fn desugar(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut stack = Vec::new();
    for character in text.chars() {
        if in_string {
            out.push(character);
            match character {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match character {
            '"' => in_string = true,
            '{' | '[' => stack.push(character),
            '}' | ']' => {
                stack.pop();
            }
            '…' => {
                match stack.last() {
                    Some('{') => out.push_str(&format!("\"{ANY_MEMBERS}\":true")),
                    _ => out.push_str(&format!("\"{}\"", MORE_ELEMENTS.replace('\0', "\\u0000"))),
                }
                continue;
            }
            _ => {}
        }
        out.push(character);
    }
    out
}

/// `value` without the markers of [`desugar`]; whether an object member
/// `…` was among them.
fn strip_markers(value: &Value) -> (Value, bool) {
    match value {
        Value::Object(members) => {
            let mut open = members.contains_key(ANY_MEMBERS);
            let mut stripped = serde_json::Map::new();
            for (key, member) in members.iter().filter(|(key, _)| *key != ANY_MEMBERS) {
                let (member, inner) = strip_markers(member);
                open |= inner;
                stripped.insert(key.clone(), member);
            }
            (Value::Object(stripped), open)
        }
        Value::Array(elements) => {
            let mut open = false;
            let stripped = elements
                .iter()
                .filter(|element| element.as_str() != Some(MORE_ELEMENTS))
                .map(|element| {
                    let (element, inner) = strip_markers(element);
                    open |= inner;
                    element
                })
                .collect();
            (Value::Array(stripped), open)
        }
        other => (other.clone(), false),
    }
}

/// `…` inside `pattern` matches any text.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (index, part) in parts.iter().enumerate() {
        if index + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Fill in the placeholders of a request's params.
fn fill_placeholders(value: &Value, line: usize) -> Value {
    match value {
        Value::String(text) if text.starts_with('<') && text.ends_with('>') => {
            let name = &text[1..text.len() - 1];
            let (_, filled) = PLACEHOLDERS
                .iter()
                .find(|(known, _)| *known == name)
                .unwrap_or_else(|| panic!("docs/rpc.md:{line}: unknown placeholder {text}"));
            Value::String(filled.to_string())
        }
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (key.clone(), fill_placeholders(member, line)))
                .collect(),
        ),
        Value::Array(elements) => Value::Array(
            elements
                .iter()
                .map(|element| fill_placeholders(element, line))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// An example request and the answer shown for it.
#[derive(Debug)]
struct Exchange {
    line: usize,
    method: String,
    params: Value,
    answer_line: usize,
    /// The answer, markers of [`desugar`] still in.
    answer: Value,
}

/// The example requests of `lines` (a section) with their answers: each
/// `→ {` line and the next `← ` line.
fn exchanges(lines: &[(usize, &str)]) -> Vec<Exchange> {
    let mut found = Vec::new();
    for (index, (line, text)) in lines.iter().enumerate() {
        let Some(request) = text.strip_prefix("→ {") else {
            continue;
        };
        let request: Value = serde_json::from_str(&format!("{{{request}"))
            .unwrap_or_else(|error| panic!("docs/rpc.md:{line}: request is not JSON: {error}"));
        let method = request["method"]
            .as_str()
            .unwrap_or_else(|| panic!("docs/rpc.md:{line}: request without a method"))
            .to_string();
        let params = fill_placeholders(request.get("params").unwrap_or(&Value::Null), *line);
        let (answer_line, answer) = lines[index + 1..]
            .iter()
            .find_map(|(answer_line, text)| {
                text.strip_prefix("← ").map(|answer| (*answer_line, answer))
            })
            .unwrap_or_else(|| panic!("docs/rpc.md:{line}: no answer follows"));
        let answer: Value = serde_json::from_str(&desugar(answer)).unwrap_or_else(|error| {
            panic!("docs/rpc.md:{answer_line}: answer is not JSON: {error}")
        });
        found.push(Exchange {
            line: *line,
            method,
            params,
            answer_line,
            answer,
        });
    }
    found
}

/// Whether the params check agrees with the answer shown; `Err` says how
/// it does not.
fn params_agree(exchange: &Exchange) -> Result<(), String> {
    let info =
        method_info(&exchange.method).ok_or_else(|| format!("{} has no type", exchange.method))?;
    let checked = (info.check_params)(exchange.params.clone());
    let shown = exchange.answer.get("error");
    let shown_code = shown.and_then(|error| error["code"].as_i64());
    match (checked, shown_code) {
        (Ok(()), Some(code::INVALID_PARAMS)) => {
            let data = &shown.expect("an error")["data"];
            if data.get("known").is_some() {
                Ok(())
            } else {
                Err("the answer is −32602 but the params parse".into())
            }
        }
        (Ok(()), _) => Ok(()),
        (Err(error), Some(code::INVALID_PARAMS)) => {
            let shown = shown.expect("an error");
            let field = shown["data"]["field"].as_str();
            if field.is_some() && error.field() != field {
                return Err(format!(
                    "field {:?}, the answer shows {field:?}",
                    error.field()
                ));
            }
            let message = shown["message"].as_str().unwrap_or("");
            if glob(message, &error.message) {
                Ok(())
            } else {
                Err(format!(
                    "message {:?}, the answer shows {message:?}",
                    error.message
                ))
            }
        }
        (Err(error), _) => Err(format!("the params are refused: {error:?}")),
    }
}

/// The example exchanges of §2 and §7.
fn all_exchanges(document: &str) -> Vec<Exchange> {
    let mut all = exchanges(&section(document, "## 2."));
    all.extend(exchanges(&section(document, "## 7.")));
    all
}

#[test]
fn example_requests_parse_as_their_answers_say() {
    let document = document();
    let all = all_exchanges(&document);
    let mut failures = Vec::new();
    for exchange in &all {
        if let Err(problem) = params_agree(exchange) {
            failures.push(format!(
                "docs/rpc.md:{} ({}): {problem}",
                exchange.line, exchange.method
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Every method has an example request somewhere.
    for info in CATALOGUE {
        assert!(
            all.iter().any(|exchange| exchange.method == info.name),
            "{} has no example request in docs/rpc.md §2 or §7",
            info.name
        );
    }
    // The refusals shown are really checked here, not all skipped.
    let refused = all
        .iter()
        .filter(|exchange| {
            (method_info(&exchange.method).unwrap().check_params)(exchange.params.clone()).is_err()
        })
        .count();
    assert!(
        refused >= 3,
        "only {refused} example requests are refused by the params types"
    );
}

// ------------------------------------------------------------- results

/// The shape of the members a type can have: the union of its examples.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// Only `null` seen (or nothing).
    Nothing,
    /// A string, number or boolean.
    Scalar,
    /// An object and the shapes of its members.
    Object(BTreeMap<String, Shape>),
    /// An array and the shape of its elements.
    Array(Box<Shape>),
}

impl Shape {
    fn of(value: &Value) -> Shape {
        match value {
            Value::Null => Shape::Nothing,
            Value::Object(members) => Shape::Object(
                members
                    .iter()
                    .map(|(key, member)| (key.clone(), Shape::of(member)))
                    .collect(),
            ),
            Value::Array(elements) => Shape::Array(Box::new(
                elements
                    .iter()
                    .map(Shape::of)
                    .fold(Shape::Nothing, Shape::merge),
            )),
            _ => Shape::Scalar,
        }
    }

    fn merge(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Nothing, shape) | (shape, Shape::Nothing) => shape,
            (Shape::Scalar, Shape::Scalar) => Shape::Scalar,
            (Shape::Array(a), Shape::Array(b)) => Shape::Array(Box::new(a.merge(*b))),
            (Shape::Object(mut a), Shape::Object(b)) => {
                for (key, shape) in b {
                    let merged = match a.remove(&key) {
                        Some(known) => known.merge(shape),
                        None => shape,
                    };
                    a.insert(key, merged);
                }
                Shape::Object(a)
            }
            (a, b) => panic!("examples disagree on a member's kind: {a:?} and {b:?}"),
        }
    }

    /// The members of `value` this shape does not know, as paths.
    fn unknown_members(&self, value: &Value, path: &str, found: &mut Vec<String>) {
        match (self, value) {
            (_, Value::Null) => {}
            (Shape::Object(members), Value::Object(given)) => {
                for (key, member) in given {
                    let path = format!("{path}.{key}");
                    match members.get(key) {
                        Some(shape) => shape.unknown_members(member, &path, found),
                        None => found.push(path),
                    }
                }
            }
            (Shape::Array(element), Value::Array(given)) => {
                for (index, member) in given.iter().enumerate() {
                    element.unknown_members(member, &format!("{path}[{index}]"), found);
                }
            }
            (Shape::Scalar, given) if !given.is_object() && !given.is_array() => {}
            (shape, given) => {
                found.push(format!("{path} (a {given} where the type has {shape:?})"))
            }
        }
    }
}

/// Values of a result type that, together, set every optional member and
/// show every variant.
trait Examples: Sized {
    fn examples() -> Vec<Self>;
}

/// What the checks need of one method's result type.
struct ResultChecks {
    examples: Vec<Value>,
    parses: fn(Value) -> Result<(), String>,
}

fn result_checks_of<M: Method>() -> ResultChecks
where
    M::Result: Examples,
{
    fn parses<T: DeserializeOwned>(value: Value) -> Result<(), String> {
        serde_json::from_value::<T>(value)
            .map(drop)
            .map_err(|error| error.to_string())
    }
    ResultChecks {
        examples: M::Result::examples()
            .iter()
            .map(|example| serde_json::to_value(example).expect("results serialize"))
            .collect(),
        parses: parses::<M::Result>,
    }
}

fn result_checks(method: &str) -> Option<ResultChecks> {
    Some(match method {
        "auth.challenge" => result_checks_of::<AuthChallenge>(),
        "auth.login" => result_checks_of::<AuthLogin>(),
        "status" => result_checks_of::<Status>(),
        "health" => result_checks_of::<Health>(),
        "logs.tail" => result_checks_of::<LogsTail>(),
        "tunnel.list" => result_checks_of::<TunnelList>(),
        "upgrade.list" => result_checks_of::<UpgradeList>(),
        "backup.list" => result_checks_of::<BackupList>(),
        "node.start" => result_checks_of::<NodeStart>(),
        "node.stop" => result_checks_of::<NodeStop>(),
        "node.restart" => result_checks_of::<NodeRestart>(),
        "backup.now" => result_checks_of::<BackupNow>(),
        "upgrade.add" => result_checks_of::<UpgradeAdd>(),
        "upgrade.cancel" => result_checks_of::<UpgradeCancel>(),
        "tunnel.reconnect" => result_checks_of::<TunnelReconnect>(),
        "vault.unlock" => result_checks_of::<VaultUnlock>(),
        "vault.lock" => result_checks_of::<VaultLock>(),
        "backup.restore" => result_checks_of::<BackupRestore>(),
        "host.shutdown" => result_checks_of::<HostShutdown>(),
        "failover.status" => result_checks_of::<super::methods::FailoverStatusMethod>(),
        "failover.handoff" => result_checks_of::<super::methods::FailoverHandoff>(),
        "failover.pause" => result_checks_of::<super::methods::FailoverPause>(),
        "failover.resume" => result_checks_of::<super::methods::FailoverResume>(),
        "eip.list" => result_checks_of::<EipList>(),
        "eip.rotate" => result_checks_of::<EipRotate>(),
        "eip.status" => result_checks_of::<EipStatus>(),
        _ => return None,
    })
}

/// Problems of one example result of `method`.
fn result_problems(method: &str, result: &Value) -> Vec<String> {
    let checks = result_checks(method).expect("a method of the catalogue");
    let shape = checks
        .examples
        .iter()
        .map(Shape::of)
        .fold(Shape::Nothing, Shape::merge);
    let (stripped, open) = strip_markers(result);
    let mut problems = Vec::new();
    shape.unknown_members(&stripped, "result", &mut problems);
    let mut problems: Vec<String> = problems
        .into_iter()
        .map(|path| format!("{path} is not a member of the result type"))
        .collect();
    if !open && let Err(error) = (checks.parses)(stripped) {
        problems.push(format!("does not read as the result type: {error}"));
    }
    problems
}

#[test]
fn example_results_hold_only_members_their_types_know() {
    let document = document();
    let mut failures = Vec::new();
    let mut checked = 0;
    for exchange in all_exchanges(&document) {
        let Some(result) = exchange.answer.get("result") else {
            continue;
        };
        checked += 1;
        for problem in result_problems(&exchange.method, result) {
            failures.push(format!(
                "docs/rpc.md:{} ({}): {problem}",
                exchange.answer_line, exchange.method
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 15, "only {checked} example results checked");
}

#[test]
fn every_method_has_result_examples_that_round_trip() {
    for info in CATALOGUE {
        let checks = result_checks(info.name)
            .unwrap_or_else(|| panic!("{} has no result examples", info.name));
        assert!(!checks.examples.is_empty(), "{}", info.name);
        for example in checks.examples {
            (checks.parses)(example.clone())
                .unwrap_or_else(|error| panic!("{}: {example}: {error}", info.name));
        }
    }
}

#[test]
fn the_result_check_catches_unknown_members_and_wrong_shapes() {
    let problems = result_problems(
        "health",
        &serde_json::json!({"ok": true, "problems": [], "mood": "fine"}),
    );
    assert_eq!(problems, ["result.mood is not a member of the result type"]);
    let problems = result_problems(
        "upgrade.list",
        &serde_json::json!({"staged": [{"name": "v2", "colour": "red"}], "…": true}),
    );
    assert_eq!(
        problems,
        ["result.staged[0].colour is not a member of the result type"]
    );
    // Shown whole but not of the type: a state that does not exist.
    let problems = result_problems("node.stop", &serde_json::json!({"node": "asleep"}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    // Shown with `…`: only the members are checked.
    assert!(result_problems("node.stop", &serde_json::json!({"…": true})).is_empty());
}

#[test]
fn notation() {
    assert_eq!(
        desugar(r#"{"a":"x…y","b":[1,…],…}"#),
        r#"{"a":"x…y","b":[1,"\u0000…more"],"…":true}"#
    );
    let value: Value = serde_json::from_str(&desugar(r#"{"a":[{"b":1,…}]}"#)).unwrap();
    assert_eq!(
        strip_markers(&value),
        (serde_json::json!({"a": [{"b": 1}]}), true)
    );
    assert!(glob(
        "lines must be …, not 5000",
        "lines must be an integer, not 5000"
    ));
    assert!(glob("a…", "abc") && glob("…c", "abc") && glob("abc", "abc"));
    assert!(!glob("abc", "abcd") && !glob("a…d", "abc"));
}

// ------------------------------------------------------------ examples

fn last_backup() -> LastBackup {
    LastBackup {
        file: "backup-sim-1-0000000000000000000000000000000000000000-00000000000000000004-h9.age"
            .into(),
        sequence: 4,
        watermark: "height 9 round 0 step 3".into(),
        stores: vec!["local".into()],
        at: 1_795_390_000,
    }
}

fn tunnel_entry() -> TunnelEntry {
    TunnelEntry {
        name: "b1".into(),
        connected: true,
        connected_since: Some(1_795_390_000),
        last_error: Some("connection refused".into()),
        last_forward_error: Some("forward refused".into()),
        bytes_to_bastion: 1,
        bytes_from_bastion: 2,
        reconnects: 3,
        stopped: false,
        address: Some("54.9.9.9".into()),
        round_trip_ms: Some(12),
    }
}

impl Examples for AuthChallengeResult {
    fn examples() -> Vec<Self> {
        vec![AuthChallengeResult {
            challenge: "AAAA".into(),
        }]
    }
}

impl Examples for AuthLoginResult {
    fn examples() -> Vec<Self> {
        vec![AuthLoginResult {
            operator: "alice".into(),
            role: Role::Operator,
        }]
    }
}

impl Examples for StatusResult {
    fn examples() -> Vec<Self> {
        let full = StatusResult {
            validator: "val1".into(),
            supervisor: SupervisorStatus {
                version: "0.1.0".into(),
                pid: 1,
                started_at: 1_795_390_000,
                uptime_s: 5,
            },
            node: NodeStatus {
                state: NodeState::Running,
                pid: Some(2),
                version: Some("v1".into()),
                height: Some(12),
            },
            vault: VaultStatus {
                enabled: true,
                locked: Some(false),
            },
            watermark: Some(WatermarkStatus::Known {
                height: 12,
                round: 0,
                step: 3,
            }),
            last_backup: Some(last_backup()),
            tunnels: vec![tunnel_entry()],
            upgrades: UpgradesStatus {
                plan_on_disk: Some(PlannedUpgrade {
                    name: "v2".into(),
                    height: Some(20),
                }),
                scheduled: Some("v2 at height 20".into()),
            },
            failover: Some(failover_status()),
        };
        let other = StatusResult {
            vault: VaultStatus {
                enabled: false,
                locked: None,
            },
            watermark: Some(WatermarkStatus::Unreadable {
                error: "not JSON".into(),
            }),
            ..full.clone()
        };
        vec![full, other]
    }
}

fn failover_status() -> FailoverStatus {
    FailoverStatus {
        host_id: "val-a".into(),
        role: "primary".into(),
        leader: Some("val-a".into()),
        token: Some(42),
        lease_ttl_s: 10,
        signing_deadline_in_ms: Some(6500),
        paused: Some(false),
        takeover: "auto".into(),
        peers: vec!["val-b".into()],
        etcd_error: Some("etcd unreachable".into()),
        last_handoff: Some(HandoffSummary {
            from: "val-b".into(),
            to: "val-a".into(),
            from_token: 41,
            watermark: Some("height 9 round 0 step 3".into()),
            at_ms: 1_795_390_000_000,
            verified: true,
        }),
        note: Some("waiting".into()),
    }
}

impl Examples for FailoverStatus {
    fn examples() -> Vec<Self> {
        vec![failover_status()]
    }
}

impl Examples for FailoverHandoffResult {
    fn examples() -> Vec<Self> {
        vec![FailoverHandoffResult {
            to: "val-b".into(),
            token: 42,
            watermark: Some("height 9 round 0 step 3".into()),
            stores: vec!["local".into()],
            node: NodeState::Standby,
        }]
    }
}

impl Examples for FailoverPauseResult {
    fn examples() -> Vec<Self> {
        vec![FailoverPauseResult { paused: true }]
    }
}

impl Examples for HealthResult {
    fn examples() -> Vec<Self> {
        vec![HealthResult {
            ok: false,
            problems: vec!["node is stopped".into()],
        }]
    }
}

impl Examples for LogsTailResult {
    fn examples() -> Vec<Self> {
        vec![LogsTailResult {
            lines: vec!["a line".into()],
        }]
    }
}

impl Examples for TunnelListResult {
    fn examples() -> Vec<Self> {
        vec![TunnelListResult {
            tunnels: vec![tunnel_entry()],
        }]
    }
}

impl Examples for UpgradeListResult {
    fn examples() -> Vec<Self> {
        let record = UpgradeRecord {
            name: "v2".into(),
            height: Some(20),
            detected_by: DetectionSource::UpgradeInfoFile,
            detected_at: "2026-01-01T00:00:00Z".into(),
            steps: vec![StepRecord {
                step: UpgradeStep::Switch,
                duration_ms: 1,
                detail: "current: genesis -> upgrades/v2".into(),
            }],
            outcome: UpgradeOutcome::Failed("binary missing".into()),
            switch_ms: Some(80),
        };
        let full = UpgradeListResult {
            current: Some("genesis".into()),
            staged: vec![
                StagedUpgrade {
                    name: "v2".into(),
                    path: "/h/cosmovisor/upgrades/v2/bin/simd".into(),
                    current: false,
                    sha256: Some("ab".into()),
                    size: Some(1),
                    error: None,
                },
                StagedUpgrade {
                    name: "v3".into(),
                    path: "/h/cosmovisor/upgrades/v3/bin/simd".into(),
                    current: false,
                    sha256: None,
                    size: None,
                    error: Some("binary missing".into()),
                },
            ],
            staged_not_listed: Some(1),
            staging: vec!["v4".into()],
            plan_on_disk: Some(PlanOnDisk::Usable {
                name: "v2".into(),
                height: Some(20),
                dir: "v2".into(),
                staged: true,
                applied: false,
            }),
            in_progress: Some("upgrades/v2".into()),
            scheduled: Some("v2 at height 20".into()),
            records: vec![record],
            records_unreadable_lines: Some(1),
        };
        let bad_name = UpgradeListResult {
            plan_on_disk: Some(PlanOnDisk::BadName {
                name: "../x".into(),
                height: Some(20),
                error: "bad name".into(),
            }),
            ..full.clone()
        };
        let unreadable = UpgradeListResult {
            plan_on_disk: Some(PlanOnDisk::Unreadable {
                error: "incomplete (still being written?)".into(),
            }),
            ..full.clone()
        };
        vec![full, bad_name, unreadable]
    }
}

impl Examples for BackupListResult {
    fn examples() -> Vec<Self> {
        vec![BackupListResult {
            stores: vec![
                StoreListing::Reachable {
                    store: "local".into(),
                    total: 1,
                    truncated: false,
                    backups: vec![ListedBackup {
                        file: last_backup().file,
                        sequence: 4,
                        height: 9,
                        watermark: Some("height 9 round 0 step 3".into()),
                        at: Some(1_795_390_000),
                    }],
                },
                StoreListing::Unreachable {
                    store: "bastion:b1".into(),
                    error: "not connected".into(),
                },
            ],
        }]
    }
}

impl Examples for NodeResult {
    fn examples() -> Vec<Self> {
        vec![NodeResult {
            node: NodeState::Stopped,
        }]
    }
}

impl Examples for BackupNowResult {
    fn examples() -> Vec<Self> {
        vec![BackupNowResult {
            backup: last_backup(),
            note: Some("the sign state has not moved".into()),
        }]
    }
}

impl Examples for UpgradeAddResult {
    fn examples() -> Vec<Self> {
        vec![UpgradeAddResult {
            name: "V2".into(),
            dir: "v2".into(),
            path: "/h/cosmovisor/upgrades/v2/bin/simd".into(),
            sha256: "ab".into(),
            size: 1,
            source: "/opt/simd-v2".into(),
        }]
    }
}

impl Examples for UpgradeCancelResult {
    fn examples() -> Vec<Self> {
        vec![UpgradeCancelResult {
            name: "v2".into(),
            dir: "v2".into(),
            removed: "/h/cosmovisor/upgrades/v2".into(),
            note: Some("could not be deleted".into()),
            warning: Some("data/upgrade-info.json plans upgrade v2".into()),
        }]
    }
}

impl Examples for TunnelReconnectResult {
    fn examples() -> Vec<Self> {
        vec![TunnelReconnectResult {
            bastion: "b1".into(),
            reconnecting: true,
        }]
    }
}

impl Examples for VaultUnlockResult {
    fn examples() -> Vec<Self> {
        vec![VaultUnlockResult {
            locked: false,
            node: NodeState::Starting,
        }]
    }
}

impl Examples for VaultLockResult {
    fn examples() -> Vec<Self> {
        vec![VaultLockResult { locked: true }]
    }
}

impl Examples for BackupRestoreResult {
    fn examples() -> Vec<Self> {
        vec![BackupRestoreResult {
            restored: RestoredBackup {
                store: "local".into(),
                file: last_backup().file,
                sequence: 4,
                watermark: "height 9 round 0 step 3".into(),
            },
            previous: "missing".into(),
            path: "/h/data/priv_validator_state.json".into(),
        }]
    }
}

impl Examples for HostShutdownResult {
    fn examples() -> Vec<Self> {
        vec![
            HostShutdownResult::TokenIssued(ShutdownToken {
                confirm: "0123456789abcdef0123456789abcdef".into(),
                expires_in_s: 60,
                command: vec!["systemctl".into(), "poweroff".into()],
            }),
            HostShutdownResult::ShuttingDown(ShuttingDown {
                shutting_down: true,
                node: NodeState::Stopping,
                command: vec!["systemctl".into(), "poweroff".into()],
            }),
        ]
    }
}

impl Examples for EipListResult {
    fn examples() -> Vec<Self> {
        let address = |ip: &str, associated: bool| EipAddress {
            public_ip: ip.into(),
            allocation_id: format!("eipalloc-{ip}"),
            association_id: associated.then(|| format!("eipassoc-{ip}")),
            instance_id: associated.then(|| "i-0123456789abcdef0".into()),
            network_interface_id: associated.then(|| "eni-0123456789abcdef0".into()),
        };
        vec![EipListResult {
            bastions: vec![EipBastion {
                bastion: "bastion-1".into(),
                instance_id: Some("i-0123456789abcdef0".into()),
                network_interface_id: Some("eni-0123456789abcdef0".into()),
                dialing: "54.9.9.9".into(),
                addresses: vec![address("54.9.9.9", true), address("54.1.2.3", false)],
            }],
        }]
    }
}

impl Examples for EipRotateResult {
    fn examples() -> Vec<Self> {
        vec![EipRotateResult {
            bastion: "bastion-1".into(),
            rotation: "r1".into(),
            old_public_ip: Some("54.1.2.3".into()),
            old_allocation_id: Some("eipalloc-0aaa".into()),
            public_ip: "54.9.9.9".into(),
            allocation_id: "eipalloc-0bbb".into(),
            released_old: true,
            steps: vec![EipStep {
                step: "allocated".into(),
                took_ms: 412,
            }],
            tunnel_up_ms: 2345,
        }]
    }
}

impl Examples for EipStatusResult {
    fn examples() -> Vec<Self> {
        vec![EipStatusResult {
            in_progress: Some(EipInProgress {
                rotation: "r1".into(),
                bastion: "bastion-1".into(),
                step: "associated".into(),
                started: 1_795_390_000,
            }),
            journal: vec![EipJournalRecord {
                at_ms: 1_795_390_000_000,
                rotation: "r1".into(),
                bastion: "bastion-1".into(),
                step: "associated".into(),
                public_ip: Some("54.9.9.9".into()),
                allocation_id: Some("eipalloc-0bbb".into()),
                association_id: Some("eipassoc-0bbb".into()),
                detail: Some("to instance i-0123456789abcdef0".into()),
                took_ms: Some(230),
            }],
        }]
    }
}

/// The serialized forms are exactly the supervisor's answers: members the
/// supervisor writes as `null` stay, members it leaves out stay out.
#[test]
fn results_serialize_as_the_supervisor_answers() {
    fn json<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }
    use serde_json::json;
    let node = NodeStatus {
        state: NodeState::Locked,
        pid: None,
        version: None,
        height: None,
    };
    assert_eq!(
        json(&node),
        json!({"state": "locked", "pid": null, "version": null, "height": null})
    );
    assert_eq!(
        json(&VaultStatus {
            enabled: false,
            locked: None
        }),
        json!({"enabled": false})
    );
    assert_eq!(
        json(&WatermarkStatus::Known {
            height: 1,
            round: 2,
            step: 3
        }),
        json!({"height": 1, "round": 2, "step": 3})
    );
    assert_eq!(
        json(&StoreListing::Unreachable {
            store: "bastion:b1".into(),
            error: "down".into()
        }),
        json!({"store": "bastion:b1", "reachable": false, "error": "down"})
    );
    assert_eq!(
        json(&StoreListing::Reachable {
            store: "local".into(),
            total: 0,
            truncated: false,
            backups: vec![]
        }),
        json!({"store": "local", "reachable": true, "total": 0, "truncated": false, "backups": []})
    );
    assert_eq!(
        json(&ListedBackup {
            file: "f".into(),
            sequence: 1,
            height: 2,
            watermark: None,
            at: None
        }),
        json!({"file": "f", "sequence": 1, "height": 2, "watermark": null, "at": null})
    );
    let cancelled = UpgradeCancelResult {
        name: "v2".into(),
        dir: "v2".into(),
        removed: "/r".into(),
        note: None,
        warning: None,
    };
    assert_eq!(
        json(&cancelled),
        json!({"name": "v2", "dir": "v2", "removed": "/r"})
    );
    let list = UpgradeListResult {
        current: None,
        staged: vec![],
        staged_not_listed: None,
        staging: vec![],
        plan_on_disk: None,
        in_progress: None,
        scheduled: None,
        records: vec![],
        records_unreadable_lines: None,
    };
    assert_eq!(
        json(&list),
        json!({"current": null, "staged": [], "staging": [], "plan_on_disk": null,
               "in_progress": null, "scheduled": null, "records": []})
    );
    for state in [
        NodeState::Starting,
        NodeState::Locked,
        NodeState::Running,
        NodeState::Stopped,
        NodeState::Restarting,
        NodeState::Halted,
        NodeState::Upgrading,
        NodeState::Stopping,
    ] {
        assert_eq!(json(&state), Value::String(state.to_string()));
    }
    // A tunnel that was never rotated has no `address`; a journal record
    // leaves out what its step did not touch; a bastion's and an
    // address's absent ids are `null`.
    assert!(
        json(&TunnelEntry {
            address: None,
            ..tunnel_entry()
        })
        .get("address")
        .is_none()
    );
    assert_eq!(
        json(&EipJournalRecord {
            at_ms: 1,
            rotation: "r1".into(),
            bastion: "b1".into(),
            step: "started".into(),
            public_ip: None,
            allocation_id: None,
            association_id: None,
            detail: None,
            took_ms: None,
        }),
        json!({"at_ms": 1, "rotation": "r1", "bastion": "b1", "step": "started"})
    );
    assert_eq!(
        json(&EipAddress {
            public_ip: "54.1.2.3".into(),
            allocation_id: "eipalloc-1".into(),
            association_id: None,
            instance_id: None,
            network_interface_id: None,
        }),
        json!({"public_ip": "54.1.2.3", "allocation_id": "eipalloc-1", "association_id": null,
               "instance_id": null, "network_interface_id": null})
    );
    // Read leniently: a newer supervisor's extra members are ignored, and
    // an unreachable store without its error is refused.
    let read: HealthResult =
        serde_json::from_value(json!({"ok": true, "problems": [], "since": 5})).unwrap();
    assert!(read.ok);
    for incomplete in [
        json!({"store": "x", "reachable": false}),
        json!({"store": "x", "reachable": true, "total": 0}),
    ] {
        assert!(serde_json::from_value::<StoreListing>(incomplete).is_err());
    }
    // A member always sent is required: another answer is not read as an
    // empty one.
    assert!(serde_json::from_value::<LogsTailResult>(json!({"params": {"lines": 3}})).is_err());
}
