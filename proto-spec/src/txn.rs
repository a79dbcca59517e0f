//! Transaction messages (protocol.md §3.1): snapshot reads, commit requests from the client,
//! two-phase commit between the coordinator and participant groups, and in-doubt recovery.
//!
//! Every request here is idempotent and names its transaction by [`TxnId`] (or, for 1PC, by
//! `(client_id, seq)`, OPC-2), so a retry after a lost reply is harmless. Replies that a peer
//! must match to a transaction (votes, acks, query answers) repeat the `txn_id`, so they are
//! meaningful even without the request that caused them.
//!
//! Every struct has a `validate` that checks it against [`crate::limits`]; the envelope calls
//! them on decode and before encode.

use decree_types::{GroupId, HlcTimestamp, Key, KeyRange, NodeId, TxnId};
use serde::{Deserialize, Serialize};

use crate::limits::{Bound, LimitError};

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/// One buffered write: a put (`value = Some`) or a delete (`value = None`, a tombstone
/// version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The key written.
    pub key: Key,
    /// The new value, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
}

/// The part of a transaction that touches one participant group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupWork {
    /// The participant group.
    pub group: GroupId,
    /// Writes on keys of that group's range.
    pub writes: Vec<Write>,
    /// Spans read on that group (serializable mode validates and read-locks them, §6.1).
    pub read_spans: Vec<KeyRange>,
}

/// Isolation level of a read-write transaction (protocol.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isolation {
    /// Default: read spans are validated and read-locked from prepare to decision (§6.1).
    Serializable,
    /// Opt-in: read spans are ignored; first-committer-wins on writes only (§6.1).
    Snapshot,
}

/// How the coordinator should commit a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnMode {
    /// Isolation level.
    pub isolation: Isolation,
    /// Strict serializability: reply only after commit-wait (§6.3).
    pub commit_wait: bool,
    /// One-consensus-round commit through a `STAGING` record (§7, PC-1..PC-6).
    pub parallel_commit: bool,
}

/// Why a participant voted `No` (P-2, P-5), or why it refused a 1PC commit (OPC-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoReason {
    /// A written or read key holds another transaction's intent (P-2).
    IntentConflict,
    /// A written or read key has another transaction's pending prepare in the leader's lock
    /// table (P-2, P-4).
    PendingPrepareConflict,
    /// A written key is read-locked by another transaction (P-2).
    ReadLockConflict,
    /// A written key has a committed version newer than `read_ts` (first committer wins, P-2).
    WriteTooOld,
    /// A read key has a committed version newer than `read_ts` (stale read, P-2).
    StaleRead,
    /// The transaction is already `ABORTED` here (P-9 tombstone).
    AlreadyAborted,
    /// The transaction was `PREVENTED` by a recovery query (PCR-1).
    Prevented,
    /// At apply, `P` was not above the group's closed timestamp (P-5, F-1).
    BelowClosedTimestamp,
    /// At apply, `P` was not above the term floor (P-5, LC-1).
    BelowTermFloor,
    /// `read_ts` is older than `now - max_txn_lifetime` (REC-7b).
    TxnTooOld,
    /// `read_ts` is below the MVCC GC threshold.
    BelowGcThreshold,
    /// The group holds too many prepared transactions already.
    TooManyPrepared,
}

/// Why a transaction was aborted, as told to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbortReason {
    /// A participant voted `No` (C-4).
    VotedNo {
        /// The group that refused.
        group: GroupId,
        /// Its reason.
        reason: NoReason,
    },
    /// Votes did not arrive within `prepare_timeout` (C-4, REC-5).
    PrepareTimeout,
    /// A coordinator failover aborted the undecided record (REC-1).
    CoordinatorFailover,
    /// Someone asked about the transaction before its record existed; the coordinator wrote an
    /// abort tombstone (presumed abort, REC-4).
    PresumedAbort,
    /// A recovery query prevented a participant's prepare (PCR-1, PCR-2).
    Prevented,
    /// `read_ts` is older than `now - max_txn_lifetime` (REC-7b).
    TxnTooOld,
    /// The client asked for an abort.
    ClientRollback,
}

/// A transaction's outcome as the client learns it (REC-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Decided commit at `commit_ts` (C-3). The client calls `hlc.update(commit_ts)`.
    Committed {
        /// The commit timestamp `C` (C-2, TS-4).
        commit_ts: HlcTimestamp,
    },
    /// Decided abort. `retryable` tells the client whether rerunning the transaction with a
    /// fresh `txn_id` may succeed.
    Aborted {
        /// Why.
        reason: AbortReason,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// The replier could not learn the outcome (e.g. it lost leadership with the decision in
    /// flight). The client must not assume either outcome; it asks with `TxnStatus` (C-5).
    Ambiguous,
    /// Not decided yet (answer to `TxnStatus` only, REC-4).
    Pending,
}

// ---------------------------------------------------------------------------------------------
// Reads (client -> participant leader or follower, §5)
// ---------------------------------------------------------------------------------------------

/// Read one key at `read_ts` (R-1..R-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    /// The key.
    pub key: Key,
    /// The snapshot timestamp (TS-1).
    pub read_ts: HlcTimestamp,
    /// The uncertainty limit `U = read_ts + max_offset` (TS-2); `None` for a stale read.
    pub uncertainty_limit: Option<HlcTimestamp>,
}

/// Read the keys of `span` at `read_ts`, at most `limit` rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// The keys to read; must lie inside the group's range.
    pub span: KeyRange,
    /// The snapshot timestamp (TS-1).
    pub read_ts: HlcTimestamp,
    /// The uncertainty limit (TS-2); `None` for a stale read.
    pub uncertainty_limit: Option<HlcTimestamp>,
    /// Most rows to return, at most [`crate::limits::SCAN_ROWS_MAX`].
    pub limit: u32,
}

/// Answer to [`Get`]: the newest committed version at or below `read_ts` (TS-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueReply {
    /// The value; `None` if the key has no version at or below `read_ts` or the newest one is a
    /// delete.
    pub value: Option<Vec<u8>>,
    /// Timestamp of the version read; `None` if there is none.
    pub version_ts: Option<HlcTimestamp>,
}

/// One row of a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The key.
    pub key: Key,
    /// Its value (deleted keys are not returned).
    pub value: Vec<u8>,
    /// Timestamp of the version read.
    pub version_ts: HlcTimestamp,
}

/// Answer to [`Scan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRows {
    /// Rows in key order.
    pub rows: Vec<Row>,
    /// If the scan stopped at `limit`, the key to resume from; `None` if the span is exhausted.
    pub resume_from: Option<Key>,
}

/// Answer to a read that met a committed version in `(read_ts, U]` (R-5, §5.3): restart the
/// transaction at `new_read_ts`, keeping `U` (U-1, U-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncertaintyRestart {
    /// The uncertain version's timestamp.
    pub new_read_ts: HlcTimestamp,
}

/// Answer to a read this replica cannot serve at the requested timestamp (a follower above
/// its closed timestamp, F-2/F-3): ask the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The leader, if known.
    pub leader: Option<NodeId>,
}

// ---------------------------------------------------------------------------------------------
// Commit requests from the client
// ---------------------------------------------------------------------------------------------

/// Commit a multi-group transaction (client -> coordinator leader, T-4, C-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitTxn {
    /// Names this one immutable commit request (T-4).
    pub txn_id: TxnId,
    /// The snapshot timestamp all reads used.
    pub read_ts: HlcTimestamp,
    /// Writes and read spans, one entry per participant group, each group at most once.
    pub per_group: Vec<GroupWork>,
    /// Isolation, commit-wait and parallel-commit choices.
    pub mode: TxnMode,
}

/// Ask for the outcome of a transaction, e.g. after `Ambiguous` (client -> coordinator, REC-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnStatus {
    /// The transaction.
    pub txn_id: TxnId,
}

/// Commit a single-group transaction in one Raft entry (client -> participant leader, OPC-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitLocal {
    /// The transaction.
    pub txn_id: TxnId,
    /// The client session, for exactly-once (OPC-2, RAFT-10).
    pub client_id: decree_types::ClientId,
    /// Sequence number within the session; a retry repeats it.
    pub seq: u64,
    /// The snapshot timestamp all reads used.
    pub read_ts: HlcTimestamp,
    /// Writes, all in this group's range.
    pub writes: Vec<Write>,
    /// Read spans, all in this group's range.
    pub read_spans: Vec<KeyRange>,
    /// Isolation level.
    pub isolation: Isolation,
}

// ---------------------------------------------------------------------------------------------
// Two-phase commit (coordinator <-> participant leader)
// ---------------------------------------------------------------------------------------------

/// Phase one: prepare the transaction's part at one group (P-1..P-7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The transaction.
    pub txn_id: TxnId,
    /// The coordinator group that will decide it (stored in every intent).
    pub coord_group: GroupId,
    /// The transaction's snapshot timestamp.
    pub read_ts: HlcTimestamp,
    /// Writes on this group.
    pub writes: Vec<Write>,
    /// Read spans on this group (empty in snapshot isolation).
    pub read_spans: Vec<KeyRange>,
}

/// A participant's vote (P-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Vote {
    /// Prepared at `prepare_ts`; from now on the group never aborts on its own.
    Yes {
        /// The prepare timestamp `P` (P-3).
        prepare_ts: HlcTimestamp,
    },
    /// Refused; the transaction must abort.
    No {
        /// Why.
        reason: NoReason,
    },
}

/// Answer to [`Prepare`], sent only after the prepare entry applied (P-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteReply {
    /// The transaction.
    pub txn_id: TxnId,
    /// The vote.
    pub vote: Vote,
}

/// Phase two, commit (C-6, P-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The transaction.
    pub txn_id: TxnId,
    /// The commit timestamp `C` every participant uses (INV-A1).
    pub commit_ts: HlcTimestamp,
}

/// Phase two, abort (C-4, P-9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    /// The transaction.
    pub txn_id: TxnId,
}

/// Answer to [`Commit`] or [`Abort`], sent after the entry applied (C-6, C-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The transaction.
    pub txn_id: TxnId,
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// Coordinator (recovery) -> participant: is `txn_id` prepared here? With `prevent`, make sure
/// it never will be (PCR-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPrepared {
    /// The transaction.
    pub txn_id: TxnId,
    /// Durably record `PREVENTED` if the transaction is not prepared.
    pub prevent: bool,
}

/// A participant's durable knowledge of a transaction (answer to [`QueryPrepared`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PreparedState {
    /// `PREPARED{P}`.
    Prepared {
        /// The prepare timestamp.
        prepare_ts: HlcTimestamp,
    },
    /// `PREVENTED`: a later `Prepare` will vote `No`.
    Prevented,
    /// `COMMITTED{C}`.
    Committed {
        /// The commit timestamp.
        commit_ts: HlcTimestamp,
    },
    /// `ABORTED` or `REJECTED`.
    Aborted,
    /// Not known here and `prevent` was `false`.
    Unknown,
}

/// Answer to [`QueryPrepared`], from applied state only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedReply {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its state at this group.
    pub state: PreparedState,
}

/// Participant or reader -> coordinator: what happened to `txn_id`? (REC-3, RI-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryTxn {
    /// The transaction.
    pub txn_id: TxnId,
    /// A reader blocked at this timestamp asks the coordinator to push the commit timestamp
    /// above it (RI-3 optional push).
    pub push_above: Option<HlcTimestamp>,
}

/// The coordinator's answer table (REC-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoordinatorState {
    /// Decided commit.
    Committed {
        /// The commit timestamp.
        commit_ts: HlcTimestamp,
    },
    /// Decided abort, or an abort tombstone (presumed abort).
    Aborted,
    /// `PREPARING`, young, current term: keep waiting.
    Pending,
    /// The record accepted a push: it will commit, if at all, at or above `min_commit_ts`.
    Pushed {
        /// The new lower bound on `C`.
        min_commit_ts: HlcTimestamp,
    },
    /// `STAGING` (parallel commit); never pushed (PC-6).
    Staging,
}

/// Answer to [`QueryTxn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnStateReply {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its state at the coordinator.
    pub state: CoordinatorState,
}

/// Answer to [`CommitTxn`], [`TxnStatus`] and [`CommitLocal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeReply {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its outcome.
    pub outcome: TxnOutcome,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl Get {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        check_key(&self.key)
    }
}

impl Scan {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        check_range(&self.span)?;
        Bound::ScanRows.check(self.limit as usize)
    }
}

impl ValueReply {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        check_value(self.value.as_deref())
    }
}

impl ScanRows {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::ScanRows.check(self.rows.len())?;
        for row in &self.rows {
            check_key(&row.key)?;
            check_value(Some(&row.value))?;
        }
        if let Some(key) = &self.resume_from {
            check_key(key)?;
        }
        Ok(())
    }
}

impl CommitTxn {
    /// Checks [`crate::limits`], summing writes and read spans over all groups.
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::GroupsPerTxn.check(self.per_group.len())?;
        let writes: usize = self.per_group.iter().map(|g| g.writes.len()).sum();
        let spans: usize = self.per_group.iter().map(|g| g.read_spans.len()).sum();
        Bound::WritesPerTxn.check(writes)?;
        Bound::ReadSpansPerTxn.check(spans)?;
        for group in &self.per_group {
            check_writes(&group.writes)?;
            check_ranges(&group.read_spans)?;
        }
        Ok(())
    }
}

impl CommitTxn {
    /// Checks what limits cannot: at least one group, and each group listed once. The
    /// coordinator calls this before proposing anything; a failure is answered with
    /// [`crate::ErrorResponse::InvalidArgument`]. (Not run on decode: the bytes are fine, the
    /// request is not.)
    pub fn check_shape(&self) -> Result<(), crate::ErrorResponse> {
        if self.per_group.is_empty() {
            return Err(crate::ErrorResponse::invalid_argument("CommitTxn lists no group"));
        }
        let mut groups: Vec<GroupId> = self.per_group.iter().map(|g| g.group).collect();
        groups.sort_unstable();
        if let Some(pair) = groups.windows(2).find(|w| w[0] == w[1]) {
            return Err(crate::ErrorResponse::invalid_argument(format!(
                "CommitTxn lists group {} twice",
                pair[0]
            )));
        }
        for group in &self.per_group {
            check_spans_ordered(&group.read_spans)?;
        }
        Ok(())
    }
}

impl Scan {
    /// Checks that the span is not inverted (`end < start`); see [`CommitTxn::check_shape`].
    pub fn check_shape(&self) -> Result<(), crate::ErrorResponse> {
        check_spans_ordered(std::slice::from_ref(&self.span))
    }
}

impl CommitLocal {
    /// Checks that no read span is inverted; see [`CommitTxn::check_shape`].
    pub fn check_shape(&self) -> Result<(), crate::ErrorResponse> {
        check_spans_ordered(&self.read_spans)
    }
}

impl Prepare {
    /// Checks that no read span is inverted; see [`CommitTxn::check_shape`].
    pub fn check_shape(&self) -> Result<(), crate::ErrorResponse> {
        check_spans_ordered(&self.read_spans)
    }
}

impl CommitLocal {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::WritesPerTxn.check(self.writes.len())?;
        Bound::ReadSpansPerTxn.check(self.read_spans.len())?;
        check_writes(&self.writes)?;
        check_ranges(&self.read_spans)
    }
}

impl Prepare {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        Bound::WritesPerTxn.check(self.writes.len())?;
        Bound::ReadSpansPerTxn.check(self.read_spans.len())?;
        check_writes(&self.writes)?;
        check_ranges(&self.read_spans)
    }
}

/// Checks a key's length.
pub(crate) fn check_key(key: &Key) -> Result<(), LimitError> {
    Bound::KeyBytes.check(key.0.len())
}

/// Checks both bounds of a key range.
pub(crate) fn check_range(range: &KeyRange) -> Result<(), LimitError> {
    check_key(&range.start)?;
    match &range.end {
        Some(end) => check_key(end),
        None => Ok(()),
    }
}

fn check_spans_ordered(spans: &[KeyRange]) -> Result<(), crate::ErrorResponse> {
    match spans.iter().find(|r| r.end.as_ref().is_some_and(|end| *end < r.start)) {
        Some(_) => Err(crate::ErrorResponse::invalid_argument("key range ends before it starts")),
        None => Ok(()),
    }
}

fn check_value(value: Option<&[u8]>) -> Result<(), LimitError> {
    match value {
        Some(v) => Bound::ValueBytes.check(v.len()),
        None => Ok(()),
    }
}

fn check_writes(writes: &[Write]) -> Result<(), LimitError> {
    for w in writes {
        check_key(&w.key)?;
        check_value(w.value.as_deref())?;
    }
    Ok(())
}

fn check_ranges(ranges: &[KeyRange]) -> Result<(), LimitError> {
    ranges.iter().try_for_each(check_range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(group: u64, spans: Vec<KeyRange>) -> GroupWork {
        GroupWork { group: GroupId(group), writes: vec![], read_spans: spans }
    }

    fn commit(per_group: Vec<GroupWork>) -> CommitTxn {
        CommitTxn {
            txn_id: TxnId(1),
            read_ts: HlcTimestamp::ZERO,
            per_group,
            mode: TxnMode {
                isolation: Isolation::Serializable,
                commit_wait: false,
                parallel_commit: false,
            },
        }
    }

    #[test]
    fn commit_txn_shape() {
        let inverted = KeyRange { start: Key(b"b".to_vec()), end: Some(Key(b"a".to_vec())) };
        let fine = KeyRange { start: Key(b"a".to_vec()), end: Some(Key(b"b".to_vec())) };
        assert_eq!(
            commit(vec![work(1, vec![fine.clone()]), work(2, vec![])]).check_shape(),
            Ok(())
        );
        assert_eq!(
            commit(vec![]).check_shape(),
            Err(crate::ErrorResponse::invalid_argument("CommitTxn lists no group"))
        );
        assert_eq!(
            commit(vec![work(2, vec![]), work(1, vec![]), work(2, vec![])]).check_shape(),
            Err(crate::ErrorResponse::invalid_argument("CommitTxn lists group g2 twice"))
        );
        assert!(commit(vec![work(1, vec![inverted.clone()])]).check_shape().is_err());
        let scan =
            Scan { span: inverted, read_ts: HlcTimestamp::ZERO, uncertainty_limit: None, limit: 1 };
        assert!(scan.check_shape().is_err());
        let scan = Scan { span: fine, ..scan };
        assert_eq!(scan.check_shape(), Ok(()));
    }
}
