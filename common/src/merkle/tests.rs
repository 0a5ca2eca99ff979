//! Known answers, incremental-vs-rebuild equality, exact diffs and work bounds of the
//! hash trees, as unit and property tests.
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ring::{key_hash, NodeId, Ring};
use xxhash_rust::xxh3::xxh3_128;

/// The ring sizes the shapes are checked for, smallest to largest.
const QS: [u32; 5] = [1, 2, 64, 1024, 65_536];

/// A replica's keys and their state digests.
type Store = BTreeMap<Vec<u8>, u128>;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// The tree of `store`, built by inserting its items in the order given.
fn build<'a>(
    shape: TreeShape,
    q: u32,
    items: impl IntoIterator<Item = (&'a Vec<u8>, &'a u128)>,
) -> MerkleTree {
    let mut tree = MerkleTree::new(shape);
    for (k, digest) in items {
        let segment = shape.segment_of_hash(key_hash(k), q);
        tree.update(segment, None, Some(item_hash(k, *digest)))
            .unwrap();
    }
    tree
}

/// Drives a descent with `local` and `remote` answering, as the anti-entropy task would.
fn descend(local: &MerkleTree, remote: &MerkleTree) -> Descent {
    let mut descent = Descent::new(local.shape());
    while let Some((level, indices)) = descent.want() {
        let ours = local.hashes(level, &indices).unwrap();
        let theirs = remote.hashes(level, &indices).unwrap();
        descent.feed(&ours, &theirs).unwrap();
    }
    descent
}

/// The (key, item) pairs of `store` in `segments`, as storage would scan them.
fn segment_items(
    store: &Store,
    shape: TreeShape,
    q: u32,
    segments: &[u32],
) -> Vec<(Vec<u8>, u128)> {
    store
        .iter()
        .filter(|(k, _)| segments.contains(&shape.segment_of_hash(key_hash(k), q)))
        .map(|(k, d)| (k.clone(), item_hash(k, *d)))
        .collect()
}

/// Two replicas sharing `base` keys, each with a few keys of its own, and `changed`
/// shared keys whose digests differ; returns them and the keys that differ.
fn diverged(
    base: u64,
    only_local: u64,
    only_remote: u64,
    changed: u64,
) -> (Store, Store, BTreeSet<Vec<u8>>) {
    let shared: Store = (0..base).map(|i| (key(i), u128::from(i))).collect();
    let (mut local, mut remote) = (shared.clone(), shared);
    let mut expected = BTreeSet::new();
    for i in 0..only_local {
        local.insert(key(base + i), 1);
        expected.insert(key(base + i));
    }
    for i in 0..only_remote {
        remote.insert(key(base + only_local + i), 2);
        expected.insert(key(base + only_local + i));
    }
    for i in 0..changed.min(base) {
        remote.insert(key(i), u128::MAX - u128::from(i));
        expected.insert(key(i));
    }
    (local, remote, expected)
}

/// Runs the full exchange between two stores; returns the descent and the keys found.
fn exchange(shape: TreeShape, q: u32, local: &Store, remote: &Store) -> (Descent, Vec<Vec<u8>>) {
    let descent = descend(&build(shape, q, local), &build(shape, q, remote));
    let segments = descent.differing_segments();
    let keys = diff_items(
        &segment_items(local, shape, q, segments),
        &segment_items(remote, shape, q, segments),
    );
    (descent, keys)
}

#[test]
fn default_shapes_follow_the_leaf_budget() {
    let expected = [
        (1, 1024, 32, 3),
        (2, 1024, 32, 3),
        (64, 1024, 32, 3),
        (1024, 64, 32, 3),
        (65_536, 16, 16, 2),
    ];
    for (q, leaves, fanout, levels) in expected {
        let shape = TreeShape::for_partitions(q).unwrap();
        assert_eq!(
            (shape.leaves(), shape.fanout(), shape.levels()),
            (leaves, fanout, levels),
            "Q = {q}"
        );
        assert_eq!(shape.width(0).unwrap(), 1);
        assert_eq!(shape.width(shape.leaf_level()).unwrap(), leaves);
    }
}

#[test]
fn uneven_levels_give_the_root_fewer_children() {
    let shape = TreeShape::new(512, 32).unwrap();
    assert_eq!(shape.levels(), 3);
    let widths: Vec<u32> = (0..3).map(|l| shape.width(l).unwrap()).collect();
    assert_eq!(widths, [1, 16, 512]);
    assert_eq!(shape.children(0, 0).unwrap(), 0..16);
    assert_eq!(shape.children(1, 3).unwrap(), 96..128);
    assert_eq!(shape.children(1, 15).unwrap(), 480..512);
}

#[test]
fn bad_shapes_and_partition_counts_are_refused() {
    for (leaves, fanout) in [
        (0, 2),
        (1, 2),
        (3, 2),
        (1 << 21, 32),
        (16, 1),
        (16, 3),
        (16, 32),
        (1024, 512),
    ] {
        assert!(
            matches!(
                TreeShape::new(leaves, fanout),
                Err(MerkleError::InvalidShape { .. })
            ),
            "{leaves} leaves, fanout {fanout}"
        );
    }
    for q in [0, 3, 100] {
        assert_eq!(
            TreeShape::for_partitions(q),
            Err(MerkleError::InvalidPartitions { partitions: q })
        );
        assert!(TreeShape::partition_range(q, 0).is_err());
    }
    let shape = TreeShape::for_partitions(64).unwrap();
    assert_eq!(
        TreeShape::partition_range(64, 64),
        Err(MerkleError::PartitionOutOfRange {
            partition: 64,
            partitions: 64
        })
    );
    assert!(shape.segment_range(64, 0, 1024).is_err());
    assert!(shape.segment_range(64, 64, 0).is_err());
    assert_eq!(
        shape.width(3),
        Err(MerkleError::LevelOutOfRange {
            level: 3,
            levels: 3
        })
    );
    assert_eq!(
        shape.children(2, 0),
        Err(MerkleError::LeafHasNoChildren { level: 2 })
    );
    assert_eq!(
        shape.children(1, 32),
        Err(MerkleError::NodeOutOfRange {
            level: 1,
            index: 32,
            width: 32
        })
    );
    // Off the write path's contract, but still in range rather than a panic.
    for q in [0, 3, u32::MAX] {
        assert!(shape.segment_of_hash(u64::MAX, q) < shape.leaves());
    }
}

#[test]
fn partition_and_segment_ranges_tile_the_hash_space() {
    let member = [NodeId::new("n1").unwrap()];
    for q in QS {
        let shape = TreeShape::for_partitions(q).unwrap();
        let ring = Ring::new(q, &member).unwrap();
        let mut next = 0u64;
        for p in 0..q {
            let range = TreeShape::partition_range(q, p).unwrap();
            assert_eq!(range.lo, next, "Q = {q}, partition {p}");
            assert!(range.lo <= range.hi);
            assert_eq!(ring.partition_of_hash(range.lo), p);
            assert_eq!(ring.partition_of_hash(range.hi), p);
            next = range.hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "Q = {q}: the last partition must end at u64::MAX");

        for p in [0, q / 2, q - 1] {
            let whole = TreeShape::partition_range(q, p).unwrap();
            let mut next = whole.lo;
            for s in 0..shape.leaves() {
                let range = shape.segment_range(q, p, s).unwrap();
                assert_eq!(range.lo, next, "Q = {q}, partition {p}, segment {s}");
                assert!(range.lo <= range.hi);
                for h in [range.lo, range.hi] {
                    assert_eq!(shape.segment_of_hash(h, q), s);
                    assert_eq!(ring.partition_of_hash(h), p);
                }
                next = range.hi.wrapping_add(1);
            }
            assert_eq!(next, whole.hi.wrapping_add(1), "Q = {q}, partition {p}");
        }
    }
}

#[test]
fn hashes_match_their_documented_encodings() {
    let mut encoded = 3u64.to_le_bytes().to_vec();
    encoded.extend_from_slice(b"abc");
    encoded.extend_from_slice(&7u128.to_le_bytes());
    assert_eq!(item_hash(b"abc", 7), xxh3_128(&encoded));
    // The length prefix keeps bytes from moving between key and digest unnoticed.
    assert_ne!(item_hash(b"", 0), item_hash(&[0; 16], 0));

    let children = [1u128, 0, u128::MAX];
    let bytes: Vec<u8> = children.iter().flat_map(|c| c.to_le_bytes()).collect();
    assert_eq!(combine(&children), xxh3_128(&bytes));
    assert_eq!(combine(&[0, 0, 0]), 0);
}

#[test]
fn empty_trees_have_root_zero_and_compare_equal_to_absent_ones() {
    let shape = TreeShape::for_partitions(64).unwrap();
    let mut tree = MerkleTree::new(shape);
    assert!(tree.is_empty());
    assert_eq!(tree.root(), 0);
    assert_eq!(tree.level(1).unwrap(), vec![0; 32]);

    let item = item_hash(b"k", 1);
    let segment = shape.segment_of_hash(key_hash(b"k"), 64);
    tree.update(segment, None, Some(item)).unwrap();
    assert!(!tree.is_empty());
    assert_ne!(tree.root(), 0);
    assert_eq!(tree.leaf(segment).unwrap(), item);
    // Only the path from that leaf to the root is non-zero.
    let level1 = tree.level(1).unwrap();
    assert_eq!(level1.iter().filter(|&&h| h != 0).count(), 1);
    assert_ne!(level1[(segment / 32) as usize], 0);

    tree.update(segment, Some(item), None).unwrap();
    assert_eq!(tree, MerkleTree::new(shape));
    let descent = descend(&tree, &MerkleTree::new(shape));
    assert_eq!(descent.stats().rounds, 1);
    assert!(descent.differing_segments().is_empty());
}

#[test]
fn levels_and_node_hashes_agree() {
    let shape = TreeShape::new(512, 8).unwrap();
    let store: Store = (0..300).map(|i| (key(i), u128::from(i))).collect();
    let tree = build(shape, 1, &store);
    assert_eq!(tree.level(0).unwrap(), vec![tree.root()]);
    assert_eq!(tree.level(shape.leaf_level()).unwrap(), tree.leaves());
    for level in 0..shape.levels() {
        let all = tree.level(level).unwrap();
        let indices: Vec<u32> = (0..shape.width(level).unwrap()).rev().collect();
        let mut picked = tree.hashes(level, &indices).unwrap();
        picked.reverse();
        assert_eq!(picked, all, "level {level}");
    }
}

#[test]
fn clones_are_snapshots() {
    let shape = TreeShape::for_partitions(1).unwrap();
    let mut live = MerkleTree::new(shape);
    live.update(5, None, Some(42)).unwrap();
    let snapshot = live.clone();
    live.update(5, Some(42), Some(43)).unwrap();
    assert_eq!(snapshot.leaf(5).unwrap(), 42);
    assert_eq!(live.leaf(5).unwrap(), 43);
}

#[test]
fn bad_indices_and_lengths_are_errors() {
    let shape = TreeShape::for_partitions(64).unwrap();
    let mut tree = MerkleTree::new(shape);
    assert_eq!(
        tree.update(1024, None, Some(1)),
        Err(MerkleError::SegmentOutOfRange {
            segment: 1024,
            leaves: 1024
        })
    );
    assert!(tree.leaf(u32::MAX).is_err());
    assert!(tree.level(3).is_err());
    assert_eq!(
        tree.hashes(1, &[0, 32]),
        Err(MerkleError::NodeOutOfRange {
            level: 1,
            index: 32,
            width: 32
        })
    );
    assert!(tree.hashes(0, &[1]).is_err());
    assert_eq!(
        tree.hashes(0, &[0, 0]),
        Err(MerkleError::TooManyNodes {
            level: 0,
            requested: 2,
            width: 1
        })
    );
    assert!(tree.hashes(7, &[0]).is_err());
    assert_eq!(tree.hashes(2, &[]), Ok(vec![]));
    assert_eq!(
        MerkleTree::from_leaves(shape, vec![0; 3]),
        Err(MerkleError::LeafCountMismatch {
            expected: 1024,
            got: 3
        })
    );

    let mut descent = Descent::new(shape);
    assert_eq!(
        descent.feed(&[], &[1]),
        Err(MerkleError::HashCountMismatch {
            side: "local",
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        descent.feed(&[1], &[1, 2]),
        Err(MerkleError::HashCountMismatch {
            side: "remote",
            expected: 1,
            got: 2
        })
    );
    // A refused answer leaves the descent where it was.
    assert_eq!(descent.want(), Some((0, vec![0])));
    descent.feed(&[1], &[1]).unwrap();
    assert!(descent.is_finished());
    assert_eq!(descent.want(), None);
    assert_eq!(descent.feed(&[], &[]), Err(MerkleError::DescentFinished));
}

#[test]
fn trees_survive_a_round_trip_through_bytes() {
    let shape = TreeShape::for_partitions(64).unwrap();
    let store: Store = (0..100).map(|i| (key(i), u128::from(i) << 70)).collect();
    let tree = build(shape, 64, &store);
    let bytes = tree.to_bytes();
    assert_eq!(MerkleTree::from_bytes(&bytes, shape), Ok(tree.clone()));

    let other = TreeShape::for_partitions(1024).unwrap();
    assert_eq!(
        MerkleTree::from_bytes(&bytes, other),
        Err(MerkleError::ShapeMismatch {
            expected: other,
            found: shape
        })
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        MerkleTree::from_bytes(&trailing, shape),
        Err(MerkleError::Corrupt { .. })
    ));
    let mut old_format = bytes.clone();
    old_format[0] = FORMAT_VERSION + 1;
    assert!(matches!(
        MerkleTree::from_bytes(&old_format, shape),
        Err(MerkleError::Corrupt { .. })
    ));
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(matches!(
            MerkleTree::from_bytes(&bytes[..cut], shape),
            Err(MerkleError::Corrupt { .. })
        ));
    }
    // A shape that is itself invalid, and a leaf count that does not match the shape.
    let bad_shape = StoredTree {
        format: FORMAT_VERSION,
        leaves: 3u32,
        fanout: 2u32,
        hashes: vec![0u128; 3],
    };
    let bytes = postcard::to_allocvec(&bad_shape).unwrap();
    assert!(matches!(
        MerkleTree::from_bytes(&bytes, shape),
        Err(MerkleError::Corrupt { .. })
    ));
    let short = StoredTree {
        format: FORMAT_VERSION,
        leaves: 1024u32,
        fanout: 32u32,
        hashes: vec![0u128; 10],
    };
    let bytes = postcard::to_allocvec(&short).unwrap();
    assert!(matches!(
        MerkleTree::from_bytes(&bytes, shape),
        Err(MerkleError::Corrupt { .. })
    ));
}

#[test]
fn diff_items_names_each_differing_key_once() {
    let local = vec![
        (b"b".to_vec(), 2),
        (b"a".to_vec(), 1),
        (b"c".to_vec(), 3),
        (b"only-local".to_vec(), 9),
        (b"a".to_vec(), 1),
    ];
    let remote = vec![
        (b"c".to_vec(), 30),
        (b"only-remote".to_vec(), 8),
        (b"a".to_vec(), 1),
        (b"b".to_vec(), 2),
    ];
    let expected = vec![
        b"c".to_vec(),
        b"only-local".to_vec(),
        b"only-remote".to_vec(),
    ];
    assert_eq!(diff_items(&local, &remote), expected);
    assert_eq!(diff_items(&remote, &local), expected);
    assert!(diff_items(&local, &local).is_empty());
    assert!(diff_items(&[], &[]).is_empty());
}

#[test]
fn identical_trees_finish_after_the_root() {
    for q in QS {
        let shape = TreeShape::for_partitions(q).unwrap();
        let store: Store = (0..2_000).map(|i| (key(i), u128::from(i))).collect();
        let (descent, keys) = exchange(shape, q, &store, &store);
        assert!(descent.is_finished());
        assert_eq!(
            descent.stats(),
            DescentStats {
                rounds: 1,
                nodes_compared: 1,
                nodes_differing: 0
            }
        );
        assert!(descent.differing_segments().is_empty());
        assert!(keys.is_empty());
    }
}

#[test]
fn work_grows_with_differing_keys_not_with_data() {
    let q = 1;
    let shape = TreeShape::for_partitions(q).unwrap();
    let levels = u64::from(shape.levels());
    let fanout = u64::from(shape.fanout());
    let mut one_key_work = Vec::new();
    for base in [2_000, 50_000] {
        for k in [1u64, 2, 5, 20] {
            let (local, remote, expected) = diverged(base, k, 0, 0);
            let (descent, keys) = exchange(shape, q, &local, &remote);
            assert_eq!(keys, expected.into_iter().collect::<Vec<_>>());
            let stats = descent.stats();
            assert!(stats.rounds as u64 <= levels);
            assert!(
                stats.nodes_compared <= 1 + (levels - 1) * fanout * k,
                "{base} keys, {k} differing: {stats:?}"
            );
            if k == 1 {
                one_key_work.push(stats);
            }
        }
    }
    // One differing key costs the root, one node's children per level: 1 + 32 + 32.
    let one = DescentStats {
        rounds: 3,
        nodes_compared: 65,
        nodes_differing: 3,
    };
    assert_eq!(one_key_work, [one, one]);
}

proptest! {
    #[test]
    fn incremental_updates_match_a_rebuild(
        qi in 0..QS.len(),
        ops in prop::collection::vec((0u64..40, prop::option::of(0u128..4)), 0..200),
    ) {
        let q = QS[qi];
        let shape = TreeShape::for_partitions(q).unwrap();
        let mut tree = MerkleTree::new(shape);
        let mut store = Store::new();
        for (i, digest) in ops {
            let k = key(i);
            let segment = shape.segment_of_hash(key_hash(&k), q);
            let old = store.get(&k).map(|d| item_hash(&k, *d));
            let new = digest.map(|d| item_hash(&k, d));
            tree.update(segment, old, new).unwrap();
            match digest {
                Some(d) => store.insert(k, d),
                None => store.remove(&k),
            };
        }
        let rebuilt = build(shape, q, store.iter().rev());
        prop_assert_eq!(tree.leaves(), rebuilt.leaves());
        prop_assert_eq!(tree.root(), rebuilt.root());
        prop_assert_eq!(tree.is_empty(), store.is_empty());
        prop_assert_eq!(tree.root() == 0, store.is_empty());
    }

    #[test]
    fn building_is_order_independent(
        qi in 0..QS.len(),
        (items, shuffled) in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 0..12), any::<u128>(), 0..150)
            .prop_flat_map(|m| {
                let items: Vec<(Vec<u8>, u128)> = m.into_iter().collect();
                (Just(items.clone()), Just(items).prop_shuffle())
            }),
    ) {
        let q = QS[qi];
        let shape = TreeShape::for_partitions(q).unwrap();
        let a = build(shape, q, items.iter().map(|(k, d)| (k, d)));
        let b = build(shape, q, shuffled.iter().map(|(k, d)| (k, d)));
        prop_assert_eq!(&a, &b);
        for level in 0..shape.levels() {
            prop_assert_eq!(a.level(level).unwrap(), b.level(level).unwrap());
        }
    }

    #[test]
    fn descent_finds_exactly_the_differing_keys(
        qi in 0..QS.len(),
        base in 0u64..800,
        only_local in 0u64..4,
        only_remote in 0u64..4,
        changed in 0u64..4,
    ) {
        // A tree does not check which partition its keys fall in, so keys from the
        // whole ring exercise every shape; placement is checked by the range tests.
        let q = QS[qi];
        let shape = TreeShape::for_partitions(q).unwrap();
        let (local, remote, expected) = diverged(base, only_local, only_remote, changed);
        let (descent, keys) = exchange(shape, q, &local, &remote);
        prop_assert!(descent.is_finished());
        prop_assert_eq!(&keys, &expected.iter().cloned().collect::<Vec<_>>());
        // Either side may drive: the other direction finds the same keys.
        let (_, reverse) = exchange(shape, q, &remote, &local);
        prop_assert_eq!(&reverse, &keys);

        let segments: BTreeSet<u32> = expected
            .iter()
            .map(|k| shape.segment_of_hash(key_hash(k), q))
            .collect();
        prop_assert_eq!(descent.differing_segments(), &segments.into_iter().collect::<Vec<_>>()[..]);
        let k = expected.len() as u64;
        let stats = descent.stats();
        let levels = u64::from(shape.levels());
        prop_assert!(stats.nodes_compared <= 1 + (levels - 1) * u64::from(shape.fanout()) * k);
        if k == 0 {
            prop_assert_eq!(stats.rounds, 1);
        } else {
            prop_assert_eq!(u64::from(stats.rounds), levels);
        }
    }

    #[test]
    fn segments_stay_in_range_and_inside_their_ranges(qi in 0..QS.len(), hash in any::<u64>()) {
        let q = QS[qi];
        let shape = TreeShape::for_partitions(q).unwrap();
        let segment = shape.segment_of_hash(hash, q);
        prop_assert!(segment < shape.leaves());
        let bits = q.trailing_zeros();
        let partition = if bits == 0 { 0 } else { (hash >> (64 - bits)) as u32 };
        prop_assert!(TreeShape::partition_range(q, partition).unwrap().contains(hash));
        prop_assert!(shape.segment_range(q, partition, segment).unwrap().contains(hash));
    }

    #[test]
    fn arbitrary_requests_and_answers_never_panic(
        level in 0u32..5,
        indices in prop::collection::vec(0u32..2_000, 0..8),
        local in prop::collection::vec(any::<u128>(), 0..4),
        remote in prop::collection::vec(any::<u128>(), 0..4),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let shape = TreeShape::for_partitions(64).unwrap();
        let tree = MerkleTree::new(shape);
        let _ = tree.hashes(level, &indices);
        let mut descent = Descent::new(shape);
        for _ in 0..4 {
            let _ = descent.feed(&local, &remote);
        }
        let _ = MerkleTree::from_bytes(&bytes, shape);
    }
}
