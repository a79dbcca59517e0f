//! The host: one per process, between the multi-group Raft [`Node`](decree_raft::node::Node)
//! and the replicated state machines of every group the process hosts (participant and
//! coordinator groups side by side, on one node and one WAL, sharing each fsync).
//!
//! Sans-I/O and deterministic, like the layers below it: inputs are envelopes from peers,
//! client requests and time; outputs are per-peer batches of envelopes and client replies.
//! The QUIC shell (`decree-runtime`) and the simulator (`decree-sim`) drive the same code.
//!
//! - [`machine`]: the interface a state machine implements ([`ReplicatedMachine`]).
//! - [`host`]: [`Host`], which runs the node and the machines: envelope checks and the HLC
//!   (HLC-1..6), admission, the `(index, term)` proposal table, role events, linearizable
//!   reads, machine-to-machine requests, the snapshot policy. Its module docs walk through
//!   one [`Host::process`] iteration.
//! - [`either`]: [`Either`], which runs two kinds of machine with one protocol on one host
//!   without `dyn` (participant and coordinator groups; the two toy machines).
//! - [`machines`]: small machines ([`machines::CommandLog`], [`machines::Register`]) that
//!   speak one toy protocol.
//! - [`testing`]: a one-replica harness for machine unit tests.
//!
//! # Driving a host (the shell's loop, the simulator's events)
//!
//! ```text
//! host = Host::open(id, config, groups, directory, disk, rng, now_ns, wall_ns)?
//! loop:
//!     host.handle_envelope(now, wall, peer_from_certificate, envelope)   // peers
//!     host.handle_client_request(now, wall, client, tag, clock, group, request)
//!     host.handle_timeout(now, wall)             // when now >= host.poll_timeout()
//!     if host.has_work(): host.process(now, wall, &mut io)?   // sends, replies; Err: stop
//!     host.snapshot_encoded(group, index, job.encode())?     // a job from io.snapshot, once
//!                                                            // encoded (anywhere, any time)
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod either;
pub mod host;
pub mod machine;
pub mod machines;
pub mod testing;

pub use either::{Either, EitherCommand};
pub use host::{
    is_bulk, ClientTag, Directory, Fatal, GroupSpec, Host, HostConfig, HostEnvelope, HostIo,
    HostStats, SnapshotJob,
};
pub use machine::{
    Admission, Applied, ApplyContext, Context, Destination, Effect, HostClock, PeerError,
    ReplicatedMachine, ReplyTo, Requester, Role, RoleEvent, SnapshotError,
};
