//! Test harness: a cluster of real `dynakv-node` processes on 127.0.0.1.
//!
//! [`Cluster::start`] makes a temp dir with a CA and per-node certificates and configs,
//! picks free ports from the OS, starts every node as a child process and waits until
//! each sees every member up. Tests then `kill` (SIGKILL), `restart`, and talk to nodes
//! through the real client library. Every wait polls a condition with a deadline;
//! dropping the cluster kills its processes and deletes the directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dynakv_client::settings::Settings;
use dynakv_client::{Client, ClientOptions};
use dynakv_common::wire::DebugReplica;
use dynakv_common::{NodeId, Ring};
use dynakv_node::config::NodeConfig;

/// The node binary built for these tests.
pub fn node_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_node-under-test"))
}

/// The CLI binary built for these tests.
pub fn cli_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dynakv-under-test"))
}

/// Node ports come from below Linux's ephemeral range (32768-60999), so that the
/// ephemeral ports clients bind while tests run in parallel can never take a node's port
/// between the check here and the node's own bind (or its restart).
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A base port with `n` consecutive free UDP ports on 127.0.0.1, outside the ephemeral range.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..1000 {
        let base =
            NODE_PORTS.start + rand::random::<u16>() % (NODE_PORTS.end - NODE_PORTS.start - n);
        let all_free = (0..n).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of {n} free UDP ports found in {NODE_PORTS:?}");
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM to `child` and waits (polling, 30 s at most) for it to exit; kills it
/// if it does not.
pub async fn terminate(child: &mut Child, what: &str) -> anyhow::Result<()> {
    // SAFETY: kill(2) on a child process this test spawned, with a valid signal.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let exited = eventually(
        Duration::from_secs(30),
        &format!("{what} exits after SIGTERM"),
        || {
            let done = matches!(child.try_wait(), Ok(Some(_)));
            async move { done.then_some(()) }
        },
    )
    .await;
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    exited
}

/// How to build a test cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub replicas: usize,
    /// Applied to every node's config after the defaults.
    pub tweak: Arc<dyn Fn(&mut NodeConfig) + Send + Sync>,
    /// Nodes (by index) that get a certificate from a different CA.
    pub foreign_ca: Vec<usize>,
    /// Nodes (by index) that are expected not to join the others (so start-up does not
    /// wait for them to be seen up).
    pub isolated: Vec<usize>,
    /// Nodes (by index) whose stdout and stderr go to `/dev/full`: every log line they
    /// write fails with ENOSPC, as on a full log disk.
    pub log_to_full_disk: Vec<usize>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            replicas: 3,
            tweak: Arc::new(|_| {}),
            foreign_ca: Vec::new(),
            isolated: Vec::new(),
            log_to_full_disk: Vec::new(),
        }
    }
}

/// One node process.
pub struct NodeProc {
    pub id: String,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Log to `/dev/full` instead of `log` ([`ClusterOptions::log_to_full_disk`]).
    log_to_full_disk: bool,
    child: Option<Child>,
}

/// A running cluster of node processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// Settings for a client of this cluster (all nodes, the dev client certificate).
    pub settings: Settings,
}

impl Cluster {
    /// Starts a cluster and waits until every node sees every member up.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("dynakv-test-").tempdir()?;
        // One run of ports for the whole cluster: ports drawn one at a time could give
        // two of its nodes the same one (each is free until the first node binds it).
        let base = free_port_run(u16::try_from(opts.nodes)?);
        let members: Vec<(String, std::net::SocketAddr)> = (1..=opts.nodes)
            .zip(base..)
            .map(|(i, port)| (format!("n{i}"), ([127, 0, 0, 1], port).into()))
            .collect();
        let tweak = opts.tweak.clone();
        let configs = dynakv_node::dev::write_layout(dir.path(), &members, opts.replicas, |c| {
            // Detect failures faster than the defaults, so tests wait less.
            c.heartbeat_interval_ms = 200;
            c.failure_timeout_ms = 1_000;
            tweak(c);
        })?;
        if !opts.foreign_ca.is_empty() {
            let other = dir.path().join("other-ca");
            let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
            dynakv_node::certs::ensure_dev_certs(&other, &ids, &["127.0.0.1".to_string()])?;
            for &i in &opts.foreign_ca {
                let id = &ids[i];
                for f in ["node.pem", "node.key.pem", "ca.pem"] {
                    std::fs::copy(other.join(id).join(f), dir.path().join(id).join(f))?;
                }
            }
        }
        let nodes = members
            .iter()
            .zip(configs)
            .enumerate()
            .map(|(i, ((id, addr), (_, config)))| NodeProc {
                id: id.clone(),
                addr: addr.to_string(),
                log: config.with_file_name("node.log"),
                log_to_full_disk: opts.log_to_full_disk.contains(&i),
                config,
                child: None,
            })
            .collect();
        let client_toml = dir.path().join(dynakv_node::dev::CLIENT_CONFIG);
        let settings = Settings::from_file(&client_toml)?;
        let mut cluster = Cluster {
            dir,
            nodes,
            settings,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        let healthy: Vec<usize> = (0..opts.nodes)
            .filter(|i| !opts.foreign_ca.contains(i) && !opts.isolated.contains(i))
            .collect();
        for &i in &healthy {
            cluster.wait_sees_up(i, &healthy).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = if node.log_to_full_disk {
            std::fs::OpenOptions::new().write(true).open("/dev/full")?
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&node.log)?
        };
        let child = Command::new(node_binary())
            .arg("run")
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start node process")?;
        node.child = Some(child);
        Ok(())
    }

    /// The path of `client.toml` for this cluster.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    /// A client that tries every node, starting with node `first`.
    pub async fn client_from(&self, first: usize) -> anyhow::Result<Arc<Client>> {
        let mut nodes: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        nodes.rotate_left(first);
        self.client_with(nodes).await
    }

    /// A bare QUIC connection to node `i` with the cluster's client certificate, for
    /// tests that write frames (or garbage) themselves. Keep the endpoint while the
    /// connection is used.
    pub async fn raw_connection(
        &self,
        i: usize,
    ) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
        self.connect_with(i, self.settings.tls_config()?).await
    }

    /// A raw connection to node `i` made with node `as_node`'s own certificate: what a
    /// peer may send.
    pub async fn peer_connection(
        &self,
        i: usize,
        as_node: usize,
    ) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
        let certs = self.dir.path().join(&self.nodes[as_node].id);
        let tls = dynakv_client::tls::client_config(
            &certs.join("ca.pem"),
            &certs.join("node.pem"),
            &certs.join("node.key.pem"),
            dynakv_common::wire::ALPN,
        )?;
        self.connect_with(i, tls).await
    }

    /// A raw QUIC connection to node `i` presenting `tls`'s certificate.
    async fn connect_with(
        &self,
        i: usize,
        tls: quinn::ClientConfig,
    ) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
        let addr: std::net::SocketAddr = self.nodes[i].addr.parse()?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(tls);
        let conn = endpoint
            .connect(addr, dynakv_common::wire::NODE_SERVER_NAME)?
            .await?;
        Ok((endpoint, conn))
    }

    /// A client that talks only to node `i`.
    pub async fn client_only(&self, i: usize) -> anyhow::Result<Arc<Client>> {
        self.client_with(vec![self.nodes[i].addr.clone()]).await
    }

    async fn client_with(&self, nodes: Vec<String>) -> anyhow::Result<Arc<Client>> {
        let mut opts = ClientOptions::new(nodes, self.settings.tls_config()?);
        // Tests choose the coordinating node on purpose, and a read stays with it.
        opts.route_by_key = false;
        opts.read_hedge = None;
        opts.connect_timeout = Duration::from_secs(2);
        Ok(Client::connect(opts).await?)
    }

    /// Whether node `i`'s process is still running (not exited, killed or stopped).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills node `i` with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i`'s process with SIGSTOP: its sockets stay open and it answers
    /// nothing, as a stalled host would. [`Cluster::resume`] (or the cluster's end, which
    /// kills it) undoes it.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// Lets node `i` run again after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: kill(2) on the pid of a child this harness started and has not
            // reaped (it is still `Some`), so the pid is not reused.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Stops node `i` cleanly with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            terminate(&mut child, "node").await?;
        }
        Ok(())
    }

    /// Restarts a stopped or killed node on the same port and data dir; waits until it
    /// serves and every other running node has heard from the new process.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        let addr = self.nodes[i].addr.clone();
        let id = self.nodes[i].id.clone();
        let this = &*self;
        let id_ref = &id;
        let incarnation = eventually(
            Duration::from_secs(30),
            &format!("{addr} serves again"),
            || async move {
                let client = this.client_only(i).await.ok()?;
                let status = client.status().await.ok()?;
                status
                    .members
                    .iter()
                    .find(|m| m.id.as_str() == id_ref)
                    .map(|m| m.incarnation)
            },
        )
        .await?;
        for j in 0..self.nodes.len() {
            if j == i || self.nodes[j].child.is_none() {
                continue;
            }
            let id_ref = &id;
            eventually(
                Duration::from_secs(30),
                &format!("{} hears from the restarted {id}", self.nodes[j].id),
                || async move {
                    let client = this.client_only(j).await.ok()?;
                    let status = client.status().await.ok()?;
                    status
                        .members
                        .iter()
                        .any(|m| m.id.as_str() == id_ref && m.incarnation == incarnation && m.up)
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until node `i` reports the members `which` up.
    pub async fn wait_sees_up(&self, i: usize, which: &[usize]) -> anyhow::Result<()> {
        self.wait_status(i, which, true).await
    }

    /// Waits until node `i` reports the members `which` down.
    pub async fn wait_sees_down(&self, i: usize, which: &[usize]) -> anyhow::Result<()> {
        self.wait_status(i, which, false).await
    }

    async fn wait_status(&self, i: usize, which: &[usize], up: bool) -> anyhow::Result<()> {
        let ids: Vec<String> = which.iter().map(|&j| self.nodes[j].id.clone()).collect();
        let what = format!(
            "{} sees {ids:?} {}",
            self.nodes[i].id,
            if up { "up" } else { "down" }
        );
        let ids = &ids;
        eventually(Duration::from_secs(30), &what, || async move {
            let client = self.client_only(i).await.ok()?;
            let status = client.status().await.ok()?;
            let ok = status
                .members
                .iter()
                .filter(|m| ids.iter().any(|id| id == m.id.as_str()))
                .all(|m| m.up == up);
            ok.then_some(())
        })
        .await
        .with_context(|| format!("log of node {}:\n{}", self.nodes[i].id, self.log_tail(i)))
    }

    /// Node `i`'s local state of `key` (its primary copy and the hints it holds).
    pub async fn debug(&self, i: usize, key: &[u8]) -> anyhow::Result<DebugReplica> {
        let client = self.client_only(i).await?;
        let d = client.debug_replica(key).await?;
        client.close().await;
        Ok(d)
    }

    /// The sum of counter `name` over `nodes`.
    pub async fn counter_sum(
        &self,
        nodes: impl IntoIterator<Item = usize>,
        name: &str,
    ) -> anyhow::Result<u64> {
        let mut total = 0;
        for i in nodes {
            let counters = self.counters(i).await?;
            total += counters
                .get(name)
                .copied()
                .with_context(|| format!("node {i} reports no counter {name}"))?;
        }
        Ok(total)
    }

    /// Node `i`'s counters.
    pub async fn counters(&self, i: usize) -> anyhow::Result<BTreeMap<String, u64>> {
        let client = self.client_only(i).await?;
        let status = client.status().await?;
        client.close().await;
        Ok(status.counters.into_iter().collect())
    }

    /// The indices of `key`'s primaries and then its fallbacks, in ring order, for a
    /// cluster with `n` replicas per key (the ring every node computes).
    pub fn placement(&self, key: &[u8], n: usize) -> (Vec<usize>, Vec<usize>) {
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|node| NodeId::new(node.id.clone()).expect("test ids are valid"))
            .collect();
        let ring = Ring::new(dynakv_common::ring::DEFAULT_PARTITIONS, &ids).expect("ring");
        let p = ring.partition_of(key);
        let index = |id: &NodeId| ids.iter().position(|x| x == id).expect("member");
        let primaries = ring.preference_list(p, n).iter().map(index).collect();
        let fallbacks = ring.fallbacks(p, n).iter().map(index).collect();
        (primaries, fallbacks)
    }

    /// The last lines of node `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // DYNAKV_TEST_KEEP=1 keeps the directory (configs, data, logs) for a post-mortem.
        if std::env::var_os("DYNAKV_TEST_KEEP").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().expect("temp dir"),
            ));
        }
    }
}
