//! [`Prometheus`]: a real Prometheus server (Debian's `prometheus` package) on a free loopback
//! port, with its own temporary data directory, for the metrics tests and the demo; and
//! [`promtool`], the checker that comes with it.
//!
//! Queries go through the HTTP API (`GET /api/v1/query`, documented at
//! <https://prometheus.io/docs/prometheus/latest/querying/api/>): the answer is
//! `{"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}}`
//! (or `"scalar"` with `"result":[t,"v"]`). Readiness is `GET /-/ready` answering 200.
//!
//! Everything speaks plain HTTP/1.0 over `std::net::TcpStream` (no async runtime needed in
//! a test); each call is bounded by [`HTTP_TIMEOUT`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, LOG_TAIL, POLL, Result, last_lines};

/// Where Debian installs the server (`scripts/test.sh` installs the package).
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Where Debian installs promtool (same package).
pub const PROMTOOL: &str = "/usr/bin/promtool";
/// How long Prometheus gets to become ready.
pub const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);
/// Bound on one HTTP exchange with Prometheus (or a scraped endpoint).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP answer read.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// One sample of a query's answer: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// `promtool`'s path; an error (never a skip) when it is not installed.
pub fn promtool() -> Result<PathBuf> {
    let path = PathBuf::from(PROMTOOL);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "{PROMTOOL} is missing: install Debian's prometheus package (scripts/test.sh does)"
        )))
    }
}

/// Runs `promtool check metrics` on `exposition` (the text a `/metrics` endpoint served);
/// `Ok` with promtool's output when it passes, else an error quoting it.
pub fn check_metrics(exposition: &str) -> Result<String> {
    let mut child = Command::new(promtool()?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(format!("starting promtool: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(exposition.as_bytes())
        .map_err(|e| Error::new(format!("writing to promtool: {e}")))?;
    let output = child
        .wait_with_output()
        .map_err(|e| Error::new(format!("waiting for promtool: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(Error::new(format!(
            "promtool check metrics failed ({}):\n{text}",
            output.status
        )))
    }
}

/// `GET http://address/path` with `Accept: accept` (HTTP/1.0); the status code and body.
pub fn http_get(address: SocketAddr, path: &str, accept: &str) -> Result<(u16, String)> {
    let fail = |what: &str, e: std::io::Error| Error::new(format!("{what} {address}{path}: {e}"));
    let mut stream =
        TcpStream::connect_timeout(&address, HTTP_TIMEOUT).map_err(|e| fail("connecting to", e))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| fail("setting timeouts for", e))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail("sending to", e))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(|e| fail("reading", e))?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::new(format!("{address}{path}: no HTTP head in {answer:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::new(format!("{address}{path}: bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// A scrape job: its name and the `host:port` targets it scrapes at `/metrics`.
pub struct ScrapeJob<'a> {
    pub job: &'a str,
    pub targets: Vec<String>,
}

/// The `scrape_configs:` YAML list for `jobs` (each scraped every `interval`).
pub fn scrape_configs(jobs: &[ScrapeJob<'_>], interval: Duration) -> String {
    let mut yaml = String::new();
    for job in jobs {
        let targets: Vec<String> = job.targets.iter().map(|t| format!("{t:?}")).collect();
        yaml.push_str(&format!(
            "  - job_name: {:?}\n    scrape_interval: {}ms\n    scrape_timeout: {}ms\n    \
             static_configs:\n      - targets: [{}]\n",
            job.job,
            interval.as_millis(),
            interval.as_millis(),
            targets.join(", ")
        ));
    }
    yaml
}

/// A throwaway Prometheus server on `127.0.0.1:PORT`, killed on drop. Its configuration, data
/// and log are in a temporary directory it owns.
pub struct Prometheus {
    child: Option<Child>,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs` (the YAML list under `scrape_configs:`, e.g. from
    /// [`scrape_configs`]) and `rule_files`, evaluating rules every second, and waits (up to
    /// [`PROMETHEUS_WAIT`]) until it is ready. An error, never a skip, if it is not installed.
    pub fn start(scrape_configs: &str, rule_files: &[PathBuf]) -> Result<Prometheus> {
        if !Path::new(PROMETHEUS).exists() {
            return Err(Error::new(format!(
                "{PROMETHEUS} is missing: install Debian's prometheus package (scripts/test.sh does)"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .map_err(|e| Error::new(format!("creating a temporary directory: {e}")))?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|path| format!("  - {:?}\n", path.display().to_string()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n{scrape_configs}",
            if rules.is_empty() {
                "  []\n".to_string()
            } else {
                rules.concat()
            }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config)
            .map_err(|e| Error::new(format!("writing {}: {e}", config_path.display())))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| Error::new(format!("finding a free port: {e}")))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .map_err(|e| Error::new(format!("creating prometheus.log: {e}")))?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=info")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::new(format!("prometheus.log: {e}")))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| Error::new(format!("starting {PROMETHEUS}: {e}")))?;
        let mut prometheus = Prometheus {
            child: Some(child),
            address,
            dir,
        };
        prometheus.wait_ready()?;
        Ok(prometheus)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::new(format!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    last_lines(&self.log(), LOG_TAIL)
                )));
            }
            if let Ok((200, _)) = http_get(self.address, "/-/ready", "*/*") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "prometheus not ready after {PROMETHEUS_WAIT:?}:\n{}",
                    last_lines(&self.log(), LOG_TAIL)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`, or an error with Prometheus's message.
    pub fn api(&self, path_and_query: &str) -> Result<serde_json::Value> {
        let (status, body) = http_get(
            self.address,
            &format!("/api/v1/{path_and_query}"),
            "application/json",
        )?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::new(format!("/api/v1/{path_and_query}: not JSON ({e}): {body}")))?;
        if status != 200 || answer["status"] != "success" {
            return Err(Error::new(format!(
                "/api/v1/{path_and_query}: HTTP {status}: {answer}"
            )));
        }
        Ok(answer["data"].clone())
    }

    /// An instant query's samples (a scalar answers one sample without labels).
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let encoded: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let data = self.api(&format!("query?query={encoded}"))?;
        let value = |pair: &serde_json::Value| -> Result<f64> {
            let text = pair[1]
                .as_str()
                .ok_or_else(|| Error::new(format!("{promql}: a value is not a string: {pair}")))?;
            match text {
                "NaN" => Ok(f64::NAN),
                "+Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                _ => text
                    .parse()
                    .map_err(|_| Error::new(format!("{promql}: value {text:?} is not a number"))),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sample| {
                    let labels = sample["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    Ok((labels, value(&sample["value"])?))
                })
                .collect(),
            Some("scalar") => Ok(vec![(BTreeMap::new(), value(&data["result"])?)]),
            other => Err(Error::new(format!(
                "{promql}: unexpected result type {other:?}: {data}"
            ))),
        }
    }

    /// Queries `promql` until `accept` holds for its samples (up to `timeout`); the samples
    /// then, or an error with the last answer and the scrape targets' health.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.query(promql);
            if let Ok(samples) = &answer
                && accept(samples)
            {
                return Ok(samples.clone());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{promql}: not as expected after {timeout:?}; last answer {answer:?}; \
                     targets: {}",
                    self.targets_health()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each scrape target's URL, health and last error, for messages.
    pub fn targets_health(&self) -> String {
        match self.api("targets") {
            Ok(data) => data["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|target| {
                    format!(
                        "{} {} {}",
                        target["scrapeUrl"], target["health"], target["lastError"]
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(error) => error.to_string(),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
