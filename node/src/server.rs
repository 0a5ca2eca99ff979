//! The serving side of the transport: accept connections, read one request frame per
//! stream, dispatch it, write one response frame.
//!
//! Every stream is bounded: a frame over the size limit is refused from its header,
//! before its body is read; bytes that do not decode are answered with an error; a
//! failed handshake (wrong CA, wrong protocol version) is logged and dropped. A
//! semaphore caps the requests in flight; past it the node answers "unavailable"
//! instead of queueing without bound.
//!
//! Authorisation: every connection was authenticated by mutual TLS under the cluster CA.
//! Only certificates that name [`NODE_SERVER_NAME`] (node certificates) may make peer
//! requests (replica reads and writes, tree exchanges, pings); certificates that name
//! [`ADMIN_NAME`] (admin client certificates) or node certificates may make admin
//! requests; any other client certificate may make client requests only. What each
//! request does is [`crate::dispatch`].

use std::sync::Arc;
use std::time::Duration;

use dynakv_common::codec;
use dynakv_common::net::{read_frame, take_end, write_frame, FrameError};
use dynakv_common::wire::{
    ErrorCode, Request, Response, WireError, ADMIN_NAME, MAX_BATCH, NODE_SERVER_NAME,
};
use dynakv_common::NodeId;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::dispatch::{dispatch, Role};
use crate::fault::Incoming;
use crate::metrics::{add, bump};
use crate::state::NodeState;

/// How long an answer may take to be acknowledged by the peer before its permit is freed.
const ANSWER_DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time a request on a cut link is held unanswered (its sender gives up sooner).
const CUT_LINK_HOLD: Duration = Duration::from_secs(60);
/// The answer to a request refused for want of an in-flight permit.
const OVERLOADED: &str =
    "node overloaded: too many requests in flight; retry later or use another node";
/// The answer to a request that arrives while the node shuts down.
const SHUTTING_DOWN: &str = "node is shutting down; retry on another node";
/// How long a stream may take to deliver its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `stop` turns true.
pub async fn serve(
    node: Arc<NodeState>,
    endpoint: quinn::Endpoint,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        let task_node = node.clone();
        node.spawn(async move {
            let node = task_node;
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(node, conn).await,
                Err(e) => info!(peer = %remote, cause = %e, "handshake refused"),
            }
        });
    }
}

/// What the certificate on a connection allows: a node certificate is one valid for
/// [`NODE_SERVER_NAME`], an admin certificate one valid for [`ADMIN_NAME`]; the chain
/// itself was already verified against the cluster CA during the handshake.
fn role_of(conn: &quinn::Connection) -> Role {
    let valid_for = |name: &str| {
        conn.peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| {
                let leaf = certs.first()?;
                let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
                let name = ServerName::try_from(name).ok()?;
                cert.verify_is_valid_for_subject_name(&name).ok()
            })
            .is_some()
    };
    if valid_for(NODE_SERVER_NAME) {
        Role::Node
    } else if valid_for(ADMIN_NAME) {
        Role::Admin
    } else {
        Role::Client
    }
}

/// Serves the streams of one connection until it closes. Streams keep being accepted
/// while the node shuts down (they are answered "shutting down", so clients retry
/// elsewhere); the connection ends when shutdown closes the endpoint.
async fn serve_connection(node: Arc<NodeState>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let role = role_of(&conn);
    // Which member is calling (peers dial from the address they listen on), for the
    // fault layer's per-link rules.
    let member = match role {
        Role::Node => node.membership.member_at(remote),
        _ => None,
    };
    debug!(peer = %remote, ?role, "connection accepted");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                node.spawn(serve_stream(node.clone(), role, member.clone(), send, recv));
            }
            Err(e) => {
                debug!(peer = %remote, cause = %e, "connection closed");
                break;
            }
        }
    }
}

async fn serve_stream(
    node: Arc<NodeState>,
    role: Role,
    member: Option<NodeId>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max_frame = node.limits.max_frame_bytes();
    // Refused unprocessed (so the client knows nothing was done and may retry on another
    // node): any request once shutting down, before reading it; a request that finds the
    // in-flight limit reached, once read. The permit bounds the work under way, not the
    // requests still arriving: taken before reading, streams a client opened and never
    // finished held every permit and locked all other clients out. What arrives unread is
    // bounded per connection by QUIC flow control (`net::transport_config`). Peers have
    // their own pool, so client load cannot starve replication.
    let refuse = |message: &str| Response::Error(WireError::new(ErrorCode::Unavailable, message));
    let stopping = || node.stopping.load(std::sync::atomic::Ordering::SeqCst);
    if stopping() {
        if let Ok(frame) = codec::encode_frame(&refuse(SHUTTING_DOWN), max_frame) {
            let _ = recv.stop(0u32.into());
            let _ = write_frame(&mut send, &frame).await;
        }
        return;
    }
    let read = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_frame::<Request>(&mut recv, max_frame),
    );
    let Ok(read) = read.await else {
        debug!("no complete request within {REQUEST_READ_TIMEOUT:?}; dropping the stream");
        bump(&node.counters.bad_frames);
        let _ = recv.stop(0u32.into());
        return;
    };
    let pool = match role {
        Role::Node => &node.peer_in_flight,
        Role::Client | Role::Admin => &node.in_flight,
    };
    // Held until the answer is sent. A shutdown sets `stopping`, then takes every permit
    // and holds them until the endpoint is closed ("drained": whatever was pending was
    // not processed, and clients retry it elsewhere). So `stopping` is checked after the
    // permit is taken: a request that got its permit before the drain began is served
    // (the drain waits for it), any other is refused here, unprocessed.
    // (A tuple is evaluated left to right: the permit first, then `stopping`.)
    let _permit = match (pool.clone().try_acquire_owned(), stopping()) {
        (Ok(permit), false) => permit,
        (permit, shutting_down) => {
            let why = if shutting_down {
                SHUTTING_DOWN
            } else {
                bump(&node.counters.overload_refusals);
                OVERLOADED
            };
            drop(permit);
            if let Ok(frame) = codec::encode_frame(&refuse(why), max_frame) {
                take_end(&mut recv);
                let _ = write_frame(&mut send, &frame).await;
            }
            return;
        }
    };
    // Every request of a batch counts: a batch is load, not one lone request.
    let served = match &read {
        Ok(Some(Request::Batch(items))) => items.len(),
        _ => 1,
    };
    let _busy = dynakv_common::net::idle_spin::busy(served);
    let mut fate = Incoming::Serve;
    if node.faults.is_active() && role == Role::Node {
        fate = node.faults.incoming(member.as_ref());
        if fate == Incoming::Ignore {
            // A request on a cut link never arrived: no processing, no answer. Hold the
            // stream (without a permit) until the sender gives up on it.
            drop(_permit);
            let _ = tokio::time::timeout(CUT_LINK_HOLD, send.stopped()).await;
            return;
        }
    }
    let response = match read {
        Ok(Some(Request::Batch(items))) => {
            serve_batch(&node, role, pool, items, fate, &mut send).await;
            take_end(&mut recv);
            return;
        }
        Ok(Some(req)) => match refusal(role, &req) {
            Some(refused) => refused,
            None => dispatch(&node, role, req).await,
        },
        Ok(None) => return,
        Err(FrameError::TooLarge(e)) => {
            bump(&node.counters.bad_frames);
            let _ = recv.stop(0u32.into());
            // The value cannot be read out of a frame this size, so say the value limit
            // too: that is the one the sender can act on.
            Response::Error(WireError::new(
                ErrorCode::TooLarge,
                format!(
                    "request refused: {e} (this node takes values of at most {} bytes)",
                    node.limits.max_value_bytes
                ),
            ))
        }
        Err(FrameError::Malformed(why)) => {
            bump(&node.counters.bad_frames);
            Response::Error(WireError::new(
                ErrorCode::InvalidRequest,
                format!("request refused: {why}"),
            ))
        }
        Err(FrameError::Io(why)) => {
            debug!(cause = %why, "stream failed before a request was read");
            return;
        }
    };
    let frame = match codec::encode_frame(&response, max_frame) {
        Ok(f) => f,
        Err(e) => {
            warn!(cause = %e, "response too large to send");
            match codec::encode_frame(
                &Response::Error(WireError::new(
                    ErrorCode::TooLarge,
                    format!("response refused: {e}"),
                )),
                max_frame,
            ) {
                Ok(f) => f,
                Err(_) => return,
            }
        }
    };
    if fate == Incoming::Mute {
        // Processed, but the answer would travel a cut link.
        drop(_permit);
        let _ = tokio::time::timeout(CUT_LINK_HOLD, send.stopped()).await;
        return;
    }
    if let Err(e) = write_frame(&mut send, &frame).await {
        debug!(cause = %e, "could not send response");
        return;
    }
    // Keep the permit until the peer has the whole answer, so a shutdown that drained
    // every permit has delivered every answer before it closes the connections.
    let _ = tokio::time::timeout(ANSWER_DELIVERY_TIMEOUT, send.stopped()).await;
    // The request's end has arrived by now (it follows the request at once), so taking
    // it spares the client a STOP_SENDING for a stream it had finished anyway.
    take_end(&mut recv);
}

/// Why a request may not be made on this connection, as the answer to send instead.
fn refusal(role: Role, req: &Request) -> Option<Response> {
    if role != Role::Node && req.is_peer_request() {
        return Some(Response::Error(WireError::new(
            ErrorCode::Forbidden,
            "peer requests need a node certificate; this connection presented a client certificate",
        )));
    }
    if role == Role::Client && req.is_admin_request() {
        return Some(Response::Error(WireError::new(
            ErrorCode::Forbidden,
            "admin requests need an admin certificate (dynakv-node cert client --admin) or a node certificate; this connection presented a plain client certificate",
        )));
    }
    if matches!(req, Request::Batch(_)) {
        return Some(Response::Error(WireError::new(
            ErrorCode::InvalidRequest,
            "batches do not nest",
        )));
    }
    None
}

/// Serves a batch: every request at once, each answer written as it completes.
///
/// A client's batch takes one in-flight permit per request (the stream's own covers
/// the first), so batching cannot carry a client past the in-flight limit: a request
/// without a permit is answered "overloaded" unprocessed, which the client may retry
/// elsewhere. A peer's batch, bounded by [`MAX_BATCH`], rides on its stream's permit.
async fn serve_batch(
    node: &Arc<NodeState>,
    role: Role,
    pool: &Arc<tokio::sync::Semaphore>,
    items: Vec<Request>,
    fate: Incoming,
    send: &mut quinn::SendStream,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};

    let max_frame = node.limits.max_frame_bytes();
    if items.is_empty() {
        bump(&node.counters.bad_frames);
        let refused = Response::Error(WireError::new(
            ErrorCode::InvalidRequest,
            "an empty batch: nothing to answer",
        ));
        if let Ok(frame) = codec::encode_frame(&refused, max_frame) {
            let _ = write_frame(send, &frame).await;
        }
        return;
    }
    if items.len() > MAX_BATCH {
        bump(&node.counters.bad_frames);
        let refused = Response::Error(WireError::new(
            ErrorCode::TooLarge,
            format!(
                "a batch holds at most {MAX_BATCH} requests, this one {}",
                items.len()
            ),
        ));
        if let Ok(frame) = codec::encode_frame(&refused, max_frame) {
            let _ = write_frame(send, &frame).await;
        }
        return;
    }
    let batched = match role {
        Role::Node => &node.counters.replica_batched_requests,
        Role::Client | Role::Admin => &node.counters.client_batched_requests,
    };
    add(batched, items.len() as u64);
    let mut pending: FuturesUnordered<_> = items
        .into_iter()
        .enumerate()
        .map(|(index, req)| {
            let permit = if index == 0 || role == Role::Node {
                Ok(None)
            } else {
                pool.clone().try_acquire_owned().map(Some)
            };
            async move {
                let response = match (refusal(role, &req), permit) {
                    (Some(refused), _) => refused,
                    (None, Err(_)) => {
                        bump(&node.counters.overload_refusals);
                        Response::Error(WireError::new(ErrorCode::Unavailable, OVERLOADED))
                    }
                    (None, Ok(_permit)) => dispatch(node, role, req).await,
                };
                (index as u32, response)
            }
        })
        .collect();
    while let Some((index, response)) = pending.next().await {
        if fate == Incoming::Mute {
            continue;
        }
        let item = Response::BatchItem {
            index,
            response: Box::new(response),
        };
        let frame = match codec::encode_frame(&item, max_frame) {
            Ok(f) => f,
            Err(e) => {
                let refused = Response::BatchItem {
                    index,
                    response: Box::new(Response::Error(WireError::new(
                        ErrorCode::TooLarge,
                        format!("response refused: {e}"),
                    ))),
                };
                match codec::encode_frame(&refused, max_frame) {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = send.write_all(&frame).await {
            debug!(cause = %e, "could not send a batch answer");
            return;
        }
    }
    if fate == Incoming::Mute {
        let _ = tokio::time::timeout(CUT_LINK_HOLD, send.stopped()).await;
        return;
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(ANSWER_DELIVERY_TIMEOUT, send.stopped()).await;
}
