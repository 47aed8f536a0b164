//! `priv_validator_state.json`, parsed and written exactly as CometBFT's
//! FilePV does (`FilePVLastSignState`, amino JSON):
//!
//! ```json
//! {
//!   "height": "123",
//!   "round": 0,
//!   "step": 3,
//!   "signature": "<base64>",
//!   "signbytes": "<UPPERCASE HEX>"
//! }
//! ```
//!
//! `height` is an int64 written as a decimal string; `round` an int32;
//! `step` an int8 in 0..=3; `signature` and `signbytes` are omitted when
//! empty (a validator that never signed). Unknown fields are tolerated.
//! A missing `height`, `round` or `step` is an error, never a default 0.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::{SignStateError, Step, Watermark};

/// The contents of `priv_validator_state.json`. An empty `signature` or
/// `signbytes` means the field is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignState {
    pub height: u64,
    pub round: u32,
    pub step: Step,
    pub signature: Vec<u8>,
    pub signbytes: Vec<u8>,
}

impl SignState {
    /// A state at `watermark` with no signature (what the supervisor writes
    /// when it raises the watermark; FilePV accepts it).
    pub fn from_watermark(watermark: Watermark) -> SignState {
        SignState {
            height: watermark.height,
            round: watermark.round,
            step: watermark.step,
            signature: Vec::new(),
            signbytes: Vec::new(),
        }
    }

    /// Parse the file's bytes. See the module docs for the format.
    pub fn parse(bytes: &[u8]) -> Result<SignState, SignStateError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(SignStateError::Empty);
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|error| {
            if error.classify() == serde_json::error::Category::Eof {
                SignStateError::Truncated
            } else {
                SignStateError::Malformed(error.to_string())
            }
        })?;
        let Value::Object(object) = value else {
            return Err(SignStateError::Malformed(format!(
                "expected a JSON object, found {}",
                kind(&value)
            )));
        };
        let field = |name: &str| {
            object
                .get(name)
                .ok_or_else(|| SignStateError::Malformed(format!("missing \"{name}\"")))
        };
        let height = parse_height(field("height")?)?;
        let round = parse_round(field("round")?)?;
        let step = parse_step(field("step")?)?;
        let signature = match object.get("signature") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => BASE64
                .decode(text)
                .map_err(|error| SignStateError::BadSignature(error.to_string()))?,
            Some(other) => {
                return Err(SignStateError::BadSignature(format!(
                    "expected a string, found {}",
                    kind(other)
                )));
            }
        };
        let signbytes = match object.get("signbytes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => hex::decode(text)
                .map_err(|error| SignStateError::BadSignBytes(error.to_string()))?,
            Some(other) => {
                return Err(SignStateError::BadSignBytes(format!(
                    "expected a string, found {}",
                    kind(other)
                )));
            }
        };
        Ok(SignState {
            height,
            round,
            step,
            signature,
            signbytes,
        })
    }

    /// The (height, round, step) this state protects.
    pub fn watermark(&self) -> Watermark {
        Watermark {
            height: self.height,
            round: self.round,
            step: self.step,
        }
    }

    /// The file as CometBFT writes it (`MarshalIndent` with two spaces, no
    /// trailing newline), omitting an empty signature or signbytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = format!(
            "{{\n  \"height\": \"{}\",\n  \"round\": {},\n  \"step\": {}",
            self.height, self.round, self.step as u8
        );
        if !self.signature.is_empty() {
            out.push_str(&format!(
                ",\n  \"signature\": \"{}\"",
                BASE64.encode(&self.signature)
            ));
        }
        if !self.signbytes.is_empty() {
            out.push_str(&format!(
                ",\n  \"signbytes\": \"{}\"",
                hex::encode_upper(&self.signbytes)
            ));
        }
        out.push_str("\n}");
        out.into_bytes()
    }
}

fn parse_height(value: &Value) -> Result<u64, SignStateError> {
    let Value::String(text) = value else {
        return Err(SignStateError::HeightNotString);
    };
    let bad = || SignStateError::BadHeight(text.clone());
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad());
    }
    let height: u64 = text.parse().map_err(|_| bad())?;
    if height > i64::MAX as u64 {
        return Err(bad());
    }
    Ok(height)
}

fn parse_round(value: &Value) -> Result<u32, SignStateError> {
    value
        .as_u64()
        .filter(|round| *round <= i32::MAX as u64)
        .map(|round| round as u32)
        .ok_or(SignStateError::BadRound)
}

fn parse_step(value: &Value) -> Result<Step, SignStateError> {
    let step = value
        .as_u64()
        .and_then(|step| u8::try_from(step).ok())
        .ok_or_else(|| {
            SignStateError::Malformed(format!(
                "\"step\" must be an integer from 0 to 3, found {value}"
            ))
        })?;
    Step::try_from(step).map_err(|_| SignStateError::BadStep(step))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(height: u64, round: u32, step: Step) -> Watermark {
        Watermark {
            height,
            round,
            step,
        }
    }

    #[test]
    fn parses_good_states() {
        let cases: &[(&str, &str, Watermark, usize, usize)] = &[
            (
                "fresh after init",
                r#"{"height":"0","round":0,"step":0}"#,
                mark(0, 0, Step::None),
                0,
                0,
            ),
            (
                "CometBFT layout with signature and signbytes",
                "{\n  \"height\": \"123\",\n  \"round\": 2,\n  \"step\": 3,\n  \"signature\": \"AAEC\",\n  \"signbytes\": \"0A0b\"\n}",
                mark(123, 2, Step::Precommit),
                3,
                2,
            ),
            (
                "unknown fields tolerated",
                r#"{"height":"7","round":1,"step":2,"extra":{"x":[1]},"note":"hi"}"#,
                mark(7, 1, Step::Prevote),
                0,
                0,
            ),
            (
                "empty signature and signbytes",
                r#"{"height":"5","round":0,"step":1,"signature":"","signbytes":""}"#,
                mark(5, 0, Step::Propose),
                0,
                0,
            ),
            (
                "null signature",
                r#"{"height":"5","round":0,"step":1,"signature":null}"#,
                mark(5, 0, Step::Propose),
                0,
                0,
            ),
            (
                "largest int64 height and int32 round",
                r#"{"height":"9223372036854775807","round":2147483647,"step":3}"#,
                mark(i64::MAX as u64, i32::MAX as u32, Step::Precommit),
                0,
                0,
            ),
            (
                "surrounding whitespace",
                " \n{\"height\":\"1\",\"round\":0,\"step\":3}\n",
                mark(1, 0, Step::Precommit),
                0,
                0,
            ),
        ];
        for (name, input, watermark, signature_len, signbytes_len) in cases {
            let state = SignState::parse(input.as_bytes())
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(state.watermark(), *watermark, "{name}");
            assert_eq!(state.signature.len(), *signature_len, "{name}");
            assert_eq!(state.signbytes.len(), *signbytes_len, "{name}");
        }
    }

    #[test]
    fn rejects_bad_states_with_clear_errors() {
        use SignStateError as E;
        let cases: &[(&str, &str, E)] = &[
            ("zero bytes", "", E::Empty),
            ("whitespace only", " \n\t ", E::Empty),
            ("truncated", r#"{"height":"12","rou"#, E::Truncated),
            ("truncated after open brace", "{", E::Truncated),
            (
                "height as number",
                r#"{"height":12,"round":0,"step":3}"#,
                E::HeightNotString,
            ),
            (
                "height null",
                r#"{"height":null,"round":0,"step":3}"#,
                E::HeightNotString,
            ),
            (
                "negative height",
                r#"{"height":"-1","round":0,"step":3}"#,
                E::BadHeight("-1".into()),
            ),
            (
                "height abc",
                r#"{"height":"abc","round":0,"step":3}"#,
                E::BadHeight("abc".into()),
            ),
            (
                "empty height",
                r#"{"height":"","round":0,"step":3}"#,
                E::BadHeight(String::new()),
            ),
            (
                "plus height",
                r#"{"height":"+1","round":0,"step":3}"#,
                E::BadHeight("+1".into()),
            ),
            (
                "height above int64",
                r#"{"height":"9223372036854775808","round":0,"step":3}"#,
                E::BadHeight("9223372036854775808".into()),
            ),
            (
                "negative round",
                r#"{"height":"1","round":-1,"step":3}"#,
                E::BadRound,
            ),
            (
                "fractional round",
                r#"{"height":"1","round":0.5,"step":3}"#,
                E::BadRound,
            ),
            (
                "round as string",
                r#"{"height":"1","round":"0","step":3}"#,
                E::BadRound,
            ),
            (
                "round above int32",
                r#"{"height":"1","round":2147483648,"step":3}"#,
                E::BadRound,
            ),
            (
                "step 4",
                r#"{"height":"1","round":0,"step":4}"#,
                E::BadStep(4),
            ),
            (
                "step 255",
                r#"{"height":"1","round":0,"step":255}"#,
                E::BadStep(255),
            ),
        ];
        for (name, input, expected) in cases {
            let error = SignState::parse(input.as_bytes()).expect_err(name);
            assert_eq!(&error, expected, "{name}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn rejects_malformed_shapes() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "not an object",
                "[1,2]",
                "expected a JSON object, found an array",
            ),
            ("a bare string", r#""height""#, "found a string"),
            ("not JSON", "height=1", "expected value"),
            (
                "trailing garbage",
                r#"{"height":"1","round":0,"step":3} x"#,
                "trailing",
            ),
            (
                "missing height",
                r#"{"round":0,"step":3}"#,
                "missing \"height\"",
            ),
            (
                "missing round",
                r#"{"height":"1","step":3}"#,
                "missing \"round\"",
            ),
            (
                "missing step",
                r#"{"height":"1","round":0}"#,
                "missing \"step\"",
            ),
            (
                "negative step",
                r#"{"height":"1","round":0,"step":-1}"#,
                "from 0 to 3",
            ),
            (
                "huge step",
                r#"{"height":"1","round":0,"step":256}"#,
                "from 0 to 3",
            ),
        ];
        for (name, input, needle) in cases {
            match SignState::parse(input.as_bytes()) {
                Err(SignStateError::Malformed(reason)) => {
                    assert!(reason.contains(needle), "{name}: {reason}")
                }
                other => panic!("{name}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_signature_and_signbytes() {
        let bad_signature = r#"{"height":"1","round":0,"step":3,"signature":"not base64!"}"#;
        assert!(matches!(
            SignState::parse(bad_signature.as_bytes()),
            Err(SignStateError::BadSignature(_))
        ));
        let bad_signbytes = r#"{"height":"1","round":0,"step":3,"signbytes":"XYZ"}"#;
        assert!(matches!(
            SignState::parse(bad_signbytes.as_bytes()),
            Err(SignStateError::BadSignBytes(_))
        ));
        let wrong_type = r#"{"height":"1","round":0,"step":3,"signature":5}"#;
        assert!(matches!(
            SignState::parse(wrong_type.as_bytes()),
            Err(SignStateError::BadSignature(_))
        ));
    }

    #[test]
    fn to_json_is_cometbft_layout_and_round_trips() {
        let fresh = SignState::from_watermark(mark(0, 0, Step::None));
        assert_eq!(
            String::from_utf8(fresh.to_json()).unwrap(),
            "{\n  \"height\": \"0\",\n  \"round\": 0,\n  \"step\": 0\n}"
        );
        let full = SignState {
            height: 123,
            round: 1,
            step: Step::Precommit,
            signature: vec![0, 1, 2, 0xff],
            signbytes: vec![0x0a, 0xbc],
        };
        assert_eq!(
            String::from_utf8(full.to_json()).unwrap(),
            "{\n  \"height\": \"123\",\n  \"round\": 1,\n  \"step\": 3,\n  \"signature\": \"AAEC/w==\",\n  \"signbytes\": \"0ABC\"\n}"
        );
        for state in [fresh, full] {
            assert_eq!(SignState::parse(&state.to_json()).unwrap(), state);
        }
    }
}
