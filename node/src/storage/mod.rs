//! The node's storage layer: a thin wrapper around the embedded engine (fjall).
//!
//! # What it is for
//!
//! Everything a node keeps on disk goes through [`Storage`]: replicated values
//! ([`Space::Data`]), hinted hand-off records ([`Space::Hints`]), the index of deleted
//! keys awaiting reaping ([`Space::Tombstones`]) and the node's own bookkeeping
//! ([`Space::Meta`]). Each space is one fjall keyspace in one database, so they share a
//! single journal and a single fsync, and one write batch may span several spaces
//! atomically ([`Storage::modify_with`]).
//!
//! Keys are ordered bytes; callers that need ranges (a partition, a tree segment) lay
//! their keys out so that a range is contiguous and use [`Storage::scan_range`].
//! A [`ChangeObserver`] sees every committed change, under the key's lock and in commit
//! order per key — how the anti-entropy hash trees stay equal to what is stored.
//!
//! # Invariants
//!
//! - **An acknowledged write is fsync'd.** With [`Durability::Fsync`] (the default),
//!   [`Storage::put`], [`Storage::delete`] and [`Storage::modify`] return `Ok` only once
//!   the journal holding the change has been `fdatasync`ed. A failed fsync is returned
//!   as an error to every writer it covered, never as success, and the store then
//!   refuses further writes (the engine cannot promise what reached the disk).
//! - **Read-modify-write of one key is serialised.** Two [`Storage::modify`] calls on the
//!   same key in the same space never both see the same old value: each takes the key's
//!   stripe lock around read + apply.
//! - **Later readers see earlier writes.** A change is applied to the engine (and so
//!   visible) before the lock is released; the lock is *not* held while waiting for the
//!   fsync, so writers to other keys and the next writer of this key are not stalled by
//!   the disk.
//!
//! # Group commit
//!
//! A write is applied without syncing (fjall is opened with `manual_journal_persist`, so
//! it never syncs on its own) and gets a sequence number; the writer then waits until a
//! sync covering that number has completed. One background syncer thread loops: it
//! reads the highest applied sequence number, calls
//! `Database::persist(PersistMode::SyncData)`, and publishes the synced number on a
//! `tokio::sync::watch` channel, waking every writer it covers. Concurrent writers thus
//! share one fsync. [`Durability::Relaxed`] skips the wait (the change reaches the OS
//! page cache before the call returns, and is fsync'd by the syncer about once a second
//! and on [`Storage::close`]).
//!
//! # What it must not do
//!
//! It stores bytes. It knows nothing about versions, DVV sets, replication, quorums or
//! the ring; those live in `replica` and `coordinator`. A read may return a value whose
//! writer has not been acknowledged yet (its fsync is still in flight); a
//! `modify` that keeps the old value waits until what it read is durable.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::watch;

mod error;
mod sync;
#[cfg(test)]
mod tests;

pub use error::StorageError;
pub use sync::GroupCommit;
use sync::{lock, run_syncer, run_syncer_task, Progress, Shared, SyncCtl, SyncState};

/// Keys and values, as scans return them.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Number of key-hash stripes for the read-modify-write locks.
const STRIPES: usize = 1024;

/// A keyspace of the store. Spaces are isolated: the same key in two spaces is two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Replicated values (fjall keyspace `kv`).
    Data,
    /// Hinted hand-off records for unreachable peers (fjall keyspace `hints`).
    Hints,
    /// The node's own bookkeeping, e.g. its actor id (fjall keyspace `meta`).
    Meta,
    /// Keys whose state is tombstones only, awaiting reaping (fjall keyspace `tombstones`).
    Tombstones,
}

impl Space {
    /// Every space, in index order.
    pub const ALL: [Space; 4] = [Space::Data, Space::Hints, Space::Meta, Space::Tombstones];

    /// The fjall keyspace name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "kv",
            Space::Hints => "hints",
            Space::Meta => "meta",
            Space::Tombstones => "tombstones",
        }
    }

    fn index(self) -> usize {
        match self {
            Space::Data => 0,
            Space::Hints => 1,
            Space::Meta => 2,
            Space::Tombstones => 3,
        }
    }
}

/// The keyspace where versions before the partition-ordered layout kept replicated
/// values; [`Storage::migrate_legacy`] moves them into [`Space::Data`].
pub const LEGACY_DATA_KEYSPACE: &str = "data";

/// Sees every committed change (main and side writes of a batch), called under the
/// changed key's stripe lock right after the commit, so changes of one key arrive in
/// commit order. Must be quick and must not call back into storage.
pub trait ChangeObserver: Send + Sync {
    /// `key` in `space` went from `old` to `new` (None: absent).
    fn changed(&self, space: Space, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>);
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after the change is fsync'd (group-committed). The default.
    #[default]
    Fsync,
    /// Acknowledge once the change is in the OS page cache, **without** an fsync: a
    /// power loss or kernel crash may lose acknowledged writes (a process crash does
    /// not). Fsync'd in the background about once a second and on close.
    Relaxed,
}

/// Where the engine's work and the group-commit fsyncs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageIo {
    /// Engine calls on a blocking thread pool and fsyncs on a syncer thread: the event
    /// loop never waits for the disk, at the price of two thread wake-ups per call.
    #[default]
    Threads,
    /// Engine calls on the caller's runtime, fsyncs on the syncer thread: no wake-ups
    /// for memtable reads and writes (microseconds), while the disk syncs in parallel.
    /// The syncer fsyncs the journal outside fjall's journal lock, so a write never
    /// waits for the disk; only if it must fall back to fjall's own persist (which holds
    /// the lock) does a write that arrives meanwhile run on the blocking pool.
    Inline,
    /// Engine calls and fsyncs on the caller's runtime (a syncer task), as Redis does:
    /// no thread wakes another, but each fsync holds the event loop.
    InlineSync,
}

/// How to open a [`Storage`].
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Where engine calls and fsyncs run.
    pub io: StorageIo,
    /// How writes are grouped into fsyncs.
    pub group_commit: GroupCommit,
    /// The engine's block cache, bytes (None: fjall's default, 32 MiB).
    pub block_cache_bytes: Option<u64>,
}

/// What a [`Storage::modify`] closure decides to do with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Leave the key as it is (nothing is written).
    Keep,
    /// Store this value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// What a [`Storage::modify_with`] closure decides: the change to its key, and changes
/// to other keys (in any space) committed atomically with it. Side keys are not locked:
/// use them only for keys that are written only together with the main key (an index of
/// it in another space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The change to the key being modified.
    pub change: Change,
    /// Further changes in the same atomic batch.
    pub also: Vec<(Space, Vec<u8>, Change)>,
}

impl From<Change> for Edit {
    fn from(change: Change) -> Edit {
        Edit {
            change,
            also: Vec::new(),
        }
    }
}

/// Counters for notes and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Successful fsyncs done by the syncer.
    pub fsyncs: u64,
    /// Writes (puts and deletes) applied to the engine.
    pub writes_committed: u64,
    /// Writes applied and covered by a completed fsync.
    pub writes_synced: u64,
    /// The most writes one fsync covered.
    pub largest_group: u64,
    /// How long the fsyncs took (None before the first).
    pub fsync_latency: Option<FsyncLatency>,
}

/// Percentiles of how long the group-commit fsyncs took, in microseconds: flushing the
/// journal to the OS and `fdatasync`ing it, as the writers waiting on it see it. The
/// disk's share of every acknowledged write's latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsyncLatency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

struct Inner {
    shared: Arc<Shared>,
    spaces: [Keyspace; 4],
    observer: std::sync::OnceLock<Arc<dyn ChangeObserver>>,
    durability: Durability,
    stripes: Box<[Mutex<()>]>,
    state: watch::Receiver<SyncState>,
    closed: AtomicBool,
    syncer: Mutex<Option<Syncer>>,
    io: StorageIo,
}

/// The group-commit syncer: a thread, or a task on the runtime.
enum Syncer {
    Thread(JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not closed explicitly: still persist what was written and stop the syncer.
        self.shared.request_shutdown();
        if let Some(Syncer::Thread(handle)) = lock(&self.syncer).take() {
            if handle.join().is_err() {
                tracing::error!("storage syncer thread panicked");
            }
        }
    }
}

impl Inner {
    fn keyspace(&self, space: Space) -> &Keyspace {
        &self.spaces[space.index()]
    }

    fn stripe(&self, space: Space, key: &[u8]) -> &Mutex<()> {
        let mut h = DefaultHasher::new();
        space.hash(&mut h);
        key.hash(&mut h);
        // The modulo keeps the value below STRIPES, so the cast cannot truncate.
        &self.stripes[(h.finish() % STRIPES as u64) as usize]
    }

    fn check_open(&self, op: &'static str) -> Result<(), StorageError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StorageError::Closed { op });
        }
        Ok(())
    }

    fn check_writable(&self, op: &'static str) -> Result<(), StorageError> {
        self.check_open(op)?;
        if let Some(f) = &self.state.borrow().failure {
            return Err(f.to_error(op));
        }
        Ok(())
    }

    /// Applies `change` to `key` and the side changes in `also`, atomically and without
    /// syncing; returns the batch's sequence number (None if there was nothing to write)
    /// and reports every change to the observer. `old` is the key's value before, for
    /// the observer. Callers hold the key's stripe lock.
    fn apply(
        &self,
        op: &'static str,
        space: Space,
        key: Vec<u8>,
        old: Option<&[u8]>,
        edit: Edit,
    ) -> Result<Option<u64>, StorageError> {
        // The main change apart from the side ones: when it is a Keep, the first side
        // change is not the key whose old value the caller gave.
        let main = (edit.change != Change::Keep).then_some((space, key, edit.change));
        let side: Vec<(Space, Vec<u8>, Change)> = edit
            .also
            .into_iter()
            .filter(|(_, _, c)| *c != Change::Keep)
            .collect();
        if main.is_none() && side.is_empty() {
            return Ok(None);
        }
        for (_, k, _) in &side {
            check_key_len(op, k)?;
        }
        let observer = self.observer.get();
        // The observer needs the side keys' old values too (the main one is given).
        let side_olds: Vec<Option<fjall::Slice>> = match observer {
            Some(_) => side
                .iter()
                .map(|(sp, k, _)| self.keyspace(*sp).get(k))
                .collect::<Result<_, _>>()
                .map_err(|e| StorageError::engine(op, e))?,
            None => Vec::new(),
        };
        let buffer = match self.durability {
            Durability::Fsync => None,
            Durability::Relaxed => Some(PersistMode::Buffer),
        };
        let mut batch = self.shared.db.batch().durability(buffer);
        for (sp, k, change) in main.iter().chain(&side) {
            match change {
                Change::Keep => {}
                Change::Put(value) => batch.insert(self.keyspace(*sp), k.clone(), value.clone()),
                Change::Delete => batch.remove(self.keyspace(*sp), k.clone()),
            }
        }
        batch.commit().map_err(|e| StorageError::engine(op, e))?;
        let seq = self.shared.written.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(observer) = observer {
            if let Some((sp, k, change)) = &main {
                observer.changed(*sp, k, old, after(change));
            }
            for ((sp, k, change), before) in side.iter().zip(&side_olds) {
                observer.changed(*sp, k, before.as_deref(), after(change));
            }
        }
        Ok(Some(seq))
    }

    /// Read + decide + apply under the key's stripe lock. Returns the closure's result
    /// and the sequence number that must be durable before acknowledging.
    fn modify_blocking<R, F>(
        &self,
        space: Space,
        key: Vec<u8>,
        f: F,
    ) -> Result<(R, u64), StorageError>
    where
        F: FnOnce(Option<&[u8]>) -> (Edit, R),
    {
        let _guard = lock(self.stripe(space, &key));
        let old = self
            .keyspace(space)
            .get(&key)
            .map_err(|e| StorageError::engine("modify", e))?;
        let (edit, r) = f(old.as_deref());
        let seq = match self.apply("modify", space, key, old.as_deref(), edit)? {
            Some(seq) => seq,
            // Nothing written, but what was read may be someone else's write whose
            // fsync is in flight: wait for everything applied so far.
            None => self.shared.written.load(Ordering::SeqCst),
        };
        Ok((r, seq))
    }

    fn scan_range_blocking(
        &self,
        space: Space,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        let start = match after {
            Some(a) if a >= lo => Bound::Excluded(a),
            _ => Bound::Included(lo),
        };
        let mut out = Vec::new();
        let end = match hi {
            Some(hi) => Bound::Excluded(hi),
            None => Bound::Unbounded,
        };
        let iter = self.keyspace(space).range::<Vec<u8>, _>((start, end));
        for guard in iter.take(limit) {
            let (k, v) = guard
                .into_inner()
                .map_err(|e| StorageError::engine("scan", e))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn migrate_blocking(
        &self,
        to: Space,
        rekey: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Result<u64, StorageError> {
        const BATCH: usize = 10_000;
        let db = &self.shared.db;
        if !db.keyspace_exists(LEGACY_DATA_KEYSPACE) {
            return Ok(0);
        }
        let err = |e| StorageError::engine("migrate", e);
        let legacy = db
            .keyspace(LEGACY_DATA_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(err)?;
        let mut moved = 0u64;
        loop {
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = legacy
                .iter()
                .take(BATCH)
                .map(|g| g.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            if chunk.is_empty() {
                break;
            }
            let mut batch = db.batch();
            for (k, v) in &chunk {
                batch.insert(self.keyspace(to), rekey(k), v.clone());
                batch.remove(&legacy, k.clone());
            }
            batch.commit().map_err(err)?;
            db.persist(PersistMode::SyncData).map_err(err)?;
            moved += chunk.len() as u64;
        }
        db.delete_keyspace(legacy).map_err(err)?;
        Ok(moved)
    }

    /// Waits until every write with sequence number `<= seq` is fsync'd.
    async fn wait_durable(&self, op: &'static str, seq: u64) -> Result<(), StorageError> {
        if self.durability == Durability::Relaxed || seq == 0 {
            return Ok(());
        }
        fn verdict(s: &SyncState, op: &'static str, seq: u64) -> Option<Result<(), StorageError>> {
            if s.synced >= seq {
                Some(Ok(()))
            } else if let Some(f) = &s.failure {
                Some(Err(f.to_error(op)))
            } else if s.stopped {
                Some(Err(StorageError::Closed { op }))
            } else {
                None
            }
        }
        let mut rx = self.state.clone();
        let mut requested = false;
        loop {
            if let Some(v) = verdict(&rx.borrow_and_update(), op, seq) {
                return v;
            }
            if !requested {
                self.shared.request_sync();
                requested = true;
            }
            if rx.changed().await.is_err() {
                // The syncer is gone: its last word is final.
                return verdict(&rx.borrow(), op, seq).unwrap_or(Err(StorageError::Closed { op }));
            }
        }
    }
}

impl Inner {
    /// Runs an engine call where the store's I/O mode says: right here, or on the
    /// blocking pool. Under [`StorageIo::Inline`], a write that would queue behind an fsync
    /// holding fjall's journal lock (the syncer's fallback) goes to the blocking pool, so
    /// the event loop never waits for the disk; other calls run right here.
    async fn run<R, F>(
        self: &Arc<Self>,
        op: &'static str,
        writes: bool,
        f: F,
    ) -> Result<R, StorageError>
    where
        F: FnOnce(&Inner) -> Result<R, StorageError> + Send + 'static,
        R: Send + 'static,
    {
        let off_loop = match self.io {
            StorageIo::InlineSync => false,
            StorageIo::Inline => writes && self.shared.syncing.load(Ordering::SeqCst),
            StorageIo::Threads => true,
        };
        if !off_loop {
            return f(self);
        }
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::task(op, e))?
    }
}

/// The longest key the engine stores: it asserts (panics) on longer ones, so every
/// call that takes a key refuses them first with [`StorageError::KeyTooLong`].
pub const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// The value a change leaves (None: deleted or kept), for the observer.
fn after(change: &Change) -> Option<&[u8]> {
    match change {
        Change::Put(v) => Some(v.as_slice()),
        _ => None,
    }
}

fn check_key_len(op: &'static str, key: &[u8]) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLong { op, len: key.len() });
    }
    Ok(())
}

/// A change that is applied (visible) and will be durable once [`Durable::wait`]
/// returns `Ok`; see [`Storage::modify_applied`].
#[must_use = "a change is not acknowledged until it is durable"]
pub struct Durable {
    inner: Arc<Inner>,
    op: &'static str,
    seq: u64,
}

impl Durable {
    /// Waits until the change is fsync'd (at once under [`Durability::Relaxed`]); an
    /// error if the fsync covering it failed or the store closed first.
    pub async fn wait(self) -> Result<(), StorageError> {
        self.inner.wait_durable(self.op, self.seq).await
    }

    /// [`Durable::wait`] that, when writes come alone and no fsync is running, runs the
    /// fsync here on the caller's thread instead of waking the syncer thread and being
    /// woken by it: two thread hand-offs fewer on a lone write's path, at the price of
    /// holding this thread (the event loop) for one fsync. It first lets the other ready
    /// tasks run, so that writes arriving together (a batch of replica writes) are
    /// applied first and share that fsync. Under concurrent writes, and with
    /// [`StorageIo::Threads`] (whose point is that the event loop never waits for the
    /// disk), it is [`Durable::wait`].
    pub async fn wait_here(self) -> Result<(), StorageError> {
        let shared = &self.inner.shared;
        let in_place = self.inner.io != StorageIo::Threads && shared.writes_come_alone();
        if in_place && self.inner.durability == Durability::Fsync && self.seq > 0 {
            if self.inner.state.borrow().synced >= self.seq {
                return Ok(());
            }
            tokio::task::yield_now().await;
            if self.inner.state.borrow().synced < self.seq {
                shared.try_sync_here();
            }
        }
        self.wait().await
    }
}

/// The node's embedded store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("durability", &self.inner.durability)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (creating if needed) the store in `dir` and starts the syncer thread.
    /// Blocking: call it at start-up.
    pub fn open(dir: &Path, opts: StorageOptions) -> Result<Storage, StorageError> {
        let open_err = |source: fjall::Error| match source {
            fjall::Error::Locked => StorageError::Locked {
                path: dir.to_path_buf(),
            },
            source => StorageError::Open {
                path: dir.to_path_buf(),
                source,
            },
        };
        // manual_journal_persist: fjall never flushes or syncs on its own; the syncer
        // decides when the journal is fsync'd.
        let mut builder = Database::builder(dir).manual_journal_persist(true);
        if let Some(bytes) = opts.block_cache_bytes {
            builder = builder.cache_size(bytes);
        }
        let db = builder.open().map_err(open_err)?;
        let ks = |space: Space| {
            // Every table's index and bloom-filter blocks stay in memory (fjall pins only
            // the first levels' by default): a point read, the whole read path and half
            // of every write, then decodes no index or filter block. They are small
            // (about 3 MiB per million keys); get R=2 over 1M keys +14% (docs/benchmarks.md).
            // fjall applies these when it creates a keyspace; an existing one keeps its own.
            db.keyspace(space.name(), || {
                KeyspaceCreateOptions::default()
                    .index_block_pinning_policy(PinningPolicy::all(true))
                    .filter_block_pinning_policy(PinningPolicy::all(true))
            })
            .map_err(open_err)
        };
        let spaces = [
            ks(Space::Data)?,
            ks(Space::Hints)?,
            ks(Space::Meta)?,
            ks(Space::Tombstones)?,
        ];

        let (tx, state) = watch::channel(SyncState::default());
        let shared = Arc::new(Shared {
            db,
            dir: dir.to_path_buf(),
            journal: Mutex::new(None),
            written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            fsyncs_under_engine_lock: AtomicU64::new(0),
            largest_group: AtomicU64::new(0),
            fsync_micros: Mutex::new(sync::new_fsync_histogram()),
            last_group: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            ctl: Mutex::new(SyncCtl::default()),
            wake: Condvar::new(),
            wake_task: tokio::sync::Notify::new(),
            progress: Mutex::new(Progress::default()),
            tx,
            #[cfg(test)]
            test: tests::Hooks::default(),
        });
        let syncer = {
            let shared = Arc::clone(&shared);
            let durability = opts.durability;
            let group = opts.group_commit;
            match opts.io {
                StorageIo::Threads | StorageIo::Inline => Syncer::Thread(
                    std::thread::Builder::new()
                        .name("dynakv-syncer".into())
                        .spawn(move || run_syncer(shared, durability, group))
                        .map_err(|e| StorageError::Open {
                            path: dir.to_path_buf(),
                            source: fjall::Error::Io(e),
                        })?,
                ),
                StorageIo::InlineSync => {
                    let runtime =
                        tokio::runtime::Handle::try_current().map_err(|_| StorageError::Open {
                            path: dir.to_path_buf(),
                            source: fjall::Error::Io(std::io::Error::other(
                                "inline storage I/O needs a tokio runtime",
                            )),
                        })?;
                    Syncer::Task(runtime.spawn(run_syncer_task(shared, durability)))
                }
            }
        };
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Storage {
            inner: Arc::new(Inner {
                shared,
                spaces,
                observer: std::sync::OnceLock::new(),
                durability: opts.durability,
                stripes,
                state,
                closed: AtomicBool::new(false),
                syncer: Mutex::new(Some(syncer)),
                io: opts.io,
            }),
        })
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Reads one key. May return a value whose write is not acknowledged yet.
    pub async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.check_open("get")?;
        check_key_len("get", key)?;
        let key = key.to_vec();
        self.inner
            .run("get", false, move |inner| {
                inner
                    .keyspace(space)
                    .get(&key)
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(|e| StorageError::engine("get", e))
            })
            .await
    }

    /// Read-modify-write of one key. Calls on the same key (same space) are serialised
    /// (striped `std::sync::Mutex` locks by key hash, taken inside `spawn_blocking`), so
    /// two writers never both see the same old value. `f` runs under the lock: keep it
    /// short and do no I/O in it. Returns only once the change is durable (fsync'd via
    /// group commit) unless [`Durability::Relaxed`]; with [`Change::Keep`] it waits
    /// until the value it read is durable.
    pub async fn modify<R, F>(&self, space: Space, key: Vec<u8>, f: F) -> Result<R, StorageError>
    where
        F: FnOnce(Option<&[u8]>) -> (Change, R) + Send + 'static,
        R: Send + 'static,
    {
        self.modify_with(space, key, move |old| {
            let (change, r) = f(old);
            (Edit::from(change), r)
        })
        .await
    }

    /// [`Storage::modify`] whose closure may also change other keys in the same atomic
    /// batch (see [`Edit`]).
    pub async fn modify_with<R, F>(
        &self,
        space: Space,
        key: Vec<u8>,
        f: F,
    ) -> Result<R, StorageError>
    where
        F: FnOnce(Option<&[u8]>) -> (Edit, R) + Send + 'static,
        R: Send + 'static,
    {
        let (r, durable) = self.modify_applied(space, key, f).await?;
        durable.wait().await?;
        Ok(r)
    }

    /// [`Storage::modify_with`] that returns once the change is applied (visible to
    /// readers), with a [`Durable`] to await its fsync: a caller can start other work
    /// (send the change to other replicas) while the disk syncs, and acknowledge only
    /// after [`Durable::wait`].
    pub async fn modify_applied<R, F>(
        &self,
        space: Space,
        key: Vec<u8>,
        f: F,
    ) -> Result<(R, Durable), StorageError>
    where
        F: FnOnce(Option<&[u8]>) -> (Edit, R) + Send + 'static,
        R: Send + 'static,
    {
        self.inner.check_writable("modify")?;
        check_key_len("modify", &key)?;
        let (r, seq) = self
            .inner
            .run("modify", true, move |inner| {
                // A panicking closure must not take the node down with it (the blocking
                // pool catches panics the same way).
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inner.modify_blocking(space, key, f)
                }))
                .map_err(|_| StorageError::Task {
                    op: "modify",
                    reason: "it panicked".into(),
                })?
            })
            .await?;
        let durable = Durable {
            inner: Arc::clone(&self.inner),
            op: "modify",
            seq,
        };
        Ok((r, durable))
    }

    /// Installs the observer that sees every committed change from now on. Set it once,
    /// before the store takes writes it must see; a second call is ignored.
    pub fn set_observer(&self, observer: Arc<dyn ChangeObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// Durable put (same group commit as [`Storage::modify`]).
    pub async fn put(
        &self,
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StorageError> {
        self.write("put", space, key, Change::Put(value)).await
    }

    /// Durable delete (same group commit as [`Storage::modify`]). Deleting a missing
    /// key succeeds.
    pub async fn delete(&self, space: Space, key: Vec<u8>) -> Result<(), StorageError> {
        self.write("delete", space, key, Change::Delete).await
    }

    async fn write(
        &self,
        op: &'static str,
        space: Space,
        key: Vec<u8>,
        change: Change,
    ) -> Result<(), StorageError> {
        self.inner.check_writable(op)?;
        check_key_len(op, &key)?;
        let seq = self
            .inner
            .run(op, true, move |inner| {
                // Take the stripe lock so a blind write cannot land between a concurrent
                // modify's read and its apply.
                let _guard = lock(inner.stripe(space, &key));
                let old = match inner.observer.get() {
                    Some(_) => inner
                        .keyspace(space)
                        .get(&key)
                        .map_err(|e| StorageError::engine(op, e))?,
                    None => None,
                };
                inner.apply(op, space, key, old.as_deref(), Edit::from(change))
            })
            .await?;
        self.inner.wait_durable(op, seq.unwrap_or(0)).await
    }

    /// Bounded scan in key order, starting strictly after `after` (None = from the
    /// start), at most `limit` items. Page on by passing the last key returned.
    pub async fn scan(
        &self,
        space: Space,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        self.inner.check_open("scan")?;
        if let Some(after) = &after {
            check_key_len("scan", after)?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let ks = inner.keyspace(space);
            let iter = match after {
                Some(after) => ks.range::<Vec<u8>, _>((Bound::Excluded(after), Bound::Unbounded)),
                None => ks.iter(),
            };
            let mut out = Vec::with_capacity(limit.min(1024));
            for guard in iter.take(limit) {
                let (k, v) = guard
                    .into_inner()
                    .map_err(|e| StorageError::engine("scan", e))?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::task("scan", e))?
    }

    /// Bounded scan of the keys from `lo` (inclusive) to `hi` (exclusive; None: to the
    /// end), in key order, starting strictly after `after` (None: from `lo`), at most
    /// `limit` items. Page on with the last key.
    pub async fn scan_range(
        &self,
        space: Space,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        self.inner.check_open("scan")?;
        for bound in [Some(&lo), hi.as_ref(), after.as_ref()]
            .into_iter()
            .flatten()
        {
            check_key_len("scan", bound)?;
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.scan_range_blocking(space, lo, hi, after, limit))
            .await
            .map_err(|e| StorageError::task("scan", e))?
    }

    /// Every key with `prefix` (bounded by `limit`), in key order.
    pub async fn scan_prefix(
        &self,
        space: Space,
        prefix: Vec<u8>,
        limit: usize,
    ) -> Result<Rows, StorageError> {
        self.inner.check_open("scan")?;
        check_key_len("scan", &prefix)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for guard in inner.keyspace(space).prefix(&prefix).take(limit) {
                let (k, v) = guard
                    .into_inner()
                    .map_err(|e| StorageError::engine("scan", e))?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::task("scan", e))?
    }

    /// Calls `f` on every key and value of `space` in key order, from a blocking thread
    /// (start-up work such as rebuilding the hash trees). Stops at the first error.
    pub async fn for_each<F>(&self, space: Space, mut f: F) -> Result<u64, StorageError>
    where
        F: FnMut(&[u8], &[u8]) + Send + 'static,
    {
        self.inner.check_open("scan")?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            for guard in inner.keyspace(space).iter() {
                let (k, v) = guard
                    .into_inner()
                    .map_err(|e| StorageError::engine("scan", e))?;
                f(&k, &v);
                n += 1;
            }
            Ok(n)
        })
        .await
        .map_err(|e| StorageError::task("scan", e))?
    }

    /// Moves every key of the keyspace [`LEGACY_DATA_KEYSPACE`] (if it exists) into
    /// `to` under the key `rekey(old key)`, in atomic batches (each batch inserts the
    /// new keys and removes the old ones, then is fsync'd), and drops the legacy keyspace
    /// when it is empty. Crash-safe: a restart continues where it stopped, because a key
    /// is only ever in one of the two keyspaces. Returns how many keys moved. Call at
    /// start-up, before serving.
    pub async fn migrate_legacy<F>(&self, to: Space, rekey: F) -> Result<u64, StorageError>
    where
        F: Fn(&[u8]) -> Vec<u8> + Send + 'static,
    {
        self.inner.check_writable("migrate")?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.migrate_blocking(to, rekey))
            .await
            .map_err(|e| StorageError::task("migrate", e))?
    }

    /// The engine's estimate of the number of keys in `space` (cheap; counts
    /// overwritten and deleted entries until compaction).
    pub fn approximate_len(&self, space: Space) -> usize {
        self.inner.keyspace(space).approximate_len()
    }

    /// Group-commit counters.
    pub fn stats(&self) -> StorageStats {
        let shared = &self.inner.shared;
        StorageStats {
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            writes_committed: shared.written.load(Ordering::SeqCst),
            writes_synced: self.inner.state.borrow().synced,
            largest_group: shared.largest_group.load(Ordering::Relaxed),
            fsync_latency: shared.fsync_latency(),
        }
    }

    /// Persists everything and stops the syncer (graceful shutdown). Afterwards every
    /// operation returns [`StorageError::Closed`]; closing twice is fine. Returns the
    /// fsync failure, if the store had one.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.shared.request_shutdown();
        let handle = lock(&self.inner.syncer).take();
        match handle {
            Some(Syncer::Thread(handle)) => {
                tokio::task::spawn_blocking(move || handle.join())
                    .await
                    .map_err(|e| StorageError::task("close", e))?
                    .map_err(|_| StorageError::Task {
                        op: "close",
                        reason: "the syncer thread panicked".into(),
                    })?;
            }
            Some(Syncer::Task(task)) => {
                task.await.map_err(|e| StorageError::task("close", e))?;
            }
            None => {}
        }
        let state = self.inner.state.borrow().clone();
        if let Some(f) = state.failure {
            return Err(f.to_error("close"));
        }
        let written = self.inner.shared.written.load(Ordering::SeqCst);
        if state.synced < written {
            // A write raced the final sync; it was not acknowledged, so nothing is lost
            // that was promised, but say so.
            tracing::warn!(
                written,
                synced = state.synced,
                "storage closed with writes applied after the final fsync"
            );
        }
        Ok(())
    }
}
