//! When a deleted key's tombstones may be removed from storage, so that a delete can
//! never be undone.
//!
//! A delete writes a tombstone sibling (DVV sets keep it like any value). Removing it
//! too early would let an old copy of the value — on a replica that missed the delete,
//! in a hint waiting for delivery, or in an anti-entropy exchange — come back, since a
//! replica with no state for the key has no clock to tell it the value was replaced.
//! The rule here ([`decide`]) reaps a key only when
//!
//! 1. its state holds tombstones only, and the newest of them is older than the grace
//!    period (which must exceed the hint time-to-live, so every hint that could still
//!    carry the old value has expired and is dropped instead of delivered); and
//! 2. every primary replica of the key answered, and holds exactly the same state (same
//!    digest) or none at all — never while a primary is unreachable or behind. A
//!    primary with no state holds no old value to bring back (it never had the key, or
//!    already reaped it), so it does not stop the others from finishing a reap.
//!
//! After a reap, a new write of the key mints a dot above every counter its coordinator
//! ever used (the node-wide counter floor of `Versioned::update_with_floor`), so a client
//! holding a context from before the delete cannot cover, and silently drop, a value
//! written after the reap.
//!
//! A state read *before* the reap may still be on its way to a replica *after* it: an
//! asynchronous read repair merges answers it collected for up to a request deadline plus
//! its listening window, then sends that merge to each primary that answered differently
//! — so a primary that answered after it reaped ("none") is sent the tombstones another
//! primary answered before it reaped, and stores them again; had a lagging primary's old
//! value been the only state among the answers, the value itself would come back. An
//! anti-entropy exchange or a hint can carry such a state too. So a replica remembers,
//! for a while after a reap, the state it removed ([`RecentReaps`]) and ignores an
//! incoming state that adds nothing to it: merged into the reaped state it would change
//! nothing, so it carries no write made after the delete.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::version::Versioned;
use crate::NodeId;

/// What a primary said about its copy of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryCopy {
    /// It could not be asked (down, or no answer).
    Unreachable,
    /// It has no state for the key.
    Absent,
    /// It holds a state with this digest.
    Holds(u128),
}

/// Whether a key may be reaped now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every primary holds the same tombstone-only state, older than the grace period.
    Reap,
    /// The state still has a live value: nothing to reap.
    Live,
    /// The newest tombstone is younger than the grace period; try again after `wait_ms`.
    TooYoung { wait_ms: u64 },
    /// A primary could not be asked.
    Unreachable(NodeId),
    /// A primary holds a different state: anti-entropy must converge first.
    Differs(NodeId),
}

/// When the key was deleted: the write time of its newest tombstone, if its state holds
/// tombstones only (None if any sibling is live, or there are no siblings).
pub fn deleted_at_ms(state: &Versioned) -> Option<u64> {
    if state.siblings().is_empty() || state.has_live() {
        return None;
    }
    state.siblings().iter().map(|s| s.written_at_ms).max()
}

/// Decides whether `local` (this primary's state, whose digest is `local_digest`) may be
/// reaped at `now_ms`, given what every *other* primary of the key answered.
pub fn decide(
    local: &Versioned,
    local_digest: u128,
    now_ms: u64,
    grace_ms: u64,
    others: &[(NodeId, PrimaryCopy)],
) -> Verdict {
    let Some(deleted) = deleted_at_ms(local) else {
        return Verdict::Live;
    };
    let ripe = deleted.saturating_add(grace_ms);
    if now_ms < ripe {
        return Verdict::TooYoung {
            wait_ms: ripe - now_ms,
        };
    }
    for (node, copy) in others {
        match copy {
            PrimaryCopy::Unreachable => return Verdict::Unreachable(node.clone()),
            PrimaryCopy::Holds(d) if *d == local_digest => {}
            PrimaryCopy::Absent => {}
            PrimaryCopy::Holds(_) => return Verdict::Differs(node.clone()),
        }
    }
    Verdict::Reap
}

/// The states this replica reaped lately, each kept for `keep` after its reap (at most
/// `cap` of them, the oldest forgotten first), so that a copy of one still in flight —
/// read before the reap, delivered after it — is ignored instead of stored again.
#[derive(Debug)]
pub struct RecentReaps {
    keep: Duration,
    cap: usize,
    by_key: HashMap<Vec<u8>, (Versioned, Instant)>,
    /// (forget at, key) in reap order; a key reaped again has a later entry as well.
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl RecentReaps {
    pub fn new(keep: Duration, cap: usize) -> RecentReaps {
        RecentReaps {
            keep,
            cap,
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records that `key`'s state `reaped` was removed at `now`.
    pub fn remember(&mut self, key: &[u8], reaped: Versioned, now: Instant) {
        if self.keep.is_zero() || self.cap == 0 {
            return;
        }
        let until = now + self.keep;
        self.by_key.insert(key.to_vec(), (reaped, until));
        self.order.push_back((until, key.to_vec()));
        self.forget(now);
        while self.by_key.len() > self.cap {
            self.pop_oldest();
        }
    }

    /// Whether `incoming` adds nothing to a state of `key` reaped within `keep` of `now`:
    /// a stale copy (the reaped tombstones, or a value they replaced) to be ignored.
    pub fn subsumes(&mut self, key: &[u8], incoming: &Versioned, now: Instant) -> bool {
        if self.by_key.is_empty() {
            return false; // every merge asks: the usual answer, without a lookup
        }
        self.forget(now);
        match self.by_key.get(key) {
            Some((reaped, _)) => reaped.merged(incoming) == *reaped,
            None => false,
        }
    }

    /// How many reaped states are remembered.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn forget(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((until, key)) = self.order.pop_front() {
            // A key reaped again since keeps its later entry.
            if self.by_key.get(&key).is_some_and(|(_, u)| *u == until) {
                self.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Actor, Clock};

    fn node(i: u8) -> NodeId {
        NodeId::new(format!("n{i}")).unwrap()
    }

    fn deleted_state(at: u64) -> Versioned {
        let a = Actor("a.1".into());
        let mut s = Versioned::new();
        s.update(&Clock::new(), &a, Some(b"v".to_vec()), at - 10);
        let ctx = s.clock().clone();
        s.update(&ctx, &a, None, at);
        s
    }

    #[test]
    fn only_tombstone_states_have_a_deletion_time() {
        let s = deleted_state(1_000);
        assert_eq!(deleted_at_ms(&s), Some(1_000));
        let mut live = s.clone();
        live.update(
            &Clock::new(),
            &Actor("b.1".into()),
            Some(b"w".to_vec()),
            2_000,
        );
        assert_eq!(deleted_at_ms(&live), None);
        assert_eq!(deleted_at_ms(&Versioned::new()), None);
    }

    #[test]
    fn reaps_only_old_tombstones_that_every_primary_holds() {
        let s = deleted_state(1_000);
        let d = s.digest();
        let agree = [
            (node(2), PrimaryCopy::Holds(d)),
            (node(3), PrimaryCopy::Holds(d)),
        ];
        assert_eq!(decide(&s, d, 5_000, 1_000, &agree), Verdict::Reap);
        assert_eq!(
            decide(&s, d, 1_500, 1_000, &agree),
            Verdict::TooYoung { wait_ms: 500 }
        );
        let down = [
            (node(2), PrimaryCopy::Holds(d)),
            (node(3), PrimaryCopy::Unreachable),
        ];
        assert_eq!(
            decide(&s, d, 5_000, 1_000, &down),
            Verdict::Unreachable(node(3))
        );
        let behind = [
            (node(2), PrimaryCopy::Holds(d ^ 1)),
            (node(3), PrimaryCopy::Holds(d)),
        ];
        assert_eq!(
            decide(&s, d, 5_000, 1_000, &behind),
            Verdict::Differs(node(2))
        );
        // A primary with nothing (it reaped already, or never had the key) holds no old
        // value: the reap may finish.
        let missing = [
            (node(2), PrimaryCopy::Absent),
            (node(3), PrimaryCopy::Holds(d)),
        ];
        assert_eq!(decide(&s, d, 5_000, 1_000, &missing), Verdict::Reap);
    }

    #[test]
    fn a_stale_copy_of_a_reaped_state_is_recognised_for_a_while() {
        let a = Actor("a.1".into());
        let mut old = Versioned::new();
        old.update(&Clock::new(), &a, Some(b"v".to_vec()), 990);
        let mut reaped = old.clone();
        reaped.update(&old.clock().clone(), &a, None, 1_000);
        let t0 = Instant::now();
        let mut recent = RecentReaps::new(Duration::from_secs(10), 100);
        assert!(!recent.subsumes(b"k", &reaped, t0), "nothing reaped yet");
        recent.remember(b"k", reaped.clone(), t0);
        // The reaped tombstones themselves, and the value they replaced, add nothing:
        // a read repair or an exchange that read them before the reap is ignored.
        assert!(recent.subsumes(b"k", &reaped, t0));
        assert!(recent.subsumes(b"k", &old, t0 + Duration::from_secs(9)));
        // A write made after the delete is new, and is stored.
        let newer = {
            let mut s = Versioned::new();
            s.update_with_floor(&Clock::new(), &a, Some(b"w".to_vec()), 2_000, 2);
            s
        };
        assert!(!recent.subsumes(b"k", &newer, t0));
        assert!(!recent.subsumes(b"other", &old, t0));
        // Once no state read before the reap can still be in flight, it is forgotten.
        assert!(!recent.subsumes(b"k", &reaped, t0 + Duration::from_secs(10)));
        assert!(recent.is_empty());
    }

    #[test]
    fn reaps_are_remembered_up_to_a_bound_and_again_when_repeated() {
        let s = deleted_state(1_000);
        let t0 = Instant::now();
        let mut recent = RecentReaps::new(Duration::from_secs(10), 2);
        recent.remember(b"a", s.clone(), t0);
        recent.remember(b"b", s.clone(), t0 + Duration::from_secs(1));
        recent.remember(b"c", s.clone(), t0 + Duration::from_secs(2));
        assert_eq!(recent.len(), 2);
        assert!(
            !recent.subsumes(b"a", &s, t0 + Duration::from_secs(2)),
            "the oldest goes"
        );
        // A key reaped again is kept from its latest reap.
        recent.remember(b"b", s.clone(), t0 + Duration::from_secs(8));
        assert!(recent.subsumes(b"b", &s, t0 + Duration::from_secs(15)));
        assert!(!recent.subsumes(b"c", &s, t0 + Duration::from_secs(15)));
        assert!(!recent.subsumes(b"b", &s, t0 + Duration::from_secs(18)));
        // Keeping nothing turns it off.
        let mut off = RecentReaps::new(Duration::ZERO, 2);
        off.remember(b"a", s.clone(), t0);
        assert!(!off.subsumes(b"a", &s, t0));
    }

    #[test]
    fn live_values_are_never_reaped() {
        let mut s = deleted_state(1_000);
        s.update(
            &Clock::new(),
            &Actor("b.1".into()),
            Some(b"w".to_vec()),
            1_001,
        );
        assert_eq!(decide(&s, s.digest(), u64::MAX, 0, &[]), Verdict::Live);
    }
}
