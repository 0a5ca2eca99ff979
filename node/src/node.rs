//! A running node: builds every part from a [`NodeConfig`], owns their tasks, and stops
//! them on one signal.
//!
//! `Node::start(config)` opens storage, loads TLS, binds the QUIC endpoint, and spawns
//! the server and the failure detector; it returns a [`NodeHandle`] whose
//! [`NodeHandle::shutdown`] answers new requests "shutting down" (so clients go to
//! another node), lets the requests in flight finish (for at most 5 s), persists storage,
//! records the clean shutdown and waits for every task.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynakv_common::net::ConnError;
use dynakv_common::limits::Limits;
use dynakv_common::wire::{
    ClusterShape, ErrorCode, Request, Response, ALPN, CLOSE_ABORTED, CLOSE_DRAINED,
};
use dynakv_common::{NodeId, Ring};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::info;

use crate::config::NodeConfig;
use crate::membership::Membership;
use crate::metrics::Counters;
use crate::replica::Replica;
use crate::storage::{Durability, Storage, StorageOptions};
use crate::tls::NodeTls;
use crate::transport::Transport;

/// Longest time shutdown waits for requests in flight to finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Shared state of a node, handed to every request handler and background task.
pub struct NodeState {
    /// The configuration the node started with.
    pub config: NodeConfig,
    /// Replicas per key (N).
    pub n: usize,
    /// Key and value size limits.
    pub limits: Limits,
    /// Members, ring and failure detector.
    pub membership: Membership,
    /// This node's versioned store.
    pub replica: Replica,
    /// Outgoing peer requests.
    pub transport: Transport,
    /// Operator-facing counters.
    pub counters: Counters,
    /// Permits for client requests in flight; none left means "overloaded".
    pub in_flight: Arc<Semaphore>,
    /// Permits for peer requests in flight, separate so client load cannot starve replication.
    pub peer_in_flight: Arc<Semaphore>,
    /// Set when shutdown starts: new requests are refused as "shutting down".
    pub stopping: AtomicBool,
}

impl NodeState {
    /// Sends a request to a peer and feeds the outcome to the failure detector: any
    /// answer means the peer is alive, a transport failure counts against it.
    pub async fn call_peer(
        &self,
        peer: &NodeId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        let result = self.transport.call(peer, req, timeout).await;
        match &result {
            Ok(_) => {
                self.membership.record_ok(peer);
            }
            Err(_) => {
                self.membership.record_failure(peer);
            }
        }
        result
    }

    /// Every counter with its name: request counters and the storage's group-commit
    /// counters. What `dynakv status` shows and the Prometheus endpoint exports.
    pub fn counter_snapshot(&self) -> Vec<(String, u64)> {
        let mut counters = self.counters.snapshot();
        let storage = self.replica.storage().stats();
        counters.extend([
            ("storage_fsyncs".to_string(), storage.fsyncs),
            ("storage_writes".to_string(), storage.writes_committed),
            ("storage_writes_synced".to_string(), storage.writes_synced),
            (
                "storage_largest_fsync_group".to_string(),
                storage.largest_group,
            ),
        ]);
        counters
    }

    /// What peers must agree on: N and the ring.
    pub fn shape(&self) -> ClusterShape {
        ClusterShape {
            replicas: self.n as u8,
            ring: self.membership.ring().fingerprint(),
        }
    }
}

/// A running node; dropping it without `shutdown` leaves the tasks running until exit.
pub struct NodeHandle {
    /// The shared state (for tests and embedding).
    pub state: Arc<NodeState>,
    /// The address the endpoint is bound to.
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: quinn::Endpoint,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl NodeHandle {
    /// Starts a node.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
        let (me, peers) = config.validate()?;
        let tls = NodeTls::load(&config.ca_path(), &config.cert_path(), &config.key_path())?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Other(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let durability = if config.durability == "relaxed" {
            Durability::Relaxed
        } else {
            Durability::Fsync
        };
        let storage = Storage::open(
            &config.data_dir.join("store"),
            StorageOptions { durability },
        )?;
        // A frame shared by N replicas' states: even N fully diverged states merged on
        // one replica still fit in one frame, so the key stays readable and resolvable.
        let state_budget = config.limits().max_frame_bytes() / config.replicas.max(2);
        let replica = Replica::open(storage, me.as_str(), state_budget).await?;

        let mut addrs: BTreeMap<NodeId, String> = peers
            .iter()
            .map(|p| (p.id.clone(), p.addr.clone()))
            .collect();
        addrs.insert(me.clone(), config.advertised());
        let ids: Vec<NodeId> = addrs.keys().cloned().collect();
        let ring =
            Ring::new(config.partitions, &ids).map_err(|e| StartError::Other(e.to_string()))?;

        let server_config = tls.server_config(ALPN)?;
        let mut endpoint =
            quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
                StartError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        endpoint.set_default_client_config(tls.client_config(ALPN)?);
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;

        let limits = config.limits();
        let peer_addrs: HashMap<NodeId, String> = peers
            .iter()
            .map(|p| (p.id.clone(), p.addr.clone()))
            .collect();
        let transport = Transport::new(
            endpoint.clone(),
            peer_addrs,
            limits.max_frame_bytes(),
            config.fault.clone(),
        );
        let state = Arc::new(NodeState {
            n: config.replicas,
            limits,
            membership: Membership::new(me.clone(), addrs, ring, config.failure_timeout()),
            replica,
            transport,
            counters: Counters::default(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            peer_in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            stopping: AtomicBool::new(false),
            config,
        });

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::server::serve(
            state.clone(),
            endpoint.clone(),
            stop_rx.clone(),
        ));
        if let Some(addr) = state.config.metrics_listen {
            crate::metrics::install_exporter(addr).map_err(StartError::Other)?;
            tasks.spawn(export_metrics(state.clone(), stop_rx.clone()));
            info!(addr = %addr, "metrics endpoint listening");
        }
        tasks.spawn(heartbeat(state.clone(), stop_rx));
        info!(node = %me, addr = %local_addr, actor = %state.replica.actor(), "node started");
        Ok(NodeHandle {
            state,
            local_addr,
            stop,
            tasks,
            endpoint,
        })
    }

    /// Stops accepting work, waits for in-flight requests (bounded), persists storage.
    pub async fn shutdown(mut self) {
        // From here new requests are answered "shutting down" (clients retry elsewhere)
        // while the ones being served finish, within a bound.
        self.state.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let all = u32::try_from(self.state.config.max_in_flight).unwrap_or(u32::MAX);
        let drain = async {
            let clients = self.state.in_flight.acquire_many(all).await;
            let peers = self.state.peer_in_flight.acquire_many(all).await;
            (clients, peers)
        };
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN, drain).await.is_ok();
        while self.tasks.join_next().await.is_some() {}
        let code = if drained {
            CLOSE_DRAINED
        } else {
            CLOSE_ABORTED
        };
        self.endpoint.close(code.into(), b"node shutting down");
        if let Err(e) = self.state.replica.mark_clean_shutdown().await {
            tracing::warn!(cause = %e, "could not record the clean shutdown; the next start takes a new epoch");
        }
        if let Err(e) = self.state.replica.storage().close().await {
            tracing::error!(cause = %e, "storage did not close cleanly");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!(node = %self.state.membership.me(), "node stopped");
    }
}

/// The failure detector's probe loop: ping every peer each interval.
async fn heartbeat(node: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let interval = node.config.heartbeat_interval();
    let timeout = node.config.failure_timeout() / 2;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        for peer in node.membership.peers() {
            let node = node.clone();
            tokio::spawn(async move {
                let ping = Request::Ping {
                    from: node.membership.me().clone(),
                    shape: node.shape(),
                };
                match node.transport.call(&peer, &ping, timeout).await {
                    Ok(Response::Pong) => {
                        if node.membership.record_ok(&peer) {
                            info!(peer = %peer, "peer is up");
                        }
                    }
                    Ok(Response::Error(e)) if e.code == ErrorCode::Misconfigured => {
                        if node.membership.record_failure(&peer) {
                            tracing::error!(peer = %peer, cause = %e.message, "peer refused: cluster configuration differs");
                        }
                    }
                    other => {
                        if node.membership.record_failure(&peer) {
                            let cause = match other {
                                Err(e) => e.to_string(),
                                Ok(r) => format!("unexpected answer {r:?}"),
                            };
                            tracing::warn!(peer = %peer, cause = %cause, "peer is down");
                        }
                    }
                }
            });
        }
    }
}

/// Copies counters and gauges into the Prometheus registry until stopped.
async fn export_metrics(node: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(crate::metrics::EXPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let counters = node.counter_snapshot();
        let peers = node.membership.peers();
        let up = peers.iter().filter(|p| node.membership.is_up(p)).count();
        let keys = node
            .replica
            .storage()
            .approximate_len(crate::storage::Space::Data);
        crate::metrics::publish(
            &counters,
            &[
                ("peers_up", up as f64),
                ("peers_down", (peers.len() - up) as f64),
                ("keys", keys as f64),
                (
                    "requests_in_flight",
                    (node.config.max_in_flight - node.in_flight.available_permits()) as f64,
                ),
            ],
        );
    }
}
