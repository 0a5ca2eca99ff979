//! Routing by key: a client that knows the ring sends a read or write straight to a
//! replica of its key, so no node has to forward it (on clusters larger than N) and a
//! read with R=1 can be served from the receiving node's own copy.
//!
//! The ring is the nodes' own: the same members and partition count give the same
//! `Ring` everywhere (`dynakv_common::ring`), so the client computes it from one node's
//! status (members, N, Q). When a node answers that it is not a replica of the key it
//! was sent, the client's view is stale and it fetches the status again.
//!
//! The status also says which members the node's failure detector holds down: keys are
//! not sent to those (their other replicas, or the connected node, take them), so a dead
//! node costs no request a connect timeout. A view showing a member down is fetched
//! again every so often, to learn when it is back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dynakv_common::replication::Placement;
use dynakv_common::wire::StatusResponse;
use dynakv_common::{NodeId, Ring};

/// The client's view of where keys live.
pub struct Routing {
    ring: Ring,
    n: usize,
    addrs: BTreeMap<NodeId, String>,
    /// Members the status showed down.
    down: BTreeSet<NodeId>,
    fetched: Instant,
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
            down: status
                .members
                .iter()
                .filter(|m| !m.up)
                .map(|m| m.id.clone())
                .collect(),
            fetched: Instant::now(),
            stale: AtomicBool::new(false),
        })
    }

    /// The addresses of `key`'s replicas that the status showed up, in preference order.
    pub fn replicas(&self, key: &[u8]) -> Vec<String> {
        let placement = Placement::new(&self.ring, self.n);
        placement
            .primaries(placement.partition_of(key))
            .iter()
            .filter(|id| !self.down.contains(*id))
            .filter_map(|id| self.addrs.get(id).cloned())
            .collect()
    }

    /// Whether `addr` is a member's address.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs.values().any(|a| a == addr)
    }

    /// Whether the status showed some member down.
    pub fn has_down(&self) -> bool {
        !self.down.is_empty()
    }

    /// How long ago the status was fetched.
    pub fn age(&self) -> Duration {
        self.fetched.elapsed()
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

    #[test]
    fn a_member_shown_down_is_skipped_and_the_others_keep_their_order() {
        let mut st = status(5);
        st.members[1].up = false;
        let routing = Routing::from_status(&st).unwrap();
        assert!(routing.has_down());
        let all = Routing::from_status(&status(5)).unwrap();
        assert!(!all.has_down());
        let mut led_by_n2 = 0;
        for i in 0..200 {
            let key = format!("k{i}");
            let expected: Vec<String> = all
                .replicas(key.as_bytes())
                .into_iter()
                .filter(|a| a != "10.0.0.2:7100")
                .collect();
            if all.replicas(key.as_bytes())[0] == "10.0.0.2:7100" {
                led_by_n2 += 1;
            }
            assert_eq!(routing.replicas(key.as_bytes()), expected, "{key}");
        }
        assert!(led_by_n2 > 0, "some key's first replica is n2");
        assert!(routing.has_addr("10.0.0.2:7100"));
        assert!(!routing.has_addr("10.0.0.9:7100"));
    }
}
