//! What a participant group writes to its Raft log: [`ParticipantCommand`].
//!
//! Every command carries everything apply needs, so apply reads nothing but the entry and the
//! replicated state (RAFT-9); time comes from the entry's `proposed_at` only.

use decree_proto::txn::{NoReason, Write};
use decree_types::{ClientId, GroupId, HlcTimestamp, KeyRange, TxnId};
use serde::{Deserialize, Serialize};

/// A participant group's log command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantCommand {
    /// `PrepareCmd` (P-4, P-5): validate and write intents and read locks, or reject.
    Prepare(PrepareCmd),
    /// `CommitCmd` (P-8): the coordinator decided commit at `commit_ts`.
    Commit {
        /// The transaction.
        txn_id: TxnId,
        /// `C` (C-2).
        commit_ts: HlcTimestamp,
    },
    /// `AbortCmd` (P-9): the coordinator decided abort (or tombstones an unknown txn).
    Abort {
        /// The transaction.
        txn_id: TxnId,
    },
    /// `CommitLocalCmd` (OPC-1): a single-group transaction, committed at `C = P` in this one
    /// entry, deduplicated by `(client_id, seq)` and `txn_id` (OPC-2).
    CommitLocal(CommitLocalCmd),
    /// D-3: drop final `txn_table` entries and sessions whose `created_at + max_txn_lifetime`
    /// is before this entry's `proposed_at` (re-checked at apply).
    Expire {
        /// Candidate transactions.
        txn_ids: Vec<TxnId>,
        /// Candidate client sessions.
        client_ids: Vec<ClientId>,
    },
    /// F-1: raise the closed timestamp; every later prepare must have `P > closed_ts` (P-5).
    CloseTimestamp {
        /// The new closed timestamp (apply keeps the maximum, INV-M4).
        closed_ts: HlcTimestamp,
    },
    /// REC-7(c): raise the MVCC GC threshold to `proposed_at − mvcc_gc_ttl` and drop the
    /// versions no read at or above it can see.
    Gc,
}

/// The prepare of one transaction's part at this group (P-4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareCmd {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its coordinator group (stored in every intent, RI-3).
    pub coord_group: GroupId,
    /// Its snapshot timestamp.
    pub read_ts: HlcTimestamp,
    /// `P`, chosen by the leader (P-3, TS-3).
    pub prepare_ts: HlcTimestamp,
    /// Writes on this group.
    pub writes: Vec<Write>,
    /// Read spans on this group (read-locked on success).
    pub read_spans: Vec<KeyRange>,
    /// A conflict only the leader could see (a pending prepare in its lock table, P-2): apply
    /// records `REJECTED` with this reason, so even this `No` is a vote after apply (P-6).
    pub refused: Option<NoReason>,
}

/// A 1PC commit (OPC-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLocalCmd {
    /// The transaction.
    pub txn_id: TxnId,
    /// The client session (OPC-2).
    pub client_id: ClientId,
    /// The request's sequence number in the session.
    pub seq: u64,
    /// Its snapshot timestamp.
    pub read_ts: HlcTimestamp,
    /// `C = P`, chosen by the leader (P-3).
    pub commit_ts: HlcTimestamp,
    /// Writes.
    pub writes: Vec<Write>,
    /// Read spans (empty in snapshot isolation).
    pub read_spans: Vec<KeyRange>,
    /// See [`PrepareCmd::refused`].
    pub refused: Option<NoReason>,
}
