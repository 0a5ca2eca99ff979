//! What each request does, once the server has read it and checked that the
//! connection's certificate allows it: client requests go to the coordinator, peer
//! requests to the local replica, the hash trees or the reaper's conditional delete,
//! admin requests to the debug and anti-entropy views.

use std::sync::Arc;

use dynakv_common::merkle::TreeShape;
use dynakv_common::version::Versioned;
use dynakv_common::wire::{
    DebugReplica, ErrorCode, LatencySummary, MemberStatus, Request, Response, StatusResponse,
    WireError, MAX_KEYS_PER_REQUEST,
};
use dynakv_common::NodeId;

use crate::antientropy::trees::item_of;
use crate::antientropy::AntiEntropy;
use crate::coordinator::{self, now_ms};
use crate::metrics::bump;
use crate::replica::ReplicaError;
use crate::state::NodeState;

/// What the certificate on a connection allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A node certificate: any request.
    Node,
    /// An admin client certificate: client and admin requests.
    Admin,
    /// Any other certificate of the cluster CA: client requests only.
    Client,
}

/// Answers in one frame stay below this share of the frame limit; callers ask again.
const ANSWER_BUDGET_DIVISOR: usize = 2;

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(WireError::new(code, message))
}

fn storage_error(e: ReplicaError) -> Response {
    refuse(ErrorCode::Storage, e.to_string())
}

/// Refuses a key the node does not take (empty, or over `max_key_bytes`), as client
/// reads and writes are refused: every request that names a key checks it first.
fn check_key(node: &NodeState, key: &[u8]) -> Result<(), Response> {
    node.limits.check_key(key).map_err(coordinator::invalid)
}

/// Refuses a peer request naming more keys than [`MAX_KEYS_PER_REQUEST`]: the node would
/// serve them all before anything else.
fn check_key_count(count: usize) -> Result<(), Response> {
    if count > MAX_KEYS_PER_REQUEST {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!(
                "a request may name at most {MAX_KEYS_PER_REQUEST} keys; this one names {count}"
            ),
        ));
    }
    Ok(())
}

/// Answers one request.
pub async fn dispatch(node: &Arc<NodeState>, role: Role, req: Request) -> Response {
    match req {
        Request::Get(g) => coordinator::get(node.clone(), g).await,
        Request::Put(mut p) => {
            // Only a node may say it already forwarded a write.
            p.forwarded &= role == Role::Node;
            coordinator::put(node.clone(), p).await
        }
        Request::Status => Response::Status(Box::new(status(node))),
        Request::ReplicaGet { key } => {
            bump(&node.counters.replica_requests);
            if let Err(refusal) = check_key(node, &key) {
                return refusal;
            }
            let hint_ttl_ms = node.config.hint_ttl_ms();
            match node
                .replica
                .read_any(&key, coordinator::now_ms(), hint_ttl_ms)
                .await
            {
                Ok(state) => Response::ReplicaState(state),
                Err(e) => storage_error(e),
            }
        }
        Request::ReplicaPut {
            key,
            state,
            hint_for,
        } => {
            bump(&node.counters.replica_requests);
            replica_put(node, key, state, hint_for).await
        }
        Request::ReplicaGetMany { keys } => replica_get_many(node, keys).await,
        Request::ReplicaPutMany { states } => replica_put_many(node, states).await,
        Request::TreeHashes {
            partition,
            level,
            indices,
        } => {
            if !node.anti_entropy.trees.is_ready() {
                return refuse(ErrorCode::Unavailable, "hash trees are still being built");
            }
            match node.anti_entropy.trees.hashes(partition, level, &indices) {
                Ok(h) => Response::TreeHashes(h),
                Err(e) => refuse(ErrorCode::InvalidRequest, e),
            }
        }
        Request::SegmentItems {
            partition,
            segments,
            after,
        } => segment_items(node, partition, segments, after).await,
        Request::Reap { key, digest } => {
            if let Err(refusal) = check_key(node, &key) {
                return refusal;
            }
            match node.replica.reap_if(&key, digest).await {
                Ok(reaped) => {
                    if reaped {
                        bump(&node.counters.tombstones_reaped);
                    }
                    Response::Reaped(reaped)
                }
                Err(e) => storage_error(e),
            }
        }
        Request::Ping {
            from,
            shape,
            incarnation,
        } => {
            // Only members ping: an unknown id would be remembered (its incarnation) for good.
            if !node.membership.members().contains_key(&from) {
                return refuse(
                    ErrorCode::Misconfigured,
                    format!(
                        "{from} is not a member of this cluster as {me} knows it; every node must list the same members",
                        me = node.membership.me()
                    ),
                );
            }
            let mine = node.shape();
            if shape != mine {
                return refuse(
                    ErrorCode::Misconfigured,
                    format!(
                        "{from} and {me} disagree on the cluster: {from} has N={}, ring {:016x} and conflict policy {}, {me} has N={}, ring {:016x} and conflict policy {}; every node must list the same members, replicas, partitions and conflict_policy",
                        shape.replicas,
                        shape.ring,
                        shape.policy,
                        mine.replicas,
                        mine.ring,
                        mine.policy,
                        me = node.membership.me(),
                    ),
                );
            }
            node.membership.record_ok(&from);
            if node.membership.observe_incarnation(&from, incarnation) {
                // The peer restarted: a connection to its previous process would only
                // time out, so drop it and dial afresh.
                tracing::info!(peer = %from, "peer restarted");
                node.peers.reset(&from).await;
            }
            Response::Pong
        }
        Request::DebugReplica { key } => debug_replica(node, key).await,
        Request::SetFaults(spec) => {
            if let Err(e) = spec.validate() {
                return refuse(ErrorCode::InvalidRequest, e);
            }
            tracing::info!(rules = spec.rules.len(), local = spec.local, "faults set");
            node.faults.set(spec);
            Response::Ack
        }
        Request::GetFaults => Response::Faults(Box::new(node.faults.get())),
        // The server answers batches item by item (server.rs); one never gets here.
        Request::Batch(_) => refuse(ErrorCode::InvalidRequest, "batches do not nest"),
        Request::AntiEntropy { run_now } => {
            if run_now {
                AntiEntropy::run_round(node).await;
            }
            Response::AntiEntropy(Box::new(node.anti_entropy.status(node.membership.me())))
        }
    }
}

fn well_formed(key: &[u8], state: &Versioned, node: &NodeState) -> Result<(), Response> {
    if let Err(e) = node.limits.check_key(key) {
        return Err(refuse(ErrorCode::InvalidRequest, e.to_string()));
    }
    if !state.is_well_formed() {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "replica state refused: siblings unsorted, uncovered by the clock, or counters out of range",
        ));
    }
    Ok(())
}

async fn replica_put(
    node: &NodeState,
    key: Vec<u8>,
    state: Versioned,
    hint_for: Option<NodeId>,
) -> Response {
    if let Err(refusal) = well_formed(&key, &state, node) {
        return refusal;
    }
    let me = node.membership.me();
    let primaries = node.with_placement(|p| p.primaries(p.partition_of(&key)));
    match &hint_for {
        None if !primaries.contains(me) => {
            return refuse(
                ErrorCode::Misconfigured,
                format!("{me} is not a primary replica of this key; the nodes disagree on membership"),
            )
        }
        Some(target) if !primaries.contains(target) || primaries.contains(me) => {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("a hint for {target} must go to a fallback of the key, and {target} must be one of its primaries"),
            )
        }
        _ => {}
    }
    // A node serving no client request may run a lone replica write's fsync on its event
    // loop (no hand-off to the syncer thread and back on the write's path); with client
    // requests in flight, they would wait behind the fsync, so it goes to the syncer.
    let quiet = node.in_flight.available_permits() >= node.config.max_in_flight;
    let stored = match hint_for {
        None if quiet => node.replica.merge_in_place(key, state).await.map(|_| ()),
        _ => coordinator::store_local(node, key, state, hint_for).await,
    };
    match stored {
        Ok(()) => Response::Ack,
        Err(e @ ReplicaError::HintsFull { .. }) => refuse(ErrorCode::Unavailable, e.to_string()),
        Err(e) => storage_error(e),
    }
}

async fn replica_get_many(node: &NodeState, keys: Vec<Vec<u8>>) -> Response {
    if let Err(refusal) = check_key_count(keys.len()) {
        return refusal;
    }
    let budget = node.limits.max_frame_bytes() / ANSWER_BUDGET_DIVISOR;
    let mut out = Vec::new();
    let mut size = 0usize;
    for key in keys {
        if let Err(refusal) = check_key(node, &key) {
            return refusal;
        }
        let state = match node.replica.read(&key).await {
            Ok(s) => s,
            Err(e) => return storage_error(e),
        };
        let bytes = key.len()
            + state
                .as_ref()
                .and_then(|s| postcard::experimental::serialized_size(s).ok())
                .unwrap_or(0);
        // Always answer at least one key, so the caller makes progress.
        if !out.is_empty() && size + bytes > budget {
            break;
        }
        size += bytes;
        out.push((key, state));
    }
    Response::ReplicaStates(out)
}

async fn replica_put_many(node: &NodeState, states: Vec<(Vec<u8>, Versioned)>) -> Response {
    if let Err(refusal) = check_key_count(states.len()) {
        return refusal;
    }
    for (key, state) in &states {
        if let Err(refusal) = well_formed(key, state, node) {
            return refusal;
        }
    }
    let me = node.membership.me();
    for (key, state) in states {
        let primary = node.with_placement(|p| p.primaries(p.partition_of(&key)).contains(me));
        if !primary {
            return refuse(
                ErrorCode::Misconfigured,
                format!("{me} is not a primary replica of a key it was sent; the nodes disagree on membership"),
            );
        }
        if let Err(e) = node.replica.merge(key, state).await {
            return storage_error(e);
        }
    }
    Response::Ack
}

async fn segment_items(
    node: &NodeState,
    partition: u32,
    mut segments: Vec<u32>,
    after: Option<Vec<u8>>,
) -> Response {
    let shape: TreeShape = node.anti_entropy.trees.shape();
    let partitions = node.config.partitions;
    segments.sort_unstable();
    segments.dedup();
    let budget = node.limits.max_frame_bytes() / ANSWER_BUDGET_DIVISOR;
    let after_hash = after.as_deref().map(dynakv_common::ring::key_hash);
    let mut items = Vec::new();
    let mut size = 0usize;
    for segment in segments {
        let (lo, hi) = match shape.segment_range(partitions, partition, segment) {
            Ok(r) => (r.lo, r.hi),
            Err(e) => return refuse(ErrorCode::InvalidRequest, e.to_string()),
        };
        // Resume inside the segment holding `after`; skip the ones before it.
        let resume = match after_hash {
            Some(h) if h > hi => continue,
            Some(h) if h >= lo => after.as_deref(),
            _ => None,
        };
        let mut cursor = resume.map(<[u8]>::to_vec);
        loop {
            let rows = match node
                .replica
                .data_in_range(lo, hi, cursor.as_deref(), 1024)
                .await
            {
                Ok(r) => r,
                Err(e) => return storage_error(e),
            };
            let done = rows.len() < 1024;
            for (k, v) in rows {
                if size > budget {
                    return Response::SegmentItems {
                        items,
                        complete: false,
                    };
                }
                size += k.len() + 16;
                let item = item_of(&k, &v);
                cursor = Some(k.clone());
                items.push((k, item));
            }
            if done {
                break;
            }
        }
    }
    Response::SegmentItems {
        items,
        complete: true,
    }
}

async fn debug_replica(node: &NodeState, key: Vec<u8>) -> Response {
    if let Err(refusal) = check_key(node, &key) {
        return refusal;
    }
    let (partition, primaries) =
        node.with_placement(|p| (p.partition_of(&key), p.primaries(p.partition_of(&key))));
    let state = match node.replica.read(&key).await {
        Ok(s) => s,
        Err(e) => return storage_error(e),
    };
    let now = now_ms();
    let hints = match node.replica.hints_for(&key).await {
        Ok(h) => h
            .into_iter()
            .map(|(target, state, created)| (target, state, now.saturating_sub(created)))
            .collect(),
        Err(e) => return storage_error(e),
    };
    let tombstone_since_ms = match node.replica.tombstone_since(&key).await {
        Ok(t) => t,
        Err(e) => return storage_error(e),
    };
    Response::Debug(Box::new(DebugReplica {
        node: node.membership.me().clone(),
        partition,
        primaries,
        state,
        hints,
        tombstone_since_ms,
    }))
}

fn status(node: &NodeState) -> StatusResponse {
    let ring = node.membership.ring();
    let claims = ring.claims();
    let members = node
        .membership
        .members()
        .iter()
        .map(|(id, addr)| MemberStatus {
            id: id.clone(),
            addr: addr.clone(),
            up: node.membership.is_up(id),
            partitions: claims.get(id).copied().unwrap_or(0) as u32,
            incarnation: node.membership.incarnation(id),
        })
        .collect();
    StatusResponse {
        node: node.membership.me().clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        replicas: node.n as u8,
        partitions: ring.partition_count(),
        members,
        keys: node
            .replica
            .storage()
            .approximate_len(crate::storage::Space::Data) as u64,
        counters: node.counter_snapshot(),
        hints_pending: node.replica.hints_pending(),
        workers: node.workers.snapshot(),
        latency: latency_summaries(node),
    }
}

/// Client requests coordinated here, per operation, then this node's fsyncs.
fn latency_summaries(node: &NodeState) -> Vec<LatencySummary> {
    let mut summaries = node.latency.summaries();
    if let Some(f) = node.replica.storage().stats().fsync_latency {
        summaries.push(LatencySummary {
            op: "fsync".into(),
            count: f.count,
            p50_us: f.p50_us,
            p90_us: f.p90_us,
            p99_us: f.p99_us,
            p999_us: f.p999_us,
            max_us: f.max_us,
        });
    }
    summaries
}
