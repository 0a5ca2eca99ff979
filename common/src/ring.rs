//! Placement: a ring of Q fixed partitions over a 64-bit hash of the key (Riak style).
//!
//! A key hashes (xxh3-64, stable across platforms and versions) to a partition: the
//! top `log2(Q)` bits of the hash. Each partition is claimed by one member. A key's
//! *preference list* is the owner of its partition followed by the owners of the next
//! partitions clockwise, skipping nodes already listed, until N *distinct* nodes are
//! found; the nodes after those, in the same walk, are its *fallbacks* (Dynamo §4.3, §4.6).
//!
//! Invariants kept by [`Ring`]:
//! - every partition has exactly one owner, and every member owns at least one
//!   partition when there are no more members than partitions;
//! - ownership is balanced: members' partition counts differ by at most one, after
//!   joins (a joiner takes from the most-loaded) and leaves (the least-loaded inherit);
//! - [`Ring::with_member`] moves only the partitions the new member takes, and
//!   [`Ring::without_member`] moves only the partitions the leaving member held.
//!
//! The ring is a plain value: membership changes produce a new ring.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Default number of partitions (Q). A power of two.
pub const DEFAULT_PARTITIONS: u32 = 64;
/// Default replication factor (N).
pub const DEFAULT_REPLICAS: usize = 3;

/// A node's name in the cluster. Also its TLS server name, so it must be a DNS label.
///
/// Shared, not owned: every request's [`crate::replication::Plan`] names its replicas,
/// so a clone is a reference count, not an allocation and a copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// The longest node id, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Validates and wraps a node id: 1-63 of `a-z 0-9 -`, not starting with `-`.
    pub fn new(id: impl Into<String>) -> Result<NodeId, Error> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && !id.starts_with('-')
            && !id.ends_with('-')
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(NodeId(id.into()))
        } else {
            Err(Error::InvalidNodeId { id })
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

/// Index of a partition on the ring, `0..Q`.
pub type PartitionId = u32;

/// The 64-bit placement hash of a key (xxh3-64, seed 0).
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Who owns which partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// Owner of each partition; `owners.len()` is Q, a power of two.
    owners: Vec<NodeId>,
}

impl Ring {
    /// Builds the ring for a set of members: the first member (in id order) claims every
    /// partition, then each following member joins with [`Ring::with_member`]. The result
    /// depends only on Q and the set of members, so every node computes the same ring.
    pub fn new(partitions: u32, members: &[NodeId]) -> Result<Ring, Error> {
        if partitions == 0 || !partitions.is_power_of_two() {
            return Err(Error::InvalidRing {
                reason: format!("the partition count must be a power of two, got {partitions}"),
            });
        }
        let members: BTreeSet<&NodeId> = members.iter().collect();
        let mut iter = members.into_iter();
        let Some(first) = iter.next() else {
            return Err(Error::InvalidRing {
                reason: "a ring needs at least one member".into(),
            });
        };
        let mut ring = Ring {
            owners: vec![first.clone(); partitions as usize],
        };
        for member in iter {
            ring = ring.with_member(member);
        }
        Ok(ring)
    }

    /// A 64-bit fingerprint of the ring (Q and every partition's owner): equal on nodes
    /// that agree on placement.
    pub fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::new();
        for owner in &self.owners {
            bytes.extend_from_slice(owner.as_str().as_bytes());
            bytes.push(0);
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// Number of partitions (Q).
    pub fn partition_count(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The distinct members, in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.owners.iter().cloned().collect()
    }

    /// How many partitions each member owns.
    pub fn claims(&self) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for owner in &self.owners {
            *counts.entry(owner.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The owner of partition `p`.
    pub fn owner(&self, p: PartitionId) -> &NodeId {
        &self.owners[p as usize % self.owners.len()]
    }

    /// The partition a key hash falls in: its top log2(Q) bits.
    pub fn partition_of_hash(&self, hash: u64) -> PartitionId {
        let bits = self.owners.len().trailing_zeros();
        if bits == 0 {
            0
        } else {
            (hash >> (64 - bits)) as PartitionId
        }
    }

    /// The partition a key falls in.
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.partition_of_hash(key_hash(key))
    }

    /// Every distinct member in ring order starting at partition `p`: the first N are the
    /// preference list, the rest are fallbacks in the order they are tried.
    pub fn walk(&self, p: PartitionId) -> Vec<NodeId> {
        let q = self.owners.len();
        let mut seen = Vec::new();
        for i in 0..q {
            let owner = &self.owners[(p as usize + i) % q];
            if !seen.contains(owner) {
                seen.push(owner.clone());
            }
        }
        seen
    }

    /// The N distinct nodes that hold partition `p` (fewer if the cluster is smaller).
    pub fn preference_list(&self, p: PartitionId, n: usize) -> Vec<NodeId> {
        let mut walk = self.walk(p);
        walk.truncate(n);
        walk
    }

    /// The preference list of a key.
    pub fn preference_list_for_key(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.preference_list(self.partition_of(key), n)
    }

    /// The nodes after the preference list of `p`, in the order a sloppy quorum tries them.
    pub fn fallbacks(&self, p: PartitionId, n: usize) -> Vec<NodeId> {
        self.walk(p).into_iter().skip(n).collect()
    }

    /// The ring after `node` joins: it claims ⌊Q/m⌋ partitions (m = members after the
    /// join), spread around the ring, taken from the most-loaded members. No other
    /// partition changes owner. Joining twice is a no-op.
    pub fn with_member(&self, node: &NodeId) -> Ring {
        let mut owners = self.owners.clone();
        if owners.contains(node) {
            return self.clone();
        }
        let q = owners.len();
        let m = self.members().len() + 1;
        let target = q / m;
        let mut counts = self.claims();
        let floor = q / m;
        let ceil = q.div_ceil(m);
        let mut taken = 0;
        // First take from members above the new ceiling, then from those above the floor,
        // so no remaining member ends below ⌊Q/m⌋.
        for threshold in [ceil, floor] {
            for i in 0..target {
                if taken == target {
                    break;
                }
                let ideal = i * q / target.max(1);
                let pick = (0..q).map(|step| (ideal + step) % q).find(|&p| {
                    let owner = &owners[p];
                    owner != node
                        && counts.get(owner).copied().unwrap_or(0) > threshold
                        && owners[(p + q - 1) % q] != *node
                        && owners[(p + 1) % q] != *node
                });
                // Relax the spacing preference before giving up on this slot.
                let pick = pick.or_else(|| {
                    (0..q).map(|step| (ideal + step) % q).find(|&p| {
                        owners[p] != *node
                            && counts.get(&owners[p]).copied().unwrap_or(0) > threshold
                    })
                });
                if let Some(p) = pick {
                    if let Some(c) = counts.get_mut(&owners[p]) {
                        *c -= 1;
                    }
                    owners[p] = node.clone();
                    taken += 1;
                }
            }
        }
        Ring { owners }
    }

    /// The ring after `node` leaves: each of its partitions goes to the member with the
    /// fewest partitions (ties to the smallest id). No other partition changes owner.
    /// Removing the last member or a non-member returns the ring unchanged.
    pub fn without_member(&self, node: &NodeId) -> Ring {
        let mut counts = self.claims();
        if counts.remove(node).is_none() || counts.is_empty() {
            return self.clone();
        }
        let mut owners = self.owners.clone();
        for owner in owners.iter_mut() {
            if owner == node {
                let (least, _) = counts
                    .iter()
                    .min_by_key(|(id, c)| (**c, (*id).clone()))
                    .map(|(id, c)| (id.clone(), *c))
                    .expect("counts is not empty");
                *counts.entry(least.clone()).or_insert(0) += 1;
                *owner = least;
            }
        }
        Ring { owners }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn node_ids_must_be_dns_labels() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("node-2").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("N1").is_err());
        assert!(NodeId::new("-a").is_err());
        assert!(NodeId::new("a.b").is_err());
    }

    #[test]
    fn ring_rejects_bad_parameters() {
        assert!(Ring::new(63, &ids(3)).is_err());
        assert!(Ring::new(0, &ids(3)).is_err());
        assert!(Ring::new(64, &[]).is_err());
    }

    #[test]
    fn three_nodes_share_64_partitions_evenly() {
        let ring = Ring::new(64, &ids(3)).unwrap();
        let claims = ring.claims();
        assert_eq!(claims.len(), 3);
        for c in claims.values() {
            assert!((21..=22).contains(c), "{claims:?}");
        }
    }

    #[test]
    fn partition_uses_top_bits_of_hash() {
        let ring = Ring::new(64, &ids(3)).unwrap();
        assert_eq!(ring.partition_of_hash(0), 0);
        assert_eq!(ring.partition_of_hash(u64::MAX), 63);
        assert_eq!(ring.partition_of_hash(1 << 58), 1);
        let single = Ring::new(1, &ids(3)).unwrap();
        assert_eq!(single.partition_of_hash(u64::MAX), 0);
    }

    #[test]
    fn fingerprints_differ_when_placement_does() {
        let a = Ring::new(64, &ids(3)).unwrap();
        assert_eq!(
            a.fingerprint(),
            Ring::new(64, &ids(3)).unwrap().fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Ring::new(32, &ids(3)).unwrap().fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Ring::new(64, &ids(4)).unwrap().fingerprint()
        );
    }

    #[test]
    fn small_clusters_list_every_node_once() {
        let ring = Ring::new(64, &ids(2)).unwrap();
        let list = ring.preference_list_for_key(b"k", 3);
        assert_eq!(list.len(), 2);
        assert_ne!(list[0], list[1]);
    }

    proptest! {
        #[test]
        fn preference_lists_have_n_distinct_nodes(members in 1usize..12, qbits in 0u32..9, n in 1usize..6, key in any::<Vec<u8>>()) {
            let ring = Ring::new(1 << qbits, &ids(members)).unwrap();
            let list = ring.preference_list_for_key(&key, n);
            let distinct: BTreeSet<_> = list.iter().collect();
            prop_assert_eq!(distinct.len(), list.len());
            prop_assert_eq!(list.len(), n.min(ring.members().len()));
            let p = ring.partition_of(&key);
            prop_assert_eq!(&list[0], ring.owner(p));
            // Fallbacks are the other members, none of them in the preference list.
            let fallbacks = ring.fallbacks(p, n);
            prop_assert_eq!(fallbacks.len() + list.len(), ring.members().len());
            prop_assert!(fallbacks.iter().all(|f| !list.contains(f)));
        }

        #[test]
        fn joins_move_only_partitions_the_new_member_takes(members in 1usize..10, qbits in 4u32..9) {
            let q = 1u32 << qbits;
            let ring = Ring::new(q, &ids(members)).unwrap();
            let newcomer = NodeId::new("zz-new").unwrap();
            let after = ring.with_member(&newcomer);
            for p in 0..q {
                if ring.owner(p) != after.owner(p) {
                    prop_assert_eq!(after.owner(p), &newcomer);
                }
            }
            let claims = after.claims();
            let (min, max) = (claims.values().min().unwrap(), claims.values().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced: {:?}", claims);
            prop_assert_eq!(claims.get(&newcomer).copied(), Some(q as usize / (members + 1)));
        }

        #[test]
        fn leaves_move_only_the_leaving_members_partitions(members in 2usize..10, qbits in 4u32..9, leaver in 0usize..10) {
            let q = 1u32 << qbits;
            let all = ids(members);
            let ring = Ring::new(q, &all).unwrap();
            let leaving = &all[leaver % members];
            let after = ring.without_member(leaving);
            prop_assert!(!after.members().contains(leaving));
            for p in 0..q {
                if ring.owner(p) != after.owner(p) {
                    prop_assert_eq!(ring.owner(p), leaving);
                }
            }
            let claims = after.claims();
            let (min, max) = (claims.values().min().unwrap(), claims.values().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced: {:?}", claims);
        }

        #[test]
        fn ring_depends_only_on_the_member_set(members in 1usize..8, seed in any::<u64>()) {
            let mut shuffled = ids(members);
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            prop_assert_eq!(Ring::new(64, &ids(members)).unwrap(), Ring::new(64, &shuffled).unwrap());
        }
    }
}
