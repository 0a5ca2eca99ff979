//! Node loss: quorums keep working, W=all fails clearly, acknowledged writes survive kill -9.

use std::time::Duration;

use crate::harness::{Cluster, ClusterOptions};
use dynakv_client::{ClientError, ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_survives_a_killed_node_and_all_fails_fast() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_from(0).await?;
    cluster.kill(2);

    // Quorum writes and reads keep working with one of three nodes gone.
    for i in 0..20 {
        let key = format!("q{i}");
        client
            .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await?;
        let g = client.get(key.as_bytes(), ReadOptions::default()).await?;
        assert_eq!(g.values, vec![b"v".to_vec()]);
    }

    // W=all cannot succeed: it must fail with a clear error, not hang. The outer timeout
    // only guards the test against a hang; it is not a performance assertion.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client.put(b"all", b"v".to_vec(), WriteOptions::with_w(Quorum::All)),
    )
    .await
    .expect("a W=all write with a node down must not hang");
    match result {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::QuorumNotReached);
            assert!(
                e.message.starts_with("write quorum not reached"),
                "{}",
                e.message
            );
            assert!(e.message.contains("3 required"), "{}", e.message);
        }
        other => panic!("expected a quorum error, got {other:?}"),
    }
    // Same for R=all.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        client.get(b"q1", ReadOptions::with_r(Quorum::All)),
    )
    .await
    .expect("an R=all read with a node down must not hang");
    assert!(
        matches!(result, Err(ClientError::Server(ref e)) if e.code == ErrorCode::QuorumNotReached),
        "{result:?}"
    );

    // Once the detector has marked the node down, W=all is refused before writing.
    cluster.wait_sees_down(0, &[2]).await?;
    let err = client
        .put(b"all2", b"v".to_vec(), WriteOptions::with_w(Quorum::All))
        .await
        .expect_err("W=all must fail with a node down");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_and_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_from(0).await?;
    // Every replica acknowledged these (W=all), so node 3's disk must have each one.
    for i in 0..50 {
        client
            .put(
                format!("d{i}").as_bytes(),
                format!("value-{i}").into_bytes(),
                WriteOptions::with_w(Quorum::All),
            )
            .await?;
    }
    // kill -9 keeps the page cache, so also check the acks waited for fsync: every
    // write node 3 has applied is covered by a completed fsync already.
    let status = cluster.client_only(2).await?.status().await?;
    let counter = |name: &str| {
        status
            .counters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    };
    let (written, synced) = (counter("storage_writes"), counter("storage_writes_synced"));
    assert!(
        synced >= Some(50),
        "only {synced:?} writes fsync'd after 50 acknowledged"
    );
    assert!(written.is_some() && synced <= written);
    cluster.kill(2);
    cluster.restart(2).await?;
    // Now leave node 3 alone: only its own disk can answer.
    cluster.kill(0);
    cluster.kill(1);
    let lonely = cluster.client_only(2).await?;
    for i in 0..50 {
        let g = lonely
            .get(format!("d{i}").as_bytes(), ReadOptions::with_r(Quorum::One))
            .await?;
        assert_eq!(
            g.values,
            vec![format!("value-{i}").into_bytes()],
            "key d{i} lost by node 3"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_right_after_ack_keeps_the_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_only(0).await?;
    // With N=3 on three nodes every node replicates every key, so node 1 coordinates.
    let key = "w1-key";
    client
        .put(
            key.as_bytes(),
            b"acked".to_vec(),
            WriteOptions::with_w(Quorum::One),
        )
        .await?;
    cluster.kill(0);
    cluster.kill(1);
    cluster.kill(2);
    cluster.restart(0).await?;
    let g = cluster
        .client_only(0)
        .await?
        .get(key.as_bytes(), ReadOptions::with_r(Quorum::One))
        .await?;
    assert_eq!(
        g.values,
        vec![b"acked".to_vec()],
        "the coordinator's fsync'd copy survives kill -9"
    );
    Ok(())
}

/// The actor (node id + epoch) that coordinated a write, from its returned context.
fn coordinator_actor(context: &dynakv_common::Clock, node: &str) -> String {
    let prefix = format!("{node}.");
    context
        .dots
        .keys()
        .map(|a| a.0.clone())
        .find(|a| a.starts_with(&prefix))
        .expect("the context names the coordinator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_comes_back_with_a_new_epoch_a_stopped_one_does_not() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let write = |c: std::sync::Arc<dynakv_client::Client>, key: &'static str| async move {
        c.put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await
    };
    let first = write(cluster.client_only(0).await?, "e1").await?;
    let before = coordinator_actor(&first.context, "n1");

    cluster.stop(0).await?;
    cluster.restart(0).await?;
    let after_clean = coordinator_actor(
        &write(cluster.client_only(0).await?, "e2").await?.context,
        "n1",
    );
    assert_eq!(before, after_clean, "a clean restart keeps the actor");

    cluster.kill(0);
    cluster.restart(0).await?;
    let after_kill = coordinator_actor(
        &write(cluster.client_only(0).await?, "e3").await?.context,
        "n1",
    );
    assert_ne!(
        before, after_kill,
        "after kill -9 the node must not reuse its actor"
    );
    // Data written before the kill is still there.
    let g = cluster
        .client_only(0)
        .await?
        .get(b"e2", ReadOptions::with_r(Quorum::All))
        .await?;
    assert_eq!(g.values, vec![b"v".to_vec()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_under_load_finishes_its_requests_and_clients_move_on() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        // Each client starts at node 1, which is about to be stopped.
        let client = cluster.client_from(0).await?;
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let key = format!("load-{w}-{i}");
                client
                    .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
                    .await?;
                acked.push(key);
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            anyhow::Ok(acked)
        }));
    }
    // Stop node 1 cleanly once the writers are busy.
    let p = progress.clone();
    crate::harness::eventually(Duration::from_secs(30), "the load is running", || {
        let n = p.load(std::sync::atomic::Ordering::SeqCst);
        async move { (n >= 16).then_some(()) }
    })
    .await?;
    cluster.stop(0).await?;
    let mut acked = Vec::new();
    for w in writers {
        // Requests in flight finish, later ones are refused unread and go to another node:
        // no write fails, and none comes back "may or may not have been applied".
        acked.extend(w.await??);
    }
    assert_eq!(acked.len(), 8 * 40);
    let reader = cluster.client_from(1).await?;
    for key in &acked {
        let g = reader.get(key.as_bytes(), ReadOptions::default()).await?;
        assert_eq!(g.values, vec![b"v".to_vec()], "{key}");
    }
    Ok(())
}
