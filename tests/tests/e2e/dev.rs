//! The README's first command: `dynakv-node dev` starts a local cluster that `dynakv`
//! run from the same directory reaches with no flags, and stops it on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{cli_binary, eventually, free_port_run, node_binary, terminate};

/// Starts `dynakv-node dev` with `args` in `cwd`; its stdout lines arrive on the receiver.
fn spawn_dev(
    args: &[&std::ffi::OsStr],
    cwd: &std::path::Path,
) -> anyhow::Result<(std::process::Child, std::sync::mpsc::Receiver<String>)> {
    let mut dev = Command::new(node_binary())
        .arg("dev")
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = dev.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    Ok((dev, lines_rx))
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_serves_the_cli_with_no_flags() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_port_run(3);
    let base = base.to_string();
    let (mut dev, lines_rx) = spawn_dev(&["--base-port".as_ref(), base.as_ref()], dir.path())?;

    let cli = |args: &[&str]| {
        Command::new(cli_binary())
            .args(args)
            .current_dir(dir.path())
            .env_remove("DYNAKV_NODES")
            .env_remove("DYNAKV_CONFIG")
            .output()
    };
    let result = async {
        // Wait until every node sees every other, then write once (a retried blind put
        // could legitimately leave two "apples" siblings).
        eventually(
            Duration::from_secs(60),
            "dynakv status shows 3 nodes up",
            || async {
                let out = cli(&["status"]).ok()?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                (out.status.success() && text.matches(" up ").count() == 3).then_some(())
            },
        )
        .await?;
        let out = cli(&["put", "cart:1", "apples"])?;
        anyhow::ensure!(
            out.status.success(),
            "put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli(&["get", "cart:1"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        anyhow::ensure!(
            out.status.success() && text.starts_with("apples\n"),
            "get printed {text:?}"
        );
        let out = cli(&["delete", "cart:1"])?;
        anyhow::ensure!(out.status.success(), "delete failed");
        let out = cli(&["get", "cart:1"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        anyhow::ensure!(text.starts_with("not found"), "after delete: {text:?}");
        let out = cli(&["status"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        anyhow::ensure!(text.matches(" up ").count() == 3, "status: {text}");
        Ok(())
    }
    .await;

    // Stop the cluster like Ctrl-C would, and check every node process went away.
    let pids: Vec<i32> = lines_rx
        .try_iter()
        .filter_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect();
    let stopped = terminate(&mut dev, "dev cluster").await;
    result?;
    stopped?;
    assert_eq!(pids.len(), 3, "dev printed three node pids");
    eventually(Duration::from_secs(10), "node processes exit", || {
        let alive = pids.iter().any(|&p| process_alive(p));
        async move { (!alive).then_some(()) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_in_another_directory_prints_commands_that_work_from_anywhere() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let elsewhere = tempfile::tempdir()?;
    let base = free_port_run(3);
    let cluster_dir = dir.path().join("cluster");
    let base = base.to_string();
    let (mut dev, lines_rx) = spawn_dev(
        &[
            "--base-port".as_ref(),
            base.as_ref(),
            "--dir".as_ref(),
            cluster_dir.as_ref(),
        ],
        dir.path(),
    )?;
    let result = async {
        // The hint dev prints once the cluster is up, run as printed from another
        // directory (where no ./dynakv-dev/client.toml could help).
        let mut seen = Vec::new();
        let hint = eventually(Duration::from_secs(60), "dev prints how to put", || {
            seen.extend(lines_rx.try_iter());
            let hint = seen
                .iter()
                .find(|l| l.trim_end().ends_with("put cart:1 apples"))
                .cloned();
            async move { hint }
        })
        .await?;
        // The program is the one dev found beside itself, or plain `dynakv` when there is
        // none (as in some test builds); either way the CLI under test runs the arguments.
        let words: Vec<&str> = hint.split_whitespace().collect();
        let out = Command::new(cli_binary())
            .args(&words[1..])
            .current_dir(elsewhere.path())
            .env_remove("DYNAKV_NODES")
            .env_remove("DYNAKV_CONFIG")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{hint:?} from another directory: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
    .await;
    let stopped = terminate(&mut dev, "dev cluster").await;
    result?;
    stopped
}
