//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for requests signed in headers, as the AWS
//! General Reference describes it: the canonical request, the string to sign, the derived
//! signing key, and the headers that carry the result (`X-Amz-Date`, `Authorization`, and
//! `X-Amz-Security-Token` for temporary credentials).
//!
//! Pure: no I/O and no clock read (the caller passes the [`AmzDate`]), so that AWS's published
//! test suite (`tests/sigv4-vectors/`) checks every intermediate string byte for byte. The
//! derived keys live in zeroizing buffers; nothing here logs.
//!
//! What the caller promises: `headers` are the request's headers exactly as they will be sent
//! (the client sends `Host` itself so that what is signed is what goes out) and none of them is
//! one this module adds (`X-Amz-Date`, `Authorization`, `X-Amz-Security-Token`,
//! `X-Amz-Content-Sha256`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::credentials::Credentials;

/// The algorithm name that opens the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";

/// A request as it will be sent, in the parts SigV4 reads.
#[derive(Clone, Copy, Debug)]
pub struct SignableRequest<'a> {
    /// `GET`, `POST`, … (as sent; not case-folded).
    pub method: &'a str,
    /// The path as it appears on the request line (`/` for EC2). The canonical URI encodes it
    /// once more, every byte but the unreserved ones and `/`: for a path that was already
    /// percent-encoded this is AWS's "encode twice" of services other than S3.
    pub path: &'a str,
    /// The query parameters, decoded, in any order; the canonical query string encodes and
    /// sorts them. A parameter without `=` has the empty value.
    pub query: &'a [(String, String)],
    /// The headers as they will be sent, in order; a repeated name is signed as one header
    /// whose values are joined by `,` in this order.
    pub headers: &'a [(String, String)],
    /// The body exactly as sent (its SHA-256 is the payload hash).
    pub body: &'a [u8],
}

/// Whether the canonical URI is the path with `.`/`..` segments resolved and repeated `/`
/// collapsed (every service but S3), or the path as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathNormalization {
    /// Resolve `.` and `..`, collapse `//`, keep a trailing `/`.
    Normalize,
    /// Sign the path as given (S3).
    AsGiven,
}

/// Whether the payload hash is also sent, and signed, as `x-amz-content-sha256` (S3 wants it;
/// EC2 does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadHashHeader {
    /// Only in the canonical request's last line.
    Omit,
    /// Also as the signed header `x-amz-content-sha256`.
    Add,
}

/// Where the session token of temporary credentials goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionTokenSigning {
    /// `X-Amz-Security-Token` is a signed header (EC2 and most services).
    Signed,
    /// `X-Amz-Security-Token` is added after signing and not signed (a few services want it so).
    AddedAfterSigning,
}

/// Who signs, for which region and service, and when.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    /// The access key and secret (and session token, if temporary).
    pub credentials: &'a Credentials,
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The service's signing name, e.g. `ec2`.
    pub service: &'a str,
    /// The request time; AWS refuses requests more than 5 minutes off its clock.
    pub time: &'a AmzDate,
    /// See [`PathNormalization`].
    pub path_normalization: PathNormalization,
    /// See [`PayloadHashHeader`].
    pub payload_hash_header: PayloadHashHeader,
    /// See [`SessionTokenSigning`].
    pub session_token_signing: SessionTokenSigning,
}

/// A signature and the intermediate strings that led to it.
pub struct Signed {
    /// The canonical request (step 1).
    pub canonical_request: String,
    /// The string to sign (step 2).
    pub string_to_sign: String,
    /// The signature, lowercase hex (step 3).
    pub signature: String,
    /// `host;x-amz-date…`: the signed header names, lowercase, sorted, `;`-separated.
    pub signed_headers: String,
    /// The headers to add to the request, in this order: `X-Amz-Date`,
    /// `x-amz-content-sha256` (if asked for), `X-Amz-Security-Token` (if the credentials have a
    /// session token), `Authorization`.
    pub headers: Vec<(&'static str, String)>,
}

impl Signed {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> &str {
        self.headers
            .iter()
            .find(|(name, _)| *name == "Authorization")
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The session token is sent in the clear to AWS, but it is still a credential.
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                if name.eq_ignore_ascii_case("x-amz-security-token") {
                    (*name, "REDACTED")
                } else {
                    (*name, value.as_str())
                }
            })
            .collect();
        f.debug_struct("Signed")
            .field("signed_headers", &self.signed_headers)
            .field("signature", &self.signature)
            .field("headers", &headers)
            .finish_non_exhaustive()
    }
}

/// Signs `request`: builds the canonical request and the string to sign, derives the signing
/// key from the secret, and returns the headers to add.
pub fn sign(request: &SignableRequest<'_>, params: &SigningParams<'_>) -> Signed {
    let payload_hash = hex::encode(Sha256::digest(request.body));

    // The headers that are signed: the request's, then the ones this module adds.
    let mut added: Vec<(&'static str, String)> =
        vec![("X-Amz-Date", params.time.as_str().to_string())];
    if params.payload_hash_header == PayloadHashHeader::Add {
        added.push(("x-amz-content-sha256", payload_hash.clone()));
    }
    let token = params.credentials.session_token.as_deref();
    let mut unsigned: Vec<(&'static str, String)> = Vec::new();
    if let Some(token) = token {
        let header = ("X-Amz-Security-Token", token.to_string());
        match params.session_token_signing {
            SessionTokenSigning::Signed => added.push(header),
            SessionTokenSigning::AddedAfterSigning => unsigned.push(header),
        }
    }
    let mut canonical_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let all_headers = request
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .chain(added.iter().map(|(name, value)| (*name, value.as_str())));
    for (name, value) in all_headers {
        canonical_headers
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(canonical_header_value(value));
    }
    let signed_headers = canonical_headers
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";");

    let mut canonical_request = String::new();
    canonical_request.push_str(request.method);
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_uri(request.path, params.path_normalization));
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_query(request.query));
    canonical_request.push('\n');
    for (name, values) in &canonical_headers {
        canonical_request.push_str(name);
        canonical_request.push(':');
        canonical_request.push_str(&values.join(","));
        canonical_request.push('\n');
    }
    canonical_request.push('\n');
    canonical_request.push_str(&signed_headers);
    canonical_request.push('\n');
    canonical_request.push_str(&payload_hash);

    let scope = credential_scope(params.time, params.region, params.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        params.time.as_str(),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );

    let key = signing_key(
        &params.credentials.secret_access_key,
        params.time.date(),
        params.region,
        params.service,
    );
    let signature = hex::encode(hmac_sha256(key.as_slice(), string_to_sign.as_bytes()).as_slice());
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        params.credentials.access_key_id
    );

    let mut headers = added;
    headers.extend(unsigned);
    headers.push(("Authorization", authorization));
    Signed {
        canonical_request,
        string_to_sign,
        signature,
        signed_headers,
        headers,
    }
}

/// `YYYYMMDD/region/service/aws4_request`.
pub fn credential_scope(time: &AmzDate, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/{SCOPE_TERMINATOR}", time.date())
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    let mut secret_key = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    secret_key.extend_from_slice(b"AWS4");
    secret_key.extend_from_slice(secret.as_bytes());
    let date_key = hmac_sha256(&secret_key, date.as_bytes());
    let region_key = hmac_sha256(date_key.as_slice(), region.as_bytes());
    let service_key = hmac_sha256(region_key.as_slice(), service.as_bytes());
    hmac_sha256(service_key.as_slice(), SCOPE_TERMINATOR.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// A header value as signed: surrounding whitespace trimmed, inner runs of whitespace (folded
/// lines included) collapsed into one space.
fn canonical_header_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical URI: the (optionally normalized) path, every byte but unreserved ones and
/// `/` percent-encoded.
fn canonical_uri(path: &str, normalization: PathNormalization) -> String {
    let path = match normalization {
        PathNormalization::Normalize => normalize_path(path),
        PathNormalization::AsGiven if path.is_empty() => "/".to_string(),
        PathNormalization::AsGiven => path.to_string(),
    };
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        percent_encode_into(segment.as_bytes(), &mut out);
    }
    out
}

/// RFC 3986 dot-segment removal with empty segments dropped: `//a/./b/../c/` → `/a/c/`. A
/// trailing `/` (or a last segment `.` or `..`) keeps the result's trailing `/`.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    let trailing_slash = matches!(last, "" | "." | "..");
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if trailing_slash && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query string: names and values encoded, sorted by name then value,
/// `name=value` joined by `&`.
fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(name, value)| (percent_encode(name), percent_encode(value)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// SigV4's URI encoding: `A-Z a-z 0-9 - _ . ~` as they are, every other byte of the UTF-8 as
/// `%XX` (uppercase hex), `/` and space included. Also a valid
/// `application/x-www-form-urlencoded` encoding (the client's request bodies use it).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    percent_encode_into(text.as_bytes(), &mut out);
    out
}

fn percent_encode_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// A request time in SigV4's basic ISO 8601 form, `YYYYMMDDTHHMMSSZ` (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmzDate(String);

impl AmzDate {
    /// Now, from the system clock.
    pub fn now() -> AmzDate {
        AmzDate::from_system_time(SystemTime::now())
    }

    /// `time` in UTC (a time before 1970 counts as 1970-01-01T00:00:00Z).
    pub fn from_system_time(time: SystemTime) -> AmzDate {
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        AmzDate::from_unix_seconds(seconds)
    }

    /// `seconds` after 1970-01-01T00:00:00Z.
    pub fn from_unix_seconds(seconds: u64) -> AmzDate {
        let days = seconds / 86_400;
        let of_day = seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        AmzDate(format!(
            "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        ))
    }

    /// `YYYYMMDDTHHMMSSZ`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `YYYYMMDD`, the credential scope's date.
    pub fn date(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `YYYYMMDDTHHMMSSZ` that is not one (the reason).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SigV4 time (YYYYMMDDTHHMMSSZ, UTC)")]
pub struct InvalidAmzDate(pub String);

impl FromStr for AmzDate {
    type Err = InvalidAmzDate;

    fn from_str(text: &str) -> Result<AmzDate, InvalidAmzDate> {
        let invalid = || InvalidAmzDate(text.to_string());
        let bytes = text.as_bytes();
        if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
            return Err(invalid());
        }
        let number = |range: std::ops::Range<usize>| -> Result<u64, InvalidAmzDate> {
            let digits = &text[range];
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse().map_err(|_| invalid())
            } else {
                Err(invalid())
            }
        };
        let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
        let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(invalid());
        }
        Ok(AmzDate(text.to_string()))
    }
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// (year, month, day) of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_bytes_stay_and_everything_else_is_uppercase_percent_hex() {
        let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        assert_eq!(percent_encode(unreserved), unreserved);
        for (text, encoded) in [
            (" ", "%20"),
            ("/", "%2F"),
            ("+", "%2B"),
            ("=", "%3D"),
            ("&", "%26"),
            ("*", "%2A"),
            ("%", "%25"),
            (":", "%3A"),
            ("ሴ", "%E1%88%B4"),
            ("tag:palisade", "tag%3Apalisade"),
        ] {
            assert_eq!(percent_encode(text), encoded, "{text:?}");
        }
    }

    #[test]
    fn paths_normalize_like_rfc_3986_with_empty_segments_dropped() {
        for (path, normalized) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/example1/example2/..", "/example1/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/./b/../c/", "/a/c/"),
            ("/../a", "/a"),
            ("/a/.", "/a/"),
        ] {
            assert_eq!(normalize_path(path), normalized, "{path:?}");
        }
        assert_eq!(
            canonical_uri("/example space/", PathNormalization::AsGiven),
            "/example%20space/"
        );
        assert_eq!(canonical_uri("//a//", PathNormalization::AsGiven), "//a//");
    }

    #[test]
    fn query_parameters_sort_by_encoded_name_then_value() {
        let query = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "z".to_string()),
            ("a".to_string(), "y".to_string()),
            ("ሴ".to_string(), "".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(canonical_query(&query), "%E1%88%B4=&B=x%20y&a=y&a=z&b=2");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn header_values_are_trimmed_and_whitespace_runs_collapse() {
        assert_eq!(canonical_header_value("  a   b\t c  "), "a b c");
        assert_eq!(canonical_header_value("value1\n  value2"), "value1 value2");
        assert_eq!(canonical_header_value(""), "");
    }

    #[test]
    fn amz_dates_from_unix_seconds_and_back_from_text() {
        for (seconds, text) in [
            (0, "19700101T000000Z"),
            (1_440_938_160, "20150830T123600Z"),
            (951_782_400, "20000229T000000Z"),
            (4_102_444_799, "20991231T235959Z"),
            (4_107_542_399, "21000228T235959Z"),
            (4_107_542_400, "21000301T000000Z"),
            (1_709_164_800, "20240229T000000Z"),
        ] {
            let date = AmzDate::from_unix_seconds(seconds);
            assert_eq!(date.as_str(), text);
            assert_eq!(text.parse::<AmzDate>().unwrap(), date);
        }
        assert_eq!(AmzDate::from_unix_seconds(1_440_938_160).date(), "20150830");
        for bad in [
            "",
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20150830 123600Z",
            "20151330T123600Z",
            "20150230T123600Z",
            "21000229T000000Z",
            "20150830T243600Z",
            "20150830T126000Z",
            "2015083aT123600Z",
            "+0150830T123600Z",
        ] {
            assert!(bad.parse::<AmzDate>().is_err(), "{bad:?}");
        }
    }

    /// The example of the AWS General Reference's "derive a signing key" page.
    #[test]
    fn signing_key_matches_the_documented_example() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key.as_slice()),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
