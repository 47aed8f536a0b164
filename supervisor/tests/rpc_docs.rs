//! The examples of `docs/rpc.md` §7 are true: they are replayed, in
//! document order, against one real `palisade-supervisor` (started locked,
//! vault enabled, on the simulated chain), and every method of the
//! catalogue has at least one.
//!
//! The format (the rules are also written at the start of §7):
//! - every plain fenced block (```` ``` ```` without a language) of §7 is
//!   one connection, in plaintext: the test runs as root, a trusted local
//!   user (`docs/rpc.md` §1), so neither TLS nor a login is needed;
//! - `→ ` lines are sent: a request, or — right after the request of a
//!   secret method (`vault.unlock`) — its secret line; `← ` lines are the
//!   expected responses, in order; blank lines separate exchanges; any
//!   other line in a block is an error, text outside the blocks is prose;
//! - matching: `…` inside a string matches any text; `…` as an object
//!   member allows other members (without it the member set must be
//!   exact), as the last array element more elements; numbers match by
//!   type only, except the response `id` and an error's `code`; strings,
//!   booleans and null exactly;
//! - placeholders `<name>` in requests (and secret lines) come from
//!   [`PLACEHOLDERS`] or from an earlier response value `"<name>"`, which
//!   binds whatever value the supervisor answered (a response value naming
//!   one of [`PLACEHOLDERS`] must equal it instead); an unknown
//!   placeholder fails the test;
//! - an answer −32003 (rate limited) where the example shows another
//!   answer is waited out (`data.retry_after_ms`) and the request is sent
//!   again: the examples run back to back, faster than the unlock
//!   back-off.
//!
//! A line that does not parse, an unknown method, or a response that does
//! not match fails with the document's line number and text.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::timing::{ANSWER, BLOCK, LONG};
use common::{RawRpc, VaultRpc};
use palisade_wire::rpc::{METHODS, SECRET_METHODS, code};
use serde_json::{Value, json};

const PASSPHRASE: &str = "rpc docs passphrase";
/// Method prefixes reserved for later (`docs/rpc.md` §3): not examples.
const RESERVED_PREFIXES: &[&str] = &["ip."];

/// The placeholders a request may use, and what they stand for
/// (`<the passphrase>`, `<staged binary>`); see [`Fixture::placeholders`].
const PLACEHOLDERS: &[&str] = &["the passphrase", "staged binary"];

/// `[host]` of the test supervisor: `host.shutdown` runs this harmless
/// command instead of `systemctl poweroff`; it creates the marker file
/// (`{marker}`) the test then looks for.
const HOST_SECTION: &str = "[host]\nshutdown-command = [\"touch\", \"{marker}\"]\n";

/// Marker for the object member `…` (other members allowed).
const ANY_MEMBERS: &str = "…";
/// Marker for the array element `…` (more elements allowed).
const MORE_ELEMENTS: &str = "\u{0}…more";

/// A line of the document.
#[derive(Debug, Clone)]
struct DocLine {
    number: usize,
    text: String,
}

impl DocLine {
    fn at(&self) -> String {
        format!("docs/rpc.md:{}: `{}`", self.number, self.text)
    }
}

/// A request, its secret line (for a secret method) and the expected
/// response.
#[derive(Debug)]
struct Call {
    request_line: DocLine,
    request: Value,
    method: String,
    secret: Option<DocLine>,
    response_line: DocLine,
    expected: Value,
}

/// A fenced block: one connection.
#[derive(Debug)]
struct Block {
    opening: DocLine,
    calls: Vec<Call>,
}

// ---------------------------------------------------------------- parsing

/// The lines of §7 (from `## 7.` to the next `## ` heading), numbered as
/// in the file.
fn section_seven(document: &str) -> Vec<DocLine> {
    let mut inside = false;
    let mut lines = Vec::new();
    for (index, text) in document.lines().enumerate() {
        if text.starts_with("## ") {
            inside = text.starts_with("## 7.");
            continue;
        }
        if inside {
            lines.push(DocLine {
                number: index + 1,
                text: text.to_string(),
            });
        }
    }
    assert!(!lines.is_empty(), "docs/rpc.md has no `## 7.` section");
    lines
}

/// Turn the bare `…` of a response line (outside strings) into JSON:
/// an object member `"…":true`, or the array element [`MORE_ELEMENTS`].
fn desugar_ellipses(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut stack = Vec::new();
    for character in text.chars() {
        if in_string {
            out.push(character);
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == '"' {
                in_string = false;
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
                    Some('{') => out.push_str(&format!("{ANY_MEMBERS:?}:true")),
                    Some('[') => out.push_str(&serde_json::to_string(MORE_ELEMENTS).unwrap()),
                    _ => return Err("`…` outside an object or array".into()),
                }
                continue;
            }
            _ => {}
        }
        out.push(character);
    }
    Ok(out)
}

/// Parse §7 into blocks of calls; every problem names the doc line.
fn parse(lines: &[DocLine]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = &lines[index];
        index += 1;
        let Some(info) = line.text.trim_start().strip_prefix("```") else {
            continue;
        };
        let example = info.trim().is_empty();
        let opening = line.clone();
        let mut body = Vec::new();
        loop {
            let Some(line) = lines.get(index) else {
                panic!("{}: the fence is never closed", opening.at());
            };
            index += 1;
            if line.text.trim_start().starts_with("```") {
                break;
            }
            body.push(line.clone());
        }
        if example {
            blocks.push(parse_block(opening, &body));
        }
    }
    assert!(!blocks.is_empty(), "no example blocks in docs/rpc.md §7");
    blocks
}

fn parse_block(opening: DocLine, body: &[DocLine]) -> Block {
    let mut calls = Vec::new();
    // Requests of the current exchange not yet paired with a response.
    let mut pending: Vec<(DocLine, Value, String, Option<DocLine>)> = Vec::new();
    let mut index = 0;
    while index < body.len() {
        let line = &body[index];
        index += 1;
        if line.text.trim().is_empty() {
            if let Some((request, ..)) = pending.first() {
                panic!("{}: this request has no `←` response", request.at());
            }
            continue;
        }
        if let Some(text) = line.text.strip_prefix("→ ") {
            let request: Value = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("{}: not a JSON request: {error}", line.at()));
            let method =
                check_request(&request).unwrap_or_else(|why| panic!("{}: {why}", line.at()));
            let secret = if SECRET_METHODS.contains(&method.as_str()) {
                match body.get(index) {
                    Some(next) if next.text.starts_with("→ ") => {
                        index += 1;
                        Some(next.clone())
                    }
                    _ => panic!(
                        "{}: {method} needs its secret line (`→ …`) right after the request",
                        line.at()
                    ),
                }
            } else {
                None
            };
            pending.push((line.clone(), request, method, secret));
        } else if let Some(text) = line.text.strip_prefix("← ") {
            let expected: Value = desugar_ellipses(text)
                .and_then(|json| serde_json::from_str(&json).map_err(|error| error.to_string()))
                .unwrap_or_else(|error| panic!("{}: not a JSON response: {error}", line.at()));
            if !expected.is_object() {
                panic!("{}: a response is a JSON object", line.at());
            }
            if pending.is_empty() {
                panic!("{}: a response without a request before it", line.at());
            }
            let (request_line, request, method, secret) = pending.remove(0);
            calls.push(Call {
                request_line,
                request,
                method,
                secret,
                response_line: line.clone(),
                expected,
            });
        } else {
            panic!(
                "{}: a line of an example block starts with `→ ` or `← `",
                line.at()
            );
        }
    }
    if let Some((request, ..)) = pending.first() {
        panic!("{}: this request has no `←` response", request.at());
    }
    if calls.is_empty() {
        panic!("{}: an empty example block", opening.at());
    }
    Block { opening, calls }
}

/// A request must be JSON-RPC 2.0 for a method of the catalogue.
fn check_request(request: &Value) -> Result<String, String> {
    let object = request.as_object().ok_or("a request is a JSON object")?;
    if object.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("`jsonrpc` must be \"2.0\"".into());
    }
    if !object
        .get("id")
        .is_some_and(|id| id.is_number() || id.is_string())
    {
        return Err("`id` must be a number or a string".into());
    }
    if let Some(unknown) = object
        .keys()
        .find(|key| !["jsonrpc", "id", "method", "params"].contains(&key.as_str()))
    {
        return Err(format!("unknown request member `{unknown}`"));
    }
    let method = object
        .get("method")
        .and_then(Value::as_str)
        .ok_or("`method` must be a string")?;
    if !METHODS.iter().any(|(name, _)| *name == method) {
        return Err(format!("unknown method `{method}`"));
    }
    Ok(method.to_string())
}

/// Methods the examples must cover: the catalogue without `auth.*` (§7 is
/// a trusted local session) and the reserved prefixes.
fn methods_without_example(blocks: &[Block]) -> Vec<&'static str> {
    METHODS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.starts_with("auth."))
        .filter(|name| {
            !RESERVED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .filter(|name| {
            !blocks
                .iter()
                .flat_map(|block| &block.calls)
                .any(|call| call.method == *name)
        })
        .collect()
}

// --------------------------------------------------------------- matching

/// `<name>` as a whole string.
fn placeholder_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix('<')?.strip_suffix('>')?;
    (!name.is_empty() && !name.contains(['<', '>'])).then_some(name)
}

/// `pattern` with `…` matching any text.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(position) => rest = &rest[position + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What the examples know: fixed placeholders and values bound from
/// earlier responses.
struct Bindings {
    fixed: BTreeMap<&'static str, Value>,
    bound: BTreeMap<String, Value>,
}

impl Bindings {
    fn value(&self, name: &str) -> Option<&Value> {
        self.fixed.get(name).or_else(|| self.bound.get(name))
    }

    /// Fill the placeholders of a request's strings.
    fn substitute(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(text) => {
                if let Some(name) = placeholder_name(text) {
                    self.value(name)
                        .cloned()
                        .ok_or_else(|| format!("unknown placeholder <{name}>"))?
                } else {
                    Value::String(self.substitute_text(text)?)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.substitute(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), self.substitute(item)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// `<name>` inside a longer text (or a secret line): string values only.
    fn substitute_text(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('<') {
            let Some(length) = rest[start..].find('>') else {
                break;
            };
            let name = &rest[start + 1..start + length];
            if name.is_empty() || name.contains('<') {
                out.push_str(&rest[..=start]);
                rest = &rest[start + 1..];
                continue;
            }
            let value = self
                .value(name)
                .ok_or_else(|| format!("unknown placeholder <{name}>"))?;
            let value = value
                .as_str()
                .ok_or_else(|| format!("<{name}> is {value}, not a string"))?;
            out.push_str(&rest[..start]);
            out.push_str(value);
            rest = &rest[start + length + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Match `actual` against `expected` (the rules above); bind the
    /// response's `"<name>"` values. `path` names the place for messages.
    fn matches(&mut self, expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
        let mismatch = |what: &str| Err(format!("at {path}: {what}; got {actual}"));
        match expected {
            Value::String(pattern) => {
                if let Some(name) = placeholder_name(pattern) {
                    if let Some(fixed) = self.fixed.get(name) {
                        if fixed != actual {
                            return mismatch(&format!("expected <{name}> = {fixed}"));
                        }
                    } else {
                        self.bound.insert(name.to_string(), actual.clone());
                    }
                    return Ok(());
                }
                match actual.as_str() {
                    Some(text) if glob(pattern, text) => Ok(()),
                    _ => mismatch(&format!("expected {expected}")),
                }
            }
            Value::Number(number) => {
                let exact = path == "$.id" || path == "$.error.code";
                if exact {
                    if actual != expected {
                        return mismatch(&format!("expected exactly {expected}"));
                    }
                } else if number.is_f64() {
                    if !actual.is_number() {
                        return mismatch("expected a number");
                    }
                } else if !(actual.is_i64() || actual.is_u64()) {
                    return mismatch("expected an integer");
                }
                Ok(())
            }
            Value::Bool(_) | Value::Null => {
                if actual != expected {
                    return mismatch(&format!("expected {expected}"));
                }
                Ok(())
            }
            Value::Array(items) => {
                let Some(actual_items) = actual.as_array() else {
                    return mismatch("expected an array");
                };
                let open = items.last() == Some(&json!(MORE_ELEMENTS));
                let fixed = if open {
                    &items[..items.len() - 1]
                } else {
                    &items[..]
                };
                if actual_items.len() < fixed.len() || (!open && actual_items.len() != fixed.len())
                {
                    return mismatch(&format!(
                        "expected {}{} elements",
                        fixed.len(),
                        if open { " or more" } else { "" }
                    ));
                }
                for (index, (item, actual_item)) in fixed.iter().zip(actual_items).enumerate() {
                    self.matches(item, actual_item, &format!("{path}[{index}]"))?;
                }
                Ok(())
            }
            Value::Object(members) => {
                let Some(actual_members) = actual.as_object() else {
                    return mismatch("expected an object");
                };
                let open = members.contains_key(ANY_MEMBERS);
                for (key, item) in members {
                    if key == ANY_MEMBERS {
                        continue;
                    }
                    let Some(actual_item) = actual_members.get(key) else {
                        return mismatch(&format!("member `{key}` is missing"));
                    };
                    self.matches(item, actual_item, &format!("{path}.{key}"))?;
                }
                if !open
                    && let Some(extra) = actual_members
                        .keys()
                        .find(|key| !members.contains_key(*key))
                {
                    return mismatch(&format!(
                        "unexpected member `{extra}` (add `…` to allow others)"
                    ));
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------- fixture

struct Fixture {
    vault: VaultRpc,
    marker: PathBuf,
    staged_binary: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

impl Fixture {
    fn new() -> Fixture {
        // The marker the shutdown command creates (see HOST_SECTION).
        let marker = std::env::temp_dir().join(format!(
            "palisade-rpc-docs-{}-host-shutdown-requested",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&marker);
        let host = HOST_SECTION.replace("{marker}", &marker.display().to_string());
        let vault = VaultRpc::setup(BLOCK, PASSPHRASE, "", &host);
        // An executable copy of the simulated daemon, for upgrade.add.
        let staged_binary = vault.chain.dir.path().join("staged").join("simd");
        std::fs::create_dir_all(staged_binary.parent().unwrap()).unwrap();
        std::fs::copy(common::simd(), &staged_binary).unwrap();
        Fixture {
            vault,
            marker,
            staged_binary,
        }
    }

    fn placeholders(&self) -> BTreeMap<&'static str, Value> {
        let table = BTreeMap::from([
            ("the passphrase", json!(PASSPHRASE)),
            (
                "staged binary",
                json!(self.staged_binary.display().to_string()),
            ),
        ]);
        assert_eq!(table.keys().copied().collect::<Vec<_>>(), {
            let mut names = PLACEHOLDERS.to_vec();
            names.sort();
            names
        });
        table
    }
}

fn read_response(connection: &mut RawRpc, call: &Call) -> (String, Value) {
    let line = match connection.read_line() {
        Ok(Some(line)) => line,
        Ok(None) => panic!(
            "{}: the supervisor closed the connection instead of answering",
            call.response_line.at()
        ),
        Err(error) => panic!(
            "{}: no answer within {ANSWER:?}: {error}",
            call.response_line.at()
        ),
    };
    let value = serde_json::from_str(&line).unwrap_or_else(|error| {
        panic!(
            "{}: the answer is not JSON ({error}): {line}",
            call.response_line.at()
        )
    });
    (line, value)
}

/// Send one call (waiting out −32003 if the example shows another
/// answer), read its answer and match it.
fn replay(connection: &mut RawRpc, call: &Call, bindings: &mut Bindings) {
    let request = bindings
        .substitute(&call.request)
        .unwrap_or_else(|why| panic!("{}: {why}", call.request_line.at()));
    let mut bytes = request.to_string().into_bytes();
    bytes.push(b'\n');
    if let Some(secret) = &call.secret {
        let text = secret.text.strip_prefix("→ ").unwrap();
        let text = bindings
            .substitute_text(text)
            .unwrap_or_else(|why| panic!("{}: {why}", secret.at()));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
    }
    let shows_rate_limit = call.expected["error"]["code"] == json!(code::RATE_LIMITED);
    let deadline = Instant::now() + LONG;
    let (line, actual) = loop {
        connection
            .send(&bytes)
            .unwrap_or_else(|error| panic!("{}: send failed: {error}", call.request_line.at()));
        let (line, actual) = read_response(connection, call);
        let limited = actual["error"]["code"] == json!(code::RATE_LIMITED);
        if !limited || shows_rate_limit || Instant::now() > deadline {
            break (line, actual);
        }
        let wait = actual["error"]["data"]["retry_after_ms"]
            .as_u64()
            .unwrap_or(1000);
        std::thread::sleep(Duration::from_millis(wait + 50));
    };
    if let Err(why) = bindings.matches(&call.expected, &actual, "$") {
        panic!(
            "{}\n  the answer to {} does not match: {why}\n  answer: {line}",
            call.response_line.at(),
            call.request_line.at()
        );
    }
}

#[test]
fn the_examples_of_docs_rpc_md_section_7_are_what_the_supervisor_answers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rpc.md");
    let document = std::fs::read_to_string(&path).unwrap();
    let blocks = parse(&section_seven(&document));
    let missing = methods_without_example(&blocks);
    if !missing.is_empty() {
        eprintln!("methods without an example in docs/rpc.md §7: {missing:?}");
    }

    let fixture = Fixture::new();
    let mut bindings = Bindings {
        fixed: fixture.placeholders(),
        bound: BTreeMap::new(),
    };
    let mut supervisor = fixture.vault.run();
    common::wait_for_node_state(&fixture.vault.socket, "locked", LONG);

    let mut shut_down = false;
    for block in &blocks {
        let mut connection = RawRpc::connect(&fixture.vault.socket, ANSWER)
            .unwrap_or_else(|error| panic!("{}: cannot connect: {error}", block.opening.at()));
        assert_eq!(
            connection.greeting["tls"], "optional",
            "the test must be a trusted local user: {}",
            connection.greeting
        );
        for call in &block.calls {
            replay(&mut connection, call, &mut bindings);
            shut_down |= call.method == "host.shutdown"
                && call
                    .request
                    .get("params")
                    .is_some_and(|params| params.get("confirm").is_some());
        }
    }

    if shut_down {
        // The last example asked the host to shut down: the command ran
        // (the marker) and the supervisor ends.
        common::wait_until(LONG, "the shutdown command's marker", || {
            fixture.marker.exists()
        });
        let status = supervisor.wait_exit(LONG);
        assert!(
            status.success(),
            "the supervisor exited {status:?} after host.shutdown:\n{}",
            common::tail(&supervisor.output(), 40)
        );
    } else {
        supervisor.stop();
    }
    assert!(
        missing.is_empty(),
        "methods without an example in docs/rpc.md §7 (every method of \
         palisade_wire::rpc::METHODS but auth.* needs one): {missing:?}"
    );
}

/// The matcher's own rules, including the ways it must fail.
/// The error table of §5 lists exactly the codes a supervisor can answer
/// with (`palisade_wire::rpc::code::ALL`), which the fuzz and abuse tests
/// accept and nothing else.
#[test]
fn section_5_lists_every_error_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rpc.md");
    let document = std::fs::read_to_string(&path).unwrap();
    let section = document
        .split("## 5. Errors")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/rpc.md has a section 5");
    let listed: Vec<i64> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|rest| rest.split(" |").next())
        .filter_map(|code| code.replace('\u{2212}', "-").parse().ok())
        .collect();
    assert_eq!(listed, palisade_wire::rpc::code::ALL, "docs/rpc.md §5");
}

#[test]
fn matching_rules() {
    let mut bindings = Bindings {
        fixed: BTreeMap::from([("the passphrase", json!("pw"))]),
        bound: BTreeMap::new(),
    };
    let mut check = |expected: &str, actual: Value| {
        let expected: Value = serde_json::from_str(&desugar_ellipses(expected).unwrap()).unwrap();
        bindings.matches(&expected, &actual, "$")
    };
    // Strings: exact, or `…` for any text.
    assert!(check(r#"{"a":"x…z"}"#, json!({"a": "x-y-z"})).is_ok());
    assert!(check(r#"{"a":"x…z"}"#, json!({"a": "x-y-zz!"})).is_err());
    assert!(check(r#"{"a":"b-…-h…"}"#, json!({"a": "b-1-h12"})).is_ok());
    assert!(check(r#"{"a":"x"}"#, json!({"a": "y"})).is_err());
    // Members: exact without `…`, a subset with it.
    assert!(check(r#"{"a":1}"#, json!({"a": 2, "b": 3})).is_err());
    assert!(check(r#"{"a":1,…}"#, json!({"a": 2, "b": 3})).is_ok());
    assert!(check(r#"{"a":1,…}"#, json!({"b": 3})).is_err());
    assert!(
        check(
            r#"{"n":{"s":"x",…},…}"#,
            json!({"n": {"s": "x", "t": 1}, "m": 0})
        )
        .is_ok()
    );
    // Numbers by type, except ids and error codes.
    assert!(check(r#"{"h":12}"#, json!({"h": 4711})).is_ok());
    assert!(check(r#"{"h":12}"#, json!({"h": "12"})).is_err());
    assert!(check(r#"{"id":3}"#, json!({"id": 4})).is_err());
    assert!(
        check(
            r#"{"error":{"code":-32004}}"#,
            json!({"error": {"code": -32001}})
        )
        .is_err()
    );
    // Booleans and null exactly; arrays element by element.
    assert!(check(r#"{"b":true}"#, json!({"b": false})).is_err());
    assert!(check(r#"{"v":null}"#, json!({"v": 0})).is_err());
    assert!(check(r#"{"l":["a"]}"#, json!({"l": ["a", "b"]})).is_err());
    assert!(check(r#"{"l":["a",…]}"#, json!({"l": ["a", "b"]})).is_ok());
    // "<name>" binds (or checks a fixed placeholder).
    assert!(check(r#"{"t":"<token>"}"#, json!({"t": "abc"})).is_ok());
    assert!(check(r#"{"p":"<the passphrase>"}"#, json!({"p": "other"})).is_err());
    assert_eq!(bindings.bound["token"], json!("abc"));
    assert_eq!(
        bindings
            .substitute(&json!({"confirm": "<token>", "x": "a <the passphrase> b"}))
            .unwrap(),
        json!({"confirm": "abc", "x": "a pw b"})
    );
    assert!(bindings.substitute(&json!({"p": "<nobody>"})).is_err());
    assert!(desugar_ellipses("…").is_err());
    assert_eq!(
        desugar_ellipses(r#"{"a":"…",…}"#).unwrap(),
        r#"{"a":"…","…":true}"#
    );
}

/// Bad documents fail, naming the line.
#[test]
fn malformed_examples_are_refused() {
    let line = |number, text: &str| DocLine {
        number,
        text: text.to_string(),
    };
    let opening = line(1, "```");
    let refused = |body: Vec<DocLine>| {
        let opening = opening.clone();
        std::panic::catch_unwind(move || parse_block(opening, &body))
            .err()
            .and_then(|panic| panic.downcast::<String>().ok())
            .map(|message| *message)
            .unwrap_or_default()
    };
    let message = refused(vec![line(
        2,
        r#"→ {"jsonrpc":"2.0","id":1,"method":"format.disk"}"#,
    )]);
    assert!(
        message.contains("docs/rpc.md:2") && message.contains("unknown method"),
        "{message}"
    );
    let message = refused(vec![line(3, "→ {not json")]);
    assert!(
        message.contains("docs/rpc.md:3") && message.contains("not a JSON request"),
        "{message}"
    );
    let message = refused(vec![
        line(4, r#"→ {"jsonrpc":"2.0","id":1,"method":"status"}"#),
        line(5, "← {oops}"),
    ]);
    assert!(message.contains("docs/rpc.md:5"), "{message}");
    let message = refused(vec![line(
        6,
        r#"→ {"jsonrpc":"2.0","id":1,"method":"vault.unlock"}"#,
    )]);
    assert!(message.contains("secret line"), "{message}");
    let message = refused(vec![line(7, "status")]);
    assert!(message.contains("docs/rpc.md:7"), "{message}");
    let message = refused(vec![
        line(8, r#"→ {"jsonrpc":"2.0","id":1,"method":"status"}"#),
        line(9, ""),
    ]);
    assert!(message.contains("no `←` response"), "{message}");
}
