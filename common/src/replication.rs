//! Which nodes, how many: the one place that decides where a key's copies go.
//!
//! Every path that touches replicas asks here: the coordinator (which replicas a read or
//! write goes to and how many answers count), hinted handoff (which fallback stands in for
//! which down primary) and anti-entropy and tombstone reaping (which nodes share a
//! partition). Garage's `TableReplication` plays the same role.
//!
//! A key's *primaries* are its preference list: the first N distinct nodes of the ring
//! walk from its partition (Dynamo §4.3). When a primary is down, a *sloppy* plan sends
//! its copy to the next node of the same walk that is up and not already used — a
//! *fallback* — which stores it with a hint naming the primary it stands in for
//! (Dynamo §4.6). A *strict* plan (Riak's PR/PW) counts only primaries; it still hands
//! hints to fallbacks, so the down primary catches up, but they do not count toward R or W.
//!
//! Pure: the caller passes in who is up.

use serde::{Deserialize, Serialize};

use crate::ring::PartitionId;
use crate::{NodeId, Ring};

/// Whether fallbacks count toward a quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuorumMode {
    /// Fallbacks standing in for down primaries count toward R and W (Dynamo, Riak's default).
    #[default]
    Sloppy,
    /// Only the key's primary replicas count (Riak's PR/PW).
    Strict,
}

/// One node a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node to send to.
    pub node: NodeId,
    /// `Some(primary)` when `node` is a fallback holding the copy for that down primary.
    pub hint_for: Option<NodeId>,
}

impl Target {
    /// Whether this target is one of the key's primaries.
    pub fn is_primary(&self) -> bool {
        self.hint_for.is_none()
    }
}

/// Where one request's copies go and which answers count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key's partition.
    pub partition: PartitionId,
    /// The key's N primaries (preference list), up or not.
    pub primaries: Vec<NodeId>,
    /// The nodes to contact: every primary believed up, then a fallback for each primary
    /// believed down (as many as there are up nodes to stand in).
    pub targets: Vec<Target>,
    /// How answers are counted.
    pub mode: QuorumMode,
    /// The nodes after the primaries in ring order, for standing in for a primary that
    /// fails during the request: `spare_fallbacks` are those up and not yet targeted.
    pub spare_fallbacks: Vec<NodeId>,
}

impl Plan {
    /// Whether an answer from `target` counts toward the quorum.
    pub fn counts(&self, target: &Target) -> bool {
        match self.mode {
            QuorumMode::Sloppy => true,
            QuorumMode::Strict => target.is_primary(),
        }
    }

    /// How many targets can count toward the quorum.
    pub fn countable(&self) -> usize {
        self.targets.iter().filter(|t| self.counts(t)).count()
    }

    /// The primaries believed up.
    pub fn primaries_up(&self) -> usize {
        self.targets.iter().filter(|t| t.is_primary()).count()
    }

    /// Whether `node` is one of the key's primaries.
    pub fn is_primary(&self, node: &NodeId) -> bool {
        self.primaries.contains(node)
    }
}

/// Placement of keys on a ring with N replicas each.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    ring: &'a Ring,
    n: usize,
}

impl<'a> Placement<'a> {
    /// Placement with `n` replicas per key on `ring`.
    pub fn new(ring: &'a Ring, n: usize) -> Placement<'a> {
        Placement { ring, n }
    }

    /// Replicas per key (N).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The partition of a key.
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.ring.partition_of(key)
    }

    /// The N primaries of partition `p`.
    pub fn primaries(&self, p: PartitionId) -> Vec<NodeId> {
        self.ring.preference_list(p, self.n)
    }

    /// The partitions `node` is a primary of, in order.
    pub fn partitions_of(&self, node: &NodeId) -> Vec<PartitionId> {
        (0..self.ring.partition_count())
            .filter(|&p| self.primaries(p).contains(node))
            .collect()
    }

    /// The plan for a request on partition `p`: the primaries believed up, then, for
    /// each primary believed down, the next up node after the primaries in ring order
    /// (each used once), carrying a hint for that primary.
    pub fn plan(&self, p: PartitionId, is_up: impl Fn(&NodeId) -> bool, mode: QuorumMode) -> Plan {
        let walk = self.ring.walk(p);
        let split = self.n.min(walk.len());
        let (primaries, rest) = walk.split_at(split);
        let mut spare: Vec<NodeId> = rest.iter().filter(|id| is_up(id)).cloned().collect();
        spare.reverse(); // pop() takes them in ring order
        let mut targets: Vec<Target> = primaries
            .iter()
            .filter(|id| is_up(id))
            .map(|id| Target {
                node: id.clone(),
                hint_for: None,
            })
            .collect();
        for down in primaries.iter().filter(|id| !is_up(id)) {
            let Some(fallback) = spare.pop() else { break };
            targets.push(Target {
                node: fallback,
                hint_for: Some(down.clone()),
            });
        }
        spare.reverse();
        Plan {
            partition: p,
            primaries: primaries.to_vec(),
            targets,
            mode,
            spare_fallbacks: spare,
        }
    }

    /// The plan for a key.
    pub fn plan_for_key(
        &self,
        key: &[u8],
        is_up: impl Fn(&NodeId) -> bool,
        mode: QuorumMode,
    ) -> Plan {
        self.plan(self.partition_of(key), is_up, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ids(n: usize) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect()
    }

    #[test]
    fn all_up_targets_exactly_the_primaries() {
        let ring = Ring::new(64, &ids(5)).unwrap();
        let placement = Placement::new(&ring, 3);
        let plan = placement.plan(7, |_| true, QuorumMode::Sloppy);
        assert_eq!(plan.primaries, ring.preference_list(7, 3));
        let nodes: Vec<_> = plan.targets.iter().map(|t| t.node.clone()).collect();
        assert_eq!(nodes, plan.primaries);
        assert!(plan.targets.iter().all(Target::is_primary));
        assert_eq!(plan.spare_fallbacks, ring.fallbacks(7, 3));
    }

    #[test]
    fn a_down_primary_is_replaced_by_the_next_fallback_with_a_hint() {
        let ring = Ring::new(64, &ids(5)).unwrap();
        let placement = Placement::new(&ring, 3);
        let primaries = ring.preference_list(0, 3);
        let fallbacks = ring.fallbacks(0, 3);
        let down = primaries[1].clone();
        let plan = placement.plan(0, |id| *id != down, QuorumMode::Sloppy);
        assert_eq!(plan.targets.len(), 3);
        let hinted: Vec<_> = plan.targets.iter().filter(|t| !t.is_primary()).collect();
        assert_eq!(hinted.len(), 1);
        assert_eq!(hinted[0].node, fallbacks[0]);
        assert_eq!(hinted[0].hint_for.as_ref(), Some(&down));
        assert_eq!(plan.countable(), 3);
        assert_eq!(plan.primaries_up(), 2);
        let strict = placement.plan(0, |id| *id != down, QuorumMode::Strict);
        assert_eq!(strict.countable(), 2, "fallbacks do not count when strict");
        assert_eq!(strict.targets.len(), 3, "but still receive the hint");
    }

    #[test]
    fn down_fallbacks_are_skipped() {
        let ring = Ring::new(64, &ids(5)).unwrap();
        let placement = Placement::new(&ring, 3);
        let primaries = ring.preference_list(3, 3);
        let fallbacks = ring.fallbacks(3, 3);
        let down = [primaries[0].clone(), fallbacks[0].clone()];
        let plan = placement.plan(3, |id| !down.contains(id), QuorumMode::Sloppy);
        let hinted: Vec<_> = plan.targets.iter().filter(|t| !t.is_primary()).collect();
        assert_eq!(hinted.len(), 1);
        assert_eq!(hinted[0].node, fallbacks[1]);
        assert!(plan.spare_fallbacks.is_empty());
    }

    #[test]
    fn partitions_of_a_node_are_those_it_is_a_primary_of() {
        let ring = Ring::new(16, &ids(4)).unwrap();
        let placement = Placement::new(&ring, 2);
        let me = &ids(4)[2];
        for p in 0..16 {
            assert_eq!(
                placement.partitions_of(me).contains(&p),
                ring.preference_list(p, 2).contains(me)
            );
        }
    }

    proptest! {
        #[test]
        fn fallbacks_are_distinct_up_non_primaries(
            members in 1usize..9,
            n in 1usize..5,
            p in 0u32..64,
            down_mask in any::<u16>(),
            strict in any::<bool>(),
        ) {
            let all = ids(members);
            let ring = Ring::new(64, &all).unwrap();
            let placement = Placement::new(&ring, n);
            let is_up = |id: &NodeId| {
                let i = all.iter().position(|x| x == id).unwrap();
                down_mask & (1 << i) == 0
            };
            let mode = if strict { QuorumMode::Strict } else { QuorumMode::Sloppy };
            let plan = placement.plan(p, is_up, mode);
            let nodes: BTreeSet<_> = plan.targets.iter().map(|t| t.node.clone()).collect();
            prop_assert_eq!(nodes.len(), plan.targets.len(), "targets are distinct");
            prop_assert!(plan.targets.iter().all(|t| is_up(&t.node)), "only up nodes");
            let down_primaries: Vec<_> = plan.primaries.iter().filter(|id| !is_up(id)).collect();
            let up_non_primaries = all.iter().filter(|id| is_up(id) && !plan.primaries.contains(id)).count();
            for t in &plan.targets {
                match &t.hint_for {
                    None => prop_assert!(plan.primaries.contains(&t.node)),
                    Some(owner) => {
                        prop_assert!(!plan.primaries.contains(&t.node), "a fallback is not a primary");
                        prop_assert!(down_primaries.contains(&owner), "hints name a down primary");
                    }
                }
            }
            let hinted = plan.targets.iter().filter(|t| !t.is_primary()).count();
            prop_assert_eq!(hinted, down_primaries.len().min(up_non_primaries));
            prop_assert!(plan.spare_fallbacks.iter().all(|f| !nodes.contains(f) && is_up(f)));
            if strict {
                prop_assert_eq!(plan.countable(), plan.primaries_up());
            } else {
                prop_assert_eq!(plan.countable(), plan.targets.len());
            }
        }
    }
}
