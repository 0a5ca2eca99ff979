//! The coordinator: runs a client's read or write against the key's replicas and
//! answers once R (or W) of them have (Dynamo §4.5).
//!
//! Write path: a write must be coordinated by one of the key's replicas, because the
//! coordinator mints the new version's dot; any other node forwards it to the first
//! reachable replica. The coordinator applies the write locally (read-modify-write under
//! the key's lock, fsync'd), then sends the resulting state to the other replicas, which
//! merge it durably and acknowledge. W acknowledgements (its own included) answer the
//! client; replicas still in flight keep going in the background.
//!
//! Read path: any node asks every replica for its state and answers once R have replied,
//! with the merge of their states. Then read repair (Dynamo §4.7): it keeps listening to
//! the remaining replicas for a short window and sends the merged state to every replica
//! that answered with less.
//!
//! A request fails fast, before touching any replica, when the failure detector already
//! knows that fewer than R/W replicas are up; otherwise it fails at its deadline. A
//! failed write may still have been stored on some replicas (as in Dynamo and
//! Cassandra): the client did not get an acknowledgement, not a rollback.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dynakv_common::quorum::{Progress, QuorumTracker};
use dynakv_common::version::{validate_clock, Versioned};
use dynakv_common::wire::{
    ErrorCode, GetRequest, GetResponse, PutRequest, PutResponse, Request, Response, WireError,
};
use dynakv_common::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics::bump;
use crate::node::NodeState;
use crate::replica::ReplicaError;

/// Time kept back when forwarding a write, so the replica's answer beats our deadline.
const FORWARD_MARGIN: Duration = Duration::from_millis(200);
/// Longest deadline a client may ask for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(WireError::new(code, message))
}

fn invalid(e: dynakv_common::Error) -> Response {
    let code = match e {
        dynakv_common::Error::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::InvalidRequest,
    };
    error(code, e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The request's deadline: its own `timeout_ms` (1 ms to 60 s) or the node's default.
fn deadline(node: &NodeState, timeout_ms: Option<u32>) -> Result<(Instant, Duration), Response> {
    if timeout_ms == Some(0) {
        return Err(error(
            ErrorCode::InvalidRequest,
            "timeout must be at least 1 ms",
        ));
    }
    let timeout = timeout_ms
        .map(|ms| Duration::from_millis(u64::from(ms)))
        .unwrap_or_else(|| node.config.request_timeout())
        .min(MAX_REQUEST_TIMEOUT);
    Ok((Instant::now() + timeout, timeout))
}

type Answers<T> = mpsc::Receiver<(NodeId, Result<T, String>)>;

/// Runs `op` against every replica at once; answers arrive in completion order. The
/// tasks outlive the caller's wait, so slow replicas still get their write (or feed read
/// repair) after the client has its answer.
fn fan_out<T, F, Fut>(node: &Arc<NodeState>, replicas: &[NodeId], op: F) -> Answers<T>
where
    T: Send + 'static,
    F: Fn(Arc<NodeState>, NodeId) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(replicas.len().max(1));
    for peer in replicas.iter().cloned() {
        let tx = tx.clone();
        let work = op(node.clone(), peer.clone());
        tokio::spawn(async move {
            let _ = tx.send((peer, work.await)).await;
        });
    }
    rx
}

/// Feeds answers into `tracker` until the quorum is reached, cannot be reached, or the
/// deadline passes; `keep` receives each successful answer.
async fn wait_for_quorum<T>(
    answers: &mut Answers<T>,
    tracker: &mut QuorumTracker,
    deadline: Instant,
    mut keep: impl FnMut(NodeId, T),
) -> Progress {
    let mut progress = tracker.progress();
    while progress == Progress::Pending {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some((peer, Ok(value)))) => {
                keep(peer.clone(), value);
                progress = tracker.record(peer, Ok(()));
            }
            Ok(Some((peer, Err(why)))) => progress = tracker.record(peer, Err(why)),
            Ok(None) | Err(_) => break,
        }
    }
    progress
}

fn reasons(tracker: &QuorumTracker) -> String {
    if tracker.failures().is_empty() {
        return String::new();
    }
    let list: Vec<String> = tracker
        .failures()
        .iter()
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    format!(" ({})", list.join("; "))
}

/// Coordinates a client read.
pub async fn get(node: Arc<NodeState>, req: GetRequest) -> Response {
    bump(&node.counters.gets);
    if let Err(e) = node.limits.check_key(&req.key) {
        return invalid(e);
    }
    let n = node.n;
    let r = match req.r.resolve(n, "R") {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    let (deadline, timeout) = match deadline(&node, req.timeout_ms) {
        Ok(d) => d,
        Err(refusal) => return refusal,
    };
    let replicas = node.membership.ring().preference_list_for_key(&req.key, n);
    let up = count_up(&node, &replicas);
    if up < r {
        bump(&node.counters.read_quorum_misses);
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "read quorum not reached: only {up} of {n} replicas are reachable, {r} required"
            ),
        );
    }

    let key = req.key.clone();
    let mut rx = fan_out(&node, &replicas, move |node, peer| {
        let key = key.clone();
        async move { read_replica(&node, &peer, key, timeout).await }
    });
    let mut tracker = QuorumTracker::new(r, replicas.len());
    let mut answers: Vec<(NodeId, Option<Versioned>)> = Vec::new();
    let progress = wait_for_quorum(&mut rx, &mut tracker, deadline, |peer, state| {
        answers.push((peer, state))
    })
    .await;
    if progress != Progress::Reached {
        bump(&node.counters.read_quorum_misses);
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "read quorum not reached: {} of {n} replicas answered within {timeout:?}, {r} required{}",
                tracker.ok_count(),
                reasons(&tracker)
            ),
        );
    }

    let merged = merge_all(&answers);
    let values: Vec<Vec<u8>> = merged
        .live_values()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    if values.len() > 1 {
        bump(&node.counters.reads_with_siblings);
    }
    let response = Response::Get(GetResponse {
        values,
        context: merged.clock().clone(),
        replicas_answered: tracker.ok_count() as u8,
    });

    let window = node.config.read_repair_window();
    if !window.is_zero() {
        tokio::spawn(read_repair(node, req.key, answers, rx, window));
    }
    response
}

/// How many of `replicas` the failure detector considers up.
fn count_up(node: &NodeState, replicas: &[NodeId]) -> usize {
    replicas
        .iter()
        .filter(|id| node.membership.is_up(id))
        .count()
}

/// The merge of every state among replica answers.
fn merge_all(answers: &[(NodeId, Option<Versioned>)]) -> Versioned {
    let mut merged = Versioned::new();
    for state in answers.iter().filter_map(|(_, s)| s.as_ref()) {
        merged.merge(state);
    }
    merged
}

async fn read_replica(
    node: &NodeState,
    peer: &NodeId,
    key: Vec<u8>,
    timeout: Duration,
) -> Result<Option<Versioned>, String> {
    if peer == node.membership.me() {
        return node.replica.read(&key).await.map_err(|e| e.to_string());
    }
    match node
        .call_peer(peer, &Request::ReplicaGet { key }, timeout)
        .await
    {
        Ok(Response::ReplicaState(Some(s))) if !s.is_well_formed() => {
            Err("answered with a malformed state".into())
        }
        Ok(Response::ReplicaState(state)) => Ok(state),
        Ok(Response::Error(e)) => Err(e.message),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Waits for the replicas that had not answered yet, then sends the merged state to every
/// replica that answered with less than it.
async fn read_repair(
    node: Arc<NodeState>,
    key: Vec<u8>,
    mut answers: Vec<(NodeId, Option<Versioned>)>,
    mut rx: mpsc::Receiver<(NodeId, Result<Option<Versioned>, String>)>,
    window: Duration,
) {
    let until = Instant::now() + window;
    while let Ok(Some((peer, result))) = tokio::time::timeout_at(until, rx.recv()).await {
        if let Ok(state) = result {
            answers.push((peer, state));
        }
    }
    let merged = merge_all(&answers);
    if merged == Versioned::new() {
        return;
    }
    let digest = merged.digest();
    for (peer, state) in answers {
        if state.as_ref().map(Versioned::digest) == Some(digest) {
            continue;
        }
        let result = write_replica(&node, &peer, key.clone(), merged.clone(), window).await;
        match result {
            Ok(()) => {
                bump(&node.counters.read_repairs);
                debug!(peer = %peer, "read repair sent");
            }
            Err(why) => debug!(peer = %peer, cause = %why, "read repair failed"),
        }
    }
}

async fn write_replica(
    node: &NodeState,
    peer: &NodeId,
    key: Vec<u8>,
    state: Versioned,
    timeout: Duration,
) -> Result<(), String> {
    if peer == node.membership.me() {
        return node
            .replica
            .merge(key, state)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    match node
        .call_peer(peer, &Request::ReplicaPut { key, state }, timeout)
        .await
    {
        Ok(Response::Ack) => Ok(()),
        Ok(Response::Error(e)) => Err(e.message),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Coordinates a client write or delete.
pub async fn put(node: Arc<NodeState>, req: PutRequest) -> Response {
    bump(&node.counters.puts);
    if let Err(e) = node.limits.check_key(&req.key) {
        return invalid(e);
    }
    if let Some(v) = &req.value {
        if let Err(e) = node.limits.check_value(v) {
            return invalid(e);
        }
    }
    let n = node.n;
    let w = match req.w.resolve(n, "W") {
        Ok(w) => w,
        Err(e) => return invalid(e),
    };
    if let Some(ctx) = &req.context {
        if let Err(e) = validate_clock(ctx) {
            return invalid(e);
        }
    }
    let (deadline, timeout) = match deadline(&node, req.timeout_ms) {
        Ok(d) => d,
        Err(refusal) => return refusal,
    };
    let replicas = node.membership.ring().preference_list_for_key(&req.key, n);
    let me = node.membership.me().clone();
    if !replicas.contains(&me) {
        return forward(node, req, replicas, deadline).await;
    }
    let up = count_up(&node, &replicas);
    if up < w {
        bump(&node.counters.write_quorum_misses);
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "write quorum not reached: only {up} of {n} replicas are reachable, {w} required (nothing was written)"
            ),
        );
    }

    let context = req.context.clone().unwrap_or_default();
    let local = node
        .replica
        .coordinate(req.key.clone(), context.clone(), req.value, now_ms());
    let (state, dot) = match tokio::time::timeout_at(deadline, local).await {
        Ok(Ok(written)) => written,
        Ok(Err(e @ ReplicaError::StateTooLarge { .. })) => {
            return error(ErrorCode::TooLarge, e.to_string());
        }
        Ok(Err(e)) => {
            warn!(cause = %e, "local write failed");
            return error(
                ErrorCode::Storage,
                format!("write failed on the coordinator: {e}"),
            );
        }
        Err(_) => {
            warn!("local write did not finish before the deadline");
            return error(
                ErrorCode::Storage,
                format!("the coordinator's disk did not complete the write within {timeout:?}; it may still be stored there"),
            );
        }
    };

    let mut tracker = QuorumTracker::new(w, replicas.len());
    tracker.record(me.clone(), Ok(()));
    let others: Vec<NodeId> = replicas.iter().filter(|id| **id != me).cloned().collect();
    let (key, written) = (req.key.clone(), state.clone());
    let mut rx = fan_out(&node, &others, move |node, peer| {
        let (key, written) = (key.clone(), written.clone());
        async move { write_replica(&node, &peer, key, written, timeout).await }
    });
    let progress = wait_for_quorum(&mut rx, &mut tracker, deadline, |_, ()| {}).await;
    if progress != Progress::Reached {
        bump(&node.counters.write_quorum_misses);
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "write quorum not reached: {} of {n} replicas acknowledged within {timeout:?}, {w} required; the write may still be stored on the replicas that acknowledged{}",
                tracker.ok_count(),
                reasons(&tracker)
            ),
        );
    }
    Response::Put(PutResponse {
        context: state.write_context(&context, &dot),
        replicas_acked: tracker.ok_count() as u8,
    })
}

/// Hands a write to a replica of its key, trying them in preference order.
async fn forward(
    node: Arc<NodeState>,
    mut req: PutRequest,
    replicas: Vec<NodeId>,
    deadline: Instant,
) -> Response {
    if req.forwarded {
        return error(
            ErrorCode::Internal,
            "a forwarded write reached a node that is not its replica: the nodes disagree on membership",
        );
    }
    bump(&node.counters.puts_forwarded);
    req.forwarded = true;
    let mut why = Vec::new();
    for peer in replicas.iter().filter(|id| node.membership.is_up(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Dial first, so the time it takes is not counted against the replica.
        if let Err(e) = node.transport.ensure_connected(peer, left).await {
            node.membership.record_failure(peer);
            why.push(format!("{peer}: {e}"));
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // The replica gets a little less time than we wait, so its own answer (say,
        // "quorum not reached") reaches the client instead of our timeout.
        let margin = (left / 4).min(FORWARD_MARGIN);
        req.timeout_ms = Some(
            u32::try_from((left - margin).as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
        );
        match node.call_peer(peer, &Request::Put(req.clone()), left).await {
            // Refused unread (overloaded, shutting down): nothing done, try the next one.
            Ok(Response::Error(e)) if e.code == ErrorCode::Unavailable => {
                why.push(format!("{peer}: {}", e.message));
            }
            Ok(resp) => return resp,
            // Never reached the replica: safe to try the next one.
            Err(e) if e.surely_not_delivered() => why.push(format!("{peer}: {e}")),
            Err(e) => {
                // The replica may have applied the write: retrying elsewhere could store
                // it twice, so report the unknown outcome instead.
                bump(&node.counters.write_quorum_misses);
                return error(
                    ErrorCode::QuorumNotReached,
                    format!("write outcome unknown: replica {peer} coordinating it did not answer ({e}); the write may have been stored"),
                );
            }
        }
    }
    bump(&node.counters.write_quorum_misses);
    error(
        ErrorCode::QuorumNotReached,
        format!(
            "write quorum not reached: no replica of the key could coordinate the write ({})",
            if why.is_empty() {
                "none reachable".to_string()
            } else {
                why.join("; ")
            }
        ),
    )
}
