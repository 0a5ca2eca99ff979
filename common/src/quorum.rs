//! Quorum arithmetic: what R and W mean for a given N, and a tracker that counts
//! replica answers until a quorum is reached or can no longer be reached.
//!
//! The tracker is a small state machine with no I/O: the coordinator sends requests,
//! feeds each answer in with [`QuorumTracker::record`], and acts on the returned
//! [`Progress`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, NodeId};

/// How many replicas must answer: a name or a number. Resolved against N per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Quorum {
    /// A single replica.
    One,
    /// A majority: ⌊N/2⌋ + 1.
    #[default]
    Quorum,
    /// Every replica in the preference list.
    All,
    /// Exactly this many (1..=N).
    Count(u8),
}

impl Quorum {
    /// The number of replicas this quorum needs with `n` replicas, or an error if it is
    /// outside 1..=N.
    pub fn resolve(self, n: usize, what: &'static str) -> Result<usize, Error> {
        let needed = match self {
            Quorum::One => 1,
            Quorum::Quorum => n / 2 + 1,
            Quorum::All => n,
            Quorum::Count(c) => usize::from(c),
        };
        if needed == 0 || needed > n {
            return Err(Error::InvalidQuorum {
                what,
                value: self.to_string(),
                n,
            });
        }
        Ok(needed)
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(c) => write!(f, "{c}"),
        }
    }
}

impl FromStr for Quorum {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            other => other
                .parse::<u8>()
                .ok()
                .filter(|c| *c > 0)
                .map(Quorum::Count)
                .ok_or_else(|| Error::UnparsableQuorum {
                    value: s.to_string(),
                }),
        }
    }
}

/// Where a quorum stands after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not enough answers yet, but still reachable.
    Pending,
    /// Enough successful answers.
    Reached,
    /// Too many failures: the quorum can no longer be reached.
    Failed,
}

/// Counts answers from `total` replicas until `needed` succeeded or too many failed.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    needed: usize,
    total: usize,
    ok: Vec<NodeId>,
    failures: Vec<(NodeId, String)>,
}

impl QuorumTracker {
    /// A tracker waiting for `needed` successes out of `total` requests sent.
    pub fn new(needed: usize, total: usize) -> QuorumTracker {
        QuorumTracker {
            needed,
            total,
            ok: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Records one answer; `Err` carries the failure's reason.
    pub fn record(&mut self, from: NodeId, result: Result<(), String>) -> Progress {
        match result {
            Ok(()) => self.ok.push(from),
            Err(reason) => self.failures.push((from, reason)),
        }
        self.progress()
    }

    /// The current state, without recording anything.
    pub fn progress(&self) -> Progress {
        if self.ok.len() >= self.needed {
            Progress::Reached
        } else if self.total - self.failures.len().min(self.total) < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// How many replicas succeeded.
    pub fn ok_count(&self) -> usize {
        self.ok.len()
    }

    /// The replicas that succeeded, in the order they answered.
    pub fn ok(&self) -> &[NodeId] {
        &self.ok
    }

    /// The replicas that failed and why.
    pub fn failures(&self) -> &[(NodeId, String)] {
        &self.failures
    }

    /// How many successes are needed.
    pub fn needed(&self) -> usize {
        self.needed
    }
}

/// What a set of (N, R, W) guarantees: the quorum table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumProperties {
    /// Every read quorum intersects every write quorum (R + W > N): reads see the latest
    /// acknowledged write, barring sloppy quorums.
    pub read_write_overlap: bool,
    /// Two write quorums always intersect (2W > N).
    pub write_write_overlap: bool,
    /// Replicas that may be down while reads still succeed (N - R).
    pub read_tolerates: usize,
    /// Replicas that may be down while writes still succeed (N - W).
    pub write_tolerates: usize,
}

/// The guarantees of (N, R, W), assuming 1 ≤ R, W ≤ N.
pub fn properties(n: usize, r: usize, w: usize) -> QuorumProperties {
    QuorumProperties {
        read_write_overlap: r + w > n,
        write_write_overlap: 2 * w > n,
        read_tolerates: n.saturating_sub(r),
        write_tolerates: n.saturating_sub(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId::new(format!("n{i}")).unwrap()
    }

    #[test]
    fn names_resolve_against_n() {
        assert_eq!(Quorum::One.resolve(3, "r").unwrap(), 1);
        assert_eq!(Quorum::Quorum.resolve(3, "r").unwrap(), 2);
        assert_eq!(Quorum::Quorum.resolve(4, "r").unwrap(), 3);
        assert_eq!(Quorum::Quorum.resolve(5, "r").unwrap(), 3);
        assert_eq!(Quorum::All.resolve(3, "w").unwrap(), 3);
        assert_eq!(Quorum::Count(2).resolve(3, "w").unwrap(), 2);
        assert!(Quorum::Count(4).resolve(3, "w").is_err());
        assert!(Quorum::Count(0).resolve(3, "w").is_err());
    }

    #[test]
    fn parsing_accepts_names_and_numbers() {
        assert_eq!("one".parse::<Quorum>().unwrap(), Quorum::One);
        assert_eq!("QUORUM".parse::<Quorum>().unwrap(), Quorum::Quorum);
        assert_eq!("all".parse::<Quorum>().unwrap(), Quorum::All);
        assert_eq!("2".parse::<Quorum>().unwrap(), Quorum::Count(2));
        let zero = "0".parse::<Quorum>().unwrap_err().to_string();
        assert!(zero.contains("a number from 1 to N"), "{zero}");
        assert!("most".parse::<Quorum>().is_err());
        assert!("-1".parse::<Quorum>().is_err());
    }

    #[test]
    fn tracker_reaches_quorum_after_enough_successes() {
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.record(node(1), Ok(())), Progress::Pending);
        assert_eq!(t.record(node(2), Err("down".into())), Progress::Pending);
        assert_eq!(t.record(node(3), Ok(())), Progress::Reached);
        assert_eq!(t.ok_count(), 2);
    }

    #[test]
    fn tracker_fails_as_soon_as_quorum_is_unreachable() {
        let mut t = QuorumTracker::new(3, 3);
        assert_eq!(t.record(node(1), Ok(())), Progress::Pending);
        assert_eq!(t.record(node(2), Err("timeout".into())), Progress::Failed);
        assert_eq!(t.failures().len(), 1);
    }

    #[test]
    fn quorum_table_matches_the_classic_rules() {
        assert!(properties(3, 2, 2).read_write_overlap);
        assert!(!properties(3, 1, 1).read_write_overlap);
        assert!(properties(3, 1, 3).read_write_overlap);
        assert_eq!(properties(3, 1, 3).write_tolerates, 0);
        assert_eq!(properties(5, 3, 3).read_tolerates, 2);
        assert!(!properties(4, 2, 2).write_write_overlap);
    }
}
