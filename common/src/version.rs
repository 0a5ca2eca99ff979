//! Versions: dotted version vector sets (DVV sets) built on `crdts::VClock` and `crdts::Dot`.
//!
//! Implements the causality tracking of Almeida et al., "Scalable and Accurate Causality
//! Tracking for Eventually Consistent Stores" (DAIS 2014), the scheme behind Riak 2.0's
//! DVV sets. A key's state ([`Versioned`]) is a causal context — a [`Clock`] of everything
//! this replica has seen — and a list of [`Sibling`]s, each a value (or a tombstone)
//! tagged with the [`crdts::Dot`] that minted it.
//!
//! - [`Versioned::update`] is the coordinator's write (paper §5, `update`): mint a fresh
//!   dot `(actor, 1 + max(local, context)[actor])`, drop the siblings the client's context
//!   covers (the client saw them and replaces them), add the new sibling.
//! - [`Versioned::merge`] is the replica sync rule (paper §5, `sync`): a sibling survives
//!   unless the other side's clock covers its dot *and* the other side no longer holds
//!   it; the clocks are unioned. Merge is commutative, associative and idempotent.
//!
//! Why not plain vector clocks per server, or `crdts::MVReg`: both lose a value when two
//! clients write from the same context through the same coordinator.
//!
//! Actors are not bare node ids: an [`Actor`] is a node id plus an epoch chosen when the
//! node's data directory is created, so a node whose disk was wiped never re-mints dots
//! that other replicas have already seen (and would silently discard).

use std::cmp::Ordering;
use std::fmt;

use base64::Engine;
use crdts::{CvRDT, Dot, VClock};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Who minted a dot: `<node id>.<epoch>`; the epoch changes when a node starts on an empty disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(pub String);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A causal context: how many writes of each actor a state (or a client) has seen.
pub type Clock = VClock<Actor>;

/// Most actors a clock from outside may name. Real clocks name one actor per node epoch
/// that ever wrote the key (a node takes a new epoch after each crash, and old epochs are
/// not pruned yet), so this is set far above any real count.
pub const MAX_CONTEXT_ACTORS: usize = 65_536;
/// Largest counter accepted from outside, far below overflow.
pub const MAX_COUNTER: u64 = 1 << 53;
/// Longest actor name accepted from outside.
pub const MAX_ACTOR_BYTES: usize = 128;

/// Checks a clock that came from outside (a client's context token, a peer's state):
/// bounded size, no zero or absurd counters. Rejecting these keeps `update` from
/// overflowing a counter and keeps digests canonical.
pub fn validate_clock(clock: &Clock) -> Result<(), Error> {
    if clock.dots.len() > MAX_CONTEXT_ACTORS {
        return Err(Error::InvalidContext {
            reason: format!(
                "it names {} actors, more than the {MAX_CONTEXT_ACTORS} allowed",
                clock.dots.len()
            ),
        });
    }
    for (actor, counter) in &clock.dots {
        if actor.0.is_empty() || actor.0.len() > MAX_ACTOR_BYTES {
            return Err(Error::InvalidContext {
                reason: format!("actor name of {} bytes", actor.0.len()),
            });
        }
        if *counter == 0 || *counter > MAX_COUNTER {
            return Err(Error::InvalidContext {
                reason: format!("counter {counter} for {actor} is out of range"),
            });
        }
    }
    Ok(())
}

/// One concurrent version of a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The event that wrote this sibling; unique across the cluster.
    pub dot: Dot<Actor>,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Vec<u8>>,
    /// Coordinator wall-clock time of the write, milliseconds since the Unix epoch.
    /// Informational (and the tie-breaker of the opt-in last-writer-wins policy).
    pub written_at_ms: u64,
}

impl Sibling {
    /// Whether this sibling is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// How two states relate causally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// The left state has seen strictly less than the right.
    Before,
    /// The left state has seen strictly more than the right.
    After,
    /// Both have seen the same events.
    Equal,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A key's replicated state: causal context plus siblings (a DVV set).
///
/// Invariants: siblings are sorted by dot and unique by dot; the clock covers every
/// sibling's dot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Versioned {
    clock: Clock,
    siblings: Vec<Sibling>,
}

fn covers(clock: &Clock, dot: &Dot<Actor>) -> bool {
    clock.get(&dot.actor) >= dot.counter
}

fn dot_key(dot: &Dot<Actor>) -> (&Actor, u64) {
    (&dot.actor, dot.counter)
}

impl Versioned {
    /// The empty state: nothing seen, no siblings.
    pub fn new() -> Versioned {
        Versioned::default()
    }

    /// Everything this state has seen; the context a read hands to the client.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// All siblings, tombstones included, sorted by dot.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The values of the live (non-tombstone) siblings, sorted by dot.
    pub fn live_values(&self) -> Vec<&[u8]> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.as_deref())
            .collect()
    }

    /// Whether any sibling is a value rather than a tombstone.
    pub fn has_live(&self) -> bool {
        self.siblings.iter().any(|s| s.value.is_some())
    }

    /// The coordinator's write (DVV paper §5 `update`).
    ///
    /// `context` is the clock the client last read (empty for a blind write), `actor` the
    /// coordinator's actor, `value` the new value or `None` to delete. Returns the new dot.
    pub fn update(
        &mut self,
        context: &Clock,
        actor: &Actor,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Dot<Actor> {
        self.update_with_floor(context, actor, value, now_ms, 0)
    }

    /// [`Versioned::update`] with a counter floor: the new dot's counter is also above
    /// `floor`. A coordinator passes the highest counter its actor ever minted (for any
    /// key), so that once a deleted key's state is reaped, a new write of that key is
    /// never covered by a context a client read before the delete (see `reaping`).
    /// Counters stay unique per key; gaps between them are harmless, since dots only
    /// ever name events of their own key.
    pub fn update_with_floor(
        &mut self,
        context: &Clock,
        actor: &Actor,
        value: Option<Vec<u8>>,
        now_ms: u64,
        floor: u64,
    ) -> Dot<Actor> {
        let counter = 1 + self.clock.get(actor).max(context.get(actor)).max(floor);
        let dot = Dot::new(actor.clone(), counter);
        self.siblings.retain(|s| !covers(context, &s.dot));
        self.clock.merge(context.clone());
        self.clock.merge(VClock::from(dot.clone()));
        let sibling = Sibling {
            dot: dot.clone(),
            value,
            written_at_ms: now_ms,
        };
        let at = self
            .siblings
            .binary_search_by(|s| dot_key(&s.dot).cmp(&dot_key(&dot)))
            .unwrap_or_else(|i| i);
        self.siblings.insert(at, sibling);
        dot
    }

    /// The context to hand back to the client that made the write which minted `dot`
    /// from `context`; `self` is the state right after that write.
    ///
    /// It covers exactly what the client had seen plus its own write, never a sibling the
    /// client was not shown: returning the coordinator's whole clock would let the client's
    /// next write silently replace concurrent values it never read. A version vector can
    /// only add `dot` by also covering the same actor's earlier dots, so when one of those
    /// (`context[actor] < c < dot.counter`) is still a live sibling the client has not
    /// seen, the own dot is left out: the client's next write then keeps its previous value
    /// as a sibling, which is safe, instead of dropping someone else's.
    ///
    /// An unseen tombstone does not count: it holds no value to lose, only the delete of
    /// values it already replaced, and the clock keeps its dot whether or not the sibling
    /// stays. Counting it would leave a key written blindly after a delete (the delete's
    /// tombstone then stays beside the new value until reaped) returning contexts that
    /// never cover the client's own writes, so every write through them would add a
    /// sibling, and a delete with them would miss the value it meant to remove.
    pub fn write_context(&self, context: &Clock, dot: &Dot<Actor>) -> Clock {
        let seen = context.get(&dot.actor);
        let unseen_gap = self.siblings.iter().any(|s| {
            !s.is_tombstone()
                && s.dot.actor == dot.actor
                && s.dot.counter > seen
                && s.dot.counter < dot.counter
        });
        let mut out = context.clone();
        if !unseen_gap {
            out.merge(VClock::from(dot.clone()));
        }
        out
    }

    /// Whether a state that came from outside keeps this type's invariants: siblings
    /// strictly sorted by dot, every dot covered by the clock, sane counters.
    pub fn is_well_formed(&self) -> bool {
        validate_clock(&self.clock).is_ok()
            && self
                .siblings
                .windows(2)
                .all(|w| dot_key(&w[0].dot) < dot_key(&w[1].dot))
            && self
                .siblings
                .iter()
                .all(|s| s.dot.counter > 0 && covers(&self.clock, &s.dot))
    }

    /// Replica sync (DVV paper §5 `sync`): keep a sibling unless the other side has seen
    /// its dot and dropped it; union the clocks.
    pub fn merge(&mut self, other: &Versioned) {
        let mut merged: Vec<Sibling> =
            Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (mut a, mut b) = (
            self.siblings.iter().peekable(),
            other.siblings.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    let x = a.next().expect("peeked");
                    (!covers(&other.clock, &x.dot)).then(|| x.clone())
                }
                (None, Some(_)) => {
                    let y = b.next().expect("peeked");
                    (!covers(&self.clock, &y.dot)).then(|| y.clone())
                }
                (Some(x), Some(y)) => match dot_key(&x.dot).cmp(&dot_key(&y.dot)) {
                    Ordering::Equal => {
                        b.next();
                        Some(a.next().expect("peeked").clone())
                    }
                    Ordering::Less => {
                        let x = a.next().expect("peeked");
                        (!covers(&other.clock, &x.dot)).then(|| x.clone())
                    }
                    Ordering::Greater => {
                        let y = b.next().expect("peeked");
                        (!covers(&self.clock, &y.dot)).then(|| y.clone())
                    }
                },
            };
            merged.extend(next);
        }
        self.siblings = merged;
        self.clock.merge(other.clock.clone());
    }

    /// The merge of two states, leaving both untouched.
    pub fn merged(&self, other: &Versioned) -> Versioned {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// How this state relates to `other`, by what each has seen (its clock).
    pub fn compare(&self, other: &Versioned) -> Causality {
        match self.clock.partial_cmp(&other.clock) {
            Some(Ordering::Less) => Causality::Before,
            Some(Ordering::Greater) => Causality::After,
            Some(Ordering::Equal) => Causality::Equal,
            None => Causality::Concurrent,
        }
    }

    /// Keeps only the newest sibling by `(written_at_ms, dot)`: the opt-in
    /// last-writer-wins policy. Loses concurrent writes by design.
    pub fn resolve_last_writer_wins(&mut self) {
        if let Some(winner) = self
            .siblings
            .iter()
            .max_by(|x, y| {
                (x.written_at_ms, dot_key(&x.dot)).cmp(&(y.written_at_ms, dot_key(&y.dot)))
            })
            .cloned()
        {
            self.siblings = vec![winner];
        }
    }

    /// A 128-bit digest of the state (clock and sibling dots), equal on replicas that
    /// hold the same version; used to compare replicas without shipping values.
    pub fn digest(&self) -> u128 {
        let mut bytes = Vec::new();
        for dot in self.clock.iter() {
            bytes.extend_from_slice(dot.actor.0.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&dot.counter.to_le_bytes());
        }
        bytes.push(0xff);
        for s in &self.siblings {
            bytes.extend_from_slice(s.dot.actor.0.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&s.dot.counter.to_le_bytes());
            bytes.push(u8::from(s.value.is_some()));
        }
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }
}

/// Encodes a context as the opaque token clients pass back: postcard, then URL-safe base64.
pub fn encode_context(clock: &Clock) -> String {
    let bytes = postcard::to_stdvec(clock).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a context token; the empty string is the empty context.
pub fn decode_context(token: &str) -> Result<Clock, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(Clock::new());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| Error::InvalidContext {
            reason: format!("not base64: {e}"),
        })?;
    postcard::from_bytes(&bytes).map_err(|e| Error::InvalidContext {
        reason: format!("not a clock: {e}"),
    })
}

#[cfg(test)]
mod tests;
