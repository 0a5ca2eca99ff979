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
