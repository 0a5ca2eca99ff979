//! Node configuration: one serde struct, read from TOML and/or command-line flags,
//! validated at start-up with sentences instead of panics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dynakv_common::limits::{Limits, LARGEST_MAX_KEY_BYTES, LARGEST_MAX_VALUE_BYTES};
use dynakv_common::ring::{DEFAULT_PARTITIONS, DEFAULT_REPLICAS};
use dynakv_common::NodeId;
use serde::{Deserialize, Serialize};

use dynakv_common::wire::{ConflictPolicy, FaultSpec};

use crate::storage::StorageIo;

/// Longest allowed `idle_spin_us`: past a millisecond a spin is no longer "a wake-up
/// saved" but a core held.
pub const MAX_IDLE_SPIN_US: u64 = 1_000;

/// Everything a node needs to run. Every field has a default except `id` and `data_dir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's id: a DNS label (a-z, 0-9, '-'), also the name in its TLS certificate.
    pub id: String,
    /// Address to bind the QUIC endpoint to.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node (`host:port`); defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory for the store, hints and this node's TLS files.
    pub data_dir: PathBuf,
    /// Cluster CA certificate (PEM). Default: `<data_dir>/tls/ca.pem`.
    pub ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM). Default: `<data_dir>/tls/node.pem`.
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM). Default: `<data_dir>/tls/node.key.pem`.
    pub key: Option<PathBuf>,
    /// The other members, as `id@host:port`. Membership is static: every node must list
    /// the same set.
    pub peers: Vec<String>,
    /// Replicas per key (N).
    pub replicas: usize,
    /// Partitions on the ring (Q), a power of two; must be the same on every node.
    pub partitions: u32,
    /// Default deadline for a client request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How often each peer is pinged, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A peer that has not answered for this long is considered down, in milliseconds.
    pub failure_timeout_ms: u64,
    /// After a read's answer, how long the coordinator keeps listening for the remaining
    /// replicas to repair the ones that are behind, in milliseconds (0: no asynchronous
    /// repair; a read that finds replicas disagreeing among its R answers still repairs them).
    pub read_repair_window_ms: u64,
    /// Largest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Most requests served at once; more are refused with "unavailable".
    pub max_in_flight: usize,
    /// Runtime threads serving requests. One (tokio's current-thread scheduler) is enough
    /// for a small node and avoids threads waking each other for every request; more
    /// (a work-stealing pool) help a node with many cores.
    pub worker_threads: usize,
    /// Before a runtime thread sleeps for want of work, it first checks for this many µs
    /// whether a datagram or the end of an fsync is about to wake it (yielding the CPU
    /// between checks), as Seastar's reactor polls before it sleeps. On a virtual machine
    /// a sleep and a wake-up cost tens of µs each; a lone put and a read's replica answers
    /// often arrive within that time (docs/benchmarks.md: lone put p50 -10%, get R=1
    /// +10-18% at 50). It burns idle CPU, up to this long per sleep; 0 where the CPU is
    /// billed or shared with more than a few busy processes.
    pub idle_spin_us: u64,
    /// The spin instead of `idle_spin_us` while the node serves at most one request
    /// (light load): a lone client's next request, or a replica's answer to this node
    /// as coordinator, comes within a few hundred µs, and a CPU is free to spin on.
    /// Under load, spins that long cost throughput, hence two settings. 0:
    /// `idle_spin_us` at every load.
    pub idle_spin_light_us: u64,
    /// Where storage work and group-commit fsyncs run: `inline` (engine calls on the
    /// event loop, fsyncs on a syncer thread; right for SSDs and fast fsync), `threads`
    /// (engine calls on a blocking pool too; the event loop never waits for a slow disk)
    /// or `inline-sync` (fsyncs on the event loop too: fewer wake-ups, but reads wait
    /// behind each fsync).
    pub storage_io: StorageIo,
    /// Under concurrent writes, how long (µs) the group commit waits for more writes to
    /// share an fsync. Longer: fewer fsyncs and more throughput, more latency per write.
    /// A lone writer never waits. 0: sync at once.
    pub group_commit_window_us: u64,
    /// The group commit syncs at once when this many writes are waiting.
    pub group_commit_max_writes: u64,
    /// The storage engine's block cache (MiB): decoded blocks of on-disk tables kept in
    /// memory. Reads and the read-modify-write of every write look keys up there before
    /// reading blocks from the page cache; a data set that fits keeps its reads as cheap
    /// as a small one's. It fills only as tables are read, so a small data set costs no
    /// memory; a large one costs up to this much per node.
    pub block_cache_mib: u64,
    /// Send the replica reads and writes queued for one peer at the same moment as one
    /// batch (one stream, one frame): fewer packets and wake-ups under load, no added
    /// delay for a lone request.
    pub coalesce_replica_messages: bool,
    /// `fsync` (acknowledge only after the write is on disk) or `relaxed` (no fsync before
    /// acknowledging: faster, loses recent writes on power failure).
    pub durability: String,
    /// TCP address of a Prometheus `/metrics` endpoint (e.g. `127.0.0.1:9100`); off if unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Which replicas a read asks: `quorum` (R of them, this node first when it is one,
    /// plus all of them for one read in `1 / read_repair_chance` so read repair can run;
    /// the fast default) or `all` (every replica, answering after R — Riak's way, and
    /// the WARS model's assumption).
    pub read_fanout: ReadFanout,
    /// With `read_fanout = "quorum"`, the share of reads (0 to 1) that ask every replica
    /// so async read repair can compare them; anti-entropy catches the rest. Reads that
    /// ask two or more replicas repair any difference among those anyway. Each sampled
    /// read costs two more replica exchanges: at 0.1, R=1 reads ran about 40% slower
    /// than at 0 (docs/benchmarks.md); 0.01 keeps hot keys repaired within about a
    /// hundred reads for about 4%.
    pub read_repair_chance: f64,
    /// With `read_fanout = "quorum"`, a read that has not heard from enough replicas
    /// after this many milliseconds asks one more (and again after as long): a replica
    /// that died unnoticed costs this much, not the whole deadline. Lower retries sooner
    /// and sends more extra requests under load.
    pub read_speculative_retry_ms: u64,
    /// Repair replicas found behind on reads (each read picks async, sync or off); false
    /// turns read repair off node-wide, e.g. to watch anti-entropy alone.
    pub read_repair: bool,
    /// Let fallbacks stand in for down primaries, holding their writes as hints (sloppy
    /// quorum, hinted handoff). false: writes go to primaries only.
    pub hinted_handoff: bool,
    /// Most hints this node holds as a fallback; past it new hints are dropped (counted,
    /// logged) and anti-entropy repairs those keys later.
    pub max_hints: u64,
    /// A hint older than this many seconds is dropped undelivered (anti-entropy repairs
    /// the key). Must not exceed `tombstone_grace_s`, so an old hint cannot undo a delete.
    pub hint_ttl_s: u64,
    /// How often hint delivery looks for primaries that are back, in milliseconds.
    pub hint_delivery_interval_ms: u64,
    /// Run Merkle-tree anti-entropy exchanges in the background.
    pub anti_entropy: bool,
    /// Pause between two anti-entropy rounds (every partition with every other replica), ms.
    pub anti_entropy_interval_ms: u64,
    /// Most anti-entropy exchanges (one partition with one peer) started per second.
    pub anti_entropy_exchanges_per_s: u64,
    /// Most keys anti-entropy repairs per second.
    pub anti_entropy_keys_per_s: u64,
    /// Seconds a deleted key's tombstones are kept after every primary holds them, before
    /// they are removed from storage. Must exceed `hint_ttl_s` and the request timeout.
    pub tombstone_grace_s: u64,
    /// How often the reaper looks for tombstones past their grace period, in ms.
    pub reap_interval_ms: u64,
    /// How concurrent writes are resolved, the same on every node: `dvv` (keep them as
    /// siblings; the default) or `lww` (last writer wins by timestamp — loses concurrent
    /// writes; for comparison only).
    pub conflict_policy: ConflictPolicy,
    /// Injected network faults for experiments (see `FaultSpec`); off unless set. The
    /// lab changes them at run time with an admin request.
    pub fault: FaultSpec,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7100)),
            advertise: None,
            data_dir: PathBuf::new(),
            ca_cert: None,
            cert: None,
            key: None,
            peers: Vec::new(),
            replicas: DEFAULT_REPLICAS,
            partitions: DEFAULT_PARTITIONS,
            request_timeout_ms: 2_000,
            heartbeat_interval_ms: 300,
            failure_timeout_ms: 1_500,
            read_repair_window_ms: 1_000,
            max_key_bytes: dynakv_common::limits::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: dynakv_common::limits::DEFAULT_MAX_VALUE_BYTES,
            max_in_flight: 4096,
            worker_threads: 1,
            idle_spin_us: 50,
            idle_spin_light_us: 500,
            storage_io: StorageIo::Inline,
            group_commit_window_us: 200,
            group_commit_max_writes: 64,
            block_cache_mib: 256,
            coalesce_replica_messages: true,
            durability: "fsync".into(),
            metrics_listen: None,
            read_fanout: ReadFanout::Quorum,
            read_repair_chance: 0.01,
            read_speculative_retry_ms: 50,
            read_repair: true,
            hinted_handoff: true,
            max_hints: 1_000_000,
            hint_ttl_s: 3 * 3600,
            hint_delivery_interval_ms: 1_000,
            anti_entropy: true,
            anti_entropy_interval_ms: 60_000,
            anti_entropy_exchanges_per_s: 20,
            anti_entropy_keys_per_s: 5_000,
            tombstone_grace_s: 24 * 3600,
            reap_interval_ms: 60_000,
            conflict_policy: ConflictPolicy::Dvv,
            fault: FaultSpec::default(),
        }
    }
}

/// Which replicas a read asks (see `NodeConfig::read_fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadFanout {
    /// R replicas (this node first when it is one), every replica now and then.
    #[default]
    Quorum,
    /// Every replica; the answer comes after the first R.
    All,
}

/// A peer as listed in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: NodeId,
    pub addr: String,
}

/// A configuration that cannot run, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid node configuration: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// Reads a TOML file; relative paths in it are taken relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.data_dir);
        for p in [&mut config.ca_cert, &mut config.cert, &mut config.key]
            .into_iter()
            .flatten()
        {
            rebase(p);
        }
        Ok(config)
    }

    /// Checks the configuration and returns the parsed node id and peers.
    pub fn validate(&self) -> Result<(NodeId, Vec<PeerAddr>), ConfigError> {
        let id = NodeId::new(&self.id).map_err(|e| ConfigError(e.to_string()))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError("data_dir is required (--data-dir DIR)".into()));
        }
        let mut peers = Vec::new();
        for p in &self.peers {
            let (pid, addr) = p.split_once('@').ok_or_else(|| {
                ConfigError(format!(
                    "peer {p:?} must look like id@host:port, e.g. n2@10.0.0.2:7100"
                ))
            })?;
            let pid = NodeId::new(pid).map_err(|e| ConfigError(format!("peer {p:?}: {e}")))?;
            if pid == id {
                continue; // a shared peer list may include this node itself
            }
            if !addr.contains(':') {
                return Err(ConfigError(format!("peer {p:?}: address needs a port")));
            }
            if peers.iter().any(|q: &PeerAddr| q.id == pid) {
                return Err(ConfigError(format!("peer {pid} is listed twice")));
            }
            peers.push(PeerAddr {
                id: pid,
                addr: addr.to_string(),
            });
        }
        let members = peers.len() + 1;
        if self.replicas == 0 || self.replicas > members {
            return Err(ConfigError(format!(
                "replicas (N) is {} but the cluster has {members} member(s); N must be between 1 and the number of members",
                self.replicas
            )));
        }
        if self.replicas > 255 {
            return Err(ConfigError("replicas (N) must be at most 255".into()));
        }
        if !self.partitions.is_power_of_two() || self.partitions as usize > 1 << 16 {
            return Err(ConfigError(format!(
                "partitions (Q) is {} but must be a power of two up to 65536",
                self.partitions
            )));
        }
        if (self.partitions as usize) < members {
            return Err(ConfigError(format!(
                "partitions (Q) is {} but must be at least the number of members ({members})",
                self.partitions
            )));
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err(ConfigError(
                "max_key_bytes and max_value_bytes must be positive".into(),
            ));
        }
        if self.max_key_bytes > LARGEST_MAX_KEY_BYTES {
            return Err(ConfigError(format!(
                "max_key_bytes is {} but must be at most {LARGEST_MAX_KEY_BYTES}",
                self.max_key_bytes
            )));
        }
        if self.max_value_bytes > LARGEST_MAX_VALUE_BYTES {
            return Err(ConfigError(format!(
                "max_value_bytes is {} but must be at most {LARGEST_MAX_VALUE_BYTES} (64 MiB)",
                self.max_value_bytes
            )));
        }
        if self.request_timeout_ms == 0 || self.heartbeat_interval_ms == 0 {
            return Err(ConfigError(
                "timeouts and intervals must be positive".into(),
            ));
        }
        if self.failure_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(ConfigError(format!(
                "failure_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({})",
                self.failure_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1_000_000 {
            return Err(ConfigError(format!(
                "max_in_flight is {} but must be between 1 and 1000000",
                self.max_in_flight
            )));
        }
        if self.worker_threads == 0 || self.worker_threads > 1024 {
            return Err(ConfigError(format!(
                "worker_threads is {} but must be between 1 and 1024",
                self.worker_threads
            )));
        }
        for (name, us) in [
            ("idle_spin_us", self.idle_spin_us),
            ("idle_spin_light_us", self.idle_spin_light_us),
        ] {
            if us > MAX_IDLE_SPIN_US {
                return Err(ConfigError(format!(
                    "{name} is {us} but must be at most {MAX_IDLE_SPIN_US}"
                )));
            }
        }
        if !matches!(self.durability.as_str(), "fsync" | "relaxed") {
            return Err(ConfigError(format!(
                "durability is {:?}; use \"fsync\" or \"relaxed\"",
                self.durability
            )));
        }
        if self.hint_delivery_interval_ms == 0
            || self.anti_entropy_interval_ms == 0
            || self.reap_interval_ms == 0
            || self.anti_entropy_exchanges_per_s == 0
            || self.anti_entropy_keys_per_s == 0
        {
            return Err(ConfigError(
                "hint_delivery_interval_ms, anti_entropy_interval_ms, reap_interval_ms and the anti-entropy rates must be positive".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.read_repair_chance) {
            return Err(ConfigError(format!(
                "read_repair_chance is {} but must be between 0 and 1",
                self.read_repair_chance
            )));
        }
        if self.hint_ttl_s == 0 || self.tombstone_grace_s == 0 {
            return Err(ConfigError(
                "hint_ttl_s and tombstone_grace_s must be positive".into(),
            ));
        }
        if self.hint_ttl_s > self.tombstone_grace_s {
            return Err(ConfigError(format!(
                "hint_ttl_s ({}) must not exceed tombstone_grace_s ({}): a hint that outlived the grace period could bring a reaped delete back",
                self.hint_ttl_s, self.tombstone_grace_s
            )));
        }
        if self.tombstone_grace_s.saturating_mul(1000) < self.request_timeout_ms {
            return Err(ConfigError(format!(
                "tombstone_grace_s ({} s) must be at least the request timeout ({} ms), so no request in flight still carries a reaped value",
                self.tombstone_grace_s, self.request_timeout_ms
            )));
        }
        self.fault.validate().map_err(ConfigError)?;
        Ok((id, peers))
    }

    /// The address peers and clients should use.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The CA certificate path (explicit or default).
    pub fn ca_path(&self) -> PathBuf {
        self.ca_cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("ca.pem"))
    }

    /// The node certificate path (explicit or default).
    pub fn cert_path(&self) -> PathBuf {
        self.cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("node.pem"))
    }

    /// The node key path (explicit or default).
    pub fn key_path(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("node.key.pem"))
    }

    /// Size limits as configured.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// How long a hint is delivered and served, in milliseconds (`hint_ttl_s`).
    pub fn hint_ttl_ms(&self) -> u64 {
        self.hint_ttl_s.saturating_mul(1000)
    }
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }
    pub fn read_repair_window(&self) -> Duration {
        Duration::from_millis(self.read_repair_window_ms)
    }
    pub fn read_speculative_retry(&self) -> Duration {
        Duration::from_millis(self.read_speculative_retry_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NodeConfig {
        NodeConfig {
            id: "n1".into(),
            data_dir: "/tmp/x".into(),
            peers: vec!["n2@127.0.0.1:7002".into(), "n3@127.0.0.1:7003".into()],
            ..NodeConfig::default()
        }
    }

    #[test]
    fn a_three_node_config_validates() {
        let (id, peers) = base().validate().unwrap();
        assert_eq!(id.as_str(), "n1");
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn nonsense_is_refused_with_a_sentence() {
        let mut c = base();
        c.replicas = 4;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("N must be between 1"));
        let mut c = base();
        c.peers.push("garbage".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("id@host:port"));
        let mut c = base();
        c.partitions = 48;
        assert!(c.validate().is_err());
        let mut c = base();
        c.durability = "sometimes".into();
        assert!(c.validate().is_err());
        let mut c = base();
        c.id = "Bad Id".into();
        assert!(c.validate().is_err());
        type Field = fn(&mut NodeConfig) -> &mut u64;
        let spins: [(&str, Field); 2] = [
            ("idle_spin_us", |c| &mut c.idle_spin_us),
            ("idle_spin_light_us", |c| &mut c.idle_spin_light_us),
        ];
        for (name, field) in spins {
            let mut c = base();
            *field(&mut c) = MAX_IDLE_SPIN_US + 1;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("{name} is 1001")), "{err}");
            *field(&mut c) = 0;
            c.validate().unwrap();
        }
    }

    #[test]
    fn key_and_value_limits_stop_where_clients_stop() {
        // A client sends keys and values up to these without knowing a node's config,
        // so a node may not promise more.
        let mut c = base();
        c.max_key_bytes = LARGEST_MAX_KEY_BYTES;
        c.max_value_bytes = LARGEST_MAX_VALUE_BYTES;
        c.validate().unwrap();
        c.max_key_bytes = LARGEST_MAX_KEY_BYTES + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains(&format!("max_key_bytes is {}", LARGEST_MAX_KEY_BYTES + 1)),
            "{e}"
        );
        let mut c = base();
        c.max_value_bytes = LARGEST_MAX_VALUE_BYTES + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("max_value_bytes is 67108865"), "{e}");
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../../docs/node.example.toml");
        let config: NodeConfig = toml::from_str(text).expect("docs/node.example.toml parses");
        let (id, peers) = config.validate().expect("docs/node.example.toml validates");
        assert_eq!(id.as_str(), "n1");
        assert_eq!(peers.len(), 2, "the node's own entry is skipped");
    }

    #[test]
    fn toml_round_trip_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = \"n1\"\ndata_dir = \"data\"\npeers = [\"n2@127.0.0.1:7002\"]\nreplicas = 2\n",
        )
        .unwrap();
        let c = NodeConfig::from_file(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        c.validate().unwrap();
    }
}
