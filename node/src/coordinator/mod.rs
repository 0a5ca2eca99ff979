//! The coordinator: runs a client's read or write against the key's replicas and
//! answers once R (or W) of them have (Dynamo §4.5).
//!
//! Where the copies go and which answers count comes from one place,
//! [`NodeState::plan`] (`dynakv_common::replication`): the key's primaries that are up
//! and, under a sloppy quorum (the default), a fallback standing in for each primary
//! that is down, holding its copy as a hint (Dynamo §4.6). A strict request
//! (`--strict`, Riak's PR/PW) counts only primaries.
//!
//! - [`write`]: a write is coordinated by a primary of its key (it mints the dot); any
//!   other node forwards it. The coordinator stores it locally, fans the new state out,
//!   and answers after W acknowledgements.
//! - [`read`]: any node asks every target for its state, answers after R, and repairs
//!   the primaries it found behind (read repair, Dynamo §4.7) after or before the reply.
//!
//! A request fails fast, before touching any replica, when the failure detector already
//! knows too few targets are up; otherwise it fails at its deadline. A failed write may
//! still have been stored on some replicas (as in Dynamo and Cassandra): the client did
//! not get an acknowledgement, not a rollback.
//!
//! Every task that outlives the client's answer is spawned on the node's task tracker.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dynakv_common::quorum::{Progress, QuorumTracker};
use dynakv_common::replication::Target;
use dynakv_common::version::Versioned;
use dynakv_common::wire::{ErrorCode, Request, Response, WireError};
use dynakv_common::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::fault::Kind;
use crate::replica::ReplicaError;
use crate::state::NodeState;

pub mod read;
pub mod write;

pub use read::get;
pub use write::put;

/// Longest deadline a client may ask for.
pub(crate) const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(WireError::new(code, message))
}

pub(crate) fn invalid(e: dynakv_common::Error) -> Response {
    let code = match e {
        dynakv_common::Error::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::InvalidRequest,
    };
    error(code, e.to_string())
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
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

/// Why one replica's part of a request failed.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The replica could not be reached or did not answer in time.
    Unreachable(String),
    /// It answered with an error.
    Refused(String),
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Unreachable(r) | Failure::Refused(r) => r.clone(),
        }
    }
}

/// One target's answer, tagged with the target that finally served it.
type Answers<T> = mpsc::Receiver<(Target, Result<T, Failure>)>;

/// Runs `op` against every target at once on the node's task tracker; answers arrive
/// in completion order. The tasks outlive the caller's wait, so slow replicas still get
/// their write (or feed read repair) after the client has its answer.
fn fan_out<T, F, Fut>(node: &Arc<NodeState>, targets: &[Target], mut op: F) -> Answers<T>
where
    T: Send + 'static,
    F: FnMut(Arc<NodeState>, Target) -> Fut,
    Fut: std::future::Future<Output = (Target, Result<T, Failure>)> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(targets.len().max(1));
    for target in targets.iter().cloned() {
        let tx = tx.clone();
        let work = op(node.clone(), target);
        node.spawn(async move {
            let _ = tx.send(work.await).await;
        });
    }
    rx
}

/// Feeds answers into `tracker` until the quorum is reached, cannot be reached, or the
/// deadline passes. `count` says whether an answer counts toward the quorum (and, for a
/// non-counting answer, whether it stands for a counting target that failed); `keep`
/// receives every successful answer.
async fn wait_for_quorum<T>(
    answers: &mut Answers<T>,
    tracker: &mut QuorumTracker,
    deadline: Instant,
    count: impl Fn(&Target) -> Counts,
    mut keep: impl FnMut(Target, T),
) -> Progress {
    let mut progress = tracker.progress();
    while progress == Progress::Pending {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some((target, result))) => {
                let counts = count(&target);
                let node = target.node.clone();
                let outcome = match result {
                    Ok(value) => {
                        keep(target, value);
                        Ok(())
                    }
                    Err(f) => Err(f.reason()),
                };
                match counts {
                    Counts::Yes => progress = tracker.record(node, outcome),
                    Counts::AsFailureOf(primary) => {
                        progress = tracker.record(primary, Err("unreachable".into()))
                    }
                    Counts::No => {}
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    progress
}

/// How one answer counts toward a quorum.
enum Counts {
    Yes,
    No,
    /// A fallback took over from a counting primary that failed; the quorum only sees
    /// the primary's failure.
    AsFailureOf(NodeId),
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

/// Reads a replica's state: locally, or from a peer.
pub(crate) async fn read_replica(
    node: &NodeState,
    peer: &NodeId,
    key: Vec<u8>,
    timeout: Duration,
) -> Result<Option<Versioned>, Failure> {
    if peer == node.membership.me() {
        let delays = local_delays(node, Kind::Read);
        if let Some((request, _)) = delays {
            dynakv_common::timer::sleep(request).await;
        }
        let state = node
            .replica
            .read_any(&key, now_ms(), node.config.hint_ttl_ms())
            .await
            .map_err(|e| Failure::Refused(e.to_string()));
        if let Some((_, reply)) = delays {
            dynakv_common::timer::sleep(reply).await;
        }
        return state;
    }
    match node
        .peers
        .send(peer, Request::ReplicaGet { key }, timeout)
        .await
    {
        Ok(Response::ReplicaState(Some(s))) if !s.is_well_formed() => {
            Err(Failure::Refused("answered with a malformed state".into()))
        }
        Ok(Response::ReplicaState(state)) => Ok(state),
        Ok(Response::Error(e)) => Err(Failure::Refused(e.message)),
        Ok(other) => Err(Failure::Refused(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Failure::Unreachable(e.to_string())),
    }
}

/// The lab's delays of this node's own replica operation (request, reply), if any.
fn local_delays(node: &NodeState, kind: Kind) -> Option<(Duration, Duration)> {
    if node.faults.is_active() {
        node.faults.local(kind)
    } else {
        None
    }
}

/// Stores a state on a replica, durably: merged into a primary's copy, or kept as a
/// hint for `hint_for` on a fallback. `minted` marks the coordinator's own copy of a
/// write minted with [`crate::replica::Replica::mint`].
pub(crate) async fn write_replica(
    node: &NodeState,
    peer: &NodeId,
    key: Vec<u8>,
    state: Versioned,
    hint_for: Option<NodeId>,
    timeout: Duration,
) -> Result<(), Failure> {
    write_replica_as(node, peer, key, state, hint_for, timeout, false).await
}

pub(crate) async fn write_replica_as(
    node: &NodeState,
    peer: &NodeId,
    key: Vec<u8>,
    state: Versioned,
    hint_for: Option<NodeId>,
    timeout: Duration,
    minted: bool,
) -> Result<(), Failure> {
    if peer == node.membership.me() {
        let delays = local_delays(node, Kind::Write);
        if let Some((request, _)) = delays {
            dynakv_common::timer::sleep(request).await;
        }
        let stored = if minted {
            node.replica.land(key, state).await.map(|_| ())
        } else {
            store_local(node, key, state, hint_for).await
        };
        if let Some((_, reply)) = delays {
            dynakv_common::timer::sleep(reply).await;
        }
        return stored.map_err(|e| Failure::Refused(e.to_string()));
    }
    let req = Request::ReplicaPut {
        key,
        state,
        hint_for,
    };
    match node.peers.send(peer, req, timeout).await {
        Ok(Response::Ack) => Ok(()),
        Ok(Response::Error(e)) => Err(Failure::Refused(e.message)),
        Ok(other) => Err(Failure::Refused(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Failure::Unreachable(e.to_string())),
    }
}

/// Applies a replica write on this node: a merge into its primary copy, or a hint.
pub(crate) async fn store_local(
    node: &NodeState,
    key: Vec<u8>,
    state: Versioned,
    hint_for: Option<NodeId>,
) -> Result<(), ReplicaError> {
    match hint_for {
        None => node.replica.merge(key, state).await.map(|_| ()),
        Some(target) => {
            let stored = node
                .replica
                .store_hint(&key, &target, state, now_ms())
                .await;
            match &stored {
                Ok(()) => crate::metrics::bump(&node.counters.hints_stored),
                Err(ReplicaError::HintsFull { .. }) => {
                    crate::metrics::bump(&node.counters.hints_dropped);
                    if node
                        .counters
                        .hints_dropped
                        .load(std::sync::atomic::Ordering::Relaxed)
                        % 1000
                        == 1
                    {
                        tracing::warn!(target_node = %target, "hint store full: dropping hints; anti-entropy will repair those keys");
                    }
                }
                Err(_) => {}
            }
            stored
        }
    }
}
