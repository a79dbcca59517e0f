//! decree's replicated log, in the two synchronous layers of DESIGN.md §3:
//!
//! - **core** ([`core`]): one Raft replica as a deterministic state machine. Inputs are
//!   `step(now, from, msg)`, `tick(now)`, `propose(..)`; the output is a [`Ready`].
//! - **node** ([`node`]): the replicas of every group one process hosts, the [`wal`] they share,
//!   and the driver loop that turns each `Ready` into persist -> fsync -> send, generic over
//!   [`Disk`], [`node::Transport`] and a clock so the simulator runs it unchanged.
//!
//! Nothing in this crate performs I/O itself: files are reached only through [`Disk`].

pub mod core;
pub mod disk;
pub mod msg;
pub mod node;
pub mod ready;
pub mod wal;

pub use disk::{Disk, DiskError};
pub use msg::{Entry, EntryPayload, HardState, Message, SnapshotMeta};
pub use ready::{AfterSync, Ready, SyncToken, WalPosition};
