//! Group commit: the syncer thread and the state it shares with writers.
//!
//! One fsync runs at a time (the [`Progress`] lock is held through it) and covers every
//! write applied before it. The syncer thread runs them, except that a writer whose
//! write came alone may run one itself, on its own thread ([`Shared::try_sync_here`]):
//! a replica write on an otherwise idle node then needs no hand-off to the syncer thread
//! and back.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fjall::{Database, PersistMode};
use hdrhistogram::Histogram;
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
    /// The database's directory, where fjall keeps its journal files (`<id>.jnl`).
    pub(super) dir: PathBuf,
    /// The syncer's own handle on the active journal file (see [`Shared::persist`]).
    pub(super) journal: Mutex<Option<JournalFile>>,
    /// Highest sequence number handed out; every write up to it is applied.
    pub(super) written: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    /// fsyncs that had to go through fjall's persist, under its journal lock.
    pub(super) fsyncs_under_engine_lock: AtomicU64,
    pub(super) largest_group: AtomicU64,
    /// How long each fsync took, µs (what [`super::FsyncLatency`] reports).
    pub(super) fsync_micros: Mutex<Histogram<u64>>,
    /// Writes the last fsync covered.
    pub(super) last_group: AtomicU64,
    /// An fsync is running under fjall's journal lock (the fallback of
    /// [`Shared::persist`]), so a write begun now would wait for the disk.
    pub(super) syncing: AtomicBool,
    pub(super) ctl: Mutex<SyncCtl>,
    pub(super) wake: Condvar,
    /// Wakes the syncer when it runs as a task on the runtime (inline I/O).
    pub(super) wake_task: tokio::sync::Notify,
    /// What has been synced; held through each fsync, so one runs at a time, whether the
    /// syncer or a writer running it in place ([`Shared::try_sync_here`]) does it.
    pub(super) progress: Mutex<Progress>,
    /// Publishes [`SyncState`] to the writers.
    pub(super) tx: watch::Sender<SyncState>,
    #[cfg(test)]
    pub(super) test: super::tests::Hooks,
}

impl Shared {
    /// Asks for an fsync. Only the first request after the syncer took the last one
    /// wakes it (a futex call); later ones find it already asked.
    pub(super) fn request_sync(&self) {
        let mut ctl = lock(&self.ctl);
        if ctl.requested {
            return;
        }
        ctl.requested = true;
        drop(ctl);
        self.wake.notify_one();
        self.wake_task.notify_one();
    }

    pub(super) fn request_shutdown(&self) {
        lock(&self.ctl).shutdown = true;
        self.wake.notify_one();
        self.wake_task.notify_one();
    }

    /// The syncer task's wait: until a sync or shutdown is requested (or, relaxed, a
    /// second passes); returns whether shutdown was requested.
    async fn wait_for_work_async(&self, durability: Durability) -> bool {
        loop {
            {
                let mut ctl = lock(&self.ctl);
                if ctl.requested || ctl.shutdown {
                    ctl.requested = false;
                    return ctl.shutdown;
                }
            }
            match durability {
                Durability::Fsync => self.wake_task.notified().await,
                Durability::Relaxed => {
                    let woken =
                        tokio::time::timeout(RELAXED_SYNC_INTERVAL, self.wake_task.notified())
                            .await;
                    if woken.is_err() {
                        return lock(&self.ctl).shutdown;
                    }
                }
            }
        }
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

    /// Makes every write applied so far durable.
    ///
    /// fjall's own `persist(SyncData)` holds its journal lock through the fsync, so every
    /// write on the node would wait for the disk. Instead: flush fjall's journal buffer
    /// to the OS under the lock (a `write`, no disk wait), then `fdatasync` the active
    /// journal file through the syncer's own descriptor, outside the lock. fsync acts on
    /// the file, not the descriptor, so this covers every byte flushed before it. The
    /// active journal is the highest-numbered one; it is looked up *after* the flush, so
    /// if fjall rotated in between, the journal that took the flushed writes was already
    /// fsync'd by the rotation itself (fjall syncs a journal as it seals it). If the file
    /// cannot be found (a different engine layout), it falls back to fjall's persist.
    fn persist(&self) -> Result<(), fjall::Error> {
        #[cfg(test)]
        if let Some(e) = self.test.injected_sync_error() {
            return Err(e);
        }
        self.db.persist(PersistMode::Buffer)?;
        let mut journal = lock(&self.journal);
        match JournalFile::follow(&self.dir, &mut journal) {
            Ok(Some(file)) => file.sync_data().map_err(fjall::Error::Io),
            Ok(None) | Err(_) => {
                drop(journal);
                if self
                    .fsyncs_under_engine_lock
                    .fetch_add(1, Ordering::Relaxed)
                    == 0
                {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "the storage journal file was not found where expected; fsyncs go through the engine, which holds its journal lock (writes then wait for the disk)"
                    );
                }
                self.syncing.store(true, Ordering::SeqCst);
                let result = self.db.persist(PersistMode::SyncData);
                self.syncing.store(false, Ordering::SeqCst);
                result
            }
        }
    }
}

/// 1 µs .. 100 s at 2 significant digits: small and fast to record into.
pub(super) fn new_fsync_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 2).expect("static histogram bounds are valid")
}

impl Shared {
    fn record_fsync(&self, took: Duration) {
        let micros = (took.as_micros() as u64).clamp(1, 100_000_000);
        let _ = lock(&self.fsync_micros).record(micros);
        metrics::histogram!("dynakv_fsync_seconds").record(took.as_secs_f64());
    }

    pub(super) fn fsync_latency(&self) -> Option<super::FsyncLatency> {
        let h = lock(&self.fsync_micros);
        (!h.is_empty()).then(|| super::FsyncLatency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// The active journal file of a fjall database, as the syncer follows it.
pub(super) struct JournalFile {
    id: u64,
    file: File,
}

impl JournalFile {
    #[cfg(test)]
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    fn path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("{id}.jnl"))
    }

    /// The id of the highest-numbered journal in `dir`, if any.
    pub(super) fn newest_id(dir: &Path) -> std::io::Result<Option<u64>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jnl")?.parse().ok())
            .max())
    }

    /// The active (highest-numbered) journal in `dir`, starting from the one followed
    /// so far: after a rotation its successor exists, so moving on costs one failed
    /// `open` per sync. None if `dir` holds no journal.
    pub(super) fn follow<'a>(
        dir: &Path,
        current: &'a mut Option<JournalFile>,
    ) -> std::io::Result<Option<&'a File>> {
        let mut id = match current {
            Some(j) => j.id,
            None => {
                let Some(id) = Self::newest_id(dir)? else {
                    return Ok(None);
                };
                *current = Some(JournalFile {
                    id,
                    file: File::open(Self::path(dir, id))?,
                });
                id
            }
        };
        loop {
            match File::open(Self::path(dir, id + 1)) {
                Ok(file) => {
                    id += 1;
                    *current = Some(JournalFile { id, file });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        Ok(current.as_ref().map(|j| &j.file))
    }
}

impl Shared {
    /// Whether the last fsync covered at most one write: no concurrent writers to group.
    pub(super) fn writes_come_alone(&self) -> bool {
        self.last_group.load(Ordering::Relaxed) <= 1
    }

    /// Runs an fsync right here, on the caller's thread, unless one is already running:
    /// returns whether it ran. For a caller that would otherwise wake the syncer thread
    /// and then be woken by it, when blocking its own thread for one fsync is fine.
    ///
    /// Only when writes come alone (the last fsync covered at most one): under
    /// concurrent writes the syncer thread batches them, and the caller's thread has
    /// other requests to serve.
    pub(super) fn try_sync_here(&self) -> bool {
        if !self.writes_come_alone() {
            return false;
        }
        let Ok(mut progress) = self.progress.try_lock() else {
            return false;
        };
        sync_once(self, &mut progress, false);
        true
    }
}

/// What the syncer has done so far.
#[derive(Default)]
pub(super) struct Progress {
    synced: u64,
    failed: bool,
}

/// One round of group commit: fsync everything applied so far and publish it. Returns
/// whether the syncer should stop (`shutdown` was requested).
fn sync_once(shared: &Shared, progress: &mut Progress, shutdown: bool) -> bool {
    let tx = &shared.tx;
    #[cfg(test)]
    let gate = shared.test.sync_gate();
    // Every write with seq <= target finished applying before this load, so the
    // persist below covers it (older journals are synced by fjall when rotated).
    let target = shared.written.load(Ordering::SeqCst);
    if target > progress.synced && !progress.failed {
        let started = Instant::now();
        match shared.persist() {
            Ok(()) => {
                shared.record_fsync(started.elapsed());
                shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                shared
                    .largest_group
                    .fetch_max(target - progress.synced, Ordering::Relaxed);
                shared
                    .last_group
                    .store(target - progress.synced, Ordering::Relaxed);
                #[cfg(test)]
                shared.test.record_sync_thread();
                progress.synced = target;
                tx.send_modify(|s| s.synced = target);
                dynakv_common::net::idle_spin::kick();
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
                progress.failed = true;
                tx.send_modify(|s| s.failure = Some(failure));
            }
        }
    }
    #[cfg(test)]
    drop(gate);
    if shutdown {
        tx.send_modify(|s| s.stopped = true);
    }
    shutdown
}

/// How the syncer groups writes into one fsync.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupCommit {
    /// When writes are arriving concurrently (the last fsync covered more than one),
    /// wait up to this long for more before syncing. Zero: sync at once.
    pub window: std::time::Duration,
    /// Sync as soon as this many writes are waiting, window or not.
    pub max_writes: u64,
}

impl Shared {
    /// Waits, within the window, for more writes to join the next fsync.
    fn gather(&self, synced: u64, group: GroupCommit) {
        let deadline = std::time::Instant::now() + group.window;
        let mut ctl = lock(&self.ctl);
        loop {
            let pending = self.written.load(Ordering::SeqCst).saturating_sub(synced);
            let now = std::time::Instant::now();
            if ctl.shutdown || pending >= group.max_writes.max(1) || now >= deadline {
                return;
            }
            ctl = self
                .wake
                .wait_timeout(ctl, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Tells the writers the syncer is gone when it returns or unwinds, so none waits for
/// an fsync that will not come.
struct StoppedOnExit<'a>(&'a Shared);

impl Drop for StoppedOnExit<'_> {
    fn drop(&mut self) {
        self.0.tx.send_modify(|s| s.stopped = true);
    }
}

/// The syncer thread: one fsync covers every write applied before it started.
pub(super) fn run_syncer(shared: Arc<Shared>, durability: Durability, group: GroupCommit) {
    let _stopped = StoppedOnExit(&shared);
    loop {
        let shutdown = shared.wait_for_work(durability);
        // Under concurrent load, a short wait lets one fsync cover more writes: fewer
        // fsyncs (each costs the machine tens of µs of CPU) for a little latency. A lone
        // writer (last group of one) is never made to wait.
        if !shutdown && !shared.writes_come_alone() && !group.window.is_zero() {
            let synced = lock(&shared.progress).synced;
            shared.gather(synced, group);
        }
        if sync_once(&shared, &mut lock(&shared.progress), shutdown) {
            return;
        }
    }
}

/// The syncer as a task on the caller's runtime (inline I/O): the fsync runs on the
/// event loop, after the writes that woke it, like Redis' `appendfsync always`. No
/// thread wakes another; an fsync (tens of µs on this machine) briefly holds the loop.
pub(super) async fn run_syncer_task(shared: Arc<Shared>, durability: Durability) {
    let _stopped = StoppedOnExit(&shared);
    loop {
        let shutdown = shared.wait_for_work_async(durability).await;
        // Let the tasks that are ready run first: the writer that asked for this fsync
        // has its replica messages to send, and they should be on the wire while the disk
        // works, not after; packets that arrived meanwhile join this fsync too.
        tokio::task::yield_now().await;
        if sync_once(&shared, &mut lock(&shared.progress), shutdown) {
            return;
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The mutexes guard no invariant a panic could break (a `modify` closure may panic
    // while a stripe lock is held), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
