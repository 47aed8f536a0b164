//! `eip_rotation_s` (target 5): an Elastic IP rotation of a bastion, from `palisade-ctl eip
//! rotate` until the validator's tunnel is up on the new address, against moto on loopback.
//!
//! moto (EC2, server mode) runs on 127.0.0.1 with an instance whose Elastic IP is the
//! bastion's configured address; [`palisade_testkit::loopback_cloud::LoopbackCloud`] forwards
//! every address moto shows on that instance to a real OpenSSH sshd (moto's addresses are in
//! 127/8, all local), so after the association the bastion answers only on the new address'
//! forwarder — and the old one stops answering once it is released. The real
//! `palisade-supervisor run` supervises a signing validator on the simulated chain with one
//! `[[bastion]]` (host key pinned) and `[eip]` (credentials from the environment, an explicit
//! opt-in that needs no vault).
//!
//! Each of [`ROTATIONS`] rotations is `palisade-ctl --socket … eip rotate b1 --json` on the
//! local socket; the value is the median over them of the time from just before the command
//! is spawned to the journal's `tunnel-up` record (`at_ms`, wall clock, written when the
//! tunnel was seen up on the new address). The same rotation's `done` and the command's own
//! return are in the detail. No peer: nothing else rotates addresses this way.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use palisade_ec2::{AssociationTarget, Ec2Client, Ec2Config};
use palisade_testkit::loopback_cloud::LoopbackCloud;
use palisade_testkit::moto::{Moto, credentials, run_instance};
use palisade_testkit::{Sshd, SshdOptions, current_user, ssh_keygen};

use crate::fixture::{Binaries, Fixture};
use crate::{Measured, result, round2};

pub const NAME: &str = "eip_rotation_s";
const TARGET_S: f64 = 5.0;
const ROTATIONS: usize = 5;
const REGION: &str = "eu-west-1";
const BLOCK_TIME: Duration = Duration::from_secs(1);

fn anyhow(error: palisade_testkit::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

fn unix_ms(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// The journal's records of `rotation`.
fn records(journal: &Path, rotation: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(journal)
        .with_context(|| format!("reading {}", journal.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["rotation"] == rotation)
        .collect())
}

pub fn run(bins: &Binaries) -> anyhow::Result<Measured> {
    let ctl = bins.supervisor.with_file_name("palisade-ctl");
    if !ctl.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --workspace --bins` first",
            ctl.display()
        );
    }
    let moto = Moto::start().map_err(anyhow)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ec2 = Ec2Client::new(
        Ec2Config::new(REGION).with_endpoint(moto.endpoint().parse()?),
        credentials(),
    )?;
    let instance = runtime.block_on(run_instance(&moto.endpoint(), REGION));
    let first = runtime.block_on(ec2.allocate_address(&Default::default()))?;
    runtime.block_on(ec2.associate_address(
        &first.allocation_id,
        &AssociationTarget::Instance(instance.instance_id.clone()),
    ))?;

    let fixture = Fixture::start(bins, BLOCK_TIME)?;
    let dir = fixture.dir.path();
    let tunnel_key = dir.join("tunnel");
    let tunnel_public = ssh_keygen(&tunnel_key).map_err(anyhow)?;
    let sshd = Sshd::start(SshdOptions::new(
        "127.0.0.1",
        palisade_simchain::testkit::free_port(),
        format!("restrict,port-forwarding {}\n", tunnel_public.trim()),
    ))
    .map_err(anyhow)?;
    let port = sshd.port();
    let _cloud = LoopbackCloud::start(
        &moto.endpoint(),
        REGION,
        &instance.instance_id,
        port,
        ([127, 0, 0, 1], port).into(),
    )
    .map_err(anyhow)?;
    let user = current_user().map_err(anyhow)?;
    let socket = dir.join("run").join("supervisor.sock");
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[rpc]\nsocket = {socket:?}\nname = \"val1\"\n\
             [tunnel]\nkey-file = {tunnel_key:?}\nconnect-timeout = \"3s\"\n\
             keepalive-interval = \"1s\"\nkeepalive-max = 2\n\
             [[bastion]]\nname = \"b1\"\nhost = \"{host}\"\nport = {port}\nuser = {user:?}\n\
             host-key-fingerprints = [{fingerprint:?}]\n\
             eip = {{ instance-id = {instance:?} }}\n\
             [eip]\nregion = \"{REGION}\"\nendpoint = \"{endpoint}\"\ncredentials = \"environment\"\n\
             tunnel-timeout = \"15s\"\n",
            host = first.public_ip,
            fingerprint = sshd.fingerprint(),
            instance = instance.instance_id,
            endpoint = moto.endpoint(),
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let config_text = config
        .to_str()
        .context("the fixture's path is not UTF-8")?
        .to_owned();
    let env = [
        ("PALISADE_CONFIG", config_text.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    ];
    let mut supervisor = fixture.run_supervisor(&env)?;
    fixture.wait_signing(&mut supervisor, 1, Duration::from_secs(30))?;
    let journal = fixture.home.join("palisade/eip/journal.jsonl");

    let mut to_tunnel_up = Vec::new();
    let mut to_done = Vec::new();
    let mut command = Vec::new();
    for _ in 0..ROTATIONS {
        let asked = SystemTime::now();
        let output = Command::new(&ctl)
            .arg("--socket")
            .arg(&socket)
            .args(["eip", "rotate", "b1", "--json"])
            .output()
            .context("running palisade-ctl eip rotate")?;
        let returned = SystemTime::now();
        if !output.status.success() {
            bail!(
                "palisade-ctl eip rotate failed: {}{}\nsupervisor:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                supervisor.log_tail(40)
            );
        }
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
            .context("palisade-ctl eip rotate --json printed no JSON")?;
        let rotation = answer["rotation"]
            .as_str()
            .context("the answer names no rotation")?
            .to_string();
        let steps = records(&journal, &rotation)?;
        let at = |step: &str| -> anyhow::Result<u64> {
            steps
                .iter()
                .find(|record| record["step"] == step)
                .and_then(|record| record["at_ms"].as_u64())
                .with_context(|| format!("rotation {rotation} has no {step} record"))
        };
        let start = unix_ms(asked);
        to_tunnel_up.push(at("tunnel-up")?.saturating_sub(start) as f64 / 1000.0);
        to_done.push(at("done")?.saturating_sub(start) as f64 / 1000.0);
        command.push(unix_ms(returned).saturating_sub(start) as f64 / 1000.0);
        supervisor.ensure_running()?;
    }
    supervisor.stop()?;
    drop(sshd);
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let value = round2(median(&mut to_tunnel_up));
    let detail = format!(
        "median of {ROTATIONS} rotations against moto on loopback, ctl command -> journal \
         tunnel-up (max {:.2} s); -> done (old address released) {:.2} s, the command's return \
         {:.2} s (medians)",
        to_tunnel_up.last().copied().unwrap_or_default(),
        median(&mut to_done),
        median(&mut command),
    );
    Ok(Measured {
        result: result(NAME, value, "s", Some(TARGET_S)),
        detail,
    })
}
