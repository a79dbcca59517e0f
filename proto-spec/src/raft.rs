//! Raft traffic: the replica-to-replica messages of one group, carried as they are defined in
//! `decree_raft` (that crate owns their meaning; this one only frames and bounds them).
//!
//! The envelope's `group` names the Raft group; `from` is the sending replica. Each group's
//! messages travel on their own ordered QUIC stream of the connection between two nodes
//! (DESIGN.md §6), so one group's snapshot does not delay another group's heartbeats.

pub use decree_raft::msg::RejectHint;
pub use decree_raft::{Entry, EntryPayload, Message as RaftMessage, SnapshotMeta};

use crate::limits::{Bound, LimitError};

/// Checks one Raft message against [`crate::limits`]: entries per append, snapshot chunk size,
/// voters in a snapshot configuration.
pub fn validate(msg: &RaftMessage) -> Result<(), LimitError> {
    match msg {
        RaftMessage::AppendEntries { entries, .. } => {
            Bound::RaftEntriesPerAppend.check(entries.len())
        }
        RaftMessage::InstallSnapshot { meta, data, .. } => {
            Bound::Voters.check(meta.voters.len())?;
            Bound::SnapshotChunkBytes.check(data.len())
        }
        RaftMessage::PreVote { .. }
        | RaftMessage::PreVoteResponse { .. }
        | RaftMessage::RequestVote { .. }
        | RaftMessage::VoteResponse { .. }
        | RaftMessage::AppendResponse { .. }
        | RaftMessage::InstallSnapshotResponse { .. }
        | RaftMessage::TimeoutNow { .. }
        | RaftMessage::ReadIndexRequest { .. }
        | RaftMessage::ReadIndexResponse { .. } => Ok(()),
    }
}

/// A short name for the message's variant (for logs, metrics and the golden file).
pub fn kind(msg: &RaftMessage) -> &'static str {
    match msg {
        RaftMessage::PreVote { .. } => "Raft::PreVote",
        RaftMessage::PreVoteResponse { .. } => "Raft::PreVoteResponse",
        RaftMessage::RequestVote { .. } => "Raft::RequestVote",
        RaftMessage::VoteResponse { .. } => "Raft::VoteResponse",
        RaftMessage::AppendEntries { .. } => "Raft::AppendEntries",
        RaftMessage::AppendResponse { .. } => "Raft::AppendResponse",
        RaftMessage::InstallSnapshot { .. } => "Raft::InstallSnapshot",
        RaftMessage::InstallSnapshotResponse { .. } => "Raft::InstallSnapshotResponse",
        RaftMessage::TimeoutNow { .. } => "Raft::TimeoutNow",
        RaftMessage::ReadIndexRequest { .. } => "Raft::ReadIndexRequest",
        RaftMessage::ReadIndexResponse { .. } => "Raft::ReadIndexResponse",
    }
}

/// Every name [`kind`] can return.
pub const KINDS: &[&str] = &[
    "Raft::PreVote",
    "Raft::PreVoteResponse",
    "Raft::RequestVote",
    "Raft::VoteResponse",
    "Raft::AppendEntries",
    "Raft::AppendResponse",
    "Raft::InstallSnapshot",
    "Raft::InstallSnapshotResponse",
    "Raft::TimeoutNow",
    "Raft::ReadIndexRequest",
    "Raft::ReadIndexResponse",
];
