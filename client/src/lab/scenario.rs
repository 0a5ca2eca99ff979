//! Scenario files: a cluster, a workload, faults on a timeline, and the variants to
//! compare — what `dynakv lab run NAME|FILE.toml` runs.
//!
//! A scenario is TOML (the format is documented in the README, and the built-in
//! scenarios under `client/src/lab/scenarios/` are complete examples). Each
//! `[[variant]]` is a partial scenario merged over the base one (tables merge key by
//! key), so a scenario compares, say, W=1, W=2 and W=3 under the same faults. Everything
//! is validated on load, with sentences; `--scale` multiplies durations, operation counts
//! and fault times.

use std::collections::BTreeSet;

use dynakv_common::dist::Dist;
use dynakv_common::quorum::Quorum;
use dynakv_common::wire::{ConflictPolicy, ReadRepair};
use serde::{Deserialize, Serialize};

use super::LabError;

/// A scenario as written, with its variants still unmerged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (`read-heavy-lag`).
    pub name: String,
    /// The question it answers, one line.
    pub question: String,
    /// What the report says the results mean; computed numbers are filled in by the
    /// runner for the built-in scenarios, a user's scenario may leave it out.
    #[serde(default)]
    pub explain: Option<String>,
    #[serde(default)]
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub workload: Workload,
    /// Faults on the timeline of the workload.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultEvent>,
    /// Kill the coordinator right after each acknowledgement and see where the write is.
    #[serde(default)]
    pub crash_after_ack: Option<CrashSpec>,
    /// Variants compared in one report, each a partial scenario with a `name`.
    #[serde(default, rename = "variant", skip_serializing)]
    pub variants: Vec<toml::Table>,
}

/// The cluster a run starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSpec {
    /// Nodes (real `dynakv-node` processes on 127.0.0.1).
    pub nodes: usize,
    /// Replicas per key (N).
    pub replicas: usize,
    /// How concurrent writes are resolved.
    pub conflict_policy: ConflictPolicy,
    /// Further node settings (keys of the node config: `read_repair`,
    /// `anti_entropy_interval_ms`, ...), applied to every node over the lab's defaults.
    pub node: toml::Table,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: 3,
            replicas: 3,
            conflict_policy: ConflictPolicy::Dvv,
            node: toml::Table::new(),
        }
    }
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Writers overwrite their keys with unique values; readers read any key.
    #[default]
    Register,
    /// Writers add unique elements to shared set keys (read, union the siblings, add,
    /// write back with the context); readers read the sets. The lost-writes workload.
    Set,
    /// Each writer writes a fresh key, then reads it at fixed times after the
    /// acknowledgement (`probe_ms`): PBS t-visibility, measured as the model defines it.
    Probe,
}

/// Which node a session sends each request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// A random node per request (a load balancer in front of the cluster).
    #[default]
    Random,
    /// Session i always uses node i mod nodes (clients near one node).
    Sticky,
}

/// The workload of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// Sessions that write (one operation at a time each).
    pub writers: usize,
    /// Sessions that only read.
    pub readers: usize,
    /// Distinct keys (register: writers own disjoint shares; set: all share them).
    pub keys: usize,
    /// Operations per second per session; 0 = back to back.
    pub rate: f64,
    /// Operations per second per writer, if different from `rate`.
    pub write_rate: Option<f64>,
    /// How long the workload runs, seconds.
    pub duration_s: f64,
    /// Bytes of padding after each value's unique id.
    pub value_size: usize,
    /// R of every read (`one`, `quorum`, `all` or a number).
    #[serde(with = "super::history::quorum_text")]
    pub r: Quorum,
    /// W of every write.
    #[serde(with = "super::history::quorum_text")]
    pub w: Quorum,
    /// Count only primaries toward R (`--strict` reads).
    pub strict_reads: bool,
    /// Count only primaries toward W (`--strict` writes).
    pub strict_writes: bool,
    /// Read repair of every read.
    pub read_repair: ReadRepair,
    pub route: Route,
    /// Writers read the key they just wrote, right after the acknowledgement (for
    /// read-your-writes).
    pub read_own_writes: bool,
    /// Probe workload: read a fresh write this many ms after its acknowledgement.
    pub probe_ms: Vec<f64>,
    /// Server-side deadline of each request, ms (None: the node's).
    pub timeout_ms: Option<u32>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            kind: WorkloadKind::Register,
            writers: 2,
            readers: 4,
            keys: 20,
            rate: 50.0,
            write_rate: None,
            duration_s: 10.0,
            value_size: 16,
            r: Quorum::Quorum,
            w: Quorum::Quorum,
            strict_reads: false,
            strict_writes: false,
            read_repair: ReadRepair::Async,
            route: Route::Random,
            read_own_writes: false,
            probe_ms: Vec::new(),
            timeout_ms: None,
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Delay messages on a link (W, A, R, S distributions).
    Delay,
    /// Lose a share of the messages on a link.
    Loss,
    /// Cut the links between two groups of nodes (both ways unless `one_way`).
    Partition,
    /// SIGSTOP a node, SIGCONT it at `until_s`.
    Pause,
    /// kill -9 a node, restart it at `until_s` (or after the workload).
    Kill,
}

/// One fault on the timeline. Times are seconds from the start of the workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    pub kind: FaultKind,
    /// When it starts.
    #[serde(default)]
    pub at_s: f64,
    /// When it ends (None: at the end of the workload).
    #[serde(default)]
    pub until_s: Option<f64>,
    /// Delay and loss: the link's sending node (`n1`; None: any).
    #[serde(default)]
    pub from: Option<String>,
    /// Delay and loss: the link's receiving node (None: any).
    #[serde(default)]
    pub to: Option<String>,
    /// Delay: write request to a replica (PBS's W).
    #[serde(default)]
    pub w: Option<Dist>,
    /// Delay: write acknowledgement (A).
    #[serde(default)]
    pub a: Option<Dist>,
    /// Delay: read request (R).
    #[serde(default)]
    pub r: Option<Dist>,
    /// Delay: read response (S).
    #[serde(default)]
    pub s: Option<Dist>,
    /// Delay: also delay each coordinator's own replica operations, as the WARS model
    /// assumes.
    #[serde(default)]
    pub local: bool,
    /// Loss: probability a message is lost.
    #[serde(default)]
    pub rate: f64,
    /// Partition: the two sides.
    #[serde(default)]
    pub side_a: Vec<String>,
    #[serde(default)]
    pub side_b: Vec<String>,
    /// Partition: cut only side A → side B.
    #[serde(default)]
    pub one_way: bool,
    /// Pause and kill: the node.
    #[serde(default)]
    pub node: Option<String>,
}

/// The crash-after-acknowledgement experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSpec {
    /// How many writes (each followed by a kill -9 and a restart of its coordinator).
    pub writes: usize,
}

/// One variant to run: its name and the scenario with the variant merged in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub variant: String,
    pub scenario: Scenario,
}

fn invalid(what: &'static str, reason: impl Into<String>) -> LabError {
    LabError::InvalidArgument {
        what,
        reason: reason.into(),
    }
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, LabError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| invalid("scenario", e.to_string()))?;
        for r in scenario.resolve(1.0)? {
            r.scenario.validate()?;
        }
        Ok(scenario)
    }

    /// The variants to run, each merged over the base scenario and scaled by `scale`
    /// (durations, operation counts and fault times). No variants: one run named "base".
    pub fn resolve(&self, scale: f64) -> Result<Vec<Resolved>, LabError> {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(invalid("scale", format!("{scale} must be positive")));
        }
        let mut base =
            toml::Table::try_from(self).map_err(|e| invalid("scenario", e.to_string()))?;
        base.remove("variant");
        let tables: Vec<toml::Table> = if self.variants.is_empty() {
            let mut t = toml::Table::new();
            t.insert("name".into(), toml::Value::String("base".into()));
            vec![t]
        } else {
            self.variants.clone()
        };
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for mut v in tables {
            let name = match v.remove("name") {
                Some(toml::Value::String(s)) => s,
                _ => {
                    return Err(invalid(
                        "variant",
                        "every [[variant]] needs a name = \"...\"",
                    ))
                }
            };
            if !names.insert(name.clone()) {
                return Err(invalid(
                    "variant",
                    format!("two variants are named {name:?}"),
                ));
            }
            let mut merged = base.clone();
            merge(&mut merged, &v);
            let mut scenario: Scenario = merged
                .try_into()
                .map_err(|e: toml::de::Error| invalid("variant", format!("{name}: {e}")))?;
            scenario.scale(scale);
            out.push(Resolved {
                variant: name,
                scenario,
            });
        }
        Ok(out)
    }

    fn scale(&mut self, k: f64) {
        self.workload.duration_s *= k;
        for f in &mut self.faults {
            f.at_s *= k;
            f.until_s = f.until_s.map(|u| u * k);
        }
        if let Some(c) = &mut self.crash_after_ack {
            c.writes = ((c.writes as f64 * k).round() as usize).max(1);
        }
    }

    /// The node names of this scenario's cluster (`n1` ..).
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.cluster.nodes).map(|i| format!("n{i}")).collect()
    }

    /// Refuses what cannot run, with a sentence.
    pub fn validate(&self) -> Result<(), LabError> {
        let c = &self.cluster;
        if c.nodes == 0 || c.nodes > 9 {
            return Err(invalid(
                "cluster.nodes",
                format!("{} must be 1 to 9", c.nodes),
            ));
        }
        if c.replicas == 0 || c.replicas > c.nodes {
            return Err(invalid(
                "cluster.replicas",
                format!(
                    "N={} must be 1 to the number of nodes ({})",
                    c.replicas, c.nodes
                ),
            ));
        }
        let w = &self.workload;
        w.r.resolve(c.replicas, "workload.r")
            .map_err(|e| invalid("workload.r", e.to_string()))?;
        w.w.resolve(c.replicas, "workload.w")
            .map_err(|e| invalid("workload.w", e.to_string()))?;
        if !(w.duration_s > 0.0 && w.duration_s <= 3600.0) {
            return Err(invalid(
                "workload.duration_s",
                "must be between 0 and 3600 seconds",
            ));
        }
        if !(w.rate >= 0.0 && w.rate.is_finite())
            || w.write_rate.is_some_and(|r| !(r >= 0.0 && r.is_finite()))
        {
            return Err(invalid(
                "workload.rate",
                "must be 0 (back to back) or a positive rate",
            ));
        }
        if w.writers + w.readers == 0 && self.crash_after_ack.is_none() {
            return Err(invalid("workload", "needs at least one writer or reader"));
        }
        if w.writers + w.readers > 256 {
            return Err(invalid("workload", "at most 256 sessions"));
        }
        if w.keys == 0 {
            return Err(invalid("workload.keys", "must be at least 1"));
        }
        if w.value_size > 64 * 1024 {
            return Err(invalid("workload.value_size", "must be at most 64 KiB"));
        }
        if w.kind == WorkloadKind::Probe
            && (w.probe_ms.is_empty() || w.probe_ms.iter().any(|t| !(*t >= 0.0 && *t < 60_000.0)))
        {
            return Err(invalid(
                "workload.probe_ms",
                "a probe workload needs read times after each write, in ms (0 to 60000)",
            ));
        }
        let names = self.node_names();
        let known = |n: &Option<String>, what: &'static str| match n {
            Some(n) if !names.contains(n) => Err(invalid(
                what,
                format!("{n:?} is not a node of this cluster ({})", names.join(", ")),
            )),
            _ => Ok(()),
        };
        for f in &self.faults {
            let ordered = f.at_s >= 0.0 && f.until_s.is_none_or(|u| u > f.at_s);
            if !ordered {
                return Err(invalid(
                    "fault",
                    format!("{:?} at {} s: until_s must come after at_s", f.kind, f.at_s),
                ));
            }
            known(&f.from, "fault.from")?;
            known(&f.to, "fault.to")?;
            known(&f.node, "fault.node")?;
            match f.kind {
                FaultKind::Delay => {
                    if [&f.w, &f.a, &f.r, &f.s].iter().all(|d| d.is_none()) {
                        return Err(invalid("fault", "a delay needs at least one of w, a, r, s"));
                    }
                }
                FaultKind::Loss => {
                    if !(0.0..=1.0).contains(&f.rate) {
                        return Err(invalid("fault.rate", "a loss rate is between 0 and 1"));
                    }
                }
                FaultKind::Partition => {
                    if f.side_a.is_empty() || f.side_b.is_empty() {
                        return Err(invalid("fault", "a partition needs side_a and side_b"));
                    }
                    for n in f.side_a.iter().chain(&f.side_b) {
                        known(&Some(n.clone()), "fault.side")?;
                    }
                }
                FaultKind::Pause | FaultKind::Kill => {
                    if f.node.is_none() {
                        return Err(invalid("fault.node", "pause and kill need a node"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A built-in scenario: its name, one line, and its TOML.
pub struct Builtin {
    pub name: &'static str,
    pub summary: &'static str,
    pub toml: &'static str,
}

/// The built-in scenarios (the quorum table is not a cluster run; see `dynakv quorum`).
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "read-heavy-lag",
        summary: "99% reads at R=1 with 50 ms replication lag: stale reads against time since the write, throughput as R grows",
        toml: include_str!("scenarios/read-heavy-lag.toml"),
    },
    Builtin {
        name: "sync-vs-async",
        summary: "W=3 vs W=2 vs W=1: write latency, and what a W=1 write risks when its coordinator dies right after the ack",
        toml: include_str!("scenarios/sync-vs-async.toml"),
    },
    Builtin {
        name: "read-your-writes",
        summary: "strict R+W>N keeps read-your-writes, R=W=1 does not, and a sloppy quorum during a partition does not either",
        toml: include_str!("scenarios/read-your-writes.toml"),
    },
    Builtin {
        name: "partition-siblings",
        summary: "concurrent writers on both sides of a partition: DVV keeps every write, last-writer-wins loses some",
        toml: include_str!("scenarios/partition-siblings.toml"),
    },
    Builtin {
        name: "anti-entropy",
        summary: "replicas diverge with hints and read repair off; time to converge after the heal, per anti-entropy interval",
        toml: include_str!("scenarios/anti-entropy.toml"),
    },
    Builtin {
        name: "crash-restart",
        summary: "every node in turn, then all at once, killed with kill -9 and restarted under concurrent adds: acknowledged adds lost at W=2 and W=1",
        toml: include_str!("scenarios/crash-restart.toml"),
    },
    Builtin {
        name: "pbs-synthetic",
        summary: "N=3, R=W=1 with W~Exp(0.1/ms) then Exp(4/ms), A=R=S~Exp(1/ms): measured t-visibility beside the WARS prediction",
        toml: include_str!("scenarios/pbs-synthetic.toml"),
    },
];

/// The name of the quorum-table scenario, which needs no cluster.
pub const QUORUM_TABLE: &str = "quorum-table";

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_resolves() {
        for b in BUILTINS {
            let s = Scenario::parse(b.toml).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(s.name, b.name);
            let runs = s.resolve(0.2).unwrap();
            assert!(!runs.is_empty());
        }
    }

    #[test]
    fn variants_merge_over_the_base_and_scale() {
        let s = Scenario::parse(
            r#"
            name = "t"
            question = "q"
            [workload]
            w = "2"
            duration_s = 10
            [[fault]]
            kind = "pause"
            node = "n2"
            at_s = 2
            until_s = 4
            [[variant]]
            name = "w1"
            workload = { w = "1" }
            [[variant]]
            name = "lww"
            cluster = { conflict_policy = "lww" }
            "#,
        )
        .unwrap();
        let runs = s.resolve(0.5).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].variant, "w1");
        assert_eq!(runs[0].scenario.workload.w, Quorum::Count(1));
        assert_eq!(runs[1].scenario.workload.w, Quorum::Count(2));
        assert_eq!(
            runs[1].scenario.cluster.conflict_policy,
            ConflictPolicy::Lww
        );
        assert_eq!(runs[0].scenario.workload.duration_s, 5.0);
        assert_eq!(runs[0].scenario.faults[0].until_s, Some(2.0));
    }

    #[test]
    fn the_readme_example_is_a_valid_scenario() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### Scenario files").expect("section")..];
        let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
        let text = &section[start..start + section[start..].find("```").expect("block end")];
        let s = Scenario::parse(text).unwrap_or_else(|e| panic!("README example: {e}"));
        let runs = s.resolve(1.0).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(s.faults.len(), 5);
    }

    #[test]
    fn nonsense_is_refused_with_a_sentence() {
        let bad = [
            (
                "name = \"t\"\nquestion = \"q\"\n[cluster]\nreplicas = 4",
                "N=4",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\n[workload]\nr = \"5\"",
                "workload.r",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\n[[fault]]\nkind = \"kill\"\nat_s = 1",
                "need a node",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\n[[fault]]\nkind = \"pause\"\nnode = \"n9\"",
                "not a node",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\n[[fault]]\nkind = \"delay\"\nw = \"exp(-1)\"",
                "scenario",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\nsurprise = 1",
                "unknown field",
            ),
            (
                "name = \"t\"\nquestion = \"q\"\n[[variant]]\nworkload = { w = \"1\" }",
                "needs a name",
            ),
        ];
        for (text, expect) in bad {
            let err = Scenario::parse(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
