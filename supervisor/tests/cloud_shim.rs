//! The cloud shim of the Elastic IP tests (`common/cloud_shim.rs`) against moto and real
//! network namespaces: what moto says is associated is where the bastion answers, and
//! nothing else is.
//!
//! ```text
//!   validator ── 10.78.1.2 ↔ 10.78.1.1 ── bastion (sshd on 0.0.0.0:22; instance i-…)
//! ```
//!
//! moto's addresses are random `127.x.y.z` (see the shim's module doc for why that needs
//! `route_localnet` and table `local`). "Unreachable" here is the shim's `unreachable` route
//! ("No route to host"), never the validator's own loopback answering. Needs root (CI runs as
//! root); fails otherwise.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::cloud_shim::{CloudShim, ShimClient, ShimInstance, ec2_client};
use common::netns::{Netns, NsSshd, link, require_root, ssh_keygen};
use common::timing::{LONG, PROMPT};
use palisade_ec2::{AddressFilter, AllocatedAddress, AssociationTarget, Ec2Client};
use palisade_testkit::moto::{Moto, MotoInstance, run_instance};

const REGION: &str = "eu-west-1";
/// The bound on one [`CloudShim::wait_synced`]: a sync takes well under a second, but on 2
/// loaded cores moto and the `ip` commands can be slow.
const SYNC_WAIT: std::time::Duration = LONG;
/// What a probe says when the shim's `unreachable` route stops it.
const NO_ROUTE: &str = "No route to host";

/// The EC2 side of a test: moto's client on a runtime of its own.
struct Cloud {
    runtime: tokio::runtime::Runtime,
    ec2: Ec2Client,
    endpoint: String,
}

impl Cloud {
    fn new(moto: &Moto) -> Cloud {
        let endpoint = moto.endpoint();
        Cloud {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            ec2: ec2_client(&endpoint, REGION).unwrap(),
            endpoint,
        }
    }

    fn run_instance(&self) -> MotoInstance {
        self.runtime.block_on(run_instance(&self.endpoint, REGION))
    }

    fn allocate(&self) -> AllocatedAddress {
        self.runtime
            .block_on(self.ec2.allocate_address(&BTreeMap::new()))
            .unwrap()
    }

    /// The new association id.
    fn associate(&self, address: &AllocatedAddress, target: AssociationTarget) -> String {
        self.runtime
            .block_on(self.ec2.associate_address(&address.allocation_id, &target))
            .unwrap()
    }

    fn disassociate(&self, association_id: &str) {
        self.runtime
            .block_on(self.ec2.disassociate_address(association_id))
            .unwrap();
    }

    fn release(&self, address: &AllocatedAddress) {
        self.runtime
            .block_on(self.ec2.release_address(&address.allocation_id))
            .unwrap();
    }

    fn describe(&self, address: &AllocatedAddress) -> palisade_ec2::Address {
        self.runtime
            .block_on(
                self.ec2
                    .describe_addresses(&AddressFilter::AllocationIds(vec![
                        address.allocation_id.clone(),
                    ])),
            )
            .unwrap()
            .remove(0)
    }
}

fn placed(entries: &[(&AllocatedAddress, &MotoInstance)]) -> BTreeMap<Ipv4Addr, String> {
    entries
        .iter()
        .map(|(address, instance)| (address.public_ip, instance.instance_id.clone()))
        .collect()
}

/// `from` cannot reach `ip:port` because the shim routes `ip` nowhere.
fn assert_no_route(from: &Netns, ip: Ipv4Addr, port: u16) {
    let outcome = from.probe(&ip.to_string(), port);
    assert_eq!(
        outcome,
        Err(NO_ROUTE.to_string()),
        "{ip}:{port} from {}: expected the shim's unreachable route",
        from.label()
    );
}

/// The `IP/32` addresses on `ifname` in `netns`.
fn addresses_on(netns: &Netns, ifname: &str) -> Vec<String> {
    netns
        .ip(&["-4", "-o", "addr", "show", "dev", ifname])
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet")?;
            words.next().map(str::to_string)
        })
        .filter(|cidr| cidr.ends_with("/32"))
        .collect()
}

/// Asserts that `ips` appear in none of `netns`'s addresses and `local`/`main` routes, and
/// that `route_localnet` is off again.
fn assert_nothing_left(netns: &Netns, ips: &[Ipv4Addr]) {
    let listings = [
        netns.ip(&["-4", "addr", "show"]),
        netns.ip(&["-4", "route", "show", "table", "local"]),
        netns.ip(&["-4", "route", "show", "table", "main"]),
    ];
    for ip in ips {
        let ip = ip.to_string();
        let with_prefix = format!("{ip}/32");
        for listing in &listings {
            assert!(
                !listing
                    .split_whitespace()
                    .any(|word| word == ip || word == with_prefix),
                "{ip} left in {} after the shim dropped:\n{listing}",
                netns.label()
            );
        }
    }
    let value = netns.run("sysctl", &["-n", "net.ipv4.conf.all.route_localnet"]);
    assert_eq!(
        value.trim(),
        "0",
        "route_localnet in {} not put back",
        netns.label()
    );
}

/// sshd on 0.0.0.0:`port` in `netns`, as a bastion whose public address moves.
fn sshd_on_any(netns: &Netns, port: u16, dir: &std::path::Path) -> NsSshd {
    let key = dir.join(format!("client-{}", netns.label()));
    let public_key = ssh_keygen(&key);
    NsSshd::start(netns, "0.0.0.0", port, &public_key)
}

#[test]
fn associations_in_moto_move_the_public_address_to_the_bastion_and_away() {
    require_root();
    let moto = Moto::start().unwrap();
    let cloud = Cloud::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let validator = Netns::new("validator");
    let bastion = Netns::new("bastion");
    let val_bastion = link(&validator, "10.78.1.2/24", &bastion, "10.78.1.1/24");
    let _sshd = sshd_on_any(&bastion, 22, dir.path());
    let instance = cloud.run_instance();
    let bastion_if = &val_bastion.b.ifname;

    // Declared after the namespaces and moto: it drops first.
    let shim = CloudShim::start(
        &cloud.endpoint,
        REGION,
        vec![ShimInstance::at(&instance.instance_id, &val_bastion.b)],
        vec![ShimClient::through(&instance.instance_id, &val_bastion.a)],
    );
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), BTreeMap::new(), "moto has no address yet");

    // Allocated, not associated: nowhere.
    let a = cloud.allocate();
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), BTreeMap::new());
    assert_no_route(&validator, a.public_ip, 22);

    // Associated with the instance: on the bastion's interface, and the validator reaches
    // the bastion's sshd there.
    let a_association = cloud.associate(
        &a,
        AssociationTarget::Instance(instance.instance_id.clone()),
    );
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), placed(&[(&a, &instance)]));
    assert_eq!(
        addresses_on(&bastion, bastion_if),
        [format!("{}/32", a.public_ip)]
    );
    validator.assert_reachable(&a.public_ip.to_string(), 22);

    // A rotation: B onto the instance (AllowReassociation), A disassociated.
    let b = cloud.allocate();
    cloud.associate(
        &b,
        AssociationTarget::Instance(instance.instance_id.clone()),
    );
    cloud.disassociate(&a_association);
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), placed(&[(&b, &instance)]));
    assert_eq!(
        addresses_on(&bastion, bastion_if),
        [format!("{}/32", b.public_ip)]
    );
    validator.assert_reachable(&b.public_ip.to_string(), 22);
    assert_no_route(&validator, a.public_ip, 22);

    // By network interface: moto reports only the interface, the shim finds its instance.
    cloud.associate(
        &a,
        AssociationTarget::NetworkInterface(instance.network_interface_id.clone()),
    );
    let described = cloud.describe(&a);
    assert_eq!(
        (
            described.instance_id.as_deref(),
            described.network_interface_id.as_deref()
        ),
        (None, Some(instance.network_interface_id.as_str())),
        "moto reports an association by interface without the instance: {described:?}"
    );
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), placed(&[(&a, &instance), (&b, &instance)]));
    validator.assert_reachable(&a.public_ip.to_string(), 22);
    validator.assert_reachable(&b.public_ip.to_string(), 22);

    // Released (moto disassociates first): gone.
    cloud.release(&a);
    cloud.release(&b);
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), BTreeMap::new());
    assert_eq!(addresses_on(&bastion, bastion_if), Vec::<String>::new());
    assert_no_route(&validator, a.public_ip, 22);
    assert_no_route(&validator, b.public_ip, 22);

    // Dropped while an address is placed: everything it added goes.
    let c = cloud.allocate();
    cloud.associate(
        &c,
        AssociationTarget::Instance(instance.instance_id.clone()),
    );
    shim.wait_synced(SYNC_WAIT);
    validator.assert_reachable(&c.public_ip.to_string(), 22);
    drop(shim);
    let all = [a.public_ip, b.public_ip, c.public_ip];
    assert_nothing_left(&bastion, &all);
    assert_nothing_left(&validator, &all);
}

/// Reassociated to another instance, an address leads there: to its sshd (port 2222 on bb, 22
/// on ba, so which bastion answers shows), and nowhere for a client with no link to it.
#[test]
fn an_address_reassociated_to_another_instance_follows_it() {
    require_root();
    let moto = Moto::start().unwrap();
    let cloud = Cloud::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let validator = Netns::new("validator");
    let outsider = Netns::new("outsider");
    let ba = Netns::new("ba");
    let bb = Netns::new("bb");
    let val_ba = link(&validator, "10.78.1.2/24", &ba, "10.78.1.1/24");
    let val_bb = link(&validator, "10.78.2.2/24", &bb, "10.78.2.1/24");
    let outsider_ba = link(&outsider, "10.78.3.2/24", &ba, "10.78.3.1/24");
    let _sshd_ba = sshd_on_any(&ba, 22, dir.path());
    let _sshd_bb = sshd_on_any(&bb, 2222, dir.path());
    let first = cloud.run_instance();
    let second = cloud.run_instance();

    let shim = CloudShim::start(
        &cloud.endpoint,
        REGION,
        vec![
            ShimInstance::at(&first.instance_id, &val_ba.b),
            ShimInstance::at(&second.instance_id, &val_bb.b),
        ],
        vec![
            ShimClient::through(&first.instance_id, &val_ba.a)
                .and_through(&second.instance_id, &val_bb.a),
            ShimClient::through(&first.instance_id, &outsider_ba.a),
        ],
    );

    let a = cloud.allocate();
    cloud.associate(&a, AssociationTarget::Instance(first.instance_id.clone()));
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), placed(&[(&a, &first)]));
    let a_ip = a.public_ip.to_string();
    validator.assert_reachable(&a_ip, 22);
    outsider.assert_reachable(&a_ip, 22);
    assert_eq!(
        validator.probe(&a_ip, 2222),
        Err("Connection refused".to_string()),
        "A leads to ba, which has nothing on 2222"
    );

    cloud.associate(&a, AssociationTarget::Instance(second.instance_id.clone()));
    shim.wait_synced(SYNC_WAIT);
    assert_eq!(shim.placed(), placed(&[(&a, &second)]));
    assert_eq!(addresses_on(&ba, &val_ba.b.ifname), Vec::<String>::new());
    assert_eq!(addresses_on(&bb, &val_bb.b.ifname), [format!("{a_ip}/32")]);
    validator.assert_reachable(&a_ip, 2222);
    assert_eq!(
        validator.probe(&a_ip, 22),
        Err("Connection refused".to_string()),
        "A leads to bb now, which has nothing on 22"
    );
    assert_no_route(&outsider, a.public_ip, 22);

    drop(shim);
    let all = [a.public_ip];
    assert_nothing_left(&validator, &all);
    assert_nothing_left(&outsider, &all);
    assert_nothing_left(&ba, &all);
    assert_nothing_left(&bb, &all);
}

/// An instance moto does not know is the shim's error, named in `wait_synced`'s panic.
#[test]
#[should_panic(expected = "InvalidInstanceID.NotFound")]
fn wait_synced_names_what_keeps_the_shim_from_syncing() {
    require_root();
    let moto = Moto::start().unwrap();
    let validator = Netns::new("validator");
    let bastion = Netns::new("bastion");
    let val_bastion = link(&validator, "10.78.1.2/24", &bastion, "10.78.1.1/24");
    let unknown = "i-00000000000000000";
    let shim = CloudShim::start(
        &moto.endpoint(),
        REGION,
        vec![ShimInstance::at(unknown, &val_bastion.b)],
        vec![ShimClient::through(unknown, &val_bastion.a)],
    );
    common::wait_until(LONG, "the shim's first failed sync", || {
        shim.last_error().is_some()
    });
    shim.wait_synced(PROMPT);
}
