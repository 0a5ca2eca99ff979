//! The client library: connect to any node of a cluster, fail over to the next one,
//! and read, write and delete keys with per-request R/W and causal contexts.
//!
//! A client keeps one QUIC connection to one node at a time. A request that cannot
//! reach its node (connect refused, connection lost, no answer in time) is retried on
//! the next node in the list; an answer from a node — including an error such as
//! "quorum not reached" — is final. Because a write whose connection broke may already
//! have been applied, a retried write can leave a sibling: that is the price of never
//! silently dropping a write.
//!
//! Reads are also hedged (Cassandra's speculative retry, "The Tail at Scale"): a get
//! that has no answer after [`ClientOptions::read_hedge`] is sent to another node as
//! well, the first answer wins, and the slow node is passed over for a while. A paused,
//! partitioned or dead node then costs a read that delay, not a connection timeout.
//! Writes are never sent twice, but one that meets silence (no answer and not a single
//! datagram from its node within that delay) passes the node over too, so the client's
//! next writes go elsewhere. The status request that refreshes the routing view is
//! hedged as a read is.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_common::limits::Limits;
use dynakv_common::quorum::Quorum;
use dynakv_common::replication::QuorumMode;
use dynakv_common::version::{encode_context, Clock};
use dynakv_common::wire::{
    AntiEntropyStatus, DebugReplica, ErrorCode, FaultSpec, GetRequest, GetResponse, PutRequest,
    PutResponse, ReadRepair, Request, Response, StatusResponse, WireError, NODE_SERVER_NAME,
};
use tokio::sync::Mutex;

use std::collections::HashMap;

use crate::routing::Routing;
use dynakv_common::net::coalesce::Coalescer;
use dynakv_common::net::{self as conn, ConnError};

/// How long to wait for a node to accept a connection before trying the next one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for a node's answer. Nodes give up on a quorum well before this.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a request's own deadline before the client stops waiting for the answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);
/// How long a read waits for its node before it is also sent to another. Far above a
/// healthy read's latency (milliseconds on a LAN, even under load), so a hedge answers
/// a node that stalls, not the ordinary tail.
pub const DEFAULT_READ_HEDGE: Duration = Duration::from_millis(250);
/// How long a node whose read had to be hedged, or whose write met silence, is passed
/// over for reads and writes.
pub const DEFAULT_SUSPECT_FOR: Duration = Duration::from_secs(2);
/// The hedge budget is a token bucket: each read earns [`HEDGE_PERCENT`] hundredths of a
/// hedge, at most [`HEDGE_BURST`] hedges are banked, and a hedge spends one. Room for a
/// node that stalls, while a cluster slow everywhere cannot have its read load doubled.
const HEDGE_BURST: u64 = 10;
/// Hundredths of a hedge each read earns: hedges are at most this percentage of reads,
/// beyond the banked burst.
const HEDGE_PERCENT: u64 = 10;
/// A hedge's price in the bucket's units (hundredths).
const HEDGE_COST: u64 = 100;
/// QUIC's default maximum ACK delay: a live peer acknowledges a request's packets
/// within this (plus a round trip), however long the answer takes.
const ACK_DELAY: Duration = Duration::from_millis(25);

/// Everything a client needs to reach a cluster.
#[derive(Clone)]
pub struct ClientOptions {
    /// Node addresses (`host:port`), tried in order.
    pub nodes: Vec<String>,
    /// TLS: the cluster CA and this client's certificate.
    pub tls: quinn::ClientConfig,
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// How long one attempt waits for an answer when the request sets no deadline of
    /// its own; with `timeout_ms`, an attempt waits that long plus a margin.
    pub request_timeout: Duration,
    /// Size limits checked before sending.
    pub limits: Limits,
    /// Send each read and write to a replica of its key (learning the ring from a
    /// node's status): the connected node when it is one, else the key's first
    /// reachable primary among those the status shows up. Off to make the connected
    /// node coordinate everything (tests, the lab's routing).
    pub route_by_key: bool,
    /// Send the reads and writes queued at the same moment for one node as one batch
    /// (one QUIC stream, one frame; the answers come back as each completes), as the
    /// nodes do among themselves. A lone request waits for nothing; under concurrency
    /// it saves packets and wake-ups on both ends. Off: one stream per request.
    pub coalesce: bool,
    /// Speculative reads: a get with no answer after this long is sent to another
    /// replica (or node) too, and the first answer wins; the slow node is then passed
    /// over for [`ClientOptions::suspect_for`]. Hedges are at most a tenth of the reads,
    /// beyond a banked burst of 10. Writes never are: a write that may have been applied is not sent
    /// twice; but a write with no answer after this long, whose node has sent nothing
    /// at all since, passes that node over as well. None: neither.
    pub read_hedge: Option<Duration>,
    /// How long a node whose read had to be hedged (or whose write met silence) is
    /// passed over (it is still used when no other replica can be reached).
    pub suspect_for: Duration,
}

impl ClientOptions {
    /// Options with default timeouts and limits.
    pub fn new(nodes: Vec<String>, tls: quinn::ClientConfig) -> ClientOptions {
        ClientOptions {
            nodes,
            tls,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            limits: Limits::default(),
            route_by_key: true,
            coalesce: true,
            read_hedge: Some(DEFAULT_READ_HEDGE),
            suspect_for: DEFAULT_SUSPECT_FOR,
        }
    }
}

/// What went wrong with a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no node addresses given (use --node HOST:PORT or DYNAKV_NODES)")]
    NoNodes,
    #[error("no node could be reached: {}", format_attempts(.attempts))]
    Unreachable { attempts: Vec<(String, String)> },
    /// The node answered with an error (quorum not reached, invalid request, ...).
    #[error("{0}")]
    Server(WireError),
    #[error(transparent)]
    Invalid(#[from] dynakv_common::Error),
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
    #[error("cannot create a client endpoint: {0}")]
    Endpoint(String),
    /// A write was sent but no answer came back: it may or may not have been applied.
    #[error("{reason}; the write may or may not have been applied (read the key to find out)")]
    OutcomeUnknown { reason: String },
}

fn format_attempts(attempts: &[(String, String)]) -> String {
    attempts
        .iter()
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Read options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Replicas that must answer (default: quorum).
    pub r: Quorum,
    /// Sloppy (fallbacks count toward R, the default) or strict (primaries only).
    pub mode: QuorumMode,
    /// When replicas found behind are repaired (default: async, after the reply).
    pub read_repair: ReadRepair,
    /// Server-side deadline in milliseconds (default: the node's).
    pub timeout_ms: Option<u32>,
}

/// Write and delete options.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replicas that must store the write (default: quorum).
    pub w: Quorum,
    /// Sloppy (fallbacks count toward W, the default) or strict (primaries only).
    pub mode: QuorumMode,
    /// The context of the last read of this key; `None` writes blindly (adds a sibling).
    pub context: Option<Clock>,
    /// Server-side deadline in milliseconds (default: the node's).
    pub timeout_ms: Option<u32>,
}

impl ReadOptions {
    /// Reads that need `r` replicas to answer.
    pub fn with_r(r: Quorum) -> ReadOptions {
        ReadOptions {
            r,
            ..ReadOptions::default()
        }
    }
}

impl WriteOptions {
    /// Writes that need `w` replicas to store them.
    pub fn with_w(w: Quorum) -> WriteOptions {
        WriteOptions {
            w,
            ..WriteOptions::default()
        }
    }

    /// Writes that replace what the read with this context saw.
    pub fn with_context(context: Clock) -> WriteOptions {
        WriteOptions {
            context: Some(context),
            ..WriteOptions::default()
        }
    }
}

/// The result of a read.
#[derive(Debug, Clone)]
pub struct GetResult {
    /// Live sibling values; more than one means concurrent writes to resolve.
    pub values: Vec<Vec<u8>>,
    /// The causal context to pass back with the next write of this key.
    pub context: Clock,
    /// Replicas that answered.
    pub replicas_answered: u8,
}

impl GetResult {
    /// Whether the key has at least one live value.
    pub fn found(&self) -> bool {
        !self.values.is_empty()
    }
    /// The context as the opaque token the CLI prints.
    pub fn context_token(&self) -> String {
        encode_context(&self.context)
    }
}

/// The result of a write or delete.
#[derive(Debug, Clone)]
pub struct PutResult {
    /// The context after the write; pass it back to overwrite this write.
    pub context: Clock,
    /// Replicas that acknowledged.
    pub replicas_acked: u8,
}

impl PutResult {
    /// The context as the opaque token the CLI prints.
    pub fn context_token(&self) -> String {
        encode_context(&self.context)
    }
}

struct Current {
    index: usize,
    conn: quinn::Connection,
}

/// A connection to a dynakv cluster. Cheap to share: wrap it in an `Arc`.
pub struct Client {
    endpoint: quinn::Endpoint,
    options: ClientOptions,
    current: Mutex<Option<Current>>,
    /// Where keys live, when routing by key.
    routing: std::sync::RwLock<Option<Arc<Routing>>>,
    /// One connection per node address, for requests routed by key.
    conns: std::sync::Mutex<HashMap<String, quinn::Connection>>,
    /// Replica addresses being dialled, or that could not be dialled recently: skipped
    /// by routing until then, so that one request at a time dials an address and a down
    /// node costs one handshake timeout per back-off, not one per request.
    unreachable: std::sync::Mutex<HashMap<String, Instant>>,
    /// Whether a request is fetching the routing view again (one at a time; the others
    /// route with the view they have).
    refreshing: AtomicBool,
    /// One coalescer per node address (see [`ClientOptions::coalesce`]).
    coalescers: std::sync::Mutex<HashMap<String, Coalescer>>,
    /// Nodes whose reads had to be hedged or whose writes met silence, and until when
    /// they are passed over.
    suspects: std::sync::Mutex<HashMap<String, Instant>>,
    /// The hedge budget, in hundredths of a hedge (see [`HEDGE_BURST`]).
    hedge_tokens: AtomicU64,
    /// Hedges sent (for the stats).
    hedged_reads: AtomicU64,
}

/// Where an attempt of a request was sent, once it was (the node a hedge avoids).
type SentTo = std::sync::Mutex<Option<Sent>>;

/// The node an attempt went to, once it was sent.
fn sent_addr(sent_to: &SentTo) -> Option<String> {
    let sent = sent_to.lock().unwrap_or_else(|p| p.into_inner());
    sent.as_ref().map(|s| s.addr.clone())
}

/// One attempt of a request: its node, the connection, and how many datagrams had
/// come from the node on it when the attempt was sent.
#[derive(Clone)]
struct Sent {
    addr: String,
    conn: quinn::Connection,
    received: u64,
}

impl Sent {
    /// Whether nothing at all (not even an acknowledgement) came from the node since
    /// the attempt was sent: a stalled or dead node, not a slow one.
    fn silent(&self) -> bool {
        self.conn.stats().udp_rx.datagrams == self.received
    }
}

/// Runs `first`; if it is still pending after `after`, asks `backup` for a second
/// attempt (None: keep waiting for the first alone) and answers with whichever succeeds
/// first, or with the failure of the one that finished last.
async fn hedge<T, E, F2>(
    first: impl Future<Output = Result<T, E>>,
    after: Duration,
    backup: impl FnOnce() -> Option<F2>,
) -> Result<T, E>
where
    F2: Future<Output = Result<T, E>>,
{
    tokio::pin!(first);
    if let Ok(result) = tokio::time::timeout(after, &mut first).await {
        return result;
    }
    let Some(second) = backup() else {
        return first.await;
    };
    tokio::pin!(second);
    tokio::select! {
        biased;
        result = &mut first => match result {
            Ok(v) => Ok(v),
            Err(_) => second.await,
        },
        result = &mut second => match result {
            Ok(v) => Ok(v),
            Err(_) => first.await,
        },
    }
}

/// What one attempt's outcome means for a request.
enum Attempt {
    /// The request is answered, or failed in a way another node cannot help with.
    Done(Result<Response, ClientError>),
    /// Nothing was done (refused unprocessed, or never delivered; or a read that failed):
    /// try the next node. Carries why, for the error if none can take it.
    Next(String),
}

/// Judges one attempt. A write moves on only if it certainly never reached the node:
/// retrying a write that may have been applied could store it twice, as a sibling.
fn judge(outcome: Result<Response, ConnError>, is_write: bool) -> Attempt {
    match outcome {
        // Refused unprocessed (overloaded, shutting down): nothing was done, so
        // any request may go to the next node.
        Ok(Response::Error(e)) if e.code == ErrorCode::Unavailable => Attempt::Next(e.message),
        Ok(Response::Error(e)) => Attempt::Done(Err(ClientError::Server(e))),
        Ok(resp) => Attempt::Done(Ok(resp)),
        Err(e @ ConnError::Protocol { .. }) => {
            Attempt::Done(Err(ClientError::Unexpected(e.to_string())))
        }
        Err(e) if is_write && !e.surely_not_delivered() => {
            Attempt::Done(Err(ClientError::OutcomeUnknown {
                reason: e.to_string(),
            }))
        }
        Err(e) => Attempt::Next(e.to_string()),
    }
}

/// Marks an address as being dialled by one request until dropped: unless disarmed
/// (the dial finished and set its own outcome), dropping it clears the mark.
struct Dialling<'a> {
    unreachable: &'a std::sync::Mutex<HashMap<String, Instant>>,
    addr: &'a str,
    armed: bool,
}

impl Drop for Dialling<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(self.addr);
        }
    }
}

/// Notes in `sent_to` (if any) that an attempt goes to `addr` over `conn`.
fn record(sent_to: Option<&SentTo>, addr: &str, conn: &quinn::Connection) {
    if let Some(sent_to) = sent_to {
        *sent_to.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sent {
            addr: addr.to_string(),
            conn: conn.clone(),
            received: conn.stats().udp_rx.datagrams,
        });
    }
}

/// How long a replica that could not be dialled is skipped by routing.
const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(2);
/// How old a routing view may get, while it shows a member down or a replica could not
/// be dialled, before a request fetches it again (to learn that the node is back, or
/// that the cluster now holds it down).
const ROUTING_REFRESH: Duration = Duration::from_secs(2);

/// Lets the next request refresh the routing view when dropped (also when the request
/// that was refreshing it is cancelled).
struct RefreshGuard<'a>(&'a AtomicBool);

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Client {
    /// Connects to the first reachable node of `options.nodes`.
    pub async fn connect(options: ClientOptions) -> Result<Arc<Client>, ClientError> {
        if options.nodes.is_empty() {
            return Err(ClientError::NoNodes);
        }
        // A dual-stack socket reaches IPv4 and IPv6 nodes; fall back to IPv4 where IPv6
        // is disabled.
        let dual: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
        let v4: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
        let (mut endpoint, _) = dynakv_common::net::endpoint(dual, None)
            .or_else(|_| dynakv_common::net::endpoint(v4, None))
            .map_err(|e| ClientError::Endpoint(e.to_string()))?;
        endpoint.set_default_client_config(options.tls.clone());
        let client = Arc::new(Client::new(endpoint, options));
        client.connection(None, None).await?;
        if client.options.route_by_key {
            client.refresh_routing().await;
        }
        Ok(client)
    }

    /// A client on `endpoint` that has connected to nothing yet.
    fn new(endpoint: quinn::Endpoint, options: ClientOptions) -> Client {
        Client {
            endpoint,
            options,
            current: Mutex::new(None),
            routing: std::sync::RwLock::new(None),
            conns: std::sync::Mutex::new(HashMap::new()),
            unreachable: std::sync::Mutex::new(HashMap::new()),
            refreshing: AtomicBool::new(false),
            coalescers: std::sync::Mutex::new(HashMap::new()),
            suspects: std::sync::Mutex::new(HashMap::new()),
            hedge_tokens: AtomicU64::new(HEDGE_BURST * HEDGE_COST),
            hedged_reads: AtomicU64::new(0),
        }
    }

    /// Learns the ring from the connected node's status (no routing if that fails: the
    /// connected node then coordinates, forwarding writes as needed). When reads to the
    /// connected node had to be hedged lately, it asks (and connects to) another node:
    /// the request waiting for the view would otherwise wait on the stalled node. The
    /// status request is hedged as a read is (it changes nothing): a node that stalls
    /// unnoticed does not hold the request behind the refresh for QUIC's idle timeout.
    async fn refresh_routing(&self) {
        let avoid = self
            .current_addr()
            .await
            .filter(|addr| self.suspected(addr));
        let sent_to = SentTo::default();
        let status = Request::Status;
        let first = self.request_via(&status, avoid.as_deref(), Some(&sent_to));
        let answer = match self.options.read_hedge {
            Some(after) if self.options.nodes.len() > 1 => {
                hedge(first, after, || {
                    let slow = sent_addr(&sent_to)?;
                    self.suspect(&slow);
                    let status = &status;
                    Some(async move { self.request_via(status, Some(&slow), None).await })
                })
                .await
            }
            _ => first.await,
        };
        let routing = match answer {
            Ok(Response::Status(s)) => Routing::from_status(&s).map(Arc::new),
            _ => None,
        };
        if let Some(routing) = &routing {
            // Forget addresses that are no longer members.
            self.unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|addr, _| routing.has_addr(addr));
        }
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = routing;
    }

    /// Whether `routing` should be fetched again: a node said it is not a replica of a
    /// key sent to it, or the view is a while old and showed a member down (it may be
    /// back) or a replica could not be dialled since (the cluster may hold it down).
    fn needs_refresh(&self, routing: &Routing) -> bool {
        routing.is_stale()
            || (routing.age() >= ROUTING_REFRESH
                && (routing.has_down()
                    || !self
                        .unreachable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_empty()))
    }

    fn routing(&self) -> Option<Arc<Routing>> {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The address of the node the client is connected to, while the connection lives.
    async fn current_addr(&self) -> Option<String> {
        let current = self.current.lock().await;
        current
            .as_ref()
            .filter(|c| c.conn.close_reason().is_none())
            .map(|c| self.options.nodes[c.index].clone())
    }

    /// A connection to `addr` (reused, or dialled).
    async fn conn_to(&self, addr: &str) -> Result<quinn::Connection, ConnError> {
        let cached = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .filter(|c| c.close_reason().is_none())
            .cloned();
        if let Some(conn) = cached {
            return Ok(conn);
        }
        {
            let now = Instant::now();
            let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
            if unreachable.get(addr).is_some_and(|until| *until > now) {
                return Err(ConnError::Connect {
                    addr: addr.to_string(),
                    reason: "being dialled, or could not be dialled moments ago".into(),
                });
            }
            // This request dials; the others route around the address meanwhile.
            unreachable.insert(addr.to_string(), now + self.options.connect_timeout);
        }
        // Should this request be cancelled mid-dial (a hedge that lost, a caller's
        // timeout), the next one may dial at once.
        let mut dialling = Dialling {
            unreachable: &self.unreachable,
            addr,
            armed: true,
        };
        let dialled = self.dial(addr).await;
        dialling.armed = false;
        let unreachable = || self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        match dialled {
            Ok(conn) => {
                self.conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr.to_string(), conn.clone());
                unreachable().remove(addr);
                Ok(conn)
            }
            Err(e) => {
                // The back-off counts from the failure, not from the start of the dial.
                unreachable().insert(addr.to_string(), Instant::now() + UNREACHABLE_BACKOFF);
                Err(e)
            }
        }
    }

    /// Sends a read or write of `key` straight to one of its replicas (in preference
    /// order, the next when one cannot take it), or through the connected node when the
    /// client does not route by key or no replica could be reached. Replicas the status
    /// shows down, being dialled by another request, or in their back-off are skipped
    /// at once, so no request but the one dialling waits on a connect timeout; nodes
    /// whose reads were hedged lately go last. Writes move on only when they certainly
    /// never reached a replica, as in [`Client::request`]. `avoid` is a node not to send
    /// to (a hedge's slow one); `sent_to` learns where each attempt went.
    async fn request_for_key(
        &self,
        key: &[u8],
        req: &Request,
        avoid: Option<&str>,
        sent_to: Option<&SentTo>,
    ) -> Result<Response, ClientError> {
        let mut routing = self.routing();
        if routing.as_ref().is_some_and(|r| self.needs_refresh(r))
            && !self.refreshing.swap(true, Ordering::AcqRel)
        {
            let _guard = RefreshGuard(&self.refreshing);
            self.refresh_routing().await;
            routing = self.routing();
        }
        let Some(routing) = routing else {
            return self.request_via(req, avoid, sent_to).await;
        };
        let replicas = routing.replicas(key);
        // The node this client is connected to serves the key as well as any other
        // replica: no second connection, and the client's choice of node stands.
        if let Some(current) = self.current_addr().await {
            if replicas.contains(&current)
                && avoid != Some(current.as_str())
                && !self.suspected(&current)
            {
                return self.request_via(req, avoid, sent_to).await;
            }
        }
        let max_frame = self.options.limits.max_frame_bytes();
        let is_write = matches!(req, Request::Put(_));
        let timeout = self.attempt_timeout(req);
        let (trusted, suspected): (Vec<String>, Vec<String>) = replicas
            .into_iter()
            .filter(|addr| avoid != Some(addr.as_str()))
            .partition(|addr| !self.suspected(addr));
        for addr in trusted.into_iter().chain(suspected) {
            let conn = match self.conn_to(&addr).await {
                Ok(c) => c,
                Err(_) => continue,
            };
            record(sent_to, &addr, &conn);
            let outcome = self.exchange(&addr, &conn, req, max_frame, timeout).await;
            let broken = outcome.is_err();
            match judge(outcome, is_write) {
                Attempt::Done(result) => {
                    if let Ok(Response::Get(GetResponse {
                        not_a_replica: true,
                        ..
                    }))
                    | Ok(Response::Put(PutResponse {
                        not_a_replica: true,
                        ..
                    })) = &result
                    {
                        routing.mark_stale();
                    }
                    return result;
                }
                Attempt::Next(_) if broken => {
                    self.conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&addr);
                }
                Attempt::Next(_) => {}
            }
        }
        self.request_via(req, avoid, sent_to).await
    }

    /// A read sent as [`Client::request_for_key`] does, hedged after `after` (see
    /// [`ClientOptions::read_hedge`]): the hedge goes to another node, and the slow one
    /// is passed over for a while.
    async fn hedged_read(
        &self,
        key: &[u8],
        req: &Request,
        after: Duration,
    ) -> Result<Response, ClientError> {
        self.earn_hedge();
        let sent_to = SentTo::default();
        let first = self.request_for_key(key, req, None, Some(&sent_to));
        hedge(first, after, || {
            // Not yet sent (still dialling): there is nothing to hedge against.
            let slow = sent_addr(&sent_to)?;
            // Knowing no other node for the key (a one-node cluster or list), a hedge
            // could only go to the same one.
            if !self.another_node(key, &slow) {
                return None;
            }
            if !self.take_hedge() {
                return None;
            }
            self.suspect(&slow);
            Some(async move { self.request_for_key(key, req, Some(&slow), None).await })
        })
        .await
    }

    /// A write sent as [`Client::request_for_key`] does, watched: if it has no answer
    /// after `after` (or three round trips and QUIC's ACK delay, if longer) and its node
    /// has sent nothing at all on the connection since (not even an acknowledgement of
    /// the request's packets), the node is stalled or dead,
    /// not slow, and is passed over for [`ClientOptions::suspect_for`]: the client's
    /// next requests go to another replica while this write waits for its answer (or
    /// the connection's timeout). The write itself is never sent twice.
    async fn watched_write(
        &self,
        key: &[u8],
        req: &Request,
        after: Duration,
    ) -> Result<Response, ClientError> {
        let sent_to = SentTo::default();
        let write = self.request_for_key(key, req, None, Some(&sent_to));
        tokio::pin!(write);
        if let Ok(result) = tokio::time::timeout(after, &mut write).await {
            return result;
        }
        let Some(sent) = sent_to.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            // Not sent yet (dialling): nothing to watch.
            return write.await;
        };
        // On a long link, give the node the time a live one needs to acknowledge.
        let acknowledged_by = sent.conn.rtt() * 3 + ACK_DELAY;
        if acknowledged_by > after {
            if let Ok(result) = tokio::time::timeout(acknowledged_by - after, &mut write).await {
                return result;
            }
        }
        if sent.silent() {
            self.suspect(&sent.addr);
        }
        write.await
    }

    /// Passes `addr` over for [`ClientOptions::suspect_for`].
    fn suspect(&self, addr: &str) {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), Instant::now() + self.options.suspect_for);
    }

    /// The nodes passed over for now, because a read to them had to be hedged or a
    /// write to them met silence.
    pub fn passed_over(&self) -> Vec<String> {
        let now = Instant::now();
        let mut nodes: Vec<String> = self
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(addr, _)| addr.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// What a read adds to the hedge budget.
    fn earn_hedge(&self) {
        let _ = self
            .hedge_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                Some((tokens + HEDGE_PERCENT).min(HEDGE_BURST * HEDGE_COST))
            });
    }

    /// Spends one hedge from the budget. False when it is spent.
    fn take_hedge(&self) -> bool {
        let took = self
            .hedge_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tokens| {
                tokens.checked_sub(HEDGE_COST)
            })
            .is_ok();
        if took {
            self.hedged_reads.fetch_add(1, Ordering::Relaxed);
        }
        took
    }

    /// Whether a node other than `slow` could take a request for `key`: another
    /// replica in the ring, or another address to connect to.
    fn another_node(&self, key: &[u8], slow: &str) -> bool {
        self.routing()
            .is_some_and(|r| r.replicas(key).iter().any(|addr| addr != slow))
            || self.options.nodes.iter().any(|addr| addr != slow)
    }

    /// Whether `addr` is passed over for now (see [`Client::passed_over`]).
    fn suspected(&self, addr: &str) -> bool {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        match suspects.get(addr) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                suspects.remove(addr);
                false
            }
            None => false,
        }
    }

    /// Reads hedged so far: sent to a second node because the first had not answered
    /// within [`ClientOptions::read_hedge`].
    pub fn hedged_reads(&self) -> u64 {
        self.hedged_reads.load(Ordering::Relaxed)
    }

    /// How long one attempt waits: the request's own deadline plus a margin, or the
    /// client's default.
    fn attempt_timeout(&self, req: &Request) -> Duration {
        let server_deadline = match req {
            Request::Get(g) => g.timeout_ms,
            Request::Put(p) => p.timeout_ms,
            _ => None,
        };
        server_deadline
            .map(|ms| Duration::from_millis(u64::from(ms)) + ANSWER_MARGIN)
            .unwrap_or(self.options.request_timeout)
    }

    /// The node addresses this client knows.
    pub fn nodes(&self) -> &[String] {
        &self.options.nodes
    }

    /// Returns the live connection, or connects to the next reachable node. `failed`
    /// is the index of a node that just failed and must be skipped first; the connected
    /// node is also left when it is `avoid` (a hedge's slow node) or passed over.
    async fn connection(
        &self,
        failed: Option<usize>,
        avoid: Option<&str>,
    ) -> Result<(usize, quinn::Connection), ClientError> {
        let n = self.options.nodes.len();
        let mut current = self.current.lock().await;
        // Leave the connected node when it just failed, is to be avoided, or is passed
        // over and another node is listed.
        let leaving = current.as_ref().is_some_and(|c| {
            let addr = self.options.nodes[c.index].as_str();
            failed == Some(c.index) || avoid == Some(addr) || (n > 1 && self.suspected(addr))
        });
        if let Some(c) = current.as_ref() {
            if c.conn.close_reason().is_none() && !leaving {
                return Ok((c.index, c.conn.clone()));
            }
        }
        let start = match (failed, current.as_ref()) {
            (Some(i), _) => i + 1,
            (None, Some(c)) if leaving => c.index + 1,
            (None, Some(c)) => c.index,
            (None, None) => 0,
        };
        *current = None;
        let mut attempts = Vec::new();
        for step in 0..n {
            let index = (start + step) % n;
            let addr = &self.options.nodes[index];
            match self.dial(addr).await {
                Ok(conn) => {
                    *current = Some(Current {
                        index,
                        conn: conn.clone(),
                    });
                    return Ok((index, conn));
                }
                Err(e) => attempts.push((addr.clone(), e.to_string())),
            }
        }
        Err(ClientError::Unreachable { attempts })
    }

    /// One request and its answer over `conn` (to `addr`): reads and writes through
    /// the address's coalescer, everything else on a stream of its own.
    async fn exchange(
        &self,
        addr: &str,
        conn: &quinn::Connection,
        req: &Request,
        max_frame: usize,
        timeout: Duration,
    ) -> Result<Response, ConnError> {
        if !self.options.coalesce || !matches!(req, Request::Get(_) | Request::Put(_)) {
            return conn::request(conn, req, max_frame, timeout).await;
        }
        let coalescer = self
            .coalescers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_insert_with(|| {
                Coalescer::start(
                    max_frame,
                    Arc::new(|work| {
                        tokio::spawn(work);
                    }),
                )
            })
            .clone();
        coalescer
            .call(conn.clone(), req.clone(), timeout)
            .await
            .map(|exchange| exchange.response)
    }

    async fn dial(&self, addr: &str) -> Result<quinn::Connection, ConnError> {
        conn::dial(
            &self.endpoint,
            addr,
            NODE_SERVER_NAME,
            self.options.connect_timeout,
        )
        .await
    }

    /// Sends a request, failing over to other nodes while the failure is a transport one.
    /// A write is retried elsewhere only if it certainly never reached the first node:
    /// retrying a write that may have been applied could store it twice, as a sibling.
    pub async fn request(&self, req: &Request) -> Result<Response, ClientError> {
        self.request_via(req, None, None).await
    }

    /// [`Client::request`], moving off the connected node first when it is `avoid` or
    /// passed over (see [`Client::connection`]), and noting in `sent_to` where each
    /// attempt went.
    async fn request_via(
        &self,
        req: &Request,
        avoid: Option<&str>,
        sent_to: Option<&SentTo>,
    ) -> Result<Response, ClientError> {
        let max_frame = self.options.limits.max_frame_bytes();
        let is_write = matches!(req, Request::Put(_));
        // Wait at least as long as the node was asked to, plus a margin for the answer.
        let timeout = self.attempt_timeout(req);
        let mut failed = None;
        let mut attempts = Vec::new();
        for _ in 0..self.options.nodes.len() {
            let (index, conn) = match self.connection(failed, avoid).await {
                Ok(c) => c,
                Err(ClientError::Unreachable { attempts: more }) => {
                    attempts.extend(more);
                    break;
                }
                Err(e) => return Err(e),
            };
            let addr = &self.options.nodes[index];
            record(sent_to, addr, &conn);
            match judge(
                self.exchange(addr, &conn, req, max_frame, timeout).await,
                is_write,
            ) {
                Attempt::Done(result) => return result,
                Attempt::Next(why) => {
                    attempts.push((self.options.nodes[index].clone(), why));
                    failed = Some(index);
                }
            }
        }
        Err(ClientError::Unreachable { attempts })
    }

    /// Reads a key: every live sibling and the context to write back with.
    pub async fn get(&self, key: &[u8], opts: ReadOptions) -> Result<GetResult, ClientError> {
        self.options.limits.check_key(key)?;
        let req = Request::Get(GetRequest {
            key: key.to_vec(),
            r: opts.r,
            mode: opts.mode,
            read_repair: opts.read_repair,
            timeout_ms: opts.timeout_ms,
        });
        let response = match self.options.read_hedge {
            Some(after) => self.hedged_read(key, &req, after).await?,
            None => self.request_for_key(key, &req, None, None).await?,
        };
        match response {
            Response::Get(g) => Ok(GetResult {
                values: g.values,
                context: g.context,
                replicas_answered: g.replicas_answered,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Writes a value. With the context of a read, replaces what that read returned;
    /// without one, adds a sibling next to whatever is there.
    pub async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        opts: WriteOptions,
    ) -> Result<PutResult, ClientError> {
        self.options.limits.check_value(&value)?;
        self.write(key, Some(value), opts).await
    }

    /// Deletes a key (writes a tombstone). Pass the context of a read to delete what it saw.
    pub async fn delete(&self, key: &[u8], opts: WriteOptions) -> Result<PutResult, ClientError> {
        self.write(key, None, opts).await
    }

    async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: WriteOptions,
    ) -> Result<PutResult, ClientError> {
        self.options.limits.check_key(key)?;
        let req = Request::Put(PutRequest {
            key: key.to_vec(),
            value,
            context: opts.context,
            w: opts.w,
            mode: opts.mode,
            timeout_ms: opts.timeout_ms,
            forwarded: false,
        });
        let response = match self.options.read_hedge {
            Some(after) => self.watched_write(key, &req, after).await?,
            None => self.request_for_key(key, &req, None, None).await?,
        };
        match response {
            Response::Put(p) => Ok(PutResult {
                context: p.context,
                replicas_acked: p.replicas_acked,
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The connected node's view of the cluster.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        match self.request(&Request::Status).await? {
            Response::Status(s) => Ok(*s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The connected node's local state of a key (admin certificate needed).
    pub async fn debug_replica(&self, key: &[u8]) -> Result<DebugReplica, ClientError> {
        self.options.limits.check_key(key)?;
        match self
            .request(&Request::DebugReplica { key: key.to_vec() })
            .await?
        {
            Response::Debug(d) => Ok(*d),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The connected node's anti-entropy state; with `run_now`, after a full exchange
    /// round it runs first (admin certificate needed).
    pub async fn anti_entropy(&self, run_now: bool) -> Result<AntiEntropyStatus, ClientError> {
        match self.request(&Request::AntiEntropy { run_now }).await? {
            Response::AntiEntropy(s) => Ok(*s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Replaces the faults the connected node injects into its peer traffic (admin
    /// certificate needed).
    pub async fn set_faults(&self, spec: FaultSpec) -> Result<(), ClientError> {
        match self.request(&Request::SetFaults(spec)).await? {
            Response::Ack => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The faults the connected node injects (admin certificate needed).
    pub async fn faults(&self) -> Result<FaultSpec, ClientError> {
        match self.request(&Request::GetFaults).await? {
            Response::Faults(spec) => Ok(*spec),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        if let Some(c) = self.current.lock().await.take() {
            c.conn.close(0u32.into(), b"bye");
        }
        let replicas: Vec<quinn::Connection> = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, conn)| conn)
            .collect();
        for conn in replicas {
            conn.close(0u32.into(), b"bye");
        }
        self.endpoint.wait_idle().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that has connected to nothing, dialling with `connect_timeout`.
    fn unconnected(connect_timeout: Duration) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut options = ClientOptions::new(Vec::new(), quinn::ClientConfig::new(Arc::new(quic)));
        options.connect_timeout = connect_timeout;
        let v4: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let (mut endpoint, _) = dynakv_common::net::endpoint(v4, None).unwrap();
        endpoint.set_default_client_config(options.tls.clone());
        Client::new(endpoint, options)
    }

    #[tokio::test]
    async fn one_request_at_a_time_dials_a_silent_node_and_its_back_off_counts_from_the_failure() {
        // A node that never answers: its port is held, and nothing is read from it.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        // Long enough that the first dial is surely still waiting when the second
        // request is checked, even on a stalled machine.
        let connect_timeout = Duration::from_secs(3);
        let client = Arc::new(unconnected(connect_timeout));
        let started = Instant::now();
        let first = tokio::spawn({
            let (client, addr) = (client.clone(), addr.clone());
            async move { client.conn_to(&addr).await.map(|_| ()) }
        });
        while !client.unreachable.lock().unwrap().contains_key(&addr) {
            tokio::task::yield_now().await;
        }
        // While the first request dials, another is turned away at once to route
        // around the node.
        let err = client.conn_to(&addr).await.unwrap_err();
        assert!(err.to_string().contains("being dialled"), "{err}");
        assert!(!first.is_finished(), "the first dial is still waiting");
        first.await.unwrap().unwrap_err();
        // The back-off starts when the dial failed, not when it began.
        let until = client.unreachable.lock().unwrap()[&addr];
        assert!(until >= started + connect_timeout + UNREACHABLE_BACKOFF);
        let err = client.conn_to(&addr).await.unwrap_err();
        assert!(err.to_string().contains("moments ago"), "{err}");
    }

    /// An attempt that answers `value` after `after` (virtual time).
    async fn answer(
        after: Duration,
        value: Result<u32, &'static str>,
    ) -> Result<u32, &'static str> {
        tokio::time::sleep(after).await;
        value
    }

    const HEDGE: Duration = Duration::from_millis(250);

    #[tokio::test(start_paused = true)]
    async fn a_read_answered_within_the_hedge_delay_sends_no_hedge() {
        let mut hedged = false;
        let result = hedge(answer(Duration::from_millis(10), Ok(1)), HEDGE, || {
            hedged = true;
            Some(answer(Duration::ZERO, Ok(2)))
        })
        .await;
        assert_eq!(result, Ok(1));
        assert!(!hedged);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_still_pending_at_the_delay_is_hedged_and_the_first_answer_wins() {
        let started = tokio::time::Instant::now();
        let stalled = std::future::pending::<Result<u32, &'static str>>();
        let result = hedge(stalled, HEDGE, || {
            Some(answer(Duration::from_millis(5), Ok(2)))
        })
        .await;
        assert_eq!(result, Ok(2));
        assert_eq!(started.elapsed(), HEDGE + Duration::from_millis(5));
        // The slow attempt answering first wins as well.
        let result = hedge(answer(Duration::from_millis(260), Ok(1)), HEDGE, || {
            Some(answer(Duration::from_millis(100), Ok(2)))
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_waits_for_the_other_and_two_failures_give_the_last() {
        let ms = Duration::from_millis;
        // The first fails after the hedge went out: the hedge's answer counts.
        let result = hedge(answer(ms(300), Err("first")), HEDGE, || {
            Some(answer(ms(100), Ok(2)))
        })
        .await;
        assert_eq!(result, Ok(2));
        // The hedge fails: the first's answer counts.
        let result = hedge(answer(ms(500), Ok(1)), HEDGE, || {
            Some(answer(ms(10), Err("hedge")))
        })
        .await;
        assert_eq!(result, Ok(1));
        // Both fail: the one that failed last says why.
        let result = hedge(answer(ms(500), Err("first")), HEDGE, || {
            Some(answer(ms(10), Err("hedge")))
        })
        .await;
        assert_eq!(result, Err("first"));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_hedge_to_send_the_first_attempt_is_awaited_alone() {
        let result = hedge(answer(Duration::from_secs(5), Ok(1)), HEDGE, || {
            None::<std::future::Ready<Result<u32, &'static str>>>
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test]
    async fn a_dial_cancelled_midway_lets_the_next_request_dial_at_once() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let client = Arc::new(unconnected(Duration::from_secs(600)));
        let first = tokio::spawn({
            let (client, addr) = (client.clone(), addr.clone());
            async move { client.conn_to(&addr).await.map(|_| ()) }
        });
        while !client.unreachable.lock().unwrap().contains_key(&addr) {
            tokio::task::yield_now().await;
        }
        // A hedge that lost, or a caller that gave up: the dial is dropped.
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(
            !client.unreachable.lock().unwrap().contains_key(&addr),
            "the address stays marked as being dialled"
        );
    }

    #[tokio::test]
    async fn hedges_are_a_banked_burst_then_a_tenth_of_the_reads() {
        let client = unconnected(Duration::from_secs(1));
        let read = |client: &Client, n: u64| (0..n).for_each(|_| client.earn_hedge());
        let take_all = |client: &Client| (0..1_000).filter(|_| client.take_hedge()).count() as u64;
        assert_eq!(take_all(&client), HEDGE_BURST);
        // A million healthy reads bank no more than the burst.
        read(&client, 1_000_000);
        assert_eq!(take_all(&client), HEDGE_BURST);
        // Then one hedge per ten reads.
        read(&client, 100);
        assert_eq!(take_all(&client), 100 * HEDGE_PERCENT / HEDGE_COST);
        assert_eq!(client.hedged_reads(), 2 * HEDGE_BURST + 10);
    }
}
