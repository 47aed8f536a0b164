//! [`LoopbackCloud`]: moto's Elastic IP associations made true on loopback, for the benchmark
//! and anything else that rotates a bastion's address without network namespaces.
//!
//! moto allocates public addresses in 127.0.0.0/8, which are all local on Linux. The cloud
//! polls moto's `DescribeAddresses` every [`POLL_INTERVAL`] and keeps one TCP forwarder on
//! `ADDRESS:port` for every address associated with the instance, to `target` (the bastion's
//! sshd); an address that leaves the instance has its listener closed at the next poll, so a
//! rotation really changes where the bastion answers. (The network-namespace tests use
//! `supervisor/tests/common/cloud_shim.rs`, which moves the address between namespaces.)

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use palisade_ec2::{AddressFilter, Ec2Client, Ec2Config};

use crate::{Error, Result};

/// How often moto is asked which addresses the instance has.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often an idle listener looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The running cloud; stops (every listener closed) on drop.
pub struct LoopbackCloud {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackCloud {
    /// Starts forwarding `ADDRESS:port` → `target` for each address moto (at `endpoint`, in
    /// `region`) shows associated with `instance_id`.
    pub fn start(
        endpoint: &str,
        region: &str,
        instance_id: &str,
        port: u16,
        target: SocketAddr,
    ) -> Result<LoopbackCloud> {
        let client = Ec2Client::new(
            Ec2Config::new(region).with_endpoint(
                endpoint
                    .parse()
                    .map_err(|e| Error::new(format!("moto endpoint {endpoint}: {e}")))?,
            ),
            crate::moto::credentials(),
        )
        .map_err(|e| Error::new(format!("EC2 client for moto: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::new(format!("tokio runtime: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let instance = instance_id.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut listeners: BTreeMap<Ipv4Addr, Arc<AtomicBool>> = BTreeMap::new();
            while !stopping.load(Ordering::SeqCst) {
                let described = runtime.block_on(client.describe_addresses(&AddressFilter::All));
                if let Ok(addresses) = described {
                    let wanted: Vec<Ipv4Addr> = addresses
                        .iter()
                        .filter(|address| address.instance_id.as_deref() == Some(instance.as_str()))
                        .map(|address| address.public_ip)
                        .collect();
                    listeners.retain(|ip, closed| {
                        let keep = wanted.contains(ip);
                        if !keep {
                            closed.store(true, Ordering::SeqCst);
                        }
                        keep
                    });
                    for ip in wanted {
                        if listeners.contains_key(&ip) {
                            continue;
                        }
                        if let Ok(closed) = forward(SocketAddr::from((ip, port)), target) {
                            listeners.insert(ip, closed);
                        }
                    }
                }
                std::thread::sleep(POLL_INTERVAL);
            }
            for closed in listeners.values() {
                closed.store(true, Ordering::SeqCst);
            }
        });
        Ok(LoopbackCloud {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LoopbackCloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener on `listen` relaying each connection to `target` until the returned flag is set
/// (then it stops accepting; relayed connections end with their peers).
fn forward(listen: SocketAddr, target: SocketAddr) -> io::Result<Arc<AtomicBool>> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let closed = Arc::new(AtomicBool::new(false));
    let closing = closed.clone();
    std::thread::spawn(move || {
        while !closing.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((inbound, _)) => {
                    let _ = inbound.set_nonblocking(false);
                    if let Ok(outbound) = TcpStream::connect(target) {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        relay(inbound, outbound);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_POLL);
                }
                Err(_) => return,
            }
        }
    });
    Ok(closed)
}

/// Copies both ways on two threads; each direction's end shuts the other side's write half.
fn relay(a: TcpStream, b: TcpStream) {
    for (from, to) in [(&a, &b), (&b, &a)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
