//! Outgoing requests to peers: the only path by which a node talks to another, and so
//! the one place that feeds the failure detector.
//!
//! One QUIC endpoint per node serves clients and peers and dials peers. Each node keeps
//! one long-lived outgoing connection per peer (dialled lazily, re-dialled when it
//! breaks) and opens one bidirectional stream per request. Peer connections use the
//! peer's node id as the TLS server name, so a node's certificate must name it.
//! Addresses come from the membership's address book. Outgoing requests pass through the
//! fault layer ([`crate::fault`]) first, which does nothing unless configured.
//!
//! Every outcome is fed to the failure detector: an answer means the peer is alive —
//! except an answer saying the peer is configured differently, which counts against it —
//! and a transport failure counts against it. Transitions are logged once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynakv_common::net::coalesce::{Coalescer, Spawn};
use dynakv_common::net::{self as conn, ConnError, Exchange};
use dynakv_common::wire::{ErrorCode, Request, Response};
use dynakv_common::NodeId;
use tracing::{error, info, warn};

use crate::fault::{Faults, Kind, Outgoing};
use crate::membership::Membership;

/// Longest time spent dialling a peer before the request counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// Outgoing requests to peers over reused connections.
pub struct Peers {
    endpoint: quinn::Endpoint,
    /// The address book and the failure detector.
    membership: Arc<Membership>,
    /// One connection slot per peer; the async mutex makes dialling single-flight.
    slots: Mutex<HashMap<NodeId, Slot>>,
    max_frame: usize,
    /// Injected faults (off by default).
    faults: Arc<Faults>,
    /// Whether replica messages to one peer are coalesced into batches.
    coalesce: bool,
    /// One coalescer per peer, started on first use.
    coalescers: Mutex<HashMap<NodeId, Coalescer>>,
    /// Where coalescers run their work (the node's task tracker).
    spawn: Spawn,
    /// Peers whose last answer refused us for a different cluster configuration, so
    /// that refusal is logged once per episode even if the peer was already down.
    misconfigured: Mutex<HashSet<NodeId>>,
}

impl Peers {
    pub fn new(
        endpoint: quinn::Endpoint,
        membership: Arc<Membership>,
        max_frame: usize,
        faults: Arc<Faults>,
        coalesce: bool,
        tasks: tokio_util::task::TaskTracker,
    ) -> Peers {
        let spawn: Spawn = Arc::new(move |work| {
            tasks.spawn(work);
        });
        Peers {
            endpoint,
            membership,
            slots: Mutex::new(HashMap::new()),
            max_frame,
            faults,
            coalesce,
            coalescers: Mutex::new(HashMap::new()),
            spawn,
            misconfigured: Mutex::new(HashSet::new()),
        }
    }

    fn slot(&self, peer: &NodeId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
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
        let addr = self
            .membership
            .address(peer)
            .ok_or_else(|| ConnError::Connect {
                addr: peer.to_string(),
                reason: "not a member".into(),
            })?;
        // The peer's id is the TLS name: a node cannot pose as another.
        let conn = conn::dial(&self.endpoint, &addr, peer.as_str(), CONNECT_TIMEOUT).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection to `peer` (it restarted): the next request dials afresh.
    pub async fn reset(&self, peer: &NodeId) {
        let slot = self.slot(peer);
        let stale = slot.lock().await.take();
        if let Some(conn) = stale {
            conn.close(0u32.into(), b"peer restarted");
        }
    }

    /// Makes sure a connection to `peer` is up (dialling if needed), within `timeout`.
    pub async fn ensure_connected(
        &self,
        peer: &NodeId,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        let result = match tokio::time::timeout(timeout, self.connection(peer)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ConnError::Connect {
                addr: peer.to_string(),
                reason: format!("no connection within {timeout:?}"),
            }),
        };
        if let Err(e) = &result {
            self.record_failure(peer, &e.to_string(), false);
        }
        result
    }

    /// Sends one request to a peer and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        peer: &NodeId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        self.call_sized(peer, req, timeout)
            .await
            .map(|exchange| exchange.response)
    }

    /// Sends a replica read or write (owned, so it can join a batch): coalesced with the
    /// others queued for the same peer at the same moment (`common::net::coalesce`),
    /// unless faults are injected, which act on each message alone.
    ///
    /// A replica message is a merge or a read, so sending it twice is harmless: when its
    /// connection broke (the peer restarted, or a connection to its previous process was
    /// closed under it), it is sent once more on a fresh connection if time is left.
    pub async fn send(
        &self,
        peer: &NodeId,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        let started = tokio::time::Instant::now();
        match self.send_once(peer, req.clone(), timeout).await {
            Err(ConnError::NotSent { .. } | ConnError::Stream { .. })
                if started.elapsed() < timeout =>
            {
                self.send_once(peer, req, timeout.saturating_sub(started.elapsed()))
                    .await
            }
            result => result,
        }
    }

    async fn send_once(
        &self,
        peer: &NodeId,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        if self.faults.is_active() || !self.coalesce {
            return self.call(peer, &req, timeout).await;
        }
        let work = async {
            let conn = self.connection(peer).await?;
            self.coalescer(peer).call(conn, req, timeout).await
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout {
                addr: peer.to_string(),
                timeout,
            }),
        };
        self.observe(peer, &result);
        result.map(|exchange| exchange.response)
    }

    fn coalescer(&self, peer: &NodeId) -> Coalescer {
        let mut map = self.coalescers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer.clone())
            .or_insert_with(|| Coalescer::start(self.max_frame, self.spawn.clone()))
            .clone()
    }

    /// Stops the coalescers (their tasks end once the requests in flight are answered).
    pub fn close(&self) {
        self.coalescers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// [`Peers::call`] that also reports the bytes sent and received.
    pub async fn call_sized(
        &self,
        peer: &NodeId,
        req: &Request,
        timeout: Duration,
    ) -> Result<Exchange, ConnError> {
        let work = async {
            // Lost and cut messages behave like a silent network: the caller waits its
            // deadline out.
            let fate = self
                .faults
                .is_active()
                .then(|| self.faults.outgoing(peer, Kind::of(req)));
            if let Some(fate) = fate {
                match fate {
                    Outgoing::Drop => std::future::pending::<()>().await,
                    Outgoing::Send { request, .. } => dynakv_common::timer::sleep(request).await,
                }
            }
            let conn = self.connection(peer).await?;
            let exchange = conn::request_sized(&conn, req, self.max_frame, timeout).await?;
            if let Some(Outgoing::Send {
                reply, reply_lost, ..
            }) = fate
            {
                if reply_lost {
                    std::future::pending::<()>().await;
                }
                dynakv_common::timer::sleep(reply).await;
            }
            Ok(exchange)
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout {
                addr: peer.to_string(),
                timeout,
            }),
        };
        self.observe(peer, &result);
        result
    }

    /// Feeds an outcome to the failure detector.
    fn observe(&self, peer: &NodeId, result: &Result<Exchange, ConnError>) {
        match result {
            Ok(Exchange {
                response: Response::Error(e),
                ..
            }) if e.code == ErrorCode::Misconfigured => {
                self.record_failure(peer, &e.message, true);
            }
            Ok(_) => {
                self.misconfigured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(peer);
                if self.membership.record_ok(peer) {
                    info!(peer = %peer, "peer is up");
                }
            }
            Err(e) => self.record_failure(peer, &e.to_string(), false),
        }
    }

    fn record_failure(&self, peer: &NodeId, cause: &str, misconfigured: bool) {
        // A peer that turns out to be configured differently gets an error of its own,
        // even when it was already down for another reason (it was restarted with the
        // wrong configuration, say): otherwise the log would only ever say "down".
        let newly_misconfigured = misconfigured
            && self
                .misconfigured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer.clone());
        let went_down = self.membership.record_failure(peer);
        if went_down {
            // A connection to a peer that stopped answering only times out later; drop it
            // so that the first request after the peer is back dials its new process.
            // (A dial in progress holds the slot and is fresh anyway.)
            if let Ok(mut slot) = self.slot(peer).try_lock() {
                if let Some(conn) = slot.take() {
                    conn.close(0u32.into(), b"peer down");
                }
            }
        }
        if newly_misconfigured || (went_down && misconfigured) {
            error!(peer = %peer, cause = %cause, "peer refused: cluster configuration differs");
        } else if went_down {
            warn!(peer = %peer, cause = %cause, "peer is down");
        }
    }
}
