//! Group commit: the syncer thread and the state it shares with writers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fjall::{Database, PersistMode};
use tokio::sync::watch;

use super::error::{is_disk_full, SyncFailure};
use super::Durability;

/// How often the syncer fsyncs on its own under [`Durability::Relaxed`].
const RELAXED_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// What the syncer publishes.
#[derive(Debug, Clone, Default)]
pub(super) struct SyncState {
    /// Every write with a sequence number `<= synced` is fsync'd.
    pub(super) synced: u64,
    /// Set (for good) once an fsync failed.
    pub(super) failure: Option<SyncFailure>,
    /// The syncer has stopped; no further fsync will happen.
    pub(super) stopped: bool,
}

#[derive(Debug, Default)]
pub(super) struct SyncCtl {
    requested: bool,
    shutdown: bool,
}

/// State shared between the handles and the syncer thread. The syncer holds this, not
/// `Inner`, so dropping the last `Storage` stops it.
pub(super) struct Shared {
    pub(super) db: Database,
    /// Highest sequence number handed out; every write up to it is applied.
    pub(super) written: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) largest_group: AtomicU64,
    pub(super) ctl: Mutex<SyncCtl>,
    pub(super) wake: Condvar,
    #[cfg(test)]
    pub(super) test: super::tests::Hooks,
}

impl Shared {
    pub(super) fn request_sync(&self) {
        lock(&self.ctl).requested = true;
        self.wake.notify_one();
    }

    pub(super) fn request_shutdown(&self) {
        lock(&self.ctl).shutdown = true;
        self.wake.notify_one();
    }

    /// Blocks until there is work; returns whether shutdown was requested.
    fn wait_for_work(&self, durability: Durability) -> bool {
        let mut ctl = lock(&self.ctl);
        while !ctl.requested && !ctl.shutdown {
            match durability {
                Durability::Fsync => {
                    ctl = self.wake.wait(ctl).unwrap_or_else(PoisonError::into_inner);
                }
                Durability::Relaxed => {
                    let (guard, timeout) = self
                        .wake
                        .wait_timeout(ctl, RELAXED_SYNC_INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner);
                    ctl = guard;
                    if timeout.timed_out() {
                        break;
                    }
                }
            }
        }
        ctl.requested = false;
        ctl.shutdown
    }

    fn persist(&self) -> Result<(), fjall::Error> {
        #[cfg(test)]
        if let Some(e) = self.test.injected_sync_error() {
            return Err(e);
        }
        self.db.persist(PersistMode::SyncData)
    }
}

/// The syncer thread: one fsync covers every write applied before it started.
pub(super) fn run_syncer(
    shared: Arc<Shared>,
    tx: watch::Sender<SyncState>,
    durability: Durability,
) {
    let mut synced = 0u64;
    let mut failed = false;
    loop {
        let shutdown = shared.wait_for_work(durability);
        #[cfg(test)]
        let gate = shared.test.sync_gate();
        // Every write with seq <= target finished applying before this load, so the
        // persist below covers it (older journals are synced by fjall when rotated).
        let target = shared.written.load(Ordering::SeqCst);
        if target > synced && !failed {
            match shared.persist() {
                Ok(()) => {
                    shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                    shared
                        .largest_group
                        .fetch_max(target - synced, Ordering::Relaxed);
                    synced = target;
                    tx.send_modify(|s| s.synced = target);
                }
                Err(e) => {
                    let failure = SyncFailure {
                        disk_full: is_disk_full(&e),
                        reason: e.to_string(),
                    };
                    tracing::error!(
                        cause = %failure.reason,
                        disk_full = failure.disk_full,
                        "storage fsync failed; refusing further writes"
                    );
                    failed = true;
                    tx.send_modify(|s| s.failure = Some(failure));
                }
            }
        }
        #[cfg(test)]
        drop(gate);
        if shutdown {
            tx.send_modify(|s| s.stopped = true);
            return;
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The mutexes guard no invariant a panic could break (a `modify` closure may panic
    // while a stripe lock is held), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
