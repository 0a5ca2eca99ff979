//! Peer transport: the only module (with `server`) that names quinn.
//!
//! One QUIC endpoint per node serves clients and peers and dials peers. Each node keeps
//! one long-lived outgoing connection per peer (dialled lazily, re-dialled when it
//! breaks) and opens one bidirectional stream per request. Peer connections use the
//! peer's node id as the TLS server name, so a node's certificate must name it.
//! Outgoing requests pass through the fault layer ([`crate::fault`]) first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynakv_common::net::{self as conn, ConnError};
use dynakv_common::wire::{Request, Response};
use dynakv_common::NodeId;

use crate::fault::{self, FaultConfig, Verdict};

/// Longest time spent dialling a peer before the request counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Outgoing requests to peers over reused connections.
pub struct Transport {
    endpoint: quinn::Endpoint,
    /// Where each peer listens (`host:port`).
    addrs: HashMap<NodeId, String>,
    /// One connection slot per peer; the async mutex makes dialling single-flight.
    slots: Mutex<HashMap<NodeId, Slot>>,
    max_frame: usize,
    /// Injected faults (from the config; off by default).
    faults: FaultConfig,
}

impl Transport {
    pub fn new(
        endpoint: quinn::Endpoint,
        addrs: HashMap<NodeId, String>,
        max_frame: usize,
        faults: FaultConfig,
    ) -> Transport {
        Transport {
            endpoint,
            addrs,
            slots: Mutex::new(HashMap::new()),
            max_frame,
            faults,
        }
    }

    fn slot(&self, peer: &NodeId) -> Slot {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        slots.entry(peer.clone()).or_default().clone()
    }

    async fn connection(&self, peer: &NodeId) -> Result<quinn::Connection, ConnError> {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        *guard = None;
        let addr = self.addrs.get(peer).ok_or_else(|| ConnError::Connect {
            addr: peer.to_string(),
            reason: "not a member".into(),
        })?;
        // The peer's id is the TLS name: a node cannot pose as another.
        let conn = conn::dial(&self.endpoint, addr, peer.as_str(), CONNECT_TIMEOUT).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Makes sure a connection to `peer` is up (dialling if needed), within `timeout`.
    pub async fn ensure_connected(
        &self,
        peer: &NodeId,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        match tokio::time::timeout(timeout, self.connection(peer)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ConnError::Connect {
                addr: peer.to_string(),
                reason: format!("no connection within {timeout:?}"),
            }),
        }
    }

    /// Sends one request to a peer and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        peer: &NodeId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        let work = async {
            if self.faults.is_active() {
                // Lost and partitioned requests behave like a silent network: the caller
                // waits its deadline out.
                let verdict = fault::judge(&self.faults, peer.as_str(), &mut rand::thread_rng());
                match verdict {
                    Verdict::Partitioned | Verdict::Lost => std::future::pending::<()>().await,
                    Verdict::Send(delay) => tokio::time::sleep(delay).await,
                }
            }
            let conn = self.connection(peer).await?;
            conn::request(&conn, req, self.max_frame, timeout).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout {
                addr: peer.to_string(),
                timeout,
            }),
        }
    }
}
