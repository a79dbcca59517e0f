//! The QUIC transport: one endpoint per process, one connection per pair of nodes, RPC over
//! bidirectional streams and ordered one-way messages over one stream per (peer, group).
//!
//! This is shell code (DESIGN.md §3): it moves frame bodies, as bytes, between processes and
//! knows nothing about what they mean. A typed layer above it encodes and decodes messages.
//!
//! # Two ways to talk
//!
//! - **RPC** ([`QuicEndpoint::request`]): each request opens its own bidirectional stream, so any
//!   number of requests (up to [`TransportLimits::rpc_streams_max`] per connection) are in
//!   flight at once without waiting on each other (Request Pipeline). The peer's
//!   [`RpcHandler`] answers with bytes or a `(code, message)` refusal; the requester gets a
//!   typed [`RpcError`] for everything else, including its own per-request timeout.
//! - **Group messages** ([`QuicEndpoint::send`]): one long-lived unidirectional stream per
//!   (peer, group) carries that group's messages in order, so a slow or lost packet of one group
//!   never holds up another (Single Socket Channel without head-of-line blocking). `send` never
//!   waits: it queues into a bounded queue whose writer task packs every queued message into one
//!   stream write. A full queue drops the message and counts it ([`TransportStats`]) — Raft
//!   retransmits, and a queue that grows without bound is worse than a lost message.
//!   Inbound messages arrive, in order per (peer, group), on the channel returned by
//!   [`QuicEndpoint::bind`]. The transport gives no group id a meaning; the node shell uses the
//!   reserved id `decree_proto::envelope::NODE_GROUP` for its node-level stream, which carries
//!   every group's small Raft messages to a peer coalesced into one envelope per iteration.
//!
//! # Connection lifecycle
//!
//! 1. **Dial on demand.** The first request or message to a peer dials it with the TLS server
//!    name `node-<id>`; TLS checks the certificate names that node and is signed by the cluster
//!    CA, and we read the NodeId back from it. Dials to one peer are single-flight.
//! 2. **Accept.** Inbound connections finish the mutual-TLS handshake (a certificate from
//!    another CA fails here, and is logged), then the peer's identity is read from its
//!    certificate. One identity holds at most
//!    [`TransportLimits::connections_per_identity_max`] connections; one more is closed with
//!    `close_code::TOO_MANY_CONNECTIONS` while other identities still connect. A node's
//!    connection is registered for reuse in both directions.
//! 3. **One connection per pair.** If both nodes dial each other at once, both keep the
//!    connection dialed by the lower NodeId (the newest one if several qualify) and close the
//!    other after a grace period ([`TransportLimits::duplicate_close_grace_ms`]).
//! 4. **Serve.** Every connection, dialed or accepted, serves the peer's RPC and group streams.
//!    A refused stream (bad frame, unknown version, undecodable body) is reset or stopped with a
//!    [`StreamErrorCode`]; the connection and all other streams carry on. Refusals are counted
//!    in [`TransportStats`] and logged at `WARN` at most once per peer per
//!    [`TransportLimits::refusal_log_interval_ms`], each line carrying the number left out
//!    since the last. A request frame must arrive within `request_read_timeout_ms` of its
//!    stream opening.
//! 5. **Request budget.** A request's frame header is read first, and the body length it
//!    announces is charged to its connection and its certificate identity before any of the
//!    body is read ([`TransportLimits::request_bytes_per_connection_max`],
//!    [`TransportLimits::request_bytes_per_identity_max`]); a request that does not fit is
//!    refused with [`StreamErrorCode::RequestBudgetExceeded`]. The charge is given back when
//!    the handler returns or the stream dies, on every path, so the memory one identity can
//!    make a node hold for its requests is bounded, however many streams and connections it
//!    opens. Group streams, which only cluster nodes may open, are not charged.
//! 6. **Loss and reconnect.** Keep-alives detect a silent peer within the idle timeout. A closed
//!    connection is dropped from the table; the next request or message dials again. Failed
//!    dials back off exponentially (from `backoff_initial_ms` up to `backoff_max_ms`); during the
//!    back-off, requests fail fast with [`RpcError::Unreachable`].
//! 7. **Close.** [`QuicEndpoint::close`] stops the writer tasks, closes every connection and waits
//!    until the socket is released.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use decree_proto::frame::{parse_header, FRAME_HEADER_BYTES};
use decree_types::{limits, GroupId, NodeId};
use parking_lot::Mutex;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::certs::{node_name, peer_of_certificate, Identity, Peer};
use crate::tls::{quic_client_config, quic_server_config, TlsConfigError};
use crate::wire::{
    close_code, error_response, group_stream_header, max_body_bytes, ok_response_prefix,
    parse_group_header, parse_response, push_frame, FrameReader, Response, StreamErrorCode,
};

/// Bounds and timings of a transport. Every queue and window is bounded (STYLE.md principle 6).
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Messages queued per (peer, group) before `send` drops.
    pub outbound_queue_messages: usize,
    /// Inbound group messages buffered for the receiver before group streams stop being read
    /// (QUIC flow control then slows the senders).
    pub inbound_queue_messages: usize,
    /// Bytes packed into one stream write by a group writer.
    pub batch_bytes_max: usize,
    /// Concurrent RPC streams a peer may open on one connection.
    pub rpc_streams_max: u32,
    /// Concurrent group streams a peer may open on one connection.
    pub group_streams_max: u32,
    /// Connection-level receive window, bytes: what a peer may send before we read it.
    pub connection_receive_window_bytes: u32,
    /// Time allowed for a dial, handshake included.
    pub connect_timeout_ms: u64,
    /// A connection with no packets for this long is closed.
    pub idle_timeout_ms: u32,
    /// Keep-alive interval, below `idle_timeout_ms`.
    pub keep_alive_ms: u64,
    /// First back-off after a failed dial.
    pub backoff_initial_ms: u64,
    /// Longest back-off between dials.
    pub backoff_max_ms: u64,
    /// How long a duplicate connection keeps serving before it is closed.
    pub duplicate_close_grace_ms: u64,
    /// Time a peer has to deliver a complete request frame once it opened the stream; a slower
    /// request is reset, so a stalled peer cannot hold stream slots forever.
    pub request_read_timeout_ms: u64,
    /// Bytes of requests in flight on one connection: each request is charged its announced
    /// body length when its frame header arrives, before the body is read, until its handler
    /// returns or its stream dies. A request that would exceed it is refused with
    /// [`StreamErrorCode::RequestBudgetExceeded`].
    pub request_bytes_per_connection_max: usize,
    /// The same charge summed over every connection of one certificate identity.
    pub request_bytes_per_identity_max: usize,
    /// Live inbound and outbound connections one certificate identity may hold; an accepted
    /// connection beyond it is closed with `close_code::TOO_MANY_CONNECTIONS`.
    pub connections_per_identity_max: usize,
    /// Refusals (streams and connections) are logged at most once per peer per this interval;
    /// the others are counted in [`TransportStats`] and summed into the next line.
    pub refusal_log_interval_ms: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            outbound_queue_messages: 4096,
            inbound_queue_messages: 16384,
            batch_bytes_max: 64 * 1024,
            rpc_streams_max: 1024,
            group_streams_max: 1024,
            connection_receive_window_bytes: 64 * 1024 * 1024,
            connect_timeout_ms: 2_000,
            idle_timeout_ms: 5_000,
            keep_alive_ms: 1_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
            duplicate_close_grace_ms: 2_000,
            request_read_timeout_ms: 10_000,
            request_bytes_per_connection_max: limits::REQUEST_BYTES_PER_CONNECTION_MAX,
            request_bytes_per_identity_max: limits::REQUEST_BYTES_PER_IDENTITY_MAX,
            connections_per_identity_max: limits::CONNECTIONS_PER_IDENTITY_MAX,
            refusal_log_interval_ms: limits::REFUSAL_LOG_INTERVAL_MS,
        }
    }
}

/// How to start a node's transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP address to listen on (port 0 picks one; see [`QuicEndpoint::local_addr`]).
    pub listen_addr: SocketAddr,
    /// This node's identity; must be a node certificate.
    pub identity: Identity,
    /// Known peers and their addresses. More can be added with [`QuicEndpoint::add_peer`].
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Bounds and timings.
    pub limits: TransportLimits,
}

/// The future an [`RpcHandler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, HandlerError>> + Send>>;

/// Answers inbound requests. Implemented for any `Fn(Peer, Vec<u8>) -> impl Future` closure.
pub trait RpcHandler: Send + Sync + 'static {
    /// Handles one request body from `from`; returns the response body or a refusal.
    fn handle(&self, from: Peer, body: Vec<u8>) -> HandlerFuture;
}

impl<F, Fut> RpcHandler for F
where
    F: Fn(Peer, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
{
    fn handle(&self, from: Peer, body: Vec<u8>) -> HandlerFuture {
        Box::pin(self(from, body))
    }
}

/// A handler's refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The body is not a message this node understands: the stream is reset with
    /// [`StreamErrorCode::BodyUndecodable`] and the event logged.
    #[error("undecodable request: {reason}")]
    Undecodable {
        /// Why it does not decode.
        reason: String,
    },
    /// An application-level refusal, delivered to the requester as
    /// [`RpcError::PeerError`].
    #[error("refused with code {code}: {message}")]
    Refused {
        /// The application's refusal code.
        code: u32,
        /// What the requester is told.
        message: String,
    },
}

/// One inbound group message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessage {
    /// The sending node, as named by its certificate.
    pub from: NodeId,
    /// The group whose stream carried it.
    pub group: GroupId,
    /// The frame body.
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No response within the request's timeout. The request may or may not have been handled.
    #[error("no response within {after_ms} ms")]
    Timeout {
        /// The timeout that passed, in milliseconds.
        after_ms: u64,
    },
    /// The peer could not be reached (dial failed, or backing off after failed dials).
    #[error("{peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed: a certificate not from the cluster CA, or not the node dialed.
    #[error("TLS handshake with {peer} failed: {reason}")]
    Tls {
        /// The peer.
        peer: NodeId,
        /// What TLS reported.
        reason: String,
    },
    /// The connection broke while the request was in flight. It may or may not have been handled.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// What QUIC reported.
        reason: String,
    },
    /// The peer's handler refused the request.
    #[error("peer refused with code {code}: {message}")]
    PeerError {
        /// The handler's refusal code.
        code: u32,
        /// The handler's message.
        message: String,
    },
    /// The peer reset the stream; `code` names why when it is one of ours.
    #[error("stream reset by peer with code {raw_code:#x} ({code:?})")]
    StreamReset {
        /// The QUIC application error code.
        raw_code: u64,
        /// That code, if it is one of ours.
        code: Option<StreamErrorCode>,
    },
    /// The response was not a valid frame.
    #[error("malformed response ({code:?}): {reason}")]
    Frame {
        /// What is wrong with it.
        code: StreamErrorCode,
        /// Details.
        reason: String,
    },
    /// The request body exceeds the maximum frame size.
    #[error("request of {bytes} bytes exceeds the maximum frame body")]
    TooLarge {
        /// The body's size.
        bytes: usize,
    },
    /// No address is known for the peer.
    #[error("no address known for {0}")]
    UnknownPeer(NodeId),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}

/// Why `send` did not queue a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The (peer, group) queue is full; the message was dropped and counted.
    #[error("outbound queue full; message dropped")]
    QueueFull,
    /// No address is known for the peer.
    #[error("no address known for {0}")]
    UnknownPeer(NodeId),
    /// The body exceeds the maximum frame size.
    #[error("message of {bytes} bytes exceeds the maximum frame body")]
    TooLarge {
        /// The body's size.
        bytes: usize,
    },
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The identity could not be turned into a TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// `bind` was given a client identity.
    #[error("a node transport needs a node certificate, got {0}")]
    NotANode(Peer),
}

/// Counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Group messages dropped: queue full, or lost with a broken stream.
    pub dropped_messages: u64,
    /// Group messages written to a stream.
    pub sent_messages: u64,
    /// Group messages received and delivered.
    pub received_messages: u64,
    /// Inbound streams refused with a [`StreamErrorCode`], for any reason.
    pub refused_streams: u64,
    /// Of those, requests refused with [`StreamErrorCode::RequestBudgetExceeded`].
    pub refused_over_budget: u64,
    /// Inbound connections refused: failed handshake, a certificate naming nobody, or one
    /// connection more than the identity's [`TransportLimits::connections_per_identity_max`].
    pub refused_connections: u64,
    /// Connections established (dialed or accepted).
    pub connections_established: u64,
    /// Bytes of inbound requests in flight now: announced by a frame header and not yet
    /// finished with (summed over every connection).
    pub request_bytes_held: u64,
    /// The most `request_bytes_held` has been since start.
    pub request_bytes_held_peak: u64,
    /// Refusals written to the log as a `WARN` line.
    pub refusal_logs_written: u64,
    /// Refusals left out of the log by the per-peer rate limit
    /// ([`TransportLimits::refusal_log_interval_ms`]); each is summed into the peer's next line.
    pub refusal_logs_suppressed: u64,
}

/// A running transport. Cheap to clone; all clones share one endpoint.
#[derive(Clone)]
pub struct QuicEndpoint {
    inner: Arc<Inner>,
}

impl fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("local", &self.inner.local)
            .field("addr", &self.inner.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl QuicEndpoint {
    /// Starts a node's transport: binds the endpoint and starts accepting. Inbound group
    /// messages arrive on the returned receiver; inbound requests go to `handler`.
    /// Must be called inside a tokio runtime.
    pub fn bind(
        config: TransportConfig,
        handler: impl RpcHandler,
    ) -> Result<(QuicEndpoint, mpsc::Receiver<InboundMessage>), TransportError> {
        if config.identity.peer.node_id().is_none() {
            return Err(TransportError::NotANode(config.identity.peer.clone()));
        }
        let transport_config = Arc::new(quic_transport_config(&config.limits));
        let mut server_config =
            quinn::ServerConfig::with_crypto(Arc::new(quic_server_config(&config.identity)?));
        server_config.transport_config(Arc::clone(&transport_config));
        let endpoint = Endpoint::server(server_config, config.listen_addr)
            .map_err(|source| TransportError::Bind { addr: config.listen_addr, source })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.limits.inbound_queue_messages.max(1));
        let inner = Inner::new(config, endpoint, transport_config, Arc::new(handler), inbound_tx)?;
        let accept = inner.runtime.spawn(Arc::clone(&inner).accept_loop());
        inner.tasks.lock().push(accept.abort_handle());
        Ok((QuicEndpoint { inner }, inbound_rx))
    }

    /// Starts a client-only transport (no listening, RPC only) for a client identity, e.g. the
    /// client library or the CLI.
    pub fn client(
        identity: Identity,
        peers: BTreeMap<NodeId, SocketAddr>,
        limits: TransportLimits,
    ) -> Result<QuicEndpoint, TransportError> {
        let addr = SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint =
            Endpoint::client(addr).map_err(|source| TransportError::Bind { addr, source })?;
        let transport_config = Arc::new(quic_transport_config(&limits));
        // Clients never accept connections, so inbound group messages cannot arrive; the
        // receiver is dropped and the channel stays empty.
        let (inbound_tx, _) = mpsc::channel(1);
        let config = TransportConfig { listen_addr: addr, identity, peers, limits };
        let refuse = |_from: Peer, _body: Vec<u8>| async {
            Err(HandlerError::Refused { code: 0, message: "clients serve no requests".into() })
        };
        let inner = Inner::new(config, endpoint, transport_config, Arc::new(refuse), inbound_tx)?;
        Ok(QuicEndpoint { inner })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Who this transport is.
    pub fn local_peer(&self) -> &Peer {
        &self.inner.local
    }

    /// Adds or changes a peer's address. An existing connection is kept until it fails.
    pub fn add_peer(&self, peer: NodeId, addr: SocketAddr) {
        let mut peers = self.inner.peers.lock();
        peers.entry(peer).or_insert_with(|| PeerSlot::new(addr)).addr = addr;
    }

    /// Sends one request to `peer` and waits for its response, at most `timeout`.
    pub async fn request(
        &self,
        peer: NodeId,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        if body.len() > max_body_bytes() - 1 {
            return Err(RpcError::TooLarge { bytes: body.len() });
        }
        match tokio::time::timeout(timeout, self.inner.request(peer, body)).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout { after_ms: timeout.as_millis() as u64 }),
        }
    }

    /// Queues one message for `group` on `peer`, in order after earlier messages to the same
    /// (peer, group). Never waits; a full queue drops the message (and counts it).
    pub fn send(&self, peer: NodeId, group: GroupId, body: Vec<u8>) -> Result<(), SendError> {
        if body.len() > max_body_bytes() {
            return Err(SendError::TooLarge { bytes: body.len() });
        }
        let mut writers = self.inner.writers.lock();
        let queue = match writers.get(&(peer, group)) {
            Some(queue) => queue,
            None => {
                drop(writers);
                self.writer_queue(peer, group)?;
                writers = self.inner.writers.lock();
                // Invariant: `writer_queue` just inserted the queue, and only `close` removes
                // queues (after which `writer_queue` fails and we returned above).
                writers.get(&(peer, group)).ok_or(SendError::Closed)?
            }
        };
        match queue.try_send(body) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.stats.dropped_messages.fetch_add(1, Ordering::Relaxed);
                Err(SendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Like [`QuicEndpoint::send`], but waits for queue space instead of dropping: for traffic
    /// that must not be lost to a momentary burst (snapshot chunks, benchmarks). Messages can
    /// still be lost with a broken stream.
    pub async fn send_wait(
        &self,
        peer: NodeId,
        group: GroupId,
        body: Vec<u8>,
    ) -> Result<(), SendError> {
        if body.len() > max_body_bytes() {
            return Err(SendError::TooLarge { bytes: body.len() });
        }
        let queue = self.writer_queue(peer, group)?;
        queue.send(body).await.map_err(|_| SendError::Closed)
    }

    /// Counters since start.
    pub fn stats(&self) -> TransportStats {
        let s = &self.inner.stats;
        TransportStats {
            dropped_messages: s.dropped_messages.load(Ordering::Relaxed),
            sent_messages: s.sent_messages.load(Ordering::Relaxed),
            received_messages: s.received_messages.load(Ordering::Relaxed),
            refused_streams: s.refused_streams.load(Ordering::Relaxed),
            refused_over_budget: s.refused_over_budget.load(Ordering::Relaxed),
            refused_connections: s.refused_connections.load(Ordering::Relaxed),
            connections_established: s.connections_established.load(Ordering::Relaxed),
            request_bytes_held: self.inner.budget.held_bytes.load(Ordering::Relaxed),
            request_bytes_held_peak: self.inner.budget.held_bytes_peak.load(Ordering::Relaxed),
            refusal_logs_written: s.refusal_logs_written.load(Ordering::Relaxed),
            refusal_logs_suppressed: s.refusal_logs_suppressed.load(Ordering::Relaxed),
        }
    }

    /// The number of live connections to `peer` (1 in steady state; 2 briefly while a
    /// duplicate is being retired).
    pub fn connections_to(&self, peer: NodeId) -> usize {
        let mut peers = self.inner.peers.lock();
        peers.get_mut(&peer).map_or(0, |slot| {
            slot.prune();
            slot.conns.len()
        })
    }

    /// Closes every connection, stops every task and releases the socket.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
        self.inner.writers.lock().clear();
        self.inner.peers.lock().clear();
        self.inner.endpoint.close(VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        self.inner.endpoint.wait_idle().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Internals.

impl QuicEndpoint {
    /// The queue of (peer, group), starting its writer task on first use.
    fn writer_queue(
        &self,
        peer: NodeId,
        group: GroupId,
    ) -> Result<mpsc::Sender<Vec<u8>>, SendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let mut writers = self.inner.writers.lock();
        if let Some(queue) = writers.get(&(peer, group)) {
            return Ok(queue.clone());
        }
        if !self.inner.peers.lock().contains_key(&peer) {
            return Err(SendError::UnknownPeer(peer));
        }
        let (tx, rx) = mpsc::channel(self.inner.limits.outbound_queue_messages.max(1));
        let task = self.inner.runtime.spawn(Arc::clone(&self.inner).group_writer(peer, group, rx));
        self.inner.tasks.lock().push(task.abort_handle());
        writers.insert((peer, group), tx.clone());
        Ok(tx)
    }
}

struct Inner {
    /// The runtime the transport was started on. Every task of the transport runs there, even
    /// when a call that starts one (the first `send` to a (peer, group), a dial) comes from
    /// another thread: the node's shell thread blocks in fsync and must never be where the
    /// endpoint's writers and connections are driven.
    runtime: tokio::runtime::Handle,
    local: Peer,
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    handler: Arc<dyn RpcHandler>,
    inbound_tx: mpsc::Sender<InboundMessage>,
    limits: TransportLimits,
    peers: Mutex<BTreeMap<NodeId, PeerSlot>>,
    writers: Mutex<BTreeMap<(NodeId, GroupId), GroupQueue>>,
    /// Long-lived tasks (accept loop, group writers), aborted by `close`. Connection and stream
    /// tasks end by themselves when the endpoint closes their connections.
    tasks: Mutex<Vec<AbortHandle>>,
    stats: Stats,
    /// Bytes of requests in flight and connections, per connection and per identity.
    budget: Arc<EdgeBudget>,
    /// The per-peer rate limit on refusal log lines.
    refusal_log: RefusalLog,
    closed: AtomicBool,
    next_conn_seq: AtomicU64,
}

/// The outbound queue of one (peer, group), drained by its writer task.
type GroupQueue = mpsc::Sender<Vec<u8>>;

#[derive(Default)]
struct Stats {
    dropped_messages: AtomicU64,
    sent_messages: AtomicU64,
    received_messages: AtomicU64,
    refused_streams: AtomicU64,
    refused_over_budget: AtomicU64,
    refused_connections: AtomicU64,
    connections_established: AtomicU64,
    refusal_logs_written: AtomicU64,
    refusal_logs_suppressed: AtomicU64,
}

/// What the transport knows about one peer node.
struct PeerSlot {
    addr: SocketAddr,
    /// Live connections to the peer (normally one).
    conns: Vec<Registered>,
    /// Makes dials to this peer single-flight.
    dial_lock: Arc<tokio::sync::Mutex<()>>,
    /// Failed dials since the last success.
    failures: u32,
    /// No dial before this instant (exponential back-off).
    retry_at: Option<Instant>,
}

struct Registered {
    conn: Connection,
    /// True if this connection was dialed by the lower NodeId of the pair: the one both ends
    /// keep when they hold two.
    dialed_by_lower: bool,
    seq: u64,
}

impl PeerSlot {
    fn new(addr: SocketAddr) -> PeerSlot {
        PeerSlot {
            addr,
            conns: Vec::new(),
            dial_lock: Arc::new(tokio::sync::Mutex::new(())),
            failures: 0,
            retry_at: None,
        }
    }

    fn prune(&mut self) {
        self.conns.retain(|r| r.conn.close_reason().is_none());
    }

    /// The connection both ends agree to use: dialed by the lower NodeId, newest first.
    fn preferred(&mut self) -> Option<Connection> {
        self.prune();
        self.conns.iter().max_by_key(|r| (r.dialed_by_lower, r.seq)).map(|r| r.conn.clone())
    }
}

fn quic_transport_config(limits: &TransportLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.rpc_streams_max));
    t.max_concurrent_uni_streams(VarInt::from_u32(limits.group_streams_max));
    t.receive_window(VarInt::from_u32(limits.connection_receive_window_bytes));
    t.max_idle_timeout(Some(VarInt::from_u32(limits.idle_timeout_ms).into()));
    t.keep_alive_interval(Some(Duration::from_millis(limits.keep_alive_ms)));
    t
}

/// Why reading one frame from a stream failed.
enum ReadFailure {
    /// The input is refused; reset/stop the stream with this code.
    Refused(StreamErrorCode, String),
    /// The stream or connection failed underneath.
    Stream(quinn::ReadError),
}

// --- the request budget ----------------------------------------------------------------------

/// The books of what peers hold on this endpoint: per certificate identity, its live
/// connections and, per connection, the bytes of requests in flight (announced by a frame
/// header and not yet finished with).
///
/// Invariant: for every identity, `held_bytes` is the sum of its connections' held bytes, and
/// `EdgeBudget::held_bytes` the sum over identities. Every change happens under `identities`'
/// lock, so a reservation is checked against both bounds at once and two racing requests cannot
/// both take the last bytes.
struct EdgeBudget {
    connection_bytes_max: usize,
    identity_bytes_max: usize,
    connections_max: usize,
    identities: Mutex<BTreeMap<Peer, IdentityUse>>,
    next_connection: AtomicU64,
    /// Sum of every identity's held bytes, for [`TransportStats`].
    held_bytes: AtomicU64,
    held_bytes_peak: AtomicU64,
}

#[derive(Default)]
struct IdentityUse {
    /// Held bytes by connection (keyed by `ConnectionBudget::id`); one entry per live
    /// connection.
    connections: BTreeMap<u64, usize>,
    held_bytes: usize,
}

/// One connection's place in the books. Shared by the connection's task and its request tasks;
/// the last one to finish removes the connection from the books.
struct ConnectionBudget {
    edge: Arc<EdgeBudget>,
    peer: Peer,
    id: u64,
}

/// Bytes charged to one request. Dropping it gives them back, on whichever path the request
/// ends: answered, refused, timed out, or its stream or connection died.
struct Reservation {
    connection: Arc<ConnectionBudget>,
    bytes: usize,
}

/// A request the budget cannot take.
#[derive(Debug)]
struct BudgetExceeded {
    bytes: usize,
    scope: &'static str,
    held: usize,
    max: usize,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request of {} bytes refused: this {} already holds {} of its {} bytes of requests \
             in flight",
            self.bytes, self.scope, self.held, self.max
        )
    }
}

impl EdgeBudget {
    fn new(limits: &TransportLimits) -> EdgeBudget {
        EdgeBudget {
            connection_bytes_max: limits.request_bytes_per_connection_max,
            identity_bytes_max: limits.request_bytes_per_identity_max,
            connections_max: limits.connections_per_identity_max,
            identities: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            held_bytes_peak: AtomicU64::new(0),
        }
    }

    /// Books an accepted connection of `peer`, or returns how many the identity already holds
    /// when that is the most allowed.
    fn admit_accepted(self: &Arc<Self>, peer: &Peer) -> Result<Arc<ConnectionBudget>, usize> {
        self.admit(peer, true)
    }

    /// Books a connection we dialed: never refused, but counted.
    fn admit_dialed(self: &Arc<Self>, peer: &Peer) -> Arc<ConnectionBudget> {
        // Invariant: `admit` only refuses when asked to enforce the cap.
        match self.admit(peer, false) {
            Ok(budget) => budget,
            Err(_) => unreachable!("an uncapped admission is never refused"),
        }
    }

    fn admit(self: &Arc<Self>, peer: &Peer, capped: bool) -> Result<Arc<ConnectionBudget>, usize> {
        let mut identities = self.identities.lock();
        let usage = identities.entry(peer.clone()).or_default();
        let live = usage.connections.len();
        if capped && live >= self.connections_max {
            if live == 0 {
                identities.remove(peer);
            }
            return Err(live);
        }
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        usage.connections.insert(id, 0);
        Ok(Arc::new(ConnectionBudget { edge: Arc::clone(self), peer: peer.clone(), id }))
    }
}

impl ConnectionBudget {
    /// Charges `bytes` to this connection and its identity, or refuses if either would go past
    /// its bound.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, BudgetExceeded> {
        let edge = &self.edge;
        let mut identities = edge.identities.lock();
        // Invariant: the entry exists while this `ConnectionBudget` does (removed in `drop`).
        let Some(usage) = identities.get_mut(&self.peer) else {
            unreachable!("a live connection's identity is in the books")
        };
        let Some(&connection_held) = usage.connections.get(&self.id) else {
            unreachable!("a live connection is in the books")
        };
        let over = |held: usize, max: usize| held.saturating_add(bytes) > max;
        if over(connection_held, edge.connection_bytes_max) {
            let max = edge.connection_bytes_max;
            return Err(BudgetExceeded { bytes, scope: "connection", held: connection_held, max });
        }
        if over(usage.held_bytes, edge.identity_bytes_max) {
            let (held, max) = (usage.held_bytes, edge.identity_bytes_max);
            return Err(BudgetExceeded { bytes, scope: "certificate identity", held, max });
        }
        usage.connections.insert(self.id, connection_held + bytes);
        usage.held_bytes += bytes;
        let total = edge.held_bytes.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        edge.held_bytes_peak.fetch_max(total, Ordering::Relaxed);
        Ok(Reservation { connection: Arc::clone(self), bytes })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let connection = &self.connection;
        let edge = &connection.edge;
        let mut identities = edge.identities.lock();
        if let Some(usage) = identities.get_mut(&connection.peer) {
            if let Some(held) = usage.connections.get_mut(&connection.id) {
                *held -= self.bytes;
            }
            usage.held_bytes -= self.bytes;
        }
        edge.held_bytes.fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        let mut identities = self.edge.identities.lock();
        if let Some(usage) = identities.get_mut(&self.peer) {
            // Every reservation holds an `Arc` of this connection, so none is left.
            let held = usage.connections.remove(&self.id);
            debug_assert_eq!(held, Some(0));
            if usage.connections.is_empty() {
                identities.remove(&self.peer);
            }
        }
    }
}

// --- refusal log rate limit ----------------------------------------------------------------

/// At most one refusal log line per peer per interval (`None` stands for every connection
/// that never proved an identity). A refusal inside the interval is only counted; the next
/// line reports how many were left out.
struct RefusalLog {
    interval: Duration,
    peers: Mutex<BTreeMap<Option<Peer>, LogWindow>>,
}

struct LogWindow {
    written_at: Instant,
    suppressed: u64,
}

impl RefusalLog {
    fn new(interval: Duration) -> RefusalLog {
        RefusalLog { interval, peers: Mutex::new(BTreeMap::new()) }
    }

    /// `Some(left out since the peer's last line)` if this refusal is to be logged now.
    fn admit(&self, peer: Option<&Peer>, now: Instant) -> Option<u64> {
        let mut peers = self.peers.lock();
        let key = peer.cloned();
        if let Some(window) = peers.get_mut(&key) {
            if now.saturating_duration_since(window.written_at) < self.interval {
                window.suppressed += 1;
                return None;
            }
            let suppressed = window.suppressed;
            *window = LogWindow { written_at: now, suppressed: 0 };
            return Some(suppressed);
        }
        if peers.len() >= limits::REFUSAL_LOG_PEERS_MAX {
            let interval = self.interval;
            peers.retain(|_, w| now.saturating_duration_since(w.written_at) < interval);
            if peers.len() >= limits::REFUSAL_LOG_PEERS_MAX {
                return None;
            }
        }
        peers.insert(key, LogWindow { written_at: now, suppressed: 0 });
        Some(0)
    }
}

impl Inner {
    fn new(
        config: TransportConfig,
        endpoint: Endpoint,
        transport_config: Arc<quinn::TransportConfig>,
        handler: Arc<dyn RpcHandler>,
        inbound_tx: mpsc::Sender<InboundMessage>,
    ) -> Result<Arc<Inner>, TransportError> {
        let mut client_config =
            quinn::ClientConfig::new(Arc::new(quic_client_config(&config.identity)?));
        client_config.transport_config(transport_config);
        let peers = config.peers.iter().map(|(&id, &addr)| (id, PeerSlot::new(addr))).collect();
        let budget = Arc::new(EdgeBudget::new(&config.limits));
        let refusal_log =
            RefusalLog::new(Duration::from_millis(config.limits.refusal_log_interval_ms));
        Ok(Arc::new(Inner {
            runtime: tokio::runtime::Handle::current(),
            local: config.identity.peer.clone(),
            endpoint,
            client_config,
            handler,
            inbound_tx,
            limits: config.limits,
            peers: Mutex::new(peers),
            writers: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
            stats: Stats::default(),
            budget,
            refusal_log,
            closed: AtomicBool::new(false),
            next_conn_seq: AtomicU64::new(0),
        }))
    }

    // --- connections ---------------------------------------------------------------------

    /// The connection to `peer`, dialing if there is none.
    async fn connection(self: &Arc<Self>, peer: NodeId) -> Result<Connection, RpcError> {
        let dial_lock = {
            let mut peers = self.peers.lock();
            let slot = peers.get_mut(&peer).ok_or(RpcError::UnknownPeer(peer))?;
            if let Some(conn) = slot.preferred() {
                return Ok(conn);
            }
            Arc::clone(&slot.dial_lock)
        };
        let _dialing = dial_lock.lock().await;
        let addr = {
            let mut peers = self.peers.lock();
            let slot = peers.get_mut(&peer).ok_or(RpcError::UnknownPeer(peer))?;
            // Another task may have connected while we waited for the lock.
            if let Some(conn) = slot.preferred() {
                return Ok(conn);
            }
            if let Some(retry_at) = slot.retry_at {
                let now = Instant::now();
                if now < retry_at {
                    return Err(RpcError::Unreachable {
                        peer,
                        reason: format!(
                            "backing off for {} ms after {} failed attempts",
                            (retry_at - now).as_millis(),
                            slot.failures
                        ),
                    });
                }
            }
            slot.addr
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(RpcError::Closed);
        }
        let result = self.dial(peer, addr).await;
        let mut peers = self.peers.lock();
        let slot = peers.entry(peer).or_insert_with(|| PeerSlot::new(addr));
        match &result {
            Ok(_) => {
                slot.failures = 0;
                slot.retry_at = None;
            }
            Err(_) => {
                slot.failures = slot.failures.saturating_add(1);
                let shift = slot.failures.saturating_sub(1).min(16);
                let backoff_ms = self
                    .limits
                    .backoff_initial_ms
                    .saturating_mul(1 << shift)
                    .min(self.limits.backoff_max_ms);
                slot.retry_at = Some(Instant::now() + Duration::from_millis(backoff_ms));
            }
        }
        drop(peers);
        let conn = result?;
        self.register(peer, conn.clone(), true);
        // A connection we dialed is not held to the peer's connection cap (we chose to open
        // it), but the requests the peer sends on it are charged like any others.
        let budget = self.budget.admit_dialed(&Peer::Node(peer));
        self.runtime.spawn(Arc::clone(self).serve_connection(
            conn.clone(),
            Peer::Node(peer),
            budget,
        ));
        Ok(conn)
    }

    async fn dial(&self, peer: NodeId, addr: SocketAddr) -> Result<Connection, RpcError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, &node_name(peer))
            .map_err(|e| RpcError::Unreachable { peer, reason: e.to_string() })?;
        let timeout = Duration::from_millis(self.limits.connect_timeout_ms);
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(connection_error(peer, &e, true)),
            Err(_) => {
                return Err(RpcError::Unreachable {
                    peer,
                    reason: format!("no handshake within {} ms", timeout.as_millis()),
                })
            }
        };
        // TLS already checked the name `node-<id>`; reading it back guards against a CA that
        // issued a certificate with two node names.
        match identify(&conn) {
            Some(Peer::Node(id)) if id == peer => Ok(conn),
            other => {
                conn.close(VarInt::from_u32(close_code::WRONG_PEER), b"wrong peer");
                Err(RpcError::Tls { peer, reason: format!("certificate names {other:?}") })
            }
        }
    }

    /// Records a connection to `peer` and schedules the retirement of duplicates.
    fn register(self: &Arc<Self>, peer: NodeId, conn: Connection, dialed_by_me: bool) {
        self.stats.connections_established.fetch_add(1, Ordering::Relaxed);
        let me_lower = self.local.node_id().is_none_or(|me| me < peer);
        let dialed_by_lower = dialed_by_me == me_lower;
        let seq = self.next_conn_seq.fetch_add(1, Ordering::Relaxed);
        let mut peers = self.peers.lock();
        let slot = peers.entry(peer).or_insert_with(|| PeerSlot::new(conn.remote_address()));
        slot.prune();
        slot.conns.push(Registered { conn, dialed_by_lower, seq });
        if slot.conns.len() > 1 {
            let inner = Arc::clone(self);
            let grace = Duration::from_millis(self.limits.duplicate_close_grace_ms);
            self.runtime.spawn(async move {
                tokio::time::sleep(grace).await;
                inner.retire_duplicates(peer);
            });
        }
    }

    fn retire_duplicates(&self, peer: NodeId) {
        let mut peers = self.peers.lock();
        let Some(slot) = peers.get_mut(&peer) else { return };
        let Some(keep) = slot.preferred() else { return };
        for r in slot.conns.iter().filter(|r| r.conn.stable_id() != keep.stable_id()) {
            debug!(%peer, "closing duplicate connection");
            r.conn.close(VarInt::from_u32(close_code::DUPLICATE), b"duplicate connection");
        }
        slot.conns.retain(|r| r.conn.stable_id() == keep.stable_id());
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let inner = Arc::clone(&self);
            self.runtime.spawn(async move {
                let remote = incoming.remote_address();
                let timeout = Duration::from_millis(inner.limits.connect_timeout_ms);
                let conn = match tokio::time::timeout(timeout, incoming).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        inner.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                        match inner.refusal_logged(None) {
                            Some(suppressed) => {
                                warn!(%remote, error = %e, suppressed, "refused connection at handshake")
                            }
                            None => debug!(%remote, error = %e, "refused connection at handshake"),
                        }
                        return;
                    }
                    Err(_) => {
                        inner.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                        match inner.refusal_logged(None) {
                            Some(suppressed) => {
                                warn!(%remote, suppressed, "refused connection: handshake timed out")
                            }
                            None => debug!(%remote, "refused connection: handshake timed out"),
                        }
                        return;
                    }
                };
                let Some(peer) = identify(&conn) else {
                    inner.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                    match inner.refusal_logged(None) {
                        Some(suppressed) => warn!(
                            %remote,
                            suppressed,
                            "refused connection: certificate names no node or client"
                        ),
                        None => debug!(%remote, "refused connection: certificate names no node or client"),
                    }
                    conn.close(VarInt::from_u32(close_code::WRONG_PEER), b"unknown certificate");
                    return;
                };
                let budget = match inner.budget.admit_accepted(&peer) {
                    Ok(budget) => budget,
                    Err(live) => {
                        inner.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                        let max = inner.limits.connections_per_identity_max;
                        match inner.refusal_logged(Some(&peer)) {
                            Some(suppressed) => warn!(
                                %remote,
                                %peer,
                                live,
                                max,
                                suppressed,
                                "refused connection: too many connections for this identity"
                            ),
                            None => debug!(%remote, %peer, live, max, "refused connection: too many connections for this identity"),
                        }
                        conn.close(
                            VarInt::from_u32(close_code::TOO_MANY_CONNECTIONS),
                            b"too many connections for this certificate identity",
                        );
                        return;
                    }
                };
                debug!(%remote, %peer, "accepted connection");
                if let Peer::Node(id) = peer {
                    inner.register(id, conn.clone(), false);
                } else {
                    inner.stats.connections_established.fetch_add(1, Ordering::Relaxed);
                }
                inner.serve_connection(conn, peer, budget).await;
            });
        }
    }

    /// Serves the streams a peer opens on one connection until it closes. `budget` is the
    /// connection's share of the request budget; it leaves the books once the connection and
    /// every request on it are done.
    async fn serve_connection(
        self: Arc<Self>,
        conn: Connection,
        peer: Peer,
        budget: Arc<ConnectionBudget>,
    ) {
        loop {
            tokio::select! {
                bi = conn.accept_bi() => match bi {
                    Ok((send, recv)) => {
                        let serve = Arc::clone(&self).serve_rpc(
                            peer.clone(),
                            Arc::clone(&budget),
                            send,
                            recv,
                        );
                        self.runtime.spawn(serve);
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "connection closed");
                        break;
                    }
                },
                uni = conn.accept_uni() => match uni {
                    Ok(recv) => {
                        self.runtime.spawn(Arc::clone(&self).serve_group_stream(peer.clone(), recv));
                    }
                    Err(e) => {
                        debug!(%peer, error = %e, "connection closed");
                        break;
                    }
                },
            }
        }
        if let Peer::Node(id) = peer {
            if let Some(slot) = self.peers.lock().get_mut(&id) {
                slot.prune();
            }
        }
    }

    // --- RPC -----------------------------------------------------------------------------

    async fn request(self: &Arc<Self>, peer: NodeId, body: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let conn = self.connection(peer).await?;
        let (mut send, mut recv) =
            conn.open_bi().await.map_err(|e| connection_error(peer, &e, false))?;
        let header = Bytes::copy_from_slice(&crate::wire::header(body.len()));
        send.write_all_chunks(&mut [header, Bytes::from(body)])
            .await
            .map_err(|e| write_error(peer, e))?;
        // Finishing only fails if the stream was already reset, which the read below reports.
        let _ = send.finish();
        let body = match read_single_frame(&mut recv).await {
            Ok(body) => body,
            Err(ReadFailure::Refused(code, reason)) => {
                return Err(RpcError::Frame { code, reason })
            }
            Err(ReadFailure::Stream(e)) => return Err(read_error(peer, e)),
        };
        match parse_response(body) {
            Ok(Response::Ok(body)) => Ok(body),
            Ok(Response::Err { code, message }) => Err(RpcError::PeerError { code, message }),
            Err(code) => {
                Err(RpcError::Frame { code, reason: "response body has no valid tag".into() })
            }
        }
    }

    /// Serves one request stream: reads the frame header, charges the announced length to the
    /// connection's and the identity's budgets (or refuses the stream), reads the body, runs the
    /// handler and writes its answer. The charge is released when the handler returns, or
    /// earlier on any failure, by dropping the reservation.
    async fn serve_rpc(
        self: Arc<Self>,
        peer: Peer,
        budget: Arc<ConnectionBudget>,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let read_timeout = Duration::from_millis(self.limits.request_read_timeout_ms);
        let read = tokio::time::timeout(read_timeout, async {
            let body_bytes = read_frame_header(&mut recv).await?;
            let reservation = budget.reserve(body_bytes).map_err(|e| {
                self.stats.refused_over_budget.fetch_add(1, Ordering::Relaxed);
                ReadFailure::Refused(StreamErrorCode::RequestBudgetExceeded, e.to_string())
            })?;
            let body = read_frame_body(&mut recv, body_bytes).await?;
            Ok((body, reservation))
        })
        .await;
        let (request, reservation) = match read.unwrap_or_else(|_| {
            let reason = format!("request incomplete after {} ms", read_timeout.as_millis());
            Err(ReadFailure::Refused(StreamErrorCode::RequestTooSlow, reason))
        }) {
            Ok(read) => read,
            Err(ReadFailure::Refused(code, reason)) => {
                self.refuse_bi(&peer, &mut send, &mut recv, code, &reason);
                return;
            }
            Err(ReadFailure::Stream(e)) => {
                debug!(%peer, error = %e, "request stream failed");
                return;
            }
        };
        let result = self.handler.handle(peer.clone(), request).await;
        // The handler has returned and dropped (or answered from) the request body.
        drop(reservation);
        let written = match result {
            Ok(body) if body.len() < max_body_bytes() => {
                let prefix = Bytes::copy_from_slice(&ok_response_prefix(body.len()));
                send.write_all_chunks(&mut [prefix, Bytes::from(body)]).await
            }
            Ok(body) => {
                warn!(%peer, bytes = body.len(), "handler response exceeds the maximum frame");
                let message = "response exceeds the maximum frame size";
                send.write_all(&error_response(u32::MAX, message)).await
            }
            Err(HandlerError::Refused { code, message }) => {
                send.write_all(&error_response(code, &message)).await
            }
            Err(HandlerError::Undecodable { reason }) => {
                let code = StreamErrorCode::BodyUndecodable;
                self.refuse_bi(&peer, &mut send, &mut recv, code, &reason);
                return;
            }
        };
        match written {
            // Finishing only fails if the peer stopped the stream; it no longer wants the answer.
            Ok(()) => {
                let _ = send.finish();
            }
            Err(e) => debug!(%peer, error = %e, "could not write response"),
        }
    }

    fn refuse_bi(
        &self,
        peer: &Peer,
        send: &mut SendStream,
        recv: &mut RecvStream,
        code: StreamErrorCode,
        reason: &str,
    ) {
        self.stats.refused_streams.fetch_add(1, Ordering::Relaxed);
        match self.refusal_logged(Some(peer)) {
            Some(suppressed) => warn!(%peer, ?code, reason, suppressed, "refused request stream"),
            None => debug!(%peer, ?code, reason, "refused request stream"),
        }
        // Either call fails only if that half is already closed, which is the goal anyway.
        let _ = send.reset(code.varint());
        let _ = recv.stop(code.varint());
    }

    // --- group streams -------------------------------------------------------------------

    /// Owns the outbound stream of one (peer, group): packs queued messages into one write,
    /// reopens the stream (dialing if needed) after a failure. Messages of a failed write are
    /// dropped and counted; Raft retransmits.
    async fn group_writer(
        self: Arc<Self>,
        peer: NodeId,
        group: GroupId,
        mut queue: mpsc::Receiver<Vec<u8>>,
    ) {
        let mut stream: Option<SendStream> = None;
        let mut batch = Vec::with_capacity(self.limits.batch_bytes_max + FRAME_HEADER_BYTES);
        while let Some(first) = queue.recv().await {
            batch.clear();
            push_frame(&mut batch, &first);
            drop(first);
            let mut count = 1u64;
            while batch.len() < self.limits.batch_bytes_max {
                match queue.try_recv() {
                    Ok(body) => {
                        push_frame(&mut batch, &body);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            if stream.is_none() {
                match self.open_group_stream(peer, group).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        self.stats.dropped_messages.fetch_add(count, Ordering::Relaxed);
                        debug!(%peer, %group, error = %e, "group stream unavailable; dropped batch");
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            match s.write_all(&batch).await {
                Ok(()) => {
                    self.stats.sent_messages.fetch_add(count, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.dropped_messages.fetch_add(count, Ordering::Relaxed);
                    debug!(%peer, %group, error = %e, "group stream failed; will reopen");
                    stream = None;
                }
            }
        }
    }

    async fn open_group_stream(
        self: &Arc<Self>,
        peer: NodeId,
        group: GroupId,
    ) -> Result<SendStream, RpcError> {
        let conn = self.connection(peer).await?;
        let mut stream = conn.open_uni().await.map_err(|e| connection_error(peer, &e, false))?;
        stream.write_all(&group_stream_header(group)).await.map_err(|e| write_error(peer, e))?;
        Ok(stream)
    }

    /// Reads one peer's group stream and delivers its messages in order.
    async fn serve_group_stream(self: Arc<Self>, peer: Peer, mut recv: RecvStream) {
        let Peer::Node(from) = peer else {
            self.refuse_uni(&peer, &mut recv, StreamErrorCode::NotANode, "clients may only do RPC");
            return;
        };
        let mut reader = FrameReader::default();
        let mut group: Option<GroupId> = None;
        loop {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => reader.extend(&chunk.bytes),
                Ok(None) => {
                    if !reader.is_empty() {
                        let code = StreamErrorCode::FrameMalformed;
                        self.refuse_uni(&peer, &mut recv, code, "stream ended inside a frame");
                    }
                    return;
                }
                Err(e) => {
                    debug!(%peer, error = %e, "group stream ended");
                    return;
                }
            }
            loop {
                let body = match reader.next_body() {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => {
                        let code = StreamErrorCode::for_frame_error(&e);
                        self.refuse_uni(&peer, &mut recv, code, &e.to_string());
                        return;
                    }
                };
                let Some(g) = group else {
                    match parse_group_header(&body) {
                        Some(g) => group = Some(g),
                        None => {
                            let code = StreamErrorCode::GroupHeaderInvalid;
                            self.refuse_uni(
                                &peer,
                                &mut recv,
                                code,
                                "first frame is not a group id",
                            );
                            return;
                        }
                    }
                    continue;
                };
                let message = InboundMessage { from, group: g, body };
                if self.inbound_tx.send(message).await.is_err() {
                    // Nobody is listening any more (shutting down).
                    let _ = recv.stop(StreamErrorCode::ShuttingDown.varint());
                    return;
                }
                self.stats.received_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn refuse_uni(&self, peer: &Peer, recv: &mut RecvStream, code: StreamErrorCode, reason: &str) {
        self.stats.refused_streams.fetch_add(1, Ordering::Relaxed);
        match self.refusal_logged(Some(peer)) {
            Some(suppressed) => warn!(%peer, ?code, reason, suppressed, "refused group stream"),
            None => debug!(%peer, ?code, reason, "refused group stream"),
        }
        // Fails only if the stream is already finished or reset; nothing more to do then.
        let _ = recv.stop(code.varint());
    }

    /// Whether a refusal by `peer` (`None`: a connection that never proved an identity) goes
    /// to the log, and if so how many of the peer's refusals were left out since its last
    /// line. Counts both outcomes.
    fn refusal_logged(&self, peer: Option<&Peer>) -> Option<u64> {
        let decision = self.refusal_log.admit(peer, Instant::now());
        let counter = match decision {
            Some(_) => &self.stats.refusal_logs_written,
            None => &self.stats.refusal_logs_suppressed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        decision
    }
}

/// Reads a stream holding exactly one frame: header checked before the body is read, then the
/// body, then the end of the stream.
async fn read_single_frame(recv: &mut RecvStream) -> Result<Vec<u8>, ReadFailure> {
    let body_bytes = read_frame_header(recv).await?;
    read_frame_body(recv, body_bytes).await
}

/// Reads and checks the header of a stream's only frame; returns the body length it announces.
async fn read_frame_header(recv: &mut RecvStream) -> Result<usize, ReadFailure> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(ReadFailure::Refused(
                StreamErrorCode::FrameMalformed,
                format!("stream ended after {n} bytes, inside the frame header"),
            ))
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(ReadFailure::Stream(e)),
    }
    let parsed = parse_header(header)
        .map_err(|e| ReadFailure::Refused(StreamErrorCode::for_frame_error(&e), e.to_string()))?;
    Ok(parsed.body_bytes)
}

/// Reads the `body_bytes` of body that follow a stream's only frame header, then the end of
/// the stream: fewer bytes, or more, are refused.
async fn read_frame_body(recv: &mut RecvStream, body_bytes: usize) -> Result<Vec<u8>, ReadFailure> {
    let body = match recv.read_to_end(body_bytes).await {
        Ok(body) => body,
        Err(quinn::ReadToEndError::TooLong) => {
            return Err(ReadFailure::Refused(
                StreamErrorCode::FrameMalformed,
                "bytes after the end of the frame".into(),
            ))
        }
        Err(quinn::ReadToEndError::Read(e)) => return Err(ReadFailure::Stream(e)),
    };
    if body.len() != body_bytes {
        return Err(ReadFailure::Refused(
            StreamErrorCode::FrameMalformed,
            format!("stream ended after {} of {} body bytes", body.len(), body_bytes),
        ));
    }
    Ok(body)
}

/// The peer named by a connection's certificate.
fn identify(conn: &Connection) -> Option<Peer> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    peer_of_certificate(certs.first()?).ok()
}

/// True for QUIC `CRYPTO_ERROR` codes (0x100..=0x1ff): the TLS handshake failed.
fn is_crypto_code(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}

fn connection_error(peer: NodeId, e: &ConnectionError, dialing: bool) -> RpcError {
    let reason = e.to_string();
    match e {
        ConnectionError::TransportError(t) if is_crypto_code(t.code) => {
            RpcError::Tls { peer, reason }
        }
        ConnectionError::ConnectionClosed(c) if is_crypto_code(c.error_code) => {
            RpcError::Tls { peer, reason }
        }
        ConnectionError::LocallyClosed => RpcError::Closed,
        _ if dialing => RpcError::Unreachable { peer, reason },
        _ => RpcError::ConnectionLost { peer, reason },
    }
}

fn write_error(peer: NodeId, e: quinn::WriteError) -> RpcError {
    match e {
        quinn::WriteError::Stopped(code) => stream_reset(code),
        quinn::WriteError::ConnectionLost(e) => connection_error(peer, &e, false),
        other => RpcError::ConnectionLost { peer, reason: other.to_string() },
    }
}

fn read_error(peer: NodeId, e: quinn::ReadError) -> RpcError {
    match e {
        quinn::ReadError::Reset(code) => stream_reset(code),
        quinn::ReadError::ConnectionLost(e) => connection_error(peer, &e, false),
        other => RpcError::ConnectionLost { peer, reason: other.to_string() },
    }
}

fn stream_reset(code: VarInt) -> RpcError {
    RpcError::StreamReset { raw_code: code.into_inner(), code: StreamErrorCode::from_varint(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(connection: usize, identity: usize, connections: usize) -> Arc<EdgeBudget> {
        let limits = TransportLimits {
            request_bytes_per_connection_max: connection,
            request_bytes_per_identity_max: identity,
            connections_per_identity_max: connections,
            ..TransportLimits::default()
        };
        Arc::new(EdgeBudget::new(&limits))
    }

    fn held(edge: &EdgeBudget) -> u64 {
        edge.held_bytes.load(Ordering::Relaxed)
    }

    #[test]
    fn budget_checks_connection_then_identity_and_gives_back_on_drop() {
        let edge = budget(100, 150, 2);
        let alice = Peer::Client("alice".into());
        let a1 = edge.admit_accepted(&alice).unwrap();
        let a2 = edge.admit_accepted(&alice).unwrap();
        assert_eq!(edge.admit_accepted(&alice).err(), Some(2));
        // Another identity has books of its own.
        let bob = edge.admit_accepted(&Peer::Client("bob".into())).unwrap();

        let r1 = a1.reserve(100).unwrap();
        let over = a1.reserve(1).err().unwrap();
        assert_eq!((over.scope, over.held, over.max), ("connection", 100, 100));
        let r2 = a2.reserve(50).unwrap();
        let over = a2.reserve(1).err().unwrap();
        assert_eq!((over.scope, over.held, over.max), ("certificate identity", 150, 150));
        let r3 = bob.reserve(100).unwrap();
        assert_eq!(held(&edge), 250);

        // Dropping a reservation gives its bytes back to both scopes.
        drop(r1);
        assert_eq!(held(&edge), 150);
        let r4 = a2.reserve(50).unwrap();
        drop((r2, r3, r4));
        assert_eq!(held(&edge), 0);
        assert_eq!(edge.held_bytes_peak.load(Ordering::Relaxed), 250);

        // A connection leaves the books once it and its reservations are gone.
        let r5 = a1.reserve(10).unwrap();
        drop(a1);
        assert_eq!(edge.admit_accepted(&alice).err(), Some(2));
        drop(r5);
        let a3 = edge.admit_accepted(&alice).unwrap();
        drop((a2, a3, bob));
        assert!(edge.identities.lock().is_empty());
        // Dialed connections count but are never refused.
        let dialed: Vec<_> = (0..3).map(|_| edge.admit_dialed(&alice)).collect();
        assert_eq!(edge.admit_accepted(&alice).err(), Some(3));
        drop(dialed);
    }

    #[test]
    fn refusal_log_writes_once_per_interval_and_reports_what_it_left_out() {
        let log = RefusalLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let alice = Peer::Client("alice".into());
        assert_eq!(log.admit(Some(&alice), t0), Some(0));
        for ms in 1..=5 {
            assert_eq!(log.admit(Some(&alice), t0 + Duration::from_millis(ms)), None);
        }
        // Another peer, and connections without an identity, have windows of their own.
        assert_eq!(log.admit(Some(&Peer::Node(NodeId(2))), t0), Some(0));
        assert_eq!(log.admit(None, t0), Some(0));
        assert_eq!(log.admit(None, t0), None);
        // The next line after the interval carries the count left out.
        assert_eq!(log.admit(Some(&alice), t0 + Duration::from_secs(1)), Some(5));
        assert_eq!(log.admit(Some(&alice), t0 + Duration::from_millis(1_500)), None);
        // A zero interval logs everything.
        let every = RefusalLog::new(Duration::ZERO);
        assert_eq!((every.admit(None, t0), every.admit(None, t0)), (Some(0), Some(0)));
    }

    #[test]
    fn refusal_log_tracks_a_bounded_number_of_peers() {
        let log = RefusalLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let peer = |i: usize| Peer::Client(format!("c{i}"));
        for i in 0..limits::REFUSAL_LOG_PEERS_MAX {
            assert_eq!(log.admit(Some(&peer(i)), t0), Some(0));
        }
        // Full of peers inside their interval: a new peer is counted, not logged or tracked.
        assert_eq!(log.admit(Some(&peer(usize::MAX)), t0), None);
        assert_eq!(log.peers.lock().len(), limits::REFUSAL_LOG_PEERS_MAX);
        // Once their intervals are over, their entries make room.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(log.admit(Some(&peer(usize::MAX)), later), Some(0));
        assert_eq!(log.peers.lock().len(), 1);
    }
}
