//! `dynakv-node dev`: a local cluster in one command, for trying dynakv out.
//!
//! Creates (once) a cluster CA, node and client certificates and one config file per
//! node under a directory (default `./dynakv-dev`), starts each node as its own
//! `dynakv-node run` process on 127.0.0.1, writes `client.toml` so that `dynakv` run
//! from the same directory finds the cluster with no flags, waits until every node sees
//! every other one, and stops the nodes on Ctrl-C. Nodes are real processes: `kill -9`
//! one to watch the cluster route around it, and restart it with the printed command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use dynakv_client::settings::DEFAULT_CONFIG_PATH;
use dynakv_client::{Client, ClientOptions};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::NodeConfig;

/// Settings of a local development cluster.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where certificates, configs, data and logs go.
    pub dir: PathBuf,
    /// How many nodes.
    pub nodes: usize,
    /// Port of the first node; the others follow.
    pub base_port: u16,
    /// Replicas per key (N), at most `nodes`.
    pub replicas: usize,
    /// TOML keys merged into every node's config (e.g. intervals, `conflict_policy`).
    pub node_config: Option<toml::Table>,
}

/// The client configuration file `dynakv` reads.
pub const CLIENT_CONFIG: &str = "client.toml";

/// Writes certificates and config files for `dynakv-node dev`; returns the config path
/// of each node.
pub fn prepare(opts: &DevOptions) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if opts.nodes == 0 || opts.replicas == 0 || opts.replicas > opts.nodes {
        bail!(
            "a dev cluster needs at least one node and 1 <= replicas <= nodes (got {} nodes, {} replicas)",
            opts.nodes,
            opts.replicas
        );
    }
    let members: Vec<(String, SocketAddr)> = (0..opts.nodes)
        .map(|i| {
            let port = u16::try_from(opts.base_port as usize + i)
                .context("--base-port leaves no room for every node below port 65536")?;
            Ok((
                format!("n{}", i + 1),
                SocketAddr::from(([127, 0, 0, 1], port)),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let overrides = opts.node_config.clone();
    let mut failure = None;
    let configs = write_layout(&opts.dir, &members, opts.replicas, |c| {
        if let Some(table) = &overrides {
            if let Err(e) = apply_overrides(c, table) {
                failure.get_or_insert(e);
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    configs
}

/// Merges `table` into a node config (keys of `NodeConfig`; nested tables merge).
pub fn apply_overrides(config: &mut NodeConfig, table: &toml::Table) -> anyhow::Result<()> {
    let mut value = toml::Table::try_from(&*config)?;
    merge_tables(&mut value, table);
    let merged: NodeConfig = value
        .try_into()
        .context("the node config overrides do not fit the node configuration")?;
    merged.validate()?;
    *config = merged;
    Ok(())
}

fn merge_tables(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge_tables(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Writes a local cluster under `dir`: a CA and certificates (kept if they exist),
/// `<id>/node.toml` for each member (TLS files and data next to it), and `client.toml`
/// for the CLI. `tweak` adjusts each node's config before it is written. Returns each
/// member's id and config path. Shared by `dynakv-node dev` and the test harness.
pub fn write_layout(
    dir: &Path,
    members: &[(String, SocketAddr)],
    replicas: usize,
    mut tweak: impl FnMut(&mut NodeConfig),
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    crate::certs::ensure_dev_certs(dir, &ids, &hosts)?;
    let peers: Vec<String> = members
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect();
    let mut configs = Vec::new();
    for (id, addr) in members {
        let mut config = NodeConfig {
            id: id.clone(),
            listen: *addr,
            data_dir: PathBuf::from("data"),
            ca_cert: Some("ca.pem".into()),
            cert: Some("node.pem".into()),
            key: Some("node.key.pem".into()),
            peers: peers.clone(),
            replicas,
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let path = dir.join(id).join("node.toml");
        std::fs::write(&path, toml::to_string_pretty(&config)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        configs.push((id.clone(), path));
    }
    let nodes: Vec<String> = members.iter().map(|(_, addr)| addr.to_string()).collect();
    let client = format!(
        "# Written by dynakv-node: how `dynakv` reaches this cluster.\n\
         nodes = {nodes:?}\nca = \"client/ca.pem\"\ncert = \"client/client.pem\"\nkey = \"client/client.key.pem\"\n"
    );
    std::fs::write(dir.join(CLIENT_CONFIG), client)?;
    Ok(configs)
}

fn spawn_node(exe: &Path, id: &str, config: &Path) -> anyhow::Result<Child> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .with_context(|| format!("cannot open the log of {id}"))?;
    let child = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {id}"))?;
    Ok(child)
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
}

/// Writes the layout only (certificates, node configs, `client.toml`) and says where.
pub fn prepare_only(opts: &DevOptions) -> anyhow::Result<()> {
    for (id, path) in prepare(opts)? {
        println!("{id} {}", path.display());
    }
    Ok(())
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    // Listen for signals before starting anything, so a stop request that arrives during
    // start-up still stops the nodes instead of orphaning them.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let configs = prepare(&opts)?;
    let exe = std::env::current_exe().context("cannot find the dynakv-node executable")?;
    let mut children = Vec::new();
    for (id, path) in &configs {
        let child = spawn_node(&exe, id, path)?;
        println!(
            "started {id} (pid {}) on 127.0.0.1:{}  log: {}",
            child.id().unwrap_or(0),
            opts.base_port as usize + children.len(),
            path.with_file_name("node.log").display()
        );
        children.push((id.clone(), path.clone(), Some(child)));
    }

    let dir = opts.dir.display();
    let ready = tokio::select! {
        r = wait_until_ready(&opts) => Some(r),
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
    };
    let mut stopping = ready.is_none();
    // Point at the dynakv binary built next to this one, if there is one.
    let cli = exe
        .parent()
        .map(|d| d.join("dynakv"))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "dynakv".to_string());
    // The CLI finds ./dynakv-dev/client.toml on its own; any other directory it is told.
    let client_config = opts.dir.join(CLIENT_CONFIG);
    let client_config = std::path::absolute(&client_config).unwrap_or(client_config);
    let (cli, from) =
        if std::path::absolute(DEFAULT_CONFIG_PATH).ok().as_ref() == Some(&client_config) {
            (cli, "From this directory, try")
        } else {
            (format!("{cli} --config {}", client_config.display()), "Try")
        };
    match ready {
        Some(Ok(())) => println!(
            "\ndynakv dev cluster is up: {} nodes, N={}.\n\
             {from}:\n\
             \x20 {cli} put cart:1 apples\n\
             \x20 {cli} get cart:1\n\
             \x20 {cli} status\n\
             (client settings: {dir}/{CLIENT_CONFIG}). Ctrl-C stops the nodes started here.",
            opts.nodes, opts.replicas
        ),
        Some(Err(e)) => eprintln!("warning: the cluster is not fully up yet: {e:#}"),
        None => {}
    }

    let mut poll = tokio::time::interval(Duration::from_millis(500));
    while !stopping {
        tokio::select! {
            _ = sigint.recv() => stopping = true,
            _ = sigterm.recv() => stopping = true,
            _ = poll.tick() => {}
        }
        for (id, path, slot) in children.iter_mut() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    println!(
                        "{id} exited ({status}); restart it with:\n  {} run --config {}",
                        exe.display(),
                        path.display()
                    );
                    *slot = None;
                }
            }
        }
    }
    println!("stopping the cluster...");
    for (_, _, child) in children
        .iter()
        .filter_map(|(i, p, c)| c.as_ref().map(|c| (i, p, c)))
    {
        terminate(child);
    }
    for (id, _, slot) in children.iter_mut() {
        if let Some(child) = slot {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                eprintln!("{id} did not stop within 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    Ok(())
}

/// Polls until every node reports every member up, or 30 s pass.
async fn wait_until_ready(opts: &DevOptions) -> anyhow::Result<()> {
    let settings = dynakv_client::settings::Settings::from_file(&opts.dir.join(CLIENT_CONFIG))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut ready = 0;
        for node in &settings.nodes {
            let mut one = ClientOptions::new(vec![node.clone()], settings.tls_config()?);
            one.route_by_key = false;
            one.connect_timeout = Duration::from_millis(500);
            one.request_timeout = Duration::from_secs(2);
            match Client::connect(one).await {
                Ok(client) => match client.status().await {
                    Ok(s) if s.members.iter().all(|m| m.up) => ready += 1,
                    Ok(_) => last = format!("{node} does not see every member yet"),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        if ready == settings.nodes.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{last}")
}
