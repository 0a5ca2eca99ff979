//! The replica: this node's versioned copies of keys on disk — primary copies, hints it
//! holds for down primaries, and the index of deleted keys awaiting reaping.
//!
//! Every change is a read-modify-write of one key, serialised per key by the storage
//! layer and acknowledged only once durable: the coordinator's [`Replica::coordinate`]
//! (mint a dot, DVV paper §5 `update`), a peer's [`Replica::merge`] (`sync`), a
//! fallback's [`Replica::store_hint`] (merged into the hint it already holds for that
//! key and primary), and the reaper's conditional [`Replica::reap_if`]. Each data change
//! also keeps the tombstone index right in the same atomic batch. Record layout:
//! [`layout`]. For a while after a reap, a merge that would only bring the reaped state
//! back (a copy read before the reap, delivered after it) is ignored
//! (`dynakv_common::reaping::RecentReaps`).
//!
//! Dots: the coordinator's new dot is above every counter its actor ever minted (a
//! node-wide floor kept here, saved at clean shutdown), so a reaped key's new writes are
//! never covered by a context read before its delete (see `dynakv_common::reaping`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crdts::Dot;
use dynakv_common::reaping::{deleted_at_ms, RecentReaps};
use dynakv_common::version::{Actor, Clock, Versioned, MAX_COUNTER};
use dynakv_common::wire::ConflictPolicy;
use dynakv_common::NodeId;

use crate::storage::{Change, Durability, Durable, Edit, Space, Storage, StorageError};

pub mod layout;

use layout::Corrupt;

/// Meta key holding this node's actor (node id + epoch).
const ACTOR_KEY: &[u8] = b"actor";
/// Meta key present only while the node is stopped after a clean shutdown.
const CLEAN_KEY: &[u8] = b"clean-shutdown";
/// Meta key holding the highest dot counter minted, saved at clean shutdown.
const COUNTER_KEY: &[u8] = b"counter";
/// Meta key holding the storage layout version of the data directory.
const LAYOUT_KEY: &[u8] = b"layout";
/// The layout this version writes: 2 = keys ordered by placement hash, hints and
/// tombstone index. (Layout 1 kept data under the raw key and is migrated at start.)
const LAYOUT: u8 = 2;

/// Errors applying a change to the local store.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}; the key was left untouched")]
    Corrupt(#[from] Corrupt),
    #[error("the key's state would grow to {size} bytes ({siblings} siblings), over the limit of {limit} bytes; read the key and write back with its context to resolve its siblings")]
    StateTooLarge {
        size: usize,
        siblings: usize,
        limit: usize,
    },
    #[error("hint store full: this node already holds {held} hints (max_hints = {limit}); the hint was dropped and anti-entropy will repair the key")]
    HintsFull { held: u64, limit: u64 },
    #[error("data directory {what}")]
    Layout { what: String },
    /// The new dot would pass the largest counter a version vector may hold: the
    /// context or the stored clock names a counter of this node's actor it never minted.
    #[error("the write would need counter {counter} for {actor}, over the limit of {max}; the key's context names writes this node never made")]
    CounterExhausted {
        actor: String,
        counter: u64,
        max: u64,
    },
}

/// A hint as stored on a fallback.
#[derive(Debug, Clone)]
pub struct Hint {
    /// Its storage key (for a conditional delete once delivered).
    pub hint_key: Vec<u8>,
    /// The user key.
    pub key: Vec<u8>,
    /// The primary it is meant for.
    pub target: NodeId,
    /// When it was first stored, ms since the epoch (later merges keep this time).
    pub created_ms: u64,
    pub state: Versioned,
    /// The stored bytes, to delete the hint only if nothing was merged into it meanwhile.
    pub raw: Vec<u8>,
}

/// What a merge did.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The stored state after the merge.
    pub state: Versioned,
    /// Whether the stored state changed.
    pub changed: bool,
}

/// Counts of hints held, per primary they are meant for.
#[derive(Debug, Default)]
struct HintBook {
    per_target: Mutex<BTreeMap<NodeId, u64>>,
    total: AtomicU64,
}

impl HintBook {
    /// Takes one place in the total for a new hint if fewer than `limit` are held (one
    /// atomic step, so concurrent new hints cannot together pass the bound); returns
    /// how many are held if not.
    fn reserve(&self, limit: u64) -> Result<(), u64> {
        self.total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < limit).then_some(t + 1)
            })
            .map(|_| ())
    }

    /// Gives back a place in the total: a hint removed, or one [`HintBook::reserve`] took
    /// for a hint that was not stored.
    fn release(&self) {
        let _ = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1))
            });
    }

    /// Counts a stored new hint whose place in the total was reserved.
    fn count_reserved(&self, target: &NodeId) {
        let mut map = self.per_target.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(target.clone()).or_insert(0) += 1;
    }

    /// Counts a hint found in storage at start-up.
    fn count_held(&self, target: &NodeId) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.count_reserved(target);
    }

    /// Uncounts a hint that was removed.
    fn remove(&self, target: &NodeId) {
        let mut map = self.per_target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(target);
            }
        }
        self.release();
    }
}

/// Writes minted here whose local copy has not landed yet (the deferred path used when
/// the lab delays the coordinator's own replica write): per key, the latest minted state
/// and how many are still in flight. Minting of one key is serialised by `stripes`.
#[derive(Default)]
struct Minting {
    stripes: Vec<tokio::sync::Mutex<()>>,
    pending: Mutex<std::collections::HashMap<Vec<u8>, (Versioned, usize)>>,
}

/// Stripes of the deferred minting locks.
const MINT_STRIPES: usize = 256;

/// Most reaped states remembered at once (the oldest are forgotten first: a stale copy
/// of one may then bring its tombstones back, to be reaped again).
const RECENT_REAPS: usize = 100_000;

/// This node's versioned key-value state. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    storage: Storage,
    actor: Actor,
    /// Largest encoded state a client write may produce, so every state fits in a frame.
    state_budget: usize,
    /// The highest counter this actor minted for any key.
    counter: Arc<AtomicU64>,
    hints: Arc<HintBook>,
    /// Most hint records this node keeps.
    max_hints: u64,
    minting: Arc<Minting>,
    /// How concurrent writes are resolved (applied after every update and merge).
    policy: ConflictPolicy,
    /// States reaped here lately: a merge that adds nothing to one is ignored.
    reaps: Arc<Mutex<RecentReaps>>,
}

fn tombstone_edit(
    data_key: &[u8],
    old: Option<&Versioned>,
    new: &Versioned,
) -> Vec<(Space, Vec<u8>, Change)> {
    let before = old.and_then(deleted_at_ms);
    let after = deleted_at_ms(new);
    if before == after {
        return Vec::new();
    }
    let change = match after {
        Some(at) => Change::Put(layout::encode_time(at)),
        None => Change::Delete,
    };
    vec![(Space::Tombstones, data_key.to_vec(), change)]
}

impl Replica {
    /// Opens the replica: migrates an older data directory, picks this node's actor,
    /// restores the dot-counter floor and counts the hints held.
    ///
    /// The actor is reused only after a clean shutdown. A new data directory, or a node
    /// that was killed, gets a new epoch: a killed node may have shown a write to a reader
    /// (and read repair may have spread it) before the write's fsync, and must not mint
    /// that dot again for another value. The cost is one more clock entry per crash.
    ///
    /// A reaped state is remembered for `reap_memory`, which must cover the longest time
    /// a state read before the reap can still arrive after it (a read repair's deadline
    /// plus its listening and sending windows).
    pub async fn open(
        storage: Storage,
        node: &str,
        state_budget: usize,
        max_hints: u64,
        policy: ConflictPolicy,
        reap_memory: Duration,
    ) -> Result<Replica, ReplicaError> {
        match storage.get(Space::Meta, LAYOUT_KEY).await? {
            Some(v) if v.as_slice() == [LAYOUT] => {}
            Some(v) => {
                return Err(ReplicaError::Layout {
                    what: format!(
                        "was written with storage layout {v:?}, which this dynakv ({}) cannot read (it reads layout {LAYOUT}); run the version that wrote it",
                        env!("CARGO_PKG_VERSION")
                    ),
                })
            }
            None => {
                let moved = storage
                    .migrate_legacy(Space::Data, layout::data_key)
                    .await?;
                if moved > 0 {
                    tracing::info!(keys = moved, "migrated the data directory to the partition-ordered layout");
                }
                storage
                    .put(Space::Meta, LAYOUT_KEY.to_vec(), vec![LAYOUT])
                    .await?;
            }
        }
        let previous = storage.get(Space::Meta, ACTOR_KEY).await?;
        // Without fsync a crash can bring back an old clean marker while losing writes
        // made after it, so relaxed durability always takes a new epoch.
        let clean = storage.get(Space::Meta, CLEAN_KEY).await?.is_some()
            && storage.durability() == Durability::Fsync;
        let (actor, counter) = match previous {
            Some(bytes) if clean => {
                let counter = match storage.get(Space::Meta, COUNTER_KEY).await? {
                    Some(c) => layout::decode_time(&c)?,
                    None => 0,
                };
                (Actor(String::from_utf8_lossy(&bytes).into_owned()), counter)
            }
            _ => {
                let epoch: u32 = rand::random();
                let actor = format!("{node}.{epoch:08x}");
                storage
                    .put(Space::Meta, ACTOR_KEY.to_vec(), actor.clone().into_bytes())
                    .await?;
                (Actor(actor), 0)
            }
        };
        if clean {
            storage.delete(Space::Meta, CLEAN_KEY.to_vec()).await?;
        }
        let hints = Arc::new(HintBook::default());
        let book = hints.clone();
        storage
            .for_each(Space::Hints, move |k, _| {
                if let Ok((_, target)) = layout::split_hint_key(k) {
                    book.count_held(&target);
                }
            })
            .await?;
        Ok(Replica {
            storage,
            actor,
            state_budget,
            counter: Arc::new(AtomicU64::new(counter)),
            hints,
            max_hints,
            minting: Arc::new(Minting {
                stripes: (0..MINT_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                pending: Mutex::default(),
            }),
            policy,
            reaps: Arc::new(Mutex::new(RecentReaps::new(reap_memory, RECENT_REAPS))),
        })
    }

    /// Records a clean shutdown (and the dot-counter floor), so the next start keeps
    /// this actor. Call after the last write, just before closing storage.
    pub async fn mark_clean_shutdown(&self) -> Result<(), ReplicaError> {
        let counter = self.counter.load(Ordering::SeqCst);
        self.storage
            .put(
                Space::Meta,
                COUNTER_KEY.to_vec(),
                layout::encode_time(counter),
            )
            .await?;
        self.storage
            .put(
                Space::Meta,
                CLEAN_KEY.to_vec(),
                self.actor.0.clone().into_bytes(),
            )
            .await?;
        Ok(())
    }

    /// This node's actor in version vectors.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The highest counter this node's actor has minted: no context a node gave out can
    /// name a higher one for it.
    pub fn minted(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The primary copy of a key, if this node has one.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Versioned>, ReplicaError> {
        match self
            .storage
            .get(Space::Data, &layout::data_key(key))
            .await?
        {
            Some(bytes) => Ok(Some(layout::decode_state(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Everything this node knows of a key: its primary copy merged with the hints it
    /// holds for it that are younger than `hint_ttl_ms` at `now_ms`. What a peer's read
    /// gets, so a fallback serves the writes it holds. An expired hint is one delivery
    /// gave up on and the next sweep deletes; served meanwhile, it could bring back a
    /// delete reaped after its grace period (the ttl is at most the grace).
    pub async fn read_any(
        &self,
        key: &[u8],
        now_ms: u64,
        hint_ttl_ms: u64,
    ) -> Result<Option<Versioned>, ReplicaError> {
        let mut state = self.read(key).await?;
        if self.hints.total.load(Ordering::Relaxed) > 0 {
            for (_, hint, created_ms) in self.hints_for(key).await? {
                if !hint_expired(created_ms, now_ms, hint_ttl_ms) {
                    state.get_or_insert_with(Versioned::new).merge(&hint);
                }
            }
        }
        Ok(state)
    }

    /// The coordinator's write: mints a dot, drops what `context` covers, stores the
    /// result durably and returns it with the new dot. A write that would make the key's
    /// state larger than the budget is refused and nothing is stored.
    pub async fn coordinate(
        &self,
        key: Vec<u8>,
        context: Clock,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(Versioned, Dot<Actor>), ReplicaError> {
        let (state, dot, durable) = self.coordinate_applied(key, context, value, now_ms).await?;
        durable.wait().await?;
        Ok((state, dot))
    }

    /// [`Replica::coordinate`] that returns once the write is applied here, with the
    /// [`Durable`] to await its fsync, so the coordinator can send it to the other
    /// replicas while this disk syncs. Safe because a dot sent out before it is durable
    /// here is never minted again: a node that dies uncleanly restarts as a new actor
    /// (a new epoch), so it cannot reuse a counter its lost journal tail had handed out.
    pub async fn coordinate_applied(
        &self,
        key: Vec<u8>,
        context: Clock,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(Versioned, Dot<Actor>, Durable), ReplicaError> {
        let actor = self.actor.clone();
        let limit = self.state_budget;
        let counter = self.counter.clone();
        let policy = self.policy;
        let data_key = layout::data_key(&key);
        let (written, durable) = self
            .storage
            .modify_applied(Space::Data, data_key.clone(), move |old| {
                let old = match old.map(layout::decode_state).transpose() {
                    Ok(s) => s,
                    Err(e) => return (Change::Keep.into(), Err(e.into())),
                };
                let mut state = old.clone().unwrap_or_default();
                let floor = counter.load(Ordering::SeqCst);
                let dot = state.update_with_floor(&context, &actor, value, now_ms, floor);
                if let Err(e) = within_counter_range(&dot) {
                    return (Change::Keep.into(), Err(e));
                }
                policy.apply(&mut state);
                let bytes = layout::encode_state(&state);
                if bytes.len() > limit {
                    let err = ReplicaError::StateTooLarge {
                        size: bytes.len(),
                        siblings: state.siblings().len(),
                        limit,
                    };
                    return (Change::Keep.into(), Err(err));
                }
                counter.fetch_max(dot.counter, Ordering::SeqCst);
                let edit = Edit {
                    change: Change::Put(bytes),
                    also: tombstone_edit(&data_key, old.as_ref(), &state),
                };
                (edit, Ok((state, dot)))
            })
            .await?;
        let (state, dot) = written?;
        Ok((state, dot, durable))
    }

    /// The coordinator's write without storing it yet: mints the dot from this node's
    /// copy merged with the writes minted here that have not landed, and remembers the
    /// result until [`Replica::land`] stores it. For runs that delay the coordinator's
    /// own replica write like any other replica's (the lab's `local` faults), so that the
    /// write can be sent to every replica at once. Writes of one key are minted one at a
    /// time, each on top of the previous one, so no concurrent write is ever covered.
    pub async fn mint(
        &self,
        key: Vec<u8>,
        context: Clock,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(Versioned, Dot<Actor>), ReplicaError> {
        let stripe = (xxhash_rust::xxh3::xxh3_64(&key) as usize) % MINT_STRIPES;
        let _one_at_a_time = self.minting.stripes[stripe].lock().await;
        let mut state = self.read(&key).await?.unwrap_or_default();
        let mut pending = self
            .minting
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((minted, _)) = pending.get(&key) {
            state.merge(minted);
        }
        let floor = self.counter.load(Ordering::SeqCst);
        let dot = state.update_with_floor(&context, &self.actor, value, now_ms, floor);
        within_counter_range(&dot)?;
        self.policy.apply(&mut state);
        let size = layout::encode_state(&state).len();
        if size > self.state_budget {
            return Err(ReplicaError::StateTooLarge {
                size,
                siblings: state.siblings().len(),
                limit: self.state_budget,
            });
        }
        self.counter.fetch_max(dot.counter, Ordering::SeqCst);
        let entry = pending.entry(key).or_insert_with(|| (Versioned::new(), 0));
        entry.0 = state.clone();
        entry.1 += 1;
        Ok((state, dot))
    }

    /// Stores a state minted by [`Replica::mint`] (a merge, durable) and forgets it once
    /// no other minted write of the key is in flight.
    pub async fn land(&self, key: Vec<u8>, state: Versioned) -> Result<Merged, ReplicaError> {
        let result = self.merge(key.clone(), state).await;
        let mut pending = self
            .minting
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = pending.get_mut(&key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                pending.remove(&key);
            }
        }
        result
    }

    /// Merges a state from another replica into this node's primary copy, durably. A
    /// state that adds nothing to one reaped here lately is ignored: it was read before
    /// the reap (a read repair's or an exchange's), and storing it would bring the reaped
    /// tombstones back, or the value they replaced.
    pub async fn merge(&self, key: Vec<u8>, incoming: Versioned) -> Result<Merged, ReplicaError> {
        self.merge_as(key, incoming, false).await
    }

    /// [`Replica::merge`] for a node with nothing else to do: when writes come alone, the
    /// fsync runs on the caller's thread (see [`crate::storage::Durable::wait_here`]).
    pub async fn merge_in_place(
        &self,
        key: Vec<u8>,
        incoming: Versioned,
    ) -> Result<Merged, ReplicaError> {
        self.merge_as(key, incoming, true).await
    }

    async fn merge_as(
        &self,
        key: Vec<u8>,
        incoming: Versioned,
        in_place: bool,
    ) -> Result<Merged, ReplicaError> {
        let data_key = layout::data_key(&key);
        let policy = self.policy;
        let reaps = self.reaps.clone();
        let (merged, durable) = self
            .storage
            .modify_applied(Space::Data, data_key.clone(), move |old| {
                let old = match old.map(layout::decode_state).transpose() {
                    Ok(s) => s,
                    Err(e) => return (Change::Keep.into(), Err(e.into())),
                };
                let mut state = old.clone().unwrap_or_default();
                let stale = reaps.lock().unwrap_or_else(|p| p.into_inner()).subsumes(
                    &key,
                    &incoming,
                    Instant::now(),
                );
                if stale {
                    return (
                        Change::Keep.into(),
                        Ok(Merged {
                            state,
                            changed: false,
                        }),
                    );
                }
                state.merge(&incoming);
                policy.apply(&mut state);
                if old.as_ref() == Some(&state) {
                    return (
                        Change::Keep.into(),
                        Ok(Merged {
                            state,
                            changed: false,
                        }),
                    );
                }
                let edit = Edit {
                    change: Change::Put(layout::encode_state(&state)),
                    also: tombstone_edit(&data_key, old.as_ref(), &state),
                };
                (
                    edit,
                    Ok(Merged {
                        state,
                        changed: true,
                    }),
                )
            })
            .await?;
        if in_place {
            durable.wait_here().await?;
        } else {
            durable.wait().await?;
        }
        merged
    }

    /// Deletes this node's copy of a key if its state digest is still `digest` and it
    /// holds tombstones only (the reaping rule was checked by the caller). Returns
    /// whether it was deleted. The reaped state is remembered (see [`Replica::merge`]).
    pub async fn reap_if(&self, key: &[u8], digest: u128) -> Result<bool, ReplicaError> {
        let data_key = layout::data_key(key);
        let (key, reaps) = (key.to_vec(), self.reaps.clone());
        self.storage
            .modify_with(Space::Data, data_key.clone(), move |old| {
                let state = match old.map(layout::decode_state).transpose() {
                    Ok(Some(s)) => s,
                    Ok(None) => return (Change::Keep.into(), Ok(false)),
                    Err(e) => return (Change::Keep.into(), Err(e.into())),
                };
                if state.digest() != digest || deleted_at_ms(&state).is_none() {
                    return (Change::Keep.into(), Ok(false));
                }
                reaps.lock().unwrap_or_else(|p| p.into_inner()).remember(
                    &key,
                    state,
                    Instant::now(),
                );
                let edit = Edit {
                    change: Change::Delete,
                    also: vec![(Space::Tombstones, data_key, Change::Delete)],
                };
                (edit, Ok(true))
            })
            .await?
    }

    /// Stores `incoming` as a hint for `target` (merged into the hint already held for
    /// that key and primary, keeping its creation time), durably. Refused when the node
    /// holds `max_hints` hints already and this would be a new one.
    pub async fn store_hint(
        &self,
        key: &[u8],
        target: &NodeId,
        incoming: Versioned,
        now_ms: u64,
    ) -> Result<(), ReplicaError> {
        let hint_key = layout::hint_key(key, target);
        let policy = self.policy;
        let limit = self.max_hints;
        let hints = self.hints.clone();
        let reserved = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let took = reserved.clone();
        let created = self
            .storage
            .modify(Space::Hints, hint_key, move |old| {
                let (created_ms, mut state) = match old.map(layout::decode_hint).transpose() {
                    Ok(Some(h)) => h,
                    Ok(None) => match hints.reserve(limit) {
                        Ok(()) => {
                            took.store(true, Ordering::Relaxed);
                            (now_ms, Versioned::new())
                        }
                        Err(held) => {
                            let full = ReplicaError::HintsFull { held, limit };
                            return (Change::Keep, Err(full));
                        }
                    },
                    Err(e) => return (Change::Keep, Err(e.into())),
                };
                state.merge(&incoming);
                policy.apply(&mut state);
                let is_new = old.is_none();
                (
                    Change::Put(layout::encode_hint(created_ms, &state)),
                    Ok(is_new),
                )
            })
            .await
            .map_err(ReplicaError::from)
            .and_then(|r| r);
        match created {
            Ok(true) => self.hints.count_reserved(target),
            Ok(false) => {}
            Err(_) if reserved.load(Ordering::Relaxed) => self.hints.release(),
            Err(_) => {}
        }
        created.map(|_| ())
    }

    /// The hints held for a key: (primary it is meant for, state, creation time).
    pub async fn hints_for(
        &self,
        key: &[u8],
    ) -> Result<Vec<(NodeId, Versioned, u64)>, ReplicaError> {
        let mut out = Vec::new();
        for (k, v) in self
            .storage
            .scan_prefix(Space::Hints, layout::hint_prefix(key), usize::MAX)
            .await?
        {
            let (hint_key_user, target) = layout::split_hint_key(&k)?;
            if hint_key_user != key {
                continue;
            }
            let (created, state) = layout::decode_hint(&v)?;
            out.push((target, state, created));
        }
        Ok(out)
    }

    /// Up to `limit` hints in storage order, after the hint key `after`.
    pub async fn hint_batch(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<Hint>, ReplicaError> {
        let mut out = Vec::new();
        for (k, v) in self.storage.scan(Space::Hints, after, limit).await? {
            let (key, target) = layout::split_hint_key(&k)?;
            let (created_ms, state) = layout::decode_hint(&v)?;
            out.push(Hint {
                hint_key: k,
                key,
                target,
                created_ms,
                state,
                raw: v,
            });
        }
        Ok(out)
    }

    /// Deletes a hint if it still holds exactly `raw` (nothing merged into it since it
    /// was read). Returns whether it was deleted.
    pub async fn remove_hint(&self, hint: &Hint) -> Result<bool, ReplicaError> {
        let expected = hint.raw.clone();
        let removed = self
            .storage
            .modify(Space::Hints, hint.hint_key.clone(), move |old| match old {
                Some(bytes) if bytes == expected.as_slice() => (Change::Delete, true),
                _ => (Change::Keep, false),
            })
            .await?;
        if removed {
            self.hints.remove(&hint.target);
        }
        Ok(removed)
    }

    /// Hints held, per primary they are meant for.
    pub fn hints_pending(&self) -> Vec<(NodeId, u64)> {
        let map = self
            .hints
            .per_target
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Number of hints held.
    pub fn hints_total(&self) -> u64 {
        self.hints.total.load(Ordering::Relaxed)
    }

    /// Up to `limit` entries of the tombstone index after `after`: (data key, deleted at).
    pub async fn tombstones(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, ReplicaError> {
        let mut out = Vec::new();
        for (k, v) in self.storage.scan(Space::Tombstones, after, limit).await? {
            out.push((k, layout::decode_time(&v)?));
        }
        Ok(out)
    }

    /// When the key's state became tombstones only, if it is.
    pub async fn tombstone_since(&self, key: &[u8]) -> Result<Option<u64>, ReplicaError> {
        match self
            .storage
            .get(Space::Tombstones, &layout::data_key(key))
            .await?
        {
            Some(v) => Ok(Some(layout::decode_time(&v)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` primary copies whose placement hash is in `[lo_hash, hi_hash]`, in
    /// storage order, after the user key `after` (which must be in that range):
    /// (user key, stored bytes).
    pub async fn data_in_range(
        &self,
        lo_hash: u64,
        hi_hash: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ReplicaError> {
        let (lo, hi) = layout::data_range(lo_hash, hi_hash);
        let after = after.map(layout::data_key);
        let rows = self
            .storage
            .scan_range(Space::Data, lo, hi, after, limit)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (layout::user_key(&k).to_vec(), v))
            .collect())
    }
}

/// Whether a hint stored at `created_ms` has outlived `ttl_ms` at `now_ms`: delivery
/// drops it, and reads no longer serve it.
pub fn hint_expired(created_ms: u64, now_ms: u64, ttl_ms: u64) -> bool {
    now_ms.saturating_sub(created_ms) >= ttl_ms
}

/// Refuses a dot no peer would accept (see `dynakv_common::version::validate_clock`), so
/// a write is never stored here that every other replica then refuses.
fn within_counter_range(dot: &Dot<Actor>) -> Result<(), ReplicaError> {
    if dot.counter > MAX_COUNTER {
        return Err(ReplicaError::CounterExhausted {
            actor: dot.actor.to_string(),
            counter: dot.counter,
            max: MAX_COUNTER,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
