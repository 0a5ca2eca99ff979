//! The `dynakv` command line against a real cluster: output formats and exit codes.

use std::process::{Command, Output};

use crate::harness::{cli_binary, Cluster, ClusterOptions};

fn dynakv(cluster: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(cli_binary());
    cmd.arg("--config").arg(cluster.client_config()).args(args);
    cmd.env_remove("DYNAKV_NODES");
    match stdin {
        Some(bytes) => {
            use std::io::Write;
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("run dynakv");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(bytes)
                .expect("write stdin");
            child.wait_with_output().expect("dynakv output")
        }
        None => cmd.output().expect("run dynakv"),
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "dynakv failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_put_get_delete_and_siblings() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let c = &cluster;
    tokio::task::block_in_place(|| {
        let put = json(&dynakv(c, &["--json", "put", "cart:1", "apples"], None));
        assert!(put["context"].as_str().is_some_and(|t| !t.is_empty()));

        let get = json(&dynakv(c, &["--json", "get", "cart:1"], None));
        assert_eq!(get["key"], "cart:1");
        assert_eq!(get["found"], true);
        assert_eq!(get["values"], serde_json::json!(["apples"]));
        let ctx = get["context"].as_str().expect("context").to_string();

        // Two writes from the same context: siblings, shown clearly to people.
        json(&dynakv(
            c,
            &["--json", "put", "cart:1", "pears", "--context", &ctx],
            None,
        ));
        json(&dynakv(
            c,
            &[
                "--json",
                "put",
                "cart:1",
                "plums",
                "--context",
                &ctx,
                "--w",
                "all",
            ],
            None,
        ));
        let human = dynakv(c, &["get", "cart:1", "--r", "all"], None);
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(text.contains("2 siblings"), "{text}");
        assert!(text.contains("pears") && text.contains("plums"), "{text}");
        assert!(text.contains("context: "), "{text}");

        // Value from stdin, binary values come back base64-encoded and marked.
        json(&dynakv(
            c,
            &["--json", "put", "bin"],
            Some(&[0xff, 0xfe, 0x00]),
        ));
        let get = json(&dynakv(c, &["--json", "get", "bin", "--r", "3"], None));
        assert_eq!(get["values"][0]["base64"], "//4A");

        // Delete with the context: not found afterwards.
        let get = json(&dynakv(c, &["--json", "get", "cart:1"], None));
        let ctx = get["context"].as_str().expect("context").to_string();
        json(&dynakv(
            c,
            &["--json", "delete", "cart:1", "--context", &ctx],
            None,
        ));
        let get = json(&dynakv(c, &["--json", "get", "cart:1", "--r", "all"], None));
        assert_eq!(get["found"], false);
        assert_eq!(get["values"], serde_json::json!([]));

        // Bad arguments fail with one clear line.
        let bad = dynakv(c, &["get", "k", "--r", "most"], None);
        assert!(!bad.status.success());
        let bad = dynakv(c, &["get", "k", "--r", "4"], None);
        assert!(!bad.status.success());
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("invalid R"), "{err}");
    });

    let status = json(&dynakv(&cluster, &["--json", "status"], None));
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));

    cluster.kill(2);
    cluster.wait_sees_down(0, &[2]).await?;
    let out = tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--node",
                &cluster.nodes[0].addr,
                "put",
                "k",
                "v",
                "--w",
                "all",
            ],
            None,
        )
    });
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().starts_with("error: write quorum not reached"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fails_over_to_the_next_node() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    cluster.kill(0);
    let nodes = cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let out = tokio::task::block_in_place(|| {
        let mut cmd = Command::new(cli_binary());
        cmd.arg("--config")
            .arg(cluster.client_config())
            .args(["--json", "put", "k", "v"]);
        cmd.env("DYNAKV_NODES", &nodes);
        cmd.output()
    })?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_throughput_and_percentiles() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let out = tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--json",
                "--timeout-ms",
                "10000",
                "bench",
                "--ops",
                "300",
                "--concurrency",
                "8",
                "--keys",
                "50",
                "--read-ratio",
                "0.5",
            ],
            None,
        )
    });
    let report = json(&out);
    assert_eq!(report["ops"].as_u64(), Some(300));
    assert_eq!(report["errors"].as_u64(), Some(0));
    let stats = report["stats"].as_array().expect("stats");
    assert!(stats.iter().any(|s| s["op"] == "get") && stats.iter().any(|s| s["op"] == "put"));
    for s in stats {
        assert!(s["p50_us"].as_u64() <= s["p99_us"].as_u64());
        assert!(s["p99_us"].as_u64() <= s["p999_us"].as_u64());
    }
    // A quorum the cluster cannot meet, or no requests in flight, is refused up front.
    let refused = |args: &[&str], says: &str| {
        let out = tokio::task::block_in_place(|| dynakv(&cluster, args, None));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(
        &["bench", "--ops", "5", "--read-ratio", "0", "--w", "4"],
        "invalid W",
    );
    refused(
        &["bench", "--ops", "5", "--read-ratio", "1", "--r", "4"],
        "invalid R",
    );
    refused(
        &["bench", "--ops", "5", "--concurrency", "0"],
        "--concurrency",
    );
    // Fewer keys than writing workers would be widened silently: refused instead.
    refused(
        &["bench", "--ops", "5", "--keys", "1", "--concurrency", "8"],
        "--keys 1 is fewer than --concurrency 8",
    );
    refused(&["bench", "--ops", "5", "--keys", "0"], "--keys");
    refused(
        &["bench", "--duration", "0"],
        "--duration must be a positive",
    );
    Ok(())
}

/// A run in which no operation succeeds reports its errors and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_whose_every_operation_fails_exits_with_an_error() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    cluster.kill(2);
    let out = tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--node",
                &cluster.nodes[0].addr,
                "--timeout-ms",
                "1000",
                "bench",
                "--ops",
                "4",
                "--concurrency",
                "2",
                "--read-ratio",
                "0",
                "--w",
                "all",
            ],
            None,
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("every operation failed"), "{stderr}");
    Ok(())
}

/// An open-loop run sends operation i no earlier than `i / rate` after its start: however
/// many workers wait, no more operations complete than have fallen due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_bench_sends_no_operation_before_it_is_due() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let rate = 300.0;
    let out = tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--json",
                "bench",
                "--rate",
                "300",
                "--duration",
                "2",
                "--concurrency",
                "32",
                "--keys",
                "64",
                "--read-ratio",
                "0.5",
            ],
            None,
        )
    });
    let report = json(&out);
    assert_eq!(report["errors"].as_u64(), Some(0));
    assert_eq!(report["rate"].as_f64(), Some(rate));
    let ops = report["ops"].as_u64().expect("ops");
    let elapsed = report["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(ops > 0, "the run did something");
    let due = (elapsed * rate).floor() as u64 + 1;
    assert!(
        ops <= due,
        "{ops} operations completed in {elapsed} s, only {due} were due at {rate}/s"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_debug_replica_and_status_show_what_each_node_holds() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let report = json(&tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--json",
                "bench",
                "--fill",
                "--keys",
                "40",
                "--concurrency",
                "8",
                "--w",
                "all",
            ],
            None,
        )
    }));
    assert_eq!(report["ops"].as_u64(), Some(40), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    // Every node holds every key (N=3, W=all), one sibling each.
    for node in &cluster.nodes {
        let d = json(&tokio::task::block_in_place(|| {
            dynakv(
                &cluster,
                &[
                    "--json", "--node", &node.addr, "debug", "replica", "bench:7",
                ],
                None,
            )
        }));
        assert_eq!(d["is_primary"], true, "{d}");
        assert_eq!(
            d["state"]["siblings"].as_array().map(Vec::len),
            Some(1),
            "{d}"
        );
        assert_eq!(d["hints"].as_array().map(Vec::len), Some(0), "{d}");
    }
    let text =
        tokio::task::block_in_place(|| dynakv(&cluster, &["debug", "replica", "bench:7"], None));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("(a primary)") && text.contains("hints held here: none"),
        "{text}"
    );
    // Per-request quorum mode and read repair parse and work.
    let g = json(&tokio::task::block_in_place(|| {
        dynakv(
            &cluster,
            &[
                "--json",
                "get",
                "bench:7",
                "--r",
                "all",
                "--strict",
                "--read-repair",
                "sync",
            ],
            None,
        )
    }));
    assert_eq!(g["found"], true);
    let st = json(&tokio::task::block_in_place(|| {
        dynakv(&cluster, &["--json", "status"], None)
    }));
    let workers: Vec<&str> = st["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    for name in [
        "heartbeat",
        "hint-delivery",
        "anti-entropy",
        "tombstone-reaper",
    ] {
        assert!(workers.contains(&name), "{workers:?}");
    }
    assert!(
        st["latency"]
            .as_array()
            .expect("latency")
            .iter()
            .any(|l| l["op"] == "get" && l["count"].as_u64() >= Some(1)),
        "{st}"
    );
    Ok(())
}
