//! The `dynakv lab` and `dynakv quorum` commands: argument parsing and printing around
//! the lab library (`crate::lab`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;
use dynakv_common::dist::Dist;
use dynakv_common::quorum::properties;
use rand::SeedableRng;
use serde_json::json;

use crate::lab::pbs::{self, Model};
use crate::lab::runner::RunOptions;
use crate::lab::scenario::{self, Scenario};

/// Monte Carlo trials of `dynakv lab predict` unless told otherwise.
const DEFAULT_TRIALS: usize = 200_000;

#[derive(Subcommand)]
pub enum LabCmd {
    /// The built-in scenarios, one line each.
    List,
    /// Run a built-in scenario (by name) or your own (FILE.toml) on a local cluster of
    /// its own, and write a report directory (report.md, results.json, histories, charts).
    Run {
        /// A name from `dynakv lab list`, or the path of a scenario file.
        scenario: String,
        /// Multiply durations, operation counts and fault times (0.2 = a quick run).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Seed of every random choice (workload, injected delays and loss), to repeat a run.
        #[arg(long)]
        seed: Option<u64>,
        /// Report directory [default: ./lab-reports/NAME-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The dynakv-node binary [default: $DYNAKV_NODE_BIN, next to dynakv, or on PATH].
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Predict P(consistent read) t ms after a write's acknowledgement with the WARS
    /// model of Bailis et al. ("Probabilistically Bounded Staleness", VLDB 2012).
    /// Delays are distributions in ms: 5, uniform(1,10), exp(0.1) (rate per ms),
    /// pareto(1,1.5), 0.9*exp(1) + 0.1*pareto(10,1.5).
    Predict {
        /// Replicas per key.
        #[arg(long, default_value_t = 3)]
        n: usize,
        /// Replicas a read waits for.
        #[arg(long, default_value_t = 1)]
        r: usize,
        /// Replicas a write waits for.
        #[arg(long, default_value_t = 1)]
        w: usize,
        /// W: the write request's delay to each replica.
        #[arg(long, default_value = "0")]
        w_delay: Dist,
        /// A: the acknowledgement's delay back.
        #[arg(long, default_value = "0")]
        a_delay: Dist,
        /// R: the read request's delay to each replica.
        #[arg(long, default_value = "0")]
        r_delay: Dist,
        /// S: the read response's delay back.
        #[arg(long, default_value = "0")]
        s_delay: Dist,
        /// Times after the acknowledgement, ms (comma-separated).
        #[arg(
            long = "t",
            value_delimiter = ',',
            default_value = "0,1,2,5,10,20,50,100"
        )]
        t: Vec<f64>,
        /// Monte Carlo trials.
        #[arg(long, default_value_t = DEFAULT_TRIALS)]
        trials: usize,
        /// Seed of the trials.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// The quorum table of `n` replicas, as text.
pub fn quorum_table(n: usize) -> String {
    let mut out = format!(
        "N={n}: {:>2} {:>2}  {:<22} {:<20} {:>14} {:>15}\n",
        "R", "W", "read sees last write", "writes overlap", "reads survive", "writes survive"
    );
    for r in 1..=n {
        for w in 1..=n {
            let p = properties(n, r, w);
            out.push_str(&format!(
                "     {r:>2} {w:>2}  {:<22} {:<20} {:>14} {:>15}\n",
                if p.read_write_overlap {
                    "yes (R+W>N)"
                } else {
                    "no"
                },
                if p.write_write_overlap {
                    "yes (2W>N)"
                } else {
                    "no"
                },
                format!("{} down", p.read_tolerates),
                format!("{} down", p.write_tolerates),
            ));
        }
    }
    out
}

fn quorum_json(n: usize) -> serde_json::Value {
    let rows: Vec<_> = (1..=n)
        .flat_map(|r| (1..=n).map(move |w| (r, w)))
        .map(|(r, w)| {
            let p = properties(n, r, w);
            json!({"n": n, "r": r, "w": w, "read_write_overlap": p.read_write_overlap,
                   "write_write_overlap": p.write_write_overlap,
                   "read_tolerates": p.read_tolerates, "write_tolerates": p.write_tolerates})
        })
        .collect();
    json!(rows)
}

/// `dynakv quorum N`.
pub fn quorum(n: usize, json_out: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if n == 0 || n > 64 {
        bail!("N must be between 1 and 64");
    }
    if json_out {
        writeln!(out, "{}", quorum_json(n))?;
    } else {
        write!(out, "{}", quorum_table(n))?;
    }
    Ok(())
}

/// Runs a `dynakv lab` command.
pub async fn run(cmd: LabCmd, json_out: bool, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        LabCmd::List => {
            for b in scenario::BUILTINS {
                writeln!(out, "{:<20} {}", b.name, b.summary)?;
            }
            writeln!(
                out,
                "{:<20} for N=1..7, every R/W pair: overlap and failures tolerated (no cluster; also `dynakv quorum N`)",
                scenario::QUORUM_TABLE
            )?;
        }
        LabCmd::Predict {
            n,
            r,
            w,
            w_delay,
            a_delay,
            r_delay,
            s_delay,
            t,
            trials,
            seed,
        } => {
            let model = Model {
                n,
                r,
                w,
                w_delay,
                a_delay,
                r_delay,
                s_delay,
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let points = pbs::predict(&model, &t, trials, &mut rng)?;
            if json_out {
                let rows: Vec<_> = points
                    .iter()
                    .map(|(t, p)| json!({"t_ms": t, "p_consistent": p}))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    json!({"n": n, "r": r, "w": w, "trials": trials, "points": rows})
                )?;
            } else {
                writeln!(
                    out,
                    "WARS model, N={n} R={r} W={w}, W~{} A~{} R~{} S~{} ms, {trials} trials",
                    model.w_delay, model.a_delay, model.r_delay, model.s_delay
                )?;
                writeln!(out, "{:>10}  P(consistent)", "t (ms)")?;
                for (t, p) in points {
                    writeln!(out, "{t:>10}  {p:.4}")?;
                }
                let closed = pbs::p_consistent_no_propagation(n, r, w)?;
                writeln!(
                    out,
                    "(with no propagation beyond the W acknowledged replicas: {closed:.4}; R+W>N gives 1)"
                )?;
            }
        }
        LabCmd::Run {
            scenario,
            scale,
            seed,
            out: dir,
            node_bin,
        } => {
            let seed = seed.unwrap_or_else(rand::random);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if scenario == scenario::QUORUM_TABLE {
                let dir =
                    dir.unwrap_or_else(|| PathBuf::from(format!("lab-reports/quorum-table-{now}")));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let mut md = String::from("# dynakv lab: quorum-table\n\n**Question.** For N replicas, which R and W make a read see the latest write, make two writes overlap, and how many replicas may be down?\n\n");
                for n in 1..=7 {
                    md.push_str(&format!("```\n{}```\n\n", quorum_table(n)));
                }
                md.push_str("## What it means\n\nA read quorum and a write quorum always share a replica when R+W>N, so a read sees the latest acknowledged write (with strict quorums); two writes always share one when 2W>N. Each step of R or W up buys overlap and costs tolerance: reads survive N−R replicas down, writes N−W.\n");
                std::fs::write(dir.join("report.md"), md)?;
                let all: Vec<_> = (1..=7).map(quorum_json).collect();
                std::fs::write(
                    dir.join("results.json"),
                    serde_json::to_string_pretty(&all)?,
                )?;
                write!(out, "{}", quorum_table(3))?;
                writeln!(out, "report: {}", dir.join("report.md").display())?;
                return Ok(());
            }
            let (text, name) = match scenario::builtin(&scenario) {
                Some(b) => (b.toml.to_string(), b.name.to_string()),
                None => {
                    let text = std::fs::read_to_string(&scenario).with_context(|| {
                        format!("{scenario} is neither a built-in scenario (see `dynakv lab list`) nor a readable file")
                    })?;
                    (text, String::new())
                }
            };
            let parsed = Scenario::parse(&text)?;
            let name = if name.is_empty() {
                parsed.name.clone()
            } else {
                name
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(format!("lab-reports/{name}-{now}")));
            let variants = parsed.resolve(scale)?.len();
            let bar = (std::io::stderr().is_terminal() && !json_out).then(|| {
                let bar = indicatif::ProgressBar::new(variants as u64 * 100);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let names: Vec<String> = parsed
                .resolve(scale)?
                .into_iter()
                .map(|r| r.variant)
                .collect();
            let progress_bar = bar.clone();
            let progress: crate::lab::runner::Progress = Arc::new(move |variant, frac, ops| {
                if let Some(b) = &progress_bar {
                    let i = names.iter().position(|n| n == variant).unwrap_or(0) as u64;
                    b.set_position(i * 100 + (frac * 100.0) as u64);
                    b.set_message(format!("{variant}: {ops} operations"));
                }
            });
            let opts = RunOptions {
                node_bin: crate::lab::cluster::node_binary(node_bin.as_deref()),
                seed,
                scale,
                progress: Some(progress),
            };
            let (report, _charts) = crate::lab::run_and_report(&parsed, &opts, &dir).await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if json_out {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                writeln!(out, "{}: {}", report.scenario, report.question)?;
                for r in &report.runs {
                    writeln!(
                        out,
                        "  {:<28} stale {:>6}  RYW violations {:>4}  lost {:>6}  reads/s {:>7.0}  writes/s {:>6.0}",
                        r.variant,
                        r.staleness
                            .p_consistent
                            .map(|p| format!("{:.1}%", (1.0 - p) * 100.0))
                            .unwrap_or_else(|| "–".into()),
                        r.sessions.ryw_violations,
                        r.sets.as_ref().map(|s| s.lost.to_string()).unwrap_or_else(|| "–".into()),
                        r.reads_per_s,
                        r.writes_per_s
                    )?;
                }
                writeln!(out, "\n{}\n", report.conclusion)?;
                writeln!(out, "report: {}", dir.join("report.md").display())?;
            }
        }
    }
    Ok(())
}
