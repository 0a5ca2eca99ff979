//! The read path: ask every target of the plan for its state (primaries, and fallbacks
//! that may hold hints for down primaries), answer with the merge once R counting
//! targets replied, and repair the primaries found behind (Dynamo §4.7):
//!
//! - `async` (the default): after the reply, keep listening to the slower replicas for
//!   `read_repair_window_ms`, merge everything, and send the result to each primary
//!   that answered with less;
//! - `sync`: before the reply, send the merge of the answers in hand to each primary
//!   that answered with less and wait for them, so the answer is durably on every
//!   primary that answered; slower replicas are then repaired as with `async`;
//! - `off`: no repair (anti-entropy and hints still converge the replicas).

use std::sync::Arc;
use std::time::Duration;

use dynakv_common::quorum::{Progress, QuorumTracker};
use dynakv_common::replication::{Plan, QuorumMode, Target};
use dynakv_common::version::Versioned;
use dynakv_common::wire::{ErrorCode, GetRequest, GetResponse, ReadRepair, Response};
use dynakv_common::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::{deadline, error, fan_out, invalid, read_replica, reasons, write_replica, Answers};
use crate::config::ReadFanout;
use crate::metrics::{add, bump, Op};
use crate::state::NodeState;

type Answer = (Target, Option<Versioned>);

/// Coordinates a client read.
pub async fn get(node: Arc<NodeState>, req: GetRequest) -> Response {
    let started = std::time::Instant::now();
    let response = coordinate(node.clone(), req).await;
    node.latency.record(Op::Get, started.elapsed());
    response
}

async fn coordinate(node: Arc<NodeState>, req: GetRequest) -> Response {
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
    let plan = node.plan(&req.key, req.mode);
    let countable = plan.countable();
    if countable < r {
        bump(&node.counters.read_quorum_misses);
        let what = match plan.mode {
            QuorumMode::Strict => "primary replicas",
            QuorumMode::Sloppy => "replicas",
        };
        return error(
            ErrorCode::QuorumNotReached,
            format!(
                "read quorum not reached: only {countable} of {n} {what} are reachable, {r} required"
            ),
        );
    }

    let mode = if node.config.read_repair {
        req.read_repair
    } else {
        ReadRepair::Off
    };
    // Ask every target when the read may repair them all (all-replica fan-out
    // configured, a sync repair asked for, or this read drawn for repair, one in
    // `1 / read_repair_chance`); otherwise only R of them, this node first when it is
    // one, and another only when one of those fails. Anti-entropy repairs what reads
    // that skip replicas do not see.
    let ask_all = node.config.read_fanout == ReadFanout::All
        || mode == ReadRepair::Sync
        || (mode == ReadRepair::Async && rand::random::<f64>() < node.config.read_repair_chance);
    let me = node.membership.me().clone();
    let (first, mut spare) = if ask_all {
        (plan.targets.clone(), Vec::new())
    } else {
        choose(&plan, r, &me)
    };
    let (tx, mut rx) = mpsc::channel(plan.targets.len().max(1));
    let mut asked = 0usize;
    let ask = |target: Target, asked: &mut usize| {
        *asked += 1;
        let (node2, tx, key) = (node.clone(), tx.clone(), req.key.clone());
        node.spawn(async move {
            let result = read_replica(&node2, &target.node, key, timeout).await;
            let _ = tx.send((target, result)).await;
        });
    };
    // This node's own copy is read right here, after the others were asked (so they
    // are in flight meanwhile): no task and no hand-off for the common R=1 read.
    let mut local = None;
    for target in first {
        if target.node == me && !node.faults.is_active() {
            local = Some(target);
        } else {
            ask(target, &mut asked);
        }
    }
    if let Some(target) = local {
        asked += 1;
        let result = read_replica(&node, &target.node, req.key.clone(), timeout).await;
        let _ = tx.try_send((target, result));
    }
    let mut tracker = QuorumTracker::new(r, countable);
    let mut answers: Vec<Answer> = Vec::new();
    let mut progress = tracker.progress();
    let mut received = 0usize;
    // A target that neither answers nor fails (down, not yet detected) would hold the
    // read until its deadline: after a short wait, ask the next one as well.
    let speculate_every = node.config.read_speculative_retry();
    let mut speculate_at = Instant::now() + speculate_every;
    while progress == Progress::Pending {
        let wake = if spare.is_empty() {
            deadline
        } else {
            speculate_at.min(deadline)
        };
        match tokio::time::timeout_at(wake, rx.recv()).await {
            Ok(Some((target, Ok(state)))) => {
                received += 1;
                if plan.counts(&target) {
                    progress = tracker.record(target.node.clone(), Ok(()));
                }
                answers.push((target, state));
            }
            Ok(Some((target, Err(failure)))) => {
                received += 1;
                if plan.counts(&target) {
                    progress = tracker.record(target.node.clone(), Err(failure.reason()));
                }
                // Ask one more in its place.
                if let Some(next) = spare.pop() {
                    ask(next, &mut asked);
                }
            }
            Ok(None) => break,
            Err(_) if wake < deadline => {
                bump(&node.counters.speculative_reads);
                if let Some(next) = spare.pop() {
                    ask(next, &mut asked);
                }
                speculate_at = Instant::now() + speculate_every;
            }
            Err(_) => break,
        }
    }
    drop(tx);
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

    if mode == ReadRepair::Sync {
        // Take in whatever else has already arrived, then bring every primary that
        // answered up to the merge before replying.
        while let Ok((target, Ok(state))) = rx.try_recv() {
            answers.push((target, state));
        }
        let merged = merge_all(&answers);
        let repaired = repair(&node, &req.key, &answers, &merged, deadline).await;
        add(&node.counters.read_repairs_sync, repaired.len() as u64);
        // They hold the merge now: the async pass must not repair them again.
        for (target, state) in answers.iter_mut() {
            if repaired.contains(&target.node) {
                *state = Some(merged.clone());
            }
        }
    }
    let mut merged = merge_all(&answers);
    node.config.conflict_policy.apply(&mut merged);
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
        not_a_replica: !plan.is_primary(&me),
    });

    // Repair needs a replica behind the merge: nothing to do once every replica asked
    // has answered and all answers agree (a lone answer is the merge itself).
    let window = node.config.read_repair_window();
    let settled = received == asked && answers.windows(2).all(|w| w[0].1 == w[1].1);
    if mode != ReadRepair::Off && !window.is_zero() && !settled {
        let task_node = node.clone();
        node.spawn(read_repair_after(task_node, req.key, answers, rx, window));
    }
    response
}

/// The targets a read asks first — R that count, this node first if it is one, the
/// others in random order (to spread the load) — and the rest, to ask in turn if one
/// fails (countable ones last in the list, so `pop` takes them first).
fn choose(plan: &Plan, r: usize, me: &NodeId) -> (Vec<Target>, Vec<Target>) {
    use rand::seq::SliceRandom;
    let mut countable: Vec<Target> = plan
        .targets
        .iter()
        .filter(|t| plan.counts(t))
        .cloned()
        .collect();
    let mut others: Vec<Target> = plan
        .targets
        .iter()
        .filter(|t| !plan.counts(t))
        .cloned()
        .collect();
    countable.shuffle(&mut rand::thread_rng());
    if let Some(i) = countable.iter().position(|t| t.node == *me) {
        countable.swap(0, i);
    }
    let rest = countable.split_off(r.min(countable.len()));
    // Spares: non-counting ones first, then the countable ones (popped from the end).
    others.extend(rest);
    (countable, others)
}

/// The merge of every state among replica answers.
fn merge_all(answers: &[Answer]) -> Versioned {
    let mut states = answers.iter().filter_map(|(_, s)| s.as_ref());
    let Some(first) = states.next() else {
        return Versioned::new();
    };
    let mut merged = first.clone();
    for state in states {
        merged.merge(state);
    }
    merged
}

/// Sends `merged` to every primary among `answers` that answered with a different
/// state, concurrently, and waits for them (until `deadline`). Returns those repaired.
/// Fallbacks are not repaired: what they hold is a hint, delivered on its own.
async fn repair(
    node: &Arc<NodeState>,
    key: &[u8],
    answers: &[Answer],
    merged: &Versioned,
    deadline: Instant,
) -> Vec<NodeId> {
    if *merged == Versioned::new() {
        return Vec::new();
    }
    let digest = merged.digest();
    let behind: Vec<Target> = answers
        .iter()
        .filter(|(t, s)| t.is_primary() && s.as_ref().map(Versioned::digest) != Some(digest))
        .map(|(t, _)| t.clone())
        .collect();
    if behind.is_empty() {
        return Vec::new();
    }
    let timeout = deadline.saturating_duration_since(Instant::now());
    let (key, state) = (key.to_vec(), merged.clone());
    let mut rx = fan_out(node, &behind, move |node, target| {
        let (key, state) = (key.clone(), state.clone());
        async move {
            let r = write_replica(&node, &target.node, key, state, None, timeout).await;
            (target, r)
        }
    });
    let mut repaired = Vec::new();
    while let Ok(Some((target, result))) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match result {
            Ok(()) => {
                repaired.push(target.node.clone());
                debug!(peer = %target.node, "read repair sent");
            }
            Err(f) => debug!(peer = %target.node, cause = ?f, "read repair failed"),
        }
    }
    repaired
}

/// Waits for the replicas that had not answered yet, then sends the merged state to
/// every primary that answered with less than it.
async fn read_repair_after(
    node: Arc<NodeState>,
    key: Vec<u8>,
    mut answers: Vec<Answer>,
    mut rx: Answers<Option<Versioned>>,
    window: Duration,
) {
    let until = Instant::now() + window;
    while let Ok(Some((target, result))) = tokio::time::timeout_at(until, rx.recv()).await {
        if let Ok(state) = result {
            answers.push((target, state));
        }
    }
    let merged = merge_all(&answers);
    let deadline = Instant::now() + window;
    let repaired = repair(&node, &key, &answers, &merged, deadline).await;
    add(&node.counters.read_repairs_async, repaired.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_common::replication::Placement;
    use dynakv_common::Ring;

    fn ids(n: usize) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn a_read_asks_r_targets_this_node_first_and_keeps_the_rest_in_reserve() {
        let all = ids(5);
        let ring = Ring::new(64, &all).unwrap();
        let placement = Placement::new(&ring, 3);
        for p in 0..64 {
            let plan = placement.plan(p, |_| true, QuorumMode::Sloppy);
            let me = plan.primaries[1].clone();
            for r in 1..=3 {
                let (first, spare) = choose(&plan, r, &me);
                assert_eq!(first.len(), r);
                assert_eq!(first[0].node, me, "the local replica is asked first");
                assert_eq!(first.len() + spare.len(), plan.targets.len());
            }
            // A strict read never counts a fallback: they are spares, asked last.
            let down = plan.primaries[2].clone();
            let strict = placement.plan(p, |id| *id != down, QuorumMode::Strict);
            let (first, spare) = choose(&strict, 2, &me);
            assert!(first.iter().all(|t| t.is_primary()));
            assert!(spare.iter().all(|t| !t.is_primary()));
        }
    }
}
