//! Elastic IP rotation's failure paths on loopback (issue 14), against moto in server mode:
//! a bastion whose tunnel cannot come up on the new address, an association EC2 refuses, no
//! AWS key in the vault, a locked vault. Each ends with the old state restored and nothing
//! leaked. The successful rotation and crash recovery, with addresses really moving between
//! network namespaces, are in `netns_mesh.rs`.

mod common;

use common::timing::{BLOCK, LONG};
use common::{VaultRpc, wait_for_node_state};
use palisade_ec2::{AddressFilter, AssociationTarget, Credentials, Ec2Client, Ec2Config};
use palisade_testkit::moto::Moto;

const PASSPHRASE: &str = "eip passphrase";
const REGION: &str = "eu-west-1";
const KEY: (&str, &str) = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
);

struct World {
    fixture: VaultRpc,
    moto: Moto,
    ec2: Ec2Client,
    runtime: tokio::runtime::Runtime,
    instance: String,
    /// The bastion's address before any rotation.
    old: palisade_ec2::AllocatedAddress,
    /// Holds the tunnel key.
    _dir: tempfile::TempDir,
}

/// A validator with one bastion, `ba`, at an address nothing answers on (its tunnel never
/// comes up), whose Elastic IP lives on `instance` (an instance in moto, or a made-up id).
fn world(instance: Option<&str>) -> World {
    let moto = Moto::start().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ec2 = Ec2Client::new(
        Ec2Config::new(REGION).with_endpoint(moto.endpoint().parse().unwrap()),
        Credentials::new(KEY.0, palisade_ec2::Zeroizing::new(KEY.1.to_string()), None).unwrap(),
    )
    .unwrap();
    let running = runtime.block_on(palisade_testkit::moto::run_instance(
        &moto.endpoint(),
        REGION,
    ));
    let old = runtime
        .block_on(ec2.allocate_address(&Default::default()))
        .unwrap();
    runtime
        .block_on(ec2.associate_address(
            &old.allocation_id,
            &AssociationTarget::Instance(running.instance_id.clone()),
        ))
        .unwrap();
    let instance = instance.unwrap_or(&running.instance_id).to_string();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tunnel_ed25519");
    palisade_testkit::ssh_keygen(&key).unwrap();
    // 127.0.0.1:9 (discard): nothing listens, the tunnel keeps retrying.
    let extra = format!(
        "[tunnel]\nkey-file = {key:?}\nconnect-timeout = \"1s\"\n\
         [[bastion]]\nname = \"ba\"\nhost = \"127.0.0.1\"\nport = 9\nuser = \"t\"\n\
         host-key-fingerprints = [\"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\"]\n\
         eip = {{ instance-id = {instance:?} }}\n\
         [eip]\nregion = {REGION:?}\nendpoint = {:?}\ntunnel-timeout = \"1s\"\n",
        moto.endpoint()
    );
    let fixture = VaultRpc::setup(BLOCK, PASSPHRASE, "", &extra);
    World {
        fixture,
        moto,
        ec2,
        runtime,
        instance,
        old,
        _dir: dir,
    }
}

impl World {
    fn import_key(&self) {
        let output = self
            .fixture
            .command()
            .args(["import-aws-credentials", "--from-env"])
            .env("AWS_ACCESS_KEY_ID", KEY.0)
            .env("AWS_SECRET_ACCESS_KEY", KEY.1)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains(KEY.1));
    }

    fn rotate(&self) -> serde_json::Value {
        let output = self.fixture.ctl(
            &[
                "--json",
                "call",
                "eip.rotate",
                "--params",
                r#"{"bastion":"ba"}"#,
            ],
            None,
        );
        serde_json::from_slice(&output.stdout)
            .or_else(|_| serde_json::from_slice(&output.stderr))
            .unwrap_or_else(|_| {
                serde_json::json!({"stderr": String::from_utf8_lossy(&output.stderr), "code": output.status.code()})
            })
    }

    fn allocations(&self) -> Vec<String> {
        self.runtime
            .block_on(self.ec2.describe_addresses(&AddressFilter::All))
            .unwrap()
            .into_iter()
            .map(|address| address.allocation_id)
            .collect()
    }

    fn journal_steps(&self) -> Vec<String> {
        std::fs::read_to_string(self.fixture.chain.home.join("palisade/eip/journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                record["step"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

/// The tunnel never comes up on the new address: rolled back (the old address on the
/// instance again, the new one released), and the answer says where each address is.
#[test]
fn a_tunnel_that_does_not_come_up_on_the_new_address_is_rolled_back() {
    let world = world(None);
    world.import_key();
    let supervisor = world.fixture.run();
    wait_for_node_state(&world.fixture.socket, "locked", LONG);
    // Locked: the key in the vault is out of reach; nothing is done.
    let locked = world.rotate();
    assert!(locked.to_string().contains("vault is locked"), "{locked}");
    assert!(world.journal_steps().is_empty());
    world.fixture.unlock();
    wait_for_node_state(&world.fixture.socket, "running", LONG);

    let failed = world.rotate();
    let text = failed.to_string();
    assert!(text.contains("did not come up"), "{failed}");
    assert!(text.contains("rolled back"), "{failed}");
    assert!(text.contains(&world.old.public_ip.to_string()), "{failed}");
    assert_eq!(world.allocations(), vec![world.old.allocation_id.clone()]);
    let on_instance = world
        .runtime
        .block_on(
            world
                .ec2
                .describe_addresses(&AddressFilter::AllocationIds(vec![
                    world.old.allocation_id.clone(),
                ])),
        )
        .unwrap();
    assert_eq!(
        on_instance[0].instance_id.as_deref(),
        Some(world.instance.as_str())
    );
    assert_eq!(
        world.journal_steps(),
        ["started", "allocated", "associated", "rolled-back"]
    );
    let output = supervisor.stop();
    assert!(output.contains("elastic IP rotation failed"), "{output}");
    drop(world.moto);
}

/// EC2 refuses the association (an instance it does not know): the new address is released
/// again and nothing else changed.
#[test]
fn an_association_ec2_refuses_releases_the_new_address() {
    let world = world(Some("i-0123456789abcdef0"));
    world.import_key();
    let supervisor = world.fixture.run();
    wait_for_node_state(&world.fixture.socket, "locked", LONG);
    world.fixture.unlock();
    wait_for_node_state(&world.fixture.socket, "running", LONG);
    let failed = world.rotate();
    let text = failed.to_string();
    assert!(text.contains("AssociateAddress"), "{failed}");
    assert!(text.contains("InvalidInstanceID.NotFound"), "{failed}");
    assert!(text.contains("released"), "{failed}");
    assert_eq!(world.allocations(), vec![world.old.allocation_id.clone()]);
    assert_eq!(
        world.journal_steps(),
        ["started", "allocated", "rolled-back"]
    );
    supervisor.stop();
}

/// No key imported: the rotation says how to import one, and EC2 is never asked.
#[test]
fn without_a_key_in_the_vault_nothing_is_asked_of_ec2() {
    let world = world(None);
    let supervisor = world.fixture.run();
    wait_for_node_state(&world.fixture.socket, "locked", LONG);
    world.fixture.unlock();
    wait_for_node_state(&world.fixture.socket, "running", LONG);
    let failed = world.rotate();
    assert!(
        failed.to_string().contains("import-aws-credentials"),
        "{failed}"
    );
    assert!(world.journal_steps().is_empty());
    assert_eq!(world.allocations(), vec![world.old.allocation_id.clone()]);
    let output = supervisor.stop();
    assert!(output.contains("import-aws-credentials"), "{output}");
}
