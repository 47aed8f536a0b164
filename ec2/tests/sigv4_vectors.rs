//! Every vector of AWS's SigV4 test suite vendored in `tests/sigv4-vectors/` (see its
//! README), signed by `palisade_ec2::sigv4` and compared byte for byte: the canonical request,
//! the string to sign, the signature, the `Authorization` header, and the headers the signed
//! request carries. A missing file fails the test, and so does running fewer vectors than are
//! vendored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use palisade_ec2::Credentials;
use palisade_ec2::Zeroizing;
use palisade_ec2::sigv4::{
    self, AmzDate, PathNormalization, PayloadHashHeader, SessionTokenSigning, SignableRequest,
    SigningParams,
};
use serde_json::Value;

/// How many vectors are vendored (all of the suite's `v4` directory).
const VECTORS: usize = 38;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-vectors")
}

fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A request of the suite's `request.txt` form: a request line, `Name:value` headers (a line
/// that starts with whitespace continues the previous value), then an empty line and the body.
struct ParsedRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> ParsedRequest {
    let (head, body) = match text.split_once("\n\n") {
        Some((head, body)) => (head, body),
        None => (text.trim_end_matches('\n'), ""),
    };
    let mut lines = head.split('\n');
    let request_line = lines.next().expect("a request line");
    let (method, rest) = request_line.split_once(' ').expect("method and target");
    let target = rest
        .rsplit_once(" HTTP/")
        .map(|(target, _)| target)
        .expect("an HTTP version");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let query = query
        .map(|query| {
            query
                .split('&')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(name), percent_decode(value))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a continuation after a header");
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("Name:value");
            headers.push((name.to_string(), value.to_string()));
        }
    }
    ParsedRequest {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII hex");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// The headers as a multiset of (lowercase name, value) for comparison.
fn header_set<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<(String, String), usize> {
    let mut set = BTreeMap::new();
    for (name, value) in headers {
        *set.entry((name.to_ascii_lowercase(), value.to_string()))
            .or_default() += 1;
    }
    set
}

fn string(context: &Value, pointer: &str) -> String {
    context
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("context.json has no string {pointer}"))
        .to_string()
}

fn flag(context: &Value, key: &str) -> bool {
    context.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Signs one vector and compares; the first difference as an error.
fn check_vector(dir: &Path) -> Result<(), String> {
    let context: Value = serde_json::from_str(&read(dir, "context.json")).expect("JSON");
    let credentials = Credentials::new(
        string(&context, "/credentials/access_key_id"),
        Zeroizing::new(string(&context, "/credentials/secret_access_key")),
        context
            .pointer("/credentials/token")
            .and_then(Value::as_str)
            .map(|token| Zeroizing::new(token.to_string())),
    )
    .map_err(|e| e.to_string())?;
    // "2015-08-30T12:36:00Z" → "20150830T123600Z".
    let time: AmzDate = string(&context, "/timestamp")
        .replace(['-', ':'], "")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let region = string(&context, "/region");
    let service = string(&context, "/service");
    let request = parse_request(&read(dir, "request.txt"));
    let signed = sigv4::sign(
        &SignableRequest {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &request.headers,
            body: &request.body,
        },
        &SigningParams {
            credentials: &credentials,
            region: &region,
            service: &service,
            time: &time,
            path_normalization: if flag(&context, "normalize") {
                PathNormalization::Normalize
            } else {
                PathNormalization::AsGiven
            },
            payload_hash_header: if flag(&context, "sign_body") {
                PayloadHashHeader::Add
            } else {
                PayloadHashHeader::Omit
            },
            session_token_signing: if flag(&context, "omit_session_token") {
                SessionTokenSigning::AddedAfterSigning
            } else {
                SessionTokenSigning::Signed
            },
        },
    );

    let compare = |what: &str, ours: &str, expected: &str| {
        if ours == expected {
            Ok(())
        } else {
            Err(format!(
                "{what} differs:\n--- ours\n{ours}\n--- expected\n{expected}\n---"
            ))
        }
    };
    compare(
        "canonical request",
        &signed.canonical_request,
        &read(dir, "header-canonical-request.txt"),
    )?;
    compare(
        "string to sign",
        &signed.string_to_sign,
        &read(dir, "header-string-to-sign.txt"),
    )?;
    compare(
        "signature",
        &signed.signature,
        &read(dir, "header-signature.txt"),
    )?;
    let expected = parse_request(&read(dir, "header-signed-request.txt"));
    let expected_authorization = expected
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.as_str())
        .ok_or("header-signed-request.txt has no Authorization")?;
    compare(
        "Authorization header",
        signed.authorization(),
        expected_authorization,
    )?;
    let ours = header_set(
        request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(
                signed
                    .headers
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            ),
    );
    let theirs = header_set(
        expected
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    if ours != theirs {
        return Err(format!(
            "signed request headers differ:\n ours {ours:?}\n expected {theirs:?}"
        ));
    }
    if (expected.method.as_str(), expected.body.as_slice())
        != (request.method.as_str(), request.body.as_slice())
    {
        return Err("the signed request's method or body differs from the request's".into());
    }
    Ok(())
}

#[test]
fn every_vendored_aws_sigv4_vector_matches_byte_for_byte() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .expect("tests/sigv4-vectors")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        if let Err(difference) = check_vector(dir) {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            failures.push(format!("{name}: {difference}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        dirs.len(),
        VECTORS,
        "every vendored vector runs, and none went missing"
    );
}

/// The test above can fail: a vector whose expected signature is changed does not pass.
#[test]
fn a_tampered_vector_is_caught() {
    let scratch = tempfile::tempdir().unwrap();
    let source = vectors_dir().join("get-vanilla");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, scratch.path().join(path.file_name().unwrap())).unwrap();
    }
    check_vector(scratch.path()).unwrap();
    let signature = scratch.path().join("header-signature.txt");
    let mut text = std::fs::read_to_string(&signature).unwrap();
    text.replace_range(0..1, if text.starts_with('0') { "1" } else { "0" });
    std::fs::write(&signature, text).unwrap();
    let error = check_vector(scratch.path()).unwrap_err();
    assert!(error.starts_with("signature differs"), "{error}");
}

/// The parser's decoding of the suite's request lines.
#[test]
fn request_files_parse_as_the_suite_writes_them() {
    let request = parse_request(
        "GET /?Param-3=Value3&%E1%88%B4=Value1&Flag HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\n  value2\n\nbody",
    );
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/")
    );
    assert_eq!(
        request.query,
        [
            ("Param-3".to_string(), "Value3".to_string()),
            ("ሴ".to_string(), "Value1".to_string()),
            ("Flag".to_string(), String::new()),
        ]
    );
    assert_eq!(request.headers[1].1, "value1\n  value2");
    assert_eq!(request.body, b"body");
}
