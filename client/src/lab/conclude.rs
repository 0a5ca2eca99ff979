//! What a run's numbers mean, in two or three sentences: one reading per built-in
//! scenario (each answers one question), and a generic summary for a user's scenario.

use super::check::SetReport;
use super::history::OpKind;
use super::runner::RunResult;

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{:.1}%", p * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn stale_share(r: &RunResult) -> Option<f64> {
    r.staleness.p_consistent.map(|p| 1.0 - p)
}

/// P(stale) of the reads whose t (time since the write) is below / from `split_ms`.
fn stale_split(r: &RunResult, split_ms: f64) -> (Option<f64>, Option<f64>) {
    let (mut a, mut sa, mut b, mut sb) = (0u64, 0u64, 0u64, 0u64);
    for bin in &r.staleness.bins {
        if bin.to_ms.is_some_and(|t| t <= split_ms) {
            a += bin.reads;
            sa += bin.stale;
        } else if bin.from_ms >= split_ms {
            b += bin.reads;
            sb += bin.stale;
        }
    }
    let ratio = |s: u64, n: u64| (n > 0).then(|| s as f64 / n as f64);
    (ratio(sa, a), ratio(sb, b))
}

/// One phrase per run of the set workload (runs without a set report have none).
fn per_set_run(
    runs: &[RunResult],
    phrase: impl Fn(&RunResult, &SetReport) -> String,
) -> Vec<String> {
    runs.iter()
        .filter_map(|r| r.sets.as_ref().map(|s| phrase(r, s)))
        .collect()
}

fn write_latency(r: &RunResult) -> (f64, f64) {
    r.latency
        .iter()
        .filter(|l| matches!(l.kind, OpKind::Write | OpKind::SetAdd))
        .filter_map(|l| l.latency_ms.as_ref())
        .map(|p| (p.p50, p.p99))
        .next()
        .unwrap_or((f64::NAN, f64::NAN))
}

/// The conclusion of a run of scenario `name`.
pub fn conclude(name: &str, runs: &[RunResult]) -> String {
    match name {
        "read-heavy-lag" => {
            let parts: Vec<String> = runs
                .iter()
                .map(|r| {
                    let (early, late) = stale_split(r, 50.0);
                    format!(
                        "{}: {} of reads stale ({} within 50 ms of the write, {} after), {:.0} reads/s",
                        r.variant,
                        pct(stale_share(r)),
                        pct(early),
                        pct(late),
                        r.reads_per_s
                    )
                })
                .collect();
            format!(
                "{}. With W=1 and replicas 50 ms behind, a read served by a lagging replica misses the write until the lag has passed, so staleness is concentrated in the first 50 ms and falls to almost nothing after; asking more replicas (R) makes stale answers rarer (R+W>N makes them impossible) but each read waits for more answers, which costs throughput.",
                parts.join("; ")
            )
        }
        "sync-vs-async" => {
            let lat: Vec<String> = runs
                .iter()
                .map(|r| {
                    let (p50, p99) = write_latency(r);
                    format!("{}: p50 {p50:.2} ms, p99 {p99:.2} ms", r.variant)
                })
                .collect();
            let crash: Vec<String> = runs
                .iter()
                .filter_map(|r| {
                    r.crash.as_ref().map(|c| {
                        format!(
                            "{}: {} of {} on no other replica",
                            r.variant, c.only_on_coordinator, c.acknowledged
                        )
                    })
                })
                .collect();
            format!(
                "Write latency grows with W because each write waits for W replicas' fsync'd acknowledgements ({}). When the coordinator is killed right after acknowledging, a W=1 write may exist only on its disk ({}): it survives the restart, but losing that one disk would lose an acknowledged write; W>=2 always leaves a second copy.",
                lat.join("; "),
                crash.join("; ")
            )
        }
        "read-your-writes" => {
            let parts: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{}: {} of {} reads after an own write missed it",
                        r.variant, r.sessions.ryw_violations, r.sessions.ryw_checked
                    )
                })
                .collect();
            format!(
                "{}. Strict quorums with R+W>N always overlap the write's replicas, so a session reads its own writes; R=W=1 reads from whichever replica answers first, which may not have the write yet; and under a sloppy quorum a write acknowledged by fallbacks on one side of a partition is invisible to a quorum read on the other side — R+W>N alone does not promise read-your-writes.",
                parts.join("; ")
            )
        }
        "partition-siblings" => {
            let parts = per_set_run(runs, |r, s| {
                format!(
                    "{} ({}): {} of {} acknowledged adds lost",
                    r.variant, r.conflict_policy, s.lost, s.acknowledged
                )
            });
            format!(
                "{}. With dotted version vectors, concurrent read-modify-writes on both sides of the partition become siblings and the next reader merges them, so every acknowledged add survives; last-writer-wins keeps one value per key by timestamp and silently drops the concurrent ones.",
                parts.join("; ")
            )
        }
        "crash-restart" => {
            let parts = per_set_run(runs, |r, s| {
                format!(
                    "{}: {} of {} acknowledged adds lost; {} adds got no answer (cut by a kill or timed out), of which {} were stored anyway",
                    r.variant,
                    s.lost,
                    s.acknowledged,
                    s.unknown_survived + s.unknown_absent,
                    s.unknown_survived
                )
            });
            let lost = runs
                .iter()
                .any(|r| r.sets.as_ref().is_some_and(|s| s.lost > 0));
            let why = if !lost {
                "A replica acknowledges a write only once it is in its journal (handed to the operating system, and with durability = \"fsync\" on the disk), so kill -9 of the process, even of every node at once, cannot take an acknowledged add: the restarted node replays its journal, and hints, read repair and anti-entropy bring it the writes it missed while down."
            } else {
                "Acknowledged adds went missing: a store that acknowledges a write only once it is in its journal must not lose it to kill -9, so this is a bug (the history files name the adds)."
            };
            format!(
                "{}. {why} An add with no answer may or may not have been stored, and the client must not assume either. The fsync guards against losing the machine, which a kill does not show; W decides how many disks hold a write at the ack, which matters when a disk is lost (see sync-vs-async).",
                parts.join("; ")
            )
        }
        "anti-entropy" => {
            let parts: Vec<String> = runs
                .iter()
                .map(|r| match (r.convergence_ms, r.converged) {
                    (Some(m), Some(true)) => format!(
                        "{}: converged {:.1} s after the heal",
                        r.variant,
                        m / 1000.0
                    ),
                    (Some(m), _) => {
                        format!("{}: not converged within {:.0} s", r.variant, m / 1000.0)
                    }
                    _ => format!("{}: not measured", r.variant),
                })
                .collect();
            format!(
                "{}. With hints and read repair off, only anti-entropy brings the returning replica the writes it missed: each round compares hash trees and repairs the differing keys, so the time to converge follows the interval between rounds, and without anti-entropy the replica stays behind until its keys are read or rewritten.",
                parts.join("; ")
            )
        }
        "pbs-synthetic" => {
            let parts: Vec<String> = runs
                .iter()
                .map(|r| {
                    let at = |t: f64| {
                        r.visibility
                            .iter()
                            .min_by(|a, b| (a.t_ms - t).abs().total_cmp(&(b.t_ms - t).abs()))
                            .map(|v| {
                                format!(
                                    "t≈{:.1} ms measured {:.3} vs predicted {}",
                                    v.t_ms,
                                    v.measured,
                                    v.predicted
                                        .map(|p| format!("{p:.3}"))
                                        .unwrap_or_else(|| "n/a".into())
                                )
                            })
                            .unwrap_or_default()
                    };
                    format!(
                        "{}: {}, {}, {}, {}",
                        r.variant,
                        at(0.0),
                        at(1.0),
                        at(5.0),
                        at(10.0)
                    )
                })
                .collect();
            format!(
                "{}. A write with slow propagation (W~Exp(0.1/ms), mean 10 ms) is often not yet on the replica a R=1 read reaches first, so early reads are stale and consistency climbs over tens of ms; with fast propagation (W~Exp(4/ms)) reads are consistent almost at once. A real read also crosses the client's hops to and from the coordinator, which the model does not have: it reaches the replicas that much later after the commit, so measurements sit a few points above the model at t and on the model at t plus that measured overhead.",
                parts.join("; ")
            )
        }
        _ => {
            let parts: Vec<String> = runs
                .iter()
                .map(|r| {
                    let (p50, p99) = write_latency(r);
                    let mut s = format!(
                        "{}: {} stale reads, {} read-your-writes violations, write p50 {p50:.2} / p99 {p99:.2} ms",
                        r.variant,
                        pct(stale_share(r)),
                        r.sessions.ryw_violations
                    );
                    if let Some(sets) = &r.sets {
                        s.push_str(&format!(", {} of {} adds lost", sets.lost, sets.acknowledged));
                    }
                    s
                })
                .collect();
            format!("{}.", parts.join("; "))
        }
    }
}
