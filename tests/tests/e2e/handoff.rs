//! Sloppy quorums and hinted handoff: a fallback stands in for a down primary, holds the
//! write durably as a hint (through kill -9), serves it to reads, and hands it to the
//! primary when it is back; `--strict` counts primaries only; the hint store is bounded.

use std::sync::Arc;
use std::time::Duration;

use dynakv_client::{ClientError, ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;
use dynakv_common::replication::QuorumMode;
use dynakv_common::wire::ErrorCode;

use crate::harness::{eventually, Cluster, ClusterOptions};

const WAIT: Duration = Duration::from_secs(30);

fn handoff_only(c: &mut dynakv_node::NodeConfig) {
    c.hint_delivery_interval_ms = 200;
    c.anti_entropy = false;
    c.read_repair = false;
}

fn live_values(d: &dynakv_common::wire::DebugReplica) -> Vec<Vec<u8>> {
    d.state
        .as_ref()
        .map(|s| s.live_values().into_iter().map(<[u8]>::to_vec).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_holds_a_down_primarys_writes_serves_them_and_hands_them_back(
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        replicas: 3,
        tweak: Arc::new(handoff_only),
        ..Default::default()
    })
    .await?;
    let key = b"cart:7";
    let (primaries, fallbacks) = cluster.placement(key, 3);
    let (coordinator, owner, fallback) = (primaries[0], primaries[2], fallbacks[0]);
    let owner_id = cluster.nodes[owner].id.clone();
    cluster.kill(owner);
    cluster.wait_sees_down(coordinator, &[owner]).await?;
    let client = cluster.client_only(coordinator).await?;

    // Strict: only primaries count, and only two are up.
    let strict = WriteOptions {
        w: Quorum::All,
        mode: QuorumMode::Strict,
        ..WriteOptions::default()
    };
    match client.put(key, b"v1".to_vec(), strict).await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::QuorumNotReached);
            assert!(
                e.message.contains("only 2 of 3 primary replicas are reachable, 3 required with --strict (nothing was written)"),
                "{}",
                e.message
            );
        }
        other => panic!("a strict W=3 write with a primary down must fail: {other:?}"),
    }

    // Sloppy (the default): the fallback stands in and counts toward W=3.
    let put = client
        .put(key, b"v1".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    assert_eq!(put.replicas_acked, 3);
    let held = cluster.debug(fallback, key).await?;
    assert!(held.state.is_none(), "a fallback keeps no primary copy");
    assert_eq!(held.hints.len(), 1, "{held:?}");
    assert_eq!(held.hints[0].0.as_str(), owner_id);
    assert_eq!(held.hints[0].1.live_values(), vec![&b"v1"[..]]);
    let status = cluster.client_only(fallback).await?.status().await?;
    assert!(
        status
            .hints_pending
            .iter()
            .any(|(id, n)| id.as_str() == owner_id && *n >= 1),
        "status shows the hint pending for {owner_id}: {:?}",
        status.hints_pending
    );

    // With every primary down, the fallback still serves the write it holds.
    cluster.kill(primaries[0]);
    cluster.kill(primaries[1]);
    let reader = cluster.client_only(fallback).await?;
    let g = reader.get(key, ReadOptions::with_r(Quorum::One)).await?;
    assert_eq!(
        g.values,
        vec![b"v1".to_vec()],
        "the fallback serves its hint"
    );

    // Hints are durable: kill -9 the fallback, and it still holds the hint.
    cluster.kill(fallback);
    cluster.restart(fallback).await?;
    let held = cluster.debug(fallback, key).await?;
    assert_eq!(held.hints.len(), 1, "the hint survived kill -9: {held:?}");

    // The owner comes back: the hint is delivered, merged and fsync'd there, then deleted.
    cluster.restart(primaries[0]).await?;
    cluster.restart(primaries[1]).await?;
    cluster.restart(owner).await?;
    let this = &cluster;
    eventually(
        WAIT,
        "the owner holds v1 and the fallback no hint",
        || async move {
            let at_owner = this.debug(owner, key).await.ok()?;
            let at_fallback = this.debug(fallback, key).await.ok()?;
            (live_values(&at_owner) == vec![b"v1".to_vec()] && at_fallback.hints.is_empty())
                .then_some(())
        },
    )
    .await?;
    let counters = cluster.counters(fallback).await?;
    assert!(counters["hints_delivered"] >= 1, "{counters:?}");
    assert_eq!(counters["hints_pending"], 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hint_store_is_bounded_and_anti_entropy_repairs_what_it_dropped() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        tweak: Arc::new(|c| {
            c.hint_delivery_interval_ms = 200;
            c.read_repair = false;
            c.max_hints = 2;
            c.anti_entropy_interval_ms = 500;
            c.anti_entropy_exchanges_per_s = 1000;
        }),
        ..Default::default()
    })
    .await?;
    // Keys that `owner` replicates and whose one fallback (4 nodes, N=3) is `fallback`.
    let owner = 3;
    let mut keys = Vec::new();
    let mut fallback = None;
    for i in 0.. {
        let key = format!("bounded:{i}");
        let (primaries, fallbacks) = cluster.placement(key.as_bytes(), 3);
        if !primaries.contains(&owner) {
            continue;
        }
        if *fallback.get_or_insert(fallbacks[0]) == fallbacks[0] {
            keys.push(key);
        }
        if keys.len() == 6 {
            break;
        }
    }
    let fallback = fallback.expect("found keys");
    cluster.kill(owner);
    for i in 0..4 {
        if i != owner {
            cluster.wait_sees_down(i, &[owner]).await?;
        }
    }
    let client = cluster.client_from((fallback + 1) % 4).await?;
    for key in &keys {
        client
            .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await?;
    }
    let counters = {
        let this = &cluster;
        eventually(
            WAIT,
            "the fallback dropped the hints past its bound",
            || async move {
                let c = this.counters(fallback).await.ok()?;
                (c["hints_stored"] + c["hints_dropped"] >= 6).then_some(c)
            },
        )
        .await?
    };
    assert_eq!(counters["hints_pending"], 2, "{counters:?}");
    assert_eq!(counters["hints_dropped"], 4, "{counters:?}");

    // Back up: hints deliver two keys, anti-entropy the other four.
    cluster.restart(owner).await?;
    let (this, keys) = (&cluster, &keys);
    eventually(WAIT, "the owner holds every key", || async move {
        for key in keys {
            let d = this.debug(owner, key.as_bytes()).await.ok()?;
            if live_values(&d) != vec![b"v".to_vec()] {
                return None;
            }
        }
        Some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_runs_after_the_reply_before_it_or_not_at_all() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            c.hinted_handoff = false;
            c.anti_entropy = false;
            c.read_repair_window_ms = 300;
        }),
        ..Default::default()
    })
    .await?;
    // Node 3 misses two writes.
    cluster.kill(2);
    cluster.wait_sees_down(0, &[2]).await?;
    let client = cluster.client_only(0).await?;
    for key in ["rr:sync", "rr:async"] {
        client
            .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await?;
    }
    cluster.restart(2).await?;
    cluster.wait_sees_up(0, &[2]).await?;
    let read = |mode| ReadOptions {
        r: Quorum::All,
        read_repair: mode,
        ..ReadOptions::default()
    };
    use dynakv_common::wire::ReadRepair;

    // off: the read answers, and the stale replica stays behind.
    let g = client.get(b"rr:sync", read(ReadRepair::Off)).await?;
    assert_eq!(g.values, vec![b"v".to_vec()]);
    assert!(cluster.debug(2, b"rr:sync").await?.state.is_none());

    // sync: by the time the answer arrives, every replica that answered holds it.
    let g = client.get(b"rr:sync", read(ReadRepair::Sync)).await?;
    assert_eq!(g.values, vec![b"v".to_vec()]);
    assert_eq!(
        live_values(&cluster.debug(2, b"rr:sync").await?),
        vec![b"v".to_vec()],
        "repaired before the reply"
    );

    // async (the default): repaired shortly after the reply.
    let g = client.get(b"rr:async", read(ReadRepair::Async)).await?;
    assert_eq!(g.values, vec![b"v".to_vec()]);
    let this = &cluster;
    eventually(WAIT, "async read repair reaches node 3", || async move {
        let d = this.debug(2, b"rr:async").await.ok()?;
        (live_values(&d) == vec![b"v".to_vec()]).then_some(())
    })
    .await?;
    let counters = cluster.counters(0).await?;
    assert_eq!(counters["read_repairs_sync"], 1, "{counters:?}");
    assert_eq!(counters["read_repairs_async"], 1, "{counters:?}");
    Ok(())
}
