//! The messages nodes and clients exchange, one request and one response per QUIC
//! stream, each encoded with postcard in a length-prefixed frame ([`crate::codec`]).
//!
//! The protocol version is the TLS ALPN string [`ALPN`]: a node and a peer (or client)
//! of different protocol versions fail the handshake with "no application protocol"
//! instead of misreading each other's bytes. Errors travel as a code plus a message,
//! never as a serialized Rust error.

use serde::{Deserialize, Serialize};

use crate::quorum::Quorum;
use crate::version::{Clock, Versioned};
use crate::NodeId;

/// ALPN protocol id; bump on any incompatible change to these messages.
pub const ALPN: &[u8] = b"dynakv/1";

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

/// A request: from a client to any node, or from a node to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Client read, coordinated by the receiving node.
    Get(GetRequest),
    /// Client write or delete, coordinated by a replica of the key.
    Put(PutRequest),
    /// This node's view of the cluster.
    Status,
    /// Peer: return your stored state of a key.
    ReplicaGet { key: Vec<u8> },
    /// Peer: merge this state into yours, durably, then acknowledge.
    ReplicaPut { key: Vec<u8>, state: Versioned },
    /// Peer: liveness probe of the failure detector, carrying the sender's cluster shape
    /// so that nodes configured differently refuse each other instead of misplacing keys.
    Ping { from: NodeId, shape: ClusterShape },
}

/// What every node of a cluster must agree on: N and the ring (members and Q).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShape {
    /// Replicas per key (N).
    pub replicas: u8,
    /// [`crate::Ring::fingerprint`] of the node's ring.
    pub ring: u64,
}

/// A client read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequest {
    pub key: Vec<u8>,
    /// Replicas that must answer.
    pub r: Quorum,
    /// Overall deadline in milliseconds; `None` uses the node's default.
    pub timeout_ms: Option<u32>,
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
    Status(StatusResponse),
    /// A replica's stored state (None: it has never seen the key).
    ReplicaState(Option<Versioned>),
    /// A replica stored the state durably.
    Ack,
    Pong,
    Error(WireError),
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
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The context after the write: pass it back to replace this write.
    pub context: Clock,
    /// How many replicas acknowledged before the response was sent.
    pub replicas_acked: u8,
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
