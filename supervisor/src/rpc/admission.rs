//! Who gets one of the server's connection slots when they are all taken.
//!
//! Remote connections (through a bastion) that have not logged in yet are
//! *unauthenticated*: they must finish TLS and send `auth.login` within
//! [`UNAUTHENTICATED_DEADLINE`] (or the idle timeout, if shorter; the login
//! throttle's wait after that does not count), and until they are logged
//! in they may be evicted. When every slot is taken and a new
//! connection arrives, one unauthenticated connection chosen at random is
//! closed to make room (the idea of OpenSSH's `MaxStartups` random early
//! drop). So a flood of idle or slow connections from a compromised bastion
//! costs an operator at most a retry, instead of a wait of (flood size /
//! slots) × idle timeout; and a trusted local user (root on the validator)
//! always gets in. Logged-in and trusted local sessions are never evicted.
//!
//! Invariant: a connection leaves the pool exactly once — when it logs in
//! ([`Ticket`] dropped), when it ends, or when it is evicted or its deadline
//! passes (its kill token cancelled) — so no slot is freed twice and no
//! logged-in session is ever cancelled from here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a remote connection may take from accept to a successful login.
pub const UNAUTHENTICATED_DEADLINE: Duration = Duration::from_secs(10);

/// The unauthenticated remote connections, each with its kill token.
#[derive(Debug, Default)]
pub struct Unauthenticated {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, CancellationToken>>,
}

/// Membership of one connection in the pool; dropping it (at login or when
/// the connection ends) takes the connection out without closing it.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    pool: Arc<Unauthenticated>,
    deadline: tokio::task::AbortHandle,
}

impl Ticket {
    /// The login deadline no longer applies (the client has sent its
    /// login; what remains is the server's throttle). The connection stays
    /// evictable until the ticket is dropped.
    pub fn stop_deadline(&self) {
        self.deadline.abort();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.deadline.abort();
        self.pool.lock().remove(&self.id);
    }
}

impl Unauthenticated {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove calls), so a poisoned lock is still usable.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enter a new connection; its returned token is cancelled if it is
    /// evicted or still here after `deadline`.
    pub fn admit(self: &Arc<Self>, deadline: Duration) -> (Ticket, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = CancellationToken::new();
        self.lock().insert(id, kill.clone());
        let pool = self.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            if let Some(kill) = pool.lock().remove(&id) {
                tracing::info!(
                    after_s = deadline.as_secs_f64(),
                    "control socket: a remote connection did not log in in time; closing"
                );
                kill.cancel();
            }
        });
        let ticket = Ticket {
            id,
            pool: self.clone(),
            deadline: timer.abort_handle(),
        };
        (ticket, kill)
    }

    /// Close one unauthenticated connection chosen at random; `false` if
    /// there is none.
    pub fn evict_one(&self) -> bool {
        let mut pending = self.lock();
        if pending.is_empty() {
            return false;
        }
        let index = rand::random_range(0..pending.len());
        let id = *pending.keys().nth(index).expect("index < len");
        let kill = pending.remove(&id).expect("present");
        drop(pending);
        tracing::debug!("control socket: all slots taken; closing a random unauthenticated one");
        kill.cancel();
        true
    }

    /// How many are waiting to log in.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tickets_leave_the_pool_once() {
        let pool = Arc::new(Unauthenticated::default());
        let (logged_in, logged_in_kill) = pool.admit(Duration::from_secs(10));
        let (slow, slow_kill) = pool.admit(Duration::from_secs(10));
        assert_eq!(pool.len(), 2);

        // Logging in (dropping the ticket) leaves without being killed, and
        // the deadline no longer applies.
        drop(logged_in);
        assert_eq!(pool.len(), 1);

        // The deadline kills the one still waiting.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(slow_kill.is_cancelled());
        assert!(!logged_in_kill.is_cancelled());
        assert!(pool.is_empty());
        // Its ticket dropping afterwards changes nothing.
        drop(slow);
        assert!(pool.is_empty());
        assert!(!pool.evict_one());
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_picks_only_waiting_connections() {
        let pool = Arc::new(Unauthenticated::default());
        let admitted: Vec<_> = (0..8)
            .map(|_| pool.admit(Duration::from_secs(60)))
            .collect();
        let (authenticated, authenticated_kill) = pool.admit(Duration::from_secs(60));
        drop(authenticated);
        for round in 1..=8 {
            assert!(pool.evict_one());
            let cancelled = admitted
                .iter()
                .filter(|(_, kill)| kill.is_cancelled())
                .count();
            assert_eq!(cancelled, round);
            assert_eq!(pool.len(), 8 - round);
        }
        assert!(!pool.evict_one());
        assert!(!authenticated_kill.is_cancelled());
    }
}
