//! Bad input never hurts a node: oversized values and frames, garbage bytes, and
//! certificates from another CA are refused with clear errors, and the node keeps serving.

use std::sync::Arc;
use std::time::Duration;

use crate::harness::{eventually, Cluster, ClusterOptions};
use dynakv_client::{Client, ClientError, ClientOptions, ReadOptions, WriteOptions};
use dynakv_common::limits::Limits;
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::{ErrorCode, Request, Response, ALPN};
use rand::RngCore;

/// Connects to `addr` with `tls` and returns the error it must fail with.
async fn refused(addr: &str, tls: quinn::ClientConfig, what: &str) -> String {
    let mut opts = ClientOptions::new(vec![addr.to_string()], tls);
    opts.connect_timeout = Duration::from_secs(5);
    opts.request_timeout = Duration::from_secs(5);
    // With TLS 1.3 a refused client certificate may only show on the first request.
    let result = match Client::connect(opts).await {
        Ok(client) => client.get(b"k", ReadOptions::default()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => panic!("{what} was accepted"),
        Err(e) => e.to_string(),
    }
}

/// Options for a client of node 0 (with the dev, admin certificate) that sends keys and
/// values far over any node's limits, so the node's own check is what refuses them.
fn unchecked_options(cluster: &Cluster) -> anyhow::Result<ClientOptions> {
    let mut opts = ClientOptions::new(
        vec![cluster.nodes[0].addr.clone()],
        cluster.settings.tls_config()?,
    );
    opts.limits = Limits {
        max_key_bytes: 1 << 20,
        max_value_bytes: 8 << 20,
    };
    Ok(opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_and_keys_are_refused_by_the_node() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| c.max_value_bytes = 4096),
        ..Default::default()
    })
    .await?;
    let opts = unchecked_options(&cluster)?;
    let client = Client::connect(opts.clone()).await?;
    let err = client
        .put(b"big", vec![7u8; 8192], WriteOptions::default())
        .await
        .expect_err("an 8 KiB value over a 4 KiB limit must be refused");
    match &err {
        ClientError::Server(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert!(
                e.message
                    .contains("value is 8192 bytes, larger than the limit of 4096 bytes"),
                "{}",
                e.message
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Past the node's frame limit (16 siblings' worth of its value limit) the node stops
    // reading the request and answers why; the client reports that answer instead of the
    // stream the node stopped ("may or may not have been applied"). 4 MiB is more than
    // QUIC lets a client send before the node reads, so the client is still writing when
    // the node stops the stream. A batching client sends a request this large on its own
    // stream too; both kinds of client are checked as users run them.
    for coalesce in [true, false] {
        let mut opts = opts.clone();
        opts.coalesce = coalesce;
        let client = Client::connect(opts).await?;
        let err = client
            .put(b"huge", vec![7u8; 4 << 20], WriteOptions::default())
            .await
            .expect_err("a 4 MiB value past the node's frame limit must be refused");
        match &err {
            ClientError::Server(e) => {
                assert_eq!(e.code, ErrorCode::TooLarge, "coalesce {coalesce}: {err}");
            }
            other => panic!("coalesce {coalesce}: expected TooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("larger than"), "{err}");
        // The frame's size means little to a user; the value limit is named too.
        assert!(
            err.to_string()
                .contains("this node takes values of at most 4096 bytes"),
            "{err}"
        );
    }
    let err = client
        .get(&vec![b'k'; 2048], ReadOptions::default())
        .await
        .expect_err("a 2 KiB key over the 1 KiB limit must be refused");
    assert!(err.to_string().contains("key is 2048 bytes"), "{err}");
    // The default client refuses before sending, with the same sentence.
    let default_client = cluster.client_from(0).await?;
    let err = default_client
        .put(b"big", vec![0u8; 2 << 20], WriteOptions::default())
        .await
        .expect_err("over 1 MiB");
    assert!(err.to_string().contains("larger than the limit"), "{err}");
    // And the node still serves.
    client
        .put(b"small", b"ok".to_vec(), WriteOptions::default())
        .await?;
    Ok(())
}

/// Every request that names a key checks it, not only reads and writes: an admin's
/// look at a key longer than the storage engine takes was passed to the engine, which
/// panicked (the client saw the stream closed without an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_look_at_an_oversized_key_is_refused_clearly() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let admin = Client::connect(unchecked_options(&cluster)?).await?;
    for len in [2048, 70_000] {
        match admin.debug_replica(&vec![b'k'; len]).await {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::TooLarge, "{}", e.message);
                assert!(
                    e.message.contains(&format!(
                        "key is {len} bytes, larger than the limit of 1024 bytes"
                    )),
                    "{}",
                    e.message
                );
            }
            other => panic!("a {len}-byte key was not refused by the node: {other:?}"),
        }
    }
    // The CLI's own client refuses it before sending, with the same sentence.
    let default_admin = cluster.client_only(0).await?;
    let err = default_admin
        .debug_replica(&vec![b'k'; 70_000])
        .await
        .expect_err("over the client's key limit");
    assert!(err.to_string().contains("key is 70000 bytes"), "{err}");
    // And the node still serves.
    admin
        .put(b"k", b"v".to_vec(), WriteOptions::default())
        .await?;
    assert!(admin.debug_replica(b"k").await?.state.is_some());
    Ok(())
}

/// What a peer certificate may ask is bounded too: a list of millions of keys held a
/// node's event loop for seconds (its peers marked it down), and pings naming ids that
/// are not members were each remembered for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_request_naming_too_many_keys_or_a_stranger_is_refused() -> anyhow::Result<()> {
    use dynakv_common::wire::{ClusterShape, MAX_KEYS_PER_REQUEST};
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (_endpoint, conn) = cluster.peer_connection(0, 1).await?;
    let ask = |req: Request| {
        let conn = conn.clone();
        async move { dynakv_common::net::request(&conn, &req, 64 << 20, Duration::from_secs(60)).await }
    };
    let refusal = |resp: Response| match resp {
        Response::Error(e) => e,
        other => panic!("not refused: {:?}", std::mem::discriminant(&other)),
    };
    // One key over the limit, each kind of list.
    let keys = vec![b"k".to_vec(); MAX_KEYS_PER_REQUEST + 1];
    let e = refusal(ask(Request::ReplicaGetMany { keys: keys.clone() }).await?);
    assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
    assert!(
        e.message
            .contains(&format!("at most {MAX_KEYS_PER_REQUEST} keys")),
        "{}",
        e.message
    );
    let mut state = dynakv_common::Versioned::new();
    state.update(
        &dynakv_common::Clock::new(),
        &dynakv_common::Actor("n2.1".into()),
        Some(b"v".to_vec()),
        0,
    );
    let states = keys.into_iter().map(|k| (k, state.clone())).collect();
    let e = refusal(ask(Request::ReplicaPutMany { states }).await?);
    assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
    // At the limit, the list is served.
    let keys = vec![b"k".to_vec(); MAX_KEYS_PER_REQUEST];
    match ask(Request::ReplicaGetMany { keys }).await? {
        Response::ReplicaStates(states) => assert!(!states.is_empty()),
        other => panic!("a list at the limit was not served: {other:?}"),
    }
    // A ping in the cluster's own shape from an id that is not a member.
    let members: Vec<dynakv_common::NodeId> = cluster
        .nodes
        .iter()
        .map(|n| dynakv_common::NodeId::new(n.id.clone()))
        .collect::<Result<_, _>>()?;
    let shape = ClusterShape {
        replicas: 3,
        ring: dynakv_common::ring::Ring::new(64, &members)?.fingerprint(),
        policy: Default::default(),
    };
    let ping = |from: &str| Request::Ping {
        from: dynakv_common::NodeId::new(from).expect("a valid id"),
        shape,
        incarnation: 1,
    };
    assert!(
        matches!(ask(ping(&members[1].to_string())).await?, Response::Pong),
        "the test's shape is the cluster's: a member's ping is answered"
    );
    let e = refusal(ask(ping("n9")).await?);
    assert_eq!(e.code, ErrorCode::Misconfigured, "{}", e.message);
    assert!(e.message.contains("n9 is not a member"), "{}", e.message);
    // And the node still serves.
    let client = cluster.client_only(0).await?;
    client
        .put(b"k", b"v".to_vec(), WriteOptions::default())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_do_not_hurt_the_node() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let addr: std::net::SocketAddr = cluster.nodes[0].addr.parse()?;

    // Raw UDP garbage at the QUIC port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let mut junk = vec![0u8; 1 + (rng.next_u32() % 1400) as usize];
        rng.fill_bytes(&mut junk);
        udp.send_to(&junk, addr)?;
    }

    // Garbage inside an authenticated stream, a truncated frame, and a frame header
    // announcing 4 GiB.
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        let mut body = vec![0u8; 64];
        rng.fill_bytes(&mut body);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        payloads.push(frame);
    }
    payloads.push(vec![0, 0, 1]); // a truncated header
    payloads.push(vec![0, 0, 0, 50, 1, 2, 3]); // a body cut short
    payloads.push(u32::MAX.to_be_bytes().to_vec()); // 4 GiB announced
    for payload in payloads {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&payload).await?;
        send.finish()?;
        // Either an error frame or a closed stream; never a hang, never success.
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            dynakv_common::net::read_frame::<Response>(&mut recv, 1 << 20),
        )
        .await
        .expect("the node answers within the deadline");
        // Every kind of bad frame gets an error answer: never success, never silence.
        match answer {
            Ok(Some(Response::Error(e))) => assert!(
                matches!(e.code, ErrorCode::InvalidRequest | ErrorCode::TooLarge),
                "{e:?}"
            ),
            other => panic!("garbage {payload:?} got {other:?}"),
        }
    }
    conn.close(0u32.into(), b"done");

    // The node still serves real requests.
    let client = cluster.client_only(0).await?;
    client
        .put(b"after-garbage", b"fine".to_vec(), WriteOptions::default())
        .await?;
    let g = client.get(b"after-garbage", ReadOptions::default()).await?;
    assert_eq!(g.values, vec![b"fine".to_vec()]);
    let status = client.status().await?;
    let bad = status
        .counters
        .iter()
        .find(|(k, _)| k == "bad_frames")
        .map(|(_, v)| *v)
        .unwrap_or(0);
    assert!(bad >= 20, "bad frames counted: {bad}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let other = tempfile::tempdir()?;
    dynakv_node::certs::ensure_dev_certs(
        other.path(),
        &["n1".to_string()],
        &["127.0.0.1".to_string()],
    )?;
    let c = other.path().join("client");
    // The rogue client trusts the real CA (so it would accept the node) but holds a
    // certificate from another CA: the node must refuse it.
    let tls = dynakv_client::tls::client_config(
        &cluster.settings.ca,
        &c.join("client.pem"),
        &c.join("client.key.pem"),
        ALPN,
    )?;
    let err = refused(
        &cluster.nodes[0].addr,
        tls.clone(),
        "a foreign client certificate",
    )
    .await;
    assert!(err.contains("TLS refused"), "{err}");
    // A write refused in the handshake certainly was not applied, and says so: the node
    // serves no stream of a connection whose certificate it rejected. With TLS 1.3 the
    // client's side of the handshake may finish before or after the node's refusal
    // arrives; a few fresh clients make it all but certain that some get as far as
    // sending the write, which is the case this checks.
    let mut writes_sent = 0;
    for _ in 0..5 {
        let mut opts = ClientOptions::new(vec![cluster.nodes[0].addr.clone()], tls.clone());
        opts.connect_timeout = Duration::from_secs(5);
        opts.request_timeout = Duration::from_secs(5);
        let written = match Client::connect(opts).await {
            Ok(client) => {
                writes_sent += 1;
                client
                    .put(b"k", b"v".to_vec(), WriteOptions::default())
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => panic!("a write with a foreign client certificate was accepted"),
            Err(e @ ClientError::OutcomeUnknown { .. }) => {
                panic!("a write refused in the handshake reads as maybe applied: {e}")
            }
            Err(e) => assert!(e.to_string().contains("TLS refused"), "{e}"),
        }
    }
    assert!(writes_sent > 0, "no client got as far as sending its write");
    // A client that does not trust the cluster CA refuses the node, too.
    let tls = dynakv_client::tls::client_config(
        &c.join("ca.pem"),
        &c.join("client.pem"),
        &c.join("client.key.pem"),
        ALPN,
    )?;
    let err = refused(
        &cluster.nodes[0].addr,
        tls,
        "a node with an untrusted certificate",
    )
    .await;
    assert!(err.contains("TLS refused"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    // Node 3's certificate comes from a different CA: the others must never count it up.
    let cluster = Cluster::start(ClusterOptions {
        foreign_ca: vec![2],
        ..Default::default()
    })
    .await?;
    cluster.wait_sees_down(0, &[2]).await?;
    cluster.wait_sees_down(1, &[2]).await?;
    let client = cluster.client_from(0).await?;
    let err = client
        .put(
            b"k",
            b"v".to_vec(),
            WriteOptions::with_w(dynakv_common::quorum::Quorum::All),
        )
        .await
        .expect_err("W=all cannot include the impostor");
    assert!(
        err.to_string().contains("write quorum not reached"),
        "{err}"
    );
    // Quorum still works between the two genuine nodes.
    client
        .put(b"k", b"v".to_vec(), WriteOptions::default())
        .await?;
    let status = eventually(Duration::from_secs(10), "status", || {
        let client = client.clone();
        async move { client.status().await.ok() }
    })
    .await?;
    assert!(status
        .members
        .iter()
        .any(|m| m.id.as_str() == "n3" && !m.up));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_cannot_make_peer_requests() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let mut state = dynakv_common::Versioned::new();
    state.update(
        &dynakv_common::Clock::new(),
        &dynakv_common::Actor("rogue.1".into()),
        Some(b"sneaky".to_vec()),
        0,
    );
    let req = Request::ReplicaPut {
        key: b"k".to_vec(),
        state,
        hint_for: None,
    };
    let resp = dynakv_common::net::request(&conn, &req, 1 << 20, Duration::from_secs(10)).await?;
    match resp {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message),
        other => panic!("a client certificate made a replica write: {other:?}"),
    }
    let client = cluster.client_only(0).await?;
    let g = client.get(b"k", ReadOptions::default()).await?;
    assert!(!g.found(), "the forbidden write must not be stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_certificates_may_make_admin_requests() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    // A plain client certificate of the cluster CA.
    let user = cluster.dir.path().join("plain-user");
    dynakv_node::certs::issue_client_cert(&cluster.dir.path().join("ca"), &user, "user", false)?;
    let tls = dynakv_client::tls::client_config(
        &user.join("ca.pem"),
        &user.join("client.pem"),
        &user.join("client.key.pem"),
        ALPN,
    )?;
    let plain =
        Client::connect(ClientOptions::new(vec![cluster.nodes[0].addr.clone()], tls)).await?;
    plain
        .put(b"k", b"v".to_vec(), WriteOptions::default())
        .await?;
    for result in [
        plain.debug_replica(b"k").await.map(|_| ()),
        plain.anti_entropy(true).await.map(|_| ()),
        plain
            .set_faults(dynakv_common::wire::FaultSpec::default())
            .await,
        plain.faults().await.map(|_| ()),
    ] {
        match result {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message);
                assert!(e.message.contains("--admin"), "{}", e.message);
            }
            other => panic!("a plain client certificate made an admin request: {other:?}"),
        }
    }
    // The dev (admin) certificate may.
    let admin = cluster.client_only(0).await?;
    let d = admin.debug_replica(b"k").await?;
    assert_eq!(d.state.expect("stored").live_values(), vec![&b"v"[..]]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_protocol_version_fails_clearly() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let c = cluster.dir.path().join("client");
    let tls = dynakv_client::tls::client_config(
        &c.join("ca.pem"),
        &c.join("client.pem"),
        &c.join("client.key.pem"),
        b"dynakv/0",
    )?;
    let err = refused(&cluster.nodes[0].addr, tls, "a client speaking dynakv/0").await;
    assert!(err.contains("different dynakv protocol version"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_grow_past_its_state_budget_and_stays_readable() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| c.max_value_bytes = 4096),
        ..Default::default()
    })
    .await?;
    let mut opts = ClientOptions::new(
        vec![cluster.nodes[0].addr.clone()],
        cluster.settings.tls_config()?,
    );
    opts.limits = Limits {
        max_key_bytes: 1024,
        max_value_bytes: 4096,
    };
    let client = Client::connect(opts).await?;
    // Blind writes keep adding siblings until the key's state would pass its budget.
    let mut refused = None;
    for i in 0..1000u32 {
        let mut value = vec![b'x'; 4096];
        value[..4].copy_from_slice(&i.to_be_bytes());
        match client.put(b"hot", value, WriteOptions::default()).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (count, err) = refused.expect("the state budget stops unbounded sibling growth");
    assert!(count > 16, "refused too early, after {count} writes");
    match &err {
        ClientError::Server(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge, "{}", e.message);
            assert!(e.message.contains("resolve its siblings"), "{}", e.message);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The key is still readable, and a write with the read's context resolves it.
    let read = client.get(b"hot", ReadOptions::default()).await?;
    assert_eq!(read.values.len(), count as usize);
    client
        .put(
            b"hot",
            b"resolved".to_vec(),
            WriteOptions::with_context(read.context),
        )
        .await?;
    let after = client
        .get(
            b"hot",
            ReadOptions::with_r(dynakv_common::quorum::Quorum::All),
        )
        .await?;
    assert_eq!(after.values, vec![b"resolved".to_vec()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_configured_differently_refuse_each_other() -> anyhow::Result<()> {
    // n3 believes N=2: it would place keys differently, so the others must not count it.
    let cluster = Cluster::start(ClusterOptions {
        tweak: Arc::new(|c| {
            if c.id == "n3" {
                c.replicas = 2;
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
    assert!(log.contains("has N=2"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_item_by_item_and_authorised_item_by_item() -> anyhow::Result<()> {
    use dynakv_common::net::{read_frame, write_frame};
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let (_endpoint, conn) = cluster.raw_connection(0).await?;
    let ask = |req: Request| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            let frame = dynakv_common::codec::encode_frame(&req, 1 << 20)?;
            write_frame(&mut send, &frame).await?;
            let mut answers = Vec::new();
            while let Some(resp) = read_frame::<Response>(&mut recv, 1 << 20).await? {
                answers.push(resp);
            }
            anyhow::Ok(answers)
        }
    };
    let get = Request::Get(dynakv_common::wire::GetRequest {
        key: b"k".to_vec(),
        r: dynakv_common::quorum::Quorum::One,
        mode: Default::default(),
        read_repair: Default::default(),
        timeout_ms: None,
    });
    // A client certificate's batch: the read is served, the replica read refused,
    // a nested batch refused, each answer tagged with its index.
    let answers = ask(Request::Batch(vec![
        get.clone(),
        Request::ReplicaGet { key: b"k".to_vec() },
        Request::Batch(vec![get.clone()]),
    ]))
    .await?;
    assert_eq!(answers.len(), 3, "{answers:?}");
    let mut by_index = std::collections::BTreeMap::new();
    for a in answers {
        match a {
            Response::BatchItem { index, response } => {
                by_index.insert(index, *response);
            }
            other => panic!("not a batch item: {other:?}"),
        }
    }
    assert!(
        matches!(by_index[&0], Response::Get(_)),
        "{:?}",
        by_index[&0]
    );
    assert!(
        matches!(&by_index[&1], Response::Error(e) if e.code == ErrorCode::Forbidden),
        "{:?}",
        by_index[&1]
    );
    assert!(
        matches!(&by_index[&2], Response::Error(e) if e.code == ErrorCode::InvalidRequest),
        "{:?}",
        by_index[&2]
    );
    // Too many requests in one batch: refused as a whole, with a sentence.
    let huge = ask(Request::Batch(vec![
        get;
        dynakv_common::wire::MAX_BATCH + 1
    ]))
    .await?;
    assert!(
        matches!(&huge[..], [Response::Error(e)] if e.code == ErrorCode::TooLarge),
        "{huge:?}"
    );
    // An empty batch is answered too, not left to end without a word.
    let empty = ask(Request::Batch(Vec::new())).await?;
    assert!(
        matches!(&empty[..], [Response::Error(e)] if e.code == ErrorCode::InvalidRequest),
        "{empty:?}"
    );
    Ok(())
}

/// A node whose log cannot be written (stderr on a full disk) goes on serving: a log
/// line that fails is dropped, instead of panicking the task that logged it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_disk_is_full_keeps_serving() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        log_to_full_disk: vec![0],
        ..Default::default()
    })
    .await?;
    // n3 going down makes n1 log (a peer down, writes that miss a replica) while it
    // coordinates every request below.
    cluster.kill(2);
    let client = cluster.client_only(0).await?;
    for i in 0..20 {
        let key = format!("full-log-{i}");
        client
            .put(
                key.as_bytes(),
                b"v".to_vec(),
                WriteOptions::with_w(Quorum::Count(2)),
            )
            .await?;
        let read = client
            .get(key.as_bytes(), ReadOptions::with_r(Quorum::Count(2)))
            .await?;
        assert_eq!(read.values, vec![b"v".to_vec()], "{key}");
    }
    assert!(
        cluster.is_running(0),
        "n1 exited while its log disk was full"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_naming_writes_a_node_never_made_is_refused_and_harms_nothing(
) -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client_only(0).await?;
    let written = client
        .put(b"forged", b"v1".to_vec(), WriteOptions::default())
        .await?;
    // The context names the coordinator's own write; claim far more of its writes, up to
    // the largest counter a clock may hold (a peer refuses anything above it).
    let (actor, counter) = written
        .context
        .dots
        .iter()
        .next()
        .map(|(a, c)| (a.clone(), *c))
        .expect("the write's own dot");
    for claimed in [counter + 1_000, dynakv_common::version::MAX_COUNTER] {
        let mut forged = written.context.clone();
        forged.dots.insert(actor.clone(), claimed);
        let err = client
            .put(
                b"forged",
                b"v2".to_vec(),
                WriteOptions {
                    context: Some(forged),
                    ..Default::default()
                },
            )
            .await
            .expect_err("a context claiming writes the node never made");
        match &err {
            ClientError::Server(e) => {
                assert_eq!(e.code, ErrorCode::InvalidRequest, "{err}");
                assert!(e.message.contains("invalid context"), "{err}");
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }
    // The node still writes every key, and the key holds its acknowledged value.
    for i in 0..10u32 {
        let r = client
            .put(
                format!("after:{i}").as_bytes(),
                b"x".to_vec(),
                WriteOptions::default(),
            )
            .await?;
        assert!(r.replicas_acked >= 2, "written on a write quorum");
    }
    let read = client
        .get(b"forged", ReadOptions::with_r(Quorum::All))
        .await?;
    assert_eq!(read.values, vec![b"v1".to_vec()]);
    Ok(())
}
