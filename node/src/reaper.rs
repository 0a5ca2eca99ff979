//! Tombstone reaping: remove deleted keys from storage once that can no longer undo the
//! delete (`dynakv_common::reaping` states the rule).
//!
//! Each node walks its tombstone index (keys whose state is tombstones only, with the
//! deletion time) in bounded batches. For a key whose grace period has passed, it asks
//! every other primary for its copy; only if all are up and hold exactly the same state
//! (or none) does it ask each to delete it (`Reap`, a delete conditional on that digest)
//! and then delete its own. Every primary holding the tombstone may do this; the
//! deletes are conditional, so two doing it at once is harmless. If some primary fails
//! to delete, or anti-entropy copies the tombstone back to one that had deleted it, the
//! next pass reaps it again: a tombstone may come back, the deleted value cannot.

use std::sync::Arc;
use std::time::Duration;

use dynakv_common::reaping::{self, PrimaryCopy, Verdict};
use dynakv_common::wire::{Request, Response};
use tracing::debug;

use crate::coordinator::now_ms;
use crate::metrics::bump;
use crate::replica::layout;
use crate::state::NodeState;
use crate::worker::{Step, Worker};

/// Index entries read per step.
const BATCH: usize = 256;

/// Removes tombstones every primary holds, after the grace period.
pub struct TombstoneReaper {
    node: Arc<NodeState>,
    cursor: Option<Vec<u8>>,
    reaped: u64,
    /// Keys left for later in the current pass, and why the last one was.
    waiting: u64,
    last_reason: String,
}

impl TombstoneReaper {
    pub fn new(node: Arc<NodeState>) -> TombstoneReaper {
        TombstoneReaper {
            node,
            cursor: None,
            reaped: 0,
            waiting: 0,
            last_reason: String::new(),
        }
    }

    /// Tries to reap one key; returns why not, if not.
    async fn reap(&mut self, key: &[u8]) -> Result<Option<String>, String> {
        let node = &self.node;
        let me = node.membership.me().clone();
        let primaries = node.with_placement(|p| p.primaries(p.partition_of(key)));
        if !primaries.contains(&me) {
            return Ok(Some("not a primary of the key".into()));
        }
        let Some(local) = node.replica.read(key).await.map_err(|e| e.to_string())? else {
            return Ok(Some("already gone".into()));
        };
        let digest = local.digest();
        let timeout = node.config.request_timeout();
        let mut others = Vec::new();
        for peer in primaries.iter().filter(|p| **p != me) {
            let copy = if !node.membership.is_up(peer) {
                PrimaryCopy::Unreachable
            } else {
                let req = Request::ReplicaGetMany {
                    keys: vec![key.to_vec()],
                };
                match node.peers.call(peer, &req, timeout).await {
                    Ok(Response::ReplicaStates(states)) => match states.first() {
                        Some((_, Some(s))) => PrimaryCopy::Holds(s.digest()),
                        Some((_, None)) => PrimaryCopy::Absent,
                        None => PrimaryCopy::Unreachable,
                    },
                    _ => PrimaryCopy::Unreachable,
                }
            };
            others.push((peer.clone(), copy));
        }
        let grace_ms = node.config.tombstone_grace_s.saturating_mul(1000);
        match reaping::decide(&local, digest, now_ms(), grace_ms, &others) {
            Verdict::Reap => {}
            Verdict::Live => return Ok(Some("live again".into())),
            Verdict::TooYoung { wait_ms } => {
                return Ok(Some(format!("grace period: {wait_ms} ms left")))
            }
            Verdict::Unreachable(p) => return Ok(Some(format!("primary {p} unreachable"))),
            Verdict::Differs(p) => return Ok(Some(format!("primary {p} not converged yet"))),
        }
        for (peer, _) in &others {
            let req = Request::Reap {
                key: key.to_vec(),
                digest,
            };
            match node.peers.call(peer, &req, timeout).await {
                Ok(Response::Reaped(_)) => {}
                other => {
                    debug!(peer = %peer, answer = ?other, "reap refused; anti-entropy will bring the tombstone back");
                    return Ok(Some(format!("primary {peer} did not reap")));
                }
            }
        }
        if node
            .replica
            .reap_if(key, digest)
            .await
            .map_err(|e| e.to_string())?
        {
            bump(&node.counters.tombstones_reaped);
            self.reaped += 1;
        }
        Ok(None)
    }
}

impl Worker for TombstoneReaper {
    fn name(&self) -> &'static str {
        "tombstone-reaper"
    }

    async fn step(&mut self, stop: &tokio::sync::watch::Receiver<bool>) -> Result<Step, String> {
        if self.cursor.is_none() {
            self.waiting = 0;
        }
        let batch = self
            .node
            .replica
            .tombstones(self.cursor.clone(), BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = batch.last() else {
            self.cursor = None;
            return Ok(Step::Idle);
        };
        self.cursor = Some(last.clone());
        let grace_ms = self.node.config.tombstone_grace_s.saturating_mul(1000);
        let now = now_ms();
        for (data_key, deleted_at) in batch {
            if *stop.borrow() {
                break;
            }
            if now < deleted_at.saturating_add(grace_ms) {
                self.waiting += 1;
                continue;
            }
            let key = layout::user_key(&data_key).to_vec();
            if let Some(why) = self.reap(&key).await? {
                self.waiting += 1;
                self.last_reason = why;
            }
        }
        Ok(Step::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(Duration::from_millis(self.node.config.reap_interval_ms)).await;
    }

    fn status(&self) -> String {
        let mut s = format!("{} reaped; {} waiting this pass", self.reaped, self.waiting);
        if !self.last_reason.is_empty() {
            s.push_str(&format!(" (last: {})", self.last_reason));
        }
        s
    }
}
