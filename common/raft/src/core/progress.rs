//! What a leader knows about each follower's log, and its flow control (Request Pipeline).

use std::collections::VecDeque;
use std::sync::Arc;

use decree_types::LogIndex;

use crate::msg::SnapshotMeta;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the follower's log matches: one AppendEntries at a time,
    /// backing up after each rejection (fast back-tracking via `RejectHint`).
    Probe,
    /// The follower's log matches up to `match_index`: up to `max_inflight_appends` appends
    /// are pipelined.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot is being sent in chunks
    /// (RAFT-8). The transfer keeps its snapshot until the follower has it, even if the leader
    /// compacts again meanwhile.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) match_index: LogIndex,
    /// Next index to send.
    /// Invariant: `match_index < next_index`.
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// Last index of each AppendEntries in flight (replicate mode).
    /// Invariant: `inflight.len() <= max_inflight_appends`, increasing.
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Probe mode: one append was sent and we wait for its answer or the next heartbeat.
    pub(crate) probe_paused: bool,
    /// Heard from since the last check-quorum round (RAFT-4).
    pub(crate) recent_active: bool,
    /// Highest ReadIndex confirmation round the follower has answered (RAFT-3).
    pub(crate) read_seq_acked: u64,
    /// `match_index` at the previous heartbeat, to notice lost appends in replicate mode.
    pub(crate) match_at_heartbeat: LogIndex,
    /// Snapshot mode: the transfer under way.
    /// Invariant: `Some` exactly when `state == ReplicationState::Snapshot`.
    pub(crate) snapshot: Option<SnapshotSend>,
}

/// One snapshot transfer to one follower (RAFT-8).
///
/// The transfer holds the snapshot it started with (metadata and bytes, shared with the core
/// and other transfers, never copied whole) until the follower has it or the transfer is
/// dropped, so a newer local snapshot never restarts it. Memory: a leader holds its current
/// snapshot plus at most one older snapshot per follower in transfer.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotSend {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Arc<[u8]>,
    /// Bytes the follower confirmed; the next chunk starts here.
    pub(crate) offset: u64,
    /// A chunk is unanswered (stop-and-wait; a heartbeat clears it to retransmit).
    pub(crate) awaiting: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe,
            inflight: VecDeque::new(),
            probe_paused: false,
            recent_active: false,
            read_seq_acked: 0,
            match_at_heartbeat: LogIndex(0),
            snapshot: None,
        }
    }

    pub(crate) fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ReplicationState::Probe;
        self.next_index = next_index.max(self.match_index.next());
        self.inflight.clear();
        self.probe_paused = false;
        self.snapshot = None;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.match_at_heartbeat = self.match_index;
        self.inflight.clear();
        self.probe_paused = false;
        self.snapshot = None;
    }

    /// Starts sending `data`, the snapshot described by `meta`, from its first byte.
    pub(crate) fn become_snapshot(&mut self, meta: SnapshotMeta, data: Arc<[u8]>) {
        self.state = ReplicationState::Snapshot;
        self.inflight.clear();
        self.snapshot = Some(SnapshotSend { meta, data, offset: 0, awaiting: false });
    }

    /// Snapshot mode: the follower has everything the snapshot being sent covers, so the
    /// transfer is over.
    pub(crate) fn snapshot_arrived(&self) -> bool {
        self.snapshot.as_ref().is_some_and(|s| self.match_index >= s.meta.last_index)
    }

    /// Records an acknowledged match; returns whether it moved.
    pub(crate) fn ack(&mut self, index: LogIndex) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        true
    }
}
