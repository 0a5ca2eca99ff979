//! Merkle trees for anti-entropy (Dynamo §4.7): one hash tree per partition over the keys a
//! replica stores, and the descent that finds where two replicas' trees differ.
//!
//! Layout. A partition is a contiguous range of the 64-bit key-hash space: the keys whose
//! hash has the partition's number in its top log2(Q) bits (see [`crate::ring`]). The next
//! log2(leaves) bits of the hash pick the key's *segment*, the leaf of the tree it counts
//! in. Storage keeps keys sorted by hash, so a partition and a segment are contiguous
//! ranges it can scan ([`TreeShape::partition_range`], [`TreeShape::segment_range`]).
//!
//! Hashes.
//! - An *item* is one stored key: [`item_hash`] of the key and a digest of its state.
//! - A leaf is the XOR of the items of the keys in its segment. XOR makes a write an O(1)
//!   update (remove the old item, add the new one: the same operation), makes the result
//!   independent of the order writes arrive in, and makes an empty segment 0.
//! - An inner node is xxh3-128 of its children's hashes (16 little-endian bytes each),
//!   except that a node whose children are all 0 is 0. So an empty tree has root 0, and a
//!   partition a replica never stored compares equal to an empty one.
//!
//! Only the leaves are stored; inner nodes are computed from them when asked for. A tree
//! has at most [`MAX_LEAVES_PER_PARTITION`] leaves by default, so that costs microseconds,
//! and there is no cache to keep consistent with the leaves.
//!
//! Diff. [`Descent`] is a state machine that does no I/O (quinn-proto style): it says which
//! node hashes it wants from the other replica ([`Descent::want`]), the caller fetches them
//! and feeds them in next to its own ([`Descent::feed`]), and it descends only into the
//! children of nodes that differ. Once the leaves are compared,
//! [`Descent::differing_segments`] are the segments to exchange, and [`diff_items`] names
//! the keys to sync. The work ([`DescentStats`]) grows with the number of differing keys,
//! not with the number of keys stored.
//!
//! Invariants: a tree always holds exactly `shape.leaves()` leaf hashes; each key
//! contributes at most one item (keys are unique in a store, so no two items cancel);
//! bad indices, lengths or bytes give a [`MerkleError`], never a panic. The module is pure:
//! no I/O, no clock, no tasks.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

/// Leaves per partition times Q, before clamping: the whole ring gets about this many
/// segments whatever Q is, so the trees of a full replica take about 1 MiB of leaf hashes,
/// and a single lost write costs one segment (~1/65 536 of the key space) to resync.
pub const LEAF_BUDGET: u32 = 65_536;
/// Fewest leaves per partition [`TreeShape::for_partitions`] picks: with a very large Q a
/// partition still splits into segments, so a lost write does not resync a whole partition.
pub const MIN_LEAVES_PER_PARTITION: u32 = 16;
/// Most leaves per partition [`TreeShape::for_partitions`] picks: keeps a small-Q tree at
/// 16 KiB and three levels.
pub const MAX_LEAVES_PER_PARTITION: u32 = 1024;
/// Children per inner node: a 1024-leaf tree is three levels (1, 32, 1024), so a descent
/// takes at most three round trips, and each differing key costs at most 32 compared
/// hashes (512 bytes) per level below the root.
pub const DEFAULT_FANOUT: u32 = 32;
/// Largest leaf count a shape may have; bounds the memory a tree read from disk may claim.
pub const MAX_LEAVES: u32 = 1 << 20;
/// Largest fanout a shape may have; bounds the hashes a single request may ask for per node.
pub const MAX_FANOUT: u32 = 256;
/// Version of the [`MerkleTree::to_bytes`] format; bump it when the hashing changes so old
/// trees are rebuilt rather than compared.
const FORMAT_VERSION: u8 = 1;

/// Why a tree operation was refused. Each message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// Leaves or fanout out of range or not a power of two.
    #[error("invalid Merkle tree shape: {reason}")]
    InvalidShape { reason: String },
    /// A partition count that is zero or not a power of two.
    #[error("invalid partition count {partitions}: it must be a power of two (1, 2, 4, ...), as the ring's Q is")]
    InvalidPartitions { partitions: u32 },
    /// A partition number not below Q.
    #[error("partition {partition} does not exist: the ring has {partitions} partitions, numbered from 0")]
    PartitionOutOfRange { partition: u32, partitions: u32 },
    /// A segment (leaf) number not below the leaf count.
    #[error("segment {segment} does not exist: the tree has {leaves} segments, numbered from 0")]
    SegmentOutOfRange { segment: u32, leaves: u32 },
    /// A level number not below the level count.
    #[error("level {level} does not exist: the tree has {levels} levels, the root is level 0")]
    LevelOutOfRange { level: u32, levels: u32 },
    /// A node index not below its level's width.
    #[error(
        "node {index} does not exist on level {level}, which has {width} nodes numbered from 0"
    )]
    NodeOutOfRange { level: u32, index: u32, width: u32 },
    /// More nodes asked of one level than it has.
    #[error("{requested} nodes asked of level {level}, which has only {width}; ask for each node at most once")]
    TooManyNodes {
        level: u32,
        requested: usize,
        width: u32,
    },
    /// Children were asked of a leaf.
    #[error("level {level} is the leaf level; leaves have no children")]
    LeafHasNoChildren { level: u32 },
    /// A leaf vector whose length is not the shape's leaf count.
    #[error(
        "got {got} leaf hashes for a tree of {expected} leaves; pass exactly one hash per segment"
    )]
    LeafCountMismatch { expected: usize, got: usize },
    /// A side answered with a different number of hashes than nodes were requested.
    #[error("the {side} answer has {got} hashes for the {expected} nodes requested; answer with one hash per requested node, in the order requested")]
    HashCountMismatch {
        side: &'static str,
        expected: usize,
        got: usize,
    },
    /// [`Descent::feed`] after the descent finished.
    #[error(
        "this descent has already finished; read its differing segments or start a new Descent"
    )]
    DescentFinished,
    /// A stored tree was built with another shape than the one expected.
    #[error("the stored Merkle tree has {found}, but {expected} was expected (Q changed?); rebuild the tree from the keys")]
    ShapeMismatch {
        expected: TreeShape,
        found: TreeShape,
    },
    /// Stored bytes that do not decode as a tree.
    #[error("the stored Merkle tree is unreadable: {reason}; rebuild it from the keys")]
    Corrupt { reason: String },
}

/// The 128-bit hash of one stored key: xxh3-128 of the key's length (8 bytes,
/// little-endian), the key, and `state_digest` (16 bytes, little-endian). The length
/// prefix keeps (key, digest) pairs from colliding by shifting bytes between the two.
pub fn item_hash(key: &[u8], state_digest: u128) -> u128 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(&state_digest.to_le_bytes());
    hasher.digest128()
}

/// log2 of a valid partition count.
fn partition_bits(partitions: u32) -> Result<u32, MerkleError> {
    if partitions.is_power_of_two() {
        Ok(partitions.trailing_zeros())
    } else {
        Err(MerkleError::InvalidPartitions { partitions })
    }
}

/// An inclusive range of 64-bit key hashes, `lo..=hi`; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRange {
    /// Smallest hash in the range.
    pub lo: u64,
    /// Largest hash in the range (inclusive, so the last range can end at `u64::MAX`).
    pub hi: u64,
}

impl HashRange {
    /// Whether `hash` falls in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.lo <= hash && hash <= self.hi
    }
}

/// How a partition's tree is cut: `leaves` segments, and inner nodes of `fanout` children.
///
/// Both are powers of two, so every level is a power of two wide. When log2(leaves) is not
/// a multiple of log2(fanout) the root has fewer than `fanout` children; every other inner
/// node has exactly `fanout`. Two replicas can only compare trees of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeShape {
    leaves: u32,
    fanout: u32,
}

impl fmt::Display for TreeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} leaves with fanout {}", self.leaves, self.fanout)
    }
}

impl TreeShape {
    /// A shape of `leaves` segments (a power of two in 2..=[`MAX_LEAVES`]) and inner nodes
    /// of `fanout` children (a power of two in 2..=min(leaves, [`MAX_FANOUT`])).
    pub fn new(leaves: u32, fanout: u32) -> Result<TreeShape, MerkleError> {
        if !leaves.is_power_of_two() || !(2..=MAX_LEAVES).contains(&leaves) {
            return Err(MerkleError::InvalidShape {
                reason: format!(
                    "the leaf count must be a power of two from 2 to {MAX_LEAVES}, got {leaves}"
                ),
            });
        }
        let max_fanout = leaves.min(MAX_FANOUT);
        if !fanout.is_power_of_two() || !(2..=max_fanout).contains(&fanout) {
            return Err(MerkleError::InvalidShape {
                reason: format!(
                    "the fanout must be a power of two from 2 to {max_fanout}, got {fanout}"
                ),
            });
        }
        Ok(TreeShape { leaves, fanout })
    }

    /// The default shape for a ring of `partitions` (Q) partitions:
    /// clamp([`LEAF_BUDGET`] / Q, [`MIN_LEAVES_PER_PARTITION`], [`MAX_LEAVES_PER_PARTITION`])
    /// leaves and a fanout of [`DEFAULT_FANOUT`] (fewer if there are fewer leaves).
    /// Every replica with the same Q picks the same shape.
    pub fn for_partitions(partitions: u32) -> Result<TreeShape, MerkleError> {
        partition_bits(partitions)?;
        let leaves =
            (LEAF_BUDGET / partitions).clamp(MIN_LEAVES_PER_PARTITION, MAX_LEAVES_PER_PARTITION);
        TreeShape::new(leaves, DEFAULT_FANOUT.min(leaves))
    }

    /// Number of leaves (segments).
    pub fn leaves(&self) -> u32 {
        self.leaves
    }

    /// Children per inner node (the root may have fewer).
    pub fn fanout(&self) -> u32 {
        self.fanout
    }

    /// Number of levels, root (level 0) and leaves (level `levels() - 1`) included.
    pub fn levels(&self) -> u32 {
        let leaf_bits = self.leaves.trailing_zeros();
        let fanout_bits = self.fanout.trailing_zeros();
        1 + leaf_bits.div_ceil(fanout_bits)
    }

    /// The leaf level, `levels() - 1`.
    pub fn leaf_level(&self) -> u32 {
        self.levels() - 1
    }

    /// Width of a level known to exist. Each level below the root is `fanout` times the
    /// width of the one above it, counting up from the leaves; the root absorbs the rest.
    fn width_unchecked(&self, level: u32) -> u32 {
        let leaf_bits = self.leaves.trailing_zeros();
        let fanout_bits = self.fanout.trailing_zeros();
        let below = self.leaf_level() - level;
        1 << leaf_bits.saturating_sub(fanout_bits * below)
    }

    /// Number of nodes on `level`: 1 for the root, `leaves()` for the leaf level.
    pub fn width(&self, level: u32) -> Result<u32, MerkleError> {
        self.check_level(level)?;
        Ok(self.width_unchecked(level))
    }

    /// The indices, on `level + 1`, of the children of node `index` on `level`.
    pub fn children(&self, level: u32, index: u32) -> Result<Range<u32>, MerkleError> {
        self.check_node(level, index)?;
        if level == self.leaf_level() {
            return Err(MerkleError::LeafHasNoChildren { level });
        }
        Ok(self.children_unchecked(level, index))
    }

    fn children_unchecked(&self, level: u32, index: u32) -> Range<u32> {
        let per_node = self.width_unchecked(level + 1) / self.width_unchecked(level);
        index * per_node..(index + 1) * per_node
    }

    fn check_level(&self, level: u32) -> Result<(), MerkleError> {
        let levels = self.levels();
        if level < levels {
            Ok(())
        } else {
            Err(MerkleError::LevelOutOfRange { level, levels })
        }
    }

    fn check_node(&self, level: u32, index: u32) -> Result<(), MerkleError> {
        let width = self.width(level)?;
        if index < width {
            Ok(())
        } else {
            Err(MerkleError::NodeOutOfRange {
                level,
                index,
                width,
            })
        }
    }

    fn check_segment(&self, segment: u32) -> Result<(), MerkleError> {
        if segment < self.leaves {
            Ok(())
        } else {
            Err(MerkleError::SegmentOutOfRange {
                segment,
                leaves: self.leaves,
            })
        }
    }

    /// The segment of a key hash: the log2(leaves) bits that follow the partition's
    /// log2(`partitions`) bits. Always below `leaves()`.
    ///
    /// `partitions` should be the ring's Q, a power of two. It is not checked here, on the
    /// write path: any other value is read as the largest power of two below it (0 as 1),
    /// which keeps the answer in range but places keys unlike the ring does.
    pub fn segment_of_hash(&self, key_hash: u64, partitions: u32) -> u32 {
        let partition_bits = partitions.checked_ilog2().unwrap_or(0);
        let leaf_bits = self.leaves.trailing_zeros();
        // partition_bits <= 31 and 1 <= leaf_bits <= 20, so neither shift reaches 64.
        ((key_hash << partition_bits) >> (64 - leaf_bits)) as u32
    }

    /// The key hashes of partition `partition` of a ring of `partitions` partitions.
    /// The ranges of partitions 0..Q tile the whole u64 space in order.
    pub fn partition_range(partitions: u32, partition: u32) -> Result<HashRange, MerkleError> {
        let bits = partition_bits(partitions)?;
        if partition >= partitions {
            return Err(MerkleError::PartitionOutOfRange {
                partition,
                partitions,
            });
        }
        // u128 arithmetic: with Q = 1 the span is 2^64, which a u64 cannot hold.
        let span = 1u128 << (64 - bits);
        let lo = u128::from(partition) * span;
        Ok(HashRange {
            lo: lo as u64,
            hi: (lo + span - 1) as u64,
        })
    }

    /// The key hashes of segment `segment` of partition `partition`. The ranges of
    /// segments 0..leaves tile the partition's range in order.
    pub fn segment_range(
        &self,
        partitions: u32,
        partition: u32,
        segment: u32,
    ) -> Result<HashRange, MerkleError> {
        let whole = TreeShape::partition_range(partitions, partition)?;
        self.check_segment(segment)?;
        // The partition span is at least 2^33 and leaves at most 2^20, so this is exact.
        let span = (u128::from(whole.hi - whole.lo) + 1) / u128::from(self.leaves);
        let lo = u128::from(whole.lo) + u128::from(segment) * span;
        Ok(HashRange {
            lo: lo as u64,
            hi: (lo + span - 1) as u64,
        })
    }
}

/// Hash of an inner node from its children's hashes: 0 when they are all 0, so empty
/// subtrees hash the same whoever computes them.
fn combine(children: &[u128]) -> u128 {
    if children.iter().all(|&h| h == 0) {
        return 0;
    }
    let mut hasher = Xxh3Default::new();
    for child in children {
        hasher.update(&child.to_le_bytes());
    }
    hasher.digest128()
}

/// The hash tree of one partition on one replica.
///
/// Cloning is O(1): the leaves are shared until one of the copies is updated, so the
/// anti-entropy task can compare a snapshot while writes keep updating the live tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    shape: TreeShape,
    /// Leaf hashes, one per segment; always `shape.leaves()` long.
    leaves: Arc<Vec<u128>>,
}

/// The persisted form of a tree (postcard).
#[derive(Serialize, Deserialize)]
struct StoredTree<L> {
    format: u8,
    leaves: u32,
    fanout: u32,
    hashes: L,
}

impl MerkleTree {
    /// An empty tree (every leaf 0, root 0).
    pub fn new(shape: TreeShape) -> MerkleTree {
        MerkleTree {
            shape,
            leaves: Arc::new(vec![0; shape.leaves as usize]),
        }
    }

    /// A tree with the given leaf hashes; there must be exactly `shape.leaves()` of them.
    pub fn from_leaves(shape: TreeShape, leaves: Vec<u128>) -> Result<MerkleTree, MerkleError> {
        if leaves.len() != shape.leaves as usize {
            return Err(MerkleError::LeafCountMismatch {
                expected: shape.leaves as usize,
                got: leaves.len(),
            });
        }
        Ok(MerkleTree {
            shape,
            leaves: Arc::new(leaves),
        })
    }

    /// The shape this tree was built with.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Records a change of one key in `segment`: its old item leaves (`None` if the key
    /// was absent) and its new item enters (`None` if the key is gone). Updates commute,
    /// so concurrent writes may be applied in any order.
    pub fn update(
        &mut self,
        segment: u32,
        old_item: Option<u128>,
        new_item: Option<u128>,
    ) -> Result<(), MerkleError> {
        self.shape.check_segment(segment)?;
        let delta = old_item.unwrap_or(0) ^ new_item.unwrap_or(0);
        if delta != 0 {
            Arc::make_mut(&mut self.leaves)[segment as usize] ^= delta;
        }
        Ok(())
    }

    /// The hash of one segment: the XOR of its items, 0 when it is empty.
    pub fn leaf(&self, segment: u32) -> Result<u128, MerkleError> {
        self.shape.check_segment(segment)?;
        Ok(self.leaves[segment as usize])
    }

    /// All leaf hashes, in segment order.
    pub fn leaves(&self) -> &[u128] {
        &self.leaves
    }

    /// Whether every segment is empty (equivalently, the root is 0).
    pub fn is_empty(&self) -> bool {
        self.leaves.iter().all(|&h| h == 0)
    }

    /// The root hash: 0 for an empty tree, equal on two replicas holding the same items.
    pub fn root(&self) -> u128 {
        self.node_unchecked(0, 0)
    }

    /// Every hash on `level`, computed from the leaves.
    pub fn level(&self, level: u32) -> Result<Vec<u128>, MerkleError> {
        self.shape.check_level(level)?;
        let mut hashes = self.leaves.to_vec();
        for above in (level..self.shape.leaf_level()).rev() {
            let per_node = self.shape.children_unchecked(above, 0).len();
            hashes = hashes.chunks(per_node).map(combine).collect();
        }
        Ok(hashes)
    }

    /// The hashes of the nodes `indices` on `level`, in the order asked: what a replica
    /// answers when the other side's [`Descent::want`] names them.
    ///
    /// At most `width(level)` indices are answered, so one request (possibly from a
    /// misbehaving peer) costs at most one pass over the leaves.
    pub fn hashes(&self, level: u32, indices: &[u32]) -> Result<Vec<u128>, MerkleError> {
        let width = self.shape.width(level)?;
        if indices.len() > width as usize {
            return Err(MerkleError::TooManyNodes {
                level,
                requested: indices.len(),
                width,
            });
        }
        for &index in indices {
            self.shape.check_node(level, index)?;
        }
        Ok(indices
            .iter()
            .map(|&index| self.node_unchecked(level, index))
            .collect())
    }

    /// The hash of a node known to exist, computed from the leaves under it.
    fn node_unchecked(&self, level: u32, index: u32) -> u128 {
        if level == self.shape.leaf_level() {
            return self.leaves[index as usize];
        }
        let children: Vec<u128> = self
            .shape
            .children_unchecked(level, index)
            .map(|child| self.node_unchecked(level + 1, child))
            .collect();
        combine(&children)
    }

    /// The tree as bytes to persist (postcard: format version, shape, leaves).
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredTree {
            format: FORMAT_VERSION,
            leaves: self.shape.leaves,
            fanout: self.shape.fanout,
            hashes: self.leaves.as_slice(),
        };
        postcard::to_allocvec(&stored)
            .expect("postcard encodes integers and a sequence into a Vec without failing")
    }

    /// Reads a tree written by [`MerkleTree::to_bytes`], refusing bytes that do not decode,
    /// trailing bytes, another format version, or a shape other than `expected`.
    pub fn from_bytes(bytes: &[u8], expected: TreeShape) -> Result<MerkleTree, MerkleError> {
        let (stored, rest): (StoredTree<Vec<u128>>, _) =
            postcard::take_from_bytes(bytes).map_err(|e| MerkleError::Corrupt {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(MerkleError::Corrupt {
                reason: format!("{} unexpected bytes after the tree", rest.len()),
            });
        }
        if stored.format != FORMAT_VERSION {
            return Err(MerkleError::Corrupt {
                reason: format!(
                    "format version {} where {FORMAT_VERSION} was expected",
                    stored.format
                ),
            });
        }
        let found =
            TreeShape::new(stored.leaves, stored.fanout).map_err(|e| MerkleError::Corrupt {
                reason: e.to_string(),
            })?;
        if found != expected {
            return Err(MerkleError::ShapeMismatch { expected, found });
        }
        MerkleTree::from_leaves(found, stored.hashes).map_err(|e| MerkleError::Corrupt {
            reason: e.to_string(),
        })
    }
}

/// How much work a [`Descent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescentStats {
    /// Rounds fed in so far (each one request/answer exchange with the other replica).
    pub rounds: u32,
    /// Node hashes compared so far, over all levels.
    pub nodes_compared: u64,
    /// Of those, how many differed.
    pub nodes_differing: u64,
}

/// The walk down two replicas' trees of one partition that finds the segments where they
/// differ (Dynamo §4.7), one level per round.
///
/// The caller loops: [`Descent::want`] names nodes, the caller gets their hashes from its
/// own tree and from the other replica, [`Descent::feed`] compares them. Both trees must
/// have the descent's shape. The local side should be a snapshot (a cheap
/// [`MerkleTree`] clone) taken at the start; if the remote tree changes mid-walk the result
/// may miss or add a segment, which the next exchange corrects.
#[derive(Debug, Clone)]
pub struct Descent {
    shape: TreeShape,
    /// Level of the nodes in `pending`.
    level: u32,
    /// Nodes on `level` to compare next, ascending; empty once finished.
    pending: Vec<u32>,
    /// Leaves whose hashes differed, ascending; filled when the leaf level is compared.
    differing: Vec<u32>,
    /// Set once the leaves are compared or no node differs; `feed` is refused after.
    finished: bool,
    /// Work done so far, for the caller to report.
    stats: DescentStats,
}

impl Descent {
    /// A descent that starts by comparing the roots.
    pub fn new(shape: TreeShape) -> Descent {
        Descent {
            shape,
            level: 0,
            pending: vec![0],
            differing: Vec::new(),
            finished: false,
            stats: DescentStats::default(),
        }
    }

    /// The level and (ascending) indices of the nodes whose hashes to fetch next from both
    /// sides, or `None` once finished. At most `leaves` indices.
    pub fn want(&self) -> Option<(u32, Vec<u32>)> {
        if self.finished {
            None
        } else {
            Some((self.level, self.pending.clone()))
        }
    }

    /// Compares the hashes of the nodes [`Descent::want`] named, local and remote, each in
    /// the order requested, and moves on to the children of those that differ. After the
    /// leaf level, or when nothing differs, the descent is finished.
    pub fn feed(&mut self, local: &[u128], remote: &[u128]) -> Result<(), MerkleError> {
        if self.finished {
            return Err(MerkleError::DescentFinished);
        }
        for (side, hashes) in [("local", local), ("remote", remote)] {
            if hashes.len() != self.pending.len() {
                return Err(MerkleError::HashCountMismatch {
                    side,
                    expected: self.pending.len(),
                    got: hashes.len(),
                });
            }
        }
        let differing: Vec<u32> = self
            .pending
            .iter()
            .zip(local.iter().zip(remote))
            .filter(|(_, (l, r))| l != r)
            .map(|(&index, _)| index)
            .collect();
        self.stats.rounds += 1;
        self.stats.nodes_compared += self.pending.len() as u64;
        self.stats.nodes_differing += differing.len() as u64;
        if self.level == self.shape.leaf_level() {
            self.differing = differing;
            self.pending.clear();
            self.finished = true;
            return Ok(());
        }
        // Children ranges of ascending nodes are ascending, so `pending` stays sorted.
        self.pending = differing
            .iter()
            .flat_map(|&index| self.shape.children_unchecked(self.level, index))
            .collect();
        self.level += 1;
        self.finished = self.pending.is_empty();
        Ok(())
    }

    /// Whether the descent is over ([`Descent::want`] returns `None`).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The segments whose leaf hashes differ, ascending. Complete once finished; empty when
    /// the trees are equal.
    pub fn differing_segments(&self) -> &[u32] {
        &self.differing
    }

    /// The work done so far.
    pub fn stats(&self) -> DescentStats {
        self.stats
    }
}

/// The keys to sync, given the (key, item hash) pairs of the differing segments on both
/// sides (in any order): every key whose item differs or that only one side has, sorted
/// and without duplicates. Which side is "local" does not matter.
pub fn diff_items(local: &[(Vec<u8>, u128)], remote: &[(Vec<u8>, u128)]) -> Vec<Vec<u8>> {
    let local: BTreeSet<(&[u8], u128)> = local.iter().map(|(k, h)| (k.as_slice(), *h)).collect();
    let remote: BTreeSet<(&[u8], u128)> = remote.iter().map(|(k, h)| (k.as_slice(), *h)).collect();
    // The symmetric difference iterates in (key, item) order, so equal keys are adjacent.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for (key, _) in local.symmetric_difference(&remote) {
        if keys.last().map(Vec::as_slice) != Some(*key) {
            keys.push(key.to_vec());
        }
    }
    keys
}

#[cfg(test)]
mod tests;
