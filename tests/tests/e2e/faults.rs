//! The fault layer, changed at run time by an admin request: cut links behave like a
//! partition (the failure detector sees it, quorums feel it), a cleared spec heals, and
//! a conflict policy that differs between nodes is refused like any other mismatch.

use std::sync::Arc;
use std::time::Duration;

use dynakv_client::{ClientError, ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::{ConflictPolicy, ErrorCode, FaultSpec, LinkRule};
use dynakv_common::NodeId;

use crate::harness::{eventually, Cluster, ClusterOptions};

fn cut(from: &str, to: &str) -> LinkRule {
    LinkRule {
        from: Some(NodeId::new(from).unwrap()),
        to: Some(NodeId::new(to).unwrap()),
        cut: true,
        ..LinkRule::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_set_at_run_time_is_felt_and_healed() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| c.hinted_handoff = false),
        ..Default::default()
    })
    .await?;
    let spec = FaultSpec {
        rules: vec![cut("n1", "n3"), cut("n3", "n1")],
        ..FaultSpec::default()
    };
    // Set on n1 only: a cut acts on both ends of its links.
    let admin = cluster.client_only(0).await?;
    admin.set_faults(spec.clone()).await?;
    assert_eq!(admin.faults().await?, spec);
    cluster.wait_sees_down(0, &[2]).await?;
    cluster.wait_sees_down(2, &[0]).await?;
    cluster.wait_sees_up(1, &[0, 2]).await?;

    match admin
        .put(b"p", b"v".to_vec(), WriteOptions::with_w(Quorum::All))
        .await
    {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::QuorumNotReached),
        other => panic!("W=all across a partition must fail: {other:?}"),
    }
    admin
        .put(b"p", b"v".to_vec(), WriteOptions::with_w(Quorum::Quorum))
        .await?;

    // Heal: every node up again, and W=all works.
    admin.set_faults(FaultSpec::default()).await?;
    cluster.wait_sees_up(0, &[1, 2]).await?;
    cluster.wait_sees_up(2, &[0, 1]).await?;
    let g = admin.get(b"p", ReadOptions::with_r(Quorum::All)).await?;
    assert_eq!(g.values, vec![b"v".to_vec()]);
    admin
        .put(b"p2", b"v".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_conflict_policy_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            if c.id == "n3" {
                c.conflict_policy = ConflictPolicy::Lww;
            }
        }),
        isolated: vec![2],
        ..Default::default()
    })
    .await?;
    cluster.wait_sees_down(0, &[2]).await?;
    cluster.wait_sees_down(2, &[0, 1]).await?;
    let log = eventually(Duration::from_secs(10), "the refusal is logged", || {
        let log = std::fs::read_to_string(&cluster.nodes[0].log).unwrap_or_default();
        async move { log.contains("disagree on the cluster").then_some(log) }
    })
    .await?;
    assert!(log.contains("conflict policy lww"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_writer_wins_loses_one_of_two_concurrent_writes() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| c.conflict_policy = ConflictPolicy::Lww),
        ..Default::default()
    })
    .await?;
    let a = cluster.client_only(0).await?;
    let b = cluster.client_only(1).await?;
    a.put(b"cart", b"start".to_vec(), WriteOptions::default())
        .await?;
    let ctx = a.get(b"cart", ReadOptions::default()).await?.context;
    a.put(
        b"cart",
        b"alice".to_vec(),
        WriteOptions::with_context(ctx.clone()),
    )
    .await?;
    b.put(b"cart", b"bob".to_vec(), WriteOptions::with_context(ctx))
        .await?;
    let g = a.get(b"cart", ReadOptions::with_r(Quorum::All)).await?;
    assert_eq!(
        g.values.len(),
        1,
        "LWW keeps one of two concurrent writes: {g:?}"
    );
    Ok(())
}
