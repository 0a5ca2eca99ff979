//! The `dynakv-node` command line: run a node, run a local dev cluster, or make
//! certificates. It parses arguments and calls the library; `src/main.rs` only calls
//! [`main`], so tests can build the same program under another name.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::dev::DevOptions;
use crate::{NodeConfig, NodeHandle};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dynakv-node",
    version,
    about = "A node of dynakv, a Dynamo-style leaderless key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (settings from --config and/or flags; flags win).
    Run(Box<RunArgs>),
    /// Start a local cluster of separate node processes on 127.0.0.1, with certificates
    /// and configs generated on first start, until Ctrl-C.
    Dev {
        /// Directory for certificates, configs, data and logs.
        #[arg(long, default_value = "dynakv-dev")]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Port of the first node (UDP); the others use the following ports.
        #[arg(long, default_value_t = 7101)]
        base_port: u16,
        /// Replicas per key (N).
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// A TOML file of node settings applied to every node (e.g. `conflict_policy`,
        /// `anti_entropy_interval_ms`); see the README's configuration table.
        #[arg(long)]
        node_config: Option<PathBuf>,
        /// Only write the certificates and configs (printing each node's config path),
        /// do not start the nodes: for tools that run the processes themselves.
        #[arg(long)]
        prepare_only: bool,
    },
    /// Cluster CA management.
    Ca {
        #[command(subcommand)]
        command: CaCmd,
    },
    /// Issue certificates signed by the cluster CA.
    Cert {
        #[command(subcommand)]
        command: CertCmd,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create a new cluster CA (ca.pem, ca.key.pem) in DIR. Keep ca.key.pem secret.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Issue a node certificate (node.pem, node.key.pem, ca.pem) into OUT.
    Node {
        /// Directory holding the CA (ca.pem, ca.key.pem).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The node's id (also its TLS name).
        #[arg(long)]
        id: String,
        /// Host names or IP addresses the node is reached at (repeatable).
        #[arg(long = "host", value_delimiter = ',')]
        hosts: Vec<String>,
        /// Output directory, e.g. the node's <data_dir>/tls.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate (client.pem, client.key.pem, ca.pem) into OUT.
    Client {
        #[arg(long)]
        ca_dir: PathBuf,
        /// A name for the client (its certificate's common name).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// Make it an admin certificate: it may also run admin commands (`dynakv admin`,
        /// `dynakv debug`, fault injection).
        #[arg(long)]
        admin: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML config file; see the README for every key.
    #[arg(long, env = "DYNAKV_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Node id: a DNS label (a-z, 0-9, '-'), also the name in the node's certificate.
    #[arg(long)]
    id: Option<String>,
    /// UDP address to listen on [default: 0.0.0.0:7100].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// host:port others use to reach this node [default: the listen address].
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory (store, and by default tls/ca.pem, tls/node.pem, tls/node.key.pem).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Cluster CA certificate [default: <data-dir>/tls/ca.pem].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Node certificate [default: <data-dir>/tls/node.pem].
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Node private key [default: <data-dir>/tls/node.key.pem].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Another member, as id@host:port (repeatable or comma-separated). Every node lists
    /// the same members.
    #[arg(long = "peer", value_delimiter = ',')]
    peers: Vec<String>,
    /// Replicas per key (N) [default: 3].
    #[arg(long)]
    replicas: Option<usize>,
    /// Ring partitions (Q), a power of two, the same on every node [default: 64].
    #[arg(long)]
    partitions: Option<u32>,
    /// fsync (acknowledge after the write is on disk) or relaxed [default: fsync].
    #[arg(long)]
    durability: Option<String>,
    /// Default request deadline in milliseconds [default: 2000].
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (TCP) [default: off].
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Runtime threads serving requests [default: from the config, else 1].
    #[arg(long)]
    worker_threads: Option<usize>,
    /// How concurrent writes are resolved, the same on every node [default: dvv].
    /// dvv keeps them all as siblings; lww (last writer wins, by timestamp) SILENTLY
    /// LOSES concurrent writes — for comparison only.
    #[arg(long)]
    conflict_policy: Option<dynakv_common::wire::ConflictPolicy>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = self.id {
            c.id = v;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.advertise {
            c.advertise = Some(v);
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.ca_cert {
            c.ca_cert = Some(v);
        }
        if let Some(v) = self.cert {
            c.cert = Some(v);
        }
        if let Some(v) = self.key {
            c.key = Some(v);
        }
        if !self.peers.is_empty() {
            c.peers = self.peers;
        }
        if let Some(v) = self.replicas {
            c.replicas = v;
        }
        if let Some(v) = self.partitions {
            c.partitions = v;
        }
        if let Some(v) = self.durability {
            c.durability = v;
        }
        if let Some(v) = self.request_timeout_ms {
            c.request_timeout_ms = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = Some(v);
        }
        if let Some(v) = self.conflict_policy {
            c.conflict_policy = v;
        }
        if let Some(v) = self.worker_threads {
            c.worker_threads = v;
        }
        Ok(c)
    }
}

/// Parses the command line and runs the command; the whole program behind the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => {
            // Read once, before the runtime: a node runs on as many runtime threads as
            // its config says, spinning as long as it says before they sleep.
            let config = (*args).into_config();
            // The node refuses a spin past the maximum with a sentence at start; until
            // it does, the clamp keeps the runtime from spinning longer.
            let spin =
                |us: u64| std::time::Duration::from_micros(us.min(crate::config::MAX_IDLE_SPIN_US));
            let runtime = match &config {
                Ok(c) => dynakv_client::cli::RuntimeOptions {
                    threads: Some(c.worker_threads),
                    idle_spin: spin(c.idle_spin_us),
                    idle_spin_light: spin(c.idle_spin_light_us),
                },
                // The error is reported by run_node, like any other.
                Err(_) => dynakv_client::cli::RuntimeOptions::default(),
            };
            dynakv_client::cli::run_binary("info", runtime, run_node(config))
        }
        command => dynakv_client::cli::run_binary(
            "info",
            dynakv_client::cli::RuntimeOptions::default(),
            run(command),
        ),
    }
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down.
async fn run_node(config: anyhow::Result<NodeConfig>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = config?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let node = NodeHandle::start(config).await?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        // main() runs nodes itself (it reads the config before the runtime); this arm
        // keeps run() whole for any other caller.
        Cmd::Run(args) => run_node((*args).into_config()).await,
        Cmd::Dev {
            dir,
            nodes,
            base_port,
            replicas,
            node_config,
            prepare_only,
        } => {
            let node_config = match node_config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some(
                        text.parse::<toml::Table>()
                            .with_context(|| format!("{} is not TOML", path.display()))?,
                    )
                }
                None => None,
            };
            let opts = DevOptions {
                dir,
                nodes,
                base_port,
                replicas,
                node_config,
            };
            if prepare_only {
                crate::dev::prepare_only(&opts)
            } else {
                crate::dev::run(opts).await
            }
        }
        Cmd::Ca {
            command: CaCmd::Init { dir },
        } => {
            crate::certs::init_ca(&dir)?;
            println!(
                "created {0}/ca.pem and {0}/ca.key.pem (keep the key secret)",
                dir.display()
            );
            Ok(())
        }
        Cmd::Cert {
            command:
                CertCmd::Node {
                    ca_dir,
                    id,
                    hosts,
                    out,
                },
        } => {
            crate::certs::issue_node_cert(&ca_dir, &out, &id, &hosts)?;
            println!(
                "wrote {0}/node.pem, {0}/node.key.pem and {0}/ca.pem",
                out.display()
            );
            Ok(())
        }
        Cmd::Cert {
            command:
                CertCmd::Client {
                    ca_dir,
                    name,
                    out,
                    admin,
                },
        } => {
            crate::certs::issue_client_cert(&ca_dir, &out, &name, admin)?;
            println!(
                "wrote {0}/client.pem, {0}/client.key.pem and {0}/ca.pem",
                out.display()
            );
            Ok(())
        }
    }
}
