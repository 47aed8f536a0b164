//! Readable renderings of call results (without `--json`): a few lines of
//! `key: value`, nested values indented. Everything printed passes through
//! [`clean`], as results carry text from the chain and from logs.

use serde_json::Value;

/// Escape control characters so they cannot drive the terminal.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

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
        _ => generic(result),
    }
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
        ];
        for (method, value, expected) in cases {
            assert_eq!(render(method, &value), expected, "{method} {value}");
        }
    }
}
