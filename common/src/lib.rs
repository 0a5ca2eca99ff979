//! Pure, I/O-free logic shared by dynakv nodes, clients and tests.
//!
//! Nothing here (outside the optional `net` module) does I/O, spawns tasks or reads the
//! clock: callers pass `now` in.
//! That keeps the heart of the store — placement, versions, quorum arithmetic and
//! the wire format — testable with plain unit and property tests.
//!
//! - [`ring`]: the partition ring (Riak-style Q fixed partitions), preference lists
//!   of N distinct nodes, fallbacks, and how partitions move when members change.
//! - [`version`]: dotted version vector sets (DVV sets) on `crdts::VClock`/`crdts::Dot`:
//!   siblings, causal contexts, the coordinator's update and the replica sync rule.
//! - [`quorum`]: R/W parsing and validation, and a tracker that counts replica answers.
//! - [`replication`]: which nodes, how many: primaries, fallbacks standing in for down
//!   primaries (sloppy quorum, hinted handoff) and which answers count.
//! - [`reaping`]: when a deleted key's tombstones may be removed without a resurrection.
//! - [`wire`]: the request/response messages nodes and clients exchange.
//! - [`codec`]: length-prefixed postcard frames with a size limit.
//! - [`limits`]: key, value and frame size limits.
//! - [`merkle`]: per-partition hash trees over key digests and their diff (anti-entropy).
//! - [`dist`]: delay distributions (fixed, uniform, exponential, Pareto, mixtures).
//! - `net` (cargo feature `net`): dialling, frames over QUIC streams and the QUIC
//!   transport settings, shared by clients and nodes; the only part that does I/O.
//! - `timer` (feature `net`): a sleep precise to tens of µs for injected delays.
//! - [`error`]: the error type of this crate.

pub mod codec;
pub mod dist;
pub mod error;
pub mod limits;
pub mod merkle;
#[cfg(feature = "net")]
pub mod net;
pub mod quorum;
pub mod reaping;
pub mod replication;
pub mod ring;
#[cfg(feature = "net")]
pub mod timer;
pub mod version;
pub mod wire;

pub use error::Error;
pub use ring::{NodeId, Ring};
pub use version::{Actor, Clock, Versioned};
