//! Runs a scenario: for each variant, start a cluster, drive the workload while the
//! fault timeline plays, heal, measure how long the replicas take to agree, read the
//! sets back with R=all, run the crash experiment if asked, stop the cluster, and judge
//! the history with the checkers — one [`RunResult`] per variant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_common::dist::Dist;
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::{FaultSpec, LinkRule};
use dynakv_common::NodeId;
use rand::SeedableRng;
use serde::Serialize;

use super::check::{self, LatencyStats, SessionReport, SetReport, SiblingsReport, StalenessReport};
use super::cluster::{Killed, LabCluster};
use super::history::{History, Op, OpKind};
use super::pbs::{self, Model};
use super::scenario::{FaultEvent, FaultKind, Resolved, Scenario, WorkloadKind};
use super::workload::{run_session, Recorder, Session};
use super::LabError;
use crate::{ReadOptions, WriteOptions};

/// How long the lab waits for replicas to agree after the last fault ends.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(30);
/// Monte Carlo trials of a prediction.
const TRIALS: usize = 200_000;

/// Told (variant, fraction of the workload done, operations so far) about ten times a
/// second.
pub type Progress = Arc<dyn Fn(&str, f64, u64) + Send + Sync>;

/// How a run is done.
#[derive(Clone)]
pub struct RunOptions {
    pub node_bin: PathBuf,
    pub seed: u64,
    pub scale: f64,
    /// Called with (variant, fraction done, ops so far) about ten times a second.
    pub progress: Option<Progress>,
}

/// The crash-after-acknowledgement experiment's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    /// Writes acknowledged (each followed by kill -9 of its coordinator).
    pub acknowledged: u64,
    /// Of those, how many no other replica held when the coordinator died: lost for good
    /// if that node's disk had died with it.
    pub only_on_coordinator: u64,
    /// Acknowledged writes missing after the coordinator restarted (its disk survived).
    pub lost_after_restart: u64,
}

/// Measured P(consistent) beside the model's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Visibility {
    /// Mean time since the write's acknowledgement of the bin's reads, ms.
    pub t_ms: f64,
    pub reads: u64,
    pub measured: f64,
    /// The model at `t_ms`.
    pub predicted: Option<f64>,
    /// The model at `t_ms` plus the run's measured client overhead: a real read reaches
    /// the replicas that much later after the commit than the model's t says.
    pub predicted_with_overhead: Option<f64>,
}

/// Everything measured in one variant.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub variant: String,
    pub nodes: usize,
    pub replicas: usize,
    pub r: String,
    pub w: String,
    pub strict_reads: bool,
    pub strict_writes: bool,
    pub conflict_policy: String,
    pub duration_s: f64,
    /// Acknowledged reads and writes (adds) per second over the workload.
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    pub ops: u64,
    pub failed: u64,
    pub unknown: u64,
    pub staleness: StalenessReport,
    pub sessions: SessionReport,
    pub sets: Option<SetReport>,
    pub siblings: SiblingsReport,
    pub latency: Vec<LatencyStats>,
    /// ms from the heal (the workload over, faults cleared, stopped nodes resumed or
    /// restarted) until every primary held the same state of every key; None when not
    /// measured; `converged` says whether it happened within the lab's limit.
    pub convergence_ms: Option<f64>,
    pub converged: Option<bool>,
    pub crash: Option<CrashReport>,
    /// Measured against predicted t-visibility, when the run injected the WARS delays.
    pub visibility: Vec<Visibility>,
    /// The model's P(consistent) at the standard t values, when it applies.
    pub prediction: Vec<(f64, f64)>,
    /// Measured median read latency minus the model's: the time a real request spends
    /// outside the model (the client's hops to and from the coordinator, processing).
    pub client_overhead_ms: Option<f64>,
    /// The history file of this variant.
    pub history_file: String,
    /// Pause and kill faults as carried out, in order.
    pub process_events: Vec<ProcessEvent>,
}

/// One pause, resume, kill or restart the lab carried out during a run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEvent {
    /// When it was due, in seconds from the start of the workload (the end of the
    /// workload for what the heal does).
    pub scheduled_s: f64,
    /// When it was done: for a restart, when the node served again.
    pub t_s: f64,
    pub node: String,
    /// `paused`, `resumed`, `killed` (died of SIGKILL), `crashed` (had already exited
    /// on its own; `detail` has its exit status), `not running`, or `restarted`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ProcessEvent {
    fn new(
        cluster: &LabCluster,
        i: usize,
        scheduled_s: f64,
        started: Instant,
        event: &'static str,
    ) -> ProcessEvent {
        ProcessEvent {
            scheduled_s,
            t_s: started.elapsed().as_secs_f64(),
            node: cluster.ids()[i].clone(),
            event,
            detail: None,
        }
    }
}

/// Which nodes the lab has killed or paused.
struct ProcessState {
    killed: Vec<bool>,
    paused: Vec<bool>,
}

impl ProcessState {
    fn new(nodes: usize) -> ProcessState {
        ProcessState {
            killed: vec![false; nodes],
            paused: vec![false; nodes],
        }
    }
}

fn lab_err(what: &'static str, reason: impl ToString) -> LabError {
    LabError::InvalidArgument {
        what,
        reason: reason.to_string(),
    }
}

fn node_id(name: &str) -> Option<NodeId> {
    NodeId::new(name).ok()
}

/// The fault spec in force at `t_s`: every delay, loss and partition event active then.
fn spec_at(faults: &[FaultEvent], t_s: f64, end_s: f64, seed: u64) -> FaultSpec {
    let mut spec = FaultSpec {
        seed,
        ..FaultSpec::default()
    };
    for f in faults {
        let until = f.until_s.unwrap_or(end_s);
        if !(f.at_s <= t_s && t_s < until) {
            continue;
        }
        match f.kind {
            FaultKind::Delay | FaultKind::Loss => {
                spec.rules.push(LinkRule {
                    from: f.from.as_deref().and_then(node_id),
                    to: f.to.as_deref().and_then(node_id),
                    w: f.w.clone(),
                    a: f.a.clone(),
                    r: f.r.clone(),
                    s: f.s.clone(),
                    loss: if f.kind == FaultKind::Loss {
                        f.rate
                    } else {
                        0.0
                    },
                    cut: false,
                });
                spec.local |= f.local;
            }
            FaultKind::Partition => {
                for a in &f.side_a {
                    for b in &f.side_b {
                        let mut cut = |from: &str, to: &str| {
                            spec.rules.push(LinkRule {
                                from: node_id(from),
                                to: node_id(to),
                                cut: true,
                                ..LinkRule::default()
                            })
                        };
                        cut(a, b);
                        if !f.one_way {
                            cut(b, a);
                        }
                    }
                }
            }
            FaultKind::Pause | FaultKind::Kill => {}
        }
    }
    spec
}

/// The WARS model of a variant, if its faults are one all-links delay with the
/// coordinator's own operations delayed too (the model's assumptions).
fn model_of(s: &Scenario) -> Option<Model> {
    let delays: Vec<&FaultEvent> = s
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::Delay)
        .collect();
    let [d] = delays.as_slice() else { return None };
    if !d.local || d.from.is_some() || d.to.is_some() || d.at_s > 0.0 || d.until_s.is_some() {
        return None;
    }
    if s.faults.len() != 1 {
        return None;
    }
    let zero = Dist::Fixed(0.0);
    Some(Model {
        n: s.cluster.replicas,
        r: s.workload.r.resolve(s.cluster.replicas, "R").ok()?,
        w: s.workload.w.resolve(s.cluster.replicas, "W").ok()?,
        w_delay: d.w.clone().unwrap_or(zero.clone()),
        a_delay: d.a.clone().unwrap_or(zero.clone()),
        r_delay: d.r.clone().unwrap_or(zero.clone()),
        s_delay: d.s.clone().unwrap_or(zero),
    })
}

/// Bin edges for the staleness checker: around each probe time, or the defaults.
fn bin_edges(s: &Scenario) -> Vec<f64> {
    let probes = &s.workload.probe_ms;
    if s.workload.kind != WorkloadKind::Probe || probes.is_empty() {
        return check::DEFAULT_BIN_EDGES_MS.to_vec();
    }
    let mut sorted = probes.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let mut edges = vec![0.0];
    for pair in sorted.windows(2) {
        edges.push((pair[0] + pair[1]) / 2.0);
    }
    edges.dedup();
    edges
}

/// Runs every variant of `scenario`.
pub async fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    out: &std::path::Path,
) -> Result<Vec<RunResult>, LabError> {
    let mut results = Vec::new();
    for (i, resolved) in scenario.resolve(opts.scale)?.into_iter().enumerate() {
        let seed = opts.seed.wrapping_add(i as u64 * 1_000_003);
        results.push(run_variant(&resolved, opts, seed, out).await?);
    }
    Ok(results)
}

async fn run_variant(
    resolved: &Resolved,
    opts: &RunOptions,
    seed: u64,
    out: &std::path::Path,
) -> Result<RunResult, LabError> {
    let s = &resolved.scenario;
    let name = &resolved.variant;
    let mut node_config = s.cluster.node.clone();
    node_config.insert(
        "conflict_policy".into(),
        toml::Value::String(s.cluster.conflict_policy.to_string()),
    );
    let mut cluster = LabCluster::start(
        &opts.node_bin,
        s.cluster.nodes,
        s.cluster.replicas,
        &node_config,
    )
    .await?;
    let w = &s.workload;
    let duration = Duration::from_secs_f64(w.duration_s);
    let end_s = w.duration_s;

    // Sessions: one client per node each, connected before the clock starts.
    let addrs = cluster.addrs();
    let sessions_n = w.writers + w.readers;
    let mut sessions = Vec::new();
    for id in 0..sessions_n {
        let mut clients = Vec::new();
        for i in 0..addrs.len() {
            let mut order = addrs.clone();
            order.rotate_left(i);
            let timeout = Duration::from_millis(u64::from(w.timeout_ms.unwrap_or(2_000)) + 2_000);
            clients.push(cluster.client(order, timeout).await?);
        }
        sessions.push(Session {
            id: id as u32,
            clients,
            addrs: addrs.clone(),
        });
    }

    let started = Instant::now();
    let rec = Arc::new(Recorder::new(started));
    let stop = started + duration;
    cluster
        .set_faults(&spec_at(&s.faults, 0.0, end_s, seed))
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        let writer = (session.id as usize) < w.writers;
        tasks.spawn(run_session(
            w.clone(),
            rec.clone(),
            session,
            writer,
            seed,
            stop,
        ));
    }

    // The timeline: every instant a fault starts or ends.
    let mut points: Vec<f64> = s
        .faults
        .iter()
        .flat_map(|f| [Some(f.at_s), f.until_s])
        .flatten()
        .filter(|t| *t > 0.0 && *t < end_s)
        .collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let mut processes = ProcessState::new(cluster.ids().len());
    let mut process_events = Vec::new();
    let mut next_point = 0;
    // Process faults starting at 0 take effect at once.
    apply_process_faults(
        &mut cluster,
        &s.faults,
        (0.0, end_s, started),
        &mut processes,
        &mut process_events,
    )
    .await?;
    loop {
        let progress_tick = tokio::time::sleep(Duration::from_millis(100));
        let at = points.get(next_point).copied();
        let until_point = at.map(|t| started + Duration::from_secs_f64(t));
        tokio::select! {
            _ = progress_tick => {}
            _ = async {
                match until_point {
                    Some(p) => tokio::time::sleep_until(p.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                let t = at.unwrap_or(0.0);
                cluster.set_faults(&spec_at(&s.faults, t, end_s, seed)).await?;
                apply_process_faults(
                    &mut cluster,
                    &s.faults,
                    (t, end_s, started),
                    &mut processes,
                    &mut process_events,
                )
                .await?;
                next_point += 1;
            }
        }
        if let Some(p) = &opts.progress {
            let frac = (started.elapsed().as_secs_f64() / duration.as_secs_f64()).min(1.0);
            p(name, frac, rec.done.load(Ordering::Relaxed));
        }
        // Every fault point of the workload is carried out, even if restarts made the
        // timeline run late.
        if Instant::now() >= stop && tasks.is_empty() && next_point >= points.len() {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| lab_err("session", e))?;
        }
        if Instant::now() >= stop + Duration::from_secs(30) {
            tasks.abort_all();
            break;
        }
    }
    while tasks.join_next().await.is_some() {}

    // Heal: no faults, every node running. Convergence is timed from here.
    let healed_at = Instant::now();
    cluster.set_faults(&FaultSpec::default()).await?;
    let dead: Vec<usize> = (0..processes.killed.len())
        .filter(|&i| processes.killed[i])
        .collect();
    cluster.restart_all(&dead).await?;
    for &i in &dead {
        process_events.push(ProcessEvent::new(&cluster, i, end_s, started, "restarted"));
    }
    for i in 0..processes.paused.len() {
        if processes.paused[i] && !processes.killed[i] {
            cluster.resume(i);
            process_events.push(ProcessEvent::new(&cluster, i, end_s, started, "resumed"));
        }
    }
    let _ = cluster.wait_all_up(Duration::from_secs(30)).await;
    let ops = rec.take();
    let keys: BTreeSet<String> = ops.iter().map(|o| o.key.clone()).collect();

    // Convergence: every primary holds the same state of every key.
    let (convergence_ms, converged) = if w.kind == WorkloadKind::Probe {
        (None, None)
    } else {
        let deadline = Instant::now() + CONVERGENCE_LIMIT;
        let mut agreed = false;
        while Instant::now() < deadline {
            if all_agree(&mut cluster, &keys).await? {
                agreed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ms = healed_at.elapsed().as_secs_f64() * 1000.0;
        (
            Some(if agreed {
                ms
            } else {
                ms.max(CONVERGENCE_LIMIT.as_secs_f64() * 1000.0)
            }),
            Some(agreed),
        )
    };

    // The set workload's final, converged read.
    let mut final_reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if w.kind == WorkloadKind::Set {
        if converged != Some(true) {
            cluster.anti_entropy_now().await?;
        }
        let reader = cluster
            .client(cluster.addrs(), Duration::from_secs(10))
            .await?;
        for key in &keys {
            let g = reader
                .get(key.as_bytes(), ReadOptions::with_r(Quorum::All))
                .await
                .map_err(|e| lab_err("final read", format!("{key}: {e}")))?;
            let set = g
                .values
                .iter()
                .flat_map(|v| {
                    String::from_utf8_lossy(v)
                        .split(',')
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            final_reads.insert(key.clone(), set);
        }
        reader.close().await;
    }

    let crash = match &s.crash_after_ack {
        Some(c) => Some(crash_after_ack(&mut cluster, s, c.writes, seed).await?),
        None => None,
    };
    cluster.stop().await;

    // Judge the history.
    let history_file = format!("history-{}.jsonl", slug(name));
    let history = History::new(ops).map_err(|e| lab_err("history", e))?;
    std::fs::write(out.join(&history_file), history.to_json_lines())
        .map_err(|e| lab_err("history file", e))?;
    let edges = bin_edges(s);
    let staleness = check::staleness(&history, &edges)?;
    let model = model_of(s);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let client_overhead_ms = match &model {
        Some(m) => {
            let mut reads: Vec<f64> = history
                .ops()
                .iter()
                .filter(|o| o.kind == OpKind::Read && o.is_ok())
                .map(|o| o.latency_ms())
                .collect();
            reads.sort_by(f64::total_cmp);
            let measured = reads.get(reads.len() / 2).copied();
            let model_median = pbs::median_read_latency(m, TRIALS, &mut rng)?;
            measured.map(|x| (x - model_median).max(0.0))
        }
        None => None,
    };
    let visibility = match &model {
        Some(m) => {
            let bins: Vec<_> = staleness.bins.iter().filter(|b| b.reads > 0).collect();
            let ts: Vec<f64> = bins.iter().filter_map(|b| b.mean_t_ms).collect();
            let predicted = pbs::predict(m, &ts, TRIALS, &mut rng)?;
            let shifted: Vec<f64> = ts
                .iter()
                .map(|t| t + client_overhead_ms.unwrap_or(0.0))
                .collect();
            let with_overhead = pbs::predict(m, &shifted, TRIALS, &mut rng)?;
            bins.iter()
                .zip(predicted)
                .zip(with_overhead)
                .map(|((b, (t, p)), (_, q))| Visibility {
                    t_ms: t,
                    reads: b.reads,
                    measured: b.p_consistent.unwrap_or(0.0),
                    predicted: Some(p),
                    predicted_with_overhead: Some(q),
                })
                .collect()
        }
        None => staleness
            .bins
            .iter()
            .filter(|b| b.reads > 0)
            .map(|b| Visibility {
                t_ms: b.mean_t_ms.unwrap_or(b.from_ms),
                reads: b.reads,
                measured: b.p_consistent.unwrap_or(0.0),
                predicted: None,
                predicted_with_overhead: None,
            })
            .collect(),
    };
    let prediction = match &model {
        Some(m) => pbs::predict(m, &[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0], TRIALS, &mut rng)?,
        None => Vec::new(),
    };
    let count =
        |pred: &dyn Fn(&Op) -> bool| history.ops().iter().filter(|o| pred(o)).count() as u64;
    let secs = w.duration_s.max(1e-9);
    Ok(RunResult {
        variant: name.clone(),
        nodes: s.cluster.nodes,
        replicas: s.cluster.replicas,
        r: w.r.to_string(),
        w: w.w.to_string(),
        strict_reads: w.strict_reads,
        strict_writes: w.strict_writes,
        conflict_policy: s.cluster.conflict_policy.to_string(),
        duration_s: w.duration_s,
        reads_per_s: count(&|o| o.kind == OpKind::Read && o.is_ok()) as f64 / secs,
        writes_per_s: count(&|o| o.kind != OpKind::Read && o.is_ok()) as f64 / secs,
        ops: history.ops().len() as u64,
        failed: count(&|o| matches!(o.outcome, super::history::Outcome::Failed { .. })),
        unknown: count(&|o| matches!(o.outcome, super::history::Outcome::Unknown { .. })),
        sessions: check::sessions(&history),
        sets: (w.kind == WorkloadKind::Set).then(|| check::sets(&history, &final_reads)),
        siblings: check::siblings(&history),
        latency: check::latency(&history),
        staleness,
        convergence_ms,
        converged,
        crash,
        visibility,
        prediction,
        client_overhead_ms,
        history_file,
        process_events,
    })
}

/// Brings the nodes to the state the pause and kill faults in force at `t_s` ask for
/// (of a workload that ends at `end_s` and started at `started`): a node is down while
/// any kill fault of it is in force and paused while a pause fault is (and it is not
/// down). Only changes are acted on; what is done goes to `events`.
async fn apply_process_faults(
    cluster: &mut LabCluster,
    faults: &[FaultEvent],
    (t_s, end_s, started): (f64, f64, Instant),
    state: &mut ProcessState,
    events: &mut Vec<ProcessEvent>,
) -> Result<(), LabError> {
    let nodes = state.killed.len();
    let (mut kill, mut pause) = (vec![false; nodes], vec![false; nodes]);
    for f in faults {
        let Some(i) = f.node.as_deref().and_then(|n| cluster.index(n)) else {
            continue;
        };
        if f.at_s <= t_s && t_s < f.until_s.unwrap_or(end_s) {
            match f.kind {
                FaultKind::Kill => kill[i] = true,
                FaultKind::Pause => pause[i] = true,
                _ => {}
            }
        }
    }
    let mut restart = Vec::new();
    for (i, &kill) in kill.iter().enumerate() {
        if kill && !state.killed[i] {
            state.killed[i] = true;
            state.paused[i] = false;
            let (event, detail) = match cluster.kill(i) {
                Killed::BySignal => ("killed", None),
                Killed::Exited(status) => ("crashed", Some(status)),
                Killed::NotRunning => ("not running", None),
            };
            events.push(ProcessEvent {
                detail,
                ..ProcessEvent::new(cluster, i, t_s, started, event)
            });
        } else if !kill && state.killed[i] {
            state.killed[i] = false;
            restart.push(i);
        }
    }
    cluster.restart_all(&restart).await?;
    for &i in &restart {
        events.push(ProcessEvent::new(cluster, i, t_s, started, "restarted"));
    }
    for (i, &pause) in pause.iter().enumerate() {
        if state.killed[i] || pause == state.paused[i] {
            continue;
        }
        state.paused[i] = pause;
        if pause {
            cluster.pause(i);
            events.push(ProcessEvent::new(cluster, i, t_s, started, "paused"));
        } else {
            cluster.resume(i);
            events.push(ProcessEvent::new(cluster, i, t_s, started, "resumed"));
        }
    }
    Ok(())
}

/// Whether every serving primary of every key holds the same state.
async fn all_agree(cluster: &mut LabCluster, keys: &BTreeSet<String>) -> Result<bool, LabError> {
    for key in keys {
        let digests = cluster.digests(key.as_bytes()).await?;
        let primaries: Vec<Option<u128>> = digests
            .into_iter()
            .filter(|(_, primary, _)| *primary)
            .map(|(_, _, d)| d)
            .collect();
        if primaries.windows(2).any(|w| w[0] != w[1]) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes through node 1 and kills it right after each acknowledgement: how many of the
/// writes did no other replica hold at that moment, and are any gone after its restart?
async fn crash_after_ack(
    cluster: &mut LabCluster,
    s: &Scenario,
    writes: usize,
    seed: u64,
) -> Result<CrashReport, LabError> {
    let w = s.workload.w;
    let mut report = CrashReport {
        acknowledged: 0,
        only_on_coordinator: 0,
        lost_after_restart: 0,
    };
    // The network delays of the scenario stay on, so replication lags as in the run.
    cluster
        .set_faults(&spec_at(&s.faults, 0.0, f64::INFINITY, seed))
        .await?;
    let coordinator = 0;
    let mut written = Vec::new();
    for i in 0..writes {
        let client = cluster
            .client(
                vec![cluster.addrs()[coordinator].clone()],
                Duration::from_secs(10),
            )
            .await?;
        let key = format!("crash:{i}");
        let value = format!("crash-{i}");
        let acked = client
            .put(
                key.as_bytes(),
                value.clone().into_bytes(),
                WriteOptions::with_w(w),
            )
            .await
            .is_ok();
        cluster.kill(coordinator);
        client.close().await;
        if !acked {
            cluster.restart(coordinator).await?;
            continue;
        }
        report.acknowledged += 1;
        let elsewhere = cluster
            .digests(key.as_bytes())
            .await?
            .into_iter()
            .any(|(node, _, d)| node != coordinator && d.is_some());
        if !elsewhere {
            report.only_on_coordinator += 1;
        }
        written.push((key, value));
        cluster.restart(coordinator).await?;
    }
    cluster.set_faults(&FaultSpec::default()).await?;
    let _ = cluster.wait_all_up(Duration::from_secs(30)).await;
    let reader = cluster
        .client(cluster.addrs(), Duration::from_secs(10))
        .await?;
    for (key, value) in written {
        let found = reader
            .get(key.as_bytes(), ReadOptions::with_r(Quorum::All))
            .await
            .map(|g| g.values.contains(&value.into_bytes()))
            .unwrap_or(false);
        if !found {
            report.lost_after_restart += 1;
        }
    }
    reader.close().await;
    Ok(report)
}

/// A file-name-safe version of a variant name.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    let mut out = String::new();
    for c in s.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    if out.is_empty() {
        "run".into()
    } else {
        out
    }
}
