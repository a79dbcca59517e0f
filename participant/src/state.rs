//! The replicated state of one participant group (commit-protocol.md §2.2) and the
//! deterministic apply of each [`ParticipantCommand`](crate::ParticipantCommand): the transaction table, client sessions,
//! the closed timestamp and the MVCC store.
//!
//! Everything here is a function of the applied entries alone: apply reads time only from the
//! entry's `proposed_at` and never looks at the role (RAFT-9). The group machine
//! (`crate::group`) adds the leader-only half on top.
//!
//! Every map that grows with the workload (versions, intents, read locks, `txn_table`,
//! sessions) is a persistent map (`imbl::OrdMap`), so a clone of the state — the snapshot view —
//! is O(1) and immutable while apply goes on; iteration and encoding are in key order.

use decree_proto::txn::{AbortReason, NoReason, TxnOutcome, Vote};
use decree_proto::ErrorResponse;
use decree_types::{ClientId, GroupId, HlcTimestamp, Key, KeyRange, TxnId};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::command::{CommitLocalCmd, PrepareCmd};
use crate::config::ParticipantConfig;
use crate::mvcc::{MvccImage, MvccStore};

/// A transaction's state at this group (commit-protocol.md §3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// Voted `Yes`; holds intents on `keys` and read locks; waits for the decision. Leaves
    /// only by `Commit`/`Abort` (INV-A4).
    Prepared {
        /// `P`.
        prepare_ts: HlcTimestamp,
        /// Who decides it.
        coord_group: GroupId,
        /// Its snapshot timestamp (sent in `QueryTxn`).
        read_ts: HlcTimestamp,
        /// The keys it holds intents on.
        keys: Vec<Key>,
    },
    /// Voted `No` (final).
    Rejected {
        /// Why.
        reason: NoReason,
    },
    /// Its intents became versions at `commit_ts` (P-8), or a 1PC commit (OPC-1).
    Committed {
        /// `C`.
        commit_ts: HlcTimestamp,
    },
    /// Aborted (P-9), or an abort tombstone for a transaction never prepared here.
    Aborted,
}

/// One `txn_table` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnEntry {
    /// The state.
    pub state: TxnState,
    /// `proposed_at` of the entry that put it in its current state (D-3); a final entry
    /// expires `max_txn_lifetime` after it.
    pub created_at: HlcTimestamp,
}

/// A client session's last 1PC request and its result (OPC-2, RAFT-10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The highest sequence number applied.
    pub seq: u64,
    /// Its transaction.
    pub txn_id: TxnId,
    /// Its result.
    pub outcome: TxnOutcome,
    /// `proposed_at` of the entry that applied it (D-3).
    pub created_at: HlcTimestamp,
}

/// The replicated state of one participant group. See the module docs. A clone is O(1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupState {
    group: GroupId,
    range: KeyRange,
    range_version: u64,
    mvcc: MvccStore,
    txns: OrdMap<TxnId, TxnEntry>,
    sessions: OrdMap<ClientId, Session>,
    /// F-1: every prepare applied after this must have `P > closed_ts` (INV-M4, monotone).
    closed_ts: HlcTimestamp,
    /// Number of `Prepared` entries in `txns` (derived).
    prepared: usize,
}

/// The state as it is encoded, borrowed: snapshots and the digest are both made from it. Maps
/// encode as their entry lists in key order, so [`StateImage`] decodes the bytes.
#[derive(Debug, Serialize)]
pub(crate) struct StateView<'a> {
    group: GroupId,
    range: &'a KeyRange,
    range_version: u64,
    mvcc: crate::mvcc::MvccView<'a>,
    txns: &'a OrdMap<TxnId, TxnEntry>,
    sessions: &'a OrdMap<ClientId, Session>,
    closed_ts: HlcTimestamp,
}

/// The state decoded from a snapshot: the fields of [`StateView`], maps as entry lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateImage {
    pub(crate) group: GroupId,
    pub(crate) range: KeyRange,
    pub(crate) range_version: u64,
    pub(crate) mvcc: MvccImage,
    pub(crate) txns: Vec<(TxnId, TxnEntry)>,
    pub(crate) sessions: Vec<(ClientId, Session)>,
    pub(crate) closed_ts: HlcTimestamp,
}

impl GroupState {
    /// The empty state of group `group` serving `range` (range map version `range_version`).
    pub fn new(group: GroupId, range: KeyRange, range_version: u64) -> Self {
        GroupState {
            group,
            range,
            range_version,
            mvcc: MvccStore::new(),
            txns: OrdMap::new(),
            sessions: OrdMap::new(),
            closed_ts: HlcTimestamp::ZERO,
            prepared: 0,
        }
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The key range served.
    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    /// The range map version the range comes from.
    pub fn range_version(&self) -> u64 {
        self.range_version
    }

    /// The MVCC store.
    pub fn mvcc(&self) -> &MvccStore {
        &self.mvcc
    }

    /// The `txn_table` entry of `txn_id`.
    pub fn txn(&self, txn_id: TxnId) -> Option<&TxnEntry> {
        self.txns.get(&txn_id)
    }

    /// Every `txn_table` entry, by id.
    pub fn txns(&self) -> impl Iterator<Item = (&TxnId, &TxnEntry)> + '_ {
        self.txns.iter()
    }

    /// The session of `client_id`.
    pub fn session(&self, client_id: ClientId) -> Option<&Session> {
        self.sessions.get(&client_id)
    }

    /// Every session, by client.
    pub fn sessions(&self) -> impl Iterator<Item = (&ClientId, &Session)> + '_ {
        self.sessions.iter()
    }

    /// The closed timestamp.
    pub fn closed_ts(&self) -> HlcTimestamp {
        self.closed_ts
    }

    /// Number of `PREPARED` transactions.
    pub fn prepared_count(&self) -> usize {
        self.prepared
    }

    /// The vote a `Prepare` for a transaction already in `txn_table` gets (D-7):
    /// `PREPARED{P}` → `Yes{P}`, `REJECTED` → its `No`, `ABORTED` → `No{AlreadyAborted}`.
    /// `COMMITTED{C}` → `Yes{C}`: the coordinator has decided, so the vote is moot, and
    /// `C ≥ P` is the truthful bound this group still knows.
    pub fn stored_vote(entry: &TxnEntry) -> Vote {
        match &entry.state {
            TxnState::Prepared { prepare_ts, .. } => Vote::Yes { prepare_ts: *prepare_ts },
            TxnState::Rejected { reason } => Vote::No { reason: *reason },
            TxnState::Aborted => Vote::No { reason: NoReason::AlreadyAborted },
            TxnState::Committed { commit_ts } => Vote::Yes { prepare_ts: *commit_ts },
        }
    }

    /// The answer a `CommitLocal` gets without being evaluated (OPC-2, D-7): from the
    /// `txn_table` entry of `txn_id`, or from the session when `seq` is not new. `None`: a new
    /// request.
    pub fn local_dedupe(
        &self,
        txn_id: TxnId,
        client_id: ClientId,
        seq: u64,
    ) -> Option<Result<(TxnId, TxnOutcome), ErrorResponse>> {
        if let Some(entry) = self.txns.get(&txn_id) {
            let outcome = match &entry.state {
                TxnState::Committed { commit_ts } => {
                    TxnOutcome::Committed { commit_ts: *commit_ts }
                }
                TxnState::Rejected { reason } => self.refused(*reason),
                TxnState::Aborted => self.refused(NoReason::AlreadyAborted),
                TxnState::Prepared { .. } => {
                    return Some(Err(ErrorResponse::invalid_argument(format!(
                        "transaction {txn_id} is prepared here by two-phase commit; a 1PC \
                         commit must use a fresh txn_id"
                    ))))
                }
            };
            return Some(Ok((txn_id, outcome)));
        }
        let session = self.sessions.get(&client_id)?;
        if session.seq == seq {
            return Some(Ok((session.txn_id, session.outcome)));
        }
        if session.seq > seq {
            return Some(Err(ErrorResponse::invalid_argument(format!(
                "sequence number {seq} of client {client_id} is below its session's {}",
                session.seq
            ))));
        }
        None
    }

    /// The client's answer for a 1PC refused with `reason`.
    fn refused(&self, reason: NoReason) -> TxnOutcome {
        let reason = match reason {
            NoReason::TxnTooOld => AbortReason::TxnTooOld,
            reason => AbortReason::VotedNo { group: self.group, reason },
        };
        TxnOutcome::Aborted { reason, retryable: true }
    }

    // -----------------------------------------------------------------------------------------
    // Apply, one function per command
    // -----------------------------------------------------------------------------------------

    /// P-5: the checks that decide a prepare, on replicated state only, in a fixed order.
    /// Shared by `Prepare` and `CommitLocal` (OPC-1 runs P-1..P-5 too).
    // The arguments are the fields both commands share; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        config: &ParticipantConfig,
        proposed_at: HlcTimestamp,
        txn_id: TxnId,
        read_ts: HlcTimestamp,
        prepare_ts: HlcTimestamp,
        writes: &[decree_proto::txn::Write],
        read_spans: &[KeyRange],
        refused: Option<NoReason>,
    ) -> Result<(), NoReason> {
        // TS-3: the leader picks P above read_ts; anything else is a bug in admission.
        assert!(
            prepare_ts > read_ts,
            "TS-3: {txn_id} proposed with P {prepare_ts} <= read_ts {read_ts}"
        );
        // D-3: a request older than max_txn_lifetime could have outlived its tombstone.
        if proposed_at > read_ts.add_wall_ns(config.max_txn_lifetime_ns()) {
            return Err(NoReason::TxnTooOld);
        }
        if let Some(reason) = refused {
            return Err(reason);
        }
        if read_ts < self.mvcc.gc_threshold() {
            return Err(NoReason::BelowGcThreshold);
        }
        // INV-M4, F-1: no prepare at or below the closed timestamp.
        if prepare_ts <= self.closed_ts {
            return Err(NoReason::BelowClosedTimestamp);
        }
        self.mvcc.check_prepare(txn_id, read_ts, writes, read_spans)
    }

    /// Applies `PrepareCmd` (P-5) and returns the vote (P-6).
    pub fn apply_prepare(
        &mut self,
        config: &ParticipantConfig,
        proposed_at: HlcTimestamp,
        cmd: &PrepareCmd,
    ) -> Vote {
        if let Some(entry) = self.txns.get(&cmd.txn_id) {
            // Duplicate (D-7).
            return Self::stored_vote(entry);
        }
        let mut verdict = self.check(
            config,
            proposed_at,
            cmd.txn_id,
            cmd.read_ts,
            cmd.prepare_ts,
            &cmd.writes,
            &cmd.read_spans,
            cmd.refused,
        );
        if verdict.is_ok() && self.prepared >= config.prepared_txns_max {
            verdict = Err(NoReason::TooManyPrepared);
        }
        match verdict {
            Ok(()) => {
                self.mvcc.write_intents(
                    cmd.txn_id,
                    cmd.coord_group,
                    cmd.prepare_ts,
                    &cmd.writes,
                    &cmd.read_spans,
                );
                let keys = cmd.writes.iter().map(|w| w.key.clone()).collect();
                let state = TxnState::Prepared {
                    prepare_ts: cmd.prepare_ts,
                    coord_group: cmd.coord_group,
                    read_ts: cmd.read_ts,
                    keys,
                };
                self.txns.insert(cmd.txn_id, TxnEntry { state, created_at: proposed_at });
                self.prepared += 1;
                Vote::Yes { prepare_ts: cmd.prepare_ts }
            }
            Err(reason) => {
                let state = TxnState::Rejected { reason };
                self.txns.insert(cmd.txn_id, TxnEntry { state, created_at: proposed_at });
                Vote::No { reason }
            }
        }
    }

    /// Applies `CommitCmd` (P-8). Anything but `PREPARED` or `COMMITTED{C}` with the same `C`
    /// means the coordinator decided commit without this group's `Yes`, or decided twice:
    /// the replica stops (INV-A1, INV-A2).
    pub fn apply_commit(
        &mut self,
        proposed_at: HlcTimestamp,
        txn_id: TxnId,
        commit_ts: HlcTimestamp,
    ) {
        let entry = self.txns.get_mut(&txn_id);
        match entry {
            Some(TxnEntry { state: TxnState::Committed { commit_ts: c }, .. }) => {
                assert!(
                    *c == commit_ts,
                    "INV-A1: {txn_id} committed at {c} here, a second Commit says {commit_ts}"
                );
            }
            Some(entry @ TxnEntry { state: TxnState::Prepared { .. }, .. }) => {
                let TxnState::Prepared { keys, .. } =
                    std::mem::replace(&mut entry.state, TxnState::Committed { commit_ts })
                else {
                    unreachable!("matched Prepared above")
                };
                entry.created_at = proposed_at;
                self.mvcc.commit_intents(txn_id, &keys, commit_ts);
                self.prepared -= 1;
            }
            other => panic!(
                "INV-A2: Commit of {txn_id} at {commit_ts}, but this group never voted Yes \
                 (txn_table: {other:?}); the coordinator decided commit without this vote"
            ),
        }
    }

    /// Applies `AbortCmd` (P-9): a prepared transaction's intents go; an unknown one gets a
    /// tombstone so that a late `Prepare` votes `No`; `REJECTED`/`ABORTED` stay. `COMMITTED`
    /// stops the replica (INV-A1).
    pub fn apply_abort(&mut self, proposed_at: HlcTimestamp, txn_id: TxnId) {
        match self.txns.get_mut(&txn_id) {
            None => {
                self.txns
                    .insert(txn_id, TxnEntry { state: TxnState::Aborted, created_at: proposed_at });
            }
            Some(entry @ TxnEntry { state: TxnState::Prepared { .. }, .. }) => {
                let TxnState::Prepared { keys, .. } =
                    std::mem::replace(&mut entry.state, TxnState::Aborted)
                else {
                    unreachable!("matched Prepared above")
                };
                entry.created_at = proposed_at;
                self.mvcc.remove_intents(txn_id, &keys);
                self.prepared -= 1;
            }
            Some(TxnEntry { state: TxnState::Rejected { .. } | TxnState::Aborted, .. }) => {}
            Some(TxnEntry { state: TxnState::Committed { commit_ts }, .. }) => {
                panic!("INV-A1: Abort of {txn_id}, which is committed here at {commit_ts}")
            }
        }
    }

    /// Applies `CommitLocalCmd` (OPC-1, OPC-2) and returns the client's answer.
    pub fn apply_commit_local(
        &mut self,
        config: &ParticipantConfig,
        proposed_at: HlcTimestamp,
        cmd: &CommitLocalCmd,
    ) -> Result<(TxnId, TxnOutcome), ErrorResponse> {
        if let Some(answer) = self.local_dedupe(cmd.txn_id, cmd.client_id, cmd.seq) {
            return answer;
        }
        let verdict = self.check(
            config,
            proposed_at,
            cmd.txn_id,
            cmd.read_ts,
            cmd.commit_ts,
            &cmd.writes,
            &cmd.read_spans,
            cmd.refused,
        );
        let (state, outcome) = match verdict {
            Ok(()) => {
                // C = P: versions at once, no intents (OPC-1).
                self.mvcc.write_versions(&cmd.writes, cmd.commit_ts);
                (
                    TxnState::Committed { commit_ts: cmd.commit_ts },
                    TxnOutcome::Committed { commit_ts: cmd.commit_ts },
                )
            }
            Err(reason) => (TxnState::Rejected { reason }, self.refused(reason)),
        };
        self.txns.insert(cmd.txn_id, TxnEntry { state, created_at: proposed_at });
        let session =
            Session { seq: cmd.seq, txn_id: cmd.txn_id, outcome, created_at: proposed_at };
        self.sessions.insert(cmd.client_id, session);
        Ok((cmd.txn_id, outcome))
    }

    /// Applies `Expire` (D-3): removes the listed final entries and sessions that are older
    /// than `max_txn_lifetime` at `proposed_at`. A `PREPARED` entry never expires.
    pub fn apply_expire(
        &mut self,
        config: &ParticipantConfig,
        proposed_at: HlcTimestamp,
        txn_ids: &[TxnId],
        client_ids: &[ClientId],
    ) {
        let lifetime = config.max_txn_lifetime_ns();
        for txn_id in txn_ids {
            if let Some(entry) = self.txns.get(txn_id) {
                let expired = entry.created_at.add_wall_ns(lifetime) < proposed_at;
                if expired && !matches!(entry.state, TxnState::Prepared { .. }) {
                    self.txns.remove(txn_id);
                }
            }
        }
        for client_id in client_ids {
            if self
                .sessions
                .get(client_id)
                .is_some_and(|s| s.created_at.add_wall_ns(lifetime) < proposed_at)
            {
                self.sessions.remove(client_id);
            }
        }
    }

    /// The ids of final entries and sessions that an `Expire` proposed at `now` would remove,
    /// at most `max` of each, in id order (the leader's periodic scan).
    pub fn expired(
        &self,
        config: &ParticipantConfig,
        now: HlcTimestamp,
        max: usize,
    ) -> (Vec<TxnId>, Vec<ClientId>) {
        let lifetime = config.max_txn_lifetime_ns();
        let txns = self
            .txns
            .iter()
            .filter(|(_, e)| {
                !matches!(e.state, TxnState::Prepared { .. })
                    && e.created_at.add_wall_ns(lifetime) < now
            })
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        let sessions = self
            .sessions
            .iter()
            .filter(|(_, s)| s.created_at.add_wall_ns(lifetime) < now)
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        (txns, sessions)
    }

    /// Applies `CloseTimestamp` (F-1): the closed timestamp only moves up (INV-M4).
    pub fn apply_close(&mut self, closed_ts: HlcTimestamp) {
        self.closed_ts = self.closed_ts.max(closed_ts);
    }

    /// Applies `Gc` (REC-7(c)): the threshold becomes `proposed_at − mvcc_gc_ttl` if higher.
    pub fn apply_gc(&mut self, config: &ParticipantConfig, proposed_at: HlcTimestamp) -> usize {
        let threshold =
            HlcTimestamp::new(proposed_at.wall_ns.saturating_sub(config.mvcc_gc_ttl_ns()), 0);
        self.mvcc.gc(threshold)
    }

    // -----------------------------------------------------------------------------------------
    // Canonical form
    // -----------------------------------------------------------------------------------------

    pub(crate) fn view(&self) -> StateView<'_> {
        StateView {
            group: self.group,
            range: &self.range,
            range_version: self.range_version,
            mvcc: self.mvcc.view(),
            txns: &self.txns,
            sessions: &self.sessions,
            closed_ts: self.closed_ts,
        }
    }

    /// Rebuilds a state from its image, checking that intents and the `txn_table` agree
    /// (every intent's owner is `PREPARED` here and lists the key, REC-8).
    pub(crate) fn from_image(image: StateImage) -> Result<GroupState, String> {
        let mvcc = MvccStore::from_image(image.mvcc)?;
        let txns: OrdMap<TxnId, TxnEntry> = image.txns.into_iter().collect();
        let sessions: OrdMap<ClientId, Session> = image.sessions.into_iter().collect();
        let mut prepared = 0;
        let mut intents = 0;
        for (txn_id, entry) in &txns {
            if let TxnState::Prepared { keys, prepare_ts, .. } = &entry.state {
                prepared += 1;
                for key in keys {
                    match mvcc.intent(key) {
                        Some(i) if i.txn_id == *txn_id && i.prepare_ts == *prepare_ts => {
                            intents += 1
                        }
                        _ => return Err(format!("prepared {txn_id} lacks its intent on {key}")),
                    }
                }
            }
        }
        if intents != mvcc.intent_count() {
            return Err("an intent has no PREPARED owner in txn_table".into());
        }
        for (txn_id, entry) in &txns {
            let prepared = matches!(entry.state, TxnState::Prepared { .. });
            if !prepared && !mvcc.read_locks_of(*txn_id).is_empty() {
                return Err(format!("{txn_id} holds read locks but is not PREPARED"));
            }
        }
        if mvcc.read_lock_holders() > prepared {
            return Err("a read lock has no owner in txn_table".into());
        }
        Ok(GroupState {
            group: image.group,
            range: image.range,
            range_version: image.range_version,
            mvcc,
            txns,
            sessions,
            closed_ts: image.closed_ts,
            prepared,
        })
    }
}
