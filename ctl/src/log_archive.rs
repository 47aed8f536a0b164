//! `palisade-ctl logs --archive`: read the log segments the supervisor
//! shipped (`docs/log-format.md`), through a bastion (`--via`, the
//! operators' key's `rpc-relay` serving `palisade-log-archive VALIDATOR`:
//! `list` and `get` of log objects, nothing else) or from a directory
//! (`--from-dir`, for tests and recovery).
//!
//! Each segment is checked before anything of it is decrypted: its `.sig`
//! must verify under the pinned signer key (`--signer`, else
//! `PALISADE_LOG_SIGNER`, else the validator's `log-signer` in the config:
//! the public half of the supervisor's `logs.signing-key`), name the
//! validator asked for and the segment's own name (no renamed or replayed
//! object), and match the `.age` object's length and SHA-256 (no truncated
//! or altered one). Only then is it decrypted with the operator's age
//! identity (`--identity`, else the config's `log-identity`),
//! decompressed (bounded by the signed plaintext length) and its lines
//! filtered (`--since`, `--until`, `--grep`) and printed, oldest first.
//!
//! A segment that fails a check is refused with a line on stderr naming it
//! and why; the others are still printed, and the command then exits 1 and
//! says how many were refused. Gaps in a host's sequence are reported on
//! stderr (segments the spool dropped, or the bastion removed or withholds).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;
use ed25519_dalek::{Signature, VerifyingKey};
use palisade_client::BastionTarget;
use palisade_wire::backup_store::{
    MAX_LOG_PAYLOAD_BYTES, MAX_RESPONSE_HEADER_BYTES, ObjectKind, Request, Response,
    decode_response, encode_header,
};
use palisade_wire::log_segment::{
    MAX_SIGNATURE_FILE_BYTES, SegmentName, SegmentPart, SignatureFile, signed_message, to_hex,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ConnectionArgs, Error, Purpose};

/// Largest plaintext a segment may announce (the supervisor cuts at 1 MiB;
/// a long line's record may pass that a little).
const MAX_PLAINTEXT_BYTES: u64 = 2 * 1024 * 1024;

/// `logs --archive` and its options.
#[derive(Debug, Clone, Default, Args)]
pub struct ArchiveArgs {
    /// Read the shipped, encrypted log segments (through --via's bastion,
    /// or --from-dir) instead of the supervisor's recent lines.
    #[arg(long)]
    pub archive: bool,
    /// With --archive: only lines at or after T (RFC 3339, e.g.
    /// 2026-12-07T08:00:00Z, or a duration ago, e.g. 2h).
    #[arg(long, value_name = "T", requires = "archive", value_parser = parse_time)]
    pub since: Option<SystemTime>,
    /// With --archive: only lines at or before T (as --since).
    #[arg(long, value_name = "T", requires = "archive", value_parser = parse_time)]
    pub until: Option<SystemTime>,
    /// With --archive: only lines matching this regular expression.
    #[arg(long, value_name = "RE", requires = "archive")]
    pub grep: Option<String>,
    /// With --archive: the operator's age identity file (`age-keygen`
    /// output), or an unencrypted OpenSSH ed25519 private key whose public
    /// key is among `logs.recipients` [default: the validator's
    /// `log-identity` in the config].
    #[arg(long, value_name = "AGE_KEY_FILE", requires = "archive")]
    pub identity: Option<PathBuf>,
    /// With --archive: the supervisor's segment signing key, pinned: an
    /// `ssh-ed25519 AAAA…` public key, or a file holding one (the `.pub` of
    /// `logs.signing-key`, by default the tunnel's key) [default: the
    /// validator's `log-signer` in the config; this flag, then the
    /// environment variable, then the config].
    #[arg(
        long,
        value_name = "KEY_OR_FILE",
        requires = "archive",
        env = "PALISADE_LOG_SIGNER"
    )]
    pub signer: Option<String>,
    /// With --archive: read segments from this directory instead of a
    /// bastion (a copy of a store's `logs/` directory, or a spool).
    #[arg(long, value_name = "DIR", requires = "archive")]
    pub from_dir: Option<PathBuf>,
}

/// `--since` / `--until`: RFC 3339, or a duration before now.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{text} ago is before the epoch")),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-12-07T08:00:00Z) nor a duration ago (2h)"
        )),
    }
}

/// Parses an `ssh-ed25519 AAAA… [comment]` line into its key.
pub fn parse_ssh_ed25519_public(text: &str) -> Result<VerifyingKey, String> {
    use base64::Engine as _;
    let mut words = text.split_ascii_whitespace();
    if words.next() != Some("ssh-ed25519") {
        return Err("not an ssh-ed25519 public key (expected \"ssh-ed25519 AAAA…\")".into());
    }
    let blob = words
        .next()
        .and_then(|word| base64::engine::general_purpose::STANDARD.decode(word).ok())
        .ok_or("the key's base64 does not decode")?;
    // string "ssh-ed25519", string key (32 bytes): RFC 8709 §4.
    let mut expected = Vec::new();
    expected.extend_from_slice(&11u32.to_be_bytes());
    expected.extend_from_slice(b"ssh-ed25519");
    expected.extend_from_slice(&32u32.to_be_bytes());
    if blob.len() != expected.len() + 32 || !blob.starts_with(&expected) {
        return Err("not an ssh-ed25519 key blob".into());
    }
    let bytes: [u8; 32] = blob[expected.len()..].try_into().expect("32 bytes");
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid ed25519 point".into())
}

/// The pinned signer from `--signer`: the key itself or a file holding it.
fn signer(text: &str) -> Result<VerifyingKey, Error> {
    let key_text = if text.trim_start().starts_with("ssh-") {
        text.to_owned()
    } else {
        std::fs::read_to_string(text)
            .map_err(|error| Error::Usage(format!("--signer {text}: {error}")))?
    };
    parse_ssh_ed25519_public(key_text.trim())
        .map_err(|reason| Error::Usage(format!("--signer: {reason}")))
}

/// The operator's identities from `path`; `origin` names where it was
/// given (`--identity`, or the config's `log-identity`) in errors.
fn identities(path: &Path, origin: &str) -> Result<Vec<Box<dyn age::Identity>>, Error> {
    let usage = |reason: String| Error::Usage(format!("{origin} {}: {reason}", path.display()));
    let bytes = std::fs::read(path).map_err(|error| usage(error.to_string()))?;
    if let Ok(file) = age::IdentityFile::from_buffer(&bytes[..])
        && let Ok(identities) = file.into_identities()
        && !identities.is_empty()
    {
        return Ok(identities);
    }
    match age::ssh::Identity::from_buffer(&bytes[..], Some(path.display().to_string())) {
        Ok(identity @ age::ssh::Identity::Unencrypted(_)) => Ok(vec![Box::new(identity)]),
        Ok(age::ssh::Identity::Encrypted(_)) => Err(usage(
            "an SSH key with a passphrase: use an age identity (age-keygen) or an unencrypted copy"
                .into(),
        )),
        _ => Err(usage(
            "neither an age identity file (AGE-SECRET-KEY-…) nor an OpenSSH ed25519 private key"
                .into(),
        )),
    }
}

/// Where segments come from.
enum Source {
    Dir(PathBuf),
    Bastion(Box<dyn Channel>),
}

/// A byte stream to the bastion's store session.
trait Channel: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Channel for T {}

impl Source {
    async fn list(&mut self, validator: &str) -> Result<Vec<String>, String> {
        match self {
            Source::Dir(dir) => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&*dir)
                    .map_err(|error| format!("{}: {error}", dir.display()))?
                {
                    let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_owned());
                    }
                }
                names.sort();
                Ok(names)
            }
            Source::Bastion(channel) => {
                let mut names: Vec<String> = Vec::new();
                loop {
                    let after = names.last().cloned().unwrap_or_default();
                    let request = Request::List {
                        validator: validator.to_owned(),
                        kind: ObjectKind::Log,
                        after: Some(after),
                    };
                    let (response, _) = exchange(channel, &request, false).await?;
                    let page = response
                        .files
                        .ok_or("the bastion answered a listing without names")?;
                    let full = page.len() >= palisade_wire::backup_store::MAX_LIST_ENTRIES;
                    if let (Some(last), Some(first)) = (names.last(), page.first())
                        && first <= last
                    {
                        return Err("the bastion's listing pages are out of order".into());
                    }
                    names.extend(page);
                    if !full {
                        return Ok(names);
                    }
                }
            }
        }
    }

    async fn get(&mut self, validator: &str, file: &str, limit: usize) -> Result<Vec<u8>, String> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(file);
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|handle| handle.take(limit as u64 + 1).read_to_end(&mut bytes))
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                if bytes.len() > limit {
                    return Err(format!("larger than {limit} bytes"));
                }
                Ok(bytes)
            }
            Source::Bastion(channel) => {
                let request = Request::Get {
                    validator: validator.to_owned(),
                    file: file.to_owned(),
                    kind: ObjectKind::Log,
                };
                let (_, payload) = exchange(channel, &request, true).await?;
                let payload = payload.unwrap_or_default();
                if payload.len() > limit {
                    return Err(format!("larger than {limit} bytes"));
                }
                Ok(payload)
            }
        }
    }
}

/// One request and its answer (and a `get`'s payload), bounded in time and
/// size.
async fn exchange(
    channel: &mut Box<dyn Channel>,
    request: &Request,
    payload: bool,
) -> Result<(Response, Option<Vec<u8>>), String> {
    let work = async {
        channel
            .write_all(&encode_header(request))
            .await
            .map_err(|error| format!("sending the request: {error}"))?;
        channel
            .flush()
            .await
            .map_err(|error| format!("sending the request: {error}"))?;
        let mut prefix = [0u8; 4];
        channel
            .read_exact(&mut prefix)
            .await
            .map_err(|error| format!("no answer from the bastion: {error}"))?;
        if &prefix == b"pali" {
            // rpc-relay's refusal line, where a frame was expected.
            let mut line = Vec::new();
            let _ = (&mut *channel).take(512).read_to_end(&mut line).await;
            let text =
                String::from_utf8_lossy(&prefix).into_owned() + &String::from_utf8_lossy(&line);
            return Err(palisade_client::peer_text::clean(text.trim()));
        }
        let length = u32::from_be_bytes(prefix) as usize;
        if length > MAX_RESPONSE_HEADER_BYTES {
            return Err(format!("the bastion sent a {length}-byte header"));
        }
        let mut body = vec![0u8; length];
        channel
            .read_exact(&mut body)
            .await
            .map_err(|error| format!("incomplete answer from the bastion: {error}"))?;
        let response = decode_response(&body)?;
        if !response.ok {
            let error = response.error.as_ref();
            return Err(format!(
                "the bastion refused: {}: {}",
                error.map(|e| e.kind.as_str()).unwrap_or("?"),
                error.map(|e| e.message.as_str()).unwrap_or("")
            ));
        }
        if !payload {
            return Ok((response, None));
        }
        let announced = response.bytes.unwrap_or(0);
        if announced > MAX_LOG_PAYLOAD_BYTES as u64 {
            return Err(format!("the bastion announced {announced} bytes"));
        }
        channel
            .read_exact(&mut prefix)
            .await
            .map_err(|error| format!("no payload from the bastion: {error}"))?;
        if u64::from(u32::from_be_bytes(prefix)) != announced {
            return Err("the bastion's payload frame differs from its announcement".into());
        }
        let mut bytes = vec![0u8; announced as usize];
        channel
            .read_exact(&mut bytes)
            .await
            .map_err(|error| format!("incomplete payload from the bastion: {error}"))?;
        Ok((response, Some(bytes)))
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .map_err(|_| "the bastion did not answer within 60 s".to_string())?
}

/// What the reader needs besides the source.
struct Reader {
    validator: String,
    signer: VerifyingKey,
    identities: Vec<Box<dyn age::Identity>>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    grep: Option<regex::Regex>,
    json: bool,
}

/// Why one segment was refused.
type Refusal = String;

impl Reader {
    /// Checks a `.sig` object against the pin and the name it was stored
    /// under.
    fn check_signature(&self, name: &SegmentName, bytes: &[u8]) -> Result<SignatureFile, Refusal> {
        let file = SignatureFile::parse(bytes)
            .map_err(|reason| format!("bad signature object: {reason}"))?;
        let signature = Signature::from_bytes(&file.signature_bytes()?);
        self.signer
            .verify_strict(&signed_message(&file.metadata), &signature)
            .map_err(|_| {
                "the signature does not verify under the pinned signer key (forged or altered)"
                    .to_string()
            })?;
        if file.metadata.validator != self.validator {
            return Err(format!(
                "signed for validator {:?}, not {:?} (replayed from another validator)",
                file.metadata.validator, self.validator
            ));
        }
        if &file.metadata.name() != name {
            return Err(format!(
                "signed as {}, stored as {} (renamed)",
                file.metadata.name().stem(),
                name.stem()
            ));
        }
        if file.metadata.plaintext_bytes > MAX_PLAINTEXT_BYTES {
            return Err("announces more plaintext than a segment holds".into());
        }
        Ok(file)
    }

    /// Checks the ciphertext against the verified metadata, then decrypts
    /// and decompresses it.
    fn open(&self, file: &SignatureFile, ciphertext: &[u8]) -> Result<Vec<u8>, Refusal> {
        let metadata = &file.metadata;
        if ciphertext.len() as u64 != metadata.ciphertext_bytes {
            return Err(format!(
                "the ciphertext is {} bytes, the signature says {} (truncated or extended)",
                ciphertext.len(),
                metadata.ciphertext_bytes
            ));
        }
        if to_hex(&Sha256::digest(ciphertext)) != metadata.ciphertext_sha256 {
            return Err("the ciphertext's SHA-256 differs from the signed one (altered)".into());
        }
        let decryptor = age::Decryptor::new_buffered(ciphertext)
            .map_err(|error| format!("not age ciphertext: {error}"))?;
        let mut reader = decryptor
            .decrypt(self.identities.iter().map(|identity| identity.as_ref()))
            .map_err(|error| format!("cannot decrypt with --identity: {error}"))?;
        let mut compressed = Vec::new();
        reader
            .read_to_end(&mut compressed)
            .map_err(|error| format!("cannot decrypt: {error}"))?;
        let plaintext = zstd::bulk::decompress(&compressed, metadata.plaintext_bytes as usize)
            .map_err(|error| format!("cannot decompress: {error}"))?;
        if plaintext.len() as u64 != metadata.plaintext_bytes {
            return Err("the plaintext's length differs from the signed one".into());
        }
        Ok(plaintext)
    }

    /// Whether the segment's time span meets the window.
    fn overlaps(&self, file: &SignatureFile) -> bool {
        let first = humantime::parse_rfc3339(&file.metadata.first_ts).ok();
        let last = humantime::parse_rfc3339(&file.metadata.last_ts).ok();
        if let (Some(until), Some(first)) = (self.until, first)
            && first > until
        {
            return false;
        }
        if let (Some(since), Some(last)) = (self.since, last)
            && last < since
        {
            return false;
        }
        true
    }

    /// Print the lines of `plaintext` that pass the filters; returns how
    /// many.
    fn print(&self, plaintext: &[u8], out: &mut impl Write) -> std::io::Result<u64> {
        let mut printed = 0;
        for line in String::from_utf8_lossy(plaintext).lines() {
            if !self.line_in_window(line) {
                continue;
            }
            if let Some(grep) = &self.grep
                && !grep.is_match(line)
            {
                continue;
            }
            if self.json && !line.starts_with('{') {
                writeln!(out, "{}", serde_json::json!({ "line": line }))?;
            } else {
                writeln!(out, "{}", palisade_client::peer_text::clean(line))?;
            }
            printed += 1;
        }
        Ok(printed)
    }

    fn line_in_window(&self, line: &str) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        // JSON: `{"ts":"…"`; text: the first word.
        let ts = line
            .strip_prefix("{\"ts\":\"")
            .and_then(|rest| rest.split('"').next())
            .or_else(|| line.split(' ').next());
        let Some(at) = ts.and_then(|ts| humantime::parse_rfc3339(ts).ok()) else {
            return true;
        };
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at <= until)
    }
}

/// `logs --archive`'s settings from the validator's `[[validator]]` in
/// the config file, used where neither a flag nor the environment gives
/// them.
#[derive(Debug, Default, Clone)]
pub struct ArchiveProfile {
    /// Names the entry in messages: `<file>: validator 'val-a'`.
    pub origin: String,
    /// `log-signer`, already parsed.
    pub signer: Option<VerifyingKey>,
    /// `log-identity`, read when it is used.
    pub identity: Option<PathBuf>,
    /// Why no entry applies (e.g. `--validator` names none in the config),
    /// added to the message when a setting is missing.
    pub unavailable: Option<String>,
}

impl ArchiveProfile {
    /// Where `key` could have been set, for a message about a missing
    /// setting.
    fn hint(&self, key: &str) -> String {
        match &self.unavailable {
            Some(reason) => format!(", or `{key}` in the config ({reason})"),
            None if self.origin.is_empty() => {
                format!(", or `{key}` in the config's [[validator]]")
            }
            None => format!(", or `{key}` in {}", self.origin),
        }
    }
}

/// Where the pinned signer key comes from.
enum Pin<'a> {
    /// `--signer` or `PALISADE_LOG_SIGNER`: a key line or a file.
    Given(&'a str),
    /// The config's `log-signer`.
    Configured(VerifyingKey),
}

/// Run `logs --archive`. Precedence for the signer: `--signer`, then
/// `PALISADE_LOG_SIGNER` (both in `args.signer`, by clap), then the
/// profile's `log-signer`; for the identity: `--identity`, then
/// `log-identity`.
pub fn run(
    connection: &ConnectionArgs,
    args: &ArchiveArgs,
    profile: &ArchiveProfile,
    json: bool,
) -> Result<(), Error> {
    let (identity, identity_origin) = match (&args.identity, &profile.identity) {
        (Some(path), _) => (path, "--identity".to_string()),
        (None, Some(path)) => (path, format!("{}: log-identity", profile.origin)),
        (None, None) => {
            return Err(Error::Usage(format!(
                "--archive needs --identity AGE_KEY_FILE (an operator's age identity){}",
                profile.hint("log-identity")
            )));
        }
    };
    // Flag or environment: parsed below (after --grep, as before);
    // the config's: parsed with the config. An empty PALISADE_LOG_SIGNER
    // (clap gives it as "") counts as unset, as empty variables do for the
    // supervisor.
    let given = args
        .signer
        .as_deref()
        .filter(|text| !text.trim().is_empty());
    let pinned = match (given, profile.signer) {
        (Some(text), _) => Pin::Given(text),
        (None, Some(key)) => Pin::Configured(key),
        (None, None) => {
            return Err(Error::Usage(format!(
                "--archive needs --signer (or PALISADE_LOG_SIGNER): the supervisor's log signing \
                 public key (ssh-ed25519 …, the .pub of logs.signing-key) or a file holding it{}",
                profile.hint("log-signer")
            )));
        }
    };
    let grep = match &args.grep {
        Some(pattern) => Some(
            regex::Regex::new(pattern).map_err(|error| Error::Usage(format!("--grep: {error}")))?,
        ),
        None => None,
    };
    let mut reader = Reader {
        validator: String::new(),
        signer: match pinned {
            Pin::Given(text) => signer(text)?,
            Pin::Configured(key) => key,
        },
        identities: identities(identity, &identity_origin)?,
        since: args.since,
        until: args.until,
        grep,
        json,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Output(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(async {
        let source = match &args.from_dir {
            Some(dir) => {
                reader.validator = connection.validator.clone().ok_or_else(|| {
                    Error::Usage("--from-dir needs --validator NAME (checked against each segment's signature)".into())
                })?;
                Source::Dir(dir.clone())
            }
            None => {
                let options = crate::connect_options_for(connection, Purpose::LogArchive)?;
                let palisade_client::Endpoint::Bastion {
                    dial,
                    target: BastionTarget::Relay { validator },
                } = options.endpoint
                else {
                    return Err(Error::Usage(
                        "--archive reads through a bastion's rpc-relay: give --via USER@BASTION \
                         and --validator NAME (not --socket or --remote-socket), or --from-dir DIR"
                            .into(),
                    ));
                };
                let link = palisade_ssh::dial::dial(&dial)
                    .await
                    .map_err(|error| Error::Call(error.into()))?;
                let channel = link
                    .open_command(&palisade_client::log_archive_command(&validator))
                    .await
                    .map_err(|error| Error::Call(error.into()))?;
                reader.validator = validator;
                Source::Bastion(Box::new(channel))
            }
        };
        read_all(&reader, source).await
    })
}

async fn read_all(reader: &Reader, mut source: Source) -> Result<(), Error> {
    let validator = reader.validator.clone();
    let names = source
        .list(&validator)
        .await
        .map_err(|reason| Error::Output(format!("cannot list the log segments: {reason}")))?;
    // Segment → which of its objects are there.
    let mut segments: BTreeMap<SegmentName, (bool, bool)> = BTreeMap::new();
    for name in &names {
        if let Some((segment, part)) = SegmentName::parse(name) {
            let slot = segments.entry(segment).or_default();
            match part {
                SegmentPart::Ciphertext => slot.0 = true,
                SegmentPart::Signature => slot.1 = true,
            }
        }
    }
    // The newest segment of each host may be in flight (its `.age` stored,
    // its `.sig` not yet): incomplete there, it is noted, not refused. A
    // bastion that deletes one object of it gains nothing it could not by
    // withholding the segment.
    let newest: BTreeMap<String, u64> =
        segments.keys().fold(BTreeMap::new(), |mut newest, name| {
            let entry = newest.entry(name.host.clone()).or_insert(name.sequence);
            *entry = (*entry).max(name.sequence);
            newest
        });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut refused, mut read, mut lines) = (0usize, 0usize, 0u64);
    let mut previous: Option<SegmentName> = None;
    for (name, (has_ciphertext, has_signature)) in &segments {
        if let Some(previous) = &previous
            && previous.host == name.host
            && previous.sequence + 1 < name.sequence
        {
            eprintln!(
                "palisade-ctl: note: segments {}..{} of host {} are missing (dropped from a full \
                 spool, removed by the bastion's retention, or withheld)",
                previous.sequence + 1,
                name.sequence - 1,
                name.host
            );
        }
        previous = Some(name.clone());
        if (!has_signature || !has_ciphertext) && newest.get(&name.host) == Some(&name.sequence) {
            eprintln!(
                "palisade-ctl: note: the newest segment {} is incomplete on the bastion (an upload \
                 in flight?); skipped",
                name.stem()
            );
            continue;
        }
        let outcome = async {
            if !has_signature {
                return Err("unsigned: there is no .sig object for it".to_string());
            }
            let signature = source
                .get(&validator, &name.signature_file(), MAX_SIGNATURE_FILE_BYTES)
                .await?;
            let file = reader.check_signature(name, &signature)?;
            if !reader.overlaps(&file) {
                return Ok(None);
            }
            if !has_ciphertext {
                return Err("the .age object is missing".to_string());
            }
            let ciphertext = source
                .get(&validator, &name.ciphertext_file(), MAX_LOG_PAYLOAD_BYTES)
                .await?;
            reader.open(&file, &ciphertext).map(Some)
        }
        .await;
        match outcome {
            Ok(None) => {}
            Ok(Some(plaintext)) => {
                read += 1;
                lines += reader
                    .print(&plaintext, &mut out)
                    .map_err(|error| Error::Output(format!("writing the lines: {error}")))?;
            }
            Err(reason) => {
                refused += 1;
                eprintln!("palisade-ctl: refused segment {}: {reason}", name.stem());
            }
        }
    }
    out.flush()
        .map_err(|error| Error::Output(format!("writing the lines: {error}")))?;
    eprintln!("palisade-ctl: {read} segment(s) read, {lines} line(s) printed, {refused} refused");
    if refused > 0 {
        return Err(Error::SegmentsRefused(refused));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        assert_eq!(
            parse_time("1970-01-01T00:00:10Z").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(10)
        );
        let ago = parse_time("2h").unwrap();
        let elapsed = SystemTime::now().duration_since(ago).unwrap();
        assert!(elapsed >= Duration::from_secs(7200) && elapsed < Duration::from_secs(7260));
        assert!(parse_time("yesterday-ish").unwrap_err().contains("neither"));
    }

    #[test]
    fn ssh_ed25519_public_keys_parse_and_others_do_not() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice";
        assert!(parse_ssh_ed25519_public(key).is_ok());
        for bad in [
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ x",
            "ssh-ed25519 !!!",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9",
            "",
        ] {
            assert!(parse_ssh_ed25519_public(bad).is_err(), "{bad}");
        }
    }
}
