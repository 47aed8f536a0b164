//! [`Moto`]: moto's server mode (`moto_server`, PyPI `moto[server]`), a mock of the AWS APIs,
//! on a free loopback port, for the EC2 client's and the Elastic IP rotation's tests.
//!
//! moto answers like EC2 (XML shapes, error codes) but does not check signatures or
//! credentials: the SigV4 signer is tested against AWS's published vectors instead
//! (`ec2/tests/sigv4_vectors.rs`). Each `Moto` is a process of its own, so tests do not see
//! each other's addresses; its region comes from each request's credential scope.

use std::fmt;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_ec2::sigv4::{
    self, AmzDate, PathNormalization, PayloadHashHeader, SessionTokenSigning, SignableRequest,
    SigningParams,
};
use palisade_ec2::{Credentials, Url, Zeroizing};

use crate::{Error, LOG_TAIL, POLL, Result};

/// The program's name on `PATH` (`scripts/deps.sh`'s `ensure_moto` installs it).
pub const MOTO_SERVER: &str = "moto_server";
/// The environment variable that names the program instead (a path).
pub const MOTO_SERVER_ENV: &str = "PALISADE_MOTO_SERVER";
/// How long moto gets to answer after it was started (Python imports take a few seconds on a
/// busy machine).
pub const MOTO_WAIT: Duration = Duration::from_secs(60);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Ports tried when the one picked is taken before moto binds it.
const PORT_TRIES: usize = 3;

/// A throwaway `moto_server -H 127.0.0.1 -p PORT`, killed on drop. Its log (stdout and stderr)
/// is `moto.log` in a temporary directory it owns.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto on a free loopback port and waits (up to [`MOTO_WAIT`]) until it answers
    /// HTTP. An error, never a skip, if `moto_server` is not installed.
    pub fn start() -> Result<Moto> {
        let program = moto_server_program()?;
        let mut tries = 0;
        loop {
            tries += 1;
            let dir = tempfile::Builder::new()
                .prefix("moto-")
                .tempdir()
                .map_err(|e| Error::new(format!("creating a temporary directory: {e}")))?;
            let mut moto = Moto {
                child: None,
                port: crate::free_port()?,
                program: program.clone(),
                dir,
            };
            moto.spawn()?;
            match moto.wait_ready() {
                Ok(()) => return Ok(moto),
                // The port was taken between picking and binding it: another one.
                Err(_) if tries < PORT_TRIES && moto.log().contains("Address already in use") => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// The base URL requests go to, `http://127.0.0.1:PORT/`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The port moto listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// moto's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether moto answers an HTTP request now.
    pub fn answers(&self) -> bool {
        crate::http_status(self.port, "/moto-api/", PROBE_TIMEOUT).is_some()
    }

    /// An error (with the end of the log) unless moto is running.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = &mut self.child else {
            return Err(Error::new("moto is not running"));
        };
        let status = match child.try_wait() {
            Ok(None) => return Ok(()),
            Ok(Some(status)) => status.to_string(),
            Err(e) => format!("an unknown status ({e})"),
        };
        self.child = None;
        Err(Error::new(format!(
            "moto ({}) exited with {status}:\n{}",
            self.program.display(),
            self.log_tail(LOG_TAIL)
        )))
    }

    /// SIGKILLs moto and reaps it. Nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// moto's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("moto.log")).unwrap_or_default()
    }

    /// The last `lines` lines of [`Moto::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        crate::last_lines(&self.log(), lines)
    }

    /// A path in moto's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) -> Result<()> {
        let log_path = self.path("moto.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::new(format!("opening {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::new(format!("opening {}: {e}", log_path.display())))?;
        let mut command = Command::new(&self.program);
        command
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A stray AWS_* or MOTO_* variable in the test's environment would change what
            // moto does; Python needs only to find itself and its packages.
            .env_clear();
        for variable in [
            "PATH",
            "HOME",
            "LANG",
            "PYTHONPATH",
            "PYTHONUSERBASE",
            "VIRTUAL_ENV",
            "PYENV_ROOT",
            "PYENV_VERSION",
        ] {
            if let Some(value) = std::env::var_os(variable) {
                command.env(variable, value);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {command:?}: {e}")))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + MOTO_WAIT;
        loop {
            if self.answers() {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "moto did not answer on 127.0.0.1:{} within {MOTO_WAIT:?}:\n{}",
                    self.port,
                    self.log_tail(LOG_TAIL)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl fmt::Debug for Moto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moto")
            .field("endpoint", &self.endpoint())
            .field("program", &self.program)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$PALISADE_MOTO_SERVER`, else `moto_server` on `PATH`. A pyenv shim is resolved to the one
/// real script under pyenv's `versions/` (a shim goes through `pyenv exec`, which can stall a
/// minute on a rehash lock left by a killed process); with several candidates, the shim.
fn moto_server_program() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(MOTO_SERVER_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(Error::new(format!(
                "{MOTO_SERVER_ENV}={} is not a file",
                path.display()
            )));
        }
        return Ok(path);
    }
    let path_variable = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path_variable)
        .map(|dir| dir.join(MOTO_SERVER))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::new(format!(
                "{MOTO_SERVER} is not on PATH: install it with `python3 -m pip install 'moto[server]'` (scripts/test.sh does, through ensure_moto in scripts/deps.sh)"
            ))
        })?;
    Ok(resolve_pyenv_shim(&found).unwrap_or(found))
}

/// For `ROOT/shims/moto_server`, the only `ROOT/versions/*/bin/moto_server`.
fn resolve_pyenv_shim(found: &Path) -> Option<PathBuf> {
    let shims = found.parent()?;
    if shims.file_name()? != "shims" {
        return None;
    }
    let versions = shims.parent()?.join("versions");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(versions)
        .ok()?
        .flatten()
        .map(|version| version.path().join("bin").join(MOTO_SERVER))
        .filter(|candidate| candidate.is_file())
        .collect();
    if candidates.len() == 1 {
        candidates.pop()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture itself: it answers, has a log, and is gone after drop.
    #[test]
    fn moto_starts_answers_and_dies_with_its_fixture() {
        let moto = Moto::start().unwrap();
        assert!(moto.answers(), "{moto:?}");
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        let pid = moto.pid().unwrap();
        let dir = moto.path("");
        drop(moto);
        assert!(!crate::process_alive(pid), "moto {pid} survived drop");
        assert!(!dir.exists());
    }

    #[test]
    fn pyenv_shims_resolve_to_the_single_real_script() {
        let root = tempfile::tempdir().unwrap();
        let shim = root.path().join("shims").join(MOTO_SERVER);
        std::fs::create_dir_all(shim.parent().unwrap()).unwrap();
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        assert_eq!(resolve_pyenv_shim(&shim), None, "no versions/");
        let real = root.path().join("versions/3.11.7/bin").join(MOTO_SERVER);
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "#!/usr/bin/python3\n").unwrap();
        std::fs::create_dir_all(root.path().join("versions/3.12.0/bin")).unwrap();
        assert_eq!(resolve_pyenv_shim(&shim), Some(real));
        let second = root.path().join("versions/3.12.0/bin").join(MOTO_SERVER);
        std::fs::write(&second, "#!/usr/bin/python3\n").unwrap();
        assert_eq!(resolve_pyenv_shim(&shim), None, "ambiguous: keep the shim");
        assert_eq!(resolve_pyenv_shim(Path::new("/usr/bin/moto_server")), None);
    }
}

// ----------------------------------------------------------------------------------------------
// EC2 calls `palisade-ec2` does not have, for the tests' own setup (RunInstances,
// DescribeInstances): signed with `palisade_ec2::sigv4` like the client's.

/// One of the AMIs moto ships (`moto/ec2/resources/amis.json.gz`).
pub const MOTO_AMI: &str = "ami-12c6146b";
/// The EC2 Query API version of the calls.
pub const API_VERSION: &str = "2016-11-15";
/// Each [`query`]'s bound: a first request to a busy moto can take seconds.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Dummy credentials: moto checks no signature.
pub fn credentials() -> Credentials {
    Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        Zeroizing::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string()),
        None,
    )
    .expect("the example credentials are well-formed")
}

/// One EC2 Query API call that `palisade-ec2` does not have (RunInstances,
/// DescribeInstances), signed with [`credentials`]: the answer's XML, or an error with
/// the status and body.
pub async fn query(
    endpoint: &str,
    region: &str,
    params: &[(&str, &str)],
) -> Result<String, String> {
    let action = params
        .iter()
        .find(|(name, _)| *name == "Action")
        .map_or("(no Action)", |(_, value)| *value);
    let url: Url = endpoint
        .parse()
        .map_err(|e| format!("{action}: endpoint {endpoint}: {e}"))?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => return Err(format!("{action}: endpoint {endpoint} has no host")),
    };
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let headers = [
        ("Host".to_string(), host.clone()),
        ("Content-Type".to_string(), content_type.to_string()),
    ];
    let credentials = credentials();
    let signed = sigv4::sign(
        &SignableRequest {
            method: "POST",
            path: "/",
            query: &[],
            headers: &headers,
            body: body.as_bytes(),
        },
        &SigningParams {
            credentials: &credentials,
            region,
            service: "ec2",
            time: &AmzDate::now(),
            path_normalization: PathNormalization::Normalize,
            payload_hash_header: PayloadHashHeader::Omit,
            session_token_signing: SessionTokenSigning::Signed,
        },
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(QUERY_TIMEOUT)
        .build()
        .map_err(|e| format!("{action}: building an HTTP client: {e}"))?;
    let mut request = client
        .post(url)
        .header("host", host)
        .header("content-type", content_type);
    for (name, value) in &signed.headers {
        request = request.header(*name, value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{action} to {endpoint}: {}", with_sources(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| {
        format!(
            "{action} to {endpoint}: reading the answer: {}",
            with_sources(&e)
        )
    })?;
    if !status.is_success() {
        return Err(format!("{action} to {endpoint}: {status}: {text}"));
    }
    Ok(text)
}

/// `error: its source: …` (reqwest's `Display` leaves out why: a timeout, a refusal).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An instance created in moto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MotoInstance {
    /// `i-…`.
    pub instance_id: String,
    /// `eni-…`: its primary network interface.
    pub network_interface_id: String,
}

/// Creates an instance in moto (RunInstances of [`MOTO_AMI`]; test support only, the client
/// has no RunInstances). Panics with moto's answer on failure.
pub async fn run_instance(moto_endpoint: &str, region: &str) -> MotoInstance {
    let answer = query(
        moto_endpoint,
        region,
        &[
            ("Action", "RunInstances"),
            ("Version", API_VERSION),
            ("ImageId", MOTO_AMI),
            ("MinCount", "1"),
            ("MaxCount", "1"),
            ("InstanceType", "t3.micro"),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let first = |tag: &str| {
        xml_texts(&answer, tag)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("RunInstances: no <{tag}> in {answer}"))
    };
    MotoInstance {
        instance_id: first("instanceId"),
        network_interface_id: first("networkInterfaceId"),
    }
}

/// The texts of every `<tag>…</tag>` element in `document`, in order (enough for the ids in
/// moto's answers: no attributes, entities or nesting of the same tag).
pub fn xml_texts(document: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut texts = Vec::new();
    let mut rest = document;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        texts.push(after[..end].trim().to_string());
        rest = &after[end + close.len()..];
    }
    texts
}
