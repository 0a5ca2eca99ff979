//! Tombstone reaping: a deleted key's storage is removed everywhere once every primary
//! holds the tombstone and the grace period passed — and the value never comes back,
//! neither from a replica that was down, nor from a late hint, nor from anti-entropy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;

use crate::harness::{eventually, Cluster, ClusterOptions};

const WAIT: Duration = Duration::from_secs(40);

fn fast_repair(c: &mut dynakv_node::NodeConfig) {
    c.tombstone_grace_s = 3;
    c.hint_ttl_s = 3;
    c.reap_interval_ms = 300;
    c.hint_delivery_interval_ms = 200;
    c.anti_entropy_interval_ms = 500;
    c.anti_entropy_exchanges_per_s = 1000;
}

/// Whether any node's R=1 read of `key` returns `value`.
async fn anyone_sees(cluster: &Cluster, nodes: &[usize], key: &[u8], value: &[u8]) -> bool {
    for &i in nodes {
        if let Ok(c) = cluster.client_only(i).await {
            if let Ok(g) = c.get(key, ReadOptions::with_r(Quorum::One)).await {
                if g.values.iter().any(|v| v == value) {
                    return true;
                }
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_an_outage_stays_deleted_and_is_reaped_everywhere() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        tweak: Arc::new(fast_repair),
        ..Default::default()
    })
    .await?;
    let key = b"doomed";
    let (primaries, _) = cluster.placement(key, 3);
    let client = cluster.client_only(primaries[0]).await?;
    client
        .put(key, b"old".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    let down = primaries[2];
    cluster.kill(down);
    cluster.wait_sees_down(primaries[0], &[down]).await?;
    client
        .delete(key, {
            let read = client.get(key, ReadOptions::default()).await?;
            WriteOptions::with_context(read.context)
        })
        .await?;
    // The returning replica still has the old value on disk.
    cluster.restart(down).await?;

    let resurrected = AtomicBool::new(false);
    let (this, resurrected_ref, primaries_ref) = (&cluster, &resurrected, &primaries);
    eventually(
        WAIT,
        "the key's storage is gone on every primary",
        || async move {
            if anyone_sees(this, &[0, 1, 2, 3], key, b"old").await {
                resurrected_ref.store(true, Ordering::SeqCst);
            }
            for &i in primaries_ref {
                let d = this.debug(i, key).await.ok()?;
                if d.state.is_some() || d.tombstone_since_ms.is_some() || !d.hints.is_empty() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    assert!(
        !resurrected.load(Ordering::SeqCst),
        "a reader saw the deleted value again"
    );
    let reaped = cluster
        .counter_sum(primaries.iter().copied(), "tombstones_reaped")
        .await?;
    assert!(reaped >= 3, "each primary reaped its copy: {reaped}");

    // Anti-entropy and hints find nothing to bring back.
    for i in 0..4 {
        cluster.client_only(i).await?.anti_entropy(true).await?;
    }
    let g = client.get(key, ReadOptions::with_r(Quorum::All)).await?;
    assert!(!g.found(), "{g:?}");
    for &i in &primaries {
        assert!(cluster.debug(i, key).await?.state.is_none());
    }
    // The key can be written again, and an old context does not cover the new value.
    let put = client
        .put(key, b"reborn".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    let g = client.get(key, ReadOptions::with_r(Quorum::All)).await?;
    assert_eq!(g.values, vec![b"reborn".to_vec()]);
    assert!(
        put.context.dots.values().all(|c| *c > 1),
        "new dots sit above the reaped ones"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_older_than_the_grace_period_cannot_bring_back_a_reaped_delete() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        replicas: 3,
        tweak: Arc::new(|c| {
            fast_repair(c);
            // Only the hint could carry the old value back.
            c.read_repair = false;
        }),
        ..Default::default()
    })
    .await?;
    let key = b"zombie";
    let (primaries, fallbacks) = cluster.placement(key, 3);
    let (owner, fallback) = (primaries[2], fallbacks[0]);
    // The fallback takes a hint with the old value for the owner...
    cluster.kill(owner);
    cluster.wait_sees_down(primaries[0], &[owner]).await?;
    let client = cluster.client_only(primaries[0]).await?;
    client
        .put(key, b"old".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    {
        let this = &cluster;
        eventually(WAIT, "the fallback holds the hint", || async move {
            (!this.debug(fallback, key).await.ok()?.hints.is_empty()).then_some(())
        })
        .await?;
    }
    // ...and goes down with it before delivering it.
    cluster.kill(fallback);
    cluster.restart(owner).await?;
    cluster.wait_sees_up(primaries[0], &[owner]).await?;
    // The owner lacks the key; a delete that sees the value reaches every primary. (A
    // deadline longer than the node's 2 s: the owner has just restarted (rebuilding its
    // hash trees, reconnecting to peers), and a debug build on a loaded two-core CI
    // machine once took longer than 2 s to answer this read.)
    let read = client
        .get(
            key,
            ReadOptions {
                timeout_ms: Some(15_000),
                ..ReadOptions::with_r(Quorum::All)
            },
        )
        .await?;
    assert_eq!(read.values, vec![b"old".to_vec()]);
    client
        .delete(
            key,
            WriteOptions {
                w: Quorum::All,
                ..WriteOptions::with_context(read.context)
            },
        )
        .await?;
    {
        let (this, primaries) = (&cluster, &primaries);
        eventually(
            WAIT,
            "the delete is reaped on every primary",
            || async move {
                for &i in primaries {
                    if this.debug(i, key).await.ok()?.state.is_some() {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await?;
    }
    // The fallback returns with its old hint: it has outlived its time-to-live, so it is
    // dropped, not delivered.
    cluster.restart(fallback).await?;
    let this = &cluster;
    let counters = eventually(WAIT, "the old hint is dropped", || async move {
        let c = this.counters(fallback).await.ok()?;
        (c["hints_pending"] == 0).then_some(c)
    })
    .await?;
    assert_eq!(counters["hints_expired"], 1, "{counters:?}");
    assert_eq!(counters["hints_delivered"], 0, "{counters:?}");
    let g = client.get(key, ReadOptions::with_r(Quorum::All)).await?;
    assert!(!g.found(), "the deleted value came back: {g:?}");
    for &i in &primaries {
        assert!(cluster.debug(i, key).await?.state.is_none());
    }
    Ok(())
}
