//! Routing by key: a client that knows the ring sends a read or write straight to a
//! replica of its key, so no node has to forward it (on clusters larger than N) and a
//! read with R=1 can be served from the receiving node's own copy.
//!
//! The ring is the nodes' own: the same members and partition count give the same
//! `Ring` everywhere (`dynakv_common::ring`), so the client computes it from one node's
//! status (members, N, Q). When a node answers that it is not a replica of the key it
//! was sent, the client's view is stale and it fetches the status again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use dynakv_common::replication::Placement;
use dynakv_common::wire::StatusResponse;
use dynakv_common::{NodeId, Ring};

/// The client's view of where keys live.
pub struct Routing {
    ring: Ring,
    n: usize,
    addrs: BTreeMap<NodeId, String>,
    stale: AtomicBool,
}

impl Routing {
    /// The routing a node's status describes (None if the status does not make a ring).
    pub fn from_status(status: &StatusResponse) -> Option<Routing> {
        let ids: Vec<NodeId> = status.members.iter().map(|m| m.id.clone()).collect();
        let ring = Ring::new(status.partitions, &ids).ok()?;
        Some(Routing {
            ring,
            n: usize::from(status.replicas).max(1),
            addrs: status
                .members
                .iter()
                .map(|m| (m.id.clone(), m.addr.clone()))
                .collect(),
            stale: AtomicBool::new(false),
        })
    }

    /// The addresses of `key`'s replicas, in preference order.
    pub fn replicas(&self, key: &[u8]) -> Vec<String> {
        let placement = Placement::new(&self.ring, self.n);
        placement
            .primaries(placement.partition_of(key))
            .iter()
            .filter_map(|id| self.addrs.get(id).cloned())
            .collect()
    }

    /// Marks the view stale (a node said it is not a replica of a key sent to it).
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether the view should be fetched again.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_common::wire::MemberStatus;

    fn status(n: usize) -> StatusResponse {
        StatusResponse {
            node: NodeId::new("n1").unwrap(),
            version: "0".into(),
            replicas: 3,
            partitions: 64,
            members: (1..=n)
                .map(|i| MemberStatus {
                    id: NodeId::new(format!("n{i}")).unwrap(),
                    addr: format!("10.0.0.{i}:7100"),
                    up: true,
                    partitions: 0,
                    incarnation: 0,
                })
                .collect(),
            keys: 0,
            counters: Vec::new(),
            hints_pending: Vec::new(),
            workers: Vec::new(),
            latency: Vec::new(),
        }
    }

    #[test]
    fn a_key_goes_to_the_replicas_the_nodes_compute() {
        let routing = Routing::from_status(&status(5)).unwrap();
        let ids: Vec<NodeId> = (1..=5)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let ring = Ring::new(64, &ids).unwrap();
        for key in [&b"cart:1"[..], b"a", b"zzz"] {
            let expected: Vec<String> = ring
                .preference_list_for_key(key, 3)
                .iter()
                .map(|id| format!("10.0.0.{}:7100", &id.as_str()[1..]))
                .collect();
            assert_eq!(routing.replicas(key), expected);
        }
        assert!(!routing.is_stale());
        routing.mark_stale();
        assert!(routing.is_stale());
    }
}
