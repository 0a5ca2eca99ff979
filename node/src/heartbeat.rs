//! The failure detector's probe: ping every peer each `heartbeat_interval_ms` over the
//! peer connections. The outcome reaches the detector through the one peer-call path
//! (`peers`), like every other peer request; a ping also carries this node's cluster
//! shape, so a node configured differently refuses it and is counted down.

use std::sync::Arc;

use dynakv_common::wire::Request;
use tokio::task::JoinSet;

use crate::state::NodeState;
use crate::worker::{Step, Worker};

/// Pings every peer on an interval.
pub struct Heartbeat {
    node: Arc<NodeState>,
}

impl Heartbeat {
    pub fn new(node: Arc<NodeState>) -> Heartbeat {
        Heartbeat { node }
    }
}

impl Worker for Heartbeat {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    async fn step(&mut self, _stop: &tokio::sync::watch::Receiver<bool>) -> Result<Step, String> {
        let timeout = self.node.config.failure_timeout() / 2;
        let ping = Request::Ping {
            from: self.node.membership.me().clone(),
            shape: self.node.shape(),
            incarnation: self.node.membership.incarnation(self.node.membership.me()),
        };
        // Concurrent pings, all awaited here (dropped with the step if the node stops).
        let mut pings = JoinSet::new();
        for peer in self.node.membership.peers() {
            let (node, ping) = (self.node.clone(), ping.clone());
            pings.spawn(async move {
                let _ = node.peers.call(&peer, &ping, timeout).await;
            });
        }
        while pings.join_next().await.is_some() {}
        Ok(Step::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.node.config.heartbeat_interval()).await;
    }

    fn status(&self) -> String {
        let peers = self.node.membership.peers();
        let up = peers
            .iter()
            .filter(|p| self.node.membership.is_up(p))
            .count();
        format!("{up} of {} peers up", peers.len())
    }
}
