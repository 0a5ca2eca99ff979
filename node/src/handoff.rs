//! Hinted handoff (Dynamo §4.6): deliver the hints this node holds, as a fallback, to
//! the primaries they are meant for once those are reachable again.
//!
//! The [`HintDelivery`] worker walks the hint store in bounded batches. For each hint
//! whose primary the failure detector sees up, it sends the hinted state as a normal
//! replica write (`ReplicaPut`, merged and fsync'd there); once acknowledged, the hint is
//! deleted — only if nothing was merged into it meanwhile, else it is delivered again on
//! the next pass. A hint older than `hint_ttl_s` is dropped undelivered: the tombstone
//! grace period outlasts it, so an expired hint can never bring back a reaped delete, and
//! anti-entropy repairs whatever it carried. Hints survive restarts (they are stored and
//! fsync'd like data) and kill -9.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::coordinator::{now_ms, write_replica};
use crate::metrics::bump;
use crate::state::NodeState;
use crate::worker::{Step, Worker};

/// Hints read per step.
const BATCH: usize = 256;

/// Delivers held hints to their primaries.
pub struct HintDelivery {
    node: Arc<NodeState>,
    /// Where the current pass over the hint store has got to.
    cursor: Option<Vec<u8>>,
    /// Delivered and expired since start; waiting (primary down) in the current pass.
    delivered: u64,
    expired: u64,
    waiting: u64,
}

impl HintDelivery {
    pub fn new(node: Arc<NodeState>) -> HintDelivery {
        HintDelivery {
            node,
            cursor: None,
            delivered: 0,
            expired: 0,
            waiting: 0,
        }
    }
}

impl Worker for HintDelivery {
    fn name(&self) -> &'static str {
        "hint-delivery"
    }

    async fn step(&mut self, _stop: &tokio::sync::watch::Receiver<bool>) -> Result<Step, String> {
        let node = &self.node;
        if node.replica.hints_total() == 0 {
            self.cursor = None;
            return Ok(Step::Idle);
        }
        if self.cursor.is_none() {
            self.waiting = 0; // a new pass
        }
        let batch = node
            .replica
            .hint_batch(self.cursor.clone(), BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            // End of a pass: start over after the idle wait.
            self.cursor = None;
            return Ok(Step::Idle);
        };
        self.cursor = Some(last.hint_key.clone());
        let ttl_ms = node.config.hint_ttl_ms();
        let timeout = node.config.request_timeout();
        for hint in batch {
            if crate::replica::hint_expired(hint.created_ms, now_ms(), ttl_ms) {
                if node
                    .replica
                    .remove_hint(&hint)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    bump(&node.counters.hints_expired);
                    self.expired += 1;
                    debug!(target_node = %hint.target, "hint expired undelivered");
                }
                continue;
            }
            if !node.membership.is_up(&hint.target) {
                self.waiting += 1;
                continue;
            }
            let sent = write_replica(
                node,
                &hint.target,
                hint.key.clone(),
                hint.state.clone(),
                None,
                timeout,
            )
            .await;
            match sent {
                Ok(()) => {
                    if node
                        .replica
                        .remove_hint(&hint)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        bump(&node.counters.hints_delivered);
                        self.delivered += 1;
                    }
                }
                Err(e) => {
                    self.waiting += 1;
                    debug!(target_node = %hint.target, cause = ?e, "hint delivery failed; will retry");
                }
            }
        }
        if self.delivered > 0 && self.delivered.is_multiple_of(1000) {
            info!(delivered = self.delivered, "hints delivered");
        }
        Ok(Step::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(Duration::from_millis(
            self.node.config.hint_delivery_interval_ms,
        ))
        .await;
    }

    fn status(&self) -> String {
        format!(
            "{} held; {} delivered, {} expired, {} waiting for their primary",
            self.node.replica.hints_total(),
            self.delivered,
            self.expired,
            self.waiting
        )
    }
}
