//! Prometheus metrics end to end (`docs/metrics.md`): a real supervisor
//! with the simulated chain signing, its tunnel to a real OpenSSH sshd on
//! loopback (the bastion), `palisade-bastion run` there, and a real
//! Prometheus (Debian's package) that scrapes the supervisor's metrics
//! *through the tunnel's reverse forward on the bastion side*
//! (`[metrics] bastion-listen`) and the bastion daemon's directly. Values
//! are checked with PromQL over Prometheus's HTTP API; both endpoints'
//! output passes `promtool check metrics`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::timing::{BLOCK, LONG};
use common::{KillOnDrop, VaultRpc};
use palisade_simchain::testkit::free_port;
use palisade_testkit::prometheus::{
    Prometheus, ScrapeJob, check_metrics, http_get, scrape_configs,
};
use palisade_testkit::{Sshd, SshdOptions, current_user};

const PASSPHRASE: &str = "metrics passphrase 51c2";
const TEXT_FORMAT: &str = "text/plain;version=0.0.4";
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

struct Setup {
    vault: VaultRpc,
    /// The tunnel's key (read at each connect).
    _keys: common::SshKeys,
    _sshd: Sshd,
    /// The supervisor's endpoint on the validator host.
    local: SocketAddr,
    /// Its reverse forward, listening on the bastion's loopback.
    on_bastion: SocketAddr,
    bastion_metrics: SocketAddr,
    bastion_dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let keys = common::SshKeys::new(&["tunnel"]);
    let authorized_keys = format!("restrict,port-forwarding {}\n", keys.public("tunnel"));
    let sshd = Sshd::start(SshdOptions::new("127.0.0.1", free_port(), authorized_keys)).unwrap();
    let forwarded = sshd.path("val1.sock");
    let local: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let on_bastion: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let vault = VaultRpc::setup(
        BLOCK,
        PASSPHRASE,
        "",
        &format!(
            "[tunnel]\nkey-file = {tunnel_key:?}\nkeepalive-interval = \"1s\"\n\
             [[bastion]]\nname = \"b1\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\nrpc-socket = {forwarded:?}\n\
             [metrics]\nlisten = \"{local}\"\nbastion-listen = \"{on_bastion}\"\n",
            tunnel_key = keys.path("tunnel"),
            port = sshd.port(),
            user = current_user().unwrap(),
            fingerprint = sshd.fingerprint(),
        ),
    );
    let bastion_dir = tempfile::tempdir().unwrap();
    let run = bastion_dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let bastion_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        bastion_dir.path().join("bastion.toml"),
        format!(
            "listen-socket = \"{dir}/run/bastion.sock\"\nbackup-dir = \"{dir}/backups\"\n\
             [health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
             [metrics]\nlisten = \"{bastion_metrics}\"\n\
             [[validator]]\nname = \"val1\"\nsocket = {forwarded:?}\n",
            dir = bastion_dir.path().display(),
        ),
    )
    .unwrap();
    Setup {
        _keys: keys,
        vault,
        _sshd: sshd,
        local,
        on_bastion,
        bastion_metrics,
        bastion_dir,
    }
}

impl Setup {
    /// `palisade-bastion run`, once its metrics answer.
    fn start_bastion(&self) -> KillOnDrop {
        let log_path = self.bastion_dir.path().join("bastion.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut bastion = KillOnDrop(
            Command::new(common::workspace_binary("palisade-bastion"))
                .arg("run")
                .arg("--config")
                .arg(self.bastion_dir.path().join("bastion.toml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        common::wait_until(LONG, "the bastion's metrics endpoint", || {
            if let Ok(Some(status)) = bastion.0.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("palisade-bastion exited ({status}):\n{log}");
            }
            matches!(
                http_get(self.bastion_metrics, "/metrics", TEXT_FORMAT),
                Ok((200, _))
            )
        });
        bastion
    }
}

/// The endpoint's text in `accept`'s format, once it answers.
fn scrape(address: SocketAddr, accept: &str) -> String {
    let mut last = None;
    for _ in 0..200 {
        match http_get(address, "/metrics", accept) {
            Ok((200, body)) => return body,
            other => last = Some(other),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{address}/metrics does not answer: {last:?}");
}

fn value(samples: &[palisade_testkit::prometheus::Sample]) -> f64 {
    assert_eq!(samples.len(), 1, "{samples:?}");
    samples[0].1
}

#[test]
fn prometheus_scrapes_the_supervisor_through_the_tunnel_and_the_bastion_directly() {
    let setup = setup();
    let _supervisor = setup.vault.run();
    let _bastion = setup.start_bastion();
    common::wait_for_all_tunnels_up(&setup.vault.socket, LONG);

    // Locked first: the endpoint answers on the host and through the
    // bastion's loopback forward, and says so.
    let locked = scrape(setup.on_bastion, TEXT_FORMAT);
    assert!(locked.contains("palisade_vault_unlocked 0\n"), "{locked}");
    assert!(
        locked.contains("palisade_node_phase{phase=\"locked\"} 1\n"),
        "{locked}"
    );
    setup.vault.unlock();
    setup.vault.chain.wait_signing(3, LONG);

    let prometheus = Prometheus::start(
        &scrape_configs(
            &[
                ScrapeJob {
                    job: "palisade-supervisor",
                    targets: vec![setup.on_bastion.to_string()],
                },
                ScrapeJob {
                    job: "palisade-bastion",
                    targets: vec![setup.bastion_metrics.to_string()],
                },
            ],
            Duration::from_millis(500),
        ),
        &[],
    )
    .unwrap();
    let wait = |promql: &str, accept: &dyn Fn(f64) -> bool| {
        prometheus
            .wait_for(promql, LONG, |samples| {
                samples.len() == 1 && accept(samples[0].1)
            })
            .unwrap()
    };
    wait("up{job=\"palisade-supervisor\"}", &|v| v == 1.0);
    wait("up{job=\"palisade-bastion\"}", &|v| v == 1.0);
    let first = value(&wait("palisade_chain_height", &|v| v > 0.0));
    wait("palisade_chain_height", &|v| v > first);
    wait("palisade_validator_signed_blocks_total", &|v| v > 0.0);
    wait("palisade_tunnel_up{bastion=\"b1\"}", &|v| v == 1.0);
    // Measured once per keepalive interval (1 s here), quick on loopback.
    wait("palisade_tunnel_round_trip_seconds{bastion=\"b1\"}", &|v| {
        v > 0.0 && v < 0.5
    });
    wait("palisade_vault_unlocked", &|v| v == 1.0);
    wait("palisade_node_up", &|v| v == 1.0);
    wait("palisade_primary", &|v| v == 1.0);
    wait("palisade_chain_catching_up", &|v| v == 0.0);
    wait("palisade_node_phase{phase=\"running\"}", &|v| v == 1.0);
    wait("palisade_sign_state_height", &|v| v > 0.0);
    wait(
        &format!(
            "palisade_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
        &|v| v == 1.0,
    );
    // The sign state is backed up as it moves (a local store here).
    wait("count(palisade_backup_last_sequence > 0)", &|v| v >= 1.0);
    wait(
        "max(time() - palisade_backup_last_success_timestamp_seconds)",
        &|v| (0.0..120.0).contains(&v),
    );
    wait("palisade_upgrade_waiting_for_binary", &|v| v == 0.0);
    wait("sum(palisade_upgrades_total)", &|v| v == 0.0);
    wait("palisade_output_lines_dropped_total", &|v| v == 0.0);
    // The scrapes themselves cross the tunnel.
    wait("palisade_tunnel_sent_bytes_total{bastion=\"b1\"}", &|v| {
        v > 0.0
    });
    // The unlock was an RPC call by a trusted local user (admin).
    wait(
        "palisade_rpc_requests_total{method=\"vault.unlock\",role=\"admin\"}",
        &|v| v >= 1.0,
    );
    wait("palisade_bastion_validator_up{validator=\"val1\"}", &|v| {
        v == 1.0
    });
    wait(
        "palisade_bastion_store_objects{validator=\"val1\",kind=\"backup\"}",
        &|v| v == 0.0,
    );
    wait("palisade_bastion_build_info", &|v| v == 1.0);
    // Signing goes on. The counts agree with the chain's own record: never more signed or
    // missed blocks than it saw. (The first block after the unlock may really be missed, before
    // gaiad votes; under a loaded test run so may another, so the count is not asserted zero.)
    let signed = value(&wait("palisade_validator_signed_blocks_total", &|v| {
        v > 0.0
    }));
    wait("palisade_validator_signed_blocks_total", &|v| v > signed);
    let query = |what: &str| value(&prometheus.query(what).unwrap());
    let (signed, missed) = (
        query("palisade_validator_signed_blocks_total"),
        query("palisade_validator_missed_blocks_total"),
    );
    let record = setup.vault.chain.network.record().unwrap();
    let val1 = &record.validators["val1"];
    assert!(
        signed <= val1.signed_heights as f64 && missed <= val1.missed_count as f64,
        "metrics say signed {signed}, missed {missed}; the chain: {val1:?}"
    );

    // promtool lints both endpoints' output, in the text format it reads.
    let mut exported = std::collections::BTreeSet::new();
    let mut declared = std::collections::BTreeSet::new();
    for address in [setup.local, setup.bastion_metrics] {
        let text = scrape(address, TEXT_FORMAT);
        exported.extend(sample_names(&text));
        declared.extend(
            text.lines()
                .filter_map(|line| line.strip_prefix("# TYPE "))
                .filter_map(|rest| rest.split(' ').next())
                .map(str::to_string),
        );
        check_metrics(&text).unwrap_or_else(|e| panic!("{address}: {e}\n{text}"));
        // And the OpenMetrics form Prometheus asks for is well terminated.
        let open = scrape(address, OPENMETRICS);
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
    // docs/metrics.md documents exactly what is exported (the log
    // shipper's and the Loki client's come with [logs] and [logs.loki]).
    let documented = documented_metric_names();
    let log_shipping: std::collections::BTreeSet<String> =
        palisade_supervisor::metrics::LOG_METRICS
            .iter()
            .chain(palisade_supervisor::metrics::LOKI_METRICS)
            .map(|name| name.to_string())
            .collect();
    let expected: std::collections::BTreeSet<String> =
        documented.difference(&log_shipping).cloned().collect();
    assert_eq!(
        declared, expected,
        "docs/metrics.md's tables vs the endpoints' TYPE lines"
    );
    // The Grafana dashboard uses only what is exported.
    let dashboard = dashboard_metric_names();
    assert!(dashboard.len() > 20, "{dashboard:?}");
    let missing: Vec<_> = dashboard.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}; exported: {exported:?}"
    );
    // The shipped alerting rules too (the log shipper's are exported only with [logs]).
    let rules_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/prometheus/palisade-rules.yml");
    let rules = metric_names_in(&std::fs::read_to_string(rules_path).unwrap());
    assert!(rules.len() > 8, "{rules:?}");
    let missing: Vec<_> = rules
        .iter()
        .filter(|name| {
            !exported.contains(*name)
                && !palisade_supervisor::metrics::LOG_METRICS.contains(&name.as_str())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics nobody exports: {missing:?}; exported: {exported:?}"
    );
}

/// The metric names of the samples in a text exposition.
fn sample_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The metric names in docs/metrics.md: each table row's first cell, and
/// the log shipper's names in the paragraph after the table.
fn documented_metric_names() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("| `palisade_") {
            let name = rest.split('`').next().unwrap();
            names.insert(format!("palisade_{name}"));
        }
    }
    for name in palisade_supervisor::metrics::LOG_METRICS {
        assert!(
            text.contains(&format!("`{name}")),
            "{name} is not in docs/metrics.md"
        );
        names.insert(name.to_string());
    }
    names
}

/// Every `palisade_*` name in the dashboard's queries (panels and variables).
fn dashboard_metric_names() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/grafana/palisade-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            queries.push(variable["query"].as_str().unwrap().to_string());
        }
    }
    metric_names_in(&queries.join("\n"))
}

/// Every `palisade_*` name in `text` (PromQL, or a rules file).
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("palisade_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn a_non_loopback_metrics_address_is_refused_before_anything_starts() {
    let chain = common::Chain::start(&[], BLOCK);
    let config: PathBuf = chain.dir.path().join("palisade.toml");
    std::fs::write(&config, "[metrics]\nlisten = \"0.0.0.0:9810\"\n").unwrap();
    let output = chain
        .supervisor_command(&[("PALISADE_CONFIG", config.to_str().unwrap())])
        .args(["run", "start", "--home"])
        .arg(&chain.home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metrics.listen") && stderr.contains("is not a loopback address"),
        "{stderr}"
    );
}

#[test]
fn a_metrics_port_in_use_stops_the_start_before_the_node_runs() {
    let chain = common::Chain::start(&[], BLOCK);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let config: PathBuf = chain.dir.path().join("palisade.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"{address}\"\n")).unwrap();
    let output = chain
        .supervisor_command(&[("PALISADE_CONFIG", config.to_str().unwrap())])
        .args(["run", "start", "--home"])
        .arg(&chain.home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the metrics endpoint")
            && stderr.contains(&format!("cannot listen on {address} for metrics")),
        "{stderr}"
    );
    assert!(!stderr.contains("daemon started"), "{stderr}");
}
