//! The consistency lab's pure core: the record of what a lab run did, the checkers that
//! judge it, and the model that predicts it (DESIGN.md §5).
//!
//! - [`history`]: the operation history a run records (JSON lines), with the indexes the
//!   checkers need; validated on construction so checkers can trust it.
//! - [`check`]: checkers over a history — staleness against time since commit (PBS
//!   t-visibility and k-staleness), lost writes in a set workload (Jepsen's set-full),
//!   session guarantees (read-your-writes, monotonic reads), siblings per read, latency
//!   percentiles. Each returns a serde-serialisable report.
//! - [`pbs`]: the WARS Monte Carlo model and closed forms of Bailis et al., "Probabilistically
//!   Bounded Staleness for Practical Partial Quorums" (VLDB 2012), for predicted-vs-measured
//!   charts.
//!
//! Nothing here does I/O, reads a clock or spawns tasks: a runner records times relative
//! to the start of the run and passes RNGs in, so every result is reproducible from the
//! recorded history and a seed.

pub mod check;
pub mod history;
pub mod pbs;

use dynakv_common::dist::DistError;

/// Errors from the lab's pure core: a model, a history or a checker argument that makes
/// no sense. Each message says what was wrong and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabError {
    /// R or W outside 1..=N, or N outside 1..=[`pbs::MAX_REPLICAS`].
    #[error("invalid quorum N={n}, R={r}, W={w}: N must be 1 to {max}, and R and W each 1 to N", max = pbs::MAX_REPLICAS)]
    InvalidQuorum {
        /// Replicas per key.
        n: usize,
        /// Read quorum.
        r: usize,
        /// Write quorum.
        w: usize,
    },
    /// One of the model's delay distributions is invalid.
    #[error("invalid {which} delay of the PBS model: {source}")]
    InvalidDelay {
        /// `w_delay`, `a_delay`, `r_delay` or `s_delay`.
        which: &'static str,
        /// Why.
        source: DistError,
    },
    /// A Monte Carlo or checker argument out of range.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A history line that is not a JSON operation record.
    #[error("history line {line} is not an operation record: {reason}")]
    UnreadableHistory {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        reason: String,
    },
    /// An operation record that cannot be right (times out of order, a duplicate id or
    /// written value, a write without a value).
    #[error("invalid history: operation {id}: {reason}")]
    InvalidHistory {
        /// The operation's id.
        id: u64,
        /// What is wrong and what is expected.
        reason: String,
    },
}
