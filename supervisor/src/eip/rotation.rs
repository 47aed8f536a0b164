//! One rotation of a bastion's Elastic IP, step by step, each step
//! journaled before the next begins:
//!
//! 1. `started`: the address associated now (the old one), from EC2.
//! 2. `allocated`: a new address, tagged `palisade:bastion` and
//!    `palisade:rotation` (so that one allocated just before a crash, with
//!    no journal record, is found again).
//! 3. `associated`: the new address on the bastion's instance or network
//!    interface (`AllowReassociation`).
//! 4. `tunnel-up`: the tunnel dials the new address (its host key still
//!    pinned to the bastion) and is up again within `eip.tunnel-timeout`;
//!    then `health-up`: the bastion's health check reaches the validator
//!    through it again (when the bastion had been checking before).
//! 5. `released`: the old address disassociated (if EC2 left it so) and
//!    released, unless `keep_old`.
//! 6. `done`.
//!
//! A failure before `tunnel-up` rolls back: the old address associated
//! again, the tunnel dialing it, the new one released (`rolled-back`); if
//! the rollback fails too, `failed` says exactly which address is where.
//! [`resume`] finishes a rotation a crash interrupted: before `tunnel-up`
//! it rolls back, after it it rolls forward.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use palisade_ec2::{Address, AddressFilter, AssociationTarget, Ec2Client};
use palisade_wire::rpc::results::{EipJournalRecord, EipRotateResult, EipStep};

use super::addresses::{AddressBook, Current};
use super::journal::{Journal, Unfinished, now_ms};
use crate::config::EipTarget;
use crate::tunnel::BastionObserver;

/// Tag naming the bastion an address belongs to.
pub const BASTION_TAG: &str = "palisade:bastion";
/// Tag naming the rotation that allocated an address.
pub const ROTATION_TAG: &str = "palisade:rotation";
/// How often the tunnel's state is looked at while waiting for it.
const TUNNEL_POLL: Duration = Duration::from_millis(50);

/// What a rotation works with.
pub struct Rotation<'a> {
    pub client: &'a Ec2Client,
    pub bastion: &'a str,
    pub target: &'a EipTarget,
    pub tunnel: &'a BastionObserver,
    pub journal: &'a Journal,
    pub book: &'a AddressBook,
    pub tunnel_timeout: Duration,
    /// Connections through the bastions' entries to the control socket
    /// (their health checks); `None` without a control-socket forward.
    pub arrivals: Option<&'a crate::rpc::BastionArrivals>,
}

/// The address EC2 shows associated with `target`, preferring `preferred`
/// (the allocation the address book names) when several are.
pub fn associated_with<'a>(
    addresses: &'a [Address],
    target: &EipTarget,
    preferred: Option<&str>,
) -> Option<&'a Address> {
    let mut found = addresses.iter().filter(|address| is_on(address, target));
    let first = found.clone().next();
    found
        .find(|address| Some(address.allocation_id.as_str()) == preferred)
        .or(first)
}

/// Whether EC2 shows `address` associated with `target`.
pub fn is_on(address: &Address, target: &EipTarget) -> bool {
    match target {
        EipTarget::Instance(id) => address.instance_id.as_deref() == Some(id),
        EipTarget::NetworkInterface(id) => address.network_interface_id.as_deref() == Some(id),
    }
}

/// Polls `check` every [`TUNNEL_POLL`] until it answers, at most `timeout`
/// (then `false`).
async fn poll_until(timeout: Duration, mut check: impl FnMut() -> Option<bool>) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = check() {
            return answer;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(TUNNEL_POLL).await;
    }
}

fn association_target(target: &EipTarget) -> AssociationTarget {
    match target {
        EipTarget::Instance(id) => AssociationTarget::Instance(id.clone()),
        EipTarget::NetworkInterface(id) => AssociationTarget::NetworkInterface(id.clone()),
    }
}

fn describe_target(target: &EipTarget) -> String {
    match target {
        EipTarget::Instance(id) => format!("instance {id}"),
        EipTarget::NetworkInterface(id) => format!("network interface {id}"),
    }
}

/// A new rotation id: `r` and the time in milliseconds, hex.
pub fn new_rotation_id() -> String {
    format!("r{:x}", now_ms())
}

impl Rotation<'_> {
    fn record(
        &self,
        rotation: &str,
        step: &str,
        address: Option<(&str, &str)>,
        association_id: Option<&str>,
        detail: Option<String>,
        took: Option<Duration>,
    ) -> anyhow::Result<()> {
        let record = EipJournalRecord {
            at_ms: now_ms(),
            rotation: rotation.to_string(),
            bastion: self.bastion.to_string(),
            step: step.to_string(),
            public_ip: address.map(|(ip, _)| ip.to_string()),
            allocation_id: address.map(|(_, id)| id.to_string()),
            association_id: association_id.map(str::to_string),
            detail,
            took_ms: took.map(millis),
        };
        tracing::info!(
            rotation,
            bastion = self.bastion,
            step,
            public_ip = record.public_ip.as_deref().unwrap_or("-"),
            allocation_id = record.allocation_id.as_deref().unwrap_or("-"),
            detail = record.detail.as_deref().unwrap_or("-"),
            took_ms = record.took_ms,
            "elastic IP rotation"
        );
        self.journal.append(&record)
    }

    /// Points the tunnel at `address` (and records it), then waits until
    /// it is up again on a connection made after the switch.
    async fn switch_tunnel(&self, address: Option<&Current>) -> anyhow::Result<bool> {
        let since = SystemTime::now();
        self.switch_tunnel_no_wait(address)?;
        Ok(poll_until(self.tunnel_timeout, || {
            let state = self.tunnel.snapshot();
            if state.connected_since.is_some_and(|at| at >= since) {
                Some(true)
            } else if state.stopped {
                Some(false)
            } else {
                None
            }
        })
        .await)
    }

    /// Runs a whole rotation.
    pub async fn run(&self, keep_old: bool) -> anyhow::Result<EipRotateResult> {
        let started = Instant::now();
        let rotation = new_rotation_id();
        let mut steps = Vec::new();
        let book = self.book.load()?;
        let preferred = book
            .get(self.bastion)
            .map(|current| current.allocation_id.clone());
        let step_started = Instant::now();
        let addresses = self.client.describe_addresses(&AddressFilter::All).await?;
        let old = associated_with(&addresses, self.target, preferred.as_deref()).cloned();
        let old_ip = old.as_ref().map(|address| address.public_ip.to_string());
        self.record(
            &rotation,
            "started",
            old.as_ref().map(|address| {
                (
                    old_ip.as_deref().unwrap_or(""),
                    address.allocation_id.as_str(),
                )
            }),
            old.as_ref()
                .and_then(|address| address.association_id.as_deref()),
            Some(format!(
                "{}; keep_old={keep_old}",
                describe_target(self.target)
            )),
            Some(step_started.elapsed()),
        )?;
        steps.push(step("started", step_started));

        let step_started = Instant::now();
        let tags = BTreeMap::from([
            (BASTION_TAG.to_string(), self.bastion.to_string()),
            (ROTATION_TAG.to_string(), rotation.clone()),
            ("Name".to_string(), format!("palisade {}", self.bastion)),
        ]);
        let new = match self.client.allocate_address(&tags).await {
            Ok(new) => new,
            Err(error) => {
                let message = format!("allocating a new address failed: {error}");
                self.record(&rotation, "failed", None, None, Some(message.clone()), None)?;
                anyhow::bail!("{message}; nothing was changed");
            }
        };
        let new_ip = new.public_ip.to_string();
        self.record(
            &rotation,
            "allocated",
            Some((&new_ip, &new.allocation_id)),
            None,
            None,
            Some(step_started.elapsed()),
        )?;
        steps.push(step("allocated", step_started));

        let step_started = Instant::now();
        let association = match self
            .client
            .associate_address(&new.allocation_id, &association_target(self.target))
            .await
        {
            Ok(association) => association,
            Err(error) => {
                let why = format!(
                    "associating {new_ip} with {} failed: {error}",
                    describe_target(self.target)
                );
                let rolled = self
                    .roll_back(
                        &rotation,
                        old.as_ref(),
                        &new_ip,
                        &new.allocation_id,
                        None,
                        &why,
                    )
                    .await;
                anyhow::bail!("{rolled}");
            }
        };
        self.record(
            &rotation,
            "associated",
            Some((&new_ip, &new.allocation_id)),
            Some(&association),
            Some(describe_target(self.target)),
            Some(step_started.elapsed()),
        )?;
        steps.push(step("associated", step_started));

        let step_started = Instant::now();
        let current = Current {
            public_ip: new_ip.clone(),
            allocation_id: new.allocation_id.clone(),
        };
        let switched = SystemTime::now();
        // Whether the bastion's health check had been reaching the validator:
        // then it must come back through the new address.
        let checked_before = self
            .arrivals
            .is_some_and(|arrivals| arrivals.last(self.bastion).is_some());
        if !self.switch_tunnel(Some(&current)).await? {
            let why = format!(
                "the tunnel did not come up on {new_ip} within {:?} ({})",
                self.tunnel_timeout,
                self.tunnel
                    .snapshot()
                    .last_error
                    .unwrap_or_else(|| "no error recorded".into())
            );
            let rolled = self
                .roll_back(
                    &rotation,
                    old.as_ref(),
                    &new_ip,
                    &new.allocation_id,
                    Some(&association),
                    &why,
                )
                .await;
            anyhow::bail!("{rolled}");
        }
        let tunnel_up = started.elapsed();
        self.record(
            &rotation,
            "tunnel-up",
            Some((&new_ip, &new.allocation_id)),
            Some(&association),
            None,
            Some(step_started.elapsed()),
        )?;
        steps.push(step("tunnel-up", step_started));

        // The bastion's health check of the validator arrives through the
        // tunnel's forward of the control socket: wait for one made after the
        // switch, if the bastion had been checking before (else there is
        // nothing to come back).
        let step_started = Instant::now();
        if let Some(arrivals) = self.arrivals
            && checked_before
        {
            let came_back = poll_until(self.tunnel_timeout, || {
                arrivals
                    .last(self.bastion)
                    .is_some_and(|at| at >= switched)
                    .then_some(true)
            })
            .await;
            if !came_back {
                let why = format!(
                    "the tunnel came up on {new_ip} but the bastion's health check did not reach the validator through it within {:?}",
                    self.tunnel_timeout
                );
                let rolled = self
                    .roll_back(
                        &rotation,
                        old.as_ref(),
                        &new_ip,
                        &new.allocation_id,
                        Some(&association),
                        &why,
                    )
                    .await;
                anyhow::bail!("{rolled}");
            }
            self.record(
                &rotation,
                "health-up",
                Some((&new_ip, &new.allocation_id)),
                Some(&association),
                Some("the bastion's health check reached the validator through the tunnel".into()),
                Some(step_started.elapsed()),
            )?;
            steps.push(step("health-up", step_started));
        }

        let step_started = Instant::now();
        let retired = self.retire_old(&rotation, old.as_ref(), keep_old).await?;
        if let Some(name) = retired {
            steps.push(step(name, step_started));
        }
        self.record(
            &rotation,
            "done",
            Some((&new_ip, &new.allocation_id)),
            Some(&association),
            None,
            Some(started.elapsed()),
        )?;
        Ok(EipRotateResult {
            bastion: self.bastion.to_string(),
            rotation,
            old_public_ip: old_ip,
            old_allocation_id: old.as_ref().map(|address| address.allocation_id.clone()),
            public_ip: new_ip,
            allocation_id: new.allocation_id,
            released_old: retired == Some("released"),
            steps,
            tunnel_up_ms: millis(tunnel_up),
        })
    }

    /// After the tunnel is up on the new address: the old one
    /// disassociated if EC2 still shows it on the target, and released
    /// unless `keep_old`. Returns the step journaled: `released`,
    /// `kept-old`, or `release-failed` (logged: the rotation itself
    /// succeeded); `None` when there was no old address.
    async fn retire_old(
        &self,
        rotation: &str,
        old: Option<&Address>,
        keep_old: bool,
    ) -> anyhow::Result<Option<&'static str>> {
        let Some(old) = old else {
            return Ok(None);
        };
        let old_ip = old.public_ip.to_string();
        let step_started = Instant::now();
        // EC2 moves the target's association to the new address; look at
        // the old one again rather than trust that.
        let now = self
            .client
            .describe_addresses(&AddressFilter::AllocationIds(vec![
                old.allocation_id.clone(),
            ]))
            .await;
        if let Ok(now) = &now
            && let Some(association) = now
                .first()
                .filter(|address| is_on(address, self.target))
                .and_then(|address| address.association_id.clone())
            && let Err(error) = self.client.disassociate_address(&association).await
            && !matches!(error, palisade_ec2::Error::AssociationNotFound { .. })
        {
            tracing::warn!(%error, public_ip = %old_ip, "could not disassociate the old address");
        }
        if keep_old {
            self.record(
                rotation,
                "kept-old",
                Some((&old_ip, &old.allocation_id)),
                None,
                Some("keep_old: the old address stays allocated, not associated".into()),
                Some(step_started.elapsed()),
            )?;
            return Ok(Some("kept-old"));
        }
        match self.client.release_address(&old.allocation_id).await {
            Ok(()) => {
                self.record(
                    rotation,
                    "released",
                    Some((&old_ip, &old.allocation_id)),
                    None,
                    None,
                    Some(step_started.elapsed()),
                )?;
                Ok(Some("released"))
            }
            Err(error) => {
                let detail = format!(
                    "the old address {old_ip} ({}) is still allocated: release it by hand ({error})",
                    old.allocation_id
                );
                tracing::error!("{detail}");
                self.record(
                    rotation,
                    "release-failed",
                    Some((&old_ip, &old.allocation_id)),
                    None,
                    Some(detail),
                    Some(step_started.elapsed()),
                )?;
                Ok(Some("release-failed"))
            }
        }
    }

    /// Puts things back as they were before the rotation: the old address
    /// on the target and the tunnel dialing it (or no address and the
    /// configured host), the new one released. Journals `rolled-back`, or
    /// `failed` naming where each address is. Returns the message.
    async fn roll_back(
        &self,
        rotation: &str,
        old: Option<&Address>,
        new_ip: &str,
        new_allocation: &str,
        new_association: Option<&str>,
        why: &str,
    ) -> String {
        let target = describe_target(self.target);
        let mut problems = Vec::new();
        match old {
            Some(old) => {
                if let Err(error) = self
                    .client
                    .associate_address(&old.allocation_id, &association_target(self.target))
                    .await
                {
                    problems.push(format!(
                        "re-associating the old address {} ({}) with {target} failed: {error}",
                        old.public_ip, old.allocation_id
                    ));
                }
            }
            None => {
                if let Some(association) = new_association
                    && let Err(error) = self.client.disassociate_address(association).await
                {
                    problems.push(format!("disassociating {new_ip} failed: {error}"));
                }
            }
        }
        let back = old.map(|old| Current {
            public_ip: old.public_ip.to_string(),
            allocation_id: old.allocation_id.clone(),
        });
        // The tunnel goes back to the old address whether or not it answers
        // yet; the normal reconnect loop keeps trying.
        if let Err(error) = self.switch_tunnel_no_wait(back.as_ref()) {
            problems.push(format!("recording the address failed: {error}"));
        }
        let released = if problems.is_empty() {
            match self.client.release_address(new_allocation).await {
                Ok(()) => true,
                Err(error) => {
                    problems.push(format!(
                        "releasing {new_ip} ({new_allocation}) failed: {error}"
                    ));
                    false
                }
            }
        } else {
            false
        };
        let old_text = old.map_or("no address".to_string(), |old| {
            format!("{} ({})", old.public_ip, old.allocation_id)
        });
        let (step, message) = if problems.is_empty() {
            (
                "rolled-back",
                format!(
                    "{why}; rolled back: {old_text} is on {target} again and the tunnel dials it; {new_ip} ({new_allocation}) was released"
                ),
            )
        } else {
            (
                "failed",
                format!(
                    "{why}; the rollback did not complete ({}): {} is {}; the old address {old_text} {}; the tunnel dials {}",
                    problems.join("; "),
                    new_ip,
                    if released {
                        "released"
                    } else {
                        "still allocated (release it by hand when it is not associated)"
                    },
                    if old.is_some() {
                        "may not be associated: check with `palisade-ctl eip list`"
                    } else {
                        "did not exist"
                    },
                    back.as_ref()
                        .map_or("the configured host", |current| current.public_ip.as_str())
                ),
            )
        };
        if let Err(error) = self.record(
            rotation,
            step,
            Some((new_ip, new_allocation)),
            new_association,
            Some(message.clone()),
            None,
        ) {
            tracing::error!(%error, "could not journal the rollback");
        }
        message
    }

    /// Points the tunnel at `address` (recorded first) and drops its
    /// connections, without waiting for them to come back.
    fn switch_tunnel_no_wait(&self, address: Option<&Current>) -> anyhow::Result<()> {
        self.book.set(self.bastion, address.cloned())?;
        self.tunnel
            .dial()
            .set(address.map(|current| current.public_ip.clone()));
        self.tunnel.request_reconnect();
        Ok(())
    }

    /// Finishes `unfinished` (a rotation a crash interrupted): rolls back
    /// when the tunnel had not been confirmed on the new address, rolls
    /// forward (retiring the old address) when it had.
    pub async fn resume(&self, unfinished: &Unfinished) -> anyhow::Result<String> {
        let rotation = unfinished.rotation.as_str();
        let started = unfinished.step("started");
        let keep_old = started
            .and_then(|record| record.detail.as_deref())
            .is_some_and(|detail| detail.contains("keep_old=true"));
        let old = match started.and_then(|record| record.allocation_id.clone()) {
            Some(allocation) => self
                .client
                .describe_addresses(&AddressFilter::AllocationIds(vec![allocation]))
                .await
                .ok()
                .and_then(|found| found.into_iter().next()),
            None => None,
        };
        // The new address: journaled, or found by its rotation tag (an
        // allocation the crash kept from the journal).
        let tagged = self
            .client
            .describe_addresses(&AddressFilter::Tag {
                key: ROTATION_TAG.to_string(),
                value: rotation.to_string(),
            })
            .await?;
        let new = tagged.into_iter().next();
        let reached_tunnel = unfinished.step("tunnel-up").is_some();
        match (reached_tunnel, new) {
            (true, Some(new)) => {
                let current = Current {
                    public_ip: new.public_ip.to_string(),
                    allocation_id: new.allocation_id.clone(),
                };
                self.switch_tunnel_no_wait(Some(&current))?;
                self.retire_old(rotation, old.as_ref(), keep_old).await?;
                self.record(
                    rotation,
                    "done",
                    Some((&current.public_ip, &current.allocation_id)),
                    new.association_id.as_deref(),
                    Some("resumed after a restart: rolled forward".into()),
                    None,
                )?;
                Ok(format!(
                    "rotation {rotation} of {} resumed and finished: {} is the bastion's address",
                    self.bastion, current.public_ip
                ))
            }
            (_, Some(new)) => {
                let new_ip = new.public_ip.to_string();
                let message = self
                    .roll_back(
                        rotation,
                        old.as_ref(),
                        &new_ip,
                        &new.allocation_id,
                        new.association_id.as_deref(),
                        "the supervisor stopped before the tunnel was confirmed on the new address",
                    )
                    .await;
                Ok(message)
            }
            (_, None) => {
                // Nothing was allocated (or it is gone): the old state stands.
                let back = old.as_ref().map(|old| Current {
                    public_ip: old.public_ip.to_string(),
                    allocation_id: old.allocation_id.clone(),
                });
                if self.book.load()?.get(self.bastion) != back.as_ref() {
                    self.switch_tunnel_no_wait(back.as_ref())?;
                }
                let message = format!(
                    "rotation {rotation} of {} stopped before a new address was allocated: nothing to undo",
                    self.bastion
                );
                self.record(
                    rotation,
                    "rolled-back",
                    None,
                    None,
                    Some(message.clone()),
                    None,
                )?;
                Ok(message)
            }
        }
    }
}

fn step(name: &str, started: Instant) -> EipStep {
    EipStep {
        step: name.to_string(),
        took_ms: millis(started.elapsed()),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(allocation: &str, instance: Option<&str>, eni: Option<&str>) -> Address {
        Address {
            allocation_id: allocation.into(),
            public_ip: "54.0.0.1".parse().unwrap(),
            association_id: instance.or(eni).map(|_| format!("eipassoc-{allocation}")),
            instance_id: instance.map(str::to_string),
            network_interface_id: eni.map(str::to_string),
            private_ip: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn which_address_is_the_bastions() {
        let instance = EipTarget::Instance("i-1".into());
        let eni = EipTarget::NetworkInterface("eni-1".into());
        let addresses = [
            address("a", None, None),
            address("b", Some("i-2"), Some("eni-2")),
            address("c", Some("i-1"), Some("eni-1")),
            address("d", Some("i-1"), Some("eni-1")),
        ];
        let found = |target: &EipTarget, preferred: Option<&str>| {
            associated_with(&addresses, target, preferred).map(|a| a.allocation_id.clone())
        };
        assert_eq!(found(&instance, None).as_deref(), Some("c"));
        assert_eq!(found(&instance, Some("d")).as_deref(), Some("d"));
        assert_eq!(found(&instance, Some("b")).as_deref(), Some("c"));
        assert_eq!(found(&eni, None).as_deref(), Some("c"));
        assert_eq!(found(&EipTarget::Instance("i-9".into()), None), None);
    }
}
