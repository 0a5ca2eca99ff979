//! The async half of the wire, shared by clients and nodes (cargo feature `net`):
//! dialling a node with a bounded handshake, one request per QUIC stream as one
//! length-prefixed frame each way, and the QUIC transport settings both sides use.
//!
//! It belongs to neither side: the client library and the node's peer transport and
//! server all speak through these functions, so both ends agree on framing byte for
//! byte. The pure framing arithmetic is [`crate::codec`]; this module only moves bytes.
//! Reading never trusts a header with an allocation: the body buffer grows as bytes
//! arrive, up to the frame limit checked first.

use std::time::Duration;

pub mod coalesce;
pub mod idle_spin;

use crate::codec::{self, HEADER_BYTES};
use crate::wire::{Request, Response, CLOSE_DRAINED};
use serde::de::DeserializeOwned;

/// Why a request over a connection failed, before any application-level answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The connection could not be set up (unreachable, TLS refused, wrong protocol version).
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection broke before the request was sent: the node never saw it.
    #[error("connection to {addr} failed: {reason}")]
    NotSent { addr: String, reason: String },
    /// The connection or stream broke while the request was in flight.
    #[error("connection to {addr} failed: {reason}")]
    Stream { addr: String, reason: String },
    /// No answer within the deadline.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The request could not be encoded, or the answer could not be decoded.
    #[error("protocol error with {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

/// Most concurrent bidirectional streams on one connection (one per request in flight).
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 4096;
/// Interval between QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A connection without any packet for this long is considered dead.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes a connection's peer may send that have not been read yet, over all its
/// streams (QUIC's connection flow-control window). quinn's default is unlimited: a
/// client could park 1.25 MB (one stream's window) on each of its 4,096 streams. Room
/// for several frames of the largest size a node accepts with default limits (~17 MiB).
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 64 << 20;

/// The QUIC transport settings of every dynakv connection, client or peer: many
/// concurrent request streams, a bounded flow-control window, no unidirectional streams,
/// a keep-alive every second and a 5 s idle timeout so a dead peer is noticed quickly.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            MAX_IDLE_TIMEOUT.as_millis() as u32,
        ))));
    transport
}

/// The kernel receive buffer asked for on every endpoint's UDP socket. Linux's default
/// (about 208 KB) holds only a few hundred small datagrams: a burst of requests or
/// answers that arrives while the process is busy overflows it, the kernel drops
/// datagrams even on loopback, and QUIC's loss recovery (with its backed-off probe
/// timers) turns each loss into a stall of tens to hundreds of milliseconds.
pub const SOCKET_RECV_BUFFER_BYTES: usize = 4 << 20;

/// A QUIC endpoint on `addr` (a server if `server` is given, else a client only) whose
/// UDP socket has a receive buffer of [`SOCKET_RECV_BUFFER_BYTES`] where the kernel
/// allows it. The kernel caps the size at `net.core.rmem_max`; returns the endpoint and
/// the size obtained, so the caller can say when the cap kept it small.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<(quinn::Endpoint, usize)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if state.recv_buffer_size((&socket).into())? < SOCKET_RECV_BUFFER_BYTES {
        // Best effort: a smaller buffer still works, with more drops under bursts.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_RECV_BUFFER_BYTES);
    }
    let obtained = state.recv_buffer_size((&socket).into())?;
    if server.is_some() {
        // A node's endpoint, its one for the life of the process: its runtime watches
        // the socket while it spins before sleeping (idle_spin).
        idle_spin::watch(std::os::fd::AsRawFd::as_raw_fd(&socket));
    }
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)?;
    Ok((endpoint, obtained))
}

/// Bytes reserved for a frame body before any of it has arrived.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// Resolves `addr` (`host:port`) and opens a QUIC connection to it, checking that the
/// node's certificate is valid for `server_name`, within `timeout`. Used by clients and by
/// nodes dialling their peers.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    addr: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<quinn::Connection, ConnError> {
    let fail = |reason: String| ConnError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| fail(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| fail("address resolves to nothing".into()))?;
    let connecting = endpoint
        .connect(resolved, server_name)
        .map_err(|e| fail(e.to_string()))?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(fail(describe_connection_error(&e))),
        Err(_) => Err(fail(format!(
            "no handshake within {timeout:?} (is a node listening there?)"
        ))),
    }
}

/// Reads one frame from a stream: header, size check, body. `Ok(None)` on a clean end
/// of stream before any byte.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame: usize,
) -> Result<Option<T>, FrameError> {
    Ok(read_frame_sized(recv, max_frame).await?.map(|(msg, _)| msg))
}

/// [`read_frame`] that also returns the frame's size in bytes (header included).
pub async fn read_frame_sized<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(FrameError::Malformed(format!(
                "stream ended after {n} bytes of a 4-byte frame header"
            )))
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(FrameError::Io(e.to_string())),
    }
    let len = codec::body_len(header, max_frame).map_err(FrameError::TooLarge)?;
    // Grow the buffer as bytes arrive rather than trusting the header with an allocation.
    let mut body = Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Malformed(format!(
                    "stream ended after {} of {len} body bytes",
                    body.len()
                )))
            }
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    codec::decode_body(&body)
        .map(|msg| Some((msg, HEADER_BYTES + len)))
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Takes the end of a receive stream whose one frame was read, if the end has already
/// arrived (a peer finishes right after its frame, usually in the same packet). A
/// receive stream dropped before its end was seen makes QUIC send STOP_SENDING: one more
/// frame per request for the peer to process and acknowledge. Never waits.
pub fn take_end(recv: &mut quinn::RecvStream) {
    use std::future::Future;
    let read = std::pin::pin!(recv.read_chunk(1, true));
    let _ = read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
}

/// Writes one already-encoded frame and finishes the stream.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), FrameError> {
    send.write_all(frame)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))?;
    send.finish().map_err(|e| FrameError::Io(e.to_string()))?;
    Ok(())
}

/// Why reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    TooLarge(crate::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("stream error: {0}")]
    Io(String),
}

/// Sends `req` on a new bidirectional stream of `conn` and waits for the response.
pub async fn request(
    conn: &quinn::Connection,
    req: &Request,
    max_frame: usize,
    timeout: Duration,
) -> Result<Response, ConnError> {
    request_sized(conn, req, max_frame, timeout)
        .await
        .map(|exchange| exchange.response)
}

/// A response and the bytes one request/response exchange moved.
#[derive(Debug)]
pub struct Exchange {
    pub response: Response,
    /// Bytes of the request frame sent.
    pub sent: usize,
    /// Bytes of the response frame received.
    pub received: usize,
}

/// [`request`] that also reports the frame sizes, for work accounting.
pub async fn request_sized(
    conn: &quinn::Connection,
    req: &Request,
    max_frame: usize,
    timeout: Duration,
) -> Result<Exchange, ConnError> {
    let addr = remote_addr(conn);
    let work = async {
        let frame = codec::encode_frame(req, max_frame).map_err(|e| ConnError::Protocol {
            addr: addr.clone(),
            reason: format!("request not sent: {e}"),
        })?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| ConnError::NotSent {
            addr: addr.clone(),
            reason: describe_connection_error(&e),
        })?;
        if let Err(e) = write_frame(&mut send, &frame).await {
            // A node that refuses a request before reading all of it (larger than its
            // frame limit, or shutting down) stops the stream and says why;
            // that answer is the error to report, not "stopped by peer". The node
            // answers or finishes its side at once, so this read does not linger.
            if let Ok(Some((response, received))) =
                read_frame_sized::<Response>(&mut recv, max_frame).await
            {
                return Ok(Exchange {
                    response,
                    sent: frame.len(),
                    received,
                });
            }
            return Err(stream_error(&addr, e, conn));
        }
        let read = read_frame_sized::<Response>(&mut recv, max_frame).await;
        take_end(&mut recv);
        match read {
            Ok(Some((response, received))) => Ok(Exchange {
                response,
                sent: frame.len(),
                received,
            }),
            Ok(None) if let Some(reason) = never_served(conn) => Err(ConnError::NotSent {
                addr: addr.clone(),
                reason,
            }),
            Ok(None) => Err(ConnError::Stream {
                addr: addr.clone(),
                reason: conn
                    .close_reason()
                    .map(|e| describe_connection_error(&e))
                    .unwrap_or_else(|| "the peer closed the stream without answering".into()),
            }),
            Err(e) => Err(stream_error(&addr, e, conn)),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ConnError::Timeout { addr, timeout }),
    }
}

/// The address of `conn`'s peer for messages: IPv4 peers as IPv4 even on a dual-stack
/// socket (`127.0.0.1:7001`, not `[::ffff:127.0.0.1]:7001`).
pub(crate) fn remote_addr(conn: &quinn::Connection) -> String {
    let remote = conn.remote_address();
    std::net::SocketAddr::new(remote.ip().to_canonical(), remote.port()).to_string()
}

/// Why no request sent on `conn` was processed, when its close proves it: the node
/// closed it after draining (see [`CLOSE_DRAINED`]), or the TLS handshake failed (a
/// QUIC crypto error, 0x100-0x1ff, either side: with TLS 1.3 a client may open streams
/// before the node has checked its certificate, but the node serves none of them).
pub(crate) fn never_served(conn: &quinn::Connection) -> Option<String> {
    let is_crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    let reason = conn.close_reason()?;
    match &reason {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(CLOSE_DRAINED) =>
        {
            Some("the node shut down before reading the request".into())
        }
        quinn::ConnectionError::ConnectionClosed(close) if is_crypto(close.error_code) => {
            Some(describe_connection_error(&reason))
        }
        quinn::ConnectionError::TransportError(t) if is_crypto(t.code) => {
            Some(describe_connection_error(&reason))
        }
        _ => None,
    }
}

fn stream_error(addr: &str, e: FrameError, conn: &quinn::Connection) -> ConnError {
    if matches!(e, FrameError::Io(_)) {
        if let Some(reason) = never_served(conn) {
            return ConnError::NotSent {
                addr: addr.to_string(),
                reason,
            };
        }
    }
    match e {
        FrameError::Io(reason) => ConnError::Stream {
            addr: addr.to_string(),
            reason: conn
                .close_reason()
                .map(|e| describe_connection_error(&e))
                .unwrap_or(reason),
        },
        other => ConnError::Protocol {
            addr: addr.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A sentence for a connection error, spelling out the TLS cases users hit.
pub fn describe_connection_error(e: &quinn::ConnectionError) -> String {
    let text = e.to_string();
    if text.contains("no application protocol") || text.contains("known protocol") {
        format!("{text} (the node speaks a different dynakv protocol version)")
    } else if text.contains("certificate")
        || text.contains("UnknownIssuer")
        || text.contains("BadCertificate")
    {
        format!("{text} (TLS refused: is the certificate issued by this cluster's CA?)")
    } else {
        text
    }
}

impl ConnError {
    /// Whether the node certainly did not receive the request, so retrying it elsewhere
    /// cannot apply it twice.
    pub fn surely_not_delivered(&self) -> bool {
        matches!(self, ConnError::Connect { .. } | ConnError::NotSent { .. })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn endpoints_get_the_receive_buffer_the_kernel_allows() {
        let (endpoint, obtained) =
            super::endpoint("127.0.0.1:0".parse().unwrap(), None).expect("an endpoint");
        // Linux caps the size asked for at net.core.rmem_max (and reports double what it
        // keeps), so an endpoint gets at least the smaller of the two.
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        if let Some(cap) = cap {
            let floor = super::SOCKET_RECV_BUFFER_BYTES.min(cap);
            assert!(obtained >= floor, "receive buffer {obtained} < {floor}");
        }
        endpoint.close(0u32.into(), b"done");
    }
}
