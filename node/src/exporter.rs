//! The Prometheus exporter's feed: a worker that copies the node's counters and a few
//! gauges into the `metrics` registry once a second (the endpoint itself is
//! metrics-exporter-prometheus, started by the lifecycle when `metrics_listen` is set).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dynakv_common::NodeId;

use crate::state::NodeState;
use crate::worker::{Step, Worker};

/// Publishes counters and gauges to the Prometheus registry.
pub struct MetricsExport {
    node: Arc<NodeState>,
    /// Primaries we published a hint gauge for, so one that drops to zero is set to 0.
    hint_targets: BTreeSet<NodeId>,
}

impl MetricsExport {
    pub fn new(node: Arc<NodeState>) -> MetricsExport {
        MetricsExport {
            node,
            hint_targets: BTreeSet::new(),
        }
    }
}

impl Worker for MetricsExport {
    fn name(&self) -> &'static str {
        "metrics-export"
    }

    async fn step(&mut self, _stop: &tokio::sync::watch::Receiver<bool>) -> Result<Step, String> {
        let node = &self.node;
        let counters = node.counter_snapshot();
        let peers = node.membership.peers();
        let up = peers.iter().filter(|p| node.membership.is_up(p)).count();
        let keys = node
            .replica
            .storage()
            .approximate_len(crate::storage::Space::Data);
        crate::metrics::publish(
            &counters,
            &[
                ("peers_up", up as f64),
                ("peers_down", (peers.len() - up) as f64),
                ("keys", keys as f64),
                (
                    "requests_in_flight",
                    (node.config.max_in_flight - node.in_flight.available_permits()) as f64,
                ),
            ],
        );
        let pending: BTreeMap<NodeId, u64> = node.replica.hints_pending().into_iter().collect();
        self.hint_targets.extend(pending.keys().cloned());
        for target in &self.hint_targets {
            let n = pending.get(target).copied().unwrap_or(0);
            metrics::gauge!("dynakv_hints_pending_for", "target" => target.to_string())
                .set(n as f64);
        }
        Ok(Step::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(crate::metrics::EXPORT_INTERVAL).await;
    }

    fn status(&self) -> String {
        "publishing every second".into()
    }
}
