//! Merkle-tree anti-entropy: replicas that diverged (hints and read repair off) converge
//! without being read — on the interval, or at once when an admin asks.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;

use crate::harness::{cli_binary, eventually, Cluster, ClusterOptions};

const WAIT: Duration = Duration::from_secs(40);

/// Diverges a 3-node cluster: node 3 misses the `a:*` writes, node 1 the `b:*` writes,
/// and `both` gets a value on each side (two siblings once merged).
async fn diverge(cluster: &mut Cluster, keys: usize) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    cluster.kill(2);
    cluster.wait_sees_down(0, &[2]).await?;
    let c = cluster.client_only(0).await?;
    for i in 0..keys {
        let key = format!("a:{i}");
        c.put(key.as_bytes(), b"a".to_vec(), WriteOptions::default())
            .await?;
        all.push(key);
    }
    c.put(b"both", b"side-a".to_vec(), WriteOptions::default())
        .await?;
    cluster.restart(2).await?;
    cluster.wait_sees_up(1, &[2]).await?;
    cluster.kill(0);
    cluster.wait_sees_down(1, &[0]).await?;
    let c = cluster.client_only(1).await?;
    for i in 0..keys {
        let key = format!("b:{i}");
        c.put(key.as_bytes(), b"b".to_vec(), WriteOptions::default())
            .await?;
        all.push(key);
    }
    // A blind write: concurrent with side A's.
    c.put(b"both", b"side-b".to_vec(), WriteOptions::default())
        .await?;
    all.push("both".to_string());
    cluster.restart(0).await?;
    for i in 0..3 {
        cluster.wait_sees_up(i, &[0, 1, 2]).await?;
    }
    Ok(all)
}

/// Whether every node holds the same state (same digest) for every key.
async fn converged(cluster: &Cluster, keys: &[String]) -> anyhow::Result<bool> {
    for key in keys {
        let mut digests = Vec::new();
        for i in 0..3 {
            let d = cluster.debug(i, key.as_bytes()).await?;
            digests.push(d.state.map(|s| s.digest()));
        }
        if digests.iter().any(|d| d.is_none() || *d != digests[0]) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_on_the_interval_without_reads_or_hints() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            c.hinted_handoff = false;
            c.read_repair = false;
            c.anti_entropy_interval_ms = 500;
            c.anti_entropy_exchanges_per_s = 1000;
        }),
        ..Default::default()
    })
    .await?;
    let keys = diverge(&mut cluster, 20).await?;
    let this = &cluster;
    let keys = &keys;
    eventually(
        WAIT,
        "every replica holds the same state for every key",
        || async move { converged(this, keys).await.ok()?.then_some(()) },
    )
    .await?;
    // Both concurrent writes survived as siblings on every replica.
    for i in 0..3 {
        let d = cluster.debug(i, b"both").await?;
        let siblings = d.state.expect("converged").live_values().len();
        assert_eq!(siblings, 2, "node {i} holds both concurrent writes");
    }
    let status = cluster.client_only(2).await?.anti_entropy(false).await?;
    assert!(status.trees_ready);
    assert!(status.exchanges > 0, "{status:?}");
    let repaired = cluster.counter_sum(0..3, "ae_keys_repaired").await?;
    // Node 1 came back lacking the 20 `b:*` keys and side B of `both`: at least 21
    // changes after its restart, all made by anti-entropy (repairs counted before a
    // node's restart are lost with its counters).
    assert!(repaired >= 21, "{repaired} keys repaired");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_runs_an_exchange_now_and_sees_what_it_did() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            c.hinted_handoff = false;
            c.read_repair = false;
            // No background exchanges: only the admin command exchanges.
            c.anti_entropy = false;
        }),
        ..Default::default()
    })
    .await?;
    let keys = diverge(&mut cluster, 10).await?;
    assert!(!converged(&cluster, &keys).await?, "the replicas diverged");

    // Node 2 exchanges with nodes 1 and 3: it converges with both, and so do they.
    let out = Command::new(cli_binary())
        .arg("--config")
        .arg(cluster.client_config())
        .arg("--node")
        .arg(&cluster.nodes[1].addr)
        .args(["admin", "anti-entropy", "--now"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("trees ready"), "{text}");
    assert!(
        converged(&cluster, &keys).await?,
        "converged when the command returns"
    );

    let json = Command::new(cli_binary())
        .arg("--config")
        .arg(cluster.client_config())
        .arg("--node")
        .arg(&cluster.nodes[1].addr)
        .args(["--json", "admin", "anti-entropy"])
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert!(status["keys_repaired"].as_u64() >= Some(1), "{status}");
    let last = status["last"].as_array().expect("exchange records");
    assert!(
        last.iter().any(|r| r["keys_differing"].as_u64() > Some(0)),
        "{status}"
    );
    // Reads agree everywhere now.
    for i in 0..3 {
        let g = cluster
            .client_only(i)
            .await?
            .get(b"a:0", ReadOptions::with_r(Quorum::One))
            .await?;
        assert_eq!(g.values, vec![b"a".to_vec()], "node {i}");
    }
    Ok(())
}

/// Admin rounds do not pile up: requests that arrive while one runs share the next
/// round. A batch of 256 such requests ran 256 full rounds at once before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_rounds_share_one_round() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| c.anti_entropy = false),
        ..Default::default()
    })
    .await?;
    let admin = cluster.client_only(0).await?;
    let before = admin.anti_entropy(false).await?.exchanges;
    let one_round = admin.anti_entropy(true).await?.exchanges - before;
    assert!(one_round > 0, "a round exchanges something");
    let before = admin.anti_entropy(false).await?.exchanges;
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let admin = admin.clone();
        asks.spawn(async move { admin.anti_entropy(true).await });
    }
    while let Some(status) = asks.join_next().await {
        status??;
    }
    let after = admin.anti_entropy(false).await?.exchanges;
    assert!(
        after - before <= 2 * one_round,
        "8 concurrent requests ran {} exchanges; one round is {one_round}",
        after - before
    );
    Ok(())
}
