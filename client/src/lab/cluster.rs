//! The lab's own local cluster: real `dynakv-node` processes on 127.0.0.1, in a temp
//! directory, on free ports, that the lab can pause (SIGSTOP), kill -9 and restart, and
//! whose fault layer it changes at run time.
//!
//! The layout (certificates, node configs with the scenario's settings, the admin
//! client's `client.toml`) comes from `dynakv-node dev --prepare-only`, so the lab only
//! talks to the node binary as a user would; the processes are started and signalled
//! here. Dropping the cluster kills every process and removes the directory.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_common::wire::FaultSpec;

use super::LabError;
use crate::settings::Settings;
use crate::{Client, ClientOptions};

/// Node settings the lab starts from: quick failure detection and repair, so a run of
/// seconds shows what a production cluster does in minutes. A scenario overrides them.
const LAB_NODE_DEFAULTS: &str = r#"
heartbeat_interval_ms = 200
failure_timeout_ms = 1000
hint_delivery_interval_ms = 500
anti_entropy_interval_ms = 2000
anti_entropy_exchanges_per_s = 500
anti_entropy_keys_per_s = 20000
reap_interval_ms = 1000
"#;

/// How long a restarted node is dialled before trying again.
const RESTART_DIAL: Duration = Duration::from_millis(200);

/// How a kill -9 of a node went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Killed {
    /// The node was running and died of the signal.
    BySignal,
    /// The node had already exited on its own, with this status: it crashed.
    Exited(String),
    /// No process of the node was running.
    NotRunning,
}

/// Node ports come from below Linux's ephemeral range, so client sockets never take one.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

fn lab_err(what: &'static str, reason: impl ToString) -> LabError {
    LabError::InvalidArgument {
        what,
        reason: reason.to_string(),
    }
}

/// Where the `dynakv-node` binary is: `explicit`, `$DYNAKV_NODE_BIN`, next to this
/// executable, or on the PATH.
pub fn node_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("DYNAKV_NODE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("dynakv-node");
        if beside.exists() {
            return beside;
        }
    }
    PathBuf::from("dynakv-node")
}

/// A base port with `n` consecutive free UDP ports on 127.0.0.1.
fn free_ports(n: u16) -> Result<u16, LabError> {
    for _ in 0..1000 {
        let base = PORTS.start + rand::random::<u16>() % (PORTS.end - PORTS.start - n);
        if (0..n).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    Err(lab_err(
        "ports",
        format!("no {n} free consecutive UDP ports found"),
    ))
}

/// One node process.
struct NodeProc {
    id: String,
    addr: String,
    config: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A running lab cluster.
pub struct LabCluster {
    dir: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<NodeProc>,
    settings: Settings,
    /// One admin client per node (reconnected after restarts).
    admins: Vec<Option<Arc<Client>>>,
    /// The faults in force, given again to a node that restarts (a new process starts
    /// with none).
    faults: FaultSpec,
}

impl LabCluster {
    /// Writes the layout and starts `nodes` processes with `replicas` replicas per key and
    /// `node_config` (TOML keys) on top of the lab defaults; waits until every node sees
    /// every other up.
    pub async fn start(
        binary: &Path,
        nodes: usize,
        replicas: usize,
        node_config: &toml::Table,
    ) -> Result<LabCluster, LabError> {
        let dir = tempfile::Builder::new()
            .prefix("dynakv-lab-")
            .tempdir()
            .map_err(|e| lab_err("temp dir", e))?;
        let mut config: toml::Table = LAB_NODE_DEFAULTS
            .parse()
            .map_err(|e| lab_err("lab defaults", e))?;
        for (k, v) in node_config {
            config.insert(k.clone(), v.clone());
        }
        let config_path = dir.path().join("lab-node.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).map_err(|e| lab_err("node config", e))?,
        )
        .map_err(|e| lab_err("node config", e))?;
        let base = free_ports(nodes as u16)?;
        let out = Command::new(binary)
            .arg("dev")
            .arg("--prepare-only")
            .arg("--dir")
            .arg(dir.path())
            .arg("--nodes")
            .arg(nodes.to_string())
            .arg("--replicas")
            .arg(replicas.to_string())
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--node-config")
            .arg(&config_path)
            .output()
            .map_err(|e| {
                lab_err(
                    "dynakv-node",
                    format!(
                        "cannot run {} ({e}); pass --node-bin or set DYNAKV_NODE_BIN",
                        binary.display()
                    ),
                )
            })?;
        if !out.status.success() {
            return Err(lab_err(
                "dynakv-node dev --prepare-only",
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let mut procs = Vec::new();
        for (i, line) in String::from_utf8_lossy(&out.stdout).lines().enumerate() {
            let Some((id, path)) = line.split_once(' ') else {
                continue;
            };
            procs.push(NodeProc {
                id: id.to_string(),
                addr: format!("127.0.0.1:{}", base as usize + i),
                config: PathBuf::from(path),
                child: None,
                paused: false,
            });
        }
        if procs.len() != nodes {
            return Err(lab_err("layout", "dynakv-node did not list every node"));
        }
        let settings = Settings::from_file(&dir.path().join("client.toml"))
            .map_err(|e| lab_err("client.toml", e))?;
        let mut cluster = LabCluster {
            dir,
            binary: binary.to_path_buf(),
            admins: vec![None; procs.len()],
            nodes: procs,
            settings,
            faults: FaultSpec::default(),
        };
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        cluster.wait_all_up(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), LabError> {
        let node = &mut self.nodes[i];
        let log_path = node.config.with_file_name("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| lab_err("node log", e))?;
        let err_log = log.try_clone().map_err(|e| lab_err("node log", e))?;
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| lab_err("dynakv-node", format!("cannot start {}: {e}", node.id)))?;
        node.child = Some(child);
        node.paused = false;
        self.admins[i] = None;
        Ok(())
    }

    /// The nodes' ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The nodes' addresses, in order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The index of node `id`.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// A new client of the cluster that talks to the nodes in `order` (admin certificate).
    pub async fn client(
        &self,
        order: Vec<String>,
        timeout: Duration,
    ) -> Result<Arc<Client>, LabError> {
        self.client_dialling(order, timeout, Duration::from_secs(1))
            .await
    }

    /// [`Self::client`], giving up on a connection after `connect_timeout`.
    async fn client_dialling(
        &self,
        order: Vec<String>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Arc<Client>, LabError> {
        let tls = self.settings.tls_config().map_err(|e| lab_err("tls", e))?;
        let mut opts = ClientOptions::new(order, tls);
        // The lab chooses the node each request goes through (its routing setting), and
        // a read goes through that node alone: no hedge to another.
        opts.route_by_key = false;
        opts.read_hedge = None;
        opts.connect_timeout = connect_timeout;
        opts.request_timeout = timeout;
        Client::connect(opts)
            .await
            .map_err(|e| lab_err("connect", e))
    }

    /// The admin client of node `i` (connected on first use, reconnected after a restart).
    pub async fn admin(&mut self, i: usize) -> Result<Arc<Client>, LabError> {
        if let Some(c) = &self.admins[i] {
            return Ok(c.clone());
        }
        let c = self
            .client(vec![self.nodes[i].addr.clone()], Duration::from_secs(10))
            .await?;
        self.admins[i] = Some(c.clone());
        Ok(c)
    }

    /// Whether node `i` is running and not paused.
    pub fn is_serving(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].paused
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: kill(2) on a child process this lab started, with a valid signal.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// kill -9 node `i`, and how that went.
    pub fn kill(&mut self, i: usize) -> Killed {
        let outcome = match self.nodes[i].child.take() {
            Some(mut child) => {
                let _ = child.kill();
                match child.wait() {
                    Ok(status) if status.signal() == Some(libc::SIGKILL) => Killed::BySignal,
                    Ok(status) => Killed::Exited(status.to_string()),
                    Err(e) => Killed::Exited(format!("unknown ({e})")),
                }
            }
            None => Killed::NotRunning,
        };
        self.nodes[i].paused = false;
        self.admins[i] = None;
        outcome
    }

    /// Restarts node `i` (killing it first if it runs) and waits until it serves.
    pub async fn restart(&mut self, i: usize) -> Result<(), LabError> {
        self.restart_all(&[i]).await
    }

    /// Restarts these nodes together (killing any that runs) and waits until each serves.
    pub async fn restart_all(&mut self, nodes: &[usize]) -> Result<(), LabError> {
        for &i in nodes {
            self.kill(i);
            self.spawn(i)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in nodes {
            self.wait_serving(i, deadline).await?;
        }
        Ok(())
    }

    /// Waits until the freshly started node `i` answers, then gives it the faults in force
    /// and keeps the client as its admin one.
    async fn wait_serving(&mut self, i: usize, deadline: Instant) -> Result<(), LabError> {
        while Instant::now() < deadline {
            // Dial briefly: a handshake sent before the node listens is lost, and QUIC
            // would resend it only after about a second.
            let dialled = self
                .client_dialling(
                    vec![self.nodes[i].addr.clone()],
                    Duration::from_secs(10),
                    RESTART_DIAL,
                )
                .await;
            if let Ok(c) = dialled {
                if c.status().await.is_ok() {
                    if !self.faults.is_empty() {
                        c.set_faults(self.faults.clone())
                            .await
                            .map_err(|e| lab_err("set faults", e))?;
                    }
                    self.admins[i] = Some(c);
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(lab_err(
            "restart",
            format!("{} did not come back within 30 s", self.nodes[i].id),
        ))
    }

    /// Waits until every running node sees every other running node up.
    pub async fn wait_all_up(&mut self, limit: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + limit;
        let serving: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.is_serving(i))
            .collect();
        let ids: Vec<String> = serving.iter().map(|&i| self.nodes[i].id.clone()).collect();
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut ready = 0;
            for &i in &serving {
                match self.admin(i).await {
                    Ok(c) => match c.status().await {
                        Ok(s) => {
                            let all = s
                                .members
                                .iter()
                                .filter(|m| ids.iter().any(|id| id == m.id.as_str()))
                                .all(|m| m.up);
                            if all {
                                ready += 1;
                            } else {
                                last = format!("{} does not see every node up yet", s.node);
                            }
                        }
                        Err(e) => {
                            last = e.to_string();
                            self.admins[i] = None;
                        }
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if ready == serving.len() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(lab_err(
            "cluster",
            format!("not every node is up after {limit:?}: {last}"),
        ))
    }

    /// Sends the same fault spec to every serving node (and to nodes that restart later).
    pub async fn set_faults(&mut self, spec: &FaultSpec) -> Result<(), LabError> {
        self.faults = spec.clone();
        for i in 0..self.nodes.len() {
            if !self.is_serving(i) {
                continue;
            }
            let c = self.admin(i).await?;
            c.set_faults(spec.clone())
                .await
                .map_err(|e| lab_err("set faults", format!("{}: {e}", self.nodes[i].id)))?;
        }
        Ok(())
    }

    /// Runs one anti-entropy round on every serving node.
    pub async fn anti_entropy_now(&mut self) -> Result<(), LabError> {
        for i in 0..self.nodes.len() {
            if self.is_serving(i) {
                let c = self.admin(i).await?;
                c.anti_entropy(true)
                    .await
                    .map_err(|e| lab_err("anti-entropy", e))?;
            }
        }
        Ok(())
    }

    /// The digest of each node's own copy of `key` (None: no copy; nodes that do not
    /// serve are left out).
    pub async fn digests(
        &mut self,
        key: &[u8],
    ) -> Result<Vec<(usize, bool, Option<u128>)>, LabError> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.is_serving(i) {
                continue;
            }
            let c = self.admin(i).await?;
            let d = c
                .debug_replica(key)
                .await
                .map_err(|e| lab_err("debug replica", e))?;
            let primary = d.primaries.contains(&d.node);
            out.push((i, primary, d.state.map(|s| s.digest())));
        }
        Ok(out)
    }

    /// Stops every node cleanly (SIGTERM, then kill after 10 s).
    pub async fn stop(mut self) {
        for c in self.admins.iter().flatten() {
            c.close().await;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.signal(i, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Drop kills whatever is left and removes the directory.
    }

    /// The directory holding the nodes' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SAFETY: as in `signal`: continue a stopped child so SIGKILL is delivered.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
