//! The report directory of a lab run: `report.md` (what was run, a results table, what
//! it means, the charts), `results.json` (everything measured), one history per variant
//! (JSON lines) and SVG charts where a picture says it better than a table: staleness
//! against time since the write (with the model's prediction when there is one),
//! latency per variant, lost writes, convergence time.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::chart::{self, BarChart, BarGroup, LineChart, LineStyle, Series};
use super::history::OpKind;
use super::runner::RunResult;
use super::scenario::{FaultKind, Scenario, WorkloadKind};
use super::LabError;

/// Everything a run produced, as written to `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    pub scenario: String,
    pub question: String,
    pub seed: u64,
    pub scale: f64,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    pub runs: Vec<RunResult>,
    /// Two or three sentences on what the results mean.
    pub conclusion: String,
    /// The scenario as run (TOML).
    pub scenario_toml: String,
}

fn err(what: &'static str, e: impl ToString) -> LabError {
    LabError::InvalidArgument {
        what,
        reason: e.to_string(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|p| format!("{:.1}%", p * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// Latency percentiles (p50, p99) of the acknowledged operations of `kind` in a run.
fn latency(run: &RunResult, kinds: &[OpKind]) -> (Option<f64>, Option<f64>) {
    let mut best: Option<(u64, f64, f64)> = None;
    for l in run.latency.iter().filter(|l| kinds.contains(&l.kind)) {
        if let Some(p) = &l.latency_ms {
            if best.is_none_or(|(n, _, _)| l.ok > n) {
                best = Some((l.ok, p.p50, p.p99));
            }
        }
    }
    (best.map(|b| b.1), best.map(|b| b.2))
}

const WRITES: &[OpKind] = &[OpKind::Write, OpKind::SetAdd];
const READS: &[OpKind] = &[OpKind::Read];

/// Writes the report directory.
pub fn write(dir: &Path, scenario: &Scenario, report: &LabReport) -> Result<Vec<String>, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| err("report directory", e))?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report).map_err(|e| err("results.json", e))?,
    )
    .map_err(|e| err("results.json", e))?;
    let charts = charts(dir, scenario, &report.runs)?;
    std::fs::write(dir.join("report.md"), markdown(scenario, report, &charts))
        .map_err(|e| err("report.md", e))?;
    Ok(charts.into_iter().map(|(f, _)| f).collect())
}

/// Draws the charts that apply; returns (file, caption) for each.
fn charts(
    dir: &Path,
    scenario: &Scenario,
    runs: &[RunResult],
) -> Result<Vec<(String, String)>, LabError> {
    let mut out = Vec::new();
    // Staleness against time since the write.
    let measured: Vec<&RunResult> = runs.iter().filter(|r| !r.visibility.is_empty()).collect();
    if !measured.is_empty() && scenario.workload.kind != WorkloadKind::Set {
        let mut series = Vec::new();
        let mut max_t: f64 = 0.0;
        for r in &measured {
            let points: Vec<(f64, f64)> =
                r.visibility.iter().map(|v| (v.t_ms, v.measured)).collect();
            max_t = points.iter().fold(max_t, |m, p| m.max(p.0));
            series.push(Series {
                name: format!("{} (measured)", r.variant),
                points,
                style: LineStyle::Solid,
            });
            let predicted: Vec<(f64, f64)> = r
                .visibility
                .iter()
                .filter_map(|v| v.predicted.map(|p| (v.t_ms, p)))
                .collect();
            if !predicted.is_empty() {
                series.push(Series {
                    name: format!("{} (WARS model)", r.variant),
                    points: predicted,
                    style: LineStyle::Dashed,
                });
            }
            let shifted: Vec<(f64, f64)> = r
                .visibility
                .iter()
                .filter_map(|v| v.predicted_with_overhead.map(|p| (v.t_ms, p)))
                .collect();
            if !shifted.is_empty() {
                series.push(Series {
                    name: format!("{} (model, t + client overhead)", r.variant),
                    points: shifted,
                    style: LineStyle::Dashed,
                });
            }
        }
        let file = "staleness.svg".to_string();
        chart::line_chart(
            &dir.join(&file),
            &LineChart {
                title: format!(
                    "{}: P(read sees the latest acknowledged write)",
                    scenario.name
                ),
                x_label: "time since the write was acknowledged (ms)".into(),
                y_label: "P(consistent read)".into(),
                series,
                x_log: max_t > 200.0,
                y_range: Some((0.0, 1.0)),
            },
        )
        .map_err(|e| err("chart", e))?;
        out.push((file, "Probability that a read returns the latest acknowledged write, against the time since that write was acknowledged.".into()));
    }
    // Latency per variant.
    let groups: Vec<BarGroup> = runs
        .iter()
        .map(|r| {
            let (w50, w99) = latency(r, WRITES);
            let (r50, r99) = latency(r, READS);
            BarGroup {
                label: r.variant.clone(),
                values: vec![
                    w50.unwrap_or(f64::NAN),
                    w99.unwrap_or(f64::NAN),
                    r50.unwrap_or(f64::NAN),
                    r99.unwrap_or(f64::NAN),
                ],
            }
        })
        .collect();
    if runs.iter().any(|r| !r.latency.is_empty()) {
        let file = "latency.svg".to_string();
        chart::bar_chart(
            &dir.join(&file),
            &BarChart {
                title: format!("{}: latency per variant", scenario.name),
                y_label: "latency (ms)".into(),
                groups,
                series_names: vec![
                    "write p50".into(),
                    "write p99".into(),
                    "read p50".into(),
                    "read p99".into(),
                ],
            },
        )
        .map_err(|e| err("chart", e))?;
        out.push((
            file,
            "Latency of acknowledged operations, per variant.".into(),
        ));
    }
    // Lost writes per variant (set workload).
    if runs.iter().any(|r| r.sets.is_some()) {
        let groups = runs
            .iter()
            .map(|r| {
                let s = r.sets.as_ref();
                BarGroup {
                    label: format!("{} ({})", r.variant, r.conflict_policy),
                    values: vec![
                        s.map(|s| s.lost as f64).unwrap_or(f64::NAN),
                        s.map(|s| s.acknowledged as f64).unwrap_or(f64::NAN),
                    ],
                }
            })
            .collect();
        let file = "lost-writes.svg".to_string();
        chart::bar_chart(
            &dir.join(&file),
            &BarChart {
                title: format!("{}: acknowledged adds lost", scenario.name),
                y_label: "adds".into(),
                groups,
                series_names: vec!["lost".into(), "acknowledged".into()],
            },
        )
        .map_err(|e| err("chart", e))?;
        out.push((file, "Acknowledged set additions missing from the final, converged read, per conflict policy.".into()));
    }
    // Convergence time.
    if runs.iter().filter(|r| r.convergence_ms.is_some()).count() > 1
        && scenario
            .faults
            .iter()
            .any(|f| f.kind == FaultKind::Kill || f.kind == FaultKind::Partition)
    {
        let groups = runs
            .iter()
            .map(|r| BarGroup {
                label: match r.converged {
                    Some(false) => format!("{} (not converged)", r.variant),
                    _ => r.variant.clone(),
                },
                values: vec![r.convergence_ms.map(|m| m / 1000.0).unwrap_or(f64::NAN)],
            })
            .collect();
        let file = "convergence.svg".to_string();
        chart::bar_chart(
            &dir.join(&file),
            &BarChart {
                title: format!(
                    "{}: time until every replica agrees after the heal",
                    scenario.name
                ),
                y_label: "seconds".into(),
                groups,
                series_names: vec!["time to converge".into()],
            },
        )
        .map_err(|e| err("chart", e))?;
        out.push((
            file,
            "Time from the heal until every primary replica held the same state of every key."
                .into(),
        ));
    }
    Ok(out)
}

/// The name a scenario file uses for a value (`register`, `random`).
fn name_of(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn describe_faults(s: &Scenario) -> String {
    if s.faults.is_empty() {
        return "none".into();
    }
    let mut parts = Vec::new();
    for f in &s.faults {
        let when = match f.until_s {
            Some(u) => format!("{:.1}–{:.1} s", f.at_s, u),
            None => format!("from {:.1} s", f.at_s),
        };
        let what = match f.kind {
            FaultKind::Delay => {
                let mut d = Vec::new();
                for (n, v) in [("W", &f.w), ("A", &f.a), ("R", &f.r), ("S", &f.s)] {
                    if let Some(v) = v {
                        d.push(format!("{n}~{v}"));
                    }
                }
                let link = link(f);
                format!(
                    "delay {} ms{link}{}",
                    d.join(", "),
                    if f.local {
                        ", coordinators' own replica operations too"
                    } else {
                        ""
                    }
                )
            }
            FaultKind::Loss => format!("loss {:.0}%{}", f.rate * 100.0, link(f)),
            FaultKind::Partition => format!(
                "partition {} {} {}",
                f.side_a.join(","),
                if f.one_way { "→" } else { "|" },
                f.side_b.join(",")
            ),
            FaultKind::Pause => format!("pause {}", f.node.as_deref().unwrap_or("?")),
            FaultKind::Kill => format!("kill -9 {}", f.node.as_deref().unwrap_or("?")),
        };
        parts.push(format!("{what} ({when})"));
    }
    parts.join("; ")
}

fn link(f: &super::scenario::FaultEvent) -> String {
    match (&f.from, &f.to) {
        (None, None) => " on every link".into(),
        (a, b) => format!(
            " on {} → {}",
            a.as_deref().unwrap_or("any"),
            b.as_deref().unwrap_or("any")
        ),
    }
}

fn markdown(scenario: &Scenario, report: &LabReport, charts: &[(String, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# dynakv lab: {}\n", report.scenario);
    let _ = writeln!(md, "**Question.** {}\n", report.question);
    let _ = writeln!(md, "## What was run\n");
    let w = &scenario.workload;
    let c = &scenario.cluster;
    let _ = writeln!(
        md,
        "- cluster: {} `dynakv-node` processes on 127.0.0.1, N={}, conflict policy {}{}",
        c.nodes,
        c.replicas,
        c.conflict_policy,
        if c.node.is_empty() {
            String::new()
        } else {
            format!(
                ", node settings `{}`",
                toml::to_string(&c.node)
                    .unwrap_or_default()
                    .trim()
                    .replace('\n', ", ")
            )
        }
    );
    let _ =
        writeln!(
        md,
        "- workload: {}, {} writer and {} reader sessions, {} keys, {} for {:.1} s, routing {}{}",
        name_of(&w.kind),
        w.writers,
        w.readers,
        w.keys,
        if w.rate > 0.0 { format!("{} ops/s per session", w.rate) } else { "back to back".into() },
        w.duration_s,
        name_of(&w.route),
        if w.read_own_writes { ", each write followed by a read of its key" } else { "" }
    );
    let _ = writeln!(md, "- faults: {}", describe_faults(scenario));
    let _ = writeln!(md, "- seed {}, scale {}", report.seed, report.scale);
    let _ = writeln!(
        md,
        "- variants: {}\n",
        report
            .runs
            .iter()
            .map(|r| format!("`{}`", r.variant))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(md, "Faults of a variant may differ from the base ones; `results.json` has every number and `history-*.jsonl` every operation.\n");

    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| variant | R | W | reads/s | writes/s | failed | stale reads | P(consistent) | RYW violations | monotonic violations | lost adds | write p50 / p99 ms | read p50 / p99 ms | converged after |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &report.runs {
        let (w50, w99) = latency(r, WRITES);
        let (r50, r99) = latency(r, READS);
        let strict = |s: bool, q: &str| {
            if s {
                format!("{q} strict")
            } else {
                q.to_string()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} / {} | {} | {} / {} | {} / {} | {} | {} / {} | {} / {} | {} |",
            r.variant,
            strict(r.strict_reads, &r.r),
            strict(r.strict_writes, &r.w),
            r.reads_per_s,
            r.writes_per_s,
            r.failed + r.unknown,
            r.staleness.stale_reads,
            r.staleness.reads_checked,
            pct(r.staleness.p_consistent),
            r.sessions.ryw_violations,
            r.sessions.ryw_checked,
            r.sessions.monotonic_violations,
            r.sessions.monotonic_checked,
            r.sets.as_ref().map(|s| format!("{} / {}", s.lost, s.acknowledged)).unwrap_or_else(|| "–".into()),
            ms(w50),
            ms(w99),
            ms(r50),
            ms(r99),
            match (r.convergence_ms, r.converged) {
                (Some(m), Some(true)) => format!("{:.1} s", m / 1000.0),
                (Some(m), Some(false)) => format!("not within {:.0} s", m / 1000.0),
                _ => "–".into(),
            },
        );
    }
    let _ = writeln!(md);
    for r in &report.runs {
        if let Some(c) = &r.crash {
            let _ = writeln!(
                md,
                "- `{}`: {} writes acknowledged and their coordinator killed with -9 at once: {} were on no other replica at that moment (lost if that disk had died too); {} missing after it restarted.",
                r.variant, c.acknowledged, c.only_on_coordinator, c.lost_after_restart
            );
        }
    }
    if report.runs.iter().any(|r| r.crash.is_some()) {
        let _ = writeln!(md);
    }
    let with_model: Vec<&RunResult> = report
        .runs
        .iter()
        .filter(|r| !r.prediction.is_empty())
        .collect();
    if !with_model.is_empty() {
        let _ = writeln!(
            md,
            "### t-visibility: measured and predicted (WARS model, Bailis et al. 2012)\n"
        );
        let _ = writeln!(
            md,
            "| variant | t (ms, mean of the bin) | reads | measured P(consistent) | predicted at t | predicted at t + client overhead |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        let p3 = |p: Option<f64>| p.map(|p| format!("{p:.3}")).unwrap_or_else(|| "–".into());
        for r in &with_model {
            for v in &r.visibility {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {} | {:.3} | {} | {} |",
                    r.variant,
                    v.t_ms,
                    v.reads,
                    v.measured,
                    p3(v.predicted),
                    p3(v.predicted_with_overhead)
                );
            }
        }
        let _ = writeln!(md);
        for r in &with_model {
            if let Some(o) = r.client_overhead_ms {
                let _ = writeln!(
                    md,
                    "`{}`: a measured read took {o:.2} ms longer (median) than the model's wait for R answers — the client's hops to and from the coordinator and their processing, which the model does not have. A read that starts t ms after the client saw the acknowledgement reaches the replicas about that much later after the commit; the last column evaluates the model there.\n",
                    r.variant
                );
            }
        }
    }
    let _ = writeln!(md, "## What it means\n\n{}\n", report.conclusion);
    if !charts.is_empty() {
        let _ = writeln!(md, "## Charts\n");
        for (file, caption) in charts {
            let _ = writeln!(md, "![{caption}]({file})\n\n{caption}\n");
        }
    }
    md
}
