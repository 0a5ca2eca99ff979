//! The replica's contract: the tombstone index follows the data, reaping is conditional,
//! hints merge and keep their age, the hint store is bounded, an old data directory is
//! migrated, and the dot-counter floor survives a clean restart.

use super::*;
use crate::storage::StorageOptions;
use crdts::{CvRDT, VClock};

const BUDGET: usize = 1 << 20;
const REAP_MEMORY: Duration = Duration::from_secs(60);

async fn open(dir: &std::path::Path, max_hints: u64) -> Replica {
    let storage = Storage::open(dir, StorageOptions::default()).expect("open storage");
    Replica::open(
        storage,
        "n1",
        BUDGET,
        max_hints,
        ConflictPolicy::Dvv,
        REAP_MEMORY,
    )
    .await
    .expect("open replica")
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn state(actor: &str, value: Option<&[u8]>, at: u64) -> Versioned {
    let mut s = Versioned::new();
    s.update(
        &Clock::new(),
        &Actor(actor.into()),
        value.map(<[u8]>::to_vec),
        at,
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tombstone_index_follows_the_data_and_reaping_is_conditional() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 10).await;
    let (written, _) = r
        .coordinate(b"k".to_vec(), Clock::new(), Some(b"v".to_vec()), 100)
        .await
        .unwrap();
    assert_eq!(r.tombstone_since(b"k").await.unwrap(), None);
    let (deleted, _) = r
        .coordinate(b"k".to_vec(), written.clock().clone(), None, 200)
        .await
        .unwrap();
    assert_eq!(r.tombstone_since(b"k").await.unwrap(), Some(200));
    assert_eq!(r.tombstones(None, 10).await.unwrap().len(), 1);

    // A concurrent live value from a peer takes the key out of the index...
    r.merge(b"k".to_vec(), state("n2.1", Some(b"w"), 300))
        .await
        .unwrap();
    assert_eq!(r.tombstone_since(b"k").await.unwrap(), None);
    // ...and reaping now refuses: the state is not tombstones only.
    let now = r.read(b"k").await.unwrap().unwrap();
    assert!(!r.reap_if(b"k", now.digest()).await.unwrap());

    // A tombstone-only key is reaped only with its current digest.
    let (gone, _) = r
        .coordinate(b"k".to_vec(), now.clock().clone(), None, 400)
        .await
        .unwrap();
    assert!(
        !r.reap_if(b"k", deleted.digest()).await.unwrap(),
        "stale digest"
    );
    assert!(r.reap_if(b"k", gone.digest()).await.unwrap());
    assert_eq!(r.read(b"k").await.unwrap(), None);
    assert!(r.tombstones(None, 10).await.unwrap().is_empty());
    r.storage().close().await.unwrap();
}

/// The flaky end-to-end reap: a read repair that read the tombstones on one primary
/// before the reap, and got "none" from this one after it, sends the tombstones here
/// once everyone has reaped. Neither they nor the value they replaced may be stored
/// again; a write made after the reap is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_read_before_a_reap_does_not_bring_the_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 10).await;
    let old = state("n2.1", Some(b"old"), 100);
    let mut deleted = old.clone();
    deleted.update(old.clock(), &Actor("n2.1".into()), None, 200);
    r.merge(b"k".to_vec(), deleted.clone()).await.unwrap();
    assert!(r.reap_if(b"k", deleted.digest()).await.unwrap());

    // The late read repair (or exchange) carrying the reaped tombstones...
    let m = r.merge(b"k".to_vec(), deleted.clone()).await.unwrap();
    assert!(!m.changed, "{m:?}");
    assert_eq!(
        r.read(b"k").await.unwrap(),
        None,
        "the tombstones came back"
    );
    assert!(r.tombstones(None, 10).await.unwrap().is_empty());
    // ...or only the value it deleted, read from a primary that was still behind.
    r.merge(b"k".to_vec(), old).await.unwrap();
    assert_eq!(
        r.read(b"k").await.unwrap(),
        None,
        "the deleted value came back"
    );

    // A new write of the key after the reap is stored, and a stale copy arriving after
    // it does not add the reaped tombstone to it as a sibling.
    let mut reborn = Versioned::new();
    reborn.update_with_floor(
        &Clock::new(),
        &Actor("n3.1".into()),
        Some(b"new".to_vec()),
        300,
        0,
    );
    assert!(
        r.merge(b"k".to_vec(), reborn.clone())
            .await
            .unwrap()
            .changed
    );
    r.merge(b"k".to_vec(), deleted).await.unwrap();
    assert_eq!(r.read(b"k").await.unwrap(), Some(reborn));
    r.storage().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_merge_keep_their_age_serve_reads_until_they_expire_and_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 2).await;
    let n3 = node("n3");
    r.store_hint(b"a", &n3, state("n1.1", Some(b"v1"), 1), 1_000)
        .await
        .unwrap();
    r.store_hint(b"a", &n3, state("n2.1", Some(b"v2"), 2), 5_000)
        .await
        .unwrap();
    let held = r.hints_for(b"a").await.unwrap();
    assert_eq!(held.len(), 1, "one hint per key and primary");
    assert_eq!(held[0].2, 1_000, "a merge keeps the hint's creation time");
    assert_eq!(held[0].1.live_values().len(), 2);
    // A fallback's read includes what it holds for others.
    assert_eq!(r.read(b"a").await.unwrap(), None);
    let ttl_ms = 10_000;
    assert_eq!(
        r.read_any(b"a", 2_000, ttl_ms)
            .await
            .unwrap()
            .unwrap()
            .live_values()
            .len(),
        2
    );
    // Once older than the ttl, a hint is no longer served (the sweep deletes it).
    assert_eq!(r.read_any(b"a", 11_000, ttl_ms).await.unwrap(), None);
    r.store_hint(b"b", &node("n4"), state("n1.1", Some(b"x"), 1), 1)
        .await
        .unwrap();
    assert_eq!(r.hints_total(), 2);
    // Full: a new hint is refused, a merge into a held one is not.
    let refused = r
        .store_hint(b"c", &n3, state("n1.1", Some(b"y"), 1), 1)
        .await;
    assert!(
        matches!(refused, Err(ReplicaError::HintsFull { .. })),
        "{refused:?}"
    );
    r.store_hint(b"b", &node("n4"), state("n2.1", Some(b"z"), 1), 1)
        .await
        .unwrap();
    assert_eq!(r.hints_pending(), vec![(n3.clone(), 1), (node("n4"), 1)]);

    // Delivery deletes a hint only if nothing was merged into it since it was read.
    let batch = r.hint_batch(None, 10).await.unwrap();
    let a = batch.iter().find(|h| h.key == b"a").unwrap().clone();
    r.store_hint(b"a", &n3, state("n5.1", Some(b"v3"), 3), 9_000)
        .await
        .unwrap();
    assert!(!r.remove_hint(&a).await.unwrap(), "changed since read");
    let a = r
        .hint_batch(None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.key == b"a")
        .unwrap();
    assert!(r.remove_hint(&a).await.unwrap());
    assert_eq!(r.hints_total(), 1);
    r.storage().close().await.unwrap();
    drop(r);

    // Hints are counted again on the next start.
    let r = open(dir.path(), 2).await;
    assert_eq!(r.hints_pending(), vec![(node("n4"), 1)]);
    r.storage().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dot_counter_floor_survives_a_clean_restart_and_a_crash_changes_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 10).await;
    let mut last = 0;
    for i in 0..5u8 {
        let (_, dot) = r
            .coordinate(vec![i], Clock::new(), Some(vec![i]), 1)
            .await
            .unwrap();
        assert!(dot.counter > last, "counters rise across keys");
        last = dot.counter;
    }
    let actor = r.actor().clone();
    r.mark_clean_shutdown().await.unwrap();
    r.storage().close().await.unwrap();
    drop(r);
    let r = open(dir.path(), 10).await;
    assert_eq!(r.actor(), &actor, "a clean restart keeps the actor");
    let (_, dot) = r
        .coordinate(b"fresh".to_vec(), Clock::new(), Some(b"v".to_vec()), 2)
        .await
        .unwrap();
    assert!(
        dot.counter > last,
        "a new key's dot is above every earlier one"
    );
    r.storage().close().await.unwrap();
    drop(r);
    // No clean marker: a new epoch.
    let r = open(dir.path(), 10).await;
    assert_ne!(r.actor(), &actor);
    r.storage().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_new_hints_do_not_pass_the_bound_together() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 2).await;
    let n3 = node("n3");
    // Sixteen new hints at once on one task: each runs until it waits for its fsync, so
    // all of them are under way before any is stored.
    let keys: Vec<[u8; 2]> = (0..16u8).map(|i| [b'k', i]).collect();
    let stores = keys
        .iter()
        .map(|key| r.store_hint(key, &n3, state("n1.1", Some(b"v"), 1), 1));
    let mut stored = 0;
    for result in futures_util::future::join_all(stores).await {
        match result {
            Ok(()) => stored += 1,
            Err(ReplicaError::HintsFull { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 2, "exactly the bound is stored");
    assert_eq!(r.hints_total(), 2);
    let mut held = 0;
    for i in 0..16u8 {
        held += r.hints_for(&[b'k', i]).await.unwrap().len();
    }
    assert_eq!(held, 2, "and exactly that many are in storage");
    r.storage().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_dot_would_pass_the_counter_limit_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let r = open(dir.path(), 10).await;
    let mut context = Clock::new();
    context.merge(VClock::from(Dot::new(r.actor().clone(), MAX_COUNTER)));
    let err = r
        .coordinate(b"k".to_vec(), context, Some(b"v".to_vec()), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReplicaError::CounterExhausted { .. }),
        "{err}"
    );
    assert!(r.read(b"k").await.unwrap().is_none(), "nothing stored");
    assert!(r.minted() < MAX_COUNTER, "the floor did not move");
    // Other writes go on as before.
    let (_, dot) = r
        .coordinate(b"other".to_vec(), Clock::new(), Some(b"v".to_vec()), 2)
        .await
        .unwrap();
    assert_eq!(dot.counter, r.minted());
    r.storage().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_previous_layout_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let old = state("n1.1", Some(b"kept"), 1);
    {
        // Layout 1: states under their raw keys in keyspace "data", no layout marker.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let legacy = db
            .keyspace(
                crate::storage::LEGACY_DATA_KEYSPACE,
                fjall::KeyspaceCreateOptions::default,
            )
            .unwrap();
        legacy
            .insert(b"cart:1", layout::encode_state(&old))
            .unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let r = open(dir.path(), 10).await;
    assert_eq!(r.read(b"cart:1").await.unwrap(), Some(old));
    r.storage().close().await.unwrap();
    drop(r);
    // A directory from a newer layout is refused with a sentence.
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage
        .put(Space::Meta, LAYOUT_KEY.to_vec(), vec![9])
        .await
        .unwrap();
    let err = Replica::open(
        storage.clone(),
        "n1",
        BUDGET,
        10,
        ConflictPolicy::Dvv,
        REAP_MEMORY,
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("storage layout"), "{err}");
    storage.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_writer_wins_keeps_only_the_newest_of_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let r = Replica::open(storage, "n1", BUDGET, 10, ConflictPolicy::Lww, REAP_MEMORY)
        .await
        .unwrap();
    r.coordinate(b"k".to_vec(), Clock::new(), Some(b"mine".to_vec()), 100)
        .await
        .unwrap();
    // A concurrent, newer write from a peer wins; the local one is gone for good.
    let merged = r
        .merge(b"k".to_vec(), state("n2.1", Some(b"newer"), 200))
        .await
        .unwrap();
    assert_eq!(merged.state.live_values(), vec![&b"newer"[..]]);
    // An older concurrent write loses.
    r.merge(b"k".to_vec(), state("n3.1", Some(b"older"), 50))
        .await
        .unwrap();
    assert_eq!(
        r.read(b"k").await.unwrap().unwrap().live_values(),
        vec![&b"newer"[..]]
    );
    // A blind write with an older timestamp than what is stored is lost at once.
    let (after, _) = r
        .coordinate(b"k".to_vec(), Clock::new(), Some(b"late".to_vec()), 150)
        .await
        .unwrap();
    assert_eq!(after.live_values(), vec![&b"newer"[..]]);
    r.storage().close().await.unwrap();
}
