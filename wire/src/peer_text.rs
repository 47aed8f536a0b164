//! Text that came from a peer (a supervisor's greeting, error messages and
//! results, which carry text from the chain and from logs; a bastion's
//! error messages), made safe to show. The one place this is decided:
//!
//! - [`clean`] escapes every control character (C0, DEL and C1: no escape
//!   sequence can drive a terminal, no newline can forge a log line) and
//!   every bidirectional-override and format character that could make
//!   shown text read differently from what it is (U+200E/F, U+202A–202E,
//!   U+2066–2069). Parsers apply it where peer text enters (the greeting,
//!   `GreetingError`, RPC and backup-store error messages); renderers apply
//!   it again to whatever they print, which changes nothing already clean.
//! - [`escape_json_output`] makes serialized JSON (`--json`) equally inert:
//!   serde_json escapes C0 itself but writes DEL, C1 and the bidi controls
//!   raw, so they are rewritten as `\uXXXX` escapes, which decode to the
//!   same string.

/// Whether `c` must not reach a terminal or a log as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// [`is_unsafe`] characters escaped as Rust writes them (`\n`, `\u{1b}`,
/// `\u{202e}`); everything else is kept as it is. The result holds no
/// unsafe character, so cleaning twice changes nothing.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Serialized JSON (compact or pretty) with every [`is_unsafe`] character
/// that serde_json left raw (DEL, C1, bidi and format controls; they can
/// only be inside strings) written as a `\uXXXX` escape: the same JSON value, inert on a
/// terminal.
pub fn escape_json_output(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        // C0 is left alone: serde_json escapes it inside strings, and
        // outside them it is the pretty printer's newlines and indentation.
        if is_unsafe(c) && c >= '\u{7f}' {
            // All of them are in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_are_escaped_and_the_rest_is_kept() {
        let cases = [
            ("", ""),
            ("plain text", "plain text"),
            ("two\nlines", "two\\nlines"),
            ("cr\rlf", "cr\\rlf"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[2Jcleared", "\\u{1b}[2Jcleared"),
            ("bell\u{7}", "bell\\u{7}"),
            ("\u{1b}]0;pwned\u{7}title", "\\u{1b}]0;pwned\\u{7}title"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("c1 \u{9b}31m", "c1 \\u{9b}31m"),
            ("c1 \u{85}next line", "c1 \\u{85}next line"),
            ("lrm\u{200e}rlm\u{200f}", "lrm\\u{200e}rlm\\u{200f}"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            ("evil\u{202e}gpj.exe", "evil\\u{202e}gpj.exe"),
            (
                "\u{2066}\u{2067}\u{2068}\u{2069}",
                "\\u{2066}\\u{2067}\\u{2068}\\u{2069}",
            ),
            (
                "ok\n2024-01-01T00:00:00Z  INFO validator up",
                "ok\\n2024-01-01T00:00:00Z  INFO validator up",
            ),
            ("quotes \" and \\ stay", "quotes \" and \\ stay"),
            ("unicode ▸ é 验证者 \u{200d}", "unicode ▸ é 验证者 \u{200d}"),
        ];
        for (text, expected) in cases {
            assert_eq!(clean(text), expected, "{text:?}");
            assert_eq!(clean(expected), expected, "cleaning twice: {text:?}");
            assert!(!clean(text).chars().any(is_unsafe), "{text:?}");
        }
    }

    #[test]
    fn json_output_keeps_its_value_and_loses_raw_controls() {
        let cases = [
            ("plain", "\"plain\""),
            ("c0 \u{1b}\n", "\"c0 \\u001b\\n\""),
            ("del \u{7f} c1 \u{9b}", "\"del \\u007f c1 \\u009b\""),
            ("bidi \u{202e} \u{2066}", "\"bidi \\u202e \\u2066\""),
            ("unicode ▸ 验证者", "\"unicode ▸ 验证者\""),
        ];
        for (text, expected) in cases {
            let json = serde_json::to_string(text).unwrap();
            let escaped = escape_json_output(&json);
            assert_eq!(escaped, expected, "{text:?}");
            let back: String = serde_json::from_str(&escaped).unwrap();
            assert_eq!(back, text, "same value");
        }
        let pretty = serde_json::to_string_pretty(&serde_json::json!({"a": ["\u{9b}\n"]})).unwrap();
        let escaped = escape_json_output(&pretty);
        assert_eq!(escaped, "{\n  \"a\": [\n    \"\\u009b\\n\"\n  ]\n}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["a"][0], "\u{9b}\n");
    }
}
