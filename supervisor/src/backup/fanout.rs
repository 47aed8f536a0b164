//! [`StoreFanout`]: every backup to every store, without one slow store
//! holding up the others.
//!
//! A bastion that has silently gone away looks alive until the SSH
//! keepalive gives up on it (up to `keepalive-interval × (keepalive-max +
//! 1)`); a put to it hangs until then or until the store timeout. So each
//! put runs on its own task: [`StoreFanout::publish`] waits for the puts at
//! most `wait`, and a put still running after that finishes (or times out)
//! in the background, while the next backups skip that store instead of
//! piling up more puts behind it.
//!
//! Store health is logged on transitions only: when a store starts failing
//! and when it takes a backup again, not once per block while it is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::store::{BackupStore, StoreError};

/// One store and whether a put to it is still running.
struct Slot {
    store: Arc<dyn BackupStore>,
    busy: Arc<AtomicBool>,
}

/// Publishes each backup to every store concurrently.
pub struct StoreFanout {
    slots: Vec<Slot>,
    /// Store name → why its last put failed.
    failing: Arc<Mutex<HashMap<String, String>>>,
    timeout: Duration,
}

impl StoreFanout {
    /// `timeout` bounds each put, also the ones that finish in the
    /// background.
    pub fn new(stores: Vec<Arc<dyn BackupStore>>, timeout: Duration) -> StoreFanout {
        StoreFanout {
            slots: stores
                .into_iter()
                .map(|store| Slot {
                    store,
                    busy: Arc::new(AtomicBool::new(false)),
                })
                .collect(),
            failing: Arc::default(),
            timeout,
        }
    }

    /// The stores, in order.
    pub fn stores(&self) -> impl Iterator<Item = &Arc<dyn BackupStore>> {
        self.slots.iter().map(|slot| &slot.store)
    }

    /// Put `bytes` as `file_name` into every store not still busy with an
    /// earlier put; return the names of the stores that have it within
    /// `wait`.
    pub async fn publish(&self, file_name: &str, bytes: &[u8], wait: Duration) -> Vec<String> {
        let name: Arc<str> = Arc::from(file_name);
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let mut answers = Vec::new();
        for slot in &self.slots {
            let store_name = slot.store.name().to_owned();
            if slot.busy.swap(true, Ordering::AcqRel) {
                tracing::debug!(store = %store_name, file = %file_name, "previous backup still in flight; store skipped");
                continue;
            }
            let (sender, receiver) = oneshot::channel();
            let store = Arc::clone(&slot.store);
            let busy = Arc::clone(&slot.busy);
            let failing = Arc::clone(&self.failing);
            let (name, bytes, timeout) = (Arc::clone(&name), Arc::clone(&bytes), self.timeout);
            tokio::spawn(async move {
                let outcome = match tokio::time::timeout(timeout, store.put(&name, &bytes)).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Timeout(timeout)),
                };
                record(&failing, store.name(), &name, &outcome);
                busy.store(false, Ordering::Release);
                let _ = sender.send(outcome.is_ok());
            });
            answers.push((store_name, receiver));
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut stored = Vec::new();
        for (store_name, receiver) in answers {
            match tokio::time::timeout_at(deadline, receiver).await {
                Ok(Ok(true)) => stored.push(store_name),
                Ok(Ok(false)) | Ok(Err(_)) => {}
                Err(_) => {
                    tracing::debug!(store = %store_name, file = %file_name, "backup still in flight; it finishes in the background")
                }
            }
        }
        stored
    }
}

/// Log a store's health on transitions only.
fn record(
    failing: &Mutex<HashMap<String, String>>,
    store: &str,
    file: &str,
    outcome: &Result<(), StoreError>,
) {
    let mut failing = failing.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        Ok(()) => {
            if let Some(error) = failing.remove(store) {
                tracing::info!(%store, previous_error = %error, "backup store recovered");
            }
        }
        Err(error) => {
            let error = error.to_string();
            match failing.insert(store.to_owned(), error.clone()) {
                None => {
                    tracing::error!(%store, %error, %file, "backup store failing; backups continue to the other stores (reported again when it recovers)")
                }
                Some(_) => tracing::debug!(%store, %error, %file, "backup not stored"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::store::BoxFuture;

    /// A store that answers after `delay`, or fails when `fail` is set.
    struct Scripted {
        name: String,
        delay: Duration,
        fail: AtomicBool,
        puts: Mutex<Vec<String>>,
    }

    impl BackupStore for Scripted {
        fn name(&self) -> &str {
            &self.name
        }
        fn put<'a>(
            &'a self,
            file_name: &'a str,
            _bytes: &'a [u8],
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                if self.fail.load(Ordering::Relaxed) {
                    return Err(StoreError::Unavailable("scripted failure".into()));
                }
                self.puts.lock().unwrap().push(file_name.to_owned());
                Ok(())
            })
        }
        fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn get<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
            Box::pin(async { Err(StoreError::NotFound(String::new())) })
        }
        fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn scripted(name: &str, delay_ms: u64) -> Arc<Scripted> {
        Arc::new(Scripted {
            name: name.into(),
            delay: Duration::from_millis(delay_ms),
            fail: AtomicBool::new(false),
            puts: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_delays_nobody_and_is_skipped_while_busy() {
        let fast = scripted("local", 1);
        let hanging = scripted("bastion:a", 5_000);
        let fanout = StoreFanout::new(vec![fast.clone(), hanging.clone()], Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let stored = fanout.publish("b1", b"x", Duration::from_secs(2)).await;
        assert_eq!(stored, ["local"]);
        assert!(started.elapsed() <= Duration::from_secs(2));
        // While the first put to the hanging store runs, it is skipped.
        let stored = fanout.publish("b2", b"x", Duration::from_secs(2)).await;
        assert_eq!(stored, ["local"]);
        // The background put completes; the store takes the next backup.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(*hanging.puts.lock().unwrap(), ["b1"]);
        let stored = fanout.publish("b3", b"x", Duration::from_secs(6)).await;
        assert_eq!(stored, ["local", "bastion:a"]);
        assert_eq!(*fast.puts.lock().unwrap(), ["b1", "b2", "b3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_tracked_until_the_store_recovers() {
        let flaky = scripted("bastion:b", 1);
        let fanout = StoreFanout::new(vec![flaky.clone()], Duration::from_secs(10));
        flaky.fail.store(true, Ordering::Relaxed);
        for file in ["b1", "b2"] {
            assert!(
                fanout
                    .publish(file, b"x", Duration::from_secs(1))
                    .await
                    .is_empty()
            );
            assert!(fanout.failing.lock().unwrap().contains_key("bastion:b"));
        }
        flaky.fail.store(false, Ordering::Relaxed);
        assert_eq!(
            fanout.publish("b3", b"x", Duration::from_secs(1)).await,
            ["bastion:b"]
        );
        assert!(fanout.failing.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_put_that_never_ends_is_bounded_by_the_timeout() {
        let stuck = scripted("bastion:c", 3_600_000);
        let fanout = StoreFanout::new(vec![stuck.clone()], Duration::from_secs(10));
        assert!(
            fanout
                .publish("b1", b"x", Duration::from_secs(1))
                .await
                .is_empty()
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Timed out in the background: the store is free again, and failing.
        assert!(fanout.failing.lock().unwrap().contains_key("bastion:c"));
        stuck.fail.store(false, Ordering::Relaxed);
        let publish = fanout.publish("b2", b"x", Duration::from_secs(1));
        assert!(publish.await.is_empty(), "still hangs, but was attempted");
        assert!(fanout.slots[0].busy.load(Ordering::Acquire));
    }
}
