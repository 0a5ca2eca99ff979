//! The storage contract: what `replica` and the rest of the node rely on.

use super::error::is_disk_full;
use super::*;
use std::collections::HashSet;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Test-only fault injection and pacing for the syncer.
#[derive(Default)]
pub(super) struct Hooks {
    /// If set, the next fsync fails with this OS error code.
    fail_next_sync: Mutex<Option<i32>>,
    /// Held by the syncer from before it picks its target until the fsync is done; a
    /// test holding it pauses group commit deterministically.
    gate: Mutex<()>,
    /// The thread that ran the last successful fsync.
    sync_thread: Mutex<Option<std::thread::ThreadId>>,
}

impl Hooks {
    pub(super) fn injected_sync_error(&self) -> Option<fjall::Error> {
        lock(&self.fail_next_sync)
            .take()
            .map(|code| fjall::Error::Io(std::io::Error::from_raw_os_error(code)))
    }

    pub(super) fn sync_gate(&self) -> MutexGuard<'_, ()> {
        lock(&self.gate)
    }

    pub(super) fn record_sync_thread(&self) {
        *lock(&self.sync_thread) = Some(std::thread::current().id());
    }

    fn sync_thread(&self) -> Option<std::thread::ThreadId> {
        *lock(&self.sync_thread)
    }
}

fn open(dir: &Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).expect("open storage")
}

fn relaxed(dir: &Path) -> Storage {
    let opts = StorageOptions {
        durability: Durability::Relaxed,
        ..StorageOptions::default()
    };
    Storage::open(dir, opts).expect("open storage")
}

fn inline_io(dir: &Path) -> Storage {
    let opts = StorageOptions {
        io: StorageIo::Inline,
        ..StorageOptions::default()
    };
    Storage::open(dir, opts).expect("open storage")
}

fn counter(old: Option<&[u8]>) -> u64 {
    old.map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get_delete_round_trip_in_each_space_and_spaces_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for space in Space::ALL {
        assert_eq!(s.get(space, b"k").await.unwrap(), None);
    }
    for space in Space::ALL {
        s.put(space, b"k".to_vec(), space.name().as_bytes().to_vec())
            .await
            .unwrap();
    }
    for space in Space::ALL {
        assert_eq!(
            s.get(space, b"k").await.unwrap().as_deref(),
            Some(space.name().as_bytes())
        );
    }
    s.delete(Space::Hints, b"k".to_vec()).await.unwrap();
    assert_eq!(s.get(Space::Hints, b"k").await.unwrap(), None);
    assert_eq!(
        s.get(Space::Data, b"k").await.unwrap().as_deref(),
        Some(&b"kv"[..])
    );
    assert_eq!(
        s.get(Space::Meta, b"k").await.unwrap().as_deref(),
        Some(&b"meta"[..])
    );
    // Deleting a missing key is fine; overwriting replaces.
    s.delete(Space::Hints, b"nope".to_vec()).await.unwrap();
    s.put(Space::Data, b"k".to_vec(), b"v2".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.get(Space::Data, b"k").await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    // Empty values are values, not absence.
    s.put(Space::Meta, b"empty".to_vec(), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        s.get(Space::Meta, b"empty").await.unwrap(),
        Some(Vec::new())
    );
    let st = s.stats();
    assert_eq!(st.writes_committed, 8);
    assert_eq!(
        st.writes_synced, 8,
        "every acknowledged write is covered by an fsync"
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_modify_of_one_key_is_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.modify(Space::Data, b"counter".to_vec(), |old| {
                let n = counter(old);
                (Change::Put((n + 1).to_be_bytes().to_vec()), n)
            })
            .await
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        let old = t.await.unwrap().unwrap();
        assert!(seen.insert(old), "two writers saw the same old value {old}");
    }
    assert_eq!(seen, (0..64).collect::<HashSet<u64>>());
    let v = s.get(Space::Data, b"counter").await.unwrap();
    assert_eq!(counter(v.as_deref()), 64);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modify_keep_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let r = s
        .modify(Space::Data, b"k".to_vec(), |old| {
            (Change::Keep, old.is_none())
        })
        .await
        .unwrap();
    assert!(r, "missing key reads as None");
    assert_eq!(s.stats().writes_committed, 0, "Keep writes nothing");
    s.put(Space::Data, b"k".to_vec(), b"v".to_vec())
        .await
        .unwrap();
    let old = s
        .modify(Space::Data, b"k".to_vec(), |old| {
            (Change::Delete, old.map(<[u8]>::to_vec))
        })
        .await
        .unwrap();
    assert_eq!(old.as_deref(), Some(&b"v"[..]));
    assert_eq!(s.get(Space::Data, b"k").await.unwrap(), None);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_modify_closure_is_an_error_and_does_not_wedge_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let err = s
        .modify(Space::Data, b"k".to_vec(), |_| -> (Change, ()) {
            panic!("merge bug")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Task { op: "modify", .. }),
        "{err}"
    );
    s.modify(Space::Data, b"k".to_vec(), |_| {
        (Change::Put(b"ok".to_vec()), ())
    })
    .await
    .unwrap();
    assert_eq!(
        s.get(Space::Data, b"k").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

/// The engine panics on keys over 65,535 bytes; the store refuses them first, on every
/// call that takes a key, and stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_longer_than_the_engine_takes_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let long = vec![b'k'; MAX_KEY_BYTES + 1];
    let longest = vec![b'k'; MAX_KEY_BYTES];
    let too_long =
        |e: StorageError| matches!(e, StorageError::KeyTooLong { len, .. } if len == long.len());
    assert!(too_long(s.get(Space::Data, &long).await.unwrap_err()));
    assert!(too_long(
        s.put(Space::Data, long.clone(), b"v".to_vec())
            .await
            .unwrap_err()
    ));
    assert!(too_long(
        s.delete(Space::Data, long.clone()).await.unwrap_err()
    ));
    assert!(too_long(
        s.modify(Space::Data, long.clone(), |_| (
            Change::Put(b"v".to_vec()),
            ()
        ))
        .await
        .unwrap_err()
    ));
    // A side key of a batch is checked too, and the batch is not applied.
    let side = long.clone();
    let err = s
        .modify_with(Space::Data, b"main".to_vec(), move |_| {
            (
                Edit {
                    change: Change::Put(b"v".to_vec()),
                    also: vec![(Space::Tombstones, side, Change::Put(b"t".to_vec()))],
                },
                (),
            )
        })
        .await
        .unwrap_err();
    assert!(too_long(err));
    assert_eq!(s.get(Space::Data, b"main").await.unwrap(), None);
    assert!(too_long(
        s.scan_prefix(Space::Data, long.clone(), 1)
            .await
            .unwrap_err()
    ));
    // So is a scan's cursor or bound (anti-entropy resumes after a key a peer names).
    assert!(too_long(
        s.scan(Space::Data, Some(long.clone()), 1)
            .await
            .unwrap_err()
    ));
    assert!(too_long(
        s.scan_range(Space::Data, vec![0], None, Some(long.clone()), 1)
            .await
            .unwrap_err()
    ));
    // The longest key the engine takes still works, and so does the store.
    s.put(Space::Data, longest.clone(), b"v".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.get(Space::Data, &longest).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.put(Space::Data, i.to_be_bytes().to_vec(), vec![i as u8; 100])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        s.put(Space::Meta, b"actor".to_vec(), b"node-a".to_vec())
            .await
            .unwrap();
        s.put(Space::Hints, b"gone".to_vec(), b"x".to_vec())
            .await
            .unwrap();
        s.delete(Space::Hints, b"gone".to_vec()).await.unwrap();
        s.close().await.unwrap();
        // Closed means closed, and closing twice is fine.
        let err = s
            .put(Space::Data, b"late".to_vec(), b"x".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Closed { op: "put" }), "{err}");
        assert!(matches!(
            s.get(Space::Data, b"x").await,
            Err(StorageError::Closed { .. })
        ));
        s.close().await.unwrap();
    }
    let s = open(dir.path());
    for i in 0..100u32 {
        assert_eq!(
            s.get(Space::Data, &i.to_be_bytes()).await.unwrap(),
            Some(vec![i as u8; 100])
        );
    }
    assert_eq!(
        s.get(Space::Meta, b"actor").await.unwrap().as_deref(),
        Some(&b"node-a"[..])
    );
    assert_eq!(s.get(Space::Hints, b"gone").await.unwrap(), None);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let err = Storage::open(dir.path(), StorageOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_fsyncs_between_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(Space::Data, i.to_be_bytes().to_vec(), b"v".to_vec())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let st = s.stats();
    assert_eq!(st.writes_committed, 200);
    assert_eq!(st.writes_synced, 200);
    assert!(st.fsyncs < 200, "no grouping: {st:?}");
    assert!(st.largest_group > 1, "no grouping: {st:?}");
    s.close().await.unwrap();
}

#[tokio::test]
async fn every_fsync_is_timed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.stats().fsync_latency, None, "no fsync yet");
    for i in 0..5u32 {
        s.put(Space::Data, i.to_be_bytes().to_vec(), b"v".to_vec())
            .await
            .unwrap();
    }
    let st = s.stats();
    let latency = st.fsync_latency.expect("fsyncs were timed");
    assert!(st.fsyncs >= 1);
    assert_eq!(latency.count, st.fsyncs, "{st:?}");
    assert!(
        latency.p50_us >= 1 && latency.p50_us <= latency.max_us,
        "{latency:?}"
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(
    clippy::await_holding_lock,
    reason = "the test holds the syncer's gate on purpose; the syncer is a plain thread"
)]
async fn writers_that_arrive_during_an_fsync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Pause the syncer, let 50 writes apply, then release it: at most two fsyncs
    // (one may already have picked a target of 1 write) cover all 50.
    let gate = s.inner.shared.test.sync_gate();
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(Space::Data, i.to_be_bytes().to_vec(), b"v".to_vec())
                .await
        }));
    }
    while s.stats().writes_committed < 50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Applied writes are visible before they are durable (and before the ack).
    assert_eq!(
        s.get(Space::Data, &7u32.to_be_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(s.stats().writes_synced, 0);
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "acknowledged before fsync"
    );
    drop(gate);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let st = s.stats();
    assert!(st.fsyncs <= 2, "{st:?}");
    assert!(st.largest_group >= 49, "{st:?}");
    s.close().await.unwrap();
}

/// Applies one write and returns its durability handle.
async fn apply_one(s: &Storage, key: &[u8]) -> Durable {
    s.modify_applied(Space::Data, key.to_vec(), |_| {
        (Edit::from(Change::Put(b"v".to_vec())), ())
    })
    .await
    .unwrap()
    .1
}

#[tokio::test]
async fn a_lone_write_is_synced_on_the_callers_thread_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = inline_io(dir.path());
    let durable = apply_one(&s, b"k").await;
    durable.wait_here().await.unwrap();
    let st = s.stats();
    assert_eq!(st.writes_synced, 1, "{st:?}");
    assert_eq!(
        s.inner.shared.test.sync_thread(),
        Some(std::thread::current().id()),
        "the fsync ran on the syncer thread"
    );
    // A failed in-place fsync is the writer's error, as from the syncer.
    *lock(&s.inner.shared.test.fail_next_sync) = Some(libc::EIO);
    let durable = apply_one(&s, b"k2").await;
    let err = durable.wait_here().await.unwrap_err();
    assert!(matches!(err, StorageError::SyncFailed { .. }), "{err}");
    drop(s);
    let s = inline_io(dir.path());
    assert_eq!(
        s.get(Space::Data, b"k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    s.close().await.unwrap();
}

#[tokio::test]
async fn with_threaded_io_the_event_loop_never_runs_an_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    assert_eq!(s.inner.io, StorageIo::Threads);
    apply_one(&s, b"k").await.wait_here().await.unwrap();
    assert_eq!(s.stats().writes_synced, 1);
    assert_ne!(
        s.inner.shared.test.sync_thread(),
        Some(std::thread::current().id())
    );
    s.close().await.unwrap();
}

#[tokio::test]
#[allow(
    clippy::await_holding_lock,
    reason = "the test holds the syncer's gate on purpose; the syncer is a plain thread"
)]
async fn under_concurrent_writes_the_syncer_thread_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = inline_io(dir.path());
    // Two writes applied while the syncer is paused share one fsync: writes no longer
    // come alone.
    let gate = s.inner.shared.test.sync_gate();
    let first = apply_one(&s, b"a").await;
    let second = apply_one(&s, b"b").await;
    let waiting = tokio::spawn(async move {
        first.wait().await.unwrap();
        second.wait().await.unwrap();
    });
    drop(gate);
    waiting.await.unwrap();
    assert!(s.stats().largest_group >= 2, "{:?}", s.stats());
    let durable = apply_one(&s, b"c").await;
    durable.wait_here().await.unwrap();
    assert_eq!(s.stats().writes_synced, 3);
    assert_ne!(
        s.inner.shared.test.sync_thread(),
        Some(std::thread::current().id()),
        "a write among concurrent ones held the caller's thread for an fsync"
    );
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_is_an_error_for_its_writers_never_success() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.put(Space::Data, b"before".to_vec(), b"v".to_vec())
        .await
        .unwrap();
    *lock(&s.inner.shared.test.fail_next_sync) = Some(libc::EIO);
    let err = s
        .put(Space::Data, b"k".to_vec(), b"v".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SyncFailed { op: "put", .. }),
        "{err}"
    );
    assert!(err.is_fatal());
    // Sticky: later writes are refused, reads still work, close reports it.
    let err = s
        .modify(Space::Data, b"k2".to_vec(), |_| (Change::Put(vec![1]), ()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SyncFailed { op: "modify", .. }),
        "{err}"
    );
    assert_eq!(
        s.get(Space::Data, b"before").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(matches!(
        s.close().await,
        Err(StorageError::SyncFailed { op: "close", .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enospc_on_fsync_is_reported_as_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    *lock(&s.inner.shared.test.fail_next_sync) = Some(libc::ENOSPC);
    let err = s
        .put(Space::Data, b"k".to_vec(), b"v".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DiskFull { op: "put" }), "{err}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    let err = s.delete(Space::Data, b"k".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, StorageError::DiskFull { op: "delete" }),
        "{err}"
    );
}

#[test]
fn disk_full_is_detected_through_wrapped_errors() {
    let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
    assert!(is_disk_full(&fjall::Error::Io(enospc())));
    assert!(is_disk_full(&fjall::Error::Storage(fjall::LsmError::Io(
        enospc()
    ))));
    assert!(!is_disk_full(&fjall::Error::Io(
        std::io::Error::from_raw_os_error(libc::EIO)
    )));
    assert!(matches!(
        StorageError::engine("put", fjall::Error::Io(enospc())),
        StorageError::DiskFull { op: "put" }
    ));
    assert!(matches!(
        StorageError::engine("put", fjall::Error::Poisoned),
        StorageError::Poisoned { op: "put" }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_pages_return_every_key_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Insert in a scrambled order, with keys of varying lengths and a decoy space.
    let mut keys: Vec<Vec<u8>> = (0..500u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761);
            let mut k = x.to_be_bytes().to_vec();
            k.truncate(1 + (i as usize % 4));
            k.push(i as u8);
            k
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut order = keys.clone();
    order.reverse();
    order.rotate_left(137);
    for k in &order {
        s.put(Space::Data, k.clone(), k.iter().rev().copied().collect())
            .await
            .unwrap();
        s.put(Space::Hints, k.clone(), b"decoy".to_vec())
            .await
            .unwrap();
    }
    s.delete(Space::Data, keys[10].clone()).await.unwrap();
    let mut expected = keys.clone();
    expected.remove(10);

    assert!(s.scan(Space::Data, None, 0).await.unwrap().is_empty());
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = s.scan(Space::Data, after.clone(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (k, v) in page {
            assert_eq!(v, k.iter().rev().copied().collect::<Vec<u8>>());
            got.push(k);
        }
    }
    assert_eq!(got, expected);
    // `after` need not be a stored key.
    let page = s
        .scan(Space::Data, Some(keys[10].clone()), 1)
        .await
        .unwrap();
    assert_eq!(page[0].0, keys[11]);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relaxed_durability_works_and_persists_on_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = relaxed(dir.path());
        assert_eq!(s.durability(), Durability::Relaxed);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.modify(Space::Data, b"counter".to_vec(), |old| {
                    (Change::Put((counter(old) + 1).to_be_bytes().to_vec()), ())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        s.put(Space::Meta, b"m".to_vec(), b"v".to_vec())
            .await
            .unwrap();
        assert_eq!(s.stats().writes_committed, 33);
        s.close().await.unwrap();
        assert_eq!(s.stats().writes_synced, 33, "close fsyncs");
    }
    let s = relaxed(dir.path());
    assert_eq!(
        counter(s.get(Space::Data, b"counter").await.unwrap().as_deref()),
        32
    );
    assert_eq!(
        s.get(Space::Meta, b"m").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_without_close_still_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = relaxed(dir.path());
        s.put(Space::Data, b"k".to_vec(), b"v".to_vec())
            .await
            .unwrap();
    }
    let s = open(dir.path());
    assert_eq!(
        s.get(Space::Data, b"k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(s.approximate_len(Space::Data), 1);
}

/// `cargo test --release -p dynakv-node --lib storage::tests::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, not a test"]
async fn measure_fsync_puts_at_concurrency_1_and_64() {
    const N: usize = 10_000;
    for concurrency in [1usize, 64] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < N {
                    s.put(
                        Space::Data,
                        (i as u64).to_be_bytes().to_vec(),
                        vec![0u8; 100],
                    )
                    .await
                    .unwrap();
                    i += concurrency;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        let st = s.stats();
        println!(
            "concurrency {concurrency:>2}: {N} fsync'd puts in {elapsed:.2?} ({:.0} puts/s), {st:?}",
            N as f64 / elapsed.as_secs_f64()
        );
        s.close().await.unwrap();
    }
}

/// One change as the observer saw it: space, key, old value, new value.
type Seen = (Space, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Records every change the storage reports.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl ChangeObserver for Recorder {
    fn changed(&self, space: Space, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        lock(&self.seen).push((
            space,
            key.to_vec(),
            old.map(<[u8]>::to_vec),
            new.map(<[u8]>::to_vec),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn side_writes_commit_with_the_key_and_the_observer_sees_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rec = Arc::new(Recorder::default());
    s.set_observer(rec.clone());
    s.modify_with(Space::Data, b"k".to_vec(), |old| {
        assert!(old.is_none());
        let edit = Edit {
            change: Change::Put(b"v1".to_vec()),
            also: vec![(Space::Tombstones, b"k".to_vec(), Change::Put(b"t".to_vec()))],
        };
        (edit, ())
    })
    .await
    .unwrap();
    assert_eq!(
        s.get(Space::Tombstones, b"k").await.unwrap().as_deref(),
        Some(&b"t"[..])
    );
    s.modify_with(Space::Data, b"k".to_vec(), |_| {
        let edit = Edit {
            change: Change::Delete,
            also: vec![(Space::Tombstones, b"k".to_vec(), Change::Delete)],
        };
        (edit, ())
    })
    .await
    .unwrap();
    // A Keep writes nothing and reports nothing.
    s.modify(Space::Data, b"k".to_vec(), |_| (Change::Keep, ()))
        .await
        .unwrap();
    s.put(Space::Meta, b"m".to_vec(), b"x".to_vec())
        .await
        .unwrap();
    let seen = lock(&rec.seen).clone();
    let v = |b: &[u8]| Some(b.to_vec());
    assert_eq!(
        seen,
        vec![
            (Space::Data, b"k".to_vec(), None, v(b"v1")),
            (Space::Tombstones, b"k".to_vec(), None, v(b"t")),
            (Space::Data, b"k".to_vec(), v(b"v1"), None),
            (Space::Tombstones, b"k".to_vec(), v(b"t"), None),
            (Space::Meta, b"m".to_vec(), None, v(b"x")),
        ]
    );
    assert_eq!(s.get(Space::Tombstones, b"k").await.unwrap(), None);
    s.close().await.unwrap();
}

/// A batch that keeps its key but changes side keys reports each side key with its own
/// old value (it once got the kept key's), and checks the side keys' length.
#[tokio::test]
async fn a_kept_key_with_side_writes_reports_each_side_keys_own_old_value() {
    let dir = tempfile::tempdir().unwrap();
    let s = inline_io(dir.path());
    s.put(Space::Data, b"k".to_vec(), b"data".to_vec())
        .await
        .unwrap();
    s.put(Space::Tombstones, b"t".to_vec(), b"old".to_vec())
        .await
        .unwrap();
    let rec = Arc::new(Recorder::default());
    s.set_observer(rec.clone());
    s.modify_with(Space::Data, b"k".to_vec(), |old| {
        assert_eq!(old, Some(&b"data"[..]));
        let edit = Edit {
            change: Change::Keep,
            also: vec![(
                Space::Tombstones,
                b"t".to_vec(),
                Change::Put(b"new".to_vec()),
            )],
        };
        (edit, ())
    })
    .await
    .unwrap();
    assert_eq!(
        lock(&rec.seen).clone(),
        vec![(
            Space::Tombstones,
            b"t".to_vec(),
            Some(b"old".to_vec()),
            Some(b"new".to_vec())
        )]
    );
    let long = vec![b'x'; MAX_KEY_BYTES + 1];
    let err = s
        .modify_with(Space::Data, b"k".to_vec(), move |_| {
            let edit = Edit {
                change: Change::Keep,
                also: vec![(Space::Tombstones, long, Change::Delete)],
            };
            (edit, ())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::KeyTooLong { .. }), "{err}");
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_scans_stay_within_their_bounds_and_resume_after_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0u8..50 {
        s.put(Space::Data, vec![i, 1], vec![i]).await.unwrap();
    }
    let rows = s
        .scan_range(Space::Data, vec![10], Some(vec![20]), None, 100)
        .await
        .unwrap();
    let firsts: Vec<u8> = rows.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(firsts, (10..20).collect::<Vec<u8>>());
    let rows = s
        .scan_range(Space::Data, vec![10], Some(vec![20]), Some(vec![14, 1]), 3)
        .await
        .unwrap();
    let firsts: Vec<u8> = rows.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(firsts, vec![15, 16, 17]);
    let rows = s
        .scan_range(Space::Data, vec![45], None, None, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "an open upper bound runs to the end");
    let rows = s.scan_prefix(Space::Data, vec![7], 10).await.unwrap();
    assert_eq!(rows, vec![(vec![7, 1], vec![7])]);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_legacy_data_keyspace_is_migrated_under_new_keys_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What an older version wrote: values under their raw keys in keyspace "data".
        let db = Database::builder(dir.path()).open().unwrap();
        let legacy = db
            .keyspace(LEGACY_DATA_KEYSPACE, KeyspaceCreateOptions::default)
            .unwrap();
        for i in 0..25_000u32 {
            legacy.insert(i.to_be_bytes(), b"v").unwrap();
        }
        db.persist(PersistMode::SyncAll).unwrap();
    }
    let s = open(dir.path());
    let moved = s
        .migrate_legacy(Space::Data, |k| [b"new:".as_slice(), k].concat())
        .await
        .unwrap();
    assert_eq!(moved, 25_000);
    assert_eq!(
        s.get(
            Space::Data,
            &[b"new:".as_slice(), &7u32.to_be_bytes()].concat()
        )
        .await
        .unwrap()
        .as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        s.migrate_legacy(Space::Data, |k| k.to_vec()).await.unwrap(),
        0,
        "migrating twice moves nothing"
    );
    s.close().await.unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.migrate_legacy(Space::Data, |k| k.to_vec()).await.unwrap(),
        0
    );
    assert_eq!(s.approximate_len(Space::Data), 25_000);
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_io_mode_acknowledges_only_synced_writes_and_keeps_them() {
    for io in [StorageIo::Threads, StorageIo::Inline, StorageIo::InlineSync] {
        let dir = tempfile::tempdir().unwrap();
        let opts = StorageOptions {
            io,
            group_commit: GroupCommit {
                window: Duration::from_micros(300),
                max_writes: 16,
            },
            ..StorageOptions::default()
        };
        let s = Storage::open(dir.path(), opts.clone()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.modify(Space::Data, i.to_be_bytes().to_vec(), move |_| {
                    (Change::Put(vec![i as u8; 10]), ())
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let st = s.stats();
        assert_eq!(st.writes_committed, 200, "{io:?}");
        assert!(
            st.writes_synced >= 200,
            "{io:?}: every acknowledged write was synced"
        );
        assert!(st.fsyncs <= 200, "{io:?}");
        s.close().await.unwrap();
        drop(s);
        let s = Storage::open(dir.path(), opts).unwrap();
        assert_eq!(
            s.get(Space::Data, &199u32.to_be_bytes()).await.unwrap(),
            Some(vec![199u8; 10]),
            "{io:?}"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_syncer_fsyncs_the_active_journal_outside_the_engine_lock() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..20u32 {
        s.put(Space::Data, i.to_be_bytes().to_vec(), b"v".to_vec())
            .await
            .unwrap();
    }
    let shared = &s.inner.shared;
    assert!(s.stats().fsyncs >= 1);
    assert_eq!(
        shared.fsyncs_under_engine_lock.load(Ordering::Relaxed),
        0,
        "every fsync went through the syncer's own descriptor"
    );
    // The file it follows is the journal the writes went to: the newest one.
    let newest = sync::JournalFile::newest_id(dir.path())
        .unwrap()
        .expect("fjall keeps its journals as <id>.jnl in the database directory");
    let followed = lock(&shared.journal).as_ref().map(|j| j.id());
    assert_eq!(followed, Some(newest));
    s.close().await.unwrap();
}

#[test]
fn the_syncer_follows_journal_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |id: u64| std::fs::write(dir.path().join(format!("{id}.jnl")), b"").unwrap();
    let mut current = None;
    let mut follow = || {
        sync::JournalFile::follow(dir.path(), &mut current).unwrap();
        current.as_ref().map(|j| j.id())
    };
    assert_eq!(follow(), None, "no journal yet");
    touch(3);
    touch(5);
    assert_eq!(follow(), Some(5), "the newest at start");
    touch(6);
    touch(7);
    assert_eq!(follow(), Some(7), "each rotation after");
    std::fs::remove_file(dir.path().join("5.jnl")).unwrap();
    assert_eq!(follow(), Some(7), "an old journal deleted");
}
