//! Membership and failure detection.
//!
//! Membership is static for now: every node is configured with the same set of members
//! (`id@host:port`), from which each computes the same [`Ring`]. The ring is held as a
//! value behind a lock so that a later membership protocol can swap it.
//!
//! The failure detector is timeout-based: each node pings every peer on a fixed
//! interval over the peer connections, and every peer request also counts. A peer is
//! *down* once it has failed at least once and has not answered successfully for
//! `failure_timeout`; it is *up* again on its first success. Peers never heard from are
//! presumed up, so a cluster is usable as soon as it starts. The rule lives in
//! [`PeerHealth`], a plain value that takes `now` as an argument.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dynakv_common::{NodeId, Ring};

/// What the failure detector knows of one peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerHealth {
    last_ok: Instant,
    failing_since: Option<Instant>,
    /// Whether the transition to down has been reported (logged) already.
    reported_down: bool,
}

impl PeerHealth {
    /// A peer first seen at `now`, presumed up.
    pub fn new(now: Instant) -> PeerHealth {
        PeerHealth {
            last_ok: now,
            failing_since: None,
            reported_down: false,
        }
    }

    /// A successful answer at `now`; returns true if the peer had been reported down.
    pub fn record_ok(&mut self, now: Instant) -> bool {
        self.last_ok = now;
        self.failing_since = None;
        std::mem::take(&mut self.reported_down)
    }

    /// A failed request or ping at `now`; returns true exactly once per outage: when
    /// the peer is down and that has not been reported yet.
    pub fn record_failure(&mut self, now: Instant, failure_timeout: Duration) -> bool {
        self.failing_since.get_or_insert(now);
        let newly_down = !self.is_up(now, failure_timeout) && !self.reported_down;
        self.reported_down |= newly_down;
        newly_down
    }

    /// Whether the peer counts as up at `now`.
    pub fn is_up(&self, now: Instant, failure_timeout: Duration) -> bool {
        match self.failing_since {
            None => true,
            Some(_) => now.saturating_duration_since(self.last_ok) < failure_timeout,
        }
    }
}

/// The cluster as this node sees it.
pub struct Membership {
    /// This node.
    me: NodeId,
    /// Every member, this node included, with its advertised address.
    addrs: BTreeMap<NodeId, String>,
    /// Current placement.
    ring: RwLock<Arc<Ring>>,
    /// Failure detector state per peer.
    health: Mutex<BTreeMap<NodeId, PeerHealth>>,
    failure_timeout: Duration,
    /// The incarnation of each member's process as last heard (this node's own included).
    incarnations: Mutex<BTreeMap<NodeId, u64>>,
}

impl Membership {
    /// Static membership from configuration; `incarnation` identifies this process.
    pub fn new(
        me: NodeId,
        addrs: BTreeMap<NodeId, String>,
        ring: Ring,
        failure_timeout: Duration,
        incarnation: u64,
    ) -> Membership {
        let now = Instant::now();
        let health = addrs
            .keys()
            .filter(|id| **id != me)
            .map(|id| (id.clone(), PeerHealth::new(now)))
            .collect();
        let incarnations = Mutex::new(BTreeMap::from([(me.clone(), incarnation)]));
        Membership {
            me,
            addrs,
            ring: RwLock::new(Arc::new(ring)),
            health: Mutex::new(health),
            failure_timeout,
            incarnations,
        }
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every member with its address.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.addrs
    }

    /// Where a member listens (`host:port`): the one address book of the node.
    pub fn address(&self, id: &NodeId) -> Option<String> {
        self.addrs.get(id).cloned()
    }

    /// The other members.
    pub fn peers(&self) -> Vec<NodeId> {
        self.addrs
            .keys()
            .filter(|id| **id != self.me)
            .cloned()
            .collect()
    }

    /// Whether a member is up (this node always is).
    pub fn is_up(&self, id: &NodeId) -> bool {
        if *id == self.me {
            return true;
        }
        let now = Instant::now();
        self.with_health(|h| {
            h.get(id)
                .map(|p| p.is_up(now, self.failure_timeout))
                .unwrap_or(false)
        })
    }

    /// Feeds a successful exchange with a peer into the detector; returns true if the
    /// peer had been reported down (it is back).
    pub fn record_ok(&self, id: &NodeId) -> bool {
        let now = Instant::now();
        self.with_health(|h| h.get_mut(id).is_some_and(|p| p.record_ok(now)))
    }

    /// Feeds a failed exchange with a peer into the detector; returns true when this
    /// failure is the one that makes the peer count as down (once per outage).
    pub fn record_failure(&self, id: &NodeId) -> bool {
        let now = Instant::now();
        let timeout = self.failure_timeout;
        self.with_health(|h| {
            h.get_mut(id)
                .is_some_and(|p| p.record_failure(now, timeout))
        })
    }

    /// The member that listens at `addr`, if any (peers dial from the address they
    /// listen on). Addresses that are not `ip:port` (host names) are not matched.
    pub fn member_at(&self, addr: std::net::SocketAddr) -> Option<NodeId> {
        let addr = std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.addrs
            .iter()
            .find(|(_, a)| a.parse::<std::net::SocketAddr>().ok() == Some(addr))
            .map(|(id, _)| id.clone())
    }

    /// The last incarnation heard of `id` (0: none yet).
    pub fn incarnation(&self, id: &NodeId) -> u64 {
        let map = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).copied().unwrap_or(0)
    }

    /// Records a member's incarnation; returns true if it differs from a known earlier
    /// one (the member restarted since we last heard of it).
    pub fn observe_incarnation(&self, id: &NodeId, incarnation: u64) -> bool {
        let mut map = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        match map.insert(id.clone(), incarnation) {
            Some(previous) => previous != incarnation,
            None => false,
        }
    }

    fn with_health<R>(&self, f: impl FnOnce(&mut BTreeMap<NodeId, PeerHealth>) -> R) -> R {
        match self.health.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_down_only_after_failing_for_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut h = PeerHealth::new(t0);
        assert!(
            h.is_up(t0 + Duration::from_secs(10), timeout),
            "never failed: presumed up"
        );
        assert!(!h.record_failure(t0 + Duration::from_secs(1), timeout));
        assert!(h.is_up(t0 + Duration::from_secs(1), timeout));
        assert!(!h.is_up(t0 + Duration::from_secs(3), timeout));
        assert!(
            h.record_failure(t0 + Duration::from_secs(3), timeout),
            "reported once"
        );
        assert!(
            !h.record_failure(t0 + Duration::from_secs(4), timeout),
            "not twice"
        );
        assert!(
            h.record_ok(t0 + Duration::from_secs(5)),
            "back up after being down"
        );
        assert!(h.is_up(t0 + Duration::from_secs(5), timeout));
        assert!(!h.record_ok(t0 + Duration::from_secs(6)));
    }
}
