//! Basic reads, writes and deletes for every R and W.

use crate::harness::{Cluster, ClusterOptions};
use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_common::quorum::Quorum;

/// Makes every write at once, each from its own task (so a coalescing client can batch
/// them), and returns their results in no particular order.
async fn put_concurrently(
    client: &std::sync::Arc<dynakv_client::Client>,
    writes: impl IntoIterator<Item = (String, Vec<u8>)>,
    w: Quorum,
) -> anyhow::Result<Vec<dynakv_client::PutResult>> {
    let mut puts = tokio::task::JoinSet::new();
    for (key, value) in writes {
        let client = client.clone();
        puts.spawn(async move {
            client
                .put(key.as_bytes(), value, WriteOptions::with_w(w))
                .await
        });
    }
    let mut results = Vec::new();
    while let Some(put) = puts.join_next().await {
        results.push(put??);
    }
    Ok(results)
}

/// A raw R=1 read of `key`, for tests that speak the wire themselves.
fn get_one(key: Vec<u8>) -> dynakv_common::wire::Request {
    dynakv_common::wire::Request::Get(dynakv_common::wire::GetRequest {
        key,
        r: Quorum::One,
        mode: Default::default(),
        read_repair: Default::default(),
        timeout_ms: None,
    })
}

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
    let key = (0..)
        .map(|i| format!("fwd-{i}"))
        .find(|k| !cluster.placement(k.as_bytes(), 3).0.contains(&0))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_knows_the_ring_sends_each_key_to_a_replica() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 4,
        replicas: 3,
        ..Default::default()
    })
    .await?;
    // Seeded with n1 only; it learns the ring from n1's status.
    let mut opts = dynakv_client::ClientOptions::new(
        vec![cluster.nodes[0].addr.clone()],
        cluster.settings.tls_config()?,
    );
    opts.route_by_key = true;
    let routed = dynakv_client::Client::connect(opts).await?;
    for i in 0..40 {
        let key = format!("routed-{i}");
        routed
            .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await?;
        let g = routed.get(key.as_bytes(), ReadOptions::default()).await?;
        assert_eq!(g.values, vec![b"v".to_vec()]);
    }
    // No node had to forward a write: each went straight to a replica of its key.
    for i in 0..4 {
        let counters = cluster.counters(i).await?;
        assert_eq!(counters["puts_forwarded"], 0, "node {i}: {counters:?}");
    }
    // A node that is not a replica says so (that is how a client learns its ring is stale).
    let key = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|k| !cluster.placement(k.as_bytes(), 3).0.contains(&0))
        .expect("some key is not replicated on n1");
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let req = get_one(key.into_bytes());
    match dynakv_common::net::request(&conn, &req, 1 << 20, std::time::Duration::from_secs(10))
        .await?
    {
        dynakv_common::wire::Response::Get(g) => assert!(g.not_a_replica),
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// Each request's stream is read to its end on both sides, so neither side has to stop
/// it (a STOP_SENDING frame per request, for the peer to process and acknowledge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_end_their_streams_without_stop_sending() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        replicas: 1,
        ..Default::default()
    })
    .await?;
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let requests = 200u64;
    for i in 0..requests {
        let req = get_one(format!("k{i}").into_bytes());
        let answer =
            dynakv_common::net::request(&conn, &req, 1 << 20, std::time::Duration::from_secs(10))
                .await?;
        assert!(
            matches!(answer, dynakv_common::wire::Response::Get(_)),
            "{answer:?}"
        );
    }
    // The node's answer and its end travel together, so the client almost always sees
    // the end at once; the node reads each request to its end before answering.
    let stats = conn.stats();
    assert!(
        stats.frame_tx.stop_sending < requests / 4,
        "the client stopped {} of {requests} answer streams",
        stats.frame_tx.stop_sending
    );
    assert!(
        stats.frame_rx.stop_sending < requests / 4,
        "the node stopped {} of {requests} request streams",
        stats.frame_rx.stop_sending
    );
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// A client's batch takes one in-flight permit per request: past the node's limit the
/// rest of the batch is refused unprocessed ("overloaded", which a client may retry
/// elsewhere), so batching cannot carry a client past `max_in_flight`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_batch_takes_one_in_flight_permit_per_request() -> anyhow::Result<()> {
    use dynakv_common::wire::{ErrorCode, Request, Response};
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        replicas: 1,
        tweak: std::sync::Arc::new(|c| c.max_in_flight = 2),
        ..Default::default()
    })
    .await?;
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let batch = Request::Batch(
        (0..5)
            .map(|i| get_one(format!("k{i}").into_bytes()))
            .collect(),
    );
    let frame = dynakv_common::codec::encode_frame(&batch, 1 << 20)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    dynakv_common::net::write_frame(&mut send, &frame).await?;
    let (mut served, mut refused) = (0, 0);
    for _ in 0..5 {
        let item = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            dynakv_common::net::read_frame::<Response>(&mut recv, 1 << 20),
        )
        .await??;
        match item {
            Some(Response::BatchItem { response, .. }) => match *response {
                Response::Get(_) => served += 1,
                Response::Error(e) if e.code == ErrorCode::Unavailable => refused += 1,
                other => panic!("unexpected answer in the batch: {other:?}"),
            },
            other => panic!("expected a batch item, got {other:?}"),
        }
    }
    // The stream's own permit serves the first; the pool has at most one more (fewer
    // while another stream, such as the harness's start-up status request, still holds
    // one), so at least three are refused.
    assert!(
        (1..=2).contains(&served) && served + refused == 5,
        "served {served}, refused {refused}"
    );
    assert_eq!(cluster.counters(0).await?["overload_refusals"], refused);
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// Streams a client opens and never finishes take no in-flight permit: however many it
/// holds, other clients are served (and so is the holder, on new streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_requests_do_not_lock_other_clients_out() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        replicas: 1,
        tweak: std::sync::Arc::new(|c| c.max_in_flight = 8),
        ..Default::default()
    })
    .await?;
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    // Four times the node's limit: each stream sends a header announcing a 100-byte
    // frame, and nothing more.
    let mut held = Vec::new();
    for _ in 0..32 {
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&100u32.to_be_bytes()).await?;
        held.push((send, recv));
    }
    // The node accepts streams in the order they were opened, so this one comes after
    // every held stream.
    let answer = dynakv_common::net::request(
        &conn,
        &get_one(b"k".to_vec()),
        1 << 20,
        std::time::Duration::from_secs(10),
    )
    .await?;
    assert!(
        matches!(answer, dynakv_common::wire::Response::Get(_)),
        "the holder's own new request: {answer:?}"
    );
    let other = cluster.client_only(0).await?;
    for i in 0..20 {
        let key = format!("k{i}");
        other
            .put(key.as_bytes(), b"v".to_vec(), WriteOptions::default())
            .await?;
        let read = other.get(key.as_bytes(), ReadOptions::default()).await?;
        assert_eq!(read.values, vec![b"v".to_vec()]);
    }
    assert_eq!(cluster.counters(0).await?["overload_refusals"], 0);
    drop(held);
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// Reads and writes a client has queued at once for a node travel as one batch, and
/// every one of them is answered as if sent alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_coalesces_concurrent_requests_and_each_gets_its_answer() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_from(0).await?;
    // Concurrent requests form batches whenever they queue faster than the client
    // sends; keep going (bounded) until some did.
    for round in 0..20 {
        let writes = (0..64).map(|i| {
            let key = format!("c-{round}-{i}");
            (key.clone(), key.into_bytes())
        });
        for put in put_concurrently(&client, writes, Quorum::All).await? {
            assert_eq!(put.replicas_acked, 3);
        }
        let mut gets = tokio::task::JoinSet::new();
        for i in 0..64 {
            let client = client.clone();
            gets.spawn(async move {
                let key = format!("c-{round}-{i}");
                let got = client
                    .get(key.as_bytes(), ReadOptions::with_r(Quorum::One))
                    .await;
                (key, got)
            });
        }
        while let Some(get) = gets.join_next().await {
            let (key, got) = get?;
            assert_eq!(got?.values, vec![key.into_bytes()]);
        }
        if cluster.counter_sum(0..3, "client_batched_requests").await? > 0 {
            client.close().await;
            return Ok(());
        }
    }
    panic!("no request arrived in a batch in 20 rounds of 64 concurrent puts and gets");
}

/// Under concurrent writes, the replica messages a coordinator sends one peer travel
/// together: most of them reach the peer inside a batch, not one stream each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_messages_to_one_peer_travel_in_batches_under_load() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_from(0).await?;
    for round in 0..10 {
        let writes = (0..64).map(|i| (format!("b-{round}-{i}"), b"v".to_vec()));
        for put in put_concurrently(&client, writes, Quorum::All).await? {
            assert_eq!(put.replicas_acked, 3);
        }
    }
    client.close().await;
    let batched = cluster
        .counter_sum(0..3, "replica_batched_requests")
        .await?;
    let all = cluster.counter_sum(0..3, "replica_requests").await?;
    // 640 writes through n1, each sent to the two other replicas: 1,280 messages.
    assert!(all >= 1280, "only {all} replica requests served");
    assert!(
        batched * 2 > all,
        "only {batched} of {all} replica messages arrived in a batch"
    );
    Ok(())
}

/// A client whose own limits are looser than the node's (as the CLI's are: it leaves
/// value limits to the nodes) never batches its requests past what the node accepts in
/// one frame: each write the node would take alone is taken when sent with others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_within_the_frame_a_node_accepts() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        replicas: 1,
        // The node's frames: 64 KiB values x 16 siblings + 1 MiB, about 2 MiB.
        tweak: std::sync::Arc::new(|c| c.max_value_bytes = 64 * 1024),
        ..Default::default()
    })
    .await?;
    let mut opts = dynakv_client::ClientOptions::new(
        vec![cluster.nodes[0].addr.clone()],
        cluster.settings.tls_config()?,
    );
    opts.limits = dynakv_common::limits::Limits {
        max_key_bytes: 64 * 1024,
        max_value_bytes: 64 * 1024 * 1024,
    };
    let client = dynakv_client::Client::connect(opts).await?;
    // Rounds of 64 writes of 60 KB at once: 3.8 MB queued for one node, twice its frame
    // limit; until some of them did travel batched (bounded).
    for round in 0..10 {
        let writes = (0..64).map(|i| (format!("big-{round}-{i}"), vec![b'x'; 60_000]));
        put_concurrently(&client, writes, Quorum::One).await?;
        let counters = cluster.counters(0).await?;
        assert_eq!(counters["bad_frames"], 0, "a frame was refused");
        if counters["client_batched_requests"] > 0 {
            client.close().await;
            return Ok(());
        }
    }
    panic!("no write travelled in a batch in 10 rounds of 64");
}
