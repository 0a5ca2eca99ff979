//! Basic reads, writes and deletes for every R and W.

use crate::harness::{Cluster, ClusterOptions};
use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_for_every_r_and_w() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    for first in 0..3 {
        let client = cluster.client_from(first).await?;
        for w in 1..=3u8 {
            for r in 1..=3u8 {
                let key = format!("k-{first}-{w}-{r}");
                let value = format!("v-{w}-{r}").into_bytes();
                let put = client
                    .put(
                        key.as_bytes(),
                        value.clone(),
                        WriteOptions::with_w(Quorum::Count(w)),
                    )
                    .await?;
                assert!(
                    put.replicas_acked >= w,
                    "acked {} < W={w}",
                    put.replicas_acked
                );
                // Only R + W > N guarantees the read sees the write; with fewer, poll.
                let got = crate::harness::eventually(
                    std::time::Duration::from_secs(10),
                    "read sees write",
                    || {
                        let client = client.clone();
                        let key = key.clone();
                        async move {
                            let g = client
                                .get(key.as_bytes(), ReadOptions::with_r(Quorum::Count(r)))
                                .await
                                .ok()?;
                            (!g.values.is_empty()).then_some(g)
                        }
                    },
                )
                .await?;
                assert_eq!(got.values, vec![value.clone()], "R={r} W={w}");
                if usize::from(r) + usize::from(w) > 3 {
                    let g = client
                        .get(key.as_bytes(), ReadOptions::with_r(Quorum::Count(r)))
                        .await?;
                    assert_eq!(g.values, vec![value], "R+W>N must read the write at once");
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_reports_not_found_and_keeps_the_context() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_from(0).await?;
    client
        .put(b"cart:1", b"apples".to_vec(), WriteOptions::default())
        .await?;
    let read = client.get(b"cart:1", ReadOptions::default()).await?;
    assert_eq!(read.values, vec![b"apples".to_vec()]);
    client
        .delete(b"cart:1", WriteOptions::with_context(read.context.clone()))
        .await?;
    let after = client
        .get(b"cart:1", ReadOptions::with_r(Quorum::All))
        .await?;
    assert!(!after.found());
    // The context survives the delete: it has seen the value and the tombstone.
    assert_eq!(
        after.context.partial_cmp(&read.context),
        Some(std::cmp::Ordering::Greater),
        "the context after a delete covers more than the read before it"
    );
    // A key never written is not found, with an empty context.
    let never = client.get(b"never-written", ReadOptions::default()).await?;
    assert!(!never.found());
    assert!(never.context.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_non_replica_are_coordinated_by_a_replica() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        ..Default::default()
    })
    .await?;
    let ids: Vec<dynakv_common::NodeId> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let ring = dynakv_common::Ring::new(64, &ids)?;
    let key = (0..)
        .map(|i| format!("fwd-{i}"))
        .find(|k| {
            !ring
                .preference_list_for_key(k.as_bytes(), 3)
                .contains(&ids[0])
        })
        .expect("some key is not replicated on n1");
    let outsider = cluster.client_only(0).await?;
    let put = outsider
        .put(
            key.as_bytes(),
            b"one".to_vec(),
            WriteOptions::with_w(Quorum::All),
        )
        .await?;
    assert_eq!(put.replicas_acked, 3);
    let read = outsider
        .get(key.as_bytes(), ReadOptions::with_r(Quorum::All))
        .await?;
    assert_eq!(read.values, vec![b"one".to_vec()]);
    // Concurrent writes through the outsider still become siblings.
    for v in ["two", "three"] {
        outsider
            .put(
                key.as_bytes(),
                v.as_bytes().to_vec(),
                WriteOptions::with_context(read.context.clone()),
            )
            .await?;
    }
    let mut both = outsider
        .get(key.as_bytes(), ReadOptions::with_r(Quorum::All))
        .await?
        .values;
    both.sort();
    assert_eq!(both, vec![b"three".to_vec(), b"two".to_vec()]);
    let status = outsider.status().await?;
    let forwarded = status
        .counters
        .iter()
        .find(|(k, _)| k == "puts_forwarded")
        .map(|(_, v)| *v);
    assert_eq!(forwarded, Some(3), "n1 forwarded every write");
    Ok(())
}
