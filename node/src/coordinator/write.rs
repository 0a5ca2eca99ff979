//! The write path: coordinate a put or delete on a primary, fan the new state out to
//! the plan's targets (primaries, and fallbacks holding hints for down primaries), and
//! answer after W acknowledgements that count.
//!
//! A primary that fails during the write (it was believed up) hands its copy to the next
//! spare fallback, with a hint, so a sloppy write does not wait for the failure detector.
//! Under `--strict` such a fallback still stores the hint but only the primary's failure
//! is counted.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynakv_common::quorum::{Progress, QuorumTracker};
use dynakv_common::replication::{Plan, QuorumMode, Target};
use dynakv_common::version::{validate_clock, Versioned};
use dynakv_common::wire::{ErrorCode, PutRequest, PutResponse, Request, Response};
use dynakv_common::NodeId;
use tokio::time::Instant;
use tracing::warn;

use super::{
    deadline, error, fan_out, invalid, now_ms, reasons, wait_for_quorum, write_replica,
    write_replica_as, Counts, Failure,
};
use crate::metrics::{bump, Op};
use crate::replica::ReplicaError;
use crate::state::NodeState;

/// Time kept back when forwarding a write, so the replica's answer beats our deadline.
const FORWARD_MARGIN: Duration = Duration::from_millis(200);

/// Coordinates a client write or delete.
pub async fn put(node: Arc<NodeState>, req: PutRequest) -> Response {
    let started = std::time::Instant::now();
    let op = if req.value.is_some() {
        Op::Put
    } else {
        Op::Delete
    };
    let response = coordinate(node.clone(), req).await;
    node.latency.record(op, started.elapsed());
    response
}

fn quorum_error(plan: &Plan, n: usize, w: usize, countable: usize) -> Response {
    let message = match plan.mode {
        QuorumMode::Strict => format!(
            "write quorum not reached: only {countable} of {n} primary replicas are reachable, {w} required with --strict (nothing was written)"
        ),
        QuorumMode::Sloppy => format!(
            "write quorum not reached: only {countable} of {n} replicas are reachable, {w} required (nothing was written)"
        ),
    };
    error(ErrorCode::QuorumNotReached, message)
}

async fn coordinate(node: Arc<NodeState>, req: PutRequest) -> Response {
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
        // Every counter of this node's actor was minted here, so a higher one is forged
        // or corrupt; taken on, it would raise the counter of every later write this node
        // makes (towards the limit peers enforce), not just this key's.
        let (actor, minted) = (node.replica.actor(), node.replica.minted());
        if ctx.get(actor) > minted {
            return error(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid context: it names write {} of {actor}, but that node has made only {minted}; pass back a context a read or write returned",
                    ctx.get(actor)
                ),
            );
        }
    }
    let (deadline, timeout) = match deadline(&node, req.timeout_ms) {
        Ok(d) => d,
        Err(refusal) => return refusal,
    };
    let plan = node.plan(&req.key, req.mode);
    let me = node.membership.me().clone();
    if !plan.is_primary(&me) {
        return forward(node, req, plan, deadline).await;
    }
    let countable = plan.countable();
    if countable < w {
        bump(&node.counters.write_quorum_misses);
        return quorum_error(&plan, n, w, countable);
    }

    let context = req.context.clone().unwrap_or_default();
    // The local copy is applied first (that mints the dot); its fsync then runs while
    // the write travels to the other replicas, and counts toward W once done. When the
    // lab delays the coordinator's own replica write like the others', the write is
    // minted without storing it and the local copy lands like a remote one (see
    // `Replica::mint`).
    let minted = node.faults.is_active() && node.faults.has_local();
    let local = async {
        if minted {
            node.replica
                .mint(
                    req.key.clone(),
                    context.clone(),
                    req.value.clone(),
                    now_ms(),
                )
                .await
                .map(|(state, dot)| (state, dot, None))
        } else {
            node.replica
                .coordinate_applied(
                    req.key.clone(),
                    context.clone(),
                    req.value.clone(),
                    now_ms(),
                )
                .await
                .map(|(state, dot, durable)| (state, dot, Some(durable)))
        }
    };
    let (state, dot, durable) = match tokio::time::timeout_at(deadline, local).await {
        Ok(Ok(written)) => written,
        Ok(Err(e @ ReplicaError::StateTooLarge { .. })) => {
            return error(ErrorCode::TooLarge, e.to_string());
        }
        Ok(Err(e @ ReplicaError::CounterExhausted { .. })) => {
            return error(ErrorCode::InvalidRequest, e.to_string());
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

    let mut tracker = QuorumTracker::new(w, countable);
    // Every target of the plan, this node included: its answer is its own fsync.
    let mut durable = durable;
    let spares = Arc::new(Mutex::new(plan.spare_fallbacks.clone()));
    let (key, written) = (req.key.clone(), state.clone());
    let mut rx = fan_out(&node, &plan.targets, move |node, target| {
        let (key, written, spares) = (key.clone(), written.clone(), spares.clone());
        let local_sync = if target.node == *node.membership.me() {
            durable.take()
        } else {
            None
        };
        async move {
            match local_sync {
                Some(durable) => {
                    let synced = durable.wait().await.map_err(|e| {
                        warn!(cause = %e, "local write failed");
                        Failure::Refused(format!("the coordinator's fsync failed: {e}"))
                    });
                    (target, synced)
                }
                None => write_target(&node, target, key, written, spares, timeout, minted).await,
            }
        }
    });
    let primaries_targeted: BTreeSet<NodeId> = plan
        .targets
        .iter()
        .filter(|t| t.is_primary())
        .map(|t| t.node.clone())
        .collect();
    let count = |t: &Target| {
        if plan.counts(t) {
            Counts::Yes
        } else {
            match &t.hint_for {
                Some(primary) if primaries_targeted.contains(primary) => {
                    Counts::AsFailureOf(primary.clone())
                }
                _ => Counts::No,
            }
        }
    };
    let mut sloppy = 0u64;
    let progress = wait_for_quorum(&mut rx, &mut tracker, deadline, count, |t, ()| {
        if !t.is_primary() {
            sloppy += 1;
        }
    })
    .await;
    if plan.mode == QuorumMode::Sloppy {
        crate::metrics::add(&node.counters.sloppy_acks, sloppy);
    }
    if progress != Progress::Reached {
        bump(&node.counters.write_quorum_misses);
        let what = match plan.mode {
            QuorumMode::Strict => "primary replicas",
            QuorumMode::Sloppy => "replicas",
        };
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "write quorum not reached: {} of {n} {what} acknowledged within {timeout:?}, {w} required; the write may still be stored on some of them (the coordinator included): read the key to see{}",
                tracker.ok_count(),
                reasons(&tracker)
            ),
        );
    }
    Response::Put(PutResponse {
        context: state.write_context(&context, &dot),
        replicas_acked: tracker.ok_count() as u8,
        not_a_replica: false,
    })
}

/// Writes the state to one target; if it is a primary that cannot be reached, hands
/// the copy to the next spare fallback with a hint for it. Returns the target that
/// finally served (or failed) the write.
async fn write_target(
    node: &NodeState,
    target: Target,
    key: Vec<u8>,
    state: Versioned,
    spares: Arc<Mutex<Vec<NodeId>>>,
    timeout: Duration,
    minted: bool,
) -> (Target, Result<(), Failure>) {
    let result = write_replica_as(
        node,
        &target.node,
        key.clone(),
        state.clone(),
        target.hint_for.clone(),
        timeout,
        minted,
    )
    .await;
    if let (Err(Failure::Unreachable(_)), true) = (&result, target.is_primary()) {
        let spare = {
            let mut spares = spares.lock().unwrap_or_else(|p| p.into_inner());
            (!spares.is_empty()).then(|| spares.remove(0))
        };
        if let Some(fallback) = spare {
            let hinted = Target {
                node: fallback,
                hint_for: Some(target.node.clone()),
            };
            let r = write_replica(
                node,
                &hinted.node,
                key,
                state,
                hinted.hint_for.clone(),
                timeout,
            )
            .await;
            return (hinted, r);
        }
    }
    (target, result)
}

/// Hands a write to a primary of its key (which must mint the dot), trying the up
/// primaries in preference order.
async fn forward(
    node: Arc<NodeState>,
    mut req: PutRequest,
    plan: Plan,
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
    for peer in plan
        .targets
        .iter()
        .filter(|t| t.is_primary())
        .map(|t| &t.node)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Dial first, so the time it takes is not counted against the replica.
        if let Err(e) = node.peers.ensure_connected(peer, left).await {
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
        match node
            .peers
            .call(peer, &Request::Put(req.clone()), left)
            .await
        {
            // Refused unread (overloaded, shutting down): nothing done, try the next one.
            Ok(Response::Error(e)) if e.code == ErrorCode::Unavailable => {
                why.push(format!("{peer}: {}", e.message));
            }
            Ok(Response::Put(mut put)) => {
                put.not_a_replica = true;
                return Response::Put(put);
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
    let none_up = plan.primaries_up() == 0;
    error(
        ErrorCode::QuorumNotReached,
        format!(
            "write quorum not reached: no primary replica of the key could coordinate the write ({}); a write needs one of its N primaries up, since the coordinator mints its version",
            if none_up && why.is_empty() {
                "none is reachable; nothing was written".to_string()
            } else {
                why.join("; ")
            }
        ),
    )
}
