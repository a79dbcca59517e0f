//! Raft traffic: the replica-to-replica messages of one group, carried as they are defined in
//! `decree_raft` (that crate owns their meaning; this one only frames and bounds them).
//!
//! Two payloads carry them:
//!
//! - [`crate::Payload::Raft`]: one message; the envelope's `group` names the Raft group and
//!   `from` the sending replica. Log entries and snapshot chunks travel this way, each group on
//!   its own ordered QUIC stream of the connection between two nodes (DESIGN.md §6), so one
//!   group's snapshot does not delay another group's traffic.
//! - [`crate::Payload::RaftBatch`]: the small messages of many groups from one node to another
//!   (heartbeats, acknowledgements, votes, ReadIndex traffic), each tagged with its group, in
//!   one envelope addressed to [`crate::envelope::NODE_GROUP`] (coalesced heartbeats). At most
//!   [`RAFT_BATCH_MESSAGES_MAX`] messages; the decoder refuses the first one past the bound
//!   while decoding, so a frame cannot make it build more.

use std::fmt;

pub use decree_raft::msg::RejectHint;
pub use decree_raft::{Entry, EntryPayload, Message as RaftMessage, SnapshotMeta};
use decree_types::GroupId;
use serde::de::{Deserializer, SeqAccess, Visitor};

use crate::limits::{Bound, LimitError, RAFT_BATCH_MESSAGES_MAX};

/// The messages of a [`crate::Payload::RaftBatch`]: `(group, message)` pairs, in send order.
pub type RaftBatch = Vec<(GroupId, RaftMessage)>;

/// Checks a batch: its length, then every message as [`validate`] does.
pub fn validate_batch(batch: &[(GroupId, RaftMessage)]) -> Result<(), LimitError> {
    Bound::RaftBatchMessages.check(batch.len())?;
    batch.iter().try_for_each(|(_, msg)| validate(msg))
}

/// Decodes a [`RaftBatch`] (encoded as a plain sequence), refusing it as soon as it holds more
/// than [`RAFT_BATCH_MESSAGES_MAX`] messages: decoding never builds more than the bound,
/// whatever length prefix the frame claims. The refusal is a decode error (the body is not a
/// valid envelope); [`validate_batch`] reports the same bound as a [`LimitError`] on encode.
pub fn deserialize_batch<'de, D: Deserializer<'de>>(d: D) -> Result<RaftBatch, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = RaftBatch;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {RAFT_BATCH_MESSAGES_MAX} (group, Raft message) pairs")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RaftBatch, A::Error> {
            let hint = seq.size_hint().unwrap_or(0).min(RAFT_BATCH_MESSAGES_MAX);
            let mut batch = Vec::with_capacity(hint);
            while let Some(item) = seq.next_element()? {
                if batch.len() == RAFT_BATCH_MESSAGES_MAX {
                    return Err(serde::de::Error::invalid_length(batch.len() + 1, &self));
                }
                batch.push(item);
            }
            Ok(batch)
        }
    }
    d.deserialize_seq(Bounded)
}

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
