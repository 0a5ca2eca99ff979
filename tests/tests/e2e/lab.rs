//! The consistency lab as a user runs it (`dynakv lab run NAME`), at reduced scale, with
//! the outcomes that must hold whatever the timing: strict R+W>N without faults shows no
//! stale read and no read-your-writes violation; concurrent adds across a partition lose
//! nothing under DVV and lose some under last-writer-wins; kill -9 and restart of every
//! node in turn loses no acknowledged add.

use std::path::Path;
use std::process::Command;

use crate::harness::{cli_binary, node_binary};

fn lab(args: &[&str], out: &Path) -> serde_json::Value {
    let output = Command::new(cli_binary())
        .arg("--json")
        .arg("lab")
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--node-bin")
        .arg(node_binary())
        .output()
        .expect("run dynakv lab");
    assert!(
        output.status.success(),
        "dynakv lab failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn run<'a>(report: &'a serde_json::Value, variant: &str) -> &'a serde_json::Value {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no variant {variant} in {report}"))
}

#[test]
fn strict_quorums_read_your_writes_and_sloppy_ones_under_partition_need_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let report = lab(
        &["read-your-writes", "--scale", "0.25", "--seed", "11"],
        &out,
    );
    let strict = run(&report, "strict R=2 W=2");
    assert!(
        strict["sessions"]["ryw_checked"].as_u64() > Some(20),
        "the check is not vacuous: {strict}"
    );
    assert_eq!(strict["sessions"]["ryw_violations"], 0, "{strict}");
    assert!(strict["staleness"]["reads_checked"].as_u64() > Some(20));
    assert_eq!(strict["staleness"]["stale_reads"], 0, "{strict}");
    // The report directory a user looks at.
    for file in ["report.md", "results.json", "staleness.svg", "latency.svg"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## What it means") && md.contains("| strict R=2 W=2 |"),
        "{md}"
    );
    let histories = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("history-"))
        })
        .count();
    assert_eq!(histories, 3, "one history per variant");
}

#[test]
fn across_a_partition_dvv_loses_no_add_and_last_writer_wins_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let report = lab(
        &["partition-siblings", "--scale", "0.3", "--seed", "5"],
        &out,
    );
    let dvv = &run(&report, "DVV")["sets"];
    let lww = &run(&report, "LWW")["sets"];
    assert!(dvv["acknowledged"].as_u64() > Some(20), "{dvv}");
    assert_eq!(dvv["lost"], 0, "DVV keeps every acknowledged add: {dvv}");
    assert!(lww["acknowledged"].as_u64() > Some(20), "{lww}");
    assert!(
        lww["lost"].as_u64() > Some(0),
        "LWW loses concurrent adds: {lww}"
    );
    assert!(out.join("lost-writes.svg").exists());
}

#[test]
fn kill_9_and_restart_of_every_node_loses_no_acknowledged_add() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let report = lab(&["crash-restart", "--scale", "0.3", "--seed", "3"], &out);
    for variant in ["W=2", "W=1"] {
        let run = run(&report, variant);
        let sets = &run["sets"];
        assert!(sets["acknowledged"].as_u64() > Some(20), "{sets}");
        assert_eq!(sets["lost"], 0, "{variant} lost acknowledged adds: {sets}");
        // The check is of a disturbed run: each of the scenario's seven kills (every
        // node in turn, then all three at once) took a running node down with SIGKILL,
        // and each came back.
        let events = run["process_events"].as_array().expect("process_events");
        let count = |what: &str| events.iter().filter(|e| e["event"] == what).count();
        assert_eq!(count("killed"), 7, "{events:?}");
        assert_eq!(count("restarted"), 7, "{events:?}");
        // ... while the writers were writing.
        let end = run["duration_s"].as_f64().unwrap();
        assert!(
            events
                .iter()
                .filter(|e| e["event"] == "killed")
                .all(|e| e["t_s"].as_f64() < Some(end)),
            "a kill came after the workload ({end} s): {events:?}"
        );
    }
}

#[test]
fn the_quorum_table_and_the_model_need_no_cluster() {
    let table = Command::new(cli_binary())
        .args(["quorum", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert_eq!(
        text.lines().filter(|l| l.contains("yes (R+W>N)")).count(),
        6,
        "{text}"
    );
    let predict = Command::new(cli_binary())
        .args([
            "--json",
            "lab",
            "predict",
            "--n",
            "3",
            "--r",
            "2",
            "--w",
            "2",
            "--w-delay",
            "exp(0.1)",
            "--a-delay",
            "exp(1)",
            "--r-delay",
            "exp(1)",
            "--s-delay",
            "exp(1)",
            "--t",
            "0,5",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&predict.stdout).unwrap();
    // R+W>N: consistent at t=0, whatever the delays.
    assert_eq!(json["points"][0]["p_consistent"], 1.0, "{json}");
    let list = Command::new(cli_binary())
        .args(["lab", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in [
        "read-heavy-lag",
        "sync-vs-async",
        "read-your-writes",
        "partition-siblings",
        "anti-entropy",
        "crash-restart",
        "pbs-synthetic",
        "quorum-table",
    ] {
        assert!(list.contains(name), "{list}");
    }
}
