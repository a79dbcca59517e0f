//! Raft's wire vocabulary: log entries, hard state, and the messages replicas exchange.
//!
//! These types cross process boundaries (they are carried inside `decree-proto`'s envelope),
//! so changing one changes the wire format: the golden encodings in `proto-spec` catch that.

use decree_types::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The empty entry a new leader appends to commit its term (RAFT-2).
    Noop,
    /// An opaque state-machine command (participant or coordinator command, encoded by them).
    Command(Vec<u8>),
}

/// State that must be durable before any message that depends on it is sent (RAFT-1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Current term.
    pub term: Term,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known to be a committed entry (persisting it is an optimisation only).
    pub commit: LogIndex,
}

impl HardState {
    /// Does `self` change the term or the vote of `old` (as opposed to at most the commit
    /// index)? Only such a change must be durable before an acknowledgement (RAFT-1); the
    /// commit index is an optimisation to persist.
    pub fn changes_term_or_vote(&self, old: &HardState) -> bool {
        self.term != old.term || self.vote != old.vote
    }
}

/// Describes the prefix of the log a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: Term,
    /// Voting members as of `last_index`.
    pub voters: Vec<NodeId>,
}

/// A message between two replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// RAFT-5: "would you vote for me in `term`?" Sent without incrementing our term.
    PreVote { term: Term, last_log_index: LogIndex, last_log_term: Term },
    /// Answer to [`Message::PreVote`].
    PreVoteResponse { term: Term, granted: bool },
    /// A real vote request; `transfer` marks a leadership transfer (RAFT-6), which bypasses the
    /// "recently heard from a leader" guard.
    RequestVote { term: Term, last_log_index: LogIndex, last_log_term: Term, transfer: bool },
    /// Answer to [`Message::RequestVote`]; sent only after the vote is durable (RAFT-1).
    VoteResponse { term: Term, granted: bool },
    /// Replicate entries after `(prev_log_index, prev_log_term)`; empty `entries` is a
    /// heartbeat. Carries the leader's commit index (High-Water Mark) and, for ReadIndex
    /// confirmation rounds, a `read_seq` the follower echoes.
    AppendEntries {
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    },
    /// Answer to [`Message::AppendEntries`]. On success `match_index` is the follower's last
    /// index that matches the leader; on failure it is the `prev_log_index` that did not match
    /// (so the leader can tell a stale rejection), and `reject_hint` helps the leader back up
    /// fast. `read_seq` echoes the request's.
    AppendResponse {
        term: Term,
        success: bool,
        match_index: LogIndex,
        reject_hint: Option<RejectHint>,
        read_seq: u64,
    },
    /// One chunk of a snapshot (RAFT-8).
    InstallSnapshot { term: Term, meta: SnapshotMeta, offset: u64, data: Vec<u8>, done: bool },
    /// Answer to [`Message::InstallSnapshot`]: `next_offset` acknowledges the bytes received.
    /// With `done`, the follower holds everything up to `last_index` (the snapshot's, or its own
    /// commit index if that was already further).
    InstallSnapshotResponse { term: Term, last_index: LogIndex, next_offset: u64, done: bool },
    /// RAFT-6: start an election now.
    TimeoutNow { term: Term },
    /// A follower asks the leader for a read index on behalf of its reader `ctx` (RAFT-3).
    ReadIndexRequest { term: Term, ctx: u64 },
    /// The leader's answer: serve the read once applied >= `index`. `index = None` refuses.
    ReadIndexResponse { term: Term, ctx: u64, index: Option<LogIndex> },
}

/// Fast log back-tracking: the follower's view of where the logs diverge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The follower's last log index.
    pub last_index: LogIndex,
    /// Term of the follower's entry at `prev_log_index`, if it has one.
    pub conflict_term: Option<Term>,
    /// First index the follower holds for `conflict_term`.
    pub conflict_first_index: LogIndex,
}

impl Message {
    /// The sender's term, carried by every message.
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term }
            | Message::ReadIndexRequest { term, .. }
            | Message::ReadIndexResponse { term, .. } => *term,
        }
    }
}
