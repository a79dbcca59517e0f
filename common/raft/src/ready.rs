//! The output of a Raft core, and the type that makes RAFT-1 hold by construction.
//!
//! The driver processes a [`Ready`] in this order:
//!
//! 1. send `messages` (they acknowledge nothing durable: a leader's appends and heartbeats);
//! 2. persist `hard_state`, `snapshot` and `entries` through the WAL;
//! 3. fsync — the WAL returns a [`SyncToken`] only from a successful fsync;
//! 4. release `persisted_messages` with that token and send them (vote grants, append
//!    acknowledgements: RAFT-1, INV-R6);
//! 5. apply `committed_entries`; serve `read_states` once applied;
//! 6. tell the core what was persisted.
//!
//! A message that acknowledges durable state cannot be sent before step 3 because
//! [`AfterSync::release`] needs a `SyncToken`, and only [`SyncToken::after_fsync`] makes one.

use decree_types::{LogIndex, NodeId, Term};

use crate::msg::{Entry, HardState, Message, SnapshotMeta};

/// Proof that an fsync succeeded. Only the write-ahead log creates it, right after its
/// `Disk::sync` returned `Ok`.
#[derive(Debug)]
pub struct SyncToken {
    _private: (),
}

impl SyncToken {
    /// Called by the WAL (and only by it) after a successful fsync.
    pub(crate) fn after_fsync() -> Self {
        SyncToken { _private: () }
    }
}

/// A value that may be used only after the preceding writes are durable.
#[derive(Debug, Default)]
#[must_use = "messages held until fsync must be released and sent"]
pub struct AfterSync<T>(T);

impl<T> AfterSync<T> {
    /// Wraps a value produced by the core.
    pub(crate) fn new(value: T) -> Self {
        AfterSync(value)
    }

    /// Unwraps the value; the token proves the fsync happened.
    pub fn release(self, _proof: &SyncToken) -> T {
        self.0
    }

    /// Look without taking (for tests and traces).
    pub fn peek(&self) -> &T {
        &self.0
    }
}

/// A read that may be served once the replica has applied `index` (RAFT-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The reader's context, as given to `read_index`.
    pub ctx: u64,
    /// Serve when applied index >= this.
    pub index: LogIndex,
}

/// Role and leader as seen by this replica; reported when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The term.
    pub term: Term,
    /// The leader this replica knows of, if any.
    pub leader: Option<NodeId>,
    /// Is this replica the leader?
    pub is_leader: bool,
}

/// Everything a core asks its driver to do; see the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Messages that may be sent at once.
    pub messages: Vec<(NodeId, Message)>,
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to persist and then install (RAFT-8).
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Entries to append. If the first index is at or below the last persisted index, the
    /// persisted tail from that index on is replaced.
    pub entries: Vec<Entry>,
    /// Messages that may be sent only after steps 2-3 are durable.
    pub persisted_messages: AfterSync<Vec<(NodeId, Message)>>,
    /// Committed entries to apply, in log order.
    pub committed_entries: Vec<Entry>,
    /// Reads that became servable.
    pub read_states: Vec<ReadState>,
    /// New role/leader, if it changed.
    pub soft_state: Option<SoftState>,
}
