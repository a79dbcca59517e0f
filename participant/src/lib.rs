//! Participant groups: the MVCC store and the per-range state machine that serves snapshot
//! reads and prepares, commits and aborts transactions (protocol.md §3–§5,
//! `proto-spec/spec/commit-protocol.md` §2.2, §3.2, §4.3–§4.11, §5.3, §6, §7).
//!
//! - [`mvcc`]: committed versions, intents, read locks, GC; one pure function per action.
//! - [`state`]: the replicated state (`txn_table`, sessions, closed timestamp, the store)
//!   and the deterministic apply of each [`ParticipantCommand`].
//! - [`group`]: [`ParticipantGroup`], the [`decree_host::ReplicatedMachine`]: leader-only
//!   admission (reads, P-1..P-4, LC-2, in-doubt queries) over the replicated state.
//! - [`config`]: every timeout and bound, with units and defaults.
//!
//! The crate is pure: no clock, no randomness, no I/O. Time comes from the host's context
//! (admission) or from the entry's `proposed_at` (apply).

#![warn(missing_docs)]

pub mod command;
pub mod config;
pub mod group;
pub mod mvcc;
mod snapshot;
pub mod state;

pub use command::{CommitLocalCmd, ParticipantCommand, PrepareCmd};
pub use config::ParticipantConfig;
pub use group::{ParticipantGroup, ParticipantResponse, ParticipantSnapshot};
pub use mvcc::MvccStore;
pub use state::{GroupState, Session, TxnEntry, TxnState};
