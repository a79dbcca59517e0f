//! [`ParticipantGroup`]: the participant group's replicated state machine, on the host's
//! [`ReplicatedMachine`] interface.
//!
//! Two halves (DESIGN.md §3, TigerBeetle's prepare/commit split):
//!
//! - **Admission** (leader only, may read the HLC): validates every request (typed errors,
//!   the group keeps serving), serves snapshot reads from applied state at once (R-1..R-5),
//!   parks reads blocked by a pending or prepared intent with `P ≤` their limit and answers
//!   them when it resolves (RI-1..RI-3), picks prepare timestamps (P-3) and fills the
//!   pending-prepare lock table (P-4) before proposing, and holds prepares during the LC-2
//!   wait after an election (commit-protocol.md §6).
//! - **Apply** (every replica, deterministic, time only from `proposed_at`): `GroupState`'s
//!   per-command functions (P-5, P-8, P-9, OPC-1/2, D-3); the vote is apply's return value
//!   (P-6). The leader-only side of apply clears lock-table entries (P-7), answers duplicate
//!   requests attached to a pending proposal and re-evaluates parked reads.
//!
//! Leader-only state (`Volatile`: `max_read_ts`, lock table, LC-2 gate, parked requests,
//! in-doubt queries, periodic tasks) is dropped on every role event but `LeaderReady` and is
//! never in a snapshot.
//!
//! R-2 (ReadIndex) is the host's: a `Get` or `Scan` is first answered `Admission::Read`, and
//! served only when the host admits it again with `Context::read_confirmed` (a heartbeat
//! round after its arrival confirmed the leadership, and the read index is applied). This
//! machine refuses reads and everything else until its no-op is applied (`LeaderReady`,
//! commit-protocol.md §5.3, §6 step 4).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use decree_host::{
    Admission, Applied, ApplyContext, Context, Destination, PeerError, ReplicatedMachine, ReplyTo,
    Requester, RoleEvent, SnapshotError,
};
use decree_proto::txn::{
    Abort, Ack, Commit, CommitLocal, CoordinatorState, Get, Isolation, NoReason, OutcomeReply,
    Prepare, PreparedReply, PreparedState, QueryPrepared, QueryTxn, Row, Scan, ScanRows,
    TxnOutcome, TxnStateReply, UncertaintyRestart, ValueReply, Vote, VoteReply, Write,
};
use decree_proto::{Bound, ErrorResponse, Request, RequestId, Response};
use decree_types::{GroupId, HlcTimestamp, Key, KeyRange, NodeId, Term, TxnId};

use crate::command::{CommitLocalCmd, ParticipantCommand, PrepareCmd};
use crate::config::{ms, ParticipantConfig};
use crate::mvcc::{bounds, Blocker, ReadOutcome, ScanOutcome};
use crate::snapshot;
use crate::state::{GroupState, TxnState};

/// What the machine answers: a protocol response or a typed refusal.
pub type ParticipantResponse = Result<Response, ErrorResponse>;

/// One participant group: the replicated [`GroupState`] and the leader-only state on top.
#[derive(Debug)]
pub struct ParticipantGroup {
    config: ParticipantConfig,
    state: GroupState,
    v: Volatile,
    /// Monotonic time of the latest call that carried one. Apply has no clock; the leader-only
    /// deadlines it arms (in-doubt queries of a transaction it just prepared) start here.
    last_now_ns: u64,
}

/// The replicated state, as [`ParticipantGroup::snapshot`] takes it: an O(1) clone sharing structure
/// with the live state, immutable, encoded later (on another thread, in the node shell).
#[derive(Debug)]
pub struct ParticipantSnapshot {
    state: GroupState,
}

/// Leader-only, volatile state (commit-protocol.md §2.2): reset on every role event but
/// `LeaderReady`, never snapshotted.
#[derive(Debug, Default)]
struct Volatile {
    /// The term this replica leads, if it leads.
    term: Option<Term>,
    /// Its no-op is applied: it may serve (commit-protocol.md §5.3).
    ready: bool,
    /// LC-2: no prepare or 1PC commit is evaluated before this monotonic time (§6 step 2).
    gate_open_ns: u64,
    /// R-3 / P-3: the highest read timestamp served in this term.
    max_read_ts: HlcTimestamp,
    /// P-3 / F-1: the highest closed timestamp this leader proposed.
    closed_ts_proposed: HlcTimestamp,
    /// P-4: proposed, not yet applied prepares and 1PC commits, by transaction.
    pending: BTreeMap<TxnId, Pending>,
    /// P-4: the keys the pending proposals write, with the owner and its `P`.
    pending_keys: BTreeMap<Key, (TxnId, HlcTimestamp)>,
    /// Requests that arrived before the no-op applied, and prepares and 1PC commits held by
    /// the LC-2 gate, in arrival order.
    gated: VecDeque<(Requester, ReplyTo, Request)>,
    /// Reads waiting on a pending prepare or a prepared intent (R-4, RI-2), by arrival.
    reads: BTreeMap<u64, WaitingRead>,
    next_read: u64,
    /// In-doubt queries to coordinators (REC-3 for prepared transactions, RI-3 for readers).
    queries: BTreeMap<TxnId, Query>,
    /// When the next `CloseTimestamp` (F-1), `Gc` (REC-7(c)) and `Expire` scan (D-3) are due.
    next_close_ns: Option<u64>,
    next_gc_ns: Option<u64>,
    next_expire_ns: Option<u64>,
}

/// A pending proposal in the lock table (P-4).
#[derive(Debug)]
struct Pending {
    prepare_ts: HlcTimestamp,
    write_keys: Vec<Key>,
    read_spans: Vec<KeyRange>,
    /// Duplicates of the request that arrived while it was pending: answered with the same
    /// reply when it applies (D-7).
    waiters: Vec<ReplyTo>,
}

/// A parked read.
#[derive(Debug)]
struct WaitingRead {
    reply_to: ReplyTo,
    read: ReadRequest,
}

/// A read, with its limit: `U`, or `read_ts` when the read has no uncertainty interval.
#[derive(Clone, Debug)]
enum ReadRequest {
    Get { key: Key, read_ts: HlcTimestamp, limit: HlcTimestamp },
    Scan { span: KeyRange, read_ts: HlcTimestamp, limit: HlcTimestamp, max_rows: usize },
}

/// What evaluating a read gave.
enum Eval {
    Done(Response),
    /// Blocked by a pending prepare in the lock table: it applies soon.
    WaitPending,
    /// Blocked by a prepared intent: wait, then ask its coordinator (RI-2, RI-3).
    WaitIntent(Blocker),
}

/// One in-doubt transaction the leader asks its coordinator about (REC-3, RI-3).
#[derive(Debug)]
struct Query {
    next_ns: u64,
    backoff_ns: u64,
    in_flight: Option<RequestId>,
    /// A `Commit`/`Abort` from the coordinator's answer is proposed; nothing more to ask.
    resolving: bool,
}

impl ParticipantGroup {
    /// Group `group`, serving `range` of range-map version `range_version`, empty.
    pub fn new(
        group: GroupId,
        range: KeyRange,
        range_version: u64,
        config: ParticipantConfig,
    ) -> Self {
        ParticipantGroup {
            config,
            state: GroupState::new(group, range, range_version),
            v: Volatile::default(),
            last_now_ns: 0,
        }
    }

    /// The replicated state.
    pub fn state(&self) -> &GroupState {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &ParticipantConfig {
        &self.config
    }

    /// the highest read timestamp this leader served in its term (leader-only).
    pub fn max_read_ts(&self) -> HlcTimestamp {
        self.v.max_read_ts
    }

    /// LC-2: the monotonic time from which this leader evaluates prepares; `None` unless it
    /// leads.
    pub fn lc2_gate_open_ns(&self) -> Option<u64> {
        self.v.term.map(|_| self.v.gate_open_ns)
    }

    /// Number of proposals in the pending-prepare lock table (P-4).
    pub fn pending_prepares(&self) -> usize {
        self.v.pending.len()
    }

    /// Number of parked requests (blocked reads and prepares held by LC-2).
    pub fn waiting_requests(&self) -> usize {
        self.v.reads.len() + self.v.gated.len()
    }

    /// Transactions the leader will ask (or is asking) their coordinator about.
    pub fn in_doubt_queries(&self) -> Vec<TxnId> {
        self.v.queries.keys().copied().collect()
    }

    // -----------------------------------------------------------------------------------------
    // Admission, per request
    // -----------------------------------------------------------------------------------------

    fn admit_get(
        &mut self,
        cx: &mut Context<'_, Self>,
        reply_to: ReplyTo,
        get: Get,
    ) -> Admission<Self> {
        let read = match self.check_read(cx, &get.key, None, get.read_ts, get.uncertainty_limit) {
            Ok(limit) => ReadRequest::Get { key: get.key, read_ts: get.read_ts, limit },
            Err(e) => return Admission::Reply(Err(e)),
        };
        self.serve_read(cx, reply_to, read)
    }

    fn admit_scan(
        &mut self,
        cx: &mut Context<'_, Self>,
        reply_to: ReplyTo,
        scan: Scan,
    ) -> Admission<Self> {
        if scan.limit == 0 {
            return Admission::Reply(Err(ErrorResponse::invalid_argument("scan limit is 0")));
        }
        if let Err(e) = Bound::ScanRows.check(scan.limit as usize) {
            return Admission::Reply(Err(ErrorResponse::LimitExceeded(e)));
        }
        let read = match self.check_read(
            cx,
            &scan.span.start,
            Some(&scan.span),
            scan.read_ts,
            scan.uncertainty_limit,
        ) {
            Ok(limit) => ReadRequest::Scan {
                span: scan.span,
                read_ts: scan.read_ts,
                limit,
                max_rows: scan.limit as usize,
            },
            Err(e) => return Admission::Reply(Err(e)),
        };
        self.serve_read(cx, reply_to, read)
    }

    /// and the bad-input checks of a read; returns its limit (`U` or `read_ts`).
    fn check_read(
        &mut self,
        cx: &mut Context<'_, Self>,
        key: &Key,
        span: Option<&KeyRange>,
        read_ts: HlcTimestamp,
        uncertainty_limit: Option<HlcTimestamp>,
    ) -> Result<HlcTimestamp, ErrorResponse> {
        match span {
            Some(span) => self.check_span(span)?,
            None => self.check_key(key)?,
        }
        let limit = uncertainty_limit.unwrap_or(read_ts);
        if limit < read_ts {
            return Err(ErrorResponse::invalid_argument("uncertainty limit is below read_ts"));
        }
        if read_ts < self.state.mvcc().gc_threshold() {
            return Err(ErrorResponse::BelowGcThreshold {
                gc_threshold: self.state.mvcc().gc_threshold(),
            });
        }
        // R-1 / HLC-3: a read timestamp further ahead than max_offset is refused; otherwise the
        // clock moves past it, so every later P exceeds it (§5.1 note, TS-7).
        cx.observe(read_ts)?;
        // every later prepare of this term picks P above it (P-3).
        self.v.max_read_ts = self.v.max_read_ts.max(read_ts);
        Ok(limit)
    }

    /// Evaluates a read; parks it if blocked (R-4, RI-2).
    fn serve_read(
        &mut self,
        cx: &mut Context<'_, Self>,
        reply_to: ReplyTo,
        read: ReadRequest,
    ) -> Admission<Self> {
        match self.evaluate(&read) {
            Eval::Done(response) => Admission::Reply(Ok(response)),
            eval => {
                if self.waiting_requests() >= self.config.waiting_requests_max {
                    return Admission::Reply(Err(ErrorResponse::Busy {
                        retry_after_ms: self.config.read_wait_before_query_ms,
                    }));
                }
                if let Eval::WaitIntent(blocker) = eval {
                    self.want_query(
                        blocker.txn_id,
                        cx.now_ns() + ms(self.config.read_wait_before_query_ms),
                    );
                }
                self.v.next_read += 1;
                self.v.reads.insert(self.v.next_read, WaitingRead { reply_to, read });
                Admission::Later
            }
        }
    }

    fn admit_prepare(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        prepare: Prepare,
    ) -> Admission<Self> {
        if let Err(e) = self.check_txn_request(&prepare.writes, &prepare.read_spans) {
            return Admission::Reply(Err(e));
        }
        if let Err(e) = cx.observe(prepare.read_ts) {
            return Admission::Reply(Err(e.into()));
        }
        // D-7: a transaction already in txn_table gets its stored vote without a proposal.
        if let Some(entry) = self.state.txn(prepare.txn_id) {
            if let TxnState::Committed { .. } = entry.state {
                return Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                    "{} is already decided commit here; a Prepare for it is stale",
                    prepare.txn_id
                ))));
            }
            let vote = GroupState::stored_vote(entry);
            return Admission::Reply(Ok(vote_response(prepare.txn_id, vote)));
        }
        if let Some(pending) = self.v.pending.get_mut(&prepare.txn_id) {
            pending.waiters.push(reply_to);
            return Admission::Later;
        }
        // LC-2 (commit-protocol.md §6 step 2): no prepare is evaluated during the wait.
        if cx.now_ns() < self.v.gate_open_ns {
            return self.hold(requester, reply_to, Request::Prepare(prepare));
        }
        let writes_keys: Vec<Key> = prepare.writes.iter().map(|w| w.key.clone()).collect();
        let refused = self.pending_conflict(prepare.txn_id, &writes_keys, &prepare.read_spans);
        let prepare_ts = self.pick_prepare_ts(cx, prepare.read_ts);
        self.add_pending(prepare.txn_id, prepare_ts, writes_keys, &prepare.read_spans, refused);
        let command = ParticipantCommand::Prepare(PrepareCmd {
            txn_id: prepare.txn_id,
            coord_group: prepare.coord_group,
            read_ts: prepare.read_ts,
            prepare_ts,
            writes: prepare.writes,
            read_spans: prepare.read_spans,
            refused,
        });
        Admission::Propose {
            command,
            on_lost: Err(ErrorResponse::unavailable(
                "leadership lost before the prepare applied; its vote is unknown, resend",
            )),
        }
    }

    fn admit_commit_local(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        local: CommitLocal,
    ) -> Admission<Self> {
        if let Err(e) = self.check_txn_request(&local.writes, &local.read_spans) {
            return Admission::Reply(Err(e));
        }
        if let Err(e) = cx.observe(local.read_ts) {
            return Admission::Reply(Err(e.into()));
        }
        // OPC-2: a known (client_id, seq) or txn_id gets the stored result.
        if let Some(answer) = self.state.local_dedupe(local.txn_id, local.client_id, local.seq) {
            return Admission::Reply(
                answer.map(|(txn_id, outcome)| outcome_response(txn_id, outcome)),
            );
        }
        if let Some(pending) = self.v.pending.get_mut(&local.txn_id) {
            pending.waiters.push(reply_to);
            return Admission::Later;
        }
        if cx.now_ns() < self.v.gate_open_ns {
            return self.hold(requester, reply_to, Request::CommitLocal(local));
        }
        // Snapshot isolation validates writes only (§6.1).
        let read_spans = match local.isolation {
            Isolation::Serializable => local.read_spans,
            Isolation::Snapshot => Vec::new(),
        };
        let write_keys: Vec<Key> = local.writes.iter().map(|w| w.key.clone()).collect();
        let refused = self.pending_conflict(local.txn_id, &write_keys, &read_spans);
        let commit_ts = self.pick_prepare_ts(cx, local.read_ts);
        self.add_pending(local.txn_id, commit_ts, write_keys, &read_spans, refused);
        let command = ParticipantCommand::CommitLocal(CommitLocalCmd {
            txn_id: local.txn_id,
            client_id: local.client_id,
            seq: local.seq,
            read_ts: local.read_ts,
            commit_ts,
            writes: local.writes,
            read_spans,
            refused,
        });
        let on_lost = Ok(outcome_response(local.txn_id, TxnOutcome::Ambiguous));
        Admission::Propose { command, on_lost }
    }

    fn admit_commit(&mut self, cx: &mut Context<'_, Self>, commit: Commit) -> Admission<Self> {
        let Commit { txn_id, commit_ts } = commit;
        match self.state.txn(txn_id).map(|e| &e.state) {
            Some(TxnState::Committed { commit_ts: c }) if *c == commit_ts => {
                Admission::Reply(Ok(Response::Ack(Ack { txn_id })))
            }
            Some(TxnState::Prepared { prepare_ts, .. }) if *prepare_ts <= commit_ts => {
                // TS-7: the clock passes C (a genuine HLC reading, TS-6).
                if let Err(e) = cx.observe(commit_ts) {
                    return Admission::Reply(Err(e.into()));
                }
                Admission::Propose {
                    command: ParticipantCommand::Commit { txn_id, commit_ts },
                    on_lost: Err(ErrorResponse::unavailable(
                        "leadership lost before the commit applied; resend",
                    )),
                }
            }
            // D-10: no entry at all. A PREPARED entry never expires and a correct coordinator
            // sends Commit only to a group that voted Yes (its vote left after the prepare
            // applied, P-6; this leader applied everything before serving), so the entry was
            // COMMITTED here and expired (D-3): the commit is applied. Acknowledging lets the
            // coordinator record the ack and compact its record (REC-7(a)).
            None => Admission::Reply(Ok(Response::Ack(Ack { txn_id }))),
            // A Commit this group voted no for or aborted (INV-A1), or with a second C, is a
            // protocol violation; apply would stop the replica, so it is refused here, as bad
            // input from the network, and never proposed.
            other => Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                "Commit of {txn_id} at {commit_ts} refused: txn_table holds {other:?} \
                 (INV-A1/INV-A2)"
            )))),
        }
    }

    fn admit_abort(&mut self, abort: Abort) -> Admission<Self> {
        let Abort { txn_id } = abort;
        match self.state.txn(txn_id).map(|e| &e.state) {
            Some(TxnState::Rejected { .. } | TxnState::Aborted) => {
                Admission::Reply(Ok(Response::Ack(Ack { txn_id })))
            }
            Some(TxnState::Committed { commit_ts }) => {
                Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                    "Abort of {txn_id} refused: it is committed here at {commit_ts} (INV-A1)"
                ))))
            }
            // PREPARED, or unknown: the tombstone of P-9.
            Some(TxnState::Prepared { .. }) | None => Admission::Propose {
                command: ParticipantCommand::Abort { txn_id },
                on_lost: Err(ErrorResponse::unavailable(
                    "leadership lost before the abort applied; resend",
                )),
            },
        }
    }

    fn admit_query_prepared(&self, query: QueryPrepared) -> Admission<Self> {
        let state = match self.state.txn(query.txn_id).map(|e| &e.state) {
            Some(TxnState::Prepared { prepare_ts, .. }) => {
                PreparedState::Prepared { prepare_ts: *prepare_ts }
            }
            Some(TxnState::Committed { commit_ts }) => {
                PreparedState::Committed { commit_ts: *commit_ts }
            }
            Some(TxnState::Rejected { .. } | TxnState::Aborted) => PreparedState::Aborted,
            None if query.prevent => {
                return Admission::Reply(Err(ErrorResponse::invalid_argument(
                    "QueryPrepared with prevent: parallel commit is not in v1 (D-9)",
                )))
            }
            None => PreparedState::Unknown,
        };
        Admission::Reply(Ok(Response::Prepared(PreparedReply { txn_id: query.txn_id, state })))
    }

    /// Keeps a request until the leader is ready (§5.3) or the LC-2 gate opens, or answers
    /// `Busy` when too many wait.
    fn hold(
        &mut self,
        requester: Requester,
        reply_to: ReplyTo,
        request: Request,
    ) -> Admission<Self> {
        if self.waiting_requests() >= self.config.waiting_requests_max {
            let retry_after_ms =
                self.v.gate_open_ns.saturating_sub(self.last_now_ns).div_ceil(1_000_000);
            return Admission::Reply(Err(ErrorResponse::Busy { retry_after_ms }));
        }
        self.v.gated.push_back((requester, reply_to, request));
        Admission::Later
    }

    // -----------------------------------------------------------------------------------------
    // Leader-only helpers
    // -----------------------------------------------------------------------------------------

    /// P-3 / TS-3: `P = max(hlc.now(), read_ts.next(), max_read_ts.next(),
    /// closed_ts_proposed.next())`, and above the applied closed timestamp.
    fn pick_prepare_ts(
        &mut self,
        cx: &mut Context<'_, Self>,
        read_ts: HlcTimestamp,
    ) -> HlcTimestamp {
        cx.clock_now()
            .max(read_ts.next())
            .max(self.v.max_read_ts.next())
            .max(self.v.closed_ts_proposed.next())
            .max(self.state.closed_ts().next())
    }

    /// P-2 against the lock table: a pending proposal of another transaction that writes a key
    /// this one writes or reads, or read-locks a key this one writes (conflict matrix, row
    /// "pending prepare").
    fn pending_conflict(
        &self,
        txn_id: TxnId,
        write_keys: &[Key],
        read_spans: &[KeyRange],
    ) -> Option<NoReason> {
        let foreign_write = write_keys
            .iter()
            .any(|k| self.v.pending_keys.get(k).is_some_and(|(owner, _)| *owner != txn_id));
        let foreign_read_lock = write_keys.iter().any(|k| {
            self.v
                .pending
                .iter()
                .any(|(owner, p)| *owner != txn_id && p.read_spans.iter().any(|s| s.contains(k)))
        });
        let foreign_write_in_span = read_spans.iter().any(|s| {
            self.v.pending_keys.range::<[u8], _>(bounds(s)).any(|(_, (owner, _))| *owner != txn_id)
        });
        (foreign_write || foreign_read_lock || foreign_write_in_span)
            .then_some(NoReason::PendingPrepareConflict)
    }

    /// P-4: the proposal enters the lock table (its keys only if it is not refused: a refused
    /// proposal writes nothing, so it blocks nobody).
    fn add_pending(
        &mut self,
        txn_id: TxnId,
        prepare_ts: HlcTimestamp,
        write_keys: Vec<Key>,
        read_spans: &[KeyRange],
        refused: Option<NoReason>,
    ) {
        let (write_keys, read_spans) = match refused {
            Some(_) => (Vec::new(), Vec::new()),
            None => (write_keys, read_spans.to_vec()),
        };
        for key in &write_keys {
            self.v.pending_keys.insert(key.clone(), (txn_id, prepare_ts));
        }
        self.v
            .pending
            .insert(txn_id, Pending { prepare_ts, write_keys, read_spans, waiters: Vec::new() });
    }

    /// P-7: the proposal applied; its lock-table entries go. Returns the duplicates waiting.
    fn take_pending(&mut self, txn_id: TxnId) -> Vec<ReplyTo> {
        let Some(pending) = self.v.pending.remove(&txn_id) else { return Vec::new() };
        for key in &pending.write_keys {
            if self.v.pending_keys.get(key).is_some_and(|(owner, _)| *owner == txn_id) {
                self.v.pending_keys.remove(key);
            }
        }
        pending.waiters
    }

    /// on applied state and the lock table.
    fn evaluate(&self, read: &ReadRequest) -> Eval {
        match read {
            ReadRequest::Get { key, read_ts, limit } => {
                if self.v.pending_keys.get(key).is_some_and(|(_, p)| p <= limit) {
                    return Eval::WaitPending;
                }
                match self.state.mvcc().read(key, *read_ts, *limit) {
                    ReadOutcome::Value { value, version_ts } => {
                        Eval::Done(Response::Value(ValueReply {
                            value: value.map(<[u8]>::to_vec),
                            version_ts,
                        }))
                    }
                    ReadOutcome::Uncertain { ts } => {
                        Eval::Done(Response::UncertaintyRestart(UncertaintyRestart {
                            new_read_ts: ts,
                        }))
                    }
                    ReadOutcome::Blocked(blocker) => Eval::WaitIntent(blocker),
                }
            }
            ReadRequest::Scan { span, read_ts, limit, max_rows } => {
                if self.v.pending_keys.range::<[u8], _>(bounds(span)).any(|(_, (_, p))| p <= limit)
                {
                    return Eval::WaitPending;
                }
                match self.state.mvcc().scan(span, *read_ts, *limit, *max_rows) {
                    ScanOutcome::Rows { rows, resume_from } => {
                        Eval::Done(Response::ScanRows(ScanRows {
                            rows: rows
                                .into_iter()
                                .map(|(key, value, version_ts)| Row { key, value, version_ts })
                                .collect(),
                            resume_from,
                        }))
                    }
                    ScanOutcome::Uncertain { ts } => {
                        Eval::Done(Response::UncertaintyRestart(UncertaintyRestart {
                            new_read_ts: ts,
                        }))
                    }
                    ScanOutcome::Blocked(blocker) => Eval::WaitIntent(blocker),
                }
            }
        }
    }

    /// Re-evaluates every parked read after an entry applied (leader only): answered reads
    /// leave; reads now blocked by a prepared intent ask its coordinator after RI-2's bound.
    fn retry_reads(&mut self, cx: &mut ApplyContext<'_, Self>) {
        let mut done = Vec::new();
        let mut blockers = BTreeSet::new();
        for (seq, waiting) in &self.v.reads {
            match self.evaluate(&waiting.read) {
                Eval::Done(response) => {
                    cx.reply(waiting.reply_to, Ok(response));
                    done.push(*seq);
                }
                Eval::WaitIntent(blocker) => {
                    blockers.insert(blocker.txn_id);
                }
                Eval::WaitPending => {}
            }
        }
        for seq in done {
            self.v.reads.remove(&seq);
        }
        let at = self.last_now_ns + ms(self.config.read_wait_before_query_ms);
        for txn_id in blockers {
            self.want_query(txn_id, at);
        }
    }

    /// Asks `txn_id`'s coordinator no later than `at_ns` (REC-3, RI-3).
    fn want_query(&mut self, txn_id: TxnId, at_ns: u64) {
        let backoff_ns = ms(self.config.in_doubt_query_after_ms).max(1);
        let query = self.v.queries.entry(txn_id).or_insert(Query {
            next_ns: at_ns,
            backoff_ns,
            in_flight: None,
            resolving: false,
        });
        query.next_ns = query.next_ns.min(at_ns);
    }

    /// Hands the held requests back to the host, in arrival order, to be admitted again.
    fn open_gate(&mut self, cx: &mut Context<'_, Self>) {
        let gated = std::mem::take(&mut self.v.gated);
        for (requester, reply_to, request) in gated {
            cx.readmit(requester, reply_to, request);
        }
    }

    /// Sends the due in-doubt queries (REC-3, RI-3), with exponential backoff.
    fn send_queries(&mut self, cx: &mut Context<'_, Self>) {
        let now = cx.now_ns();
        let cap_ns = ms(self.config.in_doubt_query_backoff_max_ms);
        let due: Vec<TxnId> = self
            .v
            .queries
            .iter()
            .filter(|(_, q)| !q.resolving && q.next_ns <= now)
            .map(|(id, _)| *id)
            .collect();
        for txn_id in due {
            let Some(TxnState::Prepared { coord_group, read_ts, .. }) =
                self.state.txn(txn_id).map(|e| e.state.clone())
            else {
                // Decided meanwhile.
                self.v.queries.remove(&txn_id);
                continue;
            };
            let request = Request::QueryTxn(QueryTxn { txn_id, read_ts, push_above: None });
            let request_id = cx.send(Destination::LeaderOf(coord_group), request);
            if let Some(query) = self.v.queries.get_mut(&txn_id) {
                query.in_flight = Some(request_id);
                query.next_ns = now + query.backoff_ns;
                query.backoff_ns = query.backoff_ns.saturating_mul(2).min(cap_ns).max(1);
            }
        }
    }

    /// The periodic entries of a leader: F-1 closed timestamps, REC-7(c) GC, D-3 expiry.
    fn periodic(&mut self, cx: &mut Context<'_, Self>) {
        let now = cx.now_ns();
        if self.v.next_close_ns.is_some_and(|t| t <= now) {
            self.v.next_close_ns = Some(now + ms(self.config.close_interval_ms));
            // F-1: now − closed_ts_lag, but below every pending P.
            let clock = cx.clock_now();
            let mut closed = HlcTimestamp::new(
                clock.wall_ns.saturating_sub(ms(self.config.closed_ts_lag_ms)),
                0,
            );
            if let Some(min_pending) = self.v.pending.values().map(|p| p.prepare_ts).min() {
                closed = closed.min(HlcTimestamp::new(min_pending.wall_ns.saturating_sub(1), 0));
            }
            if closed > self.v.closed_ts_proposed.max(self.state.closed_ts()) {
                self.v.closed_ts_proposed = closed;
                cx.propose(ParticipantCommand::CloseTimestamp { closed_ts: closed }, None);
            }
        }
        if self.v.next_gc_ns.is_some_and(|t| t <= now) {
            self.v.next_gc_ns = Some(now + ms(self.config.gc_interval_ms));
            cx.propose(ParticipantCommand::Gc, None);
        }
        if self.v.next_expire_ns.is_some_and(|t| t <= now) {
            self.v.next_expire_ns = Some(now + ms(self.config.expire_scan_interval_ms));
            let clock = cx.clock_now();
            let (txn_ids, client_ids) =
                self.state.expired(&self.config, clock, self.config.expire_batch_max);
            if !txn_ids.is_empty() || !client_ids.is_empty() {
                cx.propose(ParticipantCommand::Expire { txn_ids, client_ids }, None);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Bad input (typed errors; the group keeps serving)
    // -----------------------------------------------------------------------------------------

    fn check_key(&self, key: &Key) -> Result<(), ErrorResponse> {
        if key.is_empty() {
            return Err(ErrorResponse::invalid_argument("empty key"));
        }
        Bound::KeyBytes.check(key.len()).map_err(ErrorResponse::LimitExceeded)?;
        if !self.state.range().contains(key) {
            return Err(ErrorResponse::KeyOutOfRange { key: key.clone() });
        }
        Ok(())
    }

    fn check_span(&self, span: &KeyRange) -> Result<(), ErrorResponse> {
        Bound::KeyBytes.check(span.start.len()).map_err(ErrorResponse::LimitExceeded)?;
        if let Some(end) = &span.end {
            Bound::KeyBytes.check(end.len()).map_err(ErrorResponse::LimitExceeded)?;
            if *end < span.start {
                return Err(ErrorResponse::invalid_argument("key range ends before it starts"));
            }
        }
        let range = self.state.range();
        if span.start < range.start {
            return Err(ErrorResponse::KeyOutOfRange { key: span.start.clone() });
        }
        match (&range.end, &span.end) {
            (Some(range_end), None) => Err(ErrorResponse::KeyOutOfRange { key: range_end.clone() }),
            (Some(range_end), Some(end)) if end > range_end => {
                Err(ErrorResponse::KeyOutOfRange { key: range_end.clone() })
            }
            _ => Ok(()),
        }
    }

    fn check_txn_request(
        &self,
        writes: &[Write],
        read_spans: &[KeyRange],
    ) -> Result<(), ErrorResponse> {
        Bound::WritesPerTxn.check(writes.len()).map_err(ErrorResponse::LimitExceeded)?;
        Bound::ReadSpansPerTxn.check(read_spans.len()).map_err(ErrorResponse::LimitExceeded)?;
        let mut keys = BTreeSet::new();
        let mut bytes = 0usize;
        for write in writes {
            self.check_key(&write.key)?;
            if let Some(value) = &write.value {
                Bound::ValueBytes.check(value.len()).map_err(ErrorResponse::LimitExceeded)?;
                bytes += value.len();
            }
            bytes += write.key.len();
            if !keys.insert(&write.key) {
                return Err(ErrorResponse::invalid_argument(format!(
                    "key {} is written twice",
                    write.key
                )));
            }
        }
        if bytes > decree_types::limits::TXN_WRITE_BYTES_MAX {
            return Err(ErrorResponse::invalid_argument(format!(
                "the transaction writes {bytes} bytes, more than TXN_WRITE_BYTES_MAX"
            )));
        }
        read_spans.iter().try_for_each(|s| self.check_span(s))
    }
}

impl ReplicatedMachine for ParticipantGroup {
    type Command = ParticipantCommand;
    type Request = Request;
    type Response = ParticipantResponse;
    type Snapshot = ParticipantSnapshot;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Request,
    ) -> Admission<Self> {
        self.last_now_ns = cx.now_ns();
        if !self.v.ready {
            // LC-2 (protocol.md §3.6, commit-protocol.md §5.3): nothing is served before the
            // leader's own no-op applied. The request waits for LeaderReady (the host redirects it if leadership is lost
            // first): a coordinator that found this new leader is answered as soon as it
            // serves, not after its next retransmission.
            return self.hold(requester, reply_to, request);
        }
        match request {
            // R-2 / LC-2 (commit-protocol.md §6 step 1): a snapshot read is served only once a
            // ReadIndex round confirmed this leadership (RAFT-3); the host then admits it
            // again with `read_confirmed`, and it may still wait on an intent.
            Request::Get(get) if cx.read_confirmed().is_none() => {
                Admission::Read(Request::Get(get))
            }
            Request::Scan(scan) if cx.read_confirmed().is_none() => {
                Admission::Read(Request::Scan(scan))
            }
            Request::Get(get) => self.admit_get(cx, reply_to, get),
            Request::Scan(scan) => self.admit_scan(cx, reply_to, scan),
            Request::Prepare(prepare) => self.admit_prepare(cx, requester, reply_to, prepare),
            Request::CommitLocal(local) => self.admit_commit_local(cx, requester, reply_to, local),
            Request::Commit(commit) => self.admit_commit(cx, commit),
            Request::Abort(abort) => self.admit_abort(abort),
            Request::QueryPrepared(query) => self.admit_query_prepared(query),
            other => Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                "{} is not served by a participant group",
                other.kind()
            )))),
        }
    }

    fn apply(
        &mut self,
        cx: &mut ApplyContext<'_, Self>,
        entry: Applied<ParticipantCommand>,
    ) -> Option<ParticipantResponse> {
        let proposed_at = entry.proposed_at;
        let leader = cx.is_leader();
        let reply = match entry.command {
            ParticipantCommand::Prepare(cmd) => {
                let vote = self.state.apply_prepare(&self.config, proposed_at, &cmd);
                let reply = Ok(vote_response(cmd.txn_id, vote));
                let waiters = self.take_pending(cmd.txn_id);
                if leader {
                    for waiter in waiters {
                        cx.reply(waiter, reply.clone());
                    }
                    // REC-3: a prepared transaction is asked about after in_doubt_query_after.
                    if matches!(
                        self.state.txn(cmd.txn_id).map(|e| &e.state),
                        Some(TxnState::Prepared { .. })
                    ) {
                        let at = self.last_now_ns + ms(self.config.in_doubt_query_after_ms);
                        self.want_query(cmd.txn_id, at);
                    }
                }
                Some(reply)
            }
            ParticipantCommand::Commit { txn_id, commit_ts } => {
                self.state.apply_commit(proposed_at, txn_id, commit_ts);
                self.v.queries.remove(&txn_id);
                Some(Ok(Response::Ack(Ack { txn_id })))
            }
            ParticipantCommand::Abort { txn_id } => {
                self.state.apply_abort(proposed_at, txn_id);
                self.v.queries.remove(&txn_id);
                Some(Ok(Response::Ack(Ack { txn_id })))
            }
            ParticipantCommand::CommitLocal(cmd) => {
                let reply = self
                    .state
                    .apply_commit_local(&self.config, proposed_at, &cmd)
                    .map(|(txn_id, outcome)| outcome_response(txn_id, outcome));
                let waiters = self.take_pending(cmd.txn_id);
                if leader {
                    for waiter in waiters {
                        cx.reply(waiter, reply.clone());
                    }
                }
                Some(reply)
            }
            ParticipantCommand::Expire { txn_ids, client_ids } => {
                self.state.apply_expire(&self.config, proposed_at, &txn_ids, &client_ids);
                None
            }
            ParticipantCommand::CloseTimestamp { closed_ts } => {
                self.state.apply_close(closed_ts);
                None
            }
            ParticipantCommand::Gc => {
                self.state.apply_gc(&self.config, proposed_at);
                None
            }
        };
        if leader && !self.v.reads.is_empty() {
            self.retry_reads(cx);
        }
        reply
    }

    fn on_role(&mut self, cx: &mut Context<'_, Self>, event: RoleEvent) {
        self.last_now_ns = cx.now_ns();
        let now = cx.now_ns();
        match event {
            RoleEvent::Leader { term } => {
                self.v = Volatile::default();
                self.v.term = Some(term);
                // LC-2 step 2: the wait starts when the election is won.
                self.v.gate_open_ns = now.saturating_add(self.config.lc2_wait_ns());
            }
            RoleEvent::LeaderReady { term } => {
                if self.v.term != Some(term) {
                    // A LeaderReady without its Leader event: start the wait now.
                    self.v = Volatile::default();
                    self.v.term = Some(term);
                    self.v.gate_open_ns = now.saturating_add(self.config.lc2_wait_ns());
                }
                self.v.ready = true;
                // What arrived before the no-op applied is admitted again, in arrival order
                // (prepares and 1PC commits go back behind the LC-2 gate if it is still shut).
                self.open_gate(cx);
                // Commit-protocol.md §5.3: re-arm in-doubt timers for every PREPARED entry.
                let at = now + ms(self.config.in_doubt_query_after_ms);
                let prepared: Vec<TxnId> = self
                    .state
                    .txns()
                    .filter(|(_, e)| matches!(e.state, TxnState::Prepared { .. }))
                    .map(|(id, _)| *id)
                    .collect();
                for txn_id in prepared {
                    self.want_query(txn_id, at);
                }
                let every = |interval_ms: u64| (interval_ms > 0).then(|| now + ms(interval_ms));
                self.v.next_close_ns = every(self.config.close_interval_ms);
                self.v.next_gc_ns = every(self.config.gc_interval_ms);
                self.v.next_expire_ns = every(self.config.expire_scan_interval_ms);
            }
            RoleEvent::Follower { .. } => self.v = Volatile::default(),
        }
    }

    fn handle_response(
        &mut self,
        cx: &mut Context<'_, Self>,
        request_id: RequestId,
        _from: NodeId,
        response: Result<ParticipantResponse, PeerError>,
    ) {
        self.last_now_ns = cx.now_ns();
        let Some(txn_id) =
            self.v.queries.iter().find(|(_, q)| q.in_flight == Some(request_id)).map(|(id, _)| *id)
        else {
            return;
        };
        let Some(TxnState::Prepared { coord_group, prepare_ts, .. }) =
            self.state.txn(txn_id).map(|e| e.state.clone())
        else {
            self.v.queries.remove(&txn_id);
            return;
        };
        let Some(query) = self.v.queries.get_mut(&txn_id) else { return };
        query.in_flight = None;
        match response {
            Ok(Ok(Response::TxnState(TxnStateReply { txn_id: answered, state })))
                if answered == txn_id =>
            {
                // REC-3: the participant never decides alone; it applies the coordinator's
                // decided outcome (INV-A4).
                match state {
                    CoordinatorState::Committed { commit_ts } if commit_ts >= prepare_ts => {
                        query.resolving = true;
                        // TS-7: the clock passes C. A C beyond max_offset is left to the
                        // coordinator's own Commit, which is checked at admission.
                        if cx.observe(commit_ts).is_ok() {
                            cx.propose(ParticipantCommand::Commit { txn_id, commit_ts }, None);
                        } else {
                            query.resolving = false;
                        }
                    }
                    CoordinatorState::Aborted => {
                        query.resolving = true;
                        cx.propose(ParticipantCommand::Abort { txn_id }, None);
                    }
                    // Pending, Staging, Pushed (not asked for), or a C below P (a protocol
                    // violation the coordinator's own Commit would be refused for): keep asking.
                    _ => {}
                }
            }
            Ok(Err(ErrorResponse::NotLeader { hint: Some(leader), .. })) => {
                cx.leader_hint(coord_group, leader);
                query.next_ns =
                    query.next_ns.min(cx.now_ns() + ms(self.config.read_wait_before_query_ms));
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        if !self.v.ready {
            return None;
        }
        let gate = (!self.v.gated.is_empty()).then_some(self.v.gate_open_ns);
        let queries = self.v.queries.values().filter(|q| !q.resolving).map(|q| q.next_ns).min();
        [gate, queries, self.v.next_close_ns, self.v.next_gc_ns, self.v.next_expire_ns]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, cx: &mut Context<'_, Self>) {
        self.last_now_ns = cx.now_ns();
        if !self.v.ready {
            return;
        }
        if cx.now_ns() >= self.v.gate_open_ns && !self.v.gated.is_empty() {
            self.open_gate(cx);
        }
        self.send_queries(cx);
        self.periodic(cx);
    }

    /// `NotLeader` with the known leader. The host gives no term here, so it is `Term(0)`:
    /// older than any real term, it never overrides a hint the requester has from elsewhere.
    fn redirect(_group: GroupId, leader: Option<NodeId>) -> ParticipantResponse {
        Err(ErrorResponse::NotLeader { hint: leader, term: Term(0) })
    }

    /// A view of the replicated state: O(1) to take (its maps are persistent and shared with
    /// the live state, which copies a node only when it next writes it), and immutable.
    fn snapshot(&self) -> ParticipantSnapshot {
        ParticipantSnapshot { state: self.state.clone() }
    }

    fn encode_snapshot(snapshot: &ParticipantSnapshot) -> Vec<u8> {
        snapshot::encode(&snapshot.state.view())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let image = snapshot::decode(bytes).map_err(SnapshotError)?;
        if image.group != self.state.group() {
            return Err(SnapshotError(format!(
                "snapshot of group {} offered to group {}",
                image.group,
                self.state.group()
            )));
        }
        self.state = GroupState::from_image(image).map_err(SnapshotError)?;
        Ok(())
    }

    fn digest(&self) -> u64 {
        snapshot::digest(&self.state.view())
    }
}

fn vote_response(txn_id: TxnId, vote: Vote) -> Response {
    Response::Vote(VoteReply { txn_id, vote })
}

fn outcome_response(txn_id: TxnId, outcome: TxnOutcome) -> Response {
    Response::Outcome(OutcomeReply { txn_id, outcome })
}
