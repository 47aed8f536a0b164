//! `palisade-loopback-cloud`: the Elastic IP part of `scripts/demo.sh`'s "cloud".
//!
//! Creates an instance in moto (server mode, at `MOTO_ENDPOINT`, region eu-west-1), gives it an
//! Elastic IP, writes `INSTANCE_ID FIRST_IP` to `OUT_FILE`, then keeps a TCP forwarder from
//! `ADDRESS:PORT` to `127.0.0.1:PORT` (the bastion's sshd) for every address moto shows on the
//! instance, until killed ([`palisade_testkit::loopback_cloud::LoopbackCloud`], which the
//! `eip_rotation_s` benchmark uses too). moto's addresses are in 127/8, all local on Linux, so a
//! rotation really changes where the bastion answers.
//!
//! Usage: `palisade-loopback-cloud MOTO_ENDPOINT PORT OUT_FILE`.

use palisade_ec2::{AssociationTarget, Ec2Client, Ec2Config};
use palisade_testkit::loopback_cloud::LoopbackCloud;
use palisade_testkit::moto::{credentials, run_instance};

const REGION: &str = "eu-west-1";

fn main() {
    if let Err(error) = run() {
        eprintln!("palisade-loopback-cloud: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, port, out] = args.as_slice() else {
        return Err("usage: palisade-loopback-cloud MOTO_ENDPOINT PORT OUT_FILE".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("PORT {port:?} is not a port number: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ec2 = Ec2Client::new(
        Ec2Config::new(REGION).with_endpoint(
            endpoint
                .parse()
                .map_err(|e| format!("MOTO_ENDPOINT {endpoint:?}: {e}"))?,
        ),
        credentials(),
    )
    .map_err(|e| format!("EC2 client: {e}"))?;
    let instance = runtime.block_on(run_instance(endpoint, REGION));
    let first = runtime
        .block_on(ec2.allocate_address(&Default::default()))
        .map_err(|e| format!("AllocateAddress: {e}"))?;
    runtime
        .block_on(ec2.associate_address(
            &first.allocation_id,
            &AssociationTarget::Instance(instance.instance_id.clone()),
        ))
        .map_err(|e| format!("AssociateAddress: {e}"))?;
    let _cloud = LoopbackCloud::start(
        endpoint,
        REGION,
        &instance.instance_id,
        port,
        ([127, 0, 0, 1], port).into(),
    )
    .map_err(|e| format!("{e:?}"))?;
    // Written once the forwarders run, so whoever reads it can dial the first address.
    std::thread::sleep(palisade_testkit::loopback_cloud::POLL_INTERVAL * 4);
    std::fs::write(
        out,
        format!("{} {}\n", instance.instance_id, first.public_ip),
    )
    .map_err(|e| format!("writing {out}: {e}"))?;
    loop {
        std::thread::park();
    }
}
