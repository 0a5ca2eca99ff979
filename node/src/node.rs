//! The lifecycle of a node: builds every part from a [`NodeConfig`], starts the server
//! and the background workers, and stops them all on one signal.
//!
//! [`NodeHandle::start`] opens storage (migrating an older data directory), loads TLS,
//! builds the anti-entropy trees from storage, binds the QUIC endpoint, and starts the
//! server and the workers: heartbeat (failure detector), hint delivery, anti-entropy,
//! tombstone reaping and, if configured, the metrics export. [`NodeHandle::shutdown`]
//! answers new requests "shutting down" (so clients go to another node), lets the
//! requests in flight finish (for at most 5 s), stops the workers after their current
//! step, closes the endpoint, waits for every tracked task (fan-outs, read repairs), and
//! only then records the clean shutdown and closes storage — so storage is never closed
//! under running work.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynakv_common::wire::{ALPN, CLOSE_ABORTED, CLOSE_DRAINED};
use dynakv_common::{NodeId, Ring};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::antientropy::{AntiEntropy, AntiEntropyWorker};
use crate::config::NodeConfig;
use crate::exporter::MetricsExport;
use crate::fault::Faults;
use crate::handoff::HintDelivery;
use crate::heartbeat::Heartbeat;
use crate::membership::Membership;
use crate::metrics::{Counters, Latency};
use crate::peers::Peers;
use crate::reaper::TombstoneReaper;
use crate::replica::Replica;
use crate::state::NodeState;
use crate::storage::{Durability, Storage, StorageOptions};
use crate::tls::NodeTls;
use crate::worker::{self, Registry};

/// Longest time shutdown waits for requests in flight to finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Longest time shutdown waits for tracked tasks after the endpoint closed.
const SHUTDOWN_TASKS: Duration = Duration::from_secs(5);

/// A running node; dropping it without `shutdown` leaves the tasks running until exit.
pub struct NodeHandle {
    /// The shared state (for tests and embedding).
    pub state: Arc<NodeState>,
    /// The address the endpoint is bound to.
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The server loop and the workers.
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
            StorageOptions {
                durability,
                io: config.storage_io,
                group_commit: crate::storage::GroupCommit {
                    window: Duration::from_micros(config.group_commit_window_us),
                    max_writes: config.group_commit_max_writes,
                },
                block_cache_bytes: Some(config.block_cache_mib.saturating_mul(1 << 20)),
            },
        )?;
        // A frame shared by N replicas' states: even N fully diverged states merged on
        // one replica still fit in one frame, so the key stays readable and resolvable.
        let state_budget = config.limits().max_frame_bytes() / config.replicas.max(2);
        // A read repair sends states it read up to a deadline plus one window earlier,
        // within another window: a state reaped here is remembered that long, so such a
        // stale copy cannot bring it back (`dynakv_common::reaping`).
        let reap_memory = crate::coordinator::MAX_REQUEST_TIMEOUT + 2 * config.read_repair_window();
        let replica = Replica::open(
            storage,
            me.as_str(),
            state_budget,
            config.max_hints,
            config.conflict_policy,
            reap_memory,
        )
        .await?;
        let anti_entropy = AntiEntropy::new(config.partitions, config.anti_entropy_keys_per_s)
            .map_err(StartError::Other)?;
        let keys = anti_entropy.trees.build(replica.storage()).await?;
        info!(keys, "hash trees built from storage");

        let mut addrs: BTreeMap<NodeId, String> = peers
            .iter()
            .map(|p| (p.id.clone(), p.addr.clone()))
            .collect();
        addrs.insert(me.clone(), config.advertised());
        let ids: Vec<NodeId> = addrs.keys().cloned().collect();
        let ring =
            Ring::new(config.partitions, &ids).map_err(|e| StartError::Other(e.to_string()))?;

        let server_config = tls.server_config(ALPN)?;
        let (mut endpoint, recv_buffer) =
            dynakv_common::net::endpoint(config.listen, Some(server_config)).map_err(|source| {
                StartError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        if recv_buffer < dynakv_common::net::SOCKET_RECV_BUFFER_BYTES {
            tracing::warn!(
                bytes = recv_buffer,
                wanted = dynakv_common::net::SOCKET_RECV_BUFFER_BYTES,
                "the UDP receive buffer is small (the kernel caps it at net.core.rmem_max): bursts of requests may be dropped and retransmitted late; raise it with `sysctl -w net.core.rmem_max=8388608`"
            );
        }
        endpoint.set_default_client_config(tls.client_config(ALPN)?);
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;

        let limits = config.limits();
        let membership = Arc::new(Membership::new(
            me.clone(),
            addrs,
            ring,
            config.failure_timeout(),
            rand::random::<u64>() | 1,
        ));
        let faults = Arc::new(Faults::new(me.clone(), config.fault.clone()));
        let tasks = TaskTracker::new();
        let peers = Peers::new(
            endpoint.clone(),
            membership.clone(),
            limits.max_frame_bytes(),
            faults.clone(),
            config.coalesce_replica_messages,
            tasks.clone(),
        );
        let state = Arc::new(NodeState {
            n: config.replicas,
            limits,
            membership,
            replica,
            peers,
            faults,
            anti_entropy,
            counters: Counters::default(),
            latency: Latency::default(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            peer_in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            stopping: AtomicBool::new(false),
            tasks,
            workers: Registry::default(),
            config,
        });

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::server::serve(
            state.clone(),
            endpoint.clone(),
            stop_rx.clone(),
        ));
        let registry = state.workers.clone();
        worker::spawn(
            &mut tasks,
            &registry,
            Heartbeat::new(state.clone()),
            stop_rx.clone(),
        );
        worker::spawn(
            &mut tasks,
            &registry,
            HintDelivery::new(state.clone()),
            stop_rx.clone(),
        );
        if state.config.anti_entropy {
            worker::spawn(
                &mut tasks,
                &registry,
                AntiEntropyWorker::new(state.clone()),
                stop_rx.clone(),
            );
        }
        worker::spawn(
            &mut tasks,
            &registry,
            TombstoneReaper::new(state.clone()),
            stop_rx.clone(),
        );
        if let Some(addr) = state.config.metrics_listen {
            crate::metrics::install_exporter(addr).map_err(StartError::Other)?;
            worker::spawn(
                &mut tasks,
                &registry,
                MetricsExport::new(state.clone()),
                stop_rx.clone(),
            );
            info!(addr = %addr, "metrics endpoint listening");
        }
        info!(node = %me, addr = %local_addr, actor = %state.replica.actor(), "node started");
        Ok(NodeHandle {
            state,
            local_addr,
            stop,
            tasks,
            endpoint,
        })
    }

    /// Stops accepting work, waits for in-flight requests and tracked tasks (bounded),
    /// then persists storage.
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
        // The permits stay taken until the endpoint is closed: a request read meanwhile
        // finds none and is refused unprocessed, so "drained" stays true of every request
        // the close cuts off (clients retry those on another node).
        let permits = tokio::time::timeout(SHUTDOWN_DRAIN, drain).await;
        while self.tasks.join_next().await.is_some() {}
        let code = if permits.is_ok() {
            CLOSE_DRAINED
        } else {
            CLOSE_ABORTED
        };
        self.endpoint.close(code.into(), b"node shutting down");
        drop(permits);
        // With the endpoint closed, connection loops end and outgoing requests fail fast:
        // what remains of fan-outs and read repairs finishes quickly.
        self.state.peers.close();
        self.state.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TASKS, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after {SHUTDOWN_TASKS:?}; closing storage under them (their writes fail, nothing acknowledged is lost)");
        }
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
