//! The output of a Raft core, and the type that makes RAFT-1 hold by construction.
//!
//! The driver processes a [`Ready`] in this order:
//!
//! 1. send `messages` (they acknowledge nothing durable: a leader's appends and heartbeats);
//! 2. persist `hard_state`, `snapshot` and `entries` through the WAL;
//! 3. fsync — the WAL returns a [`SyncToken`] only from a successful fsync;
//! 4. release `persisted_messages` with that token and send them (vote grants, append
//!    acknowledgements: RAFT-1, INV-R6);
//! 5. tell the core what was persisted ([`Ready::persist_mark`] → `RaftCore::on_persisted`);
//! 6. install `snapshot` if any, apply `committed_entries` in order and report the applied
//!    index; serve `read_states` once applied; answer `failed_reads` with "retry".
//!
//! `snapshot`, when present, replaces the whole log (a follower behind its leader's
//! compaction point); `entries` that follow it start right after the snapshot's last index.
//!
//! A message that acknowledges durable state cannot be sent before step 3 because
//! [`AfterSync::release`] needs a `SyncToken`, and only `SyncToken::after_fsync` (called by the
//! WAL after a successful fsync) makes one.

use decree_types::{LogIndex, NodeId, Term};

use crate::msg::{Entry, HardState, Message, SnapshotMeta};

/// A position in the write-ahead log: the count of record bytes the WAL has taken since it
/// was opened, over every segment. Positions only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalPosition(pub u64);

/// Proof that every record the WAL took up to a position is durable. Only the write-ahead
/// log creates it, right after its `Disk::sync` returned `Ok` (or when nothing that an
/// acknowledgement depends on was pending).
#[derive(Debug)]
pub struct SyncToken {
    through: WalPosition,
}

impl SyncToken {
    /// Called by the WAL (and only by it) once everything up to `through` is durable.
    #[allow(dead_code, reason = "the WAL is its only caller outside tests")]
    pub(crate) fn after_fsync(through: WalPosition) -> Self {
        SyncToken { through }
    }

    /// Everything the WAL took up to this position is durable.
    pub fn through(&self) -> WalPosition {
        self.through
    }
}

/// A value that may be used only after the writes it depends on are durable: the driver
/// seals it with the WAL position those writes end at ([`AfterSync::seal`]), and only a
/// [`SyncToken`] covering that position releases it (asserted).
#[derive(Debug, Default)]
#[must_use = "messages held until fsync must be released and sent"]
pub struct AfterSync<T> {
    value: T,
    needs: WalPosition,
}

impl<T> AfterSync<T> {
    /// Wraps a value produced by the core.
    pub(crate) fn new(value: T) -> Self {
        AfterSync { value, needs: WalPosition(0) }
    }

    /// The writes this value depends on end at `position` (or earlier): the driver calls it
    /// after handing them to the WAL.
    pub fn seal(&mut self, position: WalPosition) {
        self.needs = self.needs.max(position);
    }

    /// The position a token must cover to release the value.
    pub fn needs(&self) -> WalPosition {
        self.needs
    }

    /// Unwraps the value. The token must prove the writes it depends on durable: RAFT-1
    /// guards safety, so this is asserted in release builds too.
    pub fn release(self, proof: &SyncToken) -> T {
        assert!(
            proof.through >= self.needs,
            "RAFT-1: released with a token through {:?}, but the value needs {:?} durable",
            proof.through,
            self.needs
        );
        self.value
    }

    /// Look without taking (for tests and traces).
    pub fn peek(&self) -> &T {
        &self.value
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
    /// Contexts of reads that can no longer be served by this replica (leadership lost, the
    /// leader refused, too many pending): the caller retries, possibly elsewhere.
    pub failed_reads: Vec<u64>,
    /// New role/leader, if it changed.
    pub soft_state: Option<SoftState>,
}

impl Ready {
    /// The last log position this `Ready` asks to persist (`entries`' last entry, else the
    /// snapshot's last entry): after the fsync, pass it to `RaftCore::on_persisted`.
    pub fn persist_mark(&self) -> Option<(LogIndex, Term)> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some((meta, _))) => Some((meta.last_index, meta.last_term)),
            (None, None) => None,
        }
    }

    /// Does it ask for nothing at all?
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.persisted_messages.peek().is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.soft_state.is_none()
    }
}
