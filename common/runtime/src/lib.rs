//! decree's shell runtime: the only library crate that does network I/O (DESIGN.md §3, §8).
//!
//! - [`certs`]: the cluster CA and node/client certificates (rcgen), their PEM files, and
//!   reading a peer's identity back from its certificate.
//! - [`tls`]: rustls configurations for mutual TLS against the cluster CA, ALPN `decree/1`.
//! - [`wire`]: what the transport puts on a stream around frame bodies, and the stream error
//!   codes it refuses bad input with.
//! - [`transport`]: the quinn endpoint ([`QuicEndpoint`]) — one connection per pair of nodes,
//!   RPC over bidirectional streams, ordered one-way messages over one stream per
//!   (peer, group).
//! - [`fs_disk`]: the file-backed `Disk` the write-ahead log runs on (fdatasync, directory
//!   fsync).
//! - [`node_shell`]: runs a host (`decree_host::Host`, generic over its state machine) as a
//!   process: the one thread that owns it, its clients, its peers over the endpoint.
//!
//! The transport moves frame bodies as bytes; the typed message layer sits above it.

#![warn(missing_docs, unreachable_pub)]

pub mod certs;
pub mod fs_disk;
pub mod node_shell;
pub mod tls;
pub mod transport;
pub mod wire;

pub use certs::{ClusterCa, Identity, Peer};
pub use transport::{
    HandlerError, InboundMessage, QuicEndpoint, RpcError, RpcHandler, SendError, TransportConfig,
    TransportLimits, TransportStats,
};
pub use wire::StreamErrorCode;
