//! The Prometheus side of the alerts end to end with the real Debian
//! `prometheus-alertmanager` (`palisade_testkit::alertmanager`): alerts
//! shaped as Prometheus sends them, with the labels and annotations of the
//! shipped rules (`packaging/prometheus/palisade-rules.yml`), posted to
//! Alertmanager's v2 API; its webhook receiver delivers the firing
//! notification and, with `send_resolved`, the resolved one to a loopback
//! receiver. The shipped example configurations pass `amtool check-config`
//! and `promtool check config`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use palisade_testkit::alertmanager::Alertmanager;
use palisade_testkit::http_receiver::{HttpReceiver, Received};
use serde_json::{Value, json};

/// Alertmanager batches (group_wait, group_interval of 1 s here); a
/// generous bound for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

/// (key, value) pairs in file order.
type Pairs = Vec<(String, String)>;

/// The `labels:` and `annotations:` of `alert` in the shipped rules file,
/// as written (templates unexpanded).
fn rule(alert: &str) -> (Pairs, Pairs) {
    let rules = std::fs::read_to_string(packaging().join("palisade-rules.yml")).unwrap();
    let mut lines = rules
        .lines()
        .skip_while(|line| line.trim() != format!("- alert: {alert}"))
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with("- alert:"));
    let mut labels = Vec::new();
    let mut annotations = Vec::new();
    let mut section = None;
    for line in lines.by_ref() {
        let trimmed = line.trim();
        match trimmed {
            "labels:" => section = Some(0),
            "annotations:" => section = Some(1),
            _ if line.starts_with("          ") && section.is_some() => {
                let (key, value) = trimmed.split_once(':').unwrap();
                let value = value.trim().trim_matches('"').to_string();
                let entry = (key.to_string(), value);
                if section == Some(0) {
                    labels.push(entry);
                } else {
                    annotations.push(entry);
                }
            }
            _ => section = None,
        }
    }
    assert!(!labels.is_empty(), "no labels found for {alert}");
    (labels, annotations)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `POST` JSON to `url` (http://127.0.0.1:PORT/path); returns the status.
fn post_json(url: &str, body: &Value) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

#[test]
fn alertmanager_delivers_a_palisade_alert_and_its_resolution_to_a_webhook() {
    let receiver = HttpReceiver::start().unwrap();
    let config = format!(
        "route:\n  receiver: palisade-webhook\n  group_by: ['alertname', 'validator']\n  \
         group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: palisade-webhook\n    webhook_configs:\n      \
         - url: '{}'\n        send_resolved: true\n",
        receiver.url("/alertmanager")
    );
    let alertmanager = Alertmanager::start(&config).unwrap();

    // As Prometheus would send PalisadeTunnelDown: the rule's labels, the
    // series' labels, the annotations expanded.
    let (rule_labels, rule_annotations) = rule("PalisadeTunnelDown");
    let mut labels = json!({
        "alertname": "PalisadeTunnelDown",
        "job": "palisade-supervisor",
        "instance": "127.0.0.1:9810",
        "validator": "val-a",
        "via_bastion": "b1",
        "bastion": "b2",
    });
    for (key, value) in &rule_labels {
        labels[key] = json!(value);
    }
    assert_eq!(labels["severity"], "warning", "the shipped rule's severity");
    let expand = |text: &str| {
        text.replace("{{ $labels.validator }}", "val-a")
            .replace("{{ $labels.bastion }}", "b2")
    };
    let annotations: serde_json::Map<String, Value> = rule_annotations
        .iter()
        .map(|(key, value)| (key.clone(), json!(expand(value))))
        .collect();
    assert_eq!(
        annotations["summary"],
        "Tunnel from val-a to bastion b2 is down"
    );
    let started = SystemTime::now() - Duration::from_secs(120);
    let alert = |ends: SystemTime| {
        json!([{
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(started),
            "endsAt": rfc3339(ends),
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=palisade_tunnel_up+%3D%3D+0",
        }])
    };
    // Prometheus sends firing alerts with an end a few intervals ahead.
    let status = post_json(
        &alertmanager.url("/api/v2/alerts"),
        &alert(SystemTime::now() + Duration::from_secs(300)),
    );
    assert_eq!(status, 200, "{}", alertmanager.log());

    let firing = receiver
        .wait_until("the firing notification", PATIENCE, |requests| {
            !requests.is_empty()
        })
        .unwrap_or_else(|error| panic!("{error:?}\n{}", alertmanager.log()));
    let check = |request: &Received, status: &str| {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/alertmanager");
        let body = request.json();
        assert_eq!(body["version"], "4", "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["receiver"], "palisade-webhook");
        assert_eq!(
            body["groupLabels"],
            json!({"alertname": "PalisadeTunnelDown", "validator": "val-a"})
        );
        let alerts = body["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{body}");
        assert_eq!(alerts[0]["status"], status);
        assert_eq!(alerts[0]["labels"], labels);
        assert_eq!(Value::Object(annotations.clone()), alerts[0]["annotations"]);
        assert_eq!(alerts[0]["startsAt"], rfc3339(started));
        body
    };
    check(&firing[0], "firing");

    // Prometheus resolves by sending the alert with an end in the past.
    let status = post_json(
        &alertmanager.url("/api/v2/alerts"),
        &alert(SystemTime::now()),
    );
    assert_eq!(status, 200);
    let requests = receiver
        .wait_until("the resolved notification", PATIENCE, |requests| {
            requests
                .iter()
                .any(|request| request.json()["status"] == "resolved")
        })
        .unwrap_or_else(|error| panic!("{error:?}\n{}", alertmanager.log()));
    let resolved = requests
        .iter()
        .find(|request| request.json()["status"] == "resolved")
        .unwrap();
    let body = check(resolved, "resolved");
    assert_ne!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
}

#[test]
fn the_shipped_example_configurations_are_valid() {
    let amtool = Command::new("amtool")
        .args(["check-config"])
        .arg(packaging().join("alertmanager.yml"))
        .output()
        .expect("amtool (Debian package prometheus-alertmanager)");
    let text = String::from_utf8_lossy(&amtool.stdout).to_string()
        + &String::from_utf8_lossy(&amtool.stderr);
    assert!(amtool.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    let promtool = Command::new("promtool")
        .args(["check", "config"])
        .arg(packaging().join("prometheus.yml"))
        .output()
        .expect("promtool (Debian package prometheus)");
    let text = String::from_utf8_lossy(&promtool.stdout).to_string()
        + &String::from_utf8_lossy(&promtool.stderr);
    assert!(promtool.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 1 rule files found"), "{text}");
    // The scrape targets the documentation promises.
    let prometheus = std::fs::read_to_string(packaging().join("prometheus.yml")).unwrap();
    for target in ["127.0.0.1:9810", "127.0.0.1:9811"] {
        assert!(prometheus.contains(target), "{target} not scraped");
    }
}
