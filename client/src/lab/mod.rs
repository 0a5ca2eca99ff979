//! The consistency lab (`dynakv lab`): tunable-consistency experiments a user runs on a
//! local cluster of its own, and the pure core that judges and predicts them
//! (DESIGN.md §5).
//!
//! The pure core — no I/O, no clock, RNGs passed in, so every verdict is reproducible
//! from a recorded history and a seed:
//! - [`history`]: the operation history a run records (JSON lines), validated.
//! - [`check`]: checkers over a history — staleness against time since commit (PBS
//!   t-visibility and k-staleness), lost writes in a set workload (Jepsen's set-full),
//!   session guarantees (read-your-writes, monotonic reads), siblings, latency.
//! - [`pbs`]: the WARS Monte Carlo model and closed forms of Bailis et al.,
//!   "Probabilistically Bounded Staleness for Practical Partial Quorums" (VLDB 2012).
//! - [`scenario`]: scenario files (cluster, workload, fault timeline, variants) and the
//!   built-in scenarios.
//! - [`conclude`]: what a run's numbers mean, in sentences.
//!
//! The run itself:
//! - [`cluster`]: real `dynakv-node` processes the lab starts, pauses, kills, restarts
//!   and shapes with the nodes' fault layer.
//! - [`workload`]: client sessions that record every operation.
//! - [`runner`]: plays the timeline, heals, measures convergence, runs the checkers.
//! - [`report`] and [`chart`]: `report.md`, `results.json`, histories and SVG charts.

pub mod chart;
pub mod check;
pub mod cluster;
pub mod conclude;
pub mod history;
pub mod pbs;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod workload;

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

/// Runs a scenario end to end and writes its report directory; returns the report and
/// the chart files written.
pub async fn run_and_report(
    scenario: &scenario::Scenario,
    opts: &runner::RunOptions,
    out: &std::path::Path,
) -> Result<(report::LabReport, Vec<String>), LabError> {
    std::fs::create_dir_all(out).map_err(|e| LabError::InvalidArgument {
        what: "report directory",
        reason: format!("{}: {e}", out.display()),
    })?;
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let runs = runner::run(scenario, opts, out).await?;
    let report = report::LabReport {
        scenario: scenario.name.clone(),
        question: scenario.question.clone(),
        seed: opts.seed,
        scale: opts.scale,
        started_unix_s,
        conclusion: conclude::conclude(&scenario.name, &runs),
        runs,
        scenario_toml: toml::to_string(scenario).unwrap_or_default(),
    };
    let charts = report::write(out, scenario, &report)?;
    Ok((report, charts))
}
