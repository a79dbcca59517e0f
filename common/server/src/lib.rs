//! decree's server process: one node that hosts replicas of participant and coordinator
//! groups side by side, on one Raft node and one write-ahead log, configured from TOML.
//!
//! [`config`] reads and checks `node.toml` and the shared `cluster.toml`.

#![warn(missing_docs, unreachable_pub)]

pub mod config;

pub use config::{ClusterSpec, ConfigError, HostedGroup, ServerConfig, Timing};
