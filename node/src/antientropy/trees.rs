//! The hash trees of this node's primary copies, one per partition, kept equal to what
//! is stored: built from storage at start-up (so a crash never leaves a stale tree), then
//! updated on every committed change of the data space — client writes, merges from
//! peers, read repair, hint deliveries, anti-entropy, reaping — through the storage's
//! change observer, under the changed key's lock.
//!
//! A key's *item* is `item_hash(user key, xxh3-128 of its stored bytes)`; replicas that
//! hold the same state store the same bytes (the encoding is canonical: clocks are
//! ordered maps, siblings are sorted), so equal items mean equal states.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dynakv_common::merkle::{item_hash, MerkleTree, TreeShape};
use dynakv_common::ring::PartitionId;

use crate::replica::layout;
use crate::storage::{ChangeObserver, Space, Storage, StorageError};

/// The item of one stored key.
pub fn item_of(user_key: &[u8], stored: &[u8]) -> u128 {
    item_hash(user_key, xxhash_rust::xxh3::xxh3_128(stored))
}

/// One hash tree per partition.
pub struct Trees {
    shape: TreeShape,
    partitions: u32,
    trees: Vec<Mutex<MerkleTree>>,
    ready: AtomicBool,
}

impl Trees {
    /// Empty trees for a ring of `partitions` partitions.
    pub fn new(partitions: u32) -> Result<Trees, String> {
        let shape = TreeShape::for_partitions(partitions).map_err(|e| e.to_string())?;
        Ok(Trees {
            shape,
            partitions,
            trees: (0..partitions)
                .map(|_| Mutex::new(MerkleTree::new(shape)))
                .collect(),
            ready: AtomicBool::new(false),
        })
    }

    /// The tree shape (the same on every node with the same Q).
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Whether the trees have been built from storage.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn tree(&self, p: PartitionId) -> Option<std::sync::MutexGuard<'_, MerkleTree>> {
        self.trees
            .get(p as usize)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies one change of a data key.
    fn apply(&self, data_key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let Some(hash) = layout::hash_of(data_key) else {
            return;
        };
        let key = layout::user_key(data_key);
        let p = partition_of_hash(hash, self.partitions);
        let segment = self.shape.segment_of_hash(hash, self.partitions);
        if let Some(mut tree) = self.tree(p) {
            // The segment comes from the tree's own shape, so it is always in range.
            let _ = tree.update(
                segment,
                old.map(|v| item_of(key, v)),
                new.map(|v| item_of(key, v)),
            );
        }
    }

    /// Builds every tree from what `storage` holds, then starts following its changes.
    /// Call once at start-up, before the node takes writes.
    pub async fn build(self: &Arc<Trees>, storage: &Storage) -> Result<u64, StorageError> {
        let trees = self.clone();
        let n = storage
            .for_each(Space::Data, move |k, v| trees.apply(k, None, Some(v)))
            .await?;
        storage.set_observer(self.clone());
        self.ready.store(true, Ordering::SeqCst);
        Ok(n)
    }

    /// Hashes of nodes of partition `p`'s tree at `level`.
    pub fn hashes(&self, p: PartitionId, level: u32, indices: &[u32]) -> Result<Vec<u128>, String> {
        let tree = self
            .tree(p)
            .ok_or_else(|| format!("partition {p} does not exist"))?;
        tree.hashes(level, indices).map_err(|e| e.to_string())
    }

    /// A snapshot of partition `p`'s tree (cheap: the leaves are shared until the next
    /// write), so one exchange compares one consistent tree.
    pub fn snapshot(&self, p: PartitionId) -> Result<MerkleTree, String> {
        self.tree(p)
            .map(|t| t.clone())
            .ok_or_else(|| format!("partition {p} does not exist"))
    }
}

impl ChangeObserver for Trees {
    fn changed(&self, space: Space, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        if space == Space::Data {
            self.apply(key, old, new);
        }
    }
}

/// The partition of a placement hash on a ring of `partitions` partitions.
pub fn partition_of_hash(hash: u64, partitions: u32) -> PartitionId {
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as PartitionId
    }
}
