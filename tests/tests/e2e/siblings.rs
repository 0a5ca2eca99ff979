//! Concurrent writes are never lost: siblings, and their resolution with a context.

use crate::harness::{Cluster, ClusterOptions};
use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

async fn two_writers_from_one_context(
    cluster: &Cluster,
    via_a: usize,
    via_b: usize,
    key: &[u8],
) -> anyhow::Result<()> {
    let alice = cluster.client_only(via_a).await?;
    let bob = cluster.client_only(via_b).await?;
    alice
        .put(key, b"start".to_vec(), WriteOptions::default())
        .await?;
    let a_read = alice.get(key, ReadOptions::default()).await?;
    let b_read = bob.get(key, ReadOptions::default()).await?;
    assert_eq!(a_read.values, vec![b"start".to_vec()]);
    assert_eq!(a_read.context, b_read.context);

    alice
        .put(
            key,
            b"alice".to_vec(),
            WriteOptions::with_context(a_read.context),
        )
        .await?;
    bob.put(
        key,
        b"bob".to_vec(),
        WriteOptions::with_context(b_read.context),
    )
    .await?;

    let both = alice.get(key, ReadOptions::with_r(Quorum::All)).await?;
    assert_eq!(
        sorted(both.values.clone()),
        vec![b"alice".to_vec(), b"bob".to_vec()],
        "both writes kept as siblings"
    );

    // A write carrying the context of that read replaces both.
    bob.put(
        key,
        b"merged".to_vec(),
        WriteOptions::with_context(both.context),
    )
    .await?;
    let merged = alice.get(key, ReadOptions::with_r(Quorum::All)).await?;
    assert_eq!(merged.values, vec![b"merged".to_vec()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_one_node_become_siblings() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    two_writers_from_one_context(&cluster, 0, 0, b"cart:same-node").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_nodes_become_siblings() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    two_writers_from_one_context(&cluster, 0, 1, b"cart:two-nodes").await?;
    two_writers_from_one_context(&cluster, 2, 1, b"cart:two-nodes-b").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_writes_with_returned_context_keep_one_value() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let clients = [
        cluster.client_only(0).await?,
        cluster.client_only(1).await?,
        cluster.client_only(2).await?,
    ];
    let mut context = None;
    for i in 0..100u32 {
        // Rotate coordinators too: the context must carry over between nodes.
        let r = clients[i as usize % 3]
            .put(
                b"counter",
                i.to_string().into_bytes(),
                WriteOptions {
                    context: context.take(),
                    ..Default::default()
                },
            )
            .await?;
        context = Some(r.context);
    }
    let read = clients[0]
        .get(b"counter", ReadOptions::with_r(Quorum::All))
        .await?;
    assert_eq!(read.values, vec![b"99".to_vec()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_again_after_a_delete_keeps_one_value_with_returned_contexts(
) -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_only(0).await?;
    let first = client
        .put(b"cart", b"a".to_vec(), WriteOptions::default())
        .await?;
    client
        .delete(
            b"cart",
            WriteOptions {
                context: Some(first.context),
                ..Default::default()
            },
        )
        .await?;
    // Written again without reading (a blind write: the delete's tombstone stays beside
    // it until reaped), then overwritten with each returned context, as the README says.
    let mut context = None;
    for i in 1..=5u32 {
        let r = client
            .put(
                b"cart",
                format!("v{i}").into_bytes(),
                WriteOptions {
                    context: context.take(),
                    ..Default::default()
                },
            )
            .await?;
        context = Some(r.context);
    }
    let read = client
        .get(b"cart", ReadOptions::with_r(Quorum::All))
        .await?;
    assert_eq!(read.values, vec![b"v5".to_vec()], "one value, the last");
    // And a delete with the last context removes it.
    client
        .delete(
            b"cart",
            WriteOptions {
                context,
                ..Default::default()
            },
        )
        .await?;
    let read = client
        .get(b"cart", ReadOptions::with_r(Quorum::All))
        .await?;
    assert!(read.values.is_empty(), "deleted: {:?}", read.values);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sibling_count_is_bounded_by_concurrent_writers() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let writers = [
        cluster.client_only(0).await?,
        cluster.client_only(1).await?,
        cluster.client_only(2).await?,
    ];
    // Three writers each keep overwriting with the context of their own last write:
    // every round, each write replaces that writer's previous one.
    let mut contexts = [None, None, None];
    for round in 0..20 {
        for (i, w) in writers.iter().enumerate() {
            let r = w
                .put(
                    b"shared",
                    format!("w{i}-{round}").into_bytes(),
                    WriteOptions {
                        context: contexts[i].take(),
                        ..Default::default()
                    },
                )
                .await?;
            contexts[i] = Some(r.context);
        }
    }
    let read = writers[0]
        .get(b"shared", ReadOptions::with_r(Quorum::All))
        .await?;
    // Three writers who never read each other's values are truly concurrent: exactly
    // three siblings, one per writer — not one per write, and none lost.
    let mut values = read.values.clone();
    values.sort();
    assert_eq!(
        values,
        vec![b"w0-19".to_vec(), b"w1-19".to_vec(), b"w2-19".to_vec()]
    );
    assert!(
        read.values.contains(&b"w2-19".to_vec()),
        "the last write is present"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_blind_writes_through_every_node_are_all_kept() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut tasks = Vec::new();
    for writer in 0..6usize {
        let client = cluster.client_only(writer % 3).await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let value = format!("w{writer}-{i}").into_bytes();
                client
                    .put(b"hot-key", value, WriteOptions::default())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let client = cluster.client_from(0).await?;
    let read = client
        .get(b"hot-key", ReadOptions::with_r(Quorum::All))
        .await?;
    let mut expected: Vec<Vec<u8>> = (0..6)
        .flat_map(|w| (0..15).map(move |i| format!("w{w}-{i}").into_bytes()))
        .collect();
    expected.sort();
    assert_eq!(
        sorted(read.values),
        expected,
        "every acknowledged blind write is a sibling"
    );
    Ok(())
}

/// The Dynamo shopping cart: clients add items with read-modify-write, resolving siblings by
/// union. However the writes interleave across coordinators, no added item is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_updated_concurrently_through_all_nodes_loses_no_item() -> anyhow::Result<()> {
    fn items(values: &[Vec<u8>]) -> std::collections::BTreeSet<String> {
        values
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut tasks = Vec::new();
    for shopper in 0..4usize {
        let client = cluster.client_only(shopper % 3).await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let read = client.get(b"cart", ReadOptions::default()).await?;
                let mut cart = items(&read.values);
                cart.insert(format!("s{shopper}-item{i}"));
                let value = cart.into_iter().collect::<Vec<_>>().join(",").into_bytes();
                client
                    .put(b"cart", value, WriteOptions::with_context(read.context))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let read = cluster
        .client_from(0)
        .await?
        .get(b"cart", ReadOptions::with_r(Quorum::All))
        .await?;
    let cart = items(&read.values);
    for shopper in 0..4 {
        for i in 0..10 {
            assert!(
                cart.contains(&format!("s{shopper}-item{i}")),
                "lost s{shopper}-item{i}; cart: {cart:?}"
            );
        }
    }
    Ok(())
}
