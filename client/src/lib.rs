//! `dynakv-client`: talk to a dynakv cluster.
//!
//! - [`client`]: [`Client`] — connect to any node, fail over to the next, get/put/delete
//!   with per-request R/W and causal contexts.
//! - [`routing`]: the client's view of the ring, to send each key to a replica.
//! - [`tls`]: the client's mutual-TLS configuration under the cluster CA.
//! - [`settings`]: where the CLI finds nodes and certificates (flags, environment,
//!   `client.toml`).
//! - [`bench`]: the load generator behind `dynakv bench`.
//! - [`lab`], [`labcmd`]: the consistency lab and its commands (`dynakv lab`, `dynakv quorum`).
//! - [`show`]: how the CLI prints replica states and anti-entropy status for people.

pub mod bench;
pub mod cli;
pub mod client;
pub mod lab;
pub mod labcmd;
mod pacer;
pub mod routing;
pub mod settings;
pub mod show;
pub mod tls;

pub use client::{
    Client, ClientError, ClientOptions, GetResult, PutResult, ReadOptions, WriteOptions,
};
