//! Every bound the wire protocol enforces on peer input, named, with its unit last
//! (STYLE.md principle 6).
//!
//! The frame size ([`crate::frame::FRAME_BYTES_MAX`]) bounds the bytes a peer can make us
//! buffer; the limits here bound what those bytes may *mean*: how many writes a transaction
//! carries, how long a key is, how many rows a scan returns. Every decoded envelope is checked
//! against them ([`crate::Envelope::validate`]) before anyone acts on it, and every envelope is
//! checked again before it is encoded, so a node never sends what its peer would refuse.
//!
//! Memory: postcard never preallocates more than the input can fill (every element costs at
//! least one input byte and serde caps preallocation), so decoding one frame allocates at most
//! a small constant times [`crate::frame::FRAME_BYTES_MAX`] before validation runs.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use decree_types::limits::{
    KEY_BYTES_MAX, RAFT_BATCH_MESSAGES_MAX, RAFT_ENTRIES_PER_APPEND_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
    VALUE_BYTES_MAX, VOTERS_MAX,
};

/// Most writes (puts and deletes) in one transaction, summed over its groups: the
/// cluster-wide `TXN_KEYS_MAX` of `decree_types::limits`.
pub const WRITES_PER_TXN_MAX: usize = decree_types::limits::TXN_KEYS_MAX;
/// Most read spans (point reads count as one-key spans) in one transaction, summed over its
/// groups.
pub const READ_SPANS_PER_TXN_MAX: usize = decree_types::limits::TXN_KEYS_MAX;
/// Most participant groups one transaction may touch.
pub const GROUPS_PER_TXN_MAX: usize = 256;
/// Most rows one `Scan` may ask for, and one `ScanRows` reply may carry.
pub const SCAN_ROWS_MAX: usize = 10_000;
/// Most entries in a range map on the wire.
pub const RANGES_MAX: usize = 65_536;
/// Most groups (and group leaders) in one admin reply.
pub const GROUPS_REPORTED_MAX: usize = 65_536;
/// Most in-doubt transactions in one cluster-status reply; the reply says how many more exist.
pub const IN_DOUBT_REPORTED_MAX: usize = 10_000;
/// Longest node address (`host:port`) in bytes.
pub const ADDR_BYTES_MAX: usize = 256;
/// Longest human-readable detail in an error reply, in bytes.
pub const ERROR_DETAIL_BYTES_MAX: usize = 1024;

/// Which bound a message broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bound {
    /// [`KEY_BYTES_MAX`]
    KeyBytes,
    /// [`VALUE_BYTES_MAX`]
    ValueBytes,
    /// [`WRITES_PER_TXN_MAX`]
    WritesPerTxn,
    /// [`READ_SPANS_PER_TXN_MAX`]
    ReadSpansPerTxn,
    /// [`GROUPS_PER_TXN_MAX`]
    GroupsPerTxn,
    /// [`SCAN_ROWS_MAX`]
    ScanRows,
    /// [`RANGES_MAX`]
    Ranges,
    /// [`GROUPS_REPORTED_MAX`]
    GroupsReported,
    /// [`IN_DOUBT_REPORTED_MAX`]
    InDoubtReported,
    /// [`RAFT_ENTRIES_PER_APPEND_MAX`]
    RaftEntriesPerAppend,
    /// [`SNAPSHOT_CHUNK_BYTES_MAX`]
    SnapshotChunkBytes,
    /// [`VOTERS_MAX`]
    Voters,
    /// [`ADDR_BYTES_MAX`]
    AddrBytes,
    /// [`ERROR_DETAIL_BYTES_MAX`]
    ErrorDetailBytes,
    /// [`RAFT_BATCH_MESSAGES_MAX`]
    RaftBatchMessages,
}

impl Bound {
    /// The bound's value.
    pub const fn max(self) -> usize {
        match self {
            Bound::KeyBytes => KEY_BYTES_MAX,
            Bound::ValueBytes => VALUE_BYTES_MAX,
            Bound::WritesPerTxn => WRITES_PER_TXN_MAX,
            Bound::ReadSpansPerTxn => READ_SPANS_PER_TXN_MAX,
            Bound::GroupsPerTxn => GROUPS_PER_TXN_MAX,
            Bound::ScanRows => SCAN_ROWS_MAX,
            Bound::Ranges => RANGES_MAX,
            Bound::GroupsReported => GROUPS_REPORTED_MAX,
            Bound::InDoubtReported => IN_DOUBT_REPORTED_MAX,
            Bound::RaftEntriesPerAppend => RAFT_ENTRIES_PER_APPEND_MAX,
            Bound::SnapshotChunkBytes => SNAPSHOT_CHUNK_BYTES_MAX,
            Bound::Voters => VOTERS_MAX,
            Bound::AddrBytes => ADDR_BYTES_MAX,
            Bound::ErrorDetailBytes => ERROR_DETAIL_BYTES_MAX,
            Bound::RaftBatchMessages => RAFT_BATCH_MESSAGES_MAX,
        }
    }

    /// `Ok` if `got` is within the bound.
    pub fn check(self, got: usize) -> Result<(), LimitError> {
        let max = self.max();
        if got > max {
            return Err(LimitError { bound: self, got: got as u64, max: max as u64 });
        }
        Ok(())
    }

    /// The constant's name, for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Bound::KeyBytes => "KEY_BYTES_MAX",
            Bound::ValueBytes => "VALUE_BYTES_MAX",
            Bound::WritesPerTxn => "WRITES_PER_TXN_MAX",
            Bound::ReadSpansPerTxn => "READ_SPANS_PER_TXN_MAX",
            Bound::GroupsPerTxn => "GROUPS_PER_TXN_MAX",
            Bound::ScanRows => "SCAN_ROWS_MAX",
            Bound::Ranges => "RANGES_MAX",
            Bound::GroupsReported => "GROUPS_REPORTED_MAX",
            Bound::InDoubtReported => "IN_DOUBT_REPORTED_MAX",
            Bound::RaftEntriesPerAppend => "RAFT_ENTRIES_PER_APPEND_MAX",
            Bound::SnapshotChunkBytes => "SNAPSHOT_CHUNK_BYTES_MAX",
            Bound::Voters => "VOTERS_MAX",
            Bound::AddrBytes => "ADDR_BYTES_MAX",
            Bound::ErrorDetailBytes => "ERROR_DETAIL_BYTES_MAX",
            Bound::RaftBatchMessages => "RAFT_BATCH_MESSAGES_MAX",
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message exceeds one of the bounds above. Also sent to the peer inside
/// [`crate::error::ErrorResponse::LimitExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{bound} exceeded: got {got}, maximum {max}")]
pub struct LimitError {
    /// The bound broken.
    pub bound: Bound,
    /// What the message carried.
    pub got: u64,
    /// The bound's value.
    pub max: u64,
}
