//! `dynakv-node`: a node of a Dynamo-style leaderless key-value store.
//!
//! A tour of the modules, from the edge inwards. Where each Dynamo mechanism lives:
//! consistent hashing and preference lists in `dynakv_common::ring`, sloppy quorums in
//! `dynakv_common::replication` and [`coordinator`], versioning in
//! `dynakv_common::version` and [`replica`], hinted handoff in [`handoff`], read repair in
//! [`coordinator::read`], Merkle-tree anti-entropy in [`antientropy`], failure detection
//! in [`membership`] and [`heartbeat`], and tombstone reaping in [`reaper`].
//!
//! - [`cli`], [`config`]: the command line and the node's settings, validated at start-up.
//! - [`certs`] and [`tls`]: the cluster CA, node and client certificates, and the
//!   mutual-TLS configuration every QUIC connection uses.
//! - [`node`]: the lifecycle: builds everything, starts the server and the workers,
//!   stops them on one signal.
//! - [`server`]: accepts connections and streams, reads one bounded frame per stream,
//!   checks what the certificate allows; [`dispatch`]: what each request does.
//! - [`coordinator`]: quorum reads and writes over the plan of targets, forwarding to a
//!   primary, sloppy quorums, read repair.
//! - [`handoff`], [`antientropy`], [`reaper`], [`heartbeat`], [`exporter`]: the
//!   background [`worker`]s.
//! - [`state`]: the shared state below all request paths and workers.
//! - [`peers`]: outgoing requests to peers (the one path that feeds the failure
//!   detector), through the [`fault`] injection layer (off by default).
//! - [`replica`]: this node's versioned copies, hints and tombstone index on disk.
//! - [`storage`]: the embedded engine (fjall) with per-key serialised read-modify-write,
//!   atomic multi-space batches, a change observer and group-committed fsyncs.
//! - [`membership`]: members and their addresses, the ring, the failure detector.
//! - [`metrics`]: counters and latency histograms for `dynakv status` and Prometheus.
//! - [`dev`]: a local multi-node cluster for trying dynakv out.

pub mod antientropy;
pub mod certs;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod dispatch;
pub mod exporter;
pub mod fault;
pub mod handoff;
pub mod heartbeat;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod reaper;
pub mod replica;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;
pub mod worker;

pub use config::NodeConfig;
pub use node::NodeHandle;
pub use state::NodeState;
