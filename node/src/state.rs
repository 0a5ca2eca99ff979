//! The shared state every request path and background worker reaches: configuration,
//! members and failure detector, placement, the local replica, the peer transport,
//! the anti-entropy trees, counters, in-flight pools and the task tracker.
//!
//! It sits *below* the request paths (`coordinator`, `server`, the workers) and knows
//! none of them; the lifecycle (`node`) builds it and stops everything above it. No task
//! is detached: work that outlives a request (the rest of a write's fan-out, read repair)
//! is spawned on [`NodeState::tasks`], which shutdown waits for before closing storage.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dynakv_common::limits::Limits;
use dynakv_common::replication::{Placement, Plan, QuorumMode};
use dynakv_common::wire::ClusterShape;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::antientropy::AntiEntropy;
use crate::config::NodeConfig;
use crate::fault::Faults;
use crate::membership::Membership;
use crate::metrics::{Counters, Latency};
use crate::peers::Peers;
use crate::replica::Replica;
use crate::worker::Registry;

/// Shared state of a node, handed to every request handler and background task.
pub struct NodeState {
    /// The configuration the node started with.
    pub config: NodeConfig,
    /// Replicas per key (N).
    pub n: usize,
    /// Key and value size limits.
    pub limits: Limits,
    /// Members, their addresses, the ring and the failure detector.
    pub membership: Arc<Membership>,
    /// This node's versioned store.
    pub replica: Replica,
    /// Outgoing peer requests (the one path that feeds the failure detector).
    pub peers: Peers,
    /// Injected faults (off by default; the lab sets them at run time).
    pub faults: Arc<Faults>,
    /// Hash trees and exchange state of Merkle-tree anti-entropy.
    pub anti_entropy: AntiEntropy,
    /// Operator-facing counters.
    pub counters: Counters,
    /// Request latency histograms per operation.
    pub latency: Latency,
    /// Permits for client requests in flight; none left means "overloaded".
    pub in_flight: Arc<Semaphore>,
    /// Permits for peer requests in flight, separate so client load cannot starve replication.
    pub peer_in_flight: Arc<Semaphore>,
    /// Set when shutdown starts: new requests are refused as "shutting down".
    pub stopping: AtomicBool,
    /// Every task spawned on behalf of a request; shutdown waits for them.
    pub tasks: TaskTracker,
    /// Background workers' status.
    pub workers: Registry,
}

impl NodeState {
    /// Placement on the current ring.
    pub fn with_placement<R>(&self, f: impl FnOnce(&Placement<'_>) -> R) -> R {
        let ring = self.membership.ring();
        f(&Placement::new(&ring, self.n))
    }

    /// Where a request on `key` goes and which answers count: the one decision of
    /// "which nodes, how many", used by reads, writes, hints and anti-entropy alike.
    /// Without hinted handoff (config), no fallback stands in for a down primary.
    pub fn plan(&self, key: &[u8], mode: QuorumMode) -> Plan {
        let mut plan =
            self.with_placement(|p| p.plan_for_key(key, |id| self.membership.is_up(id), mode));
        if !self.config.hinted_handoff {
            plan.targets.retain(|t| t.is_primary());
            plan.spare_fallbacks.clear();
        }
        plan
    }

    /// Runs `work` as a tracked task: shutdown waits for it before closing storage.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// Every counter with its name: request counters and the storage's group-commit
    /// counters. What `dynakv status` shows and the Prometheus endpoint exports.
    pub fn counter_snapshot(&self) -> Vec<(String, u64)> {
        let mut counters = self.counters.snapshot();
        let storage = self.replica.storage().stats();
        counters.extend([
            ("storage_fsyncs".to_string(), storage.fsyncs),
            ("storage_writes".to_string(), storage.writes_committed),
            ("storage_writes_synced".to_string(), storage.writes_synced),
            (
                "storage_largest_fsync_group".to_string(),
                storage.largest_group,
            ),
            ("hints_pending".to_string(), self.replica.hints_total()),
        ]);
        // Process-wide: a node binary is one node (nodes started inside another
        // program, as in unit tests, do not spin and report zeros).
        let spins = dynakv_common::net::idle_spin::stats();
        counters.extend([
            ("idle_spins_readable".to_string(), spins.readable),
            ("idle_spins_kicked".to_string(), spins.kicked),
            ("idle_spins_timed_out".to_string(), spins.timed_out),
        ]);
        counters
    }

    /// What peers must agree on: N and the ring.
    pub fn shape(&self) -> ClusterShape {
        ClusterShape {
            replicas: self.n as u8,
            ring: self.membership.ring().fingerprint(),
            policy: self.config.conflict_policy,
        }
    }
}
