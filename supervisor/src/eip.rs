//! Elastic IP rotation of the bastions (`docs/eip.md`, issue 14): moving a
//! bastion that is being flooded to a fresh public address, so that the
//! attacker loses the target while the validator's tunnel follows it.
//!
//! - [`rotation`]: the journaled procedure (allocate, associate, tunnel up
//!   on the new address, release the old) and its resumption after a crash.
//! - [`journal`]: the append-only record of every step.
//! - [`addresses`]: where each bastion answers now (dynamic state; the
//!   config file is never rewritten).
//! - [`credentials`]: the AWS key, sealed in the vault by default.
//!
//! [`EipService`] ties them to the running supervisor: the control RPC
//! answers `eip.list` and `eip.status` from it, and the supervision
//! executor runs `eip.rotate` (one at a time, never while the vault is
//! locked — the machine decides) and resumes an interrupted rotation once
//! the vault is unlocked.

pub mod addresses;
pub mod credentials;
pub mod journal;
pub mod rotation;
pub mod trigger;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_ec2::{AddressFilter, Ec2Client, Ec2Config};
use palisade_wire::rpc::results::{
    EipAddress, EipBastion, EipInProgress, EipListResult, EipRotateResult, EipStatusResult,
};

use crate::config::{Config, EipSettings, EipTarget};
use crate::tunnel::BastionObserver;
use crate::vault::UnlockedVault;

use addresses::AddressBook;
use journal::Journal;
use rotation::{BASTION_TAG, Rotation};

/// Why there is no EC2 client before an unlock.
const LOCKED: &str =
    "the AWS credentials are not available: they are in the vault, which is locked (vault.unlock)";

/// How many journal records `eip.status` shows.
pub const STATUS_RECORDS: usize = 50;

/// Where the journal and the address book live.
pub fn state_dir(daemon_home: &Path) -> PathBuf {
    daemon_home.join("palisade").join("eip")
}

/// Why `eip.list` has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// The AWS credentials are not at hand (the vault is locked).
    Unavailable(String),
    /// The EC2 call failed; the message names it and what AWS said.
    Failed(String),
}

/// A bastion that can be rotated.
#[derive(Debug, Clone)]
struct RotatableBastion {
    name: String,
    target: EipTarget,
    /// The configured host (dialed until a rotation).
    host: String,
}

/// Elastic IP rotation for the running supervisor.
pub struct EipService {
    settings: EipSettings,
    bastions: Vec<RotatableBastion>,
    observers: Vec<BastionObserver>,
    /// Connections through each bastion's forward of the control socket.
    arrivals: crate::rpc::BastionArrivals,
    journal: Journal,
    book: AddressBook,
    /// Built from the credentials while they are available (the vault
    /// unlocked); otherwise why not.
    client: Mutex<Result<Ec2Client, String>>,
}

impl std::fmt::Debug for EipService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EipService")
            .field("region", &self.settings.region)
            .field("bastions", &self.bastions)
            .finish_non_exhaustive()
    }
}

/// The addresses rotations left, to dial from the first attempt
/// (bastion name → address). Unreadable state is reported and ignored:
/// the tunnels then dial the configured hosts.
pub fn saved_addresses(config: &Config) -> BTreeMap<String, String> {
    if config.eip.is_none() {
        return BTreeMap::new();
    }
    match AddressBook::new(&state_dir(&config.daemon_home)).load() {
        Ok(book) => book
            .into_iter()
            .map(|(bastion, current)| (bastion, current.public_ip))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read the bastions' rotated addresses; dialing the configured hosts");
            BTreeMap::new()
        }
    }
}

impl EipService {
    /// The service for `config`, if it has `[eip]` and bastions with an
    /// `eip`; `observers` are the running tunnels'.
    pub fn new(
        config: &Config,
        observers: Vec<BastionObserver>,
        arrivals: crate::rpc::BastionArrivals,
    ) -> Option<Arc<EipService>> {
        let settings = config.eip.clone()?;
        let bastions: Vec<RotatableBastion> = config
            .tunnels
            .iter()
            .flat_map(|tunnels| &tunnels.bastions)
            .filter_map(|bastion| {
                bastion.eip.clone().map(|target| RotatableBastion {
                    name: bastion.name.clone(),
                    target,
                    host: bastion.host.clone(),
                })
            })
            .collect();
        let dir = state_dir(&config.daemon_home);
        Some(Arc::new(EipService {
            settings,
            bastions,
            observers,
            arrivals,
            journal: Journal::new(&dir),
            book: AddressBook::new(&dir),
            client: Mutex::new(Err(LOCKED.to_string())),
        }))
    }

    /// Makes the EC2 client from the configured credentials (the vault's
    /// need `vault`). Called when the vault is unlocked, and at start for
    /// credentials from the environment or a profile.
    pub fn open(&self, vault: Option<&UnlockedVault>) -> anyhow::Result<()> {
        let opened = (|| -> anyhow::Result<Ec2Client> {
            let credentials = credentials::load(&self.settings, vault)?;
            let mut ec2 = Ec2Config::new(self.settings.region.clone());
            ec2.timeout = self.settings.request_timeout;
            if let Some(endpoint) = &self.settings.endpoint {
                ec2 = ec2.with_endpoint(endpoint.parse()?);
            }
            Ok(Ec2Client::new(ec2, credentials)?)
        })();
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok(client) => {
                tracing::info!(region = %self.settings.region, endpoint = %client.endpoint(), "elastic IP rotation ready");
                *slot = Ok(client);
                Ok(())
            }
            Err(error) => {
                *slot = Err(format!("elastic IP rotation is unavailable: {error:#}"));
                Err(error)
            }
        }
    }

    /// Forgets the client (the vault is being locked).
    pub fn close(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Err(LOCKED.to_string());
    }

    fn client(&self) -> Result<Ec2Client, String> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The names of the bastions that can be rotated.
    pub fn bastion_names(&self) -> Vec<String> {
        self.bastions
            .iter()
            .map(|bastion| bastion.name.clone())
            .collect()
    }

    fn bastion(&self, name: &str) -> Option<&RotatableBastion> {
        self.bastions.iter().find(|bastion| bastion.name == name)
    }

    fn observer(&self, name: &str) -> Option<&BastionObserver> {
        self.observers
            .iter()
            .find(|observer| observer.name() == name)
    }

    /// `eip.list`. `Err(Unavailable)`: the credentials are not at hand;
    /// `Err(Failed)`: EC2 did not answer the call.
    pub async fn list(&self) -> Result<EipListResult, ListError> {
        let client = self.client().map_err(ListError::Unavailable)?;
        let addresses = client
            .describe_addresses(&AddressFilter::All)
            .await
            .map_err(|error| ListError::Failed(error.to_string()))?;
        let bastions = self
            .bastions
            .iter()
            .map(|bastion| {
                let (instance_id, network_interface_id) = match &bastion.target {
                    EipTarget::Instance(id) => (Some(id.clone()), None),
                    EipTarget::NetworkInterface(id) => (None, Some(id.clone())),
                };
                let mine = addresses
                    .iter()
                    .filter(|address| {
                        rotation::is_on(address, &bastion.target)
                            || address.tags.get(BASTION_TAG) == Some(&bastion.name)
                    })
                    .map(|address| EipAddress {
                        public_ip: address.public_ip.to_string(),
                        allocation_id: address.allocation_id.clone(),
                        association_id: address.association_id.clone(),
                        instance_id: address.instance_id.clone(),
                        network_interface_id: address.network_interface_id.clone(),
                    })
                    .collect();
                EipBastion {
                    bastion: bastion.name.clone(),
                    instance_id,
                    network_interface_id,
                    dialing: self
                        .observer(&bastion.name)
                        .and_then(|observer| observer.dial().get())
                        .unwrap_or_else(|| bastion.host.clone()),
                    addresses: mine,
                }
            })
            .collect();
        Ok(EipListResult { bastions })
    }

    /// `eip.status`.
    pub fn status(&self) -> Result<EipStatusResult, String> {
        let journal = self
            .journal
            .tail(STATUS_RECORDS)
            .map_err(|e| e.to_string())?;
        let in_progress = self
            .journal
            .unfinished()
            .map_err(|e| e.to_string())?
            .map(|unfinished| EipInProgress {
                started: unfinished
                    .records
                    .first()
                    .map_or(0, |record| record.at_ms / 1000),
                step: unfinished.last_step().to_string(),
                rotation: unfinished.rotation,
                bastion: unfinished.bastion,
            });
        Ok(EipStatusResult {
            in_progress,
            journal,
        })
    }

    /// Whether `name` can be rotated: `Err((message, known))` otherwise.
    pub fn check_bastion(&self, name: &str) -> Result<(), (String, Vec<String>)> {
        if self.bastion(name).is_some() && self.observer(name).is_some() {
            return Ok(());
        }
        Err((
            format!(
                "{name} is not a [[bastion]] with an eip (instance-id or network-interface-id)"
            ),
            self.bastion_names(),
        ))
    }

    fn rotation<'a>(
        &'a self,
        client: &'a Ec2Client,
        bastion: &'a RotatableBastion,
        observer: &'a BastionObserver,
    ) -> Rotation<'a> {
        Rotation {
            client,
            bastion: &bastion.name,
            target: &bastion.target,
            tunnel: observer,
            journal: &self.journal,
            book: &self.book,
            tunnel_timeout: self.settings.tunnel_timeout,
            arrivals: Some(&self.arrivals),
        }
    }

    /// `eip.rotate`: one rotation, start to end (the machine makes sure
    /// only one runs).
    pub async fn rotate(&self, name: &str, keep_old: bool) -> anyhow::Result<EipRotateResult> {
        let client = self.client().map_err(anyhow::Error::msg)?;
        let bastion = self
            .bastion(name)
            .ok_or_else(|| anyhow::anyhow!("{name} has no eip"))?;
        let observer = self
            .observer(name)
            .ok_or_else(|| anyhow::anyhow!("{name} has no tunnel"))?;
        if let Some(unfinished) = self.journal.unfinished()? {
            anyhow::bail!(
                "rotation {} of {} is unfinished (last step {}): it is resumed when the vault is unlocked; see eip.status",
                unfinished.rotation,
                unfinished.bastion,
                unfinished.last_step()
            );
        }
        self.rotation(&client, bastion, observer)
            .run(keep_old)
            .await
    }

    /// Finishes a rotation a crash interrupted, if the journal has one.
    pub async fn resume(&self) -> anyhow::Result<Option<String>> {
        let Some(unfinished) = self.journal.unfinished()? else {
            return Ok(None);
        };
        let client = self.client().map_err(anyhow::Error::msg)?;
        let bastion = self.bastion(&unfinished.bastion).ok_or_else(|| {
            anyhow::anyhow!(
                "the unfinished rotation {} is of {}, which is no longer a [[bastion]] with an eip: finish it by hand (eip.status shows its steps)",
                unfinished.rotation,
                unfinished.bastion
            )
        })?;
        let observer = self
            .observer(&unfinished.bastion)
            .ok_or_else(|| anyhow::anyhow!("{} has no tunnel", unfinished.bastion))?;
        tracing::warn!(
            rotation = %unfinished.rotation,
            bastion = %unfinished.bastion,
            last_step = unfinished.last_step(),
            "resuming an elastic IP rotation interrupted by a restart"
        );
        self.rotation(&client, bastion, observer)
            .resume(&unfinished)
            .await
            .map(Some)
    }

    /// Whether the EC2 client is ready (the credentials at hand).
    pub fn credentials_ready(&self) -> bool {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_ok()
    }

    /// Every tunnel: its bastion, whether it is up and its last round trip.
    pub fn link_samples(&self) -> Vec<(String, trigger::LinkSample)> {
        self.observers
            .iter()
            .map(|observer| {
                let state = observer.snapshot();
                let sample = match state.connected_since {
                    Some(_) => trigger::LinkSample::up(state.round_trip),
                    None => trigger::LinkSample::down(),
                };
                (observer.name().to_string(), sample)
            })
            .collect()
    }

    /// `[eip.auto]`, if configured.
    pub fn auto(&self) -> Option<crate::config::EipAuto> {
        self.settings.auto
    }

    /// Whether the journal holds a rotation a restart interrupted (to be
    /// resumed once the credentials are at hand). An unreadable journal
    /// counts as one: the resumption reports the error.
    pub fn has_unfinished(&self) -> bool {
        !matches!(self.journal.unfinished(), Ok(None))
    }

    /// Whether credentials come from the vault (then rotations wait for
    /// an unlock).
    pub fn needs_vault(&self) -> bool {
        matches!(
            self.settings.credentials,
            crate::config::CredentialSource::Vault
        )
    }
}
