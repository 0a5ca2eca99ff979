//! Checkers over a recorded [`History`]: what a lab run's operations say about
//! staleness, lost writes, session guarantees, siblings and latency. Pure functions; each
//! returns a serde-serialisable report.
//!
//! Shared definitions (see [`super::history`] for the conventions):
//! - **Precedence.** X strictly precedes Y iff `X.end_ms() < Y.invoke_ms`, where a
//!   write's end is its completion if acknowledged and +∞ otherwise.
//! - **Register writes** of a key are its `Write`s and `Delete`s; "acked before a read"
//!   means acknowledged with `complete_ms < read.invoke_ms`.
//! - **What a read returned.** Each value maps to the write that wrote it (values are
//!   unique per key). A value no write in the history produced is counted as
//!   `unidentified` and treated as older than every write. A not-found read is read
//!   generously as having returned any delete of the key invoked before the read
//!   completed (or the initial empty state, older than every write, if there is none).
//! - Only acknowledged reads are judged.
//!
//! The checkers only ever give the benefit of the doubt (an unacknowledged write counts
//! as possibly concurrent with everything), so every anomaly reported is a real one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::history::{History, Op, OpKind, Outcome};
use super::LabError;

/// Bin edges (ms since the latest acknowledged write) for staleness reports: bins
/// [0,1), [1,2), [2,5), ..., [2000, ∞).
pub const DEFAULT_BIN_EDGES_MS: [f64; 12] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// How many examples of each anomaly a report keeps.
pub const MAX_EXAMPLES: usize = 5;

/// The largest latency the histograms resolve, in µs (one hour); longer waits are
/// recorded as one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Significant digits the latency histograms keep.
const LATENCY_SIGFIG: u8 = 3;

/// What a read returned, reduced to what precedence needs.
struct Seen<'h> {
    /// The latest end among the returned writes (−∞: only unidentified values or the
    /// initial state).
    max_end: f64,
    /// The returned write invoked last: the newest thing the read proves it saw.
    /// `None` for a not-found read (which delete it saw is not known).
    newest: Option<&'h Op>,
    /// Returned values no write in the history produced.
    unidentified: u64,
}

fn seen<'h>(history: &'h History, read: &Op) -> Seen<'h> {
    let mut s = Seen {
        max_end: f64::NEG_INFINITY,
        newest: None,
        unidentified: 0,
    };
    if read.read.is_empty() {
        s.max_end = history
            .ops_for_key(&read.key)
            .filter(|d| d.kind == OpKind::Delete && d.invoke_ms < read.complete_ms)
            .map(Op::end_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        return s;
    }
    for value in &read.read {
        match history.write_of(&read.key, value) {
            Some(w) => {
                s.max_end = s.max_end.max(w.end_ms());
                if s.newest.is_none_or(|n| w.invoke_ms > n.invoke_ms) {
                    s.newest = Some(w);
                }
            }
            None => s.unidentified += 1,
        }
    }
    s
}

/// The acknowledged reads of a key, by invocation time.
fn ok_reads<'h>(history: &'h History, key: &str) -> impl Iterator<Item = &'h Op> + 'h {
    history
        .ops_for_key(key)
        .filter(|o| o.kind == OpKind::Read && o.is_ok())
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn push_example<T>(examples: &mut Vec<T>, example: impl FnOnce() -> T) {
    if examples.len() < MAX_EXAMPLES {
        examples.push(example());
    }
}

// ---------------------------------------------------------------------------------------
// Staleness

/// Staleness of register reads (PBS t-visibility and k-staleness, measured).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StalenessReport {
    /// Acknowledged reads with at least one write acknowledged before them.
    pub reads_checked: u64,
    /// Acknowledged reads with no write acknowledged before them (nothing to be stale
    /// against; includes every read of a set-workload key).
    pub reads_skipped: u64,
    /// Checked reads that were stale (k >= 1).
    pub stale_reads: u64,
    /// 1 − stale/checked; `None` when nothing was checked.
    pub p_consistent: Option<f64>,
    /// Returned values that no write in the history produced.
    pub unidentified_values: u64,
    /// P(consistent) by t = read invocation − W*'s completion.
    pub bins: Vec<StalenessBin>,
    /// Checked reads whose t fell below the first bin edge.
    pub unbinned: u64,
    /// How many checked reads had each k, ascending (k = 0 included).
    pub k_staleness: Vec<KCount>,
    /// A few stale reads.
    pub examples: Vec<StaleRead>,
}

/// Reads whose time since the latest acknowledged write fell in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StalenessBin {
    /// Lower edge, inclusive, ms.
    pub from_ms: f64,
    /// Upper edge, exclusive, ms; `None` for the last, open bin.
    pub to_ms: Option<f64>,
    /// Reads in the bin.
    pub reads: u64,
    /// Stale reads in the bin.
    pub stale: u64,
    /// 1 − stale/reads; `None` for an empty bin.
    pub p_consistent: Option<f64>,
    /// The mean t of the bin's reads, ms (where a model is evaluated to compare).
    pub mean_t_ms: Option<f64>,
}

/// How many reads were exactly `k` versions behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KCount {
    /// Acknowledged writes the read missed (see [`staleness`]).
    pub k: u64,
    /// Reads with that k.
    pub reads: u64,
}

/// One stale read, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleRead {
    /// The read's id.
    pub read_id: u64,
    /// Its session.
    pub session: u32,
    /// The key.
    pub key: String,
    /// ms between W*'s acknowledgement and the read's invocation.
    pub t_ms: f64,
    /// Versions behind.
    pub k: u64,
    /// What the read returned (empty: not found).
    pub returned: Vec<String>,
    /// W*, the latest write acknowledged before the read.
    pub latest_write_id: u64,
    /// W*'s value (`None` for a delete).
    pub latest_value: Option<String>,
}

/// Measures staleness against time since commit, the PBS "t-visibility".
///
/// For each acknowledged read of key k, W* is the register write of k acknowledged
/// before the read with the latest completion; reads with no such write are skipped.
/// Its t is `read.invoke_ms − W*.complete_ms` (> 0).
///
/// k is the number of register writes of k acknowledged before the read that every
/// returned write strictly precedes: how many committed versions the read missed. The
/// read is *consistent* iff k = 0, *stale* otherwise. Consistent implies that some
/// returned write does not strictly precede W* (W* itself, or a write concurrent with or
/// after it, including failed and unknown ones whose values show up). The converse holds
/// unless acknowledged writes overlap: if W* spans [0, 100], Y spans [3, 50] and X spans
/// [1, 2], a read at 101 returning only X is concurrent with W* but misses Y, which X
/// strictly precedes; every linearisation puts Y after X, so it counts as stale (k = 1).
/// A not-found read with no delete to explain it misses every acknowledged write.
///
/// `bin_edges_ms` must be finite and strictly increasing: bin i is
/// `[edge_i, edge_{i+1})`, the last is `[edge_last, ∞)`.
pub fn staleness(history: &History, bin_edges_ms: &[f64]) -> Result<StalenessReport, LabError> {
    let edges_ok = !bin_edges_ms.is_empty()
        && bin_edges_ms.iter().all(|e| e.is_finite())
        && bin_edges_ms.windows(2).all(|w| w[0] < w[1]);
    if !edges_ok {
        return Err(LabError::InvalidArgument {
            what: "staleness bin edges",
            reason: format!(
                "{bin_edges_ms:?}; give one or more finite edges in increasing order, \
                 such as [0, 1, 2, 5, 10]"
            ),
        });
    }
    let mut report = StalenessReport {
        reads_checked: 0,
        reads_skipped: 0,
        stale_reads: 0,
        p_consistent: None,
        unidentified_values: 0,
        bins: bin_edges_ms
            .iter()
            .enumerate()
            .map(|(i, &from_ms)| StalenessBin {
                from_ms,
                to_ms: bin_edges_ms.get(i + 1).copied(),
                reads: 0,
                stale: 0,
                p_consistent: None,
                mean_t_ms: None,
            })
            .collect(),
        unbinned: 0,
        k_staleness: Vec::new(),
        examples: Vec::new(),
    };
    let mut ks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut t_sums = vec![0.0f64; bin_edges_ms.len()];
    for key in history.keys() {
        let acked: Vec<&Op> = history
            .ops_for_key(key)
            .filter(|o| o.kind.is_register_write() && o.is_ok())
            .collect();
        for read in ok_reads(history, key) {
            let before = acked.iter().filter(|w| w.complete_ms < read.invoke_ms);
            let Some(latest) = before
                .clone()
                .max_by(|a, b| a.complete_ms.total_cmp(&b.complete_ms))
            else {
                report.reads_skipped += 1;
                continue;
            };
            let s = seen(history, read);
            report.unidentified_values += s.unidentified;
            let k = before.filter(|y| s.max_end < y.invoke_ms).count() as u64;
            let t_ms = read.invoke_ms - latest.complete_ms;
            report.reads_checked += 1;
            *ks.entry(k).or_default() += 1;
            let stale = k > 0;
            if stale {
                report.stale_reads += 1;
                push_example(&mut report.examples, || StaleRead {
                    read_id: read.id,
                    session: read.session,
                    key: key.to_string(),
                    t_ms,
                    k,
                    returned: read.read.clone(),
                    latest_write_id: latest.id,
                    latest_value: latest.value.clone(),
                });
            }
            match bin_edges_ms.iter().rposition(|&e| e <= t_ms) {
                Some(i) => {
                    report.bins[i].reads += 1;
                    report.bins[i].stale += u64::from(stale);
                    t_sums[i] += t_ms;
                }
                None => report.unbinned += 1,
            }
        }
    }
    for (bin, sum) in report.bins.iter_mut().zip(t_sums) {
        bin.p_consistent = ratio(bin.reads - bin.stale, bin.reads);
        bin.mean_t_ms = (bin.reads > 0).then(|| sum / bin.reads as f64);
    }
    report.p_consistent = ratio(
        report.reads_checked - report.stale_reads,
        report.reads_checked,
    );
    report.k_staleness = ks
        .into_iter()
        .map(|(k, reads)| KCount { k, reads })
        .collect();
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Lost writes: Jepsen's set-full

/// The fate of every add in a set-union workload, after Jepsen's `set-full` checker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetReport {
    /// Keys with at least one add.
    pub keys: u64,
    /// Adds attempted on keys with a final read.
    pub attempted: u64,
    /// Adds acknowledged on keys with a final read.
    pub acknowledged: u64,
    /// Acknowledged, in the final read, and in every run read invoked after the ack
    /// (and in at least one run read).
    pub stable: u64,
    /// Acknowledged but absent from the final read: data loss.
    pub lost: u64,
    /// Acknowledged and in the final read, but in no read during the run.
    pub never_read: u64,
    /// Acknowledged, in the final read and seen during the run, but missed by at least
    /// one read invoked after the ack: visible only some time after it was acknowledged.
    pub stale: u64,
    /// Adds with an unknown outcome that are in the final read.
    pub unknown_survived: u64,
    /// Adds with an unknown outcome that are not.
    pub unknown_absent: u64,
    /// Failed adds that are in the final read anyway (partially applied, then spread).
    pub failed_survived: u64,
    /// Failed adds that are not.
    pub failed_absent: u64,
    /// Distinct elements read (during the run or finally) that no add produced.
    pub unexpected: u64,
    /// Adds on keys without a final read, not judged.
    pub unchecked: u64,
    /// Keys that had adds but no final read.
    pub keys_without_final_read: Vec<String>,
    /// A few lost adds.
    pub lost_examples: Vec<SetElement>,
    /// A few never-read adds.
    pub never_read_examples: Vec<SetElement>,
    /// A few stale adds.
    pub stale_examples: Vec<SetElement>,
    /// A few unexpected elements, as `key/element`.
    pub unexpected_examples: Vec<String>,
}

/// One add, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetElement {
    /// The set's key.
    pub key: String,
    /// The element.
    pub element: String,
    /// The add's id.
    pub add_id: u64,
    /// When the add was acknowledged, ms.
    pub acked_ms: f64,
    /// For a stale element: when the last run read that missed it after the ack was
    /// invoked, ms.
    pub last_missed_ms: Option<f64>,
}

/// Judges every add of a set-union workload.
///
/// Each `SetAdd` adds one unique element; each acknowledged run read of the key returns
/// the union of its siblings; `final_reads` holds, per key, the set read after healing
/// and convergence with R = all. Classes are as in Jepsen's set-full, judged against the
/// final read: see the fields of [`SetReport`]. "Invoked after the ack" is strict
/// (`read.invoke_ms > add.complete_ms`).
pub fn sets(history: &History, final_reads: &BTreeMap<String, BTreeSet<String>>) -> SetReport {
    let mut report = SetReport {
        keys: 0,
        attempted: 0,
        acknowledged: 0,
        stable: 0,
        lost: 0,
        never_read: 0,
        stale: 0,
        unknown_survived: 0,
        unknown_absent: 0,
        failed_survived: 0,
        failed_absent: 0,
        unexpected: 0,
        unchecked: 0,
        keys_without_final_read: Vec::new(),
        lost_examples: Vec::new(),
        never_read_examples: Vec::new(),
        stale_examples: Vec::new(),
        unexpected_examples: Vec::new(),
    };
    for key in history.keys() {
        let adds: Vec<&Op> = history
            .ops_for_key(key)
            .filter(|o| o.kind == OpKind::SetAdd)
            .collect();
        if adds.is_empty() {
            continue;
        }
        report.keys += 1;
        let Some(fin) = final_reads.get(key) else {
            report.unchecked += adds.len() as u64;
            report.keys_without_final_read.push(key.to_string());
            continue;
        };
        let reads: Vec<&Op> = ok_reads(history, key).collect();
        // Per element: seen by any run read, and by how many reads invoked after its ack.
        let mut observed: HashSet<&str> = HashSet::new();
        let mut seen_after_ack: HashMap<&str, u64> = HashMap::new();
        let mut unexpected: BTreeSet<&str> = BTreeSet::new();
        for read in &reads {
            // A set read lists each element once, but count each once per read anyway.
            let elements: BTreeSet<&str> = read.read.iter().map(String::as_str).collect();
            for e in elements {
                observed.insert(e);
                match history.add_of(key, e) {
                    Some(add) if add.is_ok() && read.invoke_ms > add.complete_ms => {
                        *seen_after_ack.entry(e).or_default() += 1;
                    }
                    Some(_) => {}
                    None => {
                        unexpected.insert(e);
                    }
                }
            }
        }
        unexpected.extend(
            fin.iter()
                .map(String::as_str)
                .filter(|e| history.add_of(key, e).is_none()),
        );
        report.unexpected += unexpected.len() as u64;
        for e in unexpected {
            push_example(&mut report.unexpected_examples, || format!("{key}/{e}"));
        }
        for add in adds {
            report.attempted += 1;
            let Some(e) = add.value.as_deref() else {
                continue; // History::new guarantees a value; nothing to judge without one.
            };
            let survived = fin.contains(e);
            let example = |last_missed_ms| SetElement {
                key: key.to_string(),
                element: e.to_string(),
                add_id: add.id,
                acked_ms: add.complete_ms,
                last_missed_ms,
            };
            match (&add.outcome, survived) {
                (Outcome::Unknown { .. }, true) => report.unknown_survived += 1,
                (Outcome::Unknown { .. }, false) => report.unknown_absent += 1,
                (Outcome::Failed { .. }, true) => report.failed_survived += 1,
                (Outcome::Failed { .. }, false) => report.failed_absent += 1,
                (Outcome::Ok, _) => {
                    report.acknowledged += 1;
                    // Reads are sorted by invocation: those after the ack are a suffix.
                    let after =
                        reads.len() - reads.partition_point(|r| r.invoke_ms <= add.complete_ms);
                    let hits = seen_after_ack.get(e).copied().unwrap_or(0);
                    if !survived {
                        report.lost += 1;
                        push_example(&mut report.lost_examples, || example(None));
                    } else if !observed.contains(e) {
                        report.never_read += 1;
                        push_example(&mut report.never_read_examples, || example(None));
                    } else if (after as u64) > hits {
                        report.stale += 1;
                        push_example(&mut report.stale_examples, || {
                            let last_missed = reads
                                .iter()
                                .filter(|r| {
                                    r.invoke_ms > add.complete_ms && !r.read.iter().any(|x| x == e)
                                })
                                .map(|r| r.invoke_ms)
                                .fold(f64::NEG_INFINITY, f64::max);
                            example(Some(last_missed))
                        });
                    } else {
                        report.stable += 1;
                    }
                }
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// Session guarantees

/// Which session guarantee a read broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// The read missed the session's own earlier acknowledged write.
    ReadYourWrites,
    /// The read went back in time relative to an earlier read of the session.
    MonotonicReads,
}

/// Session-guarantee violations (Terry et al., "Session Guarantees for Weakly
/// Consistent Replicated Data", 1994), per client session and key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReport {
    /// Sessions in the history.
    pub sessions: u64,
    /// Reads made after an acknowledged write of the same key by the same session.
    pub ryw_checked: u64,
    /// Of those, reads that missed it.
    pub ryw_violations: u64,
    /// Reads made after an earlier read of the same key by the same session that
    /// returned an identified write.
    pub monotonic_checked: u64,
    /// Of those, reads that went back in time.
    pub monotonic_violations: u64,
    /// A few violations.
    pub examples: Vec<SessionViolation>,
}

/// One violation, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionViolation {
    /// Which guarantee.
    pub guarantee: Guarantee,
    /// The session.
    pub session: u32,
    /// The key.
    pub key: String,
    /// The offending read's id.
    pub read_id: u64,
    /// What it returned (empty: not found).
    pub returned: Vec<String>,
    /// The write it should have seen (the session's own write, or the newest write an
    /// earlier read returned).
    pub expected_write_id: u64,
    /// That write's value (`None` for a delete).
    pub expected_value: Option<String>,
}

/// Checks read-your-writes and monotonic reads for each session and key.
///
/// - *Read-your-writes*: a read by session s of key k, invoked after s's latest write W
///   to k acknowledged before it, violates RYW iff every write it returned strictly
///   precedes W (it returned neither W nor anything concurrent with or after W).
/// - *Monotonic reads*: for each earlier read of k by s (completed before this one was
///   invoked), take the returned write invoked last; this read violates MR iff every
///   write it returns strictly precedes one of those. Interval order makes that "its
///   latest end is before the latest such invocation". A not-found read never raises the
///   bar for later reads (which delete it saw is unknown).
pub fn sessions(history: &History) -> SessionReport {
    let mut report = SessionReport {
        sessions: 0,
        ryw_checked: 0,
        ryw_violations: 0,
        monotonic_checked: 0,
        monotonic_violations: 0,
        examples: Vec::new(),
    };
    for session in history.sessions() {
        report.sessions += 1;
        let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in history.ops_for_session(session) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
        for (key, ops) in by_key {
            let own_acked: Vec<&Op> = ops
                .iter()
                .copied()
                .filter(|o| o.kind.is_register_write() && o.is_ok())
                .collect();
            // Earlier reads not yet folded into the bar, and the bar: the latest-invoked
            // write any completed earlier read returned.
            let mut pending: Vec<&Op> = Vec::new();
            let mut bar: Option<&Op> = None;
            for read in ops
                .iter()
                .copied()
                .filter(|o| o.kind == OpKind::Read && o.is_ok())
            {
                pending.retain(|earlier| {
                    if earlier.complete_ms >= read.invoke_ms {
                        return true;
                    }
                    if let Some(w) = seen(history, earlier).newest {
                        if bar.is_none_or(|b| w.invoke_ms > b.invoke_ms) {
                            bar = Some(w);
                        }
                    }
                    false
                });
                let s = seen(history, read);
                let mut violation = |guarantee, expected: &Op| {
                    push_example(&mut report.examples, || SessionViolation {
                        guarantee,
                        session,
                        key: key.to_string(),
                        read_id: read.id,
                        returned: read.read.clone(),
                        expected_write_id: expected.id,
                        expected_value: expected.value.clone(),
                    })
                };
                let own = own_acked
                    .iter()
                    .filter(|w| w.complete_ms < read.invoke_ms)
                    .max_by(|a, b| a.complete_ms.total_cmp(&b.complete_ms));
                if let Some(own) = own {
                    report.ryw_checked += 1;
                    if s.max_end < own.invoke_ms {
                        report.ryw_violations += 1;
                        violation(Guarantee::ReadYourWrites, own);
                    }
                }
                if let Some(b) = bar {
                    report.monotonic_checked += 1;
                    if s.max_end < b.invoke_ms {
                        report.monotonic_violations += 1;
                        violation(Guarantee::MonotonicReads, b);
                    }
                }
                pending.push(read);
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------------------
// Siblings and latency

/// How many siblings acknowledged reads returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiblingsReport {
    /// Acknowledged reads.
    pub reads: u64,
    /// Reads with more than one sibling.
    pub with_siblings: u64,
    /// The most siblings one read returned.
    pub max: u32,
    /// Mean siblings per read; `None` without reads.
    pub mean: Option<f64>,
    /// Reads per sibling count, ascending (0 = not found).
    pub histogram: Vec<SiblingsCount>,
}

/// Reads that returned exactly `siblings` siblings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiblingsCount {
    /// Sibling count.
    pub siblings: u32,
    /// Reads with it.
    pub reads: u64,
}

/// Counts siblings per acknowledged read (the recorded `siblings`, before any union).
pub fn siblings(history: &History) -> SiblingsReport {
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for op in history.ops() {
        if op.kind == OpKind::Read && op.is_ok() {
            *counts.entry(op.siblings).or_default() += 1;
        }
    }
    let reads: u64 = counts.values().sum();
    let total: u64 = counts.iter().map(|(s, n)| u64::from(*s) * n).sum();
    SiblingsReport {
        reads,
        with_siblings: counts.range(2..).map(|(_, n)| n).sum(),
        max: counts.keys().next_back().copied().unwrap_or(0),
        mean: (reads > 0).then(|| total as f64 / reads as f64),
        histogram: counts
            .into_iter()
            .map(|(siblings, reads)| SiblingsCount { siblings, reads })
            .collect(),
    }
}

/// Latency of one kind of operation at one R or W.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyStats {
    /// The operation kind.
    pub kind: OpKind,
    /// R or W as requested (`one`, `quorum`, `all`, a number).
    pub quorum: String,
    /// Whether the quorum was strict.
    pub strict: bool,
    /// Acknowledged operations (the percentiles cover these only).
    pub ok: u64,
    /// Failed operations.
    pub failed: u64,
    /// Operations with an unknown outcome.
    pub unknown: u64,
    /// Percentiles of the acknowledged ones; `None` if there were none.
    pub latency_ms: Option<Percentiles>,
}

/// Latency percentiles in ms (HDR histogram, 3 significant digits, 1 µs to 1 h).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Latency percentiles per operation kind, R/W and strictness, sorted by those.
pub fn latency(history: &History) -> Vec<LatencyStats> {
    type Group = (OpKind, String, bool);
    let mut groups: BTreeMap<Group, (Histogram<u64>, u64, u64)> = BTreeMap::new();
    for op in history.ops() {
        let (hist, failed, unknown) = groups
            .entry((op.kind, op.quorum.to_string(), op.strict))
            .or_insert_with(|| {
                let h = Histogram::new_with_bounds(1, MAX_LATENCY_US, LATENCY_SIGFIG)
                    .expect("constant histogram bounds are valid");
                (h, 0, 0)
            });
        match op.outcome {
            Outcome::Ok => {
                // Sub-microsecond waits count as 1 µs, waits over an hour as an hour.
                let us = (op.latency_ms() * 1000.0)
                    .round()
                    .clamp(1.0, MAX_LATENCY_US as f64);
                hist.saturating_record(us as u64);
            }
            Outcome::Failed { .. } => *failed += 1,
            Outcome::Unknown { .. } => *unknown += 1,
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    groups
        .into_iter()
        .map(
            |((kind, quorum, strict), (h, failed, unknown))| LatencyStats {
                kind,
                quorum,
                strict,
                ok: h.len(),
                failed,
                unknown,
                latency_ms: (!h.is_empty()).then(|| Percentiles {
                    p50: ms(h.value_at_quantile(0.50)),
                    p90: ms(h.value_at_quantile(0.90)),
                    p99: ms(h.value_at_quantile(0.99)),
                    p999: ms(h.value_at_quantile(0.999)),
                    max: ms(h.max()),
                    mean: h.mean() / 1000.0,
                }),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::history::build::*;
    use dynakv_common::quorum::Quorum;

    fn history(ops: Vec<Op>) -> History {
        History::new(ops).unwrap()
    }

    fn stale(ops: Vec<Op>) -> StalenessReport {
        staleness(&history(ops), &DEFAULT_BIN_EDGES_MS).unwrap()
    }

    fn k_of(report: &StalenessReport) -> Vec<(u64, u64)> {
        report.k_staleness.iter().map(|c| (c.k, c.reads)).collect()
    }

    fn bin(report: &StalenessReport, from_ms: f64) -> &StalenessBin {
        report.bins.iter().find(|b| b.from_ms == from_ms).unwrap()
    }

    fn finals(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        entries
            .iter()
            .map(|(k, es)| (k.to_string(), es.iter().map(|e| e.to_string()).collect()))
            .collect()
    }

    /// Two sessions taking turns on one key, every read up to date.
    fn clean() -> Vec<Op> {
        vec![
            write(1, 0, "k", "c0-1", 0.0, 1.0),
            read(2, 0, "k", &["c0-1"], 2.0, 3.0),
            write(3, 1, "k", "c1-1", 4.0, 5.0),
            read(4, 0, "k", &["c1-1"], 6.0, 7.0),
            read(5, 1, "k", &["c1-1"], 6.5, 7.5),
            read(6, 1, "other", &[], 0.0, 1.0),
        ]
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let h = history(clean());
        let s = staleness(&h, &DEFAULT_BIN_EDGES_MS).unwrap();
        assert_eq!((s.reads_checked, s.reads_skipped, s.stale_reads), (3, 1, 0));
        assert_eq!(s.p_consistent, Some(1.0));
        assert_eq!(k_of(&s), [(0, 3)]);
        assert_eq!(bin(&s, 1.0).reads, 3); // t = 1, 1, 1.5
        assert_eq!(bin(&s, 1.0).p_consistent, Some(1.0));
        assert_eq!(bin(&s, 2.0).p_consistent, None);
        let sess = sessions(&h);
        assert_eq!((sess.ryw_checked, sess.ryw_violations), (3, 0));
        assert_eq!((sess.monotonic_checked, sess.monotonic_violations), (1, 0));
        assert!(sess.examples.is_empty());
    }

    #[test]
    fn a_stale_read_lands_in_its_bin_with_its_k() {
        let s = stale(vec![
            write(1, 0, "k", "a", 0.0, 1.0),
            write(2, 0, "k", "b", 2.0, 3.0),
            read(3, 1, "k", &["a"], 10.0, 11.0), // t = 7, missed b
            read(4, 1, "k", &[], 12.0, 13.0),    // not found, no delete: missed both
            read(5, 1, "k", &["b"], 20.0, 21.0), // t = 17, consistent
        ]);
        assert_eq!((s.reads_checked, s.stale_reads), (3, 2));
        assert_eq!(k_of(&s), [(0, 1), (1, 1), (2, 1)]);
        // t = 7 and t = 9 fall in [5, 10), t = 17 in [10, 20).
        let b5 = bin(&s, 5.0);
        assert_eq!((b5.reads, b5.stale, b5.p_consistent), (2, 2, Some(0.0)));
        let b10 = bin(&s, 10.0);
        assert_eq!((b10.reads, b10.stale, b10.p_consistent), (1, 0, Some(1.0)));
        assert_eq!(s.examples[0].read_id, 3);
        assert_eq!(s.examples[0].t_ms, 7.0);
        assert_eq!(s.examples[0].latest_value.as_deref(), Some("b"));
    }

    #[test]
    fn concurrent_writes_may_be_returned_either_way() {
        let writes = || {
            vec![
                write(1, 0, "k", "a", 0.0, 10.0),
                write(2, 1, "k", "b", 2.0, 8.0),
            ]
        };
        for value in ["a", "b"] {
            let mut ops = writes();
            ops.push(read(3, 2, "k", &[value], 11.0, 12.0));
            let s = stale(ops);
            assert_eq!((s.reads_checked, s.stale_reads), (1, 0), "{value}");
        }
    }

    #[test]
    fn a_read_with_siblings_is_consistent_and_counted() {
        let h = history(vec![
            write(1, 0, "k", "a", 0.0, 10.0),
            write(2, 1, "k", "b", 2.0, 8.0),
            read(3, 2, "k", &["a", "b"], 11.0, 12.0),
            read(4, 2, "k", &["b"], 13.0, 14.0),
            read(5, 2, "j", &[], 13.0, 14.0),
        ]);
        assert_eq!(staleness(&h, &[0.0]).unwrap().stale_reads, 0);
        let sib = siblings(&h);
        assert_eq!((sib.reads, sib.with_siblings, sib.max), (3, 1, 2));
        assert_eq!(sib.mean, Some(1.0));
        let hist: Vec<_> = sib
            .histogram
            .iter()
            .map(|c| (c.siblings, c.reads))
            .collect();
        assert_eq!(hist, [(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn overlapping_writes_are_judged_by_every_acknowledged_write() {
        // W* spans the others; X strictly precedes Y, so returning X alone misses Y.
        let s = stale(vec![
            write(1, 0, "k", "w", 0.0, 100.0),
            write(2, 1, "k", "x", 1.0, 2.0),
            write(3, 2, "k", "y", 3.0, 50.0),
            read(4, 3, "k", &["x"], 101.0, 102.0),
        ]);
        assert_eq!(k_of(&s), [(1, 1)]);
    }

    #[test]
    fn unacknowledged_writes_and_deletes_count_when_they_show_up() {
        let s = stale(vec![
            write(1, 0, "k", "a", 0.0, 1.0),
            unknown(write(2, 1, "k", "b", 2.0, 3.0)),
            failed(write(3, 2, "k", "c", 2.0, 3.0)),
            write(4, 0, "k", "d", 5.0, 6.0),
            read(5, 3, "k", &["b"], 10.0, 11.0),
            read(6, 3, "k", &["c"], 10.0, 11.0),
            read(7, 3, "k", &["zz"], 10.0, 11.0), // unidentified: older than everything
            op(8, 0, "k", OpKind::Delete, 12.0, 13.0),
            read(9, 3, "k", &[], 14.0, 15.0),
            read(10, 3, "k", &["d"], 16.0, 17.0),
        ]);
        assert_eq!(s.reads_checked, 5);
        assert_eq!(s.unidentified_values, 1);
        let stale_ids: Vec<u64> = s.examples.iter().map(|e| e.read_id).collect();
        assert_eq!(stale_ids, [7, 10]);
        assert_eq!(k_of(&s), [(0, 3), (1, 1), (2, 1)]);
    }

    #[test]
    fn bad_bin_edges_are_refused() {
        let h = history(clean());
        for edges in [&[][..], &[1.0, 1.0], &[2.0, 1.0], &[0.0, f64::NAN]] {
            let err = staleness(&h, edges).unwrap_err().to_string();
            assert!(err.contains("increasing order"), "{err}");
        }
        // Reads below the first edge are counted, not lost.
        assert_eq!(staleness(&h, &[100.0]).unwrap().unbinned, 3);
    }

    #[test]
    fn set_full_classifies_every_add() {
        let h = history(vec![
            add(1, 0, "s", "e1", 0.0, 1.0),
            add(2, 1, "s", "e2", 0.0, 1.0),
            add(3, 2, "s", "e3", 0.0, 1.0),
            add(4, 3, "s", "e4", 0.0, 1.0),
            unknown(add(5, 0, "s", "u1", 1.0, 2.0)),
            unknown(add(6, 1, "s", "u2", 1.0, 2.0)),
            failed(add(7, 2, "s", "f1", 1.0, 2.0)),
            read(8, 4, "s", &["e1", "e4"], 2.0, 3.0), // misses e2 after its ack
            read(9, 4, "s", &["e1", "e2", "e4", "zz"], 4.0, 5.0),
            add(10, 0, "t", "t1", 0.0, 1.0),
        ]);
        let r = sets(
            &h,
            &finals(&[("s", &["e1", "e2", "e3", "u1", "f1"]), ("other", &[])]),
        );
        assert_eq!((r.keys, r.attempted, r.acknowledged), (2, 7, 4));
        assert_eq!((r.stable, r.lost, r.never_read, r.stale), (1, 1, 1, 1));
        assert_eq!(r.lost_examples[0].element, "e4");
        assert_eq!(r.never_read_examples[0].element, "e3");
        assert_eq!(r.stale_examples[0].element, "e2");
        assert_eq!(r.stale_examples[0].last_missed_ms, Some(2.0));
        assert_eq!((r.unknown_survived, r.unknown_absent), (1, 1));
        assert_eq!((r.failed_survived, r.failed_absent), (1, 0));
        assert_eq!(r.unexpected_examples, ["s/zz"]);
        assert_eq!(
            (r.unchecked, r.keys_without_final_read.clone()),
            (1, vec!["t".to_string()])
        );
    }

    #[test]
    fn a_clean_set_run_loses_nothing() {
        let h = history(vec![
            add(1, 0, "s", "e1", 0.0, 1.0),
            add(2, 1, "s", "e2", 0.5, 1.5),
            read(3, 2, "s", &["e1", "e2"], 2.0, 3.0),
        ]);
        let r = sets(&h, &finals(&[("s", &["e1", "e2"])]));
        assert_eq!((r.acknowledged, r.stable), (2, 2));
        assert_eq!(r.lost + r.never_read + r.stale + r.unexpected, 0);
    }

    #[test]
    fn read_your_writes_violation() {
        let h = history(vec![
            write(1, 0, "k", "c0-1", 0.0, 1.0),
            write(2, 1, "k", "c1-1", 2.0, 3.0),
            read(3, 1, "k", &["c0-1"], 4.0, 5.0), // session 1 misses its own write
            read(4, 0, "k", &["c1-1"], 4.0, 5.0), // newer than its own: fine
        ]);
        let r = sessions(&h);
        assert_eq!((r.ryw_checked, r.ryw_violations), (2, 1));
        assert_eq!(r.monotonic_violations, 0);
        let v = &r.examples[0];
        assert_eq!(
            (v.guarantee, v.session, v.read_id),
            (Guarantee::ReadYourWrites, 1, 3)
        );
        assert_eq!(v.expected_value.as_deref(), Some("c1-1"));
    }

    #[test]
    fn monotonic_read_violation() {
        let h = history(vec![
            write(1, 9, "k", "a", 0.0, 1.0),
            write(2, 9, "k", "b", 2.0, 3.0),
            read(3, 1, "k", &["b"], 4.0, 5.0),
            read(4, 1, "k", &["a"], 6.0, 7.0), // back in time
            read(5, 1, "k", &[], 8.0, 9.0),    // not found: also back in time
            read(6, 2, "k", &["a"], 6.0, 7.0), // another session: no bar yet
        ]);
        let r = sessions(&h);
        assert_eq!((r.monotonic_checked, r.monotonic_violations), (2, 2));
        assert_eq!(r.ryw_checked, 0);
        let ids: Vec<_> = r
            .examples
            .iter()
            .map(|v| (v.guarantee, v.read_id))
            .collect();
        assert_eq!(
            ids,
            [
                (Guarantee::MonotonicReads, 4),
                (Guarantee::MonotonicReads, 5)
            ]
        );
        assert_eq!(r.examples[0].expected_write_id, 2);
    }

    #[test]
    fn latency_is_grouped_by_kind_and_quorum() {
        let mut ops = Vec::new();
        for i in 0..100u64 {
            let t = i as f64 * 100.0;
            ops.push(read(i, 0, "k", &[], t, t + 1.0 + i as f64 / 100.0));
        }
        ops.push(Op {
            quorum: Quorum::All,
            strict: true,
            ..write(200, 0, "k", "a", 0.0, 5.0)
        });
        ops.push(failed(write(201, 0, "k", "b", 0.0, 5.0)));
        ops.push(unknown(write(202, 0, "k", "c", 0.0, 5.0)));
        let stats = latency(&history(ops));
        let groups: Vec<_> = stats
            .iter()
            .map(|s| {
                (
                    s.kind,
                    s.quorum.as_str(),
                    s.strict,
                    s.ok,
                    s.failed,
                    s.unknown,
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                (OpKind::Read, "one", false, 100, 0, 0),
                (OpKind::Write, "all", true, 1, 0, 0),
                (OpKind::Write, "one", false, 0, 1, 1),
            ]
        );
        let p = stats[0].latency_ms.as_ref().unwrap();
        // Latencies 1.00, 1.01, ..., 1.99 ms.
        assert!((p.p50 - 1.49).abs() < 0.005, "{p:?}");
        assert!((p.max - 1.99).abs() < 0.005, "{p:?}");
        assert!(stats[2].latency_ms.is_none());
        assert!(serde_json::to_string(&stats)
            .unwrap()
            .contains(r#""kind":"read""#));
    }
}
