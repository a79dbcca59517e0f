//! The host: one per process, between the multi-group Raft [`Node`](decree_raft::node::Node)
//! and the replicated state machines of every group the process hosts (participant and
//! coordinator groups side by side, on one node and one WAL, sharing each fsync).
//!
//! Sans-I/O and deterministic, like the layers below it: inputs are envelopes from peers,
//! client requests and time; outputs are per-peer batches of envelopes and client replies.
//! The QUIC shell (`decree-runtime`) and the simulator (`decree-sim`) drive the same code.
//!
//! [`machine`] is the interface a state machine implements ([`ReplicatedMachine`]).

#![warn(missing_docs, unreachable_pub)]

pub mod either;
pub mod host;
pub mod machine;
pub mod machines;
pub mod testing;

pub use either::{Either, EitherCommand};
pub use host::{
    is_bulk, ClientTag, Directory, Fatal, GroupSpec, Host, HostConfig, HostEnvelope, HostIo,
    HostStats,
};
pub use machine::{
    Admission, Applied, ApplyContext, Context, Destination, Effect, HostClock, PeerError,
    ReplicatedMachine, ReplyTo, Requester, Role, RoleEvent, SnapshotError,
};
