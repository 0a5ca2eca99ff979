//! `dynakv-node`: a node of a Dynamo-style leaderless key-value store.
//!
//! A tour of the modules, from the edge inwards:
//!
//! - [`config`]: the node's settings (TOML and flags), validated at start-up.
//! - [`certs`] and [`tls`]: the cluster CA, node and client certificates, and the
//!   mutual-TLS configuration every QUIC connection uses.
//! - [`server`]: accepts connections and streams, reads one bounded frame per stream,
//!   dispatches it, answers.
//! - [`transport`]: outgoing requests to peers over one reused connection each, through
//!   the [`fault`] injection layer (off by default).
//! - [`coordinator`]: quorum reads and writes, forwarding to a replica, read repair.
//! - [`replica`]: a key's DVV-set state on disk: coordinate (mint a dot) and merge.
//! - [`storage`]: the embedded engine (fjall) with per-key serialised
//!   read-modify-write and group-committed fsyncs.
//! - [`membership`]: members, the ring, and the failure detector.
//! - [`metrics`]: counters reported by `dynakv status`.
//! - [`node`]: starts all of the above and stops them on one signal.
//! - [`dev`]: a local multi-node cluster for trying dynakv out.

pub mod certs;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod fault;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;

pub use config::NodeConfig;
pub use node::{NodeHandle, NodeState};
