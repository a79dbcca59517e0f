//! decree's server process: one node that hosts replicas of participant and coordinator
//! groups side by side, on one Raft node and one write-ahead log, configured from TOML, and
//! serves them over QUIC with mutual TLS.
//!
//! - [`config`] reads and checks `node.toml` and the shared `cluster.toml`.
//! - [`run`] runs a node until shutdown: the data directory's lock ([`lock`]), the host with
//!   one `Either<ParticipantGroup, CoordinatorGroup>` per hosted group, the generic node shell,
//!   and the client protocol ([`client_handler`]: one `decree_proto::Envelope` per request
//!   stream; node-level requests answered by [`node_service`]).

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod lock;
pub mod node_service;
mod server;

pub use config::{ClusterSpec, ConfigError, HostedGroup, ServerConfig, Timing};
pub use server::{client_handler, run, shutdown_signal, ServerError, SHUTTING_DOWN_CODE};
