//! The node's storage layer: a thin wrapper around the embedded engine (fjall).
//!
//! # What it is for
//!
//! Everything a node keeps on disk goes through [`Storage`]: replicated values
//! ([`Space::Data`]), hinted hand-off records ([`Space::Hints`]) and the node's own
//! bookkeeping ([`Space::Meta`]). Each space is one fjall keyspace in one database, so
//! they share a single journal and a single fsync.
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

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::watch;

mod error;
mod sync;
#[cfg(test)]
mod tests;

pub use error::StorageError;
use sync::{lock, run_syncer, Shared, SyncCtl, SyncState};

/// Number of key-hash stripes for the read-modify-write locks.
const STRIPES: usize = 1024;

/// A keyspace of the store. Spaces are isolated: the same key in two spaces is two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Replicated values (fjall keyspace `data`).
    Data,
    /// Hinted hand-off records for unreachable peers (fjall keyspace `hints`).
    Hints,
    /// The node's own bookkeeping, e.g. its actor id (fjall keyspace `meta`).
    Meta,
}

impl Space {
    /// Every space, in index order.
    pub const ALL: [Space; 3] = [Space::Data, Space::Hints, Space::Meta];

    /// The fjall keyspace name.
    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "data",
            Space::Hints => "hints",
            Space::Meta => "meta",
        }
    }

    fn index(self) -> usize {
        match self {
            Space::Data => 0,
            Space::Hints => 1,
            Space::Meta => 2,
        }
    }
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

/// How to open a [`Storage`].
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// When writes are acknowledged.
    pub durability: Durability,
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
}

struct Inner {
    shared: Arc<Shared>,
    spaces: [Keyspace; 3],
    durability: Durability,
    stripes: Box<[Mutex<()>]>,
    state: watch::Receiver<SyncState>,
    closed: AtomicBool,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not closed explicitly: still persist what was written and stop the syncer.
        self.shared.request_shutdown();
        if let Some(handle) = lock(&self.syncer).take() {
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

    /// Applies `change` without syncing; returns its sequence number (None for Keep).
    /// Callers serialise per key where it matters.
    fn apply(
        &self,
        op: &'static str,
        space: Space,
        key: Vec<u8>,
        change: Change,
    ) -> Result<Option<u64>, StorageError> {
        let ks = self.keyspace(space);
        let buffer = match self.durability {
            Durability::Fsync => None,
            Durability::Relaxed => Some(PersistMode::Buffer),
        };
        let mut batch = self.shared.db.batch().durability(buffer);
        match change {
            Change::Keep => return Ok(None),
            Change::Put(value) => batch.insert(ks, key, value),
            Change::Delete => batch.remove(ks, key),
        }
        batch.commit().map_err(|e| StorageError::engine(op, e))?;
        Ok(Some(self.shared.written.fetch_add(1, Ordering::SeqCst) + 1))
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
        F: FnOnce(Option<&[u8]>) -> (Change, R),
    {
        let _guard = lock(self.stripe(space, &key));
        let old = self
            .keyspace(space)
            .get(&key)
            .map_err(|e| StorageError::engine("modify", e))?;
        let (change, r) = f(old.as_deref());
        let seq = match self.apply("modify", space, key, change)? {
            Some(seq) => seq,
            // Nothing written, but what was read may be someone else's write whose
            // fsync is in flight: wait for everything applied so far.
            None => self.shared.written.load(Ordering::SeqCst),
        };
        Ok((r, seq))
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
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .open()
            .map_err(open_err)?;
        let ks = |space: Space| {
            db.keyspace(space.name(), KeyspaceCreateOptions::default)
                .map_err(open_err)
        };
        let spaces = [ks(Space::Data)?, ks(Space::Hints)?, ks(Space::Meta)?];

        let shared = Arc::new(Shared {
            db,
            written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            largest_group: AtomicU64::new(0),
            ctl: Mutex::new(SyncCtl::default()),
            wake: Condvar::new(),
            #[cfg(test)]
            test: tests::Hooks::default(),
        });
        let (tx, state) = watch::channel(SyncState::default());
        let syncer = {
            let shared = Arc::clone(&shared);
            let durability = opts.durability;
            std::thread::Builder::new()
                .name("dynakv-syncer".into())
                .spawn(move || run_syncer(shared, tx, durability))
                .map_err(|e| StorageError::Open {
                    path: dir.to_path_buf(),
                    source: fjall::Error::Io(e),
                })?
        };
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Storage {
            inner: Arc::new(Inner {
                shared,
                spaces,
                durability: opts.durability,
                stripes,
                state,
                closed: AtomicBool::new(false),
                syncer: Mutex::new(Some(syncer)),
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
        let inner = Arc::clone(&self.inner);
        let key = key.to_vec();
        tokio::task::spawn_blocking(move || {
            inner
                .keyspace(space)
                .get(&key)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| StorageError::engine("get", e))
        })
        .await
        .map_err(|e| StorageError::task("get", e))?
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
        self.inner.check_writable("modify")?;
        let inner = Arc::clone(&self.inner);
        let (r, seq) = tokio::task::spawn_blocking(move || inner.modify_blocking(space, key, f))
            .await
            .map_err(|e| StorageError::task("modify", e))??;
        self.inner.wait_durable("modify", seq).await?;
        Ok(r)
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
        let inner = Arc::clone(&self.inner);
        let seq = tokio::task::spawn_blocking(move || {
            // Take the stripe lock so a blind write cannot land between a concurrent
            // modify's read and its apply.
            let _guard = lock(inner.stripe(space, &key));
            inner.apply(op, space, key, change)
        })
        .await
        .map_err(|e| StorageError::task(op, e))??;
        self.inner.wait_durable(op, seq.unwrap_or(0)).await
    }

    /// Bounded scan in key order, starting strictly after `after` (None = from the
    /// start), at most `limit` items. Page on by passing the last key returned.
    pub async fn scan(
        &self,
        space: Space,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.inner.check_open("scan")?;
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
        }
    }

    /// Persists everything and stops the syncer (graceful shutdown). Afterwards every
    /// operation returns [`StorageError::Closed`]; closing twice is fine. Returns the
    /// fsync failure, if the store had one.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.shared.request_shutdown();
        let handle = lock(&self.inner.syncer).take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StorageError::task("close", e))?
                .map_err(|_| StorageError::Task {
                    op: "close",
                    reason: "the syncer thread panicked".into(),
                })?;
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
