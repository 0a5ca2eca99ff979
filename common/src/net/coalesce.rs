//! Coalescing: requests queued at once for the same connection travel as one
//! [`Request::Batch`] frame on one stream, and their answers come back as
//! [`Response::BatchItem`] frames on that stream as each completes — the way Cassandra
//! and Scylla coalesce messages to a peer. Each QUIC stream, frame and UDP datagram
//! costs system calls and thread wake-ups on both ends; under load, one stream carries
//! many requests.
//!
//! There is no timer. When nothing it sent is still awaiting an answer, a [`Coalescer`]
//! sends what is queued at once, so a lone request goes out alone without waiting. While
//! earlier batches are in flight (the sender is busy), it first yields to the scheduler
//! once, so that the tasks already ready to run — the other requests of a client batch,
//! the fan-outs of other writes — queue their messages too, and everything queued in that
//! pass travels together: without that yield, the woken coalescer ran between every two
//! request tasks and took one message at a time (1.02 per batch measured under load). A
//! batch is bounded in requests and bytes. Each caller keeps its own deadline; a failure
//! before a request's answer arrived is reported to that caller exactly as for a request
//! sent alone (not sent, or unknown).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{describe_connection_error, request_sized, ConnError, Exchange};
use crate::codec;
use crate::wire::{Request, Response, MAX_BATCH};

/// Spawns the work of one batch (the node tracks its tasks; a client uses tokio).
pub type Spawn = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

struct Queued {
    conn: quinn::Connection,
    req: Request,
    size: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<Exchange, ConnError>>,
}

/// Sends requests, coalescing those queued at once for the same connection.
#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::UnboundedSender<Queued>,
}

impl Coalescer {
    /// Starts the coalescer's task (with `spawn`); `max_frame` bounds a batch's bytes.
    pub fn start(max_frame: usize, spawn: Spawn) -> Coalescer {
        let (tx, rx) = mpsc::unbounded_channel();
        let task_spawn = spawn.clone();
        spawn(Box::pin(run(rx, max_frame, task_spawn)));
        Coalescer { tx }
    }

    /// Sends `req` over `conn` (with whatever else is queued for it) and waits at most
    /// `timeout` for its answer.
    pub async fn call(
        &self,
        conn: quinn::Connection,
        req: Request,
        timeout: Duration,
    ) -> Result<Exchange, ConnError> {
        let addr = super::remote_addr(&conn);
        let size = postcard::experimental::serialized_size(&req).unwrap_or(usize::MAX / 4);
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            conn,
            req,
            size,
            deadline: Instant::now() + timeout,
            reply,
        };
        if self.tx.send(queued).is_err() {
            return Err(ConnError::NotSent {
                addr,
                reason: "the sender is shutting down".into(),
            });
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ConnError::Stream {
                addr,
                reason: "the request was dropped before an answer came".into(),
            }),
            Err(_) => Err(ConnError::Timeout { addr, timeout }),
        }
    }
}

/// Most requests one turn of the loop takes from the queue.
const MAX_DRAIN: usize = 4 * MAX_BATCH;

/// Most bytes of requests in one batch. Batching pays for small messages; a larger one
/// goes alone. Kept under the frame overhead every node accepts beyond its value limit
/// (1 MiB), so a batch is never refused as too large by a node that would have taken each
/// of its requests alone, whatever limits the sender itself was configured with (the CLI
/// leaves the value limit to the nodes).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// The coalescer's loop: take what is queued, send it as one batch per connection,
/// repeat. Requests for different connections (a client talks to every replica) may
/// share one queue. Requests queued together are concurrent, so batches (sent side by
/// side) promise no order among them; within a batch, items keep their queue order.
async fn run(mut rx: mpsc::UnboundedReceiver<Queued>, max_frame: usize, spawn: Spawn) {
    let budget = (max_frame / 2).min(MAX_BATCH_BYTES);
    let in_flight = Arc::new(AtomicUsize::new(0));
    while let Some(first) = rx.recv().await {
        if in_flight.load(Ordering::Relaxed) > 0 {
            tokio::task::yield_now().await;
        }
        let mut batches: Vec<(Vec<Queued>, usize)> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(q) = next.take() {
            taken += 1;
            let id = q.conn.stable_id();
            let open = batches.iter_mut().find(|(batch, bytes)| {
                batch[0].conn.stable_id() == id
                    && batch.len() < MAX_BATCH
                    && *bytes + q.size <= budget
            });
            match open {
                Some((batch, bytes)) => {
                    *bytes += q.size;
                    batch.push(q);
                }
                None => {
                    let size = q.size;
                    batches.push((vec![q], size));
                }
            }
            if taken < MAX_DRAIN {
                next = rx.try_recv().ok();
            }
        }
        for (batch, _) in batches {
            let sending = InFlight::new(&in_flight);
            spawn(Box::pin(async move {
                send(batch, max_frame).await;
                drop(sending);
            }));
        }
    }
}

/// Counts a batch as in flight until dropped (also when its task is cancelled).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one batch and hands each answer to its caller.
async fn send(mut batch: Vec<Queued>, max_frame: usize) {
    let deadline = batch
        .iter()
        .map(|q| q.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let timeout = deadline.saturating_duration_since(Instant::now());
    if batch.len() == 1 {
        let Some(q) = batch.pop() else { return };
        let result = request_sized(&q.conn, &q.req, max_frame, timeout).await;
        let _ = q.reply.send(result);
        return;
    }
    let conn = batch[0].conn.clone();
    let addr = super::remote_addr(&conn);
    let mut replies: Vec<Option<oneshot::Sender<Result<Exchange, ConnError>>>> = Vec::new();
    let mut requests = Vec::with_capacity(batch.len());
    for q in batch {
        replies.push(Some(q.reply));
        requests.push(q.req);
    }
    let count = requests.len();
    let fail_all = |replies: &mut Vec<Option<oneshot::Sender<_>>>, e: &dyn Fn() -> ConnError| {
        for r in replies.iter_mut().filter_map(Option::take) {
            let _ = r.send(Err(e()));
        }
    };
    let frame = match codec::encode_frame(&Request::Batch(requests), max_frame) {
        Ok(f) => f,
        Err(e) => {
            let reason = format!("request not sent: {e}");
            fail_all(&mut replies, &|| ConnError::Protocol {
                addr: addr.clone(),
                reason: reason.clone(),
            });
            return;
        }
    };
    let share = frame.len() / count;
    let work = async {
        let (mut tx, mut rx) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                let reason = describe_connection_error(&e);
                fail_all(&mut replies, &|| ConnError::NotSent {
                    addr: addr.clone(),
                    reason: reason.clone(),
                });
                return;
            }
        };
        // A node that refuses the batch before reading all of it (larger than its frame
        // limit, or shutting down) stops the stream and answers the whole batch at once:
        // read on, so callers get that answer rather than the write's "stopped by peer".
        // The node answers or finishes its side at once.
        let write_error = super::write_frame(&mut tx, &frame)
            .await
            .err()
            .map(|e| e.to_string());
        let mut answered = 0;
        while answered < count {
            match super::read_frame_sized::<Response>(&mut rx, max_frame).await {
                Ok(Some((Response::BatchItem { index, response }, received))) => {
                    if let Some(reply) = replies.get_mut(index as usize).and_then(Option::take) {
                        answered += 1;
                        let _ = reply.send(Ok(Exchange {
                            response: *response,
                            sent: share,
                            received,
                        }));
                    }
                }
                // The whole batch was answered at once (refused unprocessed, or too large).
                Ok(Some((response, received))) => {
                    for reply in replies.iter_mut().filter_map(Option::take) {
                        let _ = reply.send(Ok(Exchange {
                            response: response.clone(),
                            sent: share,
                            received,
                        }));
                    }
                    return;
                }
                Ok(None) | Err(_) => {
                    let reason = conn
                        .close_reason()
                        .map(|e| describe_connection_error(&e))
                        .or_else(|| write_error.clone())
                        .unwrap_or_else(|| "the stream ended before every answer came".into());
                    let never_served = super::never_served(&conn);
                    fail_all(&mut replies, &|| {
                        if let Some(reason) = &never_served {
                            ConnError::NotSent {
                                addr: addr.clone(),
                                reason: reason.clone(),
                            }
                        } else {
                            ConnError::Stream {
                                addr: addr.clone(),
                                reason: reason.clone(),
                            }
                        }
                    });
                    return;
                }
            }
        }
        super::take_end(&mut rx);
    };
    // Callers give up at their own deadlines; the stream is dropped at the last one.
    let _ = tokio::time::timeout(timeout, work).await;
}
