//! The network under the client: one request envelope to one node, one reply envelope back.
//!
//! [`Link`] is the whole interface the client needs from a network, so the client's logic
//! (routing, redirects, retries, ambiguity) can be tested against an in-memory cluster and run
//! inside the simulator. [`QuicLink`] is the real one: `decree_runtime::QuicEndpoint` RPC over
//! QUIC with mutual TLS, one bidirectional stream per request, the envelope encoded with the
//! proto codec.
//!
//! The one distinction a link must get right is [`LinkError::NotDelivered`] versus
//! [`LinkError::MaybeDelivered`]: a commit whose request *may* have reached a node cannot be
//! reported as "not committed", only as ambiguous until its outcome is learned (REC-6).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use decree_proto::{decode_body, encode_body, EncodeError, Envelope};
use decree_runtime::{Identity, QuicEndpoint, RpcError, TransportLimits};
use decree_types::NodeId;

/// The future a [`Link`] returns.
pub type LinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Envelope, LinkError>> + Send + 'a>>;

/// Sends one request envelope to a node and returns its reply envelope.
pub trait Link: Send + Sync + 'static {
    /// Sends `envelope` (a `Payload::Request`) to `node` and waits at most `timeout` for the
    /// reply (a `Payload::Response` or `Payload::Error`).
    fn call(&self, node: NodeId, envelope: Envelope, timeout: Duration) -> LinkFuture<'_>;

    /// Learns (or changes) where a node listens, from the range map reply. Links that need no
    /// addresses ignore it.
    fn learn_address(&self, _node: NodeId, _addr: SocketAddr) {}

    /// Closes every connection; later calls fail. Links without connections do nothing.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// Why a call produced no reply envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The request certainly did not reach the node's handler (no connection, no address,
    /// refused before sending).
    #[error("not delivered to {node}: {reason}")]
    NotDelivered {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The request may have been handled, but no usable reply came back (timeout, connection
    /// lost mid-request, garbled reply).
    #[error("no reply from {node}: {reason}")]
    MaybeDelivered {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (certificate not from the cluster CA, wrong node).
    #[error("TLS handshake with {node} failed: {reason}")]
    Tls {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The request could not be encoded (it breaks a wire bound); nothing was sent.
    #[error("request cannot be encoded: {0}")]
    Encode(EncodeError),
    /// The link was closed ([`Link::close`]); nothing was sent.
    #[error("link closed")]
    Closed,
}

/// The real link: RPC over `decree_runtime::QuicEndpoint` (QUIC, mutual TLS, ALPN `decree/1`).
#[derive(Clone, Debug)]
pub struct QuicLink {
    transport: QuicEndpoint,
}

impl QuicLink {
    /// Starts a client transport for `identity` (a client certificate from the cluster CA)
    /// knowing the given node addresses. Must be called inside a tokio runtime.
    pub fn new(
        identity: Identity,
        nodes: BTreeMap<NodeId, SocketAddr>,
    ) -> Result<QuicLink, decree_runtime::transport::TransportError> {
        let transport = QuicEndpoint::client(identity, nodes, TransportLimits::default())?;
        Ok(QuicLink { transport })
    }

    /// The transport underneath (for its statistics, or to close it).
    pub fn transport(&self) -> &QuicEndpoint {
        &self.transport
    }
}

impl Link for QuicLink {
    fn call(&self, node: NodeId, envelope: Envelope, timeout: Duration) -> LinkFuture<'_> {
        Box::pin(async move {
            let body = encode_body(&envelope).map_err(LinkError::Encode)?;
            let reply = self.transport.request(node, body, timeout).await.map_err(|e| {
                match e {
                    RpcError::Unreachable { reason, .. } => {
                        LinkError::NotDelivered { node, reason }
                    }
                    RpcError::UnknownPeer(_) => {
                        LinkError::NotDelivered { node, reason: "no address known".into() }
                    }
                    RpcError::TooLarge { bytes } => LinkError::NotDelivered {
                        node,
                        reason: format!("request of {bytes} bytes exceeds the frame limit"),
                    },
                    RpcError::Closed => LinkError::Closed,
                    RpcError::Tls { reason, .. } => LinkError::Tls { node, reason },
                    // Everything else happened after the request may have been read: a
                    // timeout, a lost connection, a reset stream, a garbled reply, or a refusal
                    // whose code does not say the request went unprocessed.
                    other @ (RpcError::Timeout { .. }
                    | RpcError::ConnectionLost { .. }
                    | RpcError::StreamReset { .. }
                    | RpcError::Frame { .. }
                    | RpcError::PeerError { .. }) => {
                        LinkError::MaybeDelivered { node, reason: other.to_string() }
                    }
                }
            })?;
            decode_body(&reply).map_err(|e| LinkError::MaybeDelivered {
                node,
                reason: format!("reply does not decode: {e}"),
            })
        })
    }

    fn learn_address(&self, node: NodeId, addr: SocketAddr) {
        self.transport.add_peer(node, addr);
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.transport.close())
    }
}
