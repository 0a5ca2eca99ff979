//! The messages nodes and clients exchange, one request and one response per QUIC
//! stream, each encoded with postcard in a length-prefixed frame ([`crate::codec`]).
//!
//! The protocol version is the TLS ALPN string [`ALPN`]: a node and a peer (or client)
//! of different protocol versions fail the handshake with "no application protocol"
//! instead of misreading each other's bytes. Errors travel as a code plus a message,
//! never as a serialized Rust error.

use serde::{Deserialize, Serialize};

use crate::quorum::Quorum;
use crate::replication::QuorumMode;
use crate::ring::PartitionId;
use crate::version::{Clock, Versioned};
use crate::NodeId;

/// ALPN protocol id; bump on any incompatible change to these messages.
/// v2: sloppy quorums and hints, read-repair modes, anti-entropy and reaping messages.
/// v3: fault and conflict-policy admin messages, batched replica messages, `not_a_replica`.
pub const ALPN: &[u8] = b"dynakv/3";

/// The TLS name an admin certificate carries (`dynakv-node cert client --admin`): admin
/// requests (anti-entropy control, replica debugging, fault injection) need it or a node
/// certificate.
pub const ADMIN_NAME: &str = "dynakv-admin";

/// The TLS server name every node certificate carries besides its own id, so a client
/// that knows only an address can check it reached a node of this cluster. Node-to-node
/// connections use the peer's id instead, so a node cannot pose as another.
pub const NODE_SERVER_NAME: &str = "dynakv-node";

/// QUIC close code of a node that shut down after draining: every request it accepted
/// was answered and the answer delivered, and nothing still pending on the connection
/// was processed. A client may safely retry such pending requests, writes included.
pub const CLOSE_DRAINED: u32 = 1;
/// QUIC close code of a node that shut down before its requests finished: pending
/// requests may or may not have been applied.
pub const CLOSE_ABORTED: u32 = 2;

/// Most keys one [`Request::ReplicaGetMany`] or [`Request::ReplicaPutMany`] may name:
/// a node serves each one's keys in one go on its event loop, so an unbounded list would
/// hold every other request of the node until it is done. Anti-entropy asks in chunks of
/// 64.
pub const MAX_KEYS_PER_REQUEST: usize = 1024;

/// A request: from a client to any node, or from a node to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Client read, coordinated by the receiving node.
    Get(GetRequest),
    /// Client write or delete, coordinated by a replica of the key.
    Put(PutRequest),
    /// This node's view of the cluster.
    Status,
    /// Peer: return your stored state of a key (as a primary, or the hints you hold for it).
    ReplicaGet { key: Vec<u8> },
    /// Peer: merge this state into yours, durably, then acknowledge. With `hint_for`, the
    /// receiver is a fallback and keeps the state as a hint for that primary.
    ReplicaPut {
        key: Vec<u8>,
        state: Versioned,
        hint_for: Option<NodeId>,
    },
    /// Peer (anti-entropy, reaping): your stored primary states of these keys (at most
    /// [`MAX_KEYS_PER_REQUEST`]). The answer may stop early to stay within a frame; ask
    /// again for the rest.
    ReplicaGetMany { keys: Vec<Vec<u8>> },
    /// Peer (anti-entropy): merge each state into your primary copy, durably (at most
    /// [`MAX_KEYS_PER_REQUEST`]).
    ReplicaPutMany { states: Vec<(Vec<u8>, Versioned)> },
    /// Peer (anti-entropy): the hashes of these nodes of your tree of `partition` at
    /// `level` (0 is the root).
    TreeHashes {
        partition: PartitionId,
        level: u32,
        indices: Vec<u32>,
    },
    /// Peer (anti-entropy): the (key, item hash) pairs stored in these segments of
    /// `partition`. The answer may stop early; `after` resumes after a key.
    SegmentItems {
        partition: PartitionId,
        segments: Vec<u32>,
        after: Option<Vec<u8>>,
    },
    /// Peer (tombstone reaping): delete your copy of `key` if its state digest is still
    /// `digest` (every primary holds the same tombstones, older than the grace period).
    Reap { key: Vec<u8>, digest: u128 },
    /// Peer: liveness probe of the failure detector, carrying the sender's cluster shape
    /// so that nodes configured differently refuse each other instead of misplacing keys,
    /// and its incarnation (drawn at each start), so a peer that restarted is noticed at
    /// once and connections to its previous process are dropped instead of timing out.
    Ping {
        from: NodeId,
        shape: ClusterShape,
        incarnation: u64,
    },
    /// Admin: this node's local state of a key (its primary copy and any hints).
    DebugReplica { key: Vec<u8> },
    /// Admin: anti-entropy state; with `run_now`, run a full exchange round first.
    AntiEntropy { run_now: bool },
    /// Admin: replace the faults this node injects into its peer traffic (lab, tests).
    SetFaults(FaultSpec),
    /// Admin: the faults this node injects now.
    GetFaults,
    /// Several requests in one frame, sent together to the same node (requests that
    /// were queued at once: coalescing, as Cassandra and Scylla do). The answer is one
    /// [`Response::BatchItem`] frame per request, on the same stream, in the order they
    /// complete. Batches do not nest; each request is authorised on its own.
    Batch(Vec<Request>),
}

/// Most requests in one [`Request::Batch`].
pub const MAX_BATCH: usize = 256;

/// Faults a node injects into its own peer traffic — this kernel has no netem, so the
/// lab shapes the network inside the nodes. Empty by default, and then nothing on the
/// request path pays for it beyond one flag check.
///
/// Every node usually gets the same spec; each applies the rules of the links it is an
/// end of. Partitions act on both ends (a message on a cut link is neither sent nor
/// processed, and a reply on a cut link is neither sent nor accepted); delays and loss
/// are drawn once, by the node that sent the request (the coordinator), for the request
/// (W or R) and for its reply (A or S), so their distributions are exactly the ones given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// The rules; a message on a link matching several gets the sum of their delays,
    /// the highest loss, and is cut if any cuts it.
    pub rules: Vec<LinkRule>,
    /// Also delay the coordinator's own replica operations (with the rules of the link
    /// from itself to itself), so a run matches a model where every replica, the
    /// coordinator's included, sees each write after a W delay.
    pub local: bool,
    /// Seed of the random draws (mixed with the node id), so a run can be repeated.
    pub seed: u64,
}

/// Faults on the messages of one link (`from` → `to`; `None` matches any node).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkRule {
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
    /// Delay of a write request to a replica (PBS's W), in ms.
    pub w: Option<crate::dist::Dist>,
    /// Delay of a write's acknowledgement (A).
    pub a: Option<crate::dist::Dist>,
    /// Delay of a read request to a replica (R).
    pub r: Option<crate::dist::Dist>,
    /// Delay of a read's response (S).
    pub s: Option<crate::dist::Dist>,
    /// Probability in [0, 1] that a message is lost.
    pub loss: f64,
    /// Cut the link: every message on it is lost (a one-way partition; two rules make a
    /// two-way one).
    pub cut: bool,
}

impl LinkRule {
    /// Whether the rule applies to messages from `from` to `to`.
    pub fn matches(&self, from: &NodeId, to: &NodeId) -> bool {
        self.from.as_ref().is_none_or(|f| f == from) && self.to.as_ref().is_none_or(|t| t == to)
    }
}

impl FaultSpec {
    /// Whether the spec injects anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refuses impossible settings with a sentence.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.loss) {
                return Err(format!(
                    "fault rule {}: loss is {} but must be between 0 and 1",
                    i + 1,
                    rule.loss
                ));
            }
            for d in [&rule.w, &rule.a, &rule.r, &rule.s].into_iter().flatten() {
                d.validate()
                    .map_err(|e| format!("fault rule {}: {e}", i + 1))?;
            }
        }
        Ok(())
    }
}

impl Request {
    /// Whether only nodes may make this request.
    pub fn is_peer_request(&self) -> bool {
        matches!(
            self,
            Request::ReplicaGet { .. }
                | Request::ReplicaPut { .. }
                | Request::ReplicaGetMany { .. }
                | Request::ReplicaPutMany { .. }
                | Request::TreeHashes { .. }
                | Request::SegmentItems { .. }
                | Request::Reap { .. }
                | Request::Ping { .. }
        )
    }

    /// Whether only admins (or nodes) may make this request.
    pub fn is_admin_request(&self) -> bool {
        matches!(
            self,
            Request::DebugReplica { .. }
                | Request::AntiEntropy { .. }
                | Request::SetFaults(_)
                | Request::GetFaults
        )
    }
}

/// What every node of a cluster must agree on: N, the ring (members and Q) and the
/// conflict policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShape {
    /// Replicas per key (N).
    pub replicas: u8,
    /// [`crate::Ring::fingerprint`] of the node's ring.
    pub ring: u64,
    /// How concurrent writes are resolved.
    pub policy: ConflictPolicy,
}

/// How concurrent writes of a key are resolved, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Keep every concurrent write as a sibling (dotted version vectors); the client
    /// resolves them. Nothing acknowledged is lost.
    #[default]
    Dvv,
    /// Last writer wins: keep only the sibling with the newest coordinator timestamp.
    /// Concurrent writes are silently lost — for comparison, not for data you need.
    Lww,
}

impl std::fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictPolicy::Dvv => "dvv",
            ConflictPolicy::Lww => "lww",
        })
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dvv" => Ok(ConflictPolicy::Dvv),
            "lww" => Ok(ConflictPolicy::Lww),
            _ => Err(crate::Error::Malformed {
                reason: format!("conflict policy {s:?}: use dvv or lww"),
            }),
        }
    }
}

impl ConflictPolicy {
    /// Applies the policy to a state just written or merged: LWW keeps the newest
    /// sibling (by coordinator timestamp, then dot); DVV keeps them all.
    pub fn apply(self, state: &mut Versioned) {
        if self == ConflictPolicy::Lww && state.siblings().len() > 1 {
            state.resolve_last_writer_wins();
        }
    }
}

/// A client read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequest {
    pub key: Vec<u8>,
    /// Replicas that must answer.
    pub r: Quorum,
    /// Whether fallbacks standing in for down primaries count toward R.
    pub mode: QuorumMode,
    /// When replicas found behind are repaired.
    pub read_repair: ReadRepair,
    /// Overall deadline in milliseconds; `None` uses the node's default.
    pub timeout_ms: Option<u32>,
}

/// When a read repairs the replicas it found behind (Dynamo §4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadRepair {
    /// Never.
    Off,
    /// After the reply: the coordinator keeps listening to the slower replicas for a
    /// short window and sends the merged state to those behind.
    #[default]
    Async,
    /// Before the reply: the replicas that answered and were behind have the merged state
    /// durably when the client gets it (slower replicas are then repaired as with async).
    Sync,
}

impl std::fmt::Display for ReadRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReadRepair::Off => "off",
            ReadRepair::Async => "async",
            ReadRepair::Sync => "sync",
        })
    }
}

impl std::str::FromStr for ReadRepair {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(ReadRepair::Off),
            "async" => Ok(ReadRepair::Async),
            "sync" => Ok(ReadRepair::Sync),
            _ => Err(crate::Error::Malformed {
                reason: format!("read repair mode {s:?}: use off, async or sync"),
            }),
        }
    }
}

/// A client write (`value: Some`) or delete (`value: None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// The context of the client's last read of this key (None for a blind write).
    pub context: Option<Clock>,
    /// Replicas that must store the write durably before the acknowledgement.
    pub w: Quorum,
    /// Whether fallbacks standing in for down primaries count toward W.
    pub mode: QuorumMode,
    /// Overall deadline in milliseconds; `None` uses the node's default.
    pub timeout_ms: Option<u32>,
    /// Set when a non-replica forwards the write to a replica, so it is not forwarded twice.
    pub forwarded: bool,
}

/// A response to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Get(GetResponse),
    Put(PutResponse),
    Status(Box<StatusResponse>),
    /// A replica's stored state (None: it has never seen the key).
    ReplicaState(Option<Versioned>),
    /// States for a [`Request::ReplicaGetMany`], in request order; may be a prefix.
    ReplicaStates(Vec<(Vec<u8>, Option<Versioned>)>),
    /// Tree node hashes for a [`Request::TreeHashes`], in request order.
    TreeHashes(Vec<u128>),
    /// Items for a [`Request::SegmentItems`], sorted by key within each segment;
    /// `complete` is false when the answer stopped early.
    SegmentItems {
        items: Vec<(Vec<u8>, u128)>,
        complete: bool,
    },
    /// Whether a [`Request::Reap`] deleted the key.
    Reaped(bool),
    /// A replica stored the state durably.
    Ack,
    Pong,
    Debug(Box<DebugReplica>),
    AntiEntropy(Box<AntiEntropyStatus>),
    Faults(Box<FaultSpec>),
    /// The answer to request `index` of a [`Request::Batch`].
    BatchItem {
        index: u32,
        response: Box<Response>,
    },
    Error(WireError),
}

/// One node's local state of a key, for people watching replicas diverge and converge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugReplica {
    pub node: NodeId,
    pub partition: PartitionId,
    /// The key's primaries, in preference order.
    pub primaries: Vec<NodeId>,
    /// The node's primary copy (None if it has none, or is not a primary).
    pub state: Option<Versioned>,
    /// Hints this node holds for the key: (the primary it is meant for, state, age in ms).
    pub hints: Vec<(NodeId, Versioned, u64)>,
    /// When the key's tombstone-only state becomes reapable, if it is one (ms since epoch).
    pub tombstone_since_ms: Option<u64>,
}

/// A node's anti-entropy state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropyStatus {
    pub node: NodeId,
    /// Whether the hash trees are built (they are rebuilt from storage at start-up).
    pub trees_ready: bool,
    /// Exchanges done since start, and how many found differences.
    pub exchanges: u64,
    pub exchanges_with_differences: u64,
    /// Keys whose state changed on either side, and bytes sent and received, since start.
    pub keys_repaired: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The last exchange per (partition, peer).
    pub last: Vec<ExchangeRecord>,
}

/// The outcome of the last exchange of one partition with one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub partition: PartitionId,
    pub peer: NodeId,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// Keys that differed, and tree nodes compared to find them.
    pub keys_differing: u64,
    pub nodes_compared: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The live sibling values (empty when not found or deleted).
    pub values: Vec<Vec<u8>>,
    /// The merged causal context to pass back with the next write.
    pub context: Clock,
    /// How many replicas answered before the response was sent.
    pub replicas_answered: u8,
    /// The receiving node is not a replica of the key: a client routing by key has a
    /// stale view of the ring.
    pub not_a_replica: bool,
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The context after the write: pass it back to replace this write.
    pub context: Clock,
    /// How many replicas acknowledged before the response was sent.
    pub replicas_acked: u8,
    /// The receiving node is not a replica of the key and forwarded the write.
    pub not_a_replica: bool,
}

/// One member as a node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    /// Whether the failure detector considers it reachable.
    pub up: bool,
    /// Partitions it owns.
    pub partitions: u32,
    /// The incarnation of its process this node last heard of (0: not yet).
    pub incarnation: u64,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: NodeId,
    pub version: String,
    pub replicas: u8,
    pub partitions: u32,
    pub members: Vec<MemberStatus>,
    /// Approximate number of keys stored on this node.
    pub keys: u64,
    /// Named counters (requests, quorum misses, read repairs, ...).
    pub counters: Vec<(String, u64)>,
    /// Hints held here, per primary they are meant for.
    pub hints_pending: Vec<(NodeId, u64)>,
    /// Background workers and what they are doing.
    pub workers: Vec<WorkerStatus>,
    /// Request latency per operation, since start.
    pub latency: Vec<LatencySummary>,
}

/// One background worker, as `dynakv status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    /// `busy`, `idle`, `failing` or `stopped`.
    pub state: String,
    /// Steps done since start.
    pub steps: u64,
    /// What the worker says about itself (progress, last error).
    pub detail: String,
}

/// Latency percentiles of one operation, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub op: String,
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What kind of failure a [`WireError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or out of bounds (bad key, bad R/W, bad context).
    InvalidRequest,
    /// Key, value or frame over the limit.
    TooLarge,
    /// Fewer replicas answered than R or W required.
    QuorumNotReached,
    /// The node cannot serve right now (shutting down, overloaded).
    Unavailable,
    /// Storage failed (disk full, I/O error).
    Storage,
    /// The peer is not allowed to make this request.
    Forbidden,
    /// Two nodes disagree on the cluster configuration (members, N, Q).
    Misconfigured,
    /// Anything else.
    Internal,
}

/// An error as sent on the wire: a code and a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}
