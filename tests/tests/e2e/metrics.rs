//! The Prometheus endpoint: counters an operator asks about, scraped over HTTP.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use dynakv_client::WriteOptions;

use crate::harness::{eventually, Cluster, ClusterOptions};

fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_reports_requests_and_peers() -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(move |c| {
            if c.id == "n1" {
                c.metrics_listen = Some(addr);
            }
        }),
        ..Default::default()
    })
    .await?;
    let client = cluster.client_only(0).await?;
    for i in 0..3 {
        client
            .put(
                format!("m{i}").as_bytes(),
                b"v".to_vec(),
                WriteOptions::default(),
            )
            .await?;
    }
    let body = eventually(
        Duration::from_secs(20),
        "metrics show 3 puts and 2 peers up",
        || async move {
            let body = tokio::task::spawn_blocking(move || scrape(addr))
                .await
                .ok()??;
            (body.contains("dynakv_puts 3") && body.contains("dynakv_peers_up 2")).then_some(body)
        },
    )
    .await?;
    assert!(body.contains("dynakv_storage_fsyncs"), "{body}");
    // Repair counters and the latency histogram per operation.
    for name in [
        "dynakv_hints_delivered",
        "dynakv_hints_dropped",
        "dynakv_ae_keys_repaired",
        "dynakv_ae_bytes_sent",
        "dynakv_tombstones_reaped",
        "dynakv_read_repairs_sync",
    ] {
        assert!(body.contains(name), "{name} missing: {body}");
    }
    assert!(
        body.contains("dynakv_request_seconds_bucket{op=\"put\""),
        "{body}"
    );
    assert!(body.contains("dynakv_write_quorum_misses 0"), "{body}");
    // The disk's share of each write: the fsyncs' latency, in Prometheus and in status
    // (each node fsync'd its copies of the three puts).
    assert!(body.contains("dynakv_fsync_seconds_bucket"), "{body}");
    let status = client.status().await?;
    let fsync = status
        .latency
        .iter()
        .find(|l| l.op == "fsync")
        .ok_or_else(|| anyhow::anyhow!("no fsync latency in status: {:?}", status.latency))?;
    // Counters are read just before the latencies, so an fsync in between may add one.
    let fsyncs = status
        .counters
        .iter()
        .find(|(name, _)| name == "storage_fsyncs")
        .map_or(0, |(_, n)| *n);
    assert!(
        fsyncs >= 1 && fsync.count >= fsyncs,
        "{fsync:?}, {fsyncs} fsyncs"
    );
    assert!(fsync.p50_us <= fsync.max_us, "{fsync:?}");
    Ok(())
}

/// A node binary installs the spin-before-sleep hook its config asks for, and its
/// counters say how the spins ended: n1 spins (the defaults), n2 has both spins set to
/// 0 and never spins, n3 spins only at light load (`idle_spin_us = 0`), which an idle
/// cluster's heartbeats are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_spins_before_sleeping_only_as_its_config_says_and_counts_the_spins(
) -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        replicas: 3,
        tweak: Arc::new(|c| match c.id.as_str() {
            "n2" => {
                c.idle_spin_us = 0;
                c.idle_spin_light_us = 0;
            }
            "n3" => c.idle_spin_us = 0,
            _ => {}
        }),
        ..Default::default()
    })
    .await?;
    let client = cluster.client_only(0).await?;
    for i in 0..20 {
        client
            .put(
                format!("spin{i}").as_bytes(),
                b"v".to_vec(),
                WriteOptions::default(),
            )
            .await?;
    }
    // Each put's replica write and its answer arrive at n1 while it waits for them.
    eventually(
        Duration::from_secs(20),
        "n1's spins find datagrams",
        || async {
            let readable = cluster.counter_sum([0], "idle_spins_readable").await.ok()?;
            (readable > 0).then_some(())
        },
    )
    .await?;
    // n3 serves the puts' replica writes and heartbeats, one at a time.
    eventually(
        Duration::from_secs(20),
        "n3 spins at light load",
        || async {
            let counters = cluster.counters(2).await.ok()?;
            let spins: u64 = ["readable", "kicked", "timed_out"]
                .iter()
                .filter_map(|end| counters.get(&format!("idle_spins_{end}")))
                .sum();
            (spins > 0).then_some(())
        },
    )
    .await?;
    let n2 = cluster.counters(1).await?;
    for name in [
        "idle_spins_readable",
        "idle_spins_kicked",
        "idle_spins_timed_out",
    ] {
        assert_eq!(n2.get(name), Some(&0), "n2 must not spin: {name} in {n2:?}");
    }
    client.close().await;
    Ok(())
}
