//! Text that came from a peer (a supervisor's error messages, greeting and
//! results, which carry text from the chain and from logs), made safe to
//! show: [`clean`] escapes every control character, so the text can neither
//! drive a terminal (escape sequences) nor forge lines in a log (newlines).
//! Every program that prints or logs such text passes it through here.

/// Control characters escaped as Rust writes them (`\n`, `\u{1b}`);
/// everything else is kept as it is.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let cases = [
            ("", ""),
            ("plain text", "plain text"),
            ("two\nlines", "two\\nlines"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[2Jcleared", "\\u{1b}[2Jcleared"),
            ("bell\u{7}", "bell\\u{7}"),
            ("c1 \u{9b}31m", "c1 \\u{9b}31m"),
            ("quotes \" and \\ stay", "quotes \" and \\ stay"),
            ("unicode ▸ é 验证者", "unicode ▸ é 验证者"),
        ];
        for (text, expected) in cases {
            assert_eq!(clean(text), expected, "{text:?}");
        }
    }
}
