//! Three nodes on three "hosts": network namespaces with their own addresses, joined by
//! a bridge in a fourth namespace, set up exactly as the README's multi-host steps say
//! (CA, node and client certificates from `dynakv-node` subcommands, nodes started with
//! flags only). Needs root and iproute2, as CI has; elsewhere it says so and skips,
//! except under CI=true, where not being able to run it is a failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::harness::{cli_binary, eventually, node_binary};

/// Runs a command and fails with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespaces created by this test; deleted (with everything in them) on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run("ip", &["netns", "add", name])?;
        self.0.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// Node processes; killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn netns_available() -> bool {
    let probe = format!("dkvprobe{}", std::process::id());
    let ok = run("ip", &["netns", "add", &probe]).is_ok();
    if ok {
        let _ = run("ip", &["netns", "del", &probe]);
    }
    ok
}

fn dynakv_in(ns: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let alice = dir.join("alice");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(cli_binary())
        .arg("--ca")
        .arg(alice.join("ca.pem"))
        .arg("--cert")
        .arg(alice.join("client.pem"))
        .arg("--key")
        .arg(alice.join("client.key.pem"))
        .args(args)
        .env_remove("DYNAKV_NODES")
        .env_remove("DYNAKV_CONFIG");
    cmd.output().expect("run dynakv in a namespace")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_set_up_as_the_readme_says() -> anyhow::Result<()> {
    if !netns_available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("CI must be able to create network namespaces (root + iproute2)");
        }
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return Ok(());
    }
    let tag = format!("dkv{}", std::process::id() % 100_000);
    let switch = format!("{tag}sw");
    let hosts: Vec<String> = (1..=3).map(|i| format!("{tag}h{i}")).collect();
    let ips: Vec<String> = (1..=3).map(|i| format!("10.77.0.{i}")).collect();
    let mut namespaces = Namespaces(Vec::new());
    namespaces.add(&switch)?;
    run(
        "ip",
        &["-n", &switch, "link", "add", "br0", "type", "bridge"],
    )?;
    run("ip", &["-n", &switch, "link", "set", "br0", "up"])?;
    for (i, (host, ip)) in hosts.iter().zip(&ips).enumerate() {
        namespaces.add(host)?;
        let (inside, outside) = (format!("{tag}v{i}"), format!("{tag}p{i}"));
        run(
            "ip",
            &[
                "link", "add", &inside, "type", "veth", "peer", "name", &outside,
            ],
        )?;
        run("ip", &["link", "set", &inside, "netns", host])?;
        run("ip", &["link", "set", &outside, "netns", &switch])?;
        run("ip", &["-n", host, "link", "set", &inside, "name", "eth0"])?;
        run(
            "ip",
            &[
                "-n",
                host,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", host, "link", "set", "eth0", "up"])?;
        run(
            "ip",
            &["-n", &switch, "link", "set", &outside, "master", "br0"],
        )?;
        run("ip", &["-n", &switch, "link", "set", &outside, "up"])?;
    }

    // The README's steps: a CA, a certificate per node naming its address, one client.
    let dir = tempfile::tempdir()?;
    let d = |p: &str| dir.path().join(p).display().to_string();
    let node = node_binary().display().to_string();
    run(&node, &["ca", "init", "--dir", &d("cluster-ca")])?;
    for (i, ip) in ips.iter().enumerate() {
        let id = format!("n{}", i + 1);
        run(
            &node,
            &[
                "cert",
                "node",
                "--ca-dir",
                &d("cluster-ca"),
                "--id",
                &id,
                "--host",
                ip,
                "--out",
                &d(&format!("{id}/tls")),
            ],
        )?;
    }
    run(
        &node,
        &[
            "cert",
            "client",
            "--ca-dir",
            &d("cluster-ca"),
            "--name",
            "alice",
            "--out",
            &d("alice"),
        ],
    )?;

    let peers: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("n{}@{ip}:7100", i + 1))
        .collect();
    let peers = peers.join(",");
    let mut procs = Procs(Vec::new());
    for (i, (host, ip)) in hosts.iter().zip(&ips).enumerate() {
        let id = format!("n{}", i + 1);
        let log = std::fs::File::create(dir.path().join(format!("{id}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", host, &node, "run", "--id", &id])
            .args([
                "--listen",
                &format!("{ip}:7100"),
                "--advertise",
                &format!("{ip}:7100"),
            ])
            .args(["--data-dir", &d(&id), "--peer", &peers])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        procs.0.push(child);
    }

    let all = ips
        .iter()
        .map(|ip| format!("{ip}:7100"))
        .collect::<Vec<_>>()
        .join(",");
    let (h1, h3) = (hosts[0].clone(), hosts[2].clone());
    let dpath = dir.path().to_path_buf();
    eventually(
        Duration::from_secs(60),
        "every host sees three members up",
        || {
            let out = dynakv_in(&h1, &dpath, &["--node", &all, "--json", "status"]);
            let up = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| {
                    v["members"]
                        .as_array()
                        .map(|m| m.iter().filter(|m| m["up"] == true).count())
                });
            async move { (up == Some(3)).then_some(()) }
        },
    )
    .await
    .with_context(|| std::fs::read_to_string(dir.path().join("n1.log")).unwrap_or_default())?;

    // Write on one host through another host's node, read on a third.
    let out = dynakv_in(
        &h1,
        &dpath,
        &[
            "--node",
            &format!("{}:7100", ips[1]),
            "put",
            "cart:1",
            "apples",
            "--w",
            "all",
        ],
    );
    anyhow::ensure!(
        out.status.success(),
        "put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dynakv_in(
        &h3,
        &dpath,
        &[
            "--node",
            &format!("{}:7100", ips[2]),
            "--json",
            "get",
            "cart:1",
            "--r",
            "all",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    assert_eq!(v["values"], serde_json::json!(["apples"]));

    // Host 2 dies: quorum keeps working between the other two hosts.
    let _ = procs.0[1].kill();
    let _ = procs.0[1].wait();
    let out = dynakv_in(&h1, &dpath, &["--node", &all, "put", "cart:2", "pears"]);
    anyhow::ensure!(
        out.status.success(),
        "quorum put with a host down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dynakv_in(
        &h3,
        &dpath,
        &["--node", &format!("{}:7100", ips[2]), "get", "cart:2"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pears\n"));
    Ok(())
}
