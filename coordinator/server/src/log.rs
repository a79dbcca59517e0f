//! The decision log: the replicated part of a coordinator group (commit-protocol.md §2.1,
//! §3.1). One [`Record`] per transaction the group has heard of; the commands that change
//! them ([`CoordinatorCommand`]); and their apply functions, pure functions of the state and
//! the entry (RAFT-9).
//!
//! Every change to a record goes through one function, which asserts that the change is an
//! edge of the §3.1 table (INV-A3): a decided outcome and its `C` never change, a stub keeps
//! its outcome, only a tombstone or stub ever disappears. A command whose guard does not hold
//! is a no-op that reports the actual state (the conditional writes of C-3).
//!
//! Records live in a persistent map (`imbl::OrdMap`): cloning the log — the snapshot view the
//! host takes on the node thread — is O(1), and the view stays as it was while apply goes on.
//! Iteration and the encoding are in transaction order, as with a `BTreeMap`.

use std::collections::BTreeSet;

use decree_proto::txn::{AbortReason, CoordinatorState, TxnOutcome};
use decree_types::{GroupId, HlcTimestamp, TxnId};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::cluster_map::ClusterMap;

/// A decided outcome (C-3). `C` and the outcome never change once written (INV-A3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Decided commit at `commit_ts` (C-2).
    Committed {
        /// `C`.
        commit_ts: HlcTimestamp,
    },
    /// Decided abort (or a tombstone: presumed abort, REC-4).
    Aborted {
        /// Why, as the client is told.
        reason: AbortReason,
    },
}

impl Outcome {
    /// The outcome as a client is told it (REC-6). Every abort but a client's own rollback is
    /// worth retrying with a fresh `txn_id`.
    pub fn to_client(self) -> TxnOutcome {
        match self {
            Outcome::Committed { commit_ts } => TxnOutcome::Committed { commit_ts },
            Outcome::Aborted { reason } => {
                TxnOutcome::Aborted { reason, retryable: reason != AbortReason::ClientRollback }
            }
        }
    }

    /// The outcome as a participant is told it (REC-4).
    pub fn to_query(self) -> CoordinatorState {
        match self {
            Outcome::Committed { commit_ts } => CoordinatorState::Committed { commit_ts },
            Outcome::Aborted { .. } => CoordinatorState::Aborted,
        }
    }
}

/// One transaction's record (commit-protocol.md §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// `PREPARING`: `StartCommit` applied, no decision yet.
    Preparing {
        /// The transaction's snapshot timestamp.
        read_ts: HlcTimestamp,
        /// The participant groups, ascending.
        participants: Vec<GroupId>,
        /// `proposed_at` of the `StartCommit` entry (D-3).
        created_at: HlcTimestamp,
    },
    /// `COMMITTED{C}` or `ABORTED`, phase two in progress.
    Decided {
        /// The outcome.
        outcome: Outcome,
        /// The transaction's snapshot timestamp.
        read_ts: HlcTimestamp,
        /// The participant groups, ascending.
        participants: Vec<GroupId>,
        /// Participants whose `Ack` is recorded; a subset of `participants`.
        acked: BTreeSet<GroupId>,
        /// `proposed_at` of the `StartCommit` entry.
        created_at: HlcTimestamp,
    },
    /// `ABORTED` with no participants: presumed abort (REC-4), or a `StartCommit` refused as
    /// too old (D-3).
    Tombstone {
        /// Why.
        reason: AbortReason,
        /// `proposed_at` of the `Tombstone` entry.
        created_at: HlcTimestamp,
    },
    /// An outcome stub: a decided record every participant acknowledged, compacted
    /// (REC-7(a), D-4).
    Stub {
        /// The outcome, unchanged.
        outcome: Outcome,
        /// `created_at` of the record it replaced.
        created_at: HlcTimestamp,
    },
}

impl Record {
    /// The decided outcome, if any (decided records, tombstones, stubs).
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Record::Preparing { .. } => None,
            Record::Decided { outcome, .. } | Record::Stub { outcome, .. } => Some(*outcome),
            Record::Tombstone { reason, .. } => Some(Outcome::Aborted { reason: *reason }),
        }
    }

    /// When the entry that created the record was proposed.
    pub fn created_at(&self) -> HlcTimestamp {
        match self {
            Record::Preparing { created_at, .. }
            | Record::Decided { created_at, .. }
            | Record::Tombstone { created_at, .. }
            | Record::Stub { created_at, .. } => *created_at,
        }
    }

    /// The participants still owed phase two (decided records only; empty otherwise).
    pub fn unacked(&self) -> Vec<GroupId> {
        match self {
            Record::Decided { participants, acked, .. } => {
                participants.iter().filter(|g| !acked.contains(g)).copied().collect()
            }
            _ => Vec::new(),
        }
    }
}

/// How a command's apply result answers the request that waits for it: a client's
/// `CommitTxn`/`TxnStatus` gets an [`decree_proto::txn::OutcomeReply`], a participant's
/// `QueryTxn` a [`decree_proto::txn::TxnStateReply`]. Part of the entry so that apply stays a
/// function of the entry alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// `Response::Outcome`.
    Outcome,
    /// `Response::TxnState`.
    TxnState,
}

/// What a `Decide` entry decides (C-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Commit. Apply sets `C = max(prepare_ts_max, entry.proposed_at)`: C-2, with the
    /// coordinator's clock read by the host when it stamps the entry (`proposed_at` is the
    /// leader's HLC reading at proposal, after it observed every vote).
    Commit {
        /// The largest prepare timestamp among the `Yes` votes.
        prepare_ts_max: HlcTimestamp,
    },
    /// Abort (C-4, REC-1, REC-4).
    Abort {
        /// Why.
        reason: AbortReason,
    },
}

/// Everything written to a coordinator group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorCommand {
    /// absent → `PREPARING` (C-1), unless a record exists or `read_ts` expired (D-3).
    StartCommit {
        /// The transaction.
        txn_id: TxnId,
        /// Its snapshot timestamp.
        read_ts: HlcTimestamp,
        /// Its participant groups.
        participants: Vec<GroupId>,
    },
    /// `PREPARING` → decided (C-3); a no-op on anything else, reporting the actual state.
    Decide {
        /// The transaction.
        txn_id: TxnId,
        /// The decision.
        decision: Decision,
        /// How the result answers its waiter.
        answer: Answer,
    },
    /// absent → tombstone (REC-4 presumed abort, INV-A5); a no-op on an existing record.
    Tombstone {
        /// The transaction.
        txn_id: TxnId,
        /// Why (`PresumedAbort`, or `TxnTooOld` for a refused `StartCommit`).
        reason: AbortReason,
        /// How the result answers its waiter.
        answer: Answer,
    },
    /// `acked += g` for each pair whose record is decided and lists `g` (C-7); many
    /// transactions' acks in one entry.
    RecordAcks {
        /// `(txn, group)` pairs.
        acks: Vec<(TxnId, GroupId)>,
    },
    /// Decided records whose every participant acked → outcome stubs (REC-7(a), D-4).
    Compact {
        /// The transactions.
        txn_ids: Vec<TxnId>,
    },
    /// Tombstones and stubs past `created_at + max_txn_lifetime` → absent (D-3).
    Expire {
        /// The transactions.
        txn_ids: Vec<TxnId>,
    },
    /// Replaces the cluster map if its version is `expected_version` (compare-and-set).
    ReplaceClusterMap {
        /// The version the change was computed from.
        expected_version: u64,
        /// The new layout (its own version field is ignored: it becomes the next version).
        map: ClusterMap,
    },
}

/// What a transaction looks like from the log, for answers (REC-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnView {
    /// No record.
    Absent,
    /// `PREPARING`.
    Preparing,
    /// Decided (record, tombstone or stub).
    Decided(Outcome),
}

/// Result of applying `StartCommit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartResult {
    /// The record is now `PREPARING`.
    Created,
    /// A record existed; nothing changed.
    Exists(TxnView),
    /// `read_ts` is older than `max_txn_lifetime` at the entry's time (D-3); nothing changed.
    TooOld,
}

/// The decision log: every record, by transaction. A clone is O(1) and shares structure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionLog {
    records: OrdMap<TxnId, Record>,
}

impl DecisionLog {
    /// The record of `txn_id`.
    pub fn get(&self, txn_id: TxnId) -> Option<&Record> {
        self.records.get(&txn_id)
    }

    /// Every record, by transaction.
    pub fn iter(&self) -> impl Iterator<Item = (TxnId, &Record)> + '_ {
        self.records.iter().map(|(t, r)| (*t, r))
    }

    /// Number of records (tombstones and stubs included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records at all?
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Checks what a snapshot must hold for every record (run on restore): participants
    /// ascending, distinct and non-empty; acks only from participants.
    pub fn check(&self) -> Result<(), String> {
        for (txn_id, record) in &self.records {
            let (participants, acked) = match record {
                Record::Preparing { participants, .. } => (participants, None),
                Record::Decided { participants, acked, .. } => (participants, Some(acked)),
                Record::Tombstone { .. } | Record::Stub { .. } => continue,
            };
            let sorted = participants.windows(2).all(|w| w[0] < w[1]);
            if participants.is_empty() || !sorted {
                return Err(format!("record {txn_id}: malformed participant list"));
            }
            if acked.is_some_and(|a| a.iter().any(|g| !participants.contains(g))) {
                return Err(format!("record {txn_id}: ack from a non-participant"));
            }
        }
        Ok(())
    }

    /// `txn_id` as answers see it.
    pub fn view(&self, txn_id: TxnId) -> TxnView {
        match self.records.get(&txn_id) {
            None => TxnView::Absent,
            Some(Record::Preparing { .. }) => TxnView::Preparing,
            // Only a PREPARING record has no outcome, and it is matched above.
            Some(r) => TxnView::Decided(r.outcome().expect("every other record is decided")),
        }
    }

    /// `StartCommit` (§3.1 row 1, D-3).
    pub fn start_commit(
        &mut self,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        participants: &[GroupId],
        proposed_at: HlcTimestamp,
        max_txn_lifetime_ns: u64,
    ) -> StartResult {
        if self.records.contains_key(&txn_id) {
            return StartResult::Exists(self.view(txn_id));
        }
        if proposed_at > read_ts.add_wall_ns(max_txn_lifetime_ns) {
            return StartResult::TooOld;
        }
        let mut participants = participants.to_vec();
        participants.sort_unstable();
        participants.dedup();
        self.set(
            txn_id,
            Some(Record::Preparing { read_ts, participants, created_at: proposed_at }),
        );
        StartResult::Created
    }

    /// `Decide` (§3.1 rows 3-4, C-3): conditional on `PREPARING`. Returns whether it decided,
    /// and the state after it.
    pub fn decide(
        &mut self,
        txn_id: TxnId,
        decision: Decision,
        proposed_at: HlcTimestamp,
    ) -> (bool, TxnView) {
        let Some(Record::Preparing { read_ts, participants, created_at }) =
            self.records.get(&txn_id).cloned()
        else {
            return (false, self.view(txn_id));
        };
        let outcome = match decision {
            Decision::Commit { prepare_ts_max } => {
                let commit_ts = prepare_ts_max.max(proposed_at);
                // INV-A2: C > read_ts. The leader observed read_ts before it proposed (HLC-2),
                // so proposed_at, and hence C, is above it.
                assert!(
                    commit_ts > read_ts,
                    "INV-A2: {txn_id} would commit at {commit_ts} <= read_ts {read_ts}"
                );
                Outcome::Committed { commit_ts }
            }
            Decision::Abort { reason } => Outcome::Aborted { reason },
        };
        let acked = BTreeSet::new();
        self.set(
            txn_id,
            Some(Record::Decided { outcome, read_ts, participants, acked, created_at }),
        );
        (true, TxnView::Decided(outcome))
    }

    /// `Tombstone` (§3.1 row 2, REC-4): absent → `ABORTED` without participants. Returns
    /// whether it wrote one, and the state after it.
    pub fn tombstone(
        &mut self,
        txn_id: TxnId,
        reason: AbortReason,
        proposed_at: HlcTimestamp,
    ) -> (bool, TxnView) {
        if self.records.contains_key(&txn_id) {
            return (false, self.view(txn_id));
        }
        self.set(txn_id, Some(Record::Tombstone { reason, created_at: proposed_at }));
        (true, self.view(txn_id))
    }

    /// `RecordAcks` (§3.1 row 5). Returns the transactions that this entry left with every
    /// participant acked, ascending.
    pub fn record_acks(&mut self, acks: &[(TxnId, GroupId)]) -> Vec<TxnId> {
        let mut complete = BTreeSet::new();
        for &(txn_id, group) in acks {
            let Some(record @ Record::Decided { participants, acked, .. }) =
                self.records.get(&txn_id)
            else {
                continue; // a duplicate for a stub or tombstone, or an unknown txn: ignored
            };
            if !participants.contains(&group) || acked.contains(&group) {
                continue;
            }
            let mut next = record.clone();
            if let Record::Decided { acked, participants, .. } = &mut next {
                acked.insert(group);
                if acked.len() == participants.len() {
                    complete.insert(txn_id);
                }
            }
            self.set(txn_id, Some(next));
        }
        complete.into_iter().collect()
    }

    /// `Compact` (§3.1 row 6, REC-7(a), INV-A6): only records with every participant acked.
    /// Returns the transactions compacted.
    pub fn compact(&mut self, txn_ids: &[TxnId]) -> Vec<TxnId> {
        let mut done = Vec::new();
        for &txn_id in txn_ids {
            let Some(Record::Decided { outcome, participants, acked, created_at, .. }) =
                self.records.get(&txn_id)
            else {
                continue;
            };
            if acked.len() != participants.len() {
                continue;
            }
            let stub = Record::Stub { outcome: *outcome, created_at: *created_at };
            self.set(txn_id, Some(stub));
            done.push(txn_id);
        }
        done
    }

    /// `Expire` (§3.1 row 7, D-3): tombstones and stubs older than `max_txn_lifetime` at the
    /// entry's time. Returns the transactions removed.
    pub fn expire(
        &mut self,
        txn_ids: &[TxnId],
        proposed_at: HlcTimestamp,
        max_txn_lifetime_ns: u64,
    ) -> Vec<TxnId> {
        let mut done = Vec::new();
        for &txn_id in txn_ids {
            match self.records.get(&txn_id) {
                Some(r @ (Record::Tombstone { .. } | Record::Stub { .. }))
                    if proposed_at > r.created_at().add_wall_ns(max_txn_lifetime_ns) =>
                {
                    self.set(txn_id, None);
                    done.push(txn_id);
                }
                _ => {}
            }
        }
        done
    }

    /// Tombstones and stubs that `now` says are past their lifetime, ascending, at most
    /// `max` (the leader's scan for `Expire`; apply re-checks with the entry's time).
    pub fn expirable(&self, now: HlcTimestamp, max_txn_lifetime_ns: u64, max: usize) -> Vec<TxnId> {
        self.records
            .iter()
            .filter(|(_, r)| matches!(r, Record::Tombstone { .. } | Record::Stub { .. }))
            .filter(|(_, r)| now > r.created_at().add_wall_ns(max_txn_lifetime_ns))
            .map(|(t, _)| *t)
            .take(max)
            .collect()
    }

    /// The one place a record changes. Asserts INV-A3: the change is an edge of the §3.1
    /// table. Safety-critical, so on in release builds.
    fn set(&mut self, txn_id: TxnId, next: Option<Record>) {
        let prev = self.records.get(&txn_id);
        assert!(
            transition_allowed(prev, next.as_ref()),
            "INV-A3: {txn_id}: {prev:?} -> {next:?} is not a transition of commit-protocol.md §3.1"
        );
        match next {
            Some(r) => self.records.insert(txn_id, r),
            None => self.records.remove(&txn_id),
        };
    }
}

/// The §3.1 transition table.
fn transition_allowed(prev: Option<&Record>, next: Option<&Record>) -> bool {
    use Record::*;
    match (prev, next) {
        (None, Some(Preparing { .. })) | (None, Some(Tombstone { .. })) => true,
        (
            Some(Preparing { read_ts: r0, participants: p0, created_at: c0 }),
            Some(Decided { read_ts, participants, acked, created_at, .. }),
        ) => r0 == read_ts && p0 == participants && c0 == created_at && acked.is_empty(),
        (
            Some(Decided { outcome: o0, participants: p0, acked: a0, created_at: c0, .. }),
            Some(Decided { outcome, participants, acked, created_at, .. }),
        ) => {
            o0 == outcome
                && p0 == participants
                && c0 == created_at
                && a0.is_subset(acked)
                && acked.iter().all(|g| participants.contains(g))
        }
        (
            Some(Decided { outcome: o0, participants, acked, created_at: c0, .. }),
            Some(Stub { outcome, created_at }),
        ) => o0 == outcome && c0 == created_at && acked.len() == participants.len(),
        (Some(Tombstone { .. }) | Some(Stub { .. }), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: u64 = 1_000;

    fn ts(wall: u64) -> HlcTimestamp {
        HlcTimestamp::new(wall, 0)
    }

    fn groups() -> Vec<GroupId> {
        vec![GroupId(2), GroupId(1)]
    }

    #[test]
    fn c1_start_commit_creates_preparing_once_and_a_tombstone_blocks_it() {
        let mut log = DecisionLog::default();
        assert_eq!(
            log.start_commit(TxnId(1), ts(10), &groups(), ts(20), LIFE),
            StartResult::Created
        );
        assert_eq!(
            log.get(TxnId(1)),
            Some(&Record::Preparing {
                read_ts: ts(10),
                participants: vec![GroupId(1), GroupId(2)],
                created_at: ts(20)
            })
        );
        assert_eq!(
            log.start_commit(TxnId(1), ts(10), &groups(), ts(21), LIFE),
            StartResult::Exists(TxnView::Preparing)
        );
        // REC-4: a tombstone written first makes a later StartCommit a no-op.
        assert!(log.tombstone(TxnId(2), AbortReason::PresumedAbort, ts(5)).0);
        let aborted = TxnView::Decided(Outcome::Aborted { reason: AbortReason::PresumedAbort });
        assert_eq!(
            log.start_commit(TxnId(2), ts(10), &groups(), ts(20), LIFE),
            StartResult::Exists(aborted)
        );
    }

    #[test]
    fn d3_start_commit_with_an_expired_read_ts_is_refused_at_apply() {
        let mut log = DecisionLog::default();
        assert_eq!(
            log.start_commit(TxnId(1), ts(10), &groups(), ts(10 + LIFE + 1), LIFE),
            StartResult::TooOld
        );
        assert!(log.is_empty());
        assert_eq!(
            log.start_commit(TxnId(1), ts(10), &groups(), ts(10 + LIFE), LIFE),
            StartResult::Created
        );
    }

    #[test]
    fn c3_decide_is_conditional_on_preparing_and_never_changes_an_outcome() {
        let mut log = DecisionLog::default();
        let commit = Decision::Commit { prepare_ts_max: ts(30) };
        // absent: no-op.
        assert_eq!(log.decide(TxnId(1), commit, ts(40)), (false, TxnView::Absent));
        log.start_commit(TxnId(1), ts(10), &groups(), ts(20), LIFE);
        // C-2: C = max(P..., proposed_at).
        let committed = Outcome::Committed { commit_ts: ts(40) };
        assert_eq!(log.decide(TxnId(1), commit, ts(40)), (true, TxnView::Decided(committed)));
        // A second Decide, either way, is a no-op reporting the decided state.
        let abort = Decision::Abort { reason: AbortReason::CoordinatorFailover };
        assert_eq!(log.decide(TxnId(1), abort, ts(50)), (false, TxnView::Decided(committed)));
        assert_eq!(
            log.decide(TxnId(1), Decision::Commit { prepare_ts_max: ts(99) }, ts(50)),
            (false, TxnView::Decided(committed))
        );
        // C >= max P when P is ahead of the clock reading.
        log.start_commit(TxnId(2), ts(10), &groups(), ts(20), LIFE);
        let (_, view) = log.decide(TxnId(2), Decision::Commit { prepare_ts_max: ts(70) }, ts(60));
        assert_eq!(view, TxnView::Decided(Outcome::Committed { commit_ts: ts(70) }));
    }

    #[test]
    fn inv_a5_decide_commit_after_a_tombstone_never_applies() {
        let mut log = DecisionLog::default();
        log.tombstone(TxnId(1), AbortReason::PresumedAbort, ts(5));
        let (changed, view) =
            log.decide(TxnId(1), Decision::Commit { prepare_ts_max: ts(30) }, ts(40));
        assert!(!changed);
        assert_eq!(view, TxnView::Decided(Outcome::Aborted { reason: AbortReason::PresumedAbort }));
        assert!(!log.tombstone(TxnId(1), AbortReason::PresumedAbort, ts(6)).0);
    }

    #[test]
    fn rec7a_acks_then_compaction_to_a_stub_only_when_every_participant_acked() {
        let mut log = DecisionLog::default();
        log.start_commit(TxnId(1), ts(10), &groups(), ts(20), LIFE);
        log.decide(TxnId(1), Decision::Commit { prepare_ts_max: ts(30) }, ts(40));
        assert_eq!(log.compact(&[TxnId(1)]), Vec::<TxnId>::new(), "INV-A6: nobody acked yet");
        // An ack from a non-participant and a duplicate are ignored.
        assert_eq!(
            log.record_acks(&[
                (TxnId(1), GroupId(1)),
                (TxnId(1), GroupId(7)),
                (TxnId(1), GroupId(1))
            ]),
            vec![]
        );
        assert_eq!(log.get(TxnId(1)).map(Record::unacked), Some(vec![GroupId(2)]));
        assert_eq!(log.compact(&[TxnId(1)]), Vec::<TxnId>::new());
        assert_eq!(log.record_acks(&[(TxnId(1), GroupId(2))]), vec![TxnId(1)]);
        assert_eq!(log.compact(&[TxnId(1), TxnId(9)]), vec![TxnId(1)]);
        let stub =
            Record::Stub { outcome: Outcome::Committed { commit_ts: ts(40) }, created_at: ts(20) };
        assert_eq!(log.get(TxnId(1)), Some(&stub));
        // Acks and compaction after compaction are harmless no-ops.
        assert_eq!(log.record_acks(&[(TxnId(1), GroupId(2))]), vec![]);
        assert_eq!(log.compact(&[TxnId(1)]), Vec::<TxnId>::new());
        assert_eq!(log.get(TxnId(1)), Some(&stub));
    }

    #[test]
    fn d3_expire_removes_only_old_tombstones_and_stubs() {
        let mut log = DecisionLog::default();
        log.tombstone(TxnId(1), AbortReason::PresumedAbort, ts(100));
        log.start_commit(TxnId(2), ts(100), &groups(), ts(100), LIFE);
        log.start_commit(TxnId(3), ts(100), &groups(), ts(100), LIFE);
        log.decide(TxnId(3), Decision::Abort { reason: AbortReason::PrepareTimeout }, ts(101));
        let all = [TxnId(1), TxnId(2), TxnId(3)];
        assert_eq!(log.expirable(ts(100 + LIFE), LIFE, 10), Vec::<TxnId>::new());
        assert_eq!(log.expire(&all, ts(100 + LIFE), LIFE), Vec::<TxnId>::new(), "not older yet");
        assert_eq!(log.expirable(ts(200 + LIFE), LIFE, 10), vec![TxnId(1)]);
        // PREPARING and unacked decided records never expire.
        assert_eq!(log.expire(&all, ts(200 + LIFE), LIFE), vec![TxnId(1)]);
        assert_eq!(log.view(TxnId(1)), TxnView::Absent);
        assert_eq!(log.view(TxnId(2)), TxnView::Preparing);
        assert!(matches!(log.view(TxnId(3)), TxnView::Decided(_)));
    }

    #[test]
    fn inv_a3_transition_table() {
        let prep =
            Record::Preparing { read_ts: ts(1), participants: vec![GroupId(1)], created_at: ts(2) };
        let commit = Outcome::Committed { commit_ts: ts(3) };
        let decided = |o: Outcome, acked: &[u64]| Record::Decided {
            outcome: o,
            read_ts: ts(1),
            participants: vec![GroupId(1)],
            acked: acked.iter().map(|g| GroupId(*g)).collect(),
            created_at: ts(2),
        };
        let abort = Outcome::Aborted { reason: AbortReason::PrepareTimeout };
        let tomb = Record::Tombstone { reason: AbortReason::PresumedAbort, created_at: ts(2) };
        let stub = Record::Stub { outcome: commit, created_at: ts(2) };
        assert!(transition_allowed(None, Some(&prep)));
        assert!(transition_allowed(None, Some(&tomb)));
        assert!(transition_allowed(Some(&prep), Some(&decided(commit, &[]))));
        assert!(transition_allowed(Some(&decided(commit, &[])), Some(&decided(commit, &[1]))));
        assert!(transition_allowed(Some(&decided(commit, &[1])), Some(&stub)));
        assert!(transition_allowed(Some(&stub), None));
        assert!(transition_allowed(Some(&tomb), None));
        // Everything else is refused.
        assert!(!transition_allowed(None, Some(&decided(commit, &[]))));
        assert!(!transition_allowed(Some(&decided(commit, &[])), Some(&decided(abort, &[]))));
        assert!(!transition_allowed(Some(&decided(commit, &[1])), Some(&decided(commit, &[]))));
        assert!(!transition_allowed(Some(&decided(commit, &[])), Some(&stub)), "INV-A6");
        assert!(!transition_allowed(Some(&decided(commit, &[1])), None));
        assert!(!transition_allowed(Some(&prep), None));
        assert!(!transition_allowed(Some(&tomb), Some(&prep)));
        assert!(!transition_allowed(Some(&stub), Some(&decided(commit, &[1]))));
        assert!(!transition_allowed(Some(&prep), Some(&tomb)));
    }
}
