//! [`CoordinatorGroup`]: the coordinator's [`ReplicatedMachine`] — the decision log and the
//! cluster map (replicated), and the two-phase-commit driver (leader-only).
//!
//! # The driver loop on the leader
//!
//! 1. `CommitTxn` is admitted (C-1): an *attempt* is created, `StartCommit` is proposed and,
//!    in parallel, `Prepare` goes to the leader of every participant group. The client's
//!    request is kept ([`Admission::Later`]).
//! 2. Votes arrive through [`ReplicatedMachine::handle_response`]. Once `StartCommit` has
//!    applied and every vote is `Yes`, `Decide(COMMIT)` is proposed with the client as its
//!    waiter; a `No`, or the `prepare_timeout` deadline (C-4), proposes `Decide(ABORT)`.
//! 3. `Decide` applies (C-3): the host answers the client with what apply returns (C-5); the
//!    attempt ends; `Commit{C}`/`Abort` goes to every participant, retransmitted with backoff
//!    until acknowledged (C-6).
//! 4. Acks are batched into one `RecordAcks` entry; when a record's last participant is
//!    recorded, `Compact` turns it into an outcome stub (C-7, REC-7(a), D-4).
//! 5. Every `expire_scan_interval`, tombstones and stubs past `max_txn_lifetime` are removed
//!    by one `Expire` entry (D-3).
//!
//! A new leader answers nothing until its no-op is applied ([`RoleEvent::LeaderReady`]); it
//! holds the requests that arrive before, then aborts every `PREPARING` record (REC-1, D-2)
//! and resumes phase two of every decided record not fully acknowledged (REC-2). All of the
//! driver's state is dropped on every other role event and is never in a snapshot.

use std::collections::{BTreeMap, BTreeSet};

use decree_host::{
    Admission, Applied, ApplyContext, Context, Destination, PeerError, ReplicatedMachine, ReplyTo,
    Requester, RoleEvent, SnapshotError,
};
use decree_proto::admin::{BlockingReason, ClusterStatusReply, InDoubtTxn};
use decree_proto::limits::{GROUPS_PER_TXN_MAX, IN_DOUBT_REPORTED_MAX};
use decree_proto::txn::{
    Abort, AbortReason, Ack, Commit, CommitTxn, CoordinatorState, Isolation, OutcomeReply, Prepare,
    Redirect, TxnOutcome, TxnStateReply, Vote, VoteReply,
};
use decree_proto::{ErrorResponse, Request, RequestId, Response};
use decree_types::{GroupId, HlcTimestamp, NodeId, Term, TxnId};
use serde::{Deserialize, Serialize};

use crate::cluster_map::ClusterMap;
use crate::config::{CoordinatorConfig, NS_PER_MS};
use crate::log::{
    Answer, CoordinatorCommand, Decision, DecisionLog, Outcome, Record, StartResult, TxnView,
};
use crate::placement::coordinator_for;

/// What the coordinator answers: a response, or a typed refusal.
pub type Reply = Result<Response, ErrorResponse>;

/// Clients attached to one attempt at most (a client retrying `CommitTxn` attaches again);
/// more are answered `Busy`.
const CLIENTS_PER_ATTEMPT_MAX: usize = 8;

/// Outstanding requests remembered per transaction (retransmissions of `Prepare`, `Commit`,
/// `Abort`); the oldest are forgotten beyond it, and a late answer to one is then ignored
/// (every message is idempotent, so the next retransmission gets the same answer).
const SENT_PER_TXN_MAX: usize = 4 * GROUPS_PER_TXN_MAX;

/// Redirects followed at once, in a row, for one request; further ones wait for the
/// retransmission timer.
const REDIRECT_HOPS_MAX: u8 = 3;

/// Format tag at the front of an encoded snapshot.
const SNAPSHOT_FORMAT: u8 = 1;

/// One coordinator group's state machine. See the module docs.
#[derive(Debug)]
pub struct CoordinatorGroup {
    group: GroupId,
    config: CoordinatorConfig,
    /// Replicated: every record (commit-protocol.md §2.1).
    log: DecisionLog,
    /// Replicated: the cluster map (DESIGN.md §11).
    map: ClusterMap,
    /// Leader-only, volatile.
    driver: Driver,
}

/// An immutable view of the replicated state (the decision log and the cluster map).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorSnapshot {
    log: DecisionLog,
    map: ClusterMap,
}

/// One in-doubt transaction as the operator sees it (`decree status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubtRecord {
    /// The transaction.
    pub txn_id: TxnId,
    /// How long since its record was created (or its `CommitTxn` admitted), ms.
    pub age_ms: u64,
    /// Its participant groups.
    pub participants: Vec<GroupId>,
    /// The participants that have not acknowledged the decision yet (decided records only).
    pub unacked: Vec<GroupId>,
    /// Why it is not finished.
    pub blocking: BlockingReason,
}

impl CoordinatorGroup {
    /// A replica of coordinator group `group` with the replicated state of an empty log:
    /// no records, and the cluster map `map` (the bootstrap description every replica is
    /// built from, so every replica agrees).
    pub fn new(group: GroupId, config: CoordinatorConfig, map: ClusterMap) -> Self {
        CoordinatorGroup {
            group,
            config,
            log: DecisionLog::default(),
            map,
            driver: Driver::default(),
        }
    }

    /// The decision log (replicated state).
    pub fn log(&self) -> &DecisionLog {
        &self.log
    }

    /// The cluster map (replicated state).
    pub fn cluster_map(&self) -> &ClusterMap {
        &self.map
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Transactions the leader is collecting votes for (leader-only state; 0 elsewhere).
    pub fn live_attempts(&self) -> usize {
        self.driver.attempts.len()
    }

    /// Transactions whose phase two the leader is driving (leader-only state).
    pub fn phase_two_in_flight(&self) -> usize {
        self.driver.phase_two.len()
    }

    /// Every in-doubt transaction this replica knows of, oldest first: records still
    /// `PREPARING` (awaiting votes while the leader has an attempt, awaiting the recovery
    /// decision otherwise), decided records not acknowledged by every participant, and, on
    /// the leader, attempts whose `StartCommit` has not applied yet. `now` is the HLC reading
    /// ages are measured against.
    pub fn in_doubt(&self, now: HlcTimestamp) -> Vec<InDoubtRecord> {
        let age_ms =
            |created: HlcTimestamp| now.wall_ns.saturating_sub(created.wall_ns) / NS_PER_MS;
        let mut out = Vec::new();
        for (txn_id, record) in self.log.iter() {
            match record {
                Record::Preparing { participants, created_at, .. } => {
                    let blocking = if self.driver.attempts.contains_key(&txn_id) {
                        BlockingReason::AwaitingVotes
                    } else {
                        BlockingReason::AwaitingDecision
                    };
                    out.push(InDoubtRecord {
                        txn_id,
                        age_ms: age_ms(*created_at),
                        participants: participants.clone(),
                        unacked: Vec::new(),
                        blocking,
                    });
                }
                Record::Decided { participants, created_at, .. }
                    if !record.unacked().is_empty() =>
                {
                    out.push(InDoubtRecord {
                        txn_id,
                        age_ms: age_ms(*created_at),
                        participants: participants.clone(),
                        unacked: record.unacked(),
                        blocking: BlockingReason::AwaitingAcks,
                    });
                }
                _ => {}
            }
        }
        for (txn_id, attempt) in &self.driver.attempts {
            if self.log.get(*txn_id).is_none() {
                out.push(InDoubtRecord {
                    txn_id: *txn_id,
                    age_ms: age_ms(attempt.started_at),
                    participants: attempt.work.keys().copied().collect(),
                    unacked: Vec::new(),
                    blocking: BlockingReason::AwaitingVotes,
                });
            }
        }
        out.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.txn_id.cmp(&b.txn_id)));
        out
    }

    /// The in-doubt list of [`Self::in_doubt`] in the wire's shape, at most `max`, with the
    /// number left off.
    pub fn in_doubt_report(&self, now: HlcTimestamp, max: usize) -> (Vec<InDoubtTxn>, u64) {
        let all = self.in_doubt(now);
        let omitted = all.len().saturating_sub(max) as u64;
        let list = all
            .into_iter()
            .take(max)
            .map(|r| InDoubtTxn {
                txn_id: r.txn_id,
                group: self.group,
                coord_group: self.group,
                prepare_ts: None,
                age_ms: r.age_ms,
                blocking: r.blocking,
            })
            .collect();
        (list, omitted)
    }
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

impl ReplicatedMachine for CoordinatorGroup {
    type Command = CoordinatorCommand;
    type Request = Request;
    type Response = Reply;
    type Snapshot = CoordinatorSnapshot;

    fn admit(
        &mut self,
        cx: &mut Context<'_, Self>,
        requester: Requester,
        reply_to: ReplyTo,
        request: Request,
    ) -> Admission<Self> {
        self.driver.now_ns = cx.now_ns();
        if !self.driver.ready {
            // REC-1 step 1: nothing is answered before the no-op applied; the request waits
            // for LeaderReady (or the host answers it with a redirect if leadership is lost).
            if self.driver.held.len() >= self.config.held_requests_max {
                return Admission::Reply(Err(ErrorResponse::Busy {
                    retry_after_ms: self.config.retransmit_initial_ms,
                }));
            }
            self.driver.held.push((requester, reply_to, request));
            return Admission::Later;
        }
        self.admit_ready(cx, reply_to, request)
    }

    fn apply(
        &mut self,
        cx: &mut ApplyContext<'_, Self>,
        entry: Applied<CoordinatorCommand>,
    ) -> Option<Reply> {
        // Leader-only follow-up work happens only on a ready leader; a new leader catches up
        // with everything applied before its no-op at LeaderReady (REC-1, REC-2).
        let lead = cx.is_leader() && self.driver.ready;
        let at = entry.proposed_at;
        match entry.command {
            CoordinatorCommand::StartCommit { txn_id, read_ts, participants } => {
                let life = self.config.max_txn_lifetime_ns();
                let result = self.log.start_commit(txn_id, read_ts, &participants, at, life);
                if lead {
                    self.after_start_commit(cx, txn_id, result);
                }
                None
            }
            CoordinatorCommand::Decide { txn_id, decision, answer } => {
                let (decided, view) = self.log.decide(txn_id, decision, at);
                if lead {
                    self.finish_attempt(cx, txn_id, view);
                    if decided {
                        self.start_phase_two(cx, txn_id);
                    }
                }
                Some(answer_for(txn_id, view, answer))
            }
            CoordinatorCommand::Tombstone { txn_id, reason, answer } => {
                let (_, view) = self.log.tombstone(txn_id, reason, at);
                if lead {
                    self.finish_attempt(cx, txn_id, view);
                }
                Some(answer_for(txn_id, view, answer))
            }
            CoordinatorCommand::RecordAcks { acks } => {
                let complete = self.log.record_acks(&acks);
                for (txn_id, _) in &acks {
                    self.driver.acks_unapplied.remove(txn_id);
                }
                if lead && !complete.is_empty() {
                    // REC-7(a): every participant applied the decision; keep only a stub.
                    cx.propose(CoordinatorCommand::Compact { txn_ids: complete }, None);
                }
                None
            }
            CoordinatorCommand::Compact { txn_ids } => {
                self.log.compact(&txn_ids);
                None
            }
            CoordinatorCommand::Expire { txn_ids } => {
                self.log.expire(&txn_ids, at, self.config.max_txn_lifetime_ns());
                None
            }
            CoordinatorCommand::ReplaceClusterMap { expected_version, map } => {
                // A map that fails its checks was never proposed by a correct leader; it is
                // refused identically on every replica, leaving the map unchanged.
                let _ = self.map.replace(expected_version, map);
                None
            }
        }
    }

    fn on_role(&mut self, cx: &mut Context<'_, Self>, event: RoleEvent) {
        match event {
            RoleEvent::Leader { term } => {
                self.driver = Driver { term, now_ns: cx.now_ns(), ..Driver::default() };
            }
            RoleEvent::Follower { .. } => {
                self.driver = Driver { now_ns: cx.now_ns(), ..Driver::default() };
            }
            RoleEvent::LeaderReady { term } => {
                self.driver.term = term;
                self.driver.ready = true;
                self.driver.now_ns = cx.now_ns();
                self.recover(cx);
                // The held requests are admitted again by the host, in arrival order.
                for (requester, reply_to, request) in std::mem::take(&mut self.driver.held) {
                    cx.readmit(requester, reply_to, request);
                }
            }
        }
    }

    /// C-1, C-6: a participant group this node also hosts has a new leader; whatever this
    /// leader still waits for from that group (votes, phase-two acks) is sent again now, to
    /// the new leader, instead of at the next retransmission (the copy the old leader got may
    /// be lost with it). The resends are idempotent; the backoff timers are left as they are.
    fn on_leader_seen(&mut self, cx: &mut Context<'_, Self>, group: GroupId, leader: NodeId) {
        if !self.driver.ready {
            return;
        }
        self.driver.now_ns = cx.now_ns();
        self.driver.hints.insert(group, leader);
        let waiting_votes: Vec<TxnId> = self
            .driver
            .attempts
            .iter()
            .filter(|(_, a)| !a.decision_proposed)
            .map(|(t, _)| *t)
            .collect();
        for txn_id in waiting_votes {
            self.resend_prepares(cx, txn_id, Some(group));
        }
        let deciding: Vec<TxnId> = self.driver.phase_two.keys().copied().collect();
        for txn_id in deciding {
            self.resend_phase_two(cx, txn_id, Some(group));
        }
    }

    fn handle_response(
        &mut self,
        cx: &mut Context<'_, Self>,
        request_id: RequestId,
        from: NodeId,
        response: Result<Reply, PeerError>,
    ) {
        self.driver.now_ns = cx.now_ns();
        let Some(sent) = self.driver.forget_request(request_id) else {
            return; // forgotten: its attempt or phase two is over, or leadership changed
        };
        match response {
            Ok(Ok(Response::Vote(VoteReply { txn_id, vote }))) if sent.is_prepare(txn_id) => {
                self.driver.hints.insert(sent.group, from);
                self.on_vote(cx, txn_id, sent.group, vote);
            }
            Ok(Ok(Response::Ack(Ack { txn_id }))) if sent.is_phase_two(txn_id) => {
                self.driver.hints.insert(sent.group, from);
                self.on_ack(cx, txn_id, sent.group);
            }
            Ok(Ok(Response::Redirect(Redirect { leader }))) => self.on_redirect(cx, sent, leader),
            Ok(Err(ErrorResponse::NotLeader { hint, .. })) => self.on_redirect(cx, sent, hint),
            // Anything else (a refusal, no route, an answer of the wrong kind): the
            // retransmission timer sends again.
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        let d = &self.driver;
        if !d.ready {
            return None;
        }
        let attempts = d
            .attempts
            .values()
            .filter(|a| a.timers_running())
            .map(|a| a.deadline_ns.min(a.resend_at_ns));
        let phase_two = d.phase_two.values().map(|p| p.resend_at_ns);
        attempts.chain(phase_two).chain(d.ack_flush_at_ns).chain(d.next_expire_scan_ns).min()
    }

    fn handle_timeout(&mut self, cx: &mut Context<'_, Self>) {
        let now = cx.now_ns();
        self.driver.now_ns = now;
        if !self.driver.ready {
            return;
        }
        if self.driver.ack_flush_at_ns.is_some_and(|t| t <= now) {
            self.flush_acks(cx);
        }
        self.attempt_timers(cx, now);
        self.phase_two_timers(cx, now);
        if self.driver.next_expire_scan_ns.is_some_and(|t| t <= now) {
            self.driver.next_expire_scan_ns =
                Some(now + self.config.expire_scan_interval_ms * NS_PER_MS);
            let life = self.config.max_txn_lifetime_ns();
            let expired = self.log.expirable(cx.clock_now(), life, self.config.expire_batch_max);
            if !expired.is_empty() {
                cx.propose(CoordinatorCommand::Expire { txn_ids: expired }, None);
            }
            // Decided records left out of phase two when it was full (REC-2).
            self.resume_phase_two(cx);
        }
    }

    fn redirect(_group: GroupId, leader: Option<NodeId>) -> Reply {
        // The host knows the term and may refine it; the machine is not asked on a follower.
        Err(ErrorResponse::NotLeader { hint: leader, term: Term(0) })
    }

    /// O(1) in the number of records: the decision log is a persistent map, shared with the
    /// live one until apply next writes it. The cluster map is copied; it is bounded by the
    /// cluster's configuration (groups × replicas and node addresses), not by the workload.
    fn snapshot(&self) -> CoordinatorSnapshot {
        CoordinatorSnapshot { log: self.log.clone(), map: self.map.clone() }
    }

    fn encode_snapshot(snapshot: &CoordinatorSnapshot) -> Vec<u8> {
        // Postcard cannot fail on these types into a Vec: no I/O, no buffer limit, and every
        // type is plain data with derived serde. An error would be a bug here, not input.
        let mut bytes = vec![SNAPSHOT_FORMAT];
        bytes.extend(postcard::to_allocvec(snapshot).expect("snapshot types always serialize"));
        bytes
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let Some((&format, body)) = bytes.split_first() else {
            return Err(SnapshotError("empty coordinator snapshot".into()));
        };
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotError(format!("unknown coordinator snapshot format {format}")));
        }
        let snapshot: CoordinatorSnapshot =
            postcard::from_bytes(body).map_err(|e| SnapshotError(e.to_string()))?;
        snapshot.map.check().map_err(|e| SnapshotError(e.to_string()))?;
        snapshot.log.check().map_err(SnapshotError)?;
        self.log = snapshot.log;
        self.map = snapshot.map;
        // A leader never installs a snapshot; whatever the driver held is for a state that is
        // gone.
        self.driver = Driver { now_ns: self.driver.now_ns, ..Driver::default() };
        Ok(())
    }

    fn digest(&self) -> u64 {
        fnv1a(&Self::encode_snapshot(&self.snapshot()))
    }
}

// ---------------------------------------------------------------------------------------------
// Admission (ready leader)
// ---------------------------------------------------------------------------------------------

impl CoordinatorGroup {
    fn admit_ready(
        &mut self,
        cx: &mut Context<'_, Self>,
        reply_to: ReplyTo,
        request: Request,
    ) -> Admission<Self> {
        match request {
            Request::CommitTxn(commit) => self.admit_commit(cx, reply_to, commit),
            Request::TxnStatus(status) => {
                if let Err(e) = self.check_owner(status.txn_id) {
                    return Admission::Reply(Err(e));
                }
                // D-5: an outcome older than the retention may be forgotten: say so rather
                // than presume abort.
                if self.is_expired(status.read_ts, cx.clock_now()) {
                    return Admission::Reply(outcome_reply(status.txn_id, TxnOutcome::Expired));
                }
                self.rec4(status.txn_id, Answer::Outcome)
            }
            // QueryTxn names its coordinator by the intent's coord_group, not by placement:
            // answered here whatever `coordinator_for` says.
            Request::QueryTxn(query) => self.rec4(query.txn_id, Answer::TxnState),
            Request::FetchRangeMap(_) => {
                let (own, node, term) = (self.group, cx.node(), self.driver.term);
                let hints = &self.driver.hints;
                let reply = self.map.reply(self.group, |g| {
                    if g == own {
                        Some((node, term))
                    } else {
                        hints.get(&g).map(|n| (*n, Term(0)))
                    }
                });
                Admission::Reply(Ok(Response::RangeMap(reply)))
            }
            Request::ClusterStatus(status) => {
                let max = (status.in_doubt_max as usize).min(IN_DOUBT_REPORTED_MAX);
                let (in_doubt, in_doubt_omitted) = self.in_doubt_report(cx.clock_last(), max);
                // The host adds the groups it hosts; the machine knows only its transactions.
                let reply = ClusterStatusReply { groups: Vec::new(), in_doubt, in_doubt_omitted };
                Admission::Reply(Ok(Response::ClusterStatus(reply)))
            }
            other => Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                "{} is not served by a coordinator group",
                other.kind()
            )))),
        }
    }

    /// §4.1: reply from the record, attach to the live attempt, or start one (C-1).
    fn admit_commit(
        &mut self,
        cx: &mut Context<'_, Self>,
        reply_to: ReplyTo,
        commit: CommitTxn,
    ) -> Admission<Self> {
        let txn_id = commit.txn_id;
        if let Err(e) = commit.check_shape() {
            return Admission::Reply(Err(e));
        }
        if let Err(e) = self.check_owner(txn_id) {
            return Admission::Reply(Err(e));
        }
        if commit.mode.parallel_commit || commit.mode.commit_wait {
            // D-9 (parallel commit) and §6.3 (commit-wait) are later milestones.
            return Admission::Reply(Err(ErrorResponse::invalid_argument(
                "parallel commit and commit-wait are not supported by this coordinator",
            )));
        }
        if let Some(g) = commit.per_group.iter().find(|w| !self.map.is_participant(w.group)) {
            return Admission::Reply(Err(ErrorResponse::invalid_argument(format!(
                "{} serves no key range in cluster map version {}",
                g.group,
                self.map.version()
            ))));
        }
        // HLC-2: the clock moves past read_ts, so the C this leader picks exceeds it (INV-A2).
        if let Err(e) = cx.observe(commit.read_ts) {
            return Admission::Reply(Err(e.into()));
        }
        // D-3, D-5: a transaction this old may have been decided and its stub expired; a new
        // attempt would be refused at apply and tombstoned, telling Aborted about what may
        // have committed. Say the outcome is forgotten instead (apply still refuses the
        // StartCommit of a request that ages between here and there).
        if self.is_expired(commit.read_ts, cx.clock_now()) {
            return Admission::Reply(outcome_reply(txn_id, TxnOutcome::Expired));
        }
        match self.log.view(txn_id) {
            TxnView::Decided(outcome) => {
                Admission::Reply(outcome_reply(txn_id, outcome.to_client()))
            }
            TxnView::Preparing if !self.driver.attempts.contains_key(&txn_id) => {
                // A record of an earlier term that REC-1 is aborting: the same conditional
                // abort, answered once applied.
                self.propose_abort(txn_id, AbortReason::CoordinatorFailover, Answer::Outcome)
            }
            TxnView::Preparing | TxnView::Absent => {
                if let Some(attempt) = self.driver.attempts.get_mut(&txn_id) {
                    // C-1 idempotency: a retried CommitTxn waits for the same decision.
                    if attempt.clients.len() >= CLIENTS_PER_ATTEMPT_MAX {
                        return Admission::Reply(Err(ErrorResponse::Busy {
                            retry_after_ms: self.config.retransmit_initial_ms,
                        }));
                    }
                    attempt.clients.push(reply_to);
                    return Admission::Later;
                }
                if self.driver.attempts.len() >= self.config.attempts_max {
                    return Admission::Reply(Err(ErrorResponse::Busy {
                        retry_after_ms: self.config.retransmit_initial_ms,
                    }));
                }
                self.start_attempt(cx, reply_to, commit);
                Admission::Later
            }
        }
    }

    /// Is `read_ts` older than `now - max_txn_lifetime` (D-3, D-5)?
    fn is_expired(&self, read_ts: HlcTimestamp, now: HlcTimestamp) -> bool {
        read_ts.add_wall_ns(self.config.max_txn_lifetime_ns()) < now
    }

    /// Refuses a client request for a transaction another coordinator group decides: two
    /// groups must never both decide one `txn_id`.
    fn check_owner(&self, txn_id: TxnId) -> Result<(), ErrorResponse> {
        // The map lists at least one coordinator group (type invariant of `ClusterMap`).
        let owner = coordinator_for(txn_id, self.map.coordinator_groups()).unwrap_or(self.group);
        if owner == self.group {
            Ok(())
        } else {
            Err(ErrorResponse::invalid_argument(format!(
                "transaction {txn_id} is decided by coordinator group {owner}, not {}",
                self.group
            )))
        }
    }

    /// C-1: propose `StartCommit` and, in parallel, send `Prepare` to every participant.
    fn start_attempt(&mut self, cx: &mut Context<'_, Self>, reply_to: ReplyTo, commit: CommitTxn) {
        let txn_id = commit.txn_id;
        let snapshot_isolation = commit.mode.isolation == Isolation::Snapshot;
        let work: BTreeMap<GroupId, Prepare> = commit
            .per_group
            .into_iter()
            .map(|w| {
                let prepare = Prepare {
                    txn_id,
                    coord_group: self.group,
                    read_ts: commit.read_ts,
                    writes: w.writes,
                    // Snapshot isolation validates writes only (§6.1).
                    read_spans: if snapshot_isolation { Vec::new() } else { w.read_spans },
                };
                (w.group, prepare)
            })
            .collect();
        let now = cx.now_ns();
        let participants: Vec<GroupId> = work.keys().copied().collect();
        cx.propose(
            CoordinatorCommand::StartCommit { txn_id, read_ts: commit.read_ts, participants },
            None,
        );
        for (group, prepare) in &work {
            self.driver.send(cx, txn_id, *group, Kind::Prepare, Request::Prepare(prepare.clone()));
        }
        let attempt = Attempt {
            work,
            start_applied: false,
            votes: BTreeMap::new(),
            abort_wanted: None,
            decision_proposed: false,
            waiter: None,
            clients: vec![reply_to],
            started_at: cx.clock_now(),
            deadline_ns: now + self.config.prepare_timeout_ms * NS_PER_MS,
            resend_interval_ms: self.config.retransmit_initial_ms,
            resend_at_ns: now + self.config.retransmit_initial_ms * NS_PER_MS,
        };
        self.driver.attempts.insert(txn_id, attempt);
    }

    /// The REC-4 answer table (commit-protocol.md §5.2), from applied state only.
    fn rec4(&mut self, txn_id: TxnId, answer: Answer) -> Admission<Self> {
        let now = self.driver.now_ns;
        match self.log.view(txn_id) {
            TxnView::Decided(outcome) => {
                Admission::Reply(answer_for(txn_id, TxnView::Decided(outcome), answer))
            }
            TxnView::Preparing => match self.driver.attempts.get(&txn_id) {
                Some(a) if now < a.deadline_ns => Admission::Reply(pending(txn_id, answer)),
                Some(_) => self.propose_abort(txn_id, AbortReason::PrepareTimeout, answer),
                None => self.propose_abort(txn_id, AbortReason::CoordinatorFailover, answer),
            },
            // StartCommit in flight in leader memory.
            TxnView::Absent if self.driver.attempts.contains_key(&txn_id) => {
                Admission::Reply(pending(txn_id, answer))
            }
            // Presumed abort: the tombstone is applied before anyone is told (INV-A5).
            TxnView::Absent => Admission::Propose {
                command: CoordinatorCommand::Tombstone {
                    txn_id,
                    reason: AbortReason::PresumedAbort,
                    answer,
                },
                on_lost: lost(txn_id, answer),
            },
        }
    }

    fn propose_abort(&self, txn_id: TxnId, reason: AbortReason, answer: Answer) -> Admission<Self> {
        Admission::Propose {
            command: CoordinatorCommand::Decide {
                txn_id,
                decision: Decision::Abort { reason },
                answer,
            },
            on_lost: lost(txn_id, answer),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: votes, decisions, phase two, recovery
// ---------------------------------------------------------------------------------------------

impl CoordinatorGroup {
    /// The leader's side of an applied `StartCommit`.
    fn after_start_commit(&mut self, fx: &mut impl Fx, txn_id: TxnId, result: StartResult) {
        match result {
            StartResult::Created | StartResult::Exists(TxnView::Preparing) => {
                if let Some(attempt) = self.driver.attempts.get_mut(&txn_id) {
                    attempt.start_applied = true;
                }
                self.try_decide(fx, txn_id);
            }
            // A tombstone or an earlier decision blocks it: the attempt ends with that outcome
            // (§4.1).
            StartResult::Exists(view) => self.finish_attempt(fx, txn_id, view),
            StartResult::TooOld => {
                // D-3: nothing may create a PREPARING record for it any more. The client is
                // told Aborted only once a tombstone is applied (INV-A5).
                let Some(attempt) = self.driver.attempts.get_mut(&txn_id) else { return };
                if attempt.decision_proposed {
                    return;
                }
                attempt.decision_proposed = true;
                attempt.waiter = attempt.clients.first().copied();
                let command = CoordinatorCommand::Tombstone {
                    txn_id,
                    reason: AbortReason::TxnTooOld,
                    answer: Answer::Outcome,
                };
                fx.propose(command, attempt.waiter.map(|w| (w, lost(txn_id, Answer::Outcome))));
            }
        }
    }

    /// C-2, C-3, C-4: propose the decision once it is known and `StartCommit` applied.
    fn try_decide(&mut self, fx: &mut impl Fx, txn_id: TxnId) {
        let Some(attempt) = self.driver.attempts.get_mut(&txn_id) else { return };
        if attempt.decision_proposed || !attempt.start_applied {
            return;
        }
        let no = attempt.votes.iter().find_map(|(g, v)| match v {
            Vote::No { reason } => Some(AbortReason::VotedNo { group: *g, reason: *reason }),
            Vote::Yes { .. } => None,
        });
        let decision = if let Some(reason) = no.or(attempt.abort_wanted) {
            Decision::Abort { reason }
        } else if attempt.votes.len() == attempt.work.len() {
            let prepare_ts_max = attempt
                .votes
                .values()
                .filter_map(|v| match v {
                    Vote::Yes { prepare_ts } => Some(*prepare_ts),
                    Vote::No { .. } => None,
                })
                .max()
                .unwrap_or(HlcTimestamp::ZERO);
            Decision::Commit { prepare_ts_max }
        } else {
            return;
        };
        attempt.decision_proposed = true;
        attempt.waiter = attempt.clients.first().copied();
        let command = CoordinatorCommand::Decide { txn_id, decision, answer: Answer::Outcome };
        // C-5: the client is answered with what the Decide entry's apply returns.
        fx.propose(command, attempt.waiter.map(|w| (w, lost(txn_id, Answer::Outcome))));
    }

    /// The record of `txn_id` is final (`view`): the attempt ends, and every client attached
    /// to it is told — except the one waiting on the attempt's own proposal, whose entry
    /// answers it when it applies.
    fn finish_attempt(&mut self, fx: &mut impl Fx, txn_id: TxnId, view: TxnView) {
        if !matches!(view, TxnView::Decided(_)) {
            return; // not final: the attempt goes on (its clients are told only outcomes)
        }
        let Some(attempt) = self.driver.attempts.remove(&txn_id) else { return };
        self.driver.forget_txn(txn_id, Kind::Prepare);
        for client in attempt.clients {
            if Some(client) != attempt.waiter {
                fx.reply(client, answer_for(txn_id, view, Answer::Outcome));
            }
        }
    }

    /// §4.5: the first vote per group counts.
    fn on_vote(&mut self, cx: &mut Context<'_, Self>, txn_id: TxnId, group: GroupId, vote: Vote) {
        let Some(attempt) = self.driver.attempts.get_mut(&txn_id) else { return };
        if attempt.decision_proposed || !attempt.work.contains_key(&group) {
            return;
        }
        if let Vote::Yes { prepare_ts } = vote {
            // HLC-2: C, read from this clock, is then above P even if the envelope's clock
            // was not (C-2). A P too far ahead (HLC-3) still counts: C >= P regardless.
            let _ = cx.observe(prepare_ts);
        }
        attempt.votes.entry(group).or_insert(vote);
        self.try_decide(cx, txn_id);
    }

    /// C-6: send the decision to every participant that has not acknowledged it, and keep
    /// retransmitting until each does.
    fn start_phase_two(&mut self, fx: &mut impl Fx, txn_id: TxnId) {
        if self.driver.phase_two.contains_key(&txn_id)
            || self.driver.phase_two.len() >= self.config.phase_two_max
        {
            return;
        }
        let Some(record @ Record::Decided { outcome, .. }) = self.log.get(txn_id) else { return };
        let unacked: BTreeSet<GroupId> = record.unacked().into_iter().collect();
        if unacked.is_empty() {
            return;
        }
        let request = match *outcome {
            Outcome::Committed { commit_ts } => {
                // HLC-4: the envelope's clock must be at least C, also on a new leader whose
                // clock is behind the one that chose C.
                fx.observe(commit_ts);
                Request::Commit(Commit { txn_id, commit_ts })
            }
            Outcome::Aborted { .. } => Request::Abort(Abort { txn_id }),
        };
        for group in &unacked {
            self.driver.send(fx, txn_id, *group, Kind::PhaseTwo, request.clone());
        }
        let interval = self.config.retransmit_initial_ms;
        self.driver.phase_two.insert(
            txn_id,
            PhaseTwo {
                request,
                unacked,
                resend_interval_ms: interval,
                resend_at_ns: self.driver.now_ns + interval * NS_PER_MS,
            },
        );
    }

    /// §4.8: an acknowledgement joins the next `RecordAcks` batch (C-7).
    fn on_ack(&mut self, cx: &mut Context<'_, Self>, txn_id: TxnId, group: GroupId) {
        let Some(p2) = self.driver.phase_two.get_mut(&txn_id) else { return };
        if !p2.unacked.remove(&group) {
            return;
        }
        if p2.unacked.is_empty() {
            self.driver.phase_two.remove(&txn_id);
            self.driver.forget_txn(txn_id, Kind::PhaseTwo);
            self.driver.acks_unapplied.insert(txn_id);
        }
        self.driver.ack_batch.insert((txn_id, group));
        if self.driver.ack_batch.len() >= self.config.ack_batch_max {
            self.flush_acks(cx);
        } else if self.driver.ack_flush_at_ns.is_none() {
            self.driver.ack_flush_at_ns =
                Some(cx.now_ns() + self.config.ack_batch_delay_ms * NS_PER_MS);
        }
    }

    fn flush_acks(&mut self, cx: &mut Context<'_, Self>) {
        self.driver.ack_flush_at_ns = None;
        if self.driver.ack_batch.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut self.driver.ack_batch).into_iter().collect();
        cx.propose(CoordinatorCommand::RecordAcks { acks }, None);
    }

    /// A participant replica is not the leader: follow its hint at once if it is news, or
    /// wait for the retransmission timer.
    fn on_redirect(&mut self, cx: &mut Context<'_, Self>, sent: Sent, leader: Option<NodeId>) {
        let Some(leader) = leader else { return };
        if self.driver.hints.get(&sent.group) == Some(&leader) || sent.hops >= REDIRECT_HOPS_MAX {
            // Already followed, or followed too often in a row: replicas that disagree about
            // their leader (an election in progress) are asked again by the timer, not in a
            // tight loop.
            return;
        }
        self.driver.hints.insert(sent.group, leader);
        cx.leader_hint(sent.group, leader);
        let request = match sent.kind {
            Kind::Prepare => {
                let Some(attempt) = self.driver.attempts.get(&sent.txn_id) else { return };
                if attempt.decision_proposed || attempt.votes.contains_key(&sent.group) {
                    return;
                }
                let Some(prepare) = attempt.work.get(&sent.group) else { return };
                Request::Prepare(prepare.clone())
            }
            Kind::PhaseTwo => {
                let Some(p2) = self.driver.phase_two.get(&sent.txn_id) else { return };
                if !p2.unacked.contains(&sent.group) {
                    return;
                }
                p2.request.clone()
            }
        };
        self.driver.send_hop(cx, Sent { hops: sent.hops + 1, ..sent }, request);
    }

    /// C-4 deadlines and `Prepare` retransmission.
    fn attempt_timers(&mut self, cx: &mut Context<'_, Self>, now: u64) {
        let due: Vec<TxnId> = self
            .driver
            .attempts
            .iter()
            .filter(|(_, a)| a.timers_running() && (a.deadline_ns <= now || a.resend_at_ns <= now))
            .map(|(t, _)| *t)
            .collect();
        for txn_id in due {
            let Some(attempt) = self.driver.attempts.get_mut(&txn_id) else { continue };
            if attempt.deadline_ns <= now {
                // C-4: votes missing after prepare_timeout. If StartCommit has not applied
                // yet, the abort is proposed as soon as it does.
                attempt.abort_wanted.get_or_insert(AbortReason::PrepareTimeout);
                self.try_decide(cx, txn_id);
                continue;
            }
            attempt.resend_interval_ms = self.config.backoff_ms(attempt.resend_interval_ms);
            attempt.resend_at_ns = now + attempt.resend_interval_ms * NS_PER_MS;
            self.resend_prepares(cx, txn_id, None);
        }
    }

    /// C-1: `txn_id`'s `Prepare` again to every group whose vote is missing (or to `only`, if
    /// its vote is).
    fn resend_prepares(
        &mut self,
        cx: &mut Context<'_, Self>,
        txn_id: TxnId,
        only: Option<GroupId>,
    ) {
        let Some(attempt) = self.driver.attempts.get(&txn_id) else { return };
        let missing: Vec<(GroupId, Prepare)> = attempt
            .work
            .iter()
            .filter(|(g, _)| !attempt.votes.contains_key(g) && only.is_none_or(|o| o == **g))
            .map(|(g, p)| (*g, p.clone()))
            .collect();
        for (group, prepare) in missing {
            self.driver.send(cx, txn_id, group, Kind::Prepare, Request::Prepare(prepare));
        }
    }

    /// C-6: `txn_id`'s `Commit`/`Abort` again to every group that has not acknowledged it (or
    /// to `only`, if it has not).
    fn resend_phase_two(
        &mut self,
        cx: &mut Context<'_, Self>,
        txn_id: TxnId,
        only: Option<GroupId>,
    ) {
        let Some(p2) = self.driver.phase_two.get(&txn_id) else { return };
        let request = p2.request.clone();
        let groups: Vec<GroupId> =
            p2.unacked.iter().copied().filter(|g| only.is_none_or(|o| o == *g)).collect();
        if groups.is_empty() {
            return;
        }
        if let Request::Commit(c) = &request {
            let _ = cx.observe(c.commit_ts);
        }
        for group in groups {
            self.driver.send(cx, txn_id, group, Kind::PhaseTwo, request.clone());
        }
    }

    /// C-6 retransmission of `Commit`/`Abort`, with backoff, forever (INV-A8).
    fn phase_two_timers(&mut self, cx: &mut Context<'_, Self>, now: u64) {
        let due: Vec<TxnId> = self
            .driver
            .phase_two
            .iter()
            .filter(|(_, p)| p.resend_at_ns <= now)
            .map(|(t, _)| *t)
            .collect();
        for txn_id in due {
            let Some(p2) = self.driver.phase_two.get_mut(&txn_id) else { continue };
            p2.resend_interval_ms = self.config.backoff_ms(p2.resend_interval_ms);
            p2.resend_at_ns = now + p2.resend_interval_ms * NS_PER_MS;
            self.resend_phase_two(cx, txn_id, None);
        }
    }

    /// REC-1 and REC-2, once the new leader's no-op applied (commit-protocol.md §5.1).
    fn recover(&mut self, cx: &mut Context<'_, Self>) {
        let mut preparing = Vec::new();
        for (txn_id, record) in self.log.iter() {
            if matches!(record, Record::Preparing { .. }) {
                preparing.push(txn_id);
            }
        }
        // REC-1, D-2: the client was never told Committed, so abort is always allowed.
        for txn_id in preparing {
            let decision = Decision::Abort { reason: AbortReason::CoordinatorFailover };
            cx.propose(
                CoordinatorCommand::Decide { txn_id, decision, answer: Answer::Outcome },
                None,
            );
        }
        // REC-2 (and a Compact lost with the old leader).
        self.resume_phase_two(cx);
        self.driver.next_expire_scan_ns =
            Some(cx.now_ns() + self.config.expire_scan_interval_ms * NS_PER_MS);
    }

    /// Phase two for every decided record not fully acknowledged and not yet driven; a
    /// `Compact` for the fully acknowledged ones still full records.
    fn resume_phase_two(&mut self, cx: &mut Context<'_, Self>) {
        let mut resend = Vec::new();
        let mut compact = Vec::new();
        for (txn_id, record) in self.log.iter() {
            if let Record::Decided { .. } = record {
                if record.unacked().is_empty() {
                    compact.push(txn_id);
                } else if !self.driver.phase_two.contains_key(&txn_id)
                    && !self.driver.acks_unapplied.contains(&txn_id)
                {
                    resend.push(txn_id);
                }
            }
        }
        for txn_id in resend {
            self.start_phase_two(cx, txn_id);
        }
        if !compact.is_empty() {
            cx.propose(CoordinatorCommand::Compact { txn_ids: compact }, None);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Leader-only state
// ---------------------------------------------------------------------------------------------

/// Everything the leader keeps in memory only (commit-protocol.md §2.1 "Leader-only").
/// Replaced by a fresh one on every role event but `LeaderReady`.
#[derive(Debug, Default)]
struct Driver {
    /// The leader's no-op applied (REC-1): answers are given only then.
    ready: bool,
    /// The term this replica leads (0 when it does not).
    term: Term,
    /// Monotonic time of the latest call with a context (apply has none; its deadlines are
    /// counted from here).
    now_ns: u64,
    /// Requests admitted before the no-op applied, answered at `LeaderReady`.
    held: Vec<(Requester, ReplyTo, Request)>,
    attempts: BTreeMap<TxnId, Attempt>,
    phase_two: BTreeMap<TxnId, PhaseTwo>,
    /// What each outstanding request was for.
    sent: BTreeMap<RequestId, Sent>,
    /// The outstanding requests of each transaction, oldest first.
    sent_by_txn: BTreeMap<TxnId, Vec<RequestId>>,
    /// Leaders of participant groups as learned from answers and redirects.
    hints: BTreeMap<GroupId, NodeId>,
    /// Acknowledgements for the next `RecordAcks` entry.
    ack_batch: BTreeSet<(TxnId, GroupId)>,
    /// Transactions every participant acknowledged whose `RecordAcks` has not applied yet:
    /// the periodic REC-2 sweep leaves them alone.
    acks_unapplied: BTreeSet<TxnId>,
    ack_flush_at_ns: Option<u64>,
    next_expire_scan_ns: Option<u64>,
}

/// One transaction collecting votes (commit-protocol.md §2.1 `Attempt`).
#[derive(Debug)]
struct Attempt {
    /// The `Prepare` for each participant group (kept for retransmission).
    work: BTreeMap<GroupId, Prepare>,
    /// `StartCommit` applied (the model's `!start_pending`).
    start_applied: bool,
    /// Votes of this term, first per group.
    votes: BTreeMap<GroupId, Vote>,
    /// An abort decided before `StartCommit` applied (timeout).
    abort_wanted: Option<AbortReason>,
    /// `Decide` (or a `Tombstone`) proposed for this attempt.
    decision_proposed: bool,
    /// The client waiting on that proposal's apply result (C-5).
    waiter: Option<ReplyTo>,
    /// Every client waiting for the outcome (the first request and retries).
    clients: Vec<ReplyTo>,
    /// The leader's HLC when the attempt started (its age for the operator).
    started_at: HlcTimestamp,
    /// `started + prepare_timeout` (C-4).
    deadline_ns: u64,
    resend_interval_ms: u64,
    resend_at_ns: u64,
}

impl Attempt {
    /// Are its deadline and `Prepare` retransmission still armed? Not once its decision is
    /// proposed, nor once an abort waits only for `StartCommit` to apply.
    fn timers_running(&self) -> bool {
        !self.decision_proposed && self.abort_wanted.is_none()
    }
}

/// A decided transaction whose decision is being delivered (C-6).
#[derive(Debug)]
struct PhaseTwo {
    /// `Commit{C}` or `Abort`.
    request: Request,
    unacked: BTreeSet<GroupId>,
    resend_interval_ms: u64,
    resend_at_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Prepare,
    PhaseTwo,
}

/// What an outstanding request was for.
#[derive(Clone, Copy, Debug)]
struct Sent {
    txn_id: TxnId,
    group: GroupId,
    kind: Kind,
    /// Redirects followed at once to get here (0 for a first send or a timer's resend).
    hops: u8,
}

impl Sent {
    fn is_prepare(&self, txn_id: TxnId) -> bool {
        self.kind == Kind::Prepare && self.txn_id == txn_id
    }

    fn is_phase_two(&self, txn_id: TxnId) -> bool {
        self.kind == Kind::PhaseTwo && self.txn_id == txn_id
    }
}

impl Driver {
    /// Sends `request` to the leader of `group` and remembers what it was for.
    fn send(
        &mut self,
        fx: &mut impl Fx,
        txn_id: TxnId,
        group: GroupId,
        kind: Kind,
        request: Request,
    ) {
        self.send_hop(fx, Sent { txn_id, group, kind, hops: 0 }, request);
    }

    /// [`Driver::send`] for a request that follows `sent.hops` redirects.
    fn send_hop(&mut self, fx: &mut impl Fx, sent: Sent, request: Request) {
        let txn_id = sent.txn_id;
        let request_id = fx.send(sent.group, request);
        self.sent.insert(request_id, sent);
        let ids = self.sent_by_txn.entry(txn_id).or_default();
        ids.push(request_id);
        if ids.len() > SENT_PER_TXN_MAX {
            let oldest = ids.remove(0);
            self.sent.remove(&oldest);
        }
    }

    /// Takes the record of an answered request.
    fn forget_request(&mut self, request_id: RequestId) -> Option<Sent> {
        let sent = self.sent.remove(&request_id)?;
        if let Some(ids) = self.sent_by_txn.get_mut(&sent.txn_id) {
            ids.retain(|id| *id != request_id);
            if ids.is_empty() {
                self.sent_by_txn.remove(&sent.txn_id);
            }
        }
        Some(sent)
    }

    /// Forgets the outstanding requests of one kind for `txn_id`; late answers are ignored.
    fn forget_txn(&mut self, txn_id: TxnId, kind: Kind) {
        let Some(ids) = self.sent_by_txn.get_mut(&txn_id) else { return };
        let sent = &mut self.sent;
        ids.retain(|id| match sent.get(id) {
            Some(s) if s.kind == kind => {
                sent.remove(id);
                false
            }
            _ => true,
        });
        if ids.is_empty() {
            self.sent_by_txn.remove(&txn_id);
        }
    }
}

/// The effects the driver needs, from either kind of context (admission and timers have a
/// [`Context`], apply an [`ApplyContext`]).
trait Fx {
    fn propose(&mut self, command: CoordinatorCommand, waiter: Option<(ReplyTo, Reply)>);
    fn send(&mut self, group: GroupId, request: Request) -> RequestId;
    fn reply(&mut self, to: ReplyTo, response: Reply);
    /// HLC-2 where a clock is at hand; apply has none (and needs none: see the callers).
    fn observe(&mut self, ts: HlcTimestamp);
}

impl Fx for Context<'_, CoordinatorGroup> {
    fn propose(&mut self, command: CoordinatorCommand, waiter: Option<(ReplyTo, Reply)>) {
        Context::propose(self, command, waiter);
    }
    fn send(&mut self, group: GroupId, request: Request) -> RequestId {
        Context::send(self, Destination::LeaderOf(group), request)
    }
    fn reply(&mut self, to: ReplyTo, response: Reply) {
        Context::reply(self, to, response);
    }
    fn observe(&mut self, ts: HlcTimestamp) {
        let _ = Context::observe(self, ts);
    }
}

impl Fx for ApplyContext<'_, CoordinatorGroup> {
    fn propose(&mut self, command: CoordinatorCommand, waiter: Option<(ReplyTo, Reply)>) {
        ApplyContext::propose(self, command, waiter);
    }
    fn send(&mut self, group: GroupId, request: Request) -> RequestId {
        ApplyContext::send(self, Destination::LeaderOf(group), request)
    }
    fn reply(&mut self, to: ReplyTo, response: Reply) {
        ApplyContext::reply(self, to, response);
    }
    /// During apply on a ready leader, a `Commit{C}` follows a `Decide` this leader proposed,
    /// so its clock is already at or above `C`.
    fn observe(&mut self, _ts: HlcTimestamp) {}
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

fn outcome_reply(txn_id: TxnId, outcome: TxnOutcome) -> Reply {
    Ok(Response::Outcome(OutcomeReply { txn_id, outcome }))
}

fn state_reply(txn_id: TxnId, state: CoordinatorState) -> Reply {
    Ok(Response::TxnState(TxnStateReply { txn_id, state }))
}

/// The answer a request gets from the state `view` (REC-4, C-5).
fn answer_for(txn_id: TxnId, view: TxnView, answer: Answer) -> Reply {
    match (answer, view) {
        (Answer::Outcome, TxnView::Decided(o)) => outcome_reply(txn_id, o.to_client()),
        (Answer::TxnState, TxnView::Decided(o)) => state_reply(txn_id, o.to_query()),
        (_, TxnView::Preparing) => pending(txn_id, answer),
        // No record: nothing was decided, and nothing may be presumed without a tombstone.
        (Answer::Outcome, TxnView::Absent) => outcome_reply(txn_id, TxnOutcome::Ambiguous),
        (Answer::TxnState, TxnView::Absent) => state_reply(txn_id, CoordinatorState::Pending),
    }
}

fn pending(txn_id: TxnId, answer: Answer) -> Reply {
    match answer {
        Answer::Outcome => outcome_reply(txn_id, TxnOutcome::Pending),
        Answer::TxnState => state_reply(txn_id, CoordinatorState::Pending),
    }
}

/// The answer when the proposal a request waits for is lost: its fate is unknown.
fn lost(txn_id: TxnId, answer: Answer) -> Reply {
    match answer {
        Answer::Outcome => outcome_reply(txn_id, TxnOutcome::Ambiguous),
        Answer::TxnState => {
            Err(ErrorResponse::unavailable("coordinator leadership changed; ask again"))
        }
    }
}

/// FNV-1a, 64 bits: a fixed, portable hash for [`ReplicatedMachine::digest`].
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
