//! One anti-entropy exchange: this node and one peer compare their trees of one
//! partition and converge the keys that differ.
//!
//! 1. Compare hashes level by level from the root, descending only into the nodes that
//!    differ (`merkle::Descent`); equal roots end the exchange after one request.
//! 2. List the (key, item) pairs of the differing leaf segments on both sides and find
//!    the keys that differ (`merkle::diff_items`).
//! 3. For those keys, in rate-limited chunks: fetch the peer's states, merge each with
//!    the local one (the DVV sync, the same merge as replication), store the merge here
//!    if it adds anything, and send it to the peer where the peer lacks something.
//!
//! Work grows with the number of differing keys (and the tree's depth), not with the
//! data: the record counts tree nodes compared, keys differing and bytes moved.

use std::sync::Arc;
use std::time::Duration;

use dynakv_common::merkle::{diff_items, Descent};
use dynakv_common::net::Exchange;
use dynakv_common::ring::PartitionId;
use dynakv_common::version::Versioned;
use dynakv_common::wire::{ExchangeRecord, Request, Response, MAX_KEYS_PER_REQUEST};
use dynakv_common::NodeId;

use super::trees::item_of;
use crate::coordinator::now_ms;
use crate::state::NodeState;

/// Keys repaired per chunk (one state request and one push each).
const CHUNK: usize = 64;
const _: () = assert!(CHUNK <= MAX_KEYS_PER_REQUEST);

/// What one exchange did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: ExchangeRecord,
    /// Keys whose state changed on either side.
    pub repaired: u64,
}

struct Tally {
    sent: u64,
    received: u64,
}

impl Tally {
    fn count(&mut self, e: &Exchange) {
        self.sent += e.sent as u64;
        self.received += e.received as u64;
    }
}

async fn call(
    node: &NodeState,
    peer: &NodeId,
    req: &Request,
    tally: &mut Tally,
) -> Result<Response, String> {
    let timeout = node.config.request_timeout();
    let exchange = node
        .peers
        .call_sized(peer, req, timeout)
        .await
        .map_err(|e| e.to_string())?;
    tally.count(&exchange);
    match exchange.response {
        Response::Error(e) => Err(e.message),
        other => Ok(other),
    }
}

/// Exchanges partition `p` with `peer`.
pub async fn exchange(node: &Arc<NodeState>, peer: &NodeId, p: PartitionId) -> Outcome {
    let mut tally = Tally {
        sent: 0,
        received: 0,
    };
    let mut record = ExchangeRecord {
        partition: p,
        peer: peer.clone(),
        at_ms: 0,
        keys_differing: 0,
        nodes_compared: 0,
        bytes_sent: 0,
        bytes_received: 0,
        error: None,
    };
    let result = run(node, peer, p, &mut tally, &mut record).await;
    record.at_ms = now_ms();
    record.bytes_sent = tally.sent;
    record.bytes_received = tally.received;
    let repaired = match result {
        Ok(repaired) => repaired,
        Err(e) => {
            record.error = Some(e);
            0
        }
    };
    Outcome { record, repaired }
}

async fn run(
    node: &Arc<NodeState>,
    peer: &NodeId,
    p: PartitionId,
    tally: &mut Tally,
    record: &mut ExchangeRecord,
) -> Result<u64, String> {
    let tree = node.anti_entropy.trees.snapshot(p)?;
    let mut descent = Descent::new(tree.shape());
    while let Some((level, indices)) = descent.want() {
        let local = tree.hashes(level, &indices).map_err(|e| e.to_string())?;
        let req = Request::TreeHashes {
            partition: p,
            level,
            indices,
        };
        let remote = match call(node, peer, &req, tally).await? {
            Response::TreeHashes(h) => h,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        descent.feed(&local, &remote).map_err(|e| e.to_string())?;
    }
    record.nodes_compared = descent.stats().nodes_compared;
    let segments = descent.differing_segments().to_vec();
    if segments.is_empty() {
        return Ok(0);
    }

    let local_items = local_items(node, p, &segments).await?;
    let remote_items = remote_items(node, peer, p, &segments, tally).await?;
    let keys = diff_items(&local_items, &remote_items);
    record.keys_differing = keys.len() as u64;

    let mut repaired = 0;
    for chunk in keys.chunks(CHUNK) {
        let wait = node.anti_entropy.take_keys(chunk.len() as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        repaired += repair_chunk(node, peer, chunk, tally).await?;
    }
    Ok(repaired)
}

/// This node's (key, item) pairs in the given segments of partition `p`.
async fn local_items(
    node: &NodeState,
    p: PartitionId,
    segments: &[u32],
) -> Result<Vec<(Vec<u8>, u128)>, String> {
    let shape = node.anti_entropy.trees.shape();
    let partitions = node.config.partitions;
    let mut out = Vec::new();
    for &segment in segments {
        let range = shape
            .segment_range(partitions, p, segment)
            .map_err(|e| e.to_string())?;
        let (lo, hi) = (range.lo, range.hi);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = node
                .replica
                .data_in_range(lo, hi, after.as_deref(), 1024)
                .await
                .map_err(|e| e.to_string())?;
            let done = rows.len() < 1024;
            after = rows.last().map(|(k, _)| k.clone());
            out.extend(rows.into_iter().map(|(k, v)| {
                let item = item_of(&k, &v);
                (k, item)
            }));
            if done {
                break;
            }
        }
    }
    Ok(out)
}

async fn remote_items(
    node: &NodeState,
    peer: &NodeId,
    p: PartitionId,
    segments: &[u32],
    tally: &mut Tally,
) -> Result<Vec<(Vec<u8>, u128)>, String> {
    let mut out: Vec<(Vec<u8>, u128)> = Vec::new();
    let mut after = None;
    loop {
        let req = Request::SegmentItems {
            partition: p,
            segments: segments.to_vec(),
            after: after.clone(),
        };
        match call(node, peer, &req, tally).await? {
            Response::SegmentItems { items, complete } => {
                let stuck = items.is_empty() && !complete;
                after = items.last().map(|(k, _)| k.clone());
                out.extend(items);
                if complete {
                    return Ok(out);
                }
                if stuck {
                    return Err("the peer listed no items but said there are more".into());
                }
            }
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// Converges one chunk of differing keys; returns how many changed on either side.
async fn repair_chunk(
    node: &NodeState,
    peer: &NodeId,
    keys: &[Vec<u8>],
    tally: &mut Tally,
) -> Result<u64, String> {
    // The peer's states, asking again for any it left out to stay within a frame.
    let mut remote: Vec<(Vec<u8>, Option<Versioned>)> = Vec::new();
    while remote.len() < keys.len() {
        let req = Request::ReplicaGetMany {
            keys: keys[remote.len()..].to_vec(),
        };
        match call(node, peer, &req, tally).await? {
            Response::ReplicaStates(states) if !states.is_empty() => remote.extend(states),
            Response::ReplicaStates(_) => return Err("the peer returned no states".into()),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    let mut changed = 0u64;
    let mut push: Vec<(Vec<u8>, Versioned)> = Vec::new();
    for (key, theirs) in remote {
        if let Some(s) = &theirs {
            if !s.is_well_formed() {
                return Err("the peer sent a malformed state".into());
            }
        }
        let merged = match theirs.clone() {
            Some(s) => {
                let m = node
                    .replica
                    .merge(key.clone(), s)
                    .await
                    .map_err(|e| e.to_string())?;
                if m.changed {
                    changed += 1;
                }
                m.state
            }
            None => match node.replica.read(&key).await.map_err(|e| e.to_string())? {
                Some(mine) => mine,
                None => continue,
            },
        };
        if theirs.as_ref() != Some(&merged) {
            changed += 1;
            push.push((key, merged));
        }
    }
    // Push in frames of bounded size.
    let budget = node.limits.max_frame_bytes() / 2;
    let mut batch: Vec<(Vec<u8>, Versioned)> = Vec::new();
    let mut size = 0usize;
    for (key, state) in push {
        let bytes = postcard::experimental::serialized_size(&state).unwrap_or(budget) + key.len();
        if !batch.is_empty() && size + bytes > budget {
            send_batch(node, peer, std::mem::take(&mut batch), tally).await?;
            size = 0;
        }
        size += bytes;
        batch.push((key, state));
    }
    if !batch.is_empty() {
        send_batch(node, peer, batch, tally).await?;
    }
    Ok(changed)
}

async fn send_batch(
    node: &NodeState,
    peer: &NodeId,
    states: Vec<(Vec<u8>, Versioned)>,
    tally: &mut Tally,
) -> Result<(), String> {
    match call(node, peer, &Request::ReplicaPutMany { states }, tally).await? {
        Response::Ack => Ok(()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// How long to wait between exchanges to stay under `per_second`.
pub fn spacing(per_second: u64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second.max(1) as f64)
}
