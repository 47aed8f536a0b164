//! [`CloudShim`]: the "cloud" of the Elastic IP tests. It watches moto's address associations
//! (DescribeAddresses every [`SYNC_INTERVAL`]) and makes them true in the network namespaces:
//! an address associated with one of its instances is put on that instance's interface, and
//! every client namespace gets a route for it through the interface that reaches that
//! instance. A rotation in moto therefore really moves where the bastion answers, and the
//! validator must really dial the new address.
//!
//! **moto's addresses are in 127.0.0.0/8.** moto 5 allocates `127.x.y.z` (`random_ip` in
//! `moto/ec2/utils.py`), not 54.x. Every namespace already treats all of 127/8 as local
//! (`local 127.0.0.0/8 dev lo` in its `local` table, which is looked up before `main`), and
//! the kernel drops 127/8 packets on any interface but `lo`. So the shim:
//! - sets `net.ipv4.conf.all.route_localnet=1` in every instance and client namespace
//!   (needed for ARP, for receiving and for sending 127/8 on a veth; `all`, because the
//!   instance's end of a client's link need not be the interface its addresses go on), and
//!   puts the old value back on drop;
//! - installs the clients' routes in table `local` (a /32 there wins over lo's /8; in `main`
//!   it would never be looked at), for any address, so there is one code path;
//! - gives a client an `unreachable IP/32` route for every address moto has shown that is not
//!   (or no longer) reachable through it (never associated, disassociated, released, on an
//!   instance that client has no link to): without it the client would dial its own loopback
//!   (and reach its own wildcard listeners), where a real client would find nothing.
//!
//! An instance still answers on every 127/8 address its interface receives (its `lo` owns the
//! /8), so only the clients' routes decide where an address leads: `ip addr` on the instance
//! shows the address as on a real host, but removing it there does not by itself stop it
//! from answering. What a client sees is right because the shim owns all the clients' routes.
//!
//! **Which instance an address is on.** moto reports `instanceId` for an association made to
//! an instance, but only `networkInterfaceId` for one made to a network interface (its
//! `ElasticAddress.instance` stays `None`). The shim learns its instances' interfaces with a
//! DescribeInstances per instance (signed by hand, as `palisade-ec2` has no such call) at the
//! first sync, and again whenever an interface it has not seen turns up in an association.
//!
//! **Clients.** A client namespace reaches different instances through different interfaces
//! in general (the validator has one veth per bastion), so a [`ShimClient`] names the
//! interface per instance; an instance it has no interface for is unreachable from it.
//!
//! Drop order: declare the shim after the namespaces and moto, so that it drops (and removes
//! its addresses, routes and sysctls) while they still exist; if a namespace went first,
//! whatever the shim had put there went with it and the shim says nothing. Start it from a
//! thread in the host's namespace (not inside `Netns::in_netns`): its thread inherits the
//! namespace and must reach moto on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_ec2::{Address, AddressFilter, Ec2Client, Ec2Config, Url};

use super::netns::LinkEnd;

/// How often the shim reads moto's associations.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// The bound on one request to moto. moto builds a region's EC2 backend at its first EC2
/// request: seconds on 2 loaded cores (over 5 s with a few test processes starting their own
/// moto at once).
pub const REQUEST_TIMEOUT: Duration = palisade_testkit::moto::QUERY_TIMEOUT;
/// Instances (`run_instance`) and the calls `palisade-ec2` does not have: `palisade_testkit::moto`.
use palisade_testkit::moto::{API_VERSION as EC2_API_VERSION, query as moto_query, xml_texts};

/// Where an instance's public addresses must appear: the namespace and interface of the
/// bastion "instance".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimInstance {
    /// moto's `i-…`.
    pub instance_id: String,
    /// The namespace standing for the instance.
    pub netns: String,
    /// The interface its public addresses go on (`IP/32`).
    pub ifname: String,
}

impl ShimInstance {
    /// Instance `instance_id` is the host at `end` of a link; its addresses go on that end.
    pub fn at(instance_id: &str, end: &LinkEnd) -> ShimInstance {
        ShimInstance {
            instance_id: instance_id.to_string(),
            netns: end.netns.clone(),
            ifname: end.ifname.clone(),
        }
    }
}

/// Where clients must find the instances' addresses: a namespace, and per instance the
/// interface through which it reaches that instance (an on-link route for each address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimClient {
    /// The client's namespace.
    pub netns: String,
    /// `(instance id, interface in netns)`: one entry per instance this client reaches; the
    /// addresses of instances not listed are unreachable from it.
    pub routes: Vec<(String, String)>,
}

impl ShimClient {
    /// A client at `end` of a link whose other end is instance `instance_id`.
    pub fn through(instance_id: &str, end: &LinkEnd) -> ShimClient {
        ShimClient {
            netns: end.netns.clone(),
            routes: vec![(instance_id.to_string(), end.ifname.clone())],
        }
    }

    /// The same client also reaching `instance_id` through `end` (an end in the same
    /// namespace).
    pub fn and_through(mut self, instance_id: &str, end: &LinkEnd) -> ShimClient {
        assert_eq!(
            end.netns, self.netns,
            "a client's links all start in its own namespace"
        );
        self.routes
            .push((instance_id.to_string(), end.ifname.clone()));
        self
    }

    fn interface_for(&self, instance_id: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(id, _)| id == instance_id)
            .map(|(_, ifname)| ifname.as_str())
    }
}

/// The shim: a background thread that syncs the namespaces with moto every
/// [`SYNC_INTERVAL`]. Dropping it stops the thread and removes every address and route it
/// added and puts back the sysctls it changed.
pub struct CloudShim {
    endpoint: String,
    shared: Arc<Shared>,
    /// Dropped to stop the thread; a message asks for a sync now.
    wake: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CloudShim {
    /// Starts syncing moto at `moto_endpoint` (`Moto::endpoint`), region `region`, into the
    /// instances' and clients' namespaces. Panics at once if the configuration is
    /// inconsistent or an interface cannot take `route_localnet`; moto's answers are the
    /// thread's business ([`CloudShim::wait_synced`] reports them).
    pub fn start(
        moto_endpoint: &str,
        region: &str,
        instances: Vec<ShimInstance>,
        clients: Vec<ShimClient>,
    ) -> CloudShim {
        let mut ids = BTreeSet::new();
        for instance in &instances {
            assert!(
                ids.insert(instance.instance_id.as_str()),
                "instance {} is listed twice",
                instance.instance_id
            );
        }
        for client in &clients {
            for (instance_id, _) in &client.routes {
                assert!(
                    ids.contains(instance_id.as_str()),
                    "client {} routes to {instance_id}, which is not one of the shim's instances {ids:?}",
                    client.netns
                );
            }
        }
        let client = ec2_client(moto_endpoint, region)
            .unwrap_or_else(|e| panic!("cloud shim: EC2 client for {moto_endpoint}: {e}"));

        let mut placement = Placement {
            instances,
            clients,
            addresses: BTreeMap::new(),
            routes: BTreeMap::new(),
            seen: BTreeSet::new(),
            route_localnet: Vec::new(),
        };
        // Before the thread exists: a failure panics here, and `placement`'s drop puts back
        // the values already changed.
        let namespaces: BTreeSet<String> = placement
            .instances
            .iter()
            .map(|instance| instance.netns.clone())
            .chain(placement.clients.iter().map(|client| client.netns.clone()))
            .collect();
        for netns in namespaces {
            let previous =
                sysctl_route_localnet(&netns, None).unwrap_or_else(|e| panic!("cloud shim: {e}"));
            placement.route_localnet.push((netns.clone(), previous));
            sysctl_route_localnet(&netns, Some("1")).unwrap_or_else(|e| panic!("cloud shim: {e}"));
        }
        for instance in &placement.instances {
            ip_in(&instance.netns, &["link", "show", "dev", &instance.ifname])
                .unwrap_or_else(|e| panic!("cloud shim: instance {}: {e}", instance.instance_id));
        }
        for client in &placement.clients {
            for (_, ifname) in &client.routes {
                ip_in(&client.netns, &["link", "show", "dev", ifname])
                    .unwrap_or_else(|e| panic!("cloud shim: client: {e}"));
            }
        }

        let shared = Arc::new(Shared {
            status: Mutex::new(Status::default()),
            changed: Condvar::new(),
        });
        let (wake, wakes) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cloud-shim".to_string())
            .spawn({
                let shared = shared.clone();
                let region = region.to_string();
                let endpoint = moto_endpoint.to_string();
                move || run(endpoint, region, client, placement, shared, wakes)
            })
            .expect("spawning the cloud shim's thread");
        CloudShim {
            endpoint: moto_endpoint.to_string(),
            shared,
            wake: Some(wake),
            thread: Some(thread),
        }
    }

    /// Blocks until the shim's view matches moto's current associations (one full sync that
    /// started after this call succeeded), or panics after `timeout` with the last error.
    pub fn wait_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut status = self.shared.lock();
        let target = status.started + 1;
        // Not the next tick: a sync now. A send fails only once the thread is gone, which
        // the loop below reports.
        if let Some(wake) = &self.wake {
            let _ = wake.send(());
        }
        while status.last_ok < target {
            assert!(
                !status.finished,
                "cloud shim (moto {}): its thread has stopped; last error: {}",
                self.endpoint,
                status.last_error.as_deref().unwrap_or("none")
            );
            let now = Instant::now();
            assert!(
                now < deadline,
                "cloud shim (moto {}) not in sync within {timeout:?}: last error: {}; \
                 {} syncs started, the last good one #{}; placed: {:?}",
                self.endpoint,
                status.last_error.as_deref().unwrap_or("none"),
                status.started,
                status.last_ok,
                status.placed
            );
            status = self
                .shared
                .changed
                .wait_timeout(status, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// What the shim currently has placed: public ip -> instance id.
    pub fn placed(&self) -> BTreeMap<Ipv4Addr, String> {
        self.shared.lock().placed.clone()
    }

    /// Why the last failed sync failed (`sync #N: …`), if one has; it stays after later
    /// syncs succeed. For tests of moto's errors, and to wait for one.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }
}

impl Drop for CloudShim {
    fn drop(&mut self) {
        // The thread sees the channel closed after its current sync, cleans up and ends.
        drop(self.wake.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!(
                "cloud shim (moto {}): its thread panicked (its cleanup ran while unwinding)",
                self.endpoint
            );
        }
    }
}

/// What the thread tells the test's threads.
struct Shared {
    status: Mutex<Status>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Status {
    /// Syncs started; the number of the current (or last) one.
    started: u64,
    /// The number of the last sync that succeeded (0: none yet).
    last_ok: u64,
    /// Why the last failed sync failed.
    last_error: Option<String>,
    /// [`CloudShim::placed`].
    placed: BTreeMap<Ipv4Addr, String>,
    /// The thread has ended (cleanup done).
    finished: bool,
}

/// Sets [`Status::finished`] however the thread ends, panics included.
struct FinishedOnDrop(Arc<Shared>);

impl Drop for FinishedOnDrop {
    fn drop(&mut self) {
        let mut status = self.0.lock();
        status.finished = true;
        status.placed.clear();
        drop(status);
        self.0.changed.notify_all();
    }
}

/// The thread: sync, wait for the next tick (or a wake-up), until the channel closes.
fn run(
    endpoint: String,
    region: String,
    client: Ec2Client,
    placement: Placement,
    shared: Arc<Shared>,
    wakes: mpsc::Receiver<()>,
) {
    let _finished = FinishedOnDrop(shared.clone());
    // Dropped before `_finished`: the cleanup is done when `finished` is set.
    let mut placement = placement;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            shared.lock().last_error = Some(format!("building a tokio runtime: {e}"));
            return;
        }
    };
    let mut interfaces = InterfaceOwners::default();
    loop {
        let tick = Instant::now();
        let number = {
            let mut status = shared.lock();
            status.started += 1;
            status.started
        };
        let result = sync_once(
            &runtime,
            &client,
            &endpoint,
            &region,
            &mut interfaces,
            &mut placement,
        );
        {
            let mut status = shared.lock();
            status.placed = placement.placed();
            match result {
                Ok(()) => status.last_ok = number,
                Err(error) => status.last_error = Some(format!("sync #{number}: {error}")),
            }
        }
        shared.changed.notify_all();
        match wakes.recv_timeout(SYNC_INTERVAL.saturating_sub(tick.elapsed())) {
            Ok(()) => while wakes.try_recv().is_ok() {},
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One sync: moto's addresses, who owns them, and the namespaces made to match.
fn sync_once(
    runtime: &tokio::runtime::Runtime,
    client: &Ec2Client,
    endpoint: &str,
    region: &str,
    interfaces: &mut InterfaceOwners,
    placement: &mut Placement,
) -> Result<(), String> {
    let addresses = runtime
        .block_on(client.describe_addresses(&AddressFilter::All))
        .map_err(|e| format!("{e:#}"))?;
    if interfaces.needs_refresh(&addresses) {
        let instance_ids: Vec<String> = placement
            .instances
            .iter()
            .map(|instance| instance.instance_id.clone())
            .collect();
        runtime.block_on(interfaces.refresh(endpoint, region, &instance_ids, &addresses))?;
    }
    let mut desired = BTreeMap::new();
    let mut all = Vec::new();
    let mut refused = Vec::new();
    for address in &addresses {
        let ip = address.public_ip;
        // 127.0.0.1 and its /24 are every namespace's own loopback: never route them away.
        if ip.octets()[..3] == [127, 0, 0] {
            refused.push(ip);
            continue;
        }
        all.push(ip);
        let owner = match (&address.instance_id, &address.network_interface_id) {
            (Some(instance_id), _) => Some(instance_id.as_str()),
            (None, Some(interface)) => interfaces.owner(interface),
            (None, None) => None,
        };
        if let Some(index) =
            owner.and_then(|id| placement.instances.iter().position(|i| i.instance_id == id))
        {
            desired.insert(ip, index);
        }
    }
    placement.apply(&desired, &all)?;
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "moto allocated {refused:?}, in 127.0.0.0/24 (the namespaces' own loopback); \
             left alone: release it and allocate another"
        ))
    }
}

/// Which instance each network interface belongs to, for associations moto reports by
/// interface only.
#[derive(Default)]
struct InterfaceOwners {
    /// `eni-…` -> `i-…`, for the shim's instances.
    owners: BTreeMap<String, String>,
    /// Read at least once.
    loaded: bool,
    /// Interfaces seen in associations after a refresh that did not find them (another
    /// instance's): not worth a DescribeInstances at every tick.
    foreign: BTreeSet<String>,
}

impl InterfaceOwners {
    fn unknown<'a>(&'a self, addresses: &'a [Address]) -> impl Iterator<Item = &'a String> + 'a {
        addresses
            .iter()
            .filter(|address| address.instance_id.is_none())
            .filter_map(|address| address.network_interface_id.as_ref())
            .filter(|interface| {
                !self.owners.contains_key(*interface) && !self.foreign.contains(*interface)
            })
    }

    fn needs_refresh(&self, addresses: &[Address]) -> bool {
        !self.loaded || self.unknown(addresses).next().is_some()
    }

    async fn refresh(
        &mut self,
        endpoint: &str,
        region: &str,
        instance_ids: &[String],
        addresses: &[Address],
    ) -> Result<(), String> {
        let mut owners = BTreeMap::new();
        for instance_id in instance_ids {
            let answer = moto_query(
                endpoint,
                region,
                &[
                    ("Action", "DescribeInstances"),
                    ("Version", EC2_API_VERSION),
                    ("InstanceId.1", instance_id),
                ],
            )
            .await?;
            for interface in xml_texts(&answer, "networkInterfaceId") {
                owners.insert(interface, instance_id.clone());
            }
        }
        self.owners = owners;
        self.loaded = true;
        let foreign: Vec<String> = self.unknown(addresses).cloned().collect();
        self.foreign.extend(foreign);
        Ok(())
    }

    fn owner(&self, interface: &str) -> Option<&str> {
        self.owners.get(interface).map(String::as_str)
    }
}

/// A client's route for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    /// On-link through this interface of the client's namespace.
    Via(String),
    /// `unreachable`: not on any instance this client reaches.
    Unreachable,
}

/// What the shim has changed in the namespaces; undone on drop.
struct Placement {
    instances: Vec<ShimInstance>,
    clients: Vec<ShimClient>,
    /// Public IP -> index in `instances`: present as `IP/32` on that instance's interface.
    addresses: BTreeMap<Ipv4Addr, usize>,
    /// (index in `clients`, public IP) -> the route installed in that client's table `local`.
    routes: BTreeMap<(usize, Ipv4Addr), Route>,
    /// Every address moto has shown (released ones too: they stay unreachable).
    seen: BTreeSet<Ipv4Addr>,
    /// `(netns, previous value)` of every `net.ipv4.conf.all.route_localnet` set.
    route_localnet: Vec<(String, String)>,
}

impl Placement {
    /// Makes the namespaces match `desired` (IP -> instance index); `all` is every address
    /// moto shows. Records each change as it succeeds, so a failure half-way leaves the
    /// record true (the next sync resumes, the drop undoes what was done).
    fn apply(
        &mut self,
        desired: &BTreeMap<Ipv4Addr, usize>,
        all: &[Ipv4Addr],
    ) -> Result<(), String> {
        self.seen.extend(all.iter().copied());

        // Off the old instance first, then onto the new one, then the routes: a route never
        // leads to an instance that does not have the address (as far as order can do it).
        let stale: Vec<(Ipv4Addr, usize)> = self
            .addresses
            .iter()
            .filter(|&(ip, index)| desired.get(ip) != Some(index))
            .map(|(&ip, &index)| (ip, index))
            .collect();
        for (ip, index) in stale {
            let instance = &self.instances[index];
            ip_absent_ok(
                &instance.netns,
                &["addr", "del", &format!("{ip}/32"), "dev", &instance.ifname],
            )?;
            self.addresses.remove(&ip);
        }
        for (&ip, &index) in desired {
            if self.addresses.get(&ip) == Some(&index) {
                continue;
            }
            let instance = &self.instances[index];
            ip_in(
                &instance.netns,
                &[
                    "addr",
                    "replace",
                    &format!("{ip}/32"),
                    "dev",
                    &instance.ifname,
                ],
            )?;
            self.addresses.insert(ip, index);
        }

        let mut changes = Vec::new();
        for (client_index, client) in self.clients.iter().enumerate() {
            for &ip in &self.seen {
                let wanted = desired
                    .get(&ip)
                    .and_then(|&index| client.interface_for(&self.instances[index].instance_id))
                    .map_or(Route::Unreachable, |ifname| Route::Via(ifname.to_string()));
                if self.routes.get(&(client_index, ip)) != Some(&wanted) {
                    changes.push((client_index, ip, wanted));
                }
            }
        }
        for (client_index, ip, route) in changes {
            let netns = &self.clients[client_index].netns;
            let destination = format!("{ip}/32");
            match &route {
                Route::Via(ifname) => ip_in(
                    netns,
                    &[
                        "route",
                        "replace",
                        &destination,
                        "dev",
                        ifname,
                        "table",
                        "local",
                    ],
                )?,
                Route::Unreachable => ip_in(
                    netns,
                    &[
                        "route",
                        "replace",
                        "unreachable",
                        &destination,
                        "table",
                        "local",
                    ],
                )?,
            }
            self.routes.insert((client_index, ip), route);
        }
        Ok(())
    }

    /// [`CloudShim::placed`]'s answer.
    fn placed(&self) -> BTreeMap<Ipv4Addr, String> {
        self.addresses
            .iter()
            .map(|(&ip, &index)| (ip, self.instances[index].instance_id.clone()))
            .collect()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        for ((client_index, ip), _) in std::mem::take(&mut self.routes) {
            let netns = &self.clients[client_index].netns;
            if let Err(e) = ip_cleanup(
                netns,
                &["route", "del", &format!("{ip}/32"), "table", "local"],
            ) {
                problems.push(e);
            }
        }
        for (ip, index) in std::mem::take(&mut self.addresses) {
            let instance = &self.instances[index];
            if let Err(e) = ip_cleanup(
                &instance.netns,
                &["addr", "del", &format!("{ip}/32"), "dev", &instance.ifname],
            ) {
                problems.push(e);
            }
        }
        for (netns, previous) in std::mem::take(&mut self.route_localnet) {
            if let Err(e) = sysctl_route_localnet(&netns, Some(&previous))
                && !gone(&e)
            {
                problems.push(e);
            }
        }
        if !problems.is_empty() {
            eprintln!(
                "warning: the cloud shim could not undo everything:\n  {}",
                problems.join("\n  ")
            );
        }
    }
}

/// `ip -n NETNS args…`; the error names the command and says what `ip` said.
fn ip_in(netns: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip -n {netns} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip -n {netns} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

/// Whether `ip` said that what it was to delete is not there.
fn absent(error: &str) -> bool {
    [
        "No such process",
        "Address not found",
        "Cannot assign requested address",
    ]
    .iter()
    .any(|message| error.contains(message))
}

/// Whether `ip` (or `ip netns exec`) said the namespace or the interface is gone.
fn gone(error: &str) -> bool {
    [
        "Cannot open network namespace",
        "Cannot find device",
        "No such file or directory",
    ]
    .iter()
    .any(|message| error.contains(message))
}

/// [`ip_in`] for a deletion: already absent is done.
fn ip_absent_ok(netns: &str, args: &[&str]) -> Result<(), String> {
    match ip_in(netns, args) {
        Err(e) if !absent(&e) => Err(e),
        _ => Ok(()),
    }
}

/// [`ip_in`] for the drop's deletions: absent, or gone with its namespace or interface, is
/// done.
fn ip_cleanup(netns: &str, args: &[&str]) -> Result<(), String> {
    match ip_in(netns, args) {
        Err(e) if !absent(&e) && !gone(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Reads (`value: None`) or writes `net.ipv4.conf.all.route_localnet` in `netns`; the value
/// read (or written).
fn sysctl_route_localnet(netns: &str, value: Option<&str>) -> Result<String, String> {
    let key = "net.ipv4.conf.all.route_localnet";
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, "sysctl"]);
    match value {
        None => command.args(["-n", key]),
        Some(value) => command.args(["-q", "-w", &format!("{key}={value}")]),
    };
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(match value {
        None => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        Some(value) => value.to_string(),
    })
}

/// A `palisade-ec2` client for moto at `endpoint` in `region`, with [`moto_credentials`] and
/// [`REQUEST_TIMEOUT`].
pub fn ec2_client(endpoint: &str, region: &str) -> Result<Ec2Client, String> {
    let url: Url = endpoint
        .parse()
        .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    let mut config = Ec2Config::new(region).with_endpoint(url);
    config.timeout = REQUEST_TIMEOUT;
    Ec2Client::new(config, palisade_testkit::moto::credentials()).map_err(|e| format!("{e:#}"))
}
