//! A client that routes by key around a node the cluster shows down: keys whose first
//! replica is that node go at once to another replica, never through a connect attempt
//! to the dead node on the request path. And around a node that stalls unnoticed: a
//! read it does not answer is hedged to another replica, a write it meets with silence
//! waits alone, and either way the client's next reads and writes pass it over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_client::{Client, ClientOptions, ReadOptions, WriteOptions};
use dynakv_common::dist::Dist;
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::{FaultSpec, LinkRule};
use dynakv_common::NodeId;

use crate::harness::{eventually, Cluster, ClusterOptions};

/// The node that is killed (n4).
const DEAD: usize = 3;
/// The node every client connects to first (n1).
const SEED: usize = 0;
/// The clients' connect timeout, far longer than the whole test: a request that dials
/// the dead node waits this long, so the deadlines below are guards against such a
/// wait, not timings, and a slow machine cannot fail them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
/// Far more than the test needs when no request dials the dead node (seconds).
const GUARD: Duration = Duration::from_secs(120);
/// The hedge delay of the stalled-node tests: well above what a healthy request takes
/// on a loaded CI machine, well below QUIC's 5 s idle timeout.
const HEDGE: Duration = Duration::from_secs(1);

/// Options as the CLI makes them: every node listed in order (n1 first, the last one
/// last, as in client.toml), routing by key.
fn cli_options(cluster: &Cluster) -> anyhow::Result<ClientOptions> {
    let nodes = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let mut opts = ClientOptions::new(nodes, cluster.settings.tls_config()?);
    opts.route_by_key = true;
    Ok(opts)
}

/// A client as the CLI makes one, whose dials wait [`CONNECT_TIMEOUT`].
async fn client(cluster: &Cluster) -> anyhow::Result<Arc<Client>> {
    let mut opts = cli_options(cluster)?;
    opts.connect_timeout = CONNECT_TIMEOUT;
    Ok(Client::connect(opts).await?)
}

/// The stalled-node tests' cluster (three nodes, N=3: n1 is a replica of every key) and
/// a client connected to n1 that hedges after [`HEDGE`] and passes a node over for
/// longer than a test takes, so what follows does not depend on speed.
async fn hedging_client() -> anyhow::Result<(Cluster, Arc<Client>)> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        replicas: 3,
        ..Default::default()
    })
    .await?;
    let mut opts = cli_options(&cluster)?;
    opts.read_hedge = Some(HEDGE);
    opts.suspect_for = Duration::from_secs(600);
    let client = Client::connect(opts).await?;
    Ok((cluster, client))
}

/// Writes `key` and reads it back.
async fn put_get(client: &Client, key: &str) -> anyhow::Result<()> {
    client
        .put(
            key.as_bytes(),
            key.as_bytes().to_vec(),
            WriteOptions::default(),
        )
        .await?;
    let got = client.get(key.as_bytes(), ReadOptions::default()).await?;
    anyhow::ensure!(
        got.values == vec![key.as_bytes().to_vec()],
        "{key}: {got:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_whose_first_replica_is_down_go_to_a_live_replica_at_once() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        ..Default::default()
    })
    .await?;
    // Keys led by the node to kill, of which the seed is no replica: the client has to
    // choose among the other replicas (the seed would coordinate them itself).
    let keys: Arc<Vec<String>> = Arc::new(
        (0..)
            .map(|i| format!("led-by-n4-{i}"))
            .filter(|k| {
                let (primaries, _) = cluster.placement(k.as_bytes(), 3);
                primaries[0] == DEAD && !primaries.contains(&SEED)
            })
            .take(100)
            .collect(),
    );
    cluster.kill(DEAD);
    let live: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != DEAD).collect();
    for &i in &live {
        cluster.wait_sees_down(i, &[DEAD]).await?;
    }

    // One-shot clients, as `dynakv put` and `dynakv get` are: each learns from the
    // status that n4 is down. Each takes milliseconds; one that dialled n4 would wait
    // CONNECT_TIMEOUT, past the guard.
    let done = AtomicUsize::new(0);
    let one_shots = async {
        for key in &keys[..20] {
            let client = client(&cluster).await?;
            put_get(&client, key).await?;
            client.close().await;
            done.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(GUARD, one_shots).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "only {} of 20 one-shot clients wrote and read a key led by the dead n4 within {GUARD:?} \
             (a client waited on a connection to it)",
            done.load(Ordering::Relaxed),
        ),
    }

    // One long-lived client under concurrency, as `dynakv bench` is: 8 workers, each
    // writing and reading 10 such keys of its own, then reading them again until the
    // client's back-off for an unreachable node (2 s) and its routing refresh have come
    // round twice. Done in about 5 s; a request that dialled n4 would wait CONNECT_TIMEOUT.
    let client = client(&cluster).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, keys, done) = (client.clone(), keys.clone(), done.clone());
        workers.spawn(async move {
            let mine = &keys[20 + 10 * w..30 + 10 * w];
            for key in mine {
                put_get(&client, key).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            for key in mine.iter().cycle() {
                if start.elapsed() >= Duration::from_secs(5) {
                    break;
                }
                let got = client.get(key.as_bytes(), ReadOptions::default()).await?;
                anyhow::ensure!(
                    got.values == vec![key.as_bytes().to_vec()],
                    "{key}: {got:?}"
                );
            }
            anyhow::Ok(())
        });
    }
    let all = async {
        while let Some(worker) = workers.join_next().await {
            worker??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(GUARD, all).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "8 workers of one client did not finish within {GUARD:?} ({} of their 80 writes and \
             reads of keys led by the dead n4 done): requests waited on connections to it",
            done.load(Ordering::Relaxed)
        ),
    }
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_connected_node_leaves_unanswered_is_hedged_and_the_node_passed_over(
) -> anyhow::Result<()> {
    let (cluster, client) = hedging_client().await?;
    client
        .put(b"k", b"v".to_vec(), WriteOptions::with_w(Quorum::All))
        .await?;
    anyhow::ensure!(
        client.passed_over().is_empty(),
        "{:?}",
        client.passed_over()
    );

    // n1 stalls: its sockets stay open, so its connection looks alive until QUIC's idle
    // timeout, and the cluster has not yet noticed.
    cluster.pause(SEED);
    let got = tokio::time::timeout(GUARD, client.get(b"k", ReadOptions::default())).await??;
    anyhow::ensure!(got.values == vec![b"v".to_vec()], "{got:?}");
    anyhow::ensure!(
        client.hedged_reads() == 1,
        "the read should have been hedged once, was {}",
        client.hedged_reads()
    );

    // The next write goes to another replica: sent to the stalled n1 it would have no
    // answer and fail as "may or may not have been applied" when the connection timed out.
    client
        .put(b"k2", b"v2".to_vec(), WriteOptions::default())
        .await?;
    // And the next read too, without another hedge.
    let got = client.get(b"k2", ReadOptions::default()).await?;
    anyhow::ensure!(got.values == vec![b"v2".to_vec()], "{got:?}");
    anyhow::ensure!(
        client.hedged_reads() == 1,
        "a read went to the stalled node again: {} hedges",
        client.hedged_reads()
    );
    cluster.resume(SEED);
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_met_with_silence_passes_its_node_over_for_the_next_writes() -> anyhow::Result<()> {
    let (cluster, client) = hedging_client().await?;
    // A write-only client, connected to n1.
    client
        .put(b"first", b"v".to_vec(), WriteOptions::default())
        .await?;

    cluster.pause(SEED);
    let stalled = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .put(b"k1", b"v1".to_vec(), WriteOptions::default())
                .await
        }
    });
    // The write gets no answer, and not a datagram: n1 is passed over while the write
    // still waits (it is not sent again). Were n1 not passed over, the write would end
    // first, failing when the connection timed out.
    let n1 = cluster.nodes[SEED].addr.clone();
    eventually(GUARD, "n1 passed over, or the stalled write ended", || {
        let (client, n1, stalled) = (client.clone(), n1.clone(), &stalled);
        async move {
            if client.passed_over().contains(&n1) {
                Some(Ok(()))
            } else if stalled.is_finished() {
                Some(Err(anyhow::anyhow!(
                    "the write to the stalled n1 ended before n1 was passed over"
                )))
            } else {
                None
            }
        }
    })
    .await??;
    // The next write goes to another replica and is acknowledged.
    client
        .put(b"k2", b"v2".to_vec(), WriteOptions::default())
        .await?;
    cluster.resume(SEED);
    // The first write is answered now, or failed as "may or may not have been applied"
    // if n1's connection timed out meanwhile; either way it was sent once.
    let _ = stalled.await?;
    let got = client.get(b"k2", ReadOptions::default()).await?;
    anyhow::ensure!(got.values == vec![b"v2".to_vec()], "{got:?}");
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_write_from_a_live_node_does_not_pass_it_over() -> anyhow::Result<()> {
    let (cluster, client) = hedging_client().await?;
    // n1 delays every replica write it sends (its own too) by three hedge delays: a W=all
    // write through it is slow, but n1 itself is alive and acknowledges at once.
    let slow = FaultSpec {
        rules: vec![LinkRule {
            from: Some(NodeId::new("n1")?),
            w: Some(Dist::Fixed(3.0 * HEDGE.as_millis() as f64)),
            ..LinkRule::default()
        }],
        local: true,
        ..FaultSpec::default()
    };
    cluster.client_only(SEED).await?.set_faults(slow).await?;
    let write = WriteOptions {
        w: Quorum::All,
        timeout_ms: Some(60_000),
        ..WriteOptions::default()
    };
    tokio::time::timeout(GUARD, client.put(b"k", b"v".to_vec(), write)).await??;
    anyhow::ensure!(
        client.passed_over().is_empty(),
        "a live node was passed over for a slow write: {:?}",
        client.passed_over()
    );
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_refresh_the_connected_node_leaves_unanswered_is_hedged() -> anyhow::Result<()> {
    // Four nodes, N=3, n4 dead: the client's view shows a member down, so it fetches the
    // view again every 2 s (ROUTING_REFRESH), from the node it is connected to (n1).
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        ..Default::default()
    })
    .await?;
    // Keys of which n1 is no replica: the client sends them straight to n2 or n3, so n1
    // is asked for nothing but the routing view.
    cluster.kill(DEAD);
    for i in (0..cluster.nodes.len()).filter(|&i| i != DEAD) {
        cluster.wait_sees_down(i, &[DEAD]).await?;
    }
    let mut opts = cli_options(&cluster)?;
    opts.read_hedge = Some(HEDGE);
    opts.suspect_for = Duration::from_secs(600);
    let client = Client::connect(opts).await?;
    let mut keys = (0..)
        .map(|i| format!("not-on-n1-{i}"))
        .filter(|k| !cluster.placement(k.as_bytes(), 3).0.contains(&SEED));
    put_get(&client, &keys.next().unwrap_or_default()).await?;
    anyhow::ensure!(
        client.passed_over().is_empty(),
        "{:?}",
        client.passed_over()
    );

    // n1 stalls unnoticed. The client keeps writing keys n1 does not hold until its view
    // has come due for a refresh at least once: that refresh asks the stalled n1, and
    // is hedged to another node. Unhedged, it would wait for QUIC's idle timeout and
    // then move on without passing n1 over (a connection that timed out is not a
    // suspicion).
    cluster.pause(SEED);
    let start = Instant::now();
    let writes = async {
        for key in keys.by_ref() {
            if start.elapsed() >= Duration::from_secs(5) {
                break;
            }
            client
                .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
                .await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(GUARD, writes).await??;
    let n1 = cluster.nodes[SEED].addr.clone();
    anyhow::ensure!(
        client.passed_over().contains(&n1),
        "the routing refresh through the stalled n1 was not hedged (passed over: {:?})",
        client.passed_over()
    );
    cluster.resume(SEED);
    client.close().await;
    Ok(())
}
