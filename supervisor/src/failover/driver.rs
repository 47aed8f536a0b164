//! The leadership driver: one task per supervisor with `[failover]`.
//!
//! While the state machine is a standby ([`DriverHandle::set_eligible`]),
//! it looks at etcd every `poll-interval` (with jitter) and campaigns for
//! the leader key when it is vacant: at once for a verified handoff record
//! naming this host, else — unless takeover is paused or manual — under the
//! takeover rule, which the machine then applies before any start
//! (`docs/failover.md` §2, §3). While primary, it renews the lease every
//! third of its TTL and reports each new signing deadline; a renewal that
//! fails for good (expired, deposed, answered too late) is reported as
//! lost. It never stops the node itself: the machine kills it when the
//! deadline passes or the leadership is lost, whichever comes first, so a
//! driver stuck in a request cannot keep a primary signing (§4).
//!
//! Every etcd request is bounded by the client's timeouts; every wait has
//! jitter; nothing here logs a key or a record's bytes.

use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::VerifyingKey;
use palisade_etcd::leader::{self, Acquired, Acquisition, Campaign, LeaderError};
use palisade_etcd::{Client, ClientOptions};
use palisade_wire::rpc::results::HandoffSummary;
use tokio::sync::{mpsc, oneshot, watch};

use super::record::{self, HandoffRecord};
use super::{HandoffGrant, LeaseEvent};
use super::{Keys, SharedView, view};
use crate::config::{FailoverSettings, TakeoverMode};

/// What the driver is asked to do.
enum DriverCommand {
    /// Write the signed record and free the leader key in one txn (only
    /// while the key is still this host's), then revoke the lease.
    HandOff {
        record: Vec<u8>,
        token: i64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Give the leadership with this token up (resign), if it is the one
    /// held: a late release must never end a newer leadership.
    Release { token: i64 },
    /// Pause or resume automatic takeover for every host.
    SetPaused {
        paused: bool,
        by: String,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// The executor's and the RPC's handle on the driver.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<DriverCommand>,
    eligible: std::sync::Arc<watch::Sender<bool>>,
    view: SharedView,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle").finish_non_exhaustive()
    }
}

/// Start the driver; its news arrives on `events`.
pub fn spawn(
    settings: FailoverSettings,
    keys: Keys,
    verifying_key: VerifyingKey,
    view: SharedView,
    events: mpsc::UnboundedSender<LeaseEvent>,
) -> Result<DriverHandle, String> {
    let client = Client::new(
        settings.etcd_endpoints.clone(),
        ClientOptions {
            // A request must fit well inside the fence margin.
            request_timeout: (settings.fence_margin / 2).max(Duration::from_millis(250)),
            connect_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        },
    )
    .map_err(|error| format!("[failover] etcd-endpoints: {error}"))?;
    let campaign = Campaign::new(
        keys.leader(),
        settings.host_id.clone(),
        settings.lease_ttl,
        settings.fence_margin,
    )
    .map_err(|error| error.to_string())?;
    let (commands, inbox) = mpsc::channel(8);
    let (eligible, eligible_rx) = watch::channel(false);
    let driver = Driver {
        client,
        campaign,
        settings,
        keys,
        verifying_key,
        view: view.clone(),
        events,
        leader: None,
        next_renew: Instant::now(),
        last_seen_token: None,
        last_note: None,
    };
    tokio::spawn(driver.run(inbox, eligible_rx));
    Ok(DriverHandle {
        commands,
        eligible: std::sync::Arc::new(eligible),
        view,
    })
}

impl DriverHandle {
    /// Whether the machine is a standby that may take the leadership.
    pub fn set_eligible(&self, eligible: bool) {
        self.eligible.send_if_modified(|current| {
            let changed = *current != eligible;
            *current = eligible;
            changed
        });
    }

    /// The shared view.
    pub fn view(&self) -> &SharedView {
        &self.view
    }

    /// Hand over with `record` (signed), giving up leadership `token`.
    pub async fn hand_off(&self, record: Vec<u8>, token: i64) -> Result<(), String> {
        self.ask(|reply| DriverCommand::HandOff {
            record,
            token,
            reply,
        })
        .await
    }

    /// Give the leadership with `token` up, if held (no answer).
    pub fn release(&self, token: i64) {
        if self
            .commands
            .try_send(DriverCommand::Release { token })
            .is_err()
        {
            tracing::warn!("the failover driver is busy or stopped; the lease expires on its own");
        }
    }

    /// Pause (or resume) automatic takeover; whether it is paused now.
    pub async fn set_paused(&self, paused: bool, by: &str) -> Result<bool, String> {
        self.ask(|reply| DriverCommand::SetPaused {
            paused,
            by: by.to_string(),
            reply,
        })
        .await
    }

    /// Send the command `make` builds around a reply channel, and wait for the reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> DriverCommand,
    ) -> Result<T, String> {
        let stopped = || "the failover driver has stopped".to_string();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

struct Driver {
    client: Client,
    campaign: Campaign,
    settings: FailoverSettings,
    keys: Keys,
    verifying_key: VerifyingKey,
    view: SharedView,
    events: mpsc::UnboundedSender<LeaseEvent>,
    /// The leadership, while held.
    leader: Option<Acquired>,
    next_renew: Instant,
    /// The token of the last leadership seen held by another host: a
    /// handoff record must hand over exactly that one.
    last_seen_token: Option<i64>,
    /// The last note logged (each is logged once).
    last_note: Option<String>,
}

/// A wait of `base` ± 20 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<DriverCommand>,
        mut eligible: watch::Receiver<bool>,
    ) {
        loop {
            let wait = match &self.leader {
                Some(_) => self.next_renew.saturating_duration_since(Instant::now()),
                None => jittered(self.settings.poll_interval),
            };
            tokio::select! {
                // Commands first: a release waiting in the inbox is carried
                // out before anything is campaigned for.
                biased;
                command = inbox.recv() => match command {
                    Some(command) => {
                        self.handle(command).await;
                        continue;
                    }
                    None => {
                        // The supervisor is gone: the node was stopped
                        // before it dropped us.
                        self.resign("the supervisor stopped").await;
                        return;
                    }
                },
                changed = eligible.changed() => {
                    if changed.is_err() {
                        self.resign("the supervisor stopped").await;
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            if self.leader.is_some() {
                if Instant::now() >= self.next_renew {
                    self.renew().await;
                }
            } else {
                let eligible = *eligible.borrow();
                self.observe(eligible).await;
            }
        }
    }

    async fn handle(&mut self, command: DriverCommand) {
        match command {
            DriverCommand::Release { token } => {
                let held = self.leader.as_ref().map(|acquired| acquired.token().0);
                if held == Some(token) {
                    self.resign("released by the supervisor").await;
                } else {
                    tracing::debug!(
                        token,
                        ?held,
                        "a release of a leadership no longer held; nothing to do"
                    );
                }
            }
            DriverCommand::SetPaused { paused, by, reply } => {
                let result = if paused {
                    let value = format!("{{\"by\":{:?},\"at_ms\":{}}}", by, now_ms());
                    self.client
                        .put(self.keys.paused(), value.as_bytes(), None)
                        .await
                        .map(|_| true)
                } else {
                    self.client.delete(self.keys.paused()).await.map(|_| false)
                };
                let result = result.map_err(|error| format!("etcd: {error}"));
                if let Ok(paused) = &result {
                    view(&self.view).paused = Some(*paused);
                    tracing::warn!(
                        by,
                        paused,
                        "automatic takeover {} for every host of this validator",
                        if *paused { "paused" } else { "resumed" }
                    );
                }
                let _ = reply.send(result);
            }
            DriverCommand::HandOff {
                record,
                token,
                reply,
            } => {
                let Some(acquired) = self.leader.take() else {
                    let _ = reply.send(Err("this host does not hold the leadership".into()));
                    return;
                };
                if acquired.token().0 != token {
                    let held = acquired.token();
                    self.leader = Some(acquired);
                    let _ = reply.send(Err(format!(
                        "the leadership held is token {held}, not {token}"
                    )));
                    return;
                }
                let result = self.hand_off_txn(token, &record).await;
                let answer = match result {
                    Ok(true) => {
                        if let Err(error) = self.client.revoke(acquired.lease()).await {
                            tracing::debug!(%error, "revoking the handed-over lease failed; it expires on its own");
                        }
                        self.gone(token, None);
                        Ok(())
                    }
                    Ok(false) => {
                        let _ = leader::resign(&self.client, acquired).await;
                        self.gone(
                            token,
                            Some("the leader key was no longer this host's".into()),
                        );
                        Err(format!(
                            "the leader key is no longer this host's (token {token}); nothing was written"
                        ))
                    }
                    Err(error) => {
                        // Still ours as far as we know: renewals go on, and
                        // a renewal finds out if the txn did go through.
                        self.leader = Some(acquired);
                        Err(format!("etcd: {error}"))
                    }
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// The handoff txn, with its outcome found out when an answer is lost: a
    /// tunnel's local forward whose bastion is down still accepts the
    /// connection, so the request may or may not have reached etcd. Read
    /// back (through another member): the key still ours means it did not
    /// apply, so try again; our record in place means it did. At most three
    /// tries.
    async fn hand_off_txn(&self, token: i64, record: &[u8]) -> Result<bool, palisade_etcd::Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let error = match self
                .client
                .put_and_delete_if_create_revision(
                    self.keys.leader(),
                    token,
                    self.keys.handoff(),
                    record,
                )
                .await
            {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            tracing::warn!(%error, tries, "the handoff txn got no answer; reading back what etcd did");
            let leader = self.client.get(self.keys.leader()).await?.kv;
            if leader.as_ref().map(|kv| kv.create_revision) == Some(token) {
                if tries < 3 {
                    continue;
                }
                return Err(error);
            }
            let written = self.client.get(self.keys.handoff()).await?.kv;
            return Ok(written.is_some_and(|kv| kv.value == record));
        }
    }

    /// The leadership with `token` is over (`lost`: tell the machine why; it
    /// did not ask for it).
    fn gone(&mut self, token: i64, lost: Option<String>) {
        self.leader = None;
        {
            let mut shared = view(&self.view);
            shared.stop_by = None;
        }
        if let Some(reason) = lost {
            let _ = self.events.send(LeaseEvent::Lost { token, reason });
        }
    }

    async fn resign(&mut self, why: &str) {
        if let Some(acquired) = self.leader.take() {
            let token = acquired.token();
            match leader::resign(&self.client, acquired).await {
                Ok(_) => tracing::info!(%token, why, "leadership given up"),
                Err(error) => {
                    tracing::warn!(%token, %error, why, "giving the leadership up failed; the lease expires on its own")
                }
            }
            view(&self.view).stop_by = None;
        }
    }

    async fn renew(&mut self) {
        let Some(acquired) = self.leader.as_mut() else {
            return;
        };
        let renew_every = self.settings.lease_ttl / 3;
        match leader::renew(&self.client, acquired).await {
            Ok(_) => {
                let stop_by = acquired.signing_deadline();
                self.next_renew = Instant::now() + renew_every;
                {
                    let mut shared = view(&self.view);
                    shared.stop_by = Some(stop_by);
                    shared.etcd_error = None;
                }
                let token = acquired.token().0;
                let _ = self.events.send(LeaseEvent::Renewed { token, stop_by });
            }
            Err(LeaderError::Etcd(error)) if !error.is_lease_expired() => {
                let deadline = acquired.signing_deadline();
                view(&self.view).etcd_error = Some(error.to_string());
                if Instant::now() >= deadline {
                    tracing::error!(%error, "the lease could not be renewed before the signing deadline");
                    let token = acquired.token().0;
                    if let Some(acquired) = self.leader.take() {
                        let _ = leader::resign(&self.client, acquired).await;
                    }
                    self.gone(
                        token,
                        Some(format!(
                            "the lease could not be renewed before the signing deadline ({error})"
                        )),
                    );
                } else {
                    tracing::warn!(%error, "renewing the lease failed; retrying");
                    self.next_renew = Instant::now()
                        + jittered(self.settings.poll_interval.min(Duration::from_millis(250)));
                }
            }
            Err(error) => {
                tracing::error!(%error, "the leadership is lost");
                let token = acquired.token().0;
                if let Some(acquired) = self.leader.take() {
                    let _ = leader::resign(&self.client, acquired).await;
                }
                self.gone(token, Some(error.to_string()));
            }
        }
    }

    fn note(&mut self, note: Option<String>) {
        if note != self.last_note {
            if let Some(text) = &note {
                tracing::info!("failover: {text}");
            }
            self.last_note = note.clone();
        }
        view(&self.view).note = note;
    }

    /// Read the leader key, the handoff record and the pause flag; campaign
    /// when eligible and the rules allow.
    async fn observe(&mut self, eligible: bool) {
        let read = async {
            let leader = leader::current_leader(&self.client, &self.keys.leader()).await?;
            let handoff = self.client.get(self.keys.handoff()).await?.kv;
            let paused = self.client.get(self.keys.paused()).await?.kv.is_some();
            Ok::<_, palisade_etcd::Error>((leader, handoff, paused))
        };
        let (holder, handoff, paused) = match read.await {
            Ok(read) => read,
            Err(error) => {
                view(&self.view).etcd_error = Some(error.to_string());
                self.note(Some(format!(
                    "etcd cannot be read ({error}); nothing is taken over while it cannot"
                )));
                return;
            }
        };
        let me = self.settings.host_id.clone();
        if let Some(holder) = &holder
            && holder.host_id != me
        {
            self.last_seen_token = Some(holder.token.0);
        }
        let verified = handoff
            .as_ref()
            .map(|kv| record::verify(&kv.value, &self.verifying_key, &self.keys.group));
        {
            let mut shared = view(&self.view);
            shared.etcd_error = None;
            shared.leader = holder.as_ref().map(|h| h.host_id.clone());
            shared.token = holder.as_ref().map(|h| h.token.0);
            shared.paused = Some(paused);
            shared.last_handoff = match &verified {
                Some(Ok(record)) => Some(summary(record, true)),
                _ => None,
            };
        }
        if !eligible {
            self.note(None);
            return;
        }
        if let Some(holder) = holder {
            self.note(Some(if holder.host_id == me {
                format!(
                    "the leader key still names this host (token {}) from an earlier run; waiting for its lease to expire",
                    holder.token
                )
            } else {
                format!("standby: {} is the primary (token {})", holder.host_id, holder.token)
            }));
            return;
        }
        let now = now_ms();
        let max_age = self.settings.handoff_timeout.as_millis() as u64;
        match verified {
            Some(Ok(record)) => {
                match record::check(&record, &me, self.last_seen_token, now, max_age) {
                    Ok(()) => {
                        let grant = HandoffGrant {
                            from: record.from.clone(),
                            watermark: record.watermark,
                        };
                        tracing::info!(from = %record.from, token = record.from_token, "a verified handoff record names this host; taking the leadership");
                        self.try_campaign(Some(grant)).await;
                        return;
                    }
                    Err(why) => {
                        let reserved = record.to != me
                            && Some(record.from_token) == self.last_seen_token
                            && now.saturating_sub(record.at_ms) <= max_age;
                        if reserved {
                            self.note(Some(format!(
                                "{} handed the validator over to {}; waiting for it",
                                record.from, record.to
                            )));
                            return;
                        }
                        if record.to == me && self.last_note.as_deref() != Some(why.as_str()) {
                            tracing::warn!("ignoring the handoff record: {why}");
                        }
                    }
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "the handoff record in etcd is not usable; ignoring it");
            }
            None => {}
        }
        if paused {
            self.note(Some(
                "no primary, and automatic takeover is paused (failover.resume)".into(),
            ));
            return;
        }
        if self.settings.takeover == TakeoverMode::Manual {
            self.note(Some(
                "no primary; takeover is manual: waiting for a handoff".into(),
            ));
            return;
        }
        self.try_campaign(None).await;
    }

    async fn try_campaign(&mut self, handoff: Option<HandoffGrant>) {
        match self.campaign.try_acquire(&self.client).await {
            Ok(Acquisition::Acquired(acquired)) => {
                let token = acquired.token().0;
                let stop_by = acquired.signing_deadline();
                self.next_renew = Instant::now() + self.settings.lease_ttl / 3;
                {
                    let mut shared = view(&self.view);
                    shared.leader = Some(self.settings.host_id.clone());
                    shared.token = Some(token);
                    shared.stop_by = Some(stop_by);
                }
                self.note(None);
                // A record handing over an earlier leadership is never
                // usable again, here or after this one ends.
                self.last_seen_token = Some(token);
                self.leader = Some(acquired);
                let _ = self.events.send(LeaseEvent::Acquired {
                    token,
                    stop_by,
                    handoff,
                });
            }
            Ok(Acquisition::HeldBy(holder)) => {
                if holder.host_id != self.settings.host_id {
                    self.last_seen_token = Some(holder.token.0);
                }
            }
            Err(error) => {
                view(&self.view).etcd_error = Some(error.to_string());
                tracing::warn!(%error, "campaigning for the leadership failed");
            }
        }
    }
}

fn summary(record: &HandoffRecord, verified: bool) -> HandoffSummary {
    HandoffSummary {
        from: record.from.clone(),
        to: record.to.clone(),
        from_token: record.from_token,
        watermark: record.watermark.map(|w| w.to_string()),
        at_ms: record.at_ms,
        verified,
    }
}
