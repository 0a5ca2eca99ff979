//! Measurements, not tests: run by hand, numbers go to docs/benchmarks.md.
//!
//! `DYNAKV_AE_KEYS=100000 cargo test --release -p dynakv-tests --test e2e measure_anti_entropy -- --ignored --nocapture`
//!
//! Loads a 3-node cluster (N=3, hints and read repair off), lets node 3 miss 10 writes,
//! restarts it and runs one anti-entropy round on it: how long it takes, how many tree
//! nodes it compared, and how many bytes it moved, next to what a full transfer of the
//! same data would move.

use std::sync::Arc;
use std::time::Instant;

use dynakv_client::WriteOptions;
use dynakv_common::quorum::Quorum;

use crate::harness::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
async fn measure_anti_entropy() -> anyhow::Result<()> {
    let keys: u64 = std::env::var("DYNAKV_AE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            c.hinted_handoff = false;
            c.read_repair = false;
            c.anti_entropy = false;
        }),
        ..Default::default()
    })
    .await?;
    let value = vec![b'x'; 100];
    let started = Instant::now();
    let clients = [
        cluster.client_only(0).await?,
        cluster.client_only(1).await?,
        cluster.client_only(2).await?,
    ];
    let mut workers = Vec::new();
    const WORKERS: u64 = 96;
    for w in 0..WORKERS {
        let client = clients[(w % 3) as usize].clone();
        let value = value.clone();
        workers.push(tokio::spawn(async move {
            let mut k = w;
            while k < keys {
                client
                    .put(
                        format!("load:{k}").as_bytes(),
                        value.clone(),
                        WriteOptions::with_w(Quorum::All),
                    )
                    .await?;
                k += WORKERS;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!(
        "loaded {keys} keys (W=all) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Node 3 misses 10 writes.
    cluster.kill(2);
    cluster.wait_sees_down(0, &[2]).await?;
    let c = cluster.client_only(0).await?;
    for i in 0..10 {
        c.put(
            format!("missed:{i}").as_bytes(),
            value.clone(),
            WriteOptions::default(),
        )
        .await?;
    }
    let restart = Instant::now();
    cluster.restart(2).await?;
    println!(
        "node 3 restarted (hash trees rebuilt from {keys} keys) and seen by its peers in {:.2} s",
        restart.elapsed().as_secs_f64()
    );
    let n3 = cluster.client_only(2).await?;
    let t0 = Instant::now();
    let status = n3.anti_entropy(true).await?;
    let took = t0.elapsed();
    let differing: u64 = status.last.iter().map(|r| r.keys_differing).sum();
    let compared: u64 = status.last.iter().map(|r| r.nodes_compared).sum();
    println!(
        "anti-entropy round on node 3: {:.3} s, {} exchanges, {} tree nodes compared, {} keys differing, {} repaired, {} bytes sent, {} received",
        took.as_secs_f64(),
        status.exchanges,
        compared,
        differing,
        status.keys_repaired,
        status.bytes_sent,
        status.bytes_received
    );
    // What a full transfer of the same data would move: every key and its stored state.
    let sample = cluster.debug(0, b"load:0").await?;
    let state = sample.state.expect("loaded");
    let record = postcard::to_stdvec(&state)?.len() as u64 + 1;
    let full = (0..keys)
        .map(|k| format!("load:{k}").len() as u64 + record)
        .sum::<u64>();
    println!(
        "full transfer of the same data: {full} bytes ({record}-byte records); anti-entropy moved {:.4}% of it",
        100.0 * (status.bytes_sent + status.bytes_received) as f64 / full as f64
    );
    for i in 0..10 {
        let d = cluster.debug(2, format!("missed:{i}").as_bytes()).await?;
        assert!(d.state.is_some(), "node 3 got missed:{i}");
    }
    Ok(())
}
