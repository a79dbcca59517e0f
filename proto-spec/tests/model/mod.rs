//! Stateright model of decree's commit protocol, as written in
//! `proto-spec/spec/commit-protocol.md` (rule IDs from `design/protocol.md`).
//!
//! Shared by the `model_*` integration tests and `examples/check_model.rs`.
//!
//! # Abstractions
//!
//! - **Groups are atomic logs.** The coordinator group and every participant
//!   group is one replicated state machine whose applied state survives
//!   everything; a proposal and its apply are one step. Raft itself is not
//!   modelled (it is checked elsewhere, INV-R*).
//! - **Coordinator leader failover** ([`Action::CoordFailover`]) loses all
//!   leader-volatile state (attempts, collected votes, a `StartCommit` still in
//!   flight) and runs the new leader's recovery (REC-1 abort of every
//!   `PREPARING` record, REC-2 re-send of decided records) as one step: the new
//!   leader answers nothing before its no-op applied, so nothing can interleave.
//! - **Participant leader failover** loses only timers and in-flight
//!   proposals; with atomic apply and a network that may drop any reply, that
//!   is already covered and needs no action of its own.
//! - **Network.** A set of in-flight messages. Delivering a message leaves it
//!   in the set, so every message can be delivered any number of times, in any
//!   order, arbitrarily late (duplication and reordering are unbounded).
//!   [`Action::Drop`] removes a message (loss), bounded by `Config::drops`;
//!   senders' retransmission timers put messages back.
//! - **Clients** start with their commit request in flight. They never have to
//!   act again (a client may disappear at any point); while waiting they may
//!   retry or ask `TxnStatus`.
//! - **Time.** No clocks. Every `read_ts` is 0; a participant's prepare
//!   timestamp is `1 + number of entries it has` (monotone per group), and
//!   `C = max P` (C-2 with the coordinator clock folded in). Timeouts
//!   (`prepare_timeout`, `in_doubt_query_after`) may fire at any moment.
//!   Expiry of tombstones and stubs after `max_txn_lifetime` (REC-7(b), D-3)
//!   is not modelled: they live forever, which is what a request admitted by
//!   the `read_ts` age check observes.
//! - **Keys.** Each transaction writes one key in each group it touches, the
//!   same key for every transaction, so two transactions sharing a group
//!   conflict there (P-2 no-wait).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;

use stateright::{Model, Property};

/// Upper bound on participant groups in any configuration.
pub const GROUPS_MAX: usize = 3;
/// Upper bound on transactions in any configuration.
pub const TXNS_MAX: usize = 3;
/// Rounds the fault-free run may take before INV-A8 counts as violated.
const QUIESCENCE_ROUNDS_MAX: usize = 64;

/// Abstract HLC timestamp (see the module docs).
pub type Ts = u8;
/// Index of a transaction in `Config::txns`.
pub type Txn = u8;
/// Index of a participant group.
pub type Group = u8;

/// Deliberate protocol bugs; each one must be caught by the property named in
/// `VERIFICATION.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// REC-4 answers `Aborted` for an unknown transaction without first
    /// writing a tombstone.
    AbortWithoutTombstone,
    /// The coordinator deletes a `COMMITTED` record before every participant
    /// acked (breaks REC-7(a)).
    GcBeforeAllAcks,
    /// A participant aborts a `PREPARED` transaction on a timeout (breaks P-6,
    /// REC-3).
    ParticipantTimeoutAbort,
    /// The coordinator decides commit with a vote still missing (breaks C-2).
    CommitWithoutAllYes,
    /// After all acks the record is deleted outright instead of being compacted
    /// to an outcome stub (protocol.md's literal REC-7(a); spec D-4).
    DeleteRecordAfterAcks,
    /// Participants never ask about in-doubt transactions (no REC-3): a
    /// liveness bug that only INV-A8 can catch.
    NoInDoubtQuery,
}

/// Bounds and variant of one check.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of participant groups (≤ [`GROUPS_MAX`]).
    pub groups: usize,
    /// Per transaction, the bit mask of groups it writes. One bit: 1PC.
    pub txns: Vec<u8>,
    /// Coordinator leader failovers allowed.
    pub failovers: u8,
    /// Messages the network may lose.
    pub drops: u8,
    /// `Some` for a broken variant.
    pub bug: Option<Bug>,
    /// Check INV-A8 with the fault-free run from every state (costly).
    pub check_termination: bool,
}

impl Config {
    /// The default check: two groups, one 2PC transaction over both, one
    /// conflicting 1PC transaction on group 0; one failover, one lost message.
    pub fn default_bounds() -> Config {
        Config {
            groups: 2,
            txns: vec![0b11, 0b01],
            failovers: 1,
            drops: 1,
            bug: None,
            check_termination: true,
        }
    }

    /// Two groups, two conflicting 2PC transactions (no-wait conflicts,
    /// tombstones from `TxnStatus`/queries for both); no failover and no
    /// `Drop`s (in this network a lost message only removes behaviours: every
    /// message may stay undelivered forever, and the INV-A8 run starts by
    /// losing everything). With one failover it does not finish in minutes on
    /// two cores (VERIFICATION.md).
    pub fn two_2pc() -> Config {
        Config { txns: vec![0b11, 0b11], failovers: 0, drops: 0, ..Config::default_bounds() }
    }

    /// The large check: three groups, one 2PC transaction over all three
    /// and a 1PC transaction conflicting with it on group 0; two coordinator
    /// failovers, one lost message.
    pub fn large_bounds() -> Config {
        Config {
            groups: 3,
            txns: vec![0b111, 0b001],
            failovers: 2,
            drops: 1,
            bug: None,
            check_termination: true,
        }
    }

    /// The same bounds with a bug switched on. Termination (INV-A8) is
    /// checked only for the liveness bug; for the others the safety property
    /// is what must fail.
    pub fn with_bug(self, bug: Bug) -> Config {
        Config { bug: Some(bug), check_termination: bug == Bug::NoInDoubtQuery, ..self }
    }

    fn is_1pc(&self, t: Txn) -> bool {
        self.txns[t as usize].count_ones() == 1
    }

    fn touches(&self, t: Txn, g: Group) -> bool {
        self.txns[t as usize] & (1 << g) != 0
    }

    fn participants(&self, t: Txn) -> impl Iterator<Item = Group> + '_ {
        (0..self.groups as Group).filter(move |&g| self.touches(t, g))
    }

    fn txn_ids(&self) -> impl Iterator<Item = Txn> {
        0..self.txns.len() as Txn
    }

    fn bug(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    fn deletes_records(&self) -> bool {
        self.bug(Bug::GcBeforeAllAcks) || self.bug(Bug::DeleteRecordAfterAcks)
    }
}

/// The model: a [`Config`] plus stateright's [`Model`] implementation.
#[derive(Clone, Debug)]
pub struct CommitModel {
    pub cfg: Config,
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// Coordinator record status (spec §3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    #[default]
    Absent,
    Preparing,
    Committed(Ts),
    Aborted,
}

/// Coordinator record (replicated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    pub status: Status,
    /// `ABORTED` with no participants, written by REC-4 for an unknown txn.
    pub tombstone: bool,
    /// Groups whose `Ack` was recorded (`RecordAck`).
    pub acked: u8,
    /// Compacted to an outcome stub after all acks (REC-7(a), spec D-4).
    pub compacted: bool,
}

/// A vote as the coordinator stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vote {
    Yes(Ts),
    No,
}

/// The coordinator leader's in-memory attempt for one txn (lost on failover).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// `StartCommit` proposed, not yet applied.
    pub start_pending: bool,
    pub votes: [Option<Vote>; GROUPS_MAX],
}

/// A participant's `txn_table` entry (spec §3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Entry {
    #[default]
    Absent,
    Prepared(Ts),
    Rejected,
    Committed(Ts),
    Aborted,
}

/// An outcome as told to a client or a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Committed(Ts),
    Aborted,
}

/// What a client knows about its transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientView {
    #[default]
    Waiting,
    Told(Outcome),
}

/// Messages (spec §4). `Pending` answers are not sent: they change nothing
/// and the asker retries anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// client → coordinator (§4.1)
    CommitTxn { txn: Txn },
    /// client → coordinator (§4.2)
    TxnStatus { txn: Txn },
    /// client → its single participant (§4.3, OPC-1)
    CommitLocal { txn: Txn },
    /// coordinator or participant → client
    ClientReply { txn: Txn, outcome: Outcome },
    /// coordinator → participant (§4.4)
    Prepare { txn: Txn, group: Group },
    /// participant → coordinator (§4.5)
    Vote { txn: Txn, group: Group, vote: Vote },
    /// coordinator → participant (§4.6)
    Commit { txn: Txn, group: Group, ts: Ts },
    /// coordinator → participant (§4.7)
    Abort { txn: Txn, group: Group },
    /// participant → coordinator (§4.8)
    Ack { txn: Txn, group: Group },
    /// participant → coordinator (§4.9, REC-3)
    QueryTxn { txn: Txn, group: Group },
    /// coordinator → participant (§4.9, REC-4)
    QueryReply { txn: Txn, group: Group, outcome: Outcome },
}

/// One transition of a coordinator record (ghost history for INV-A3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Preparing,
    Committed(Ts),
    /// Decided abort: `true` when by the recovering leader (REC-1).
    Aborted {
        by_recovery: bool,
    },
    Tombstone,
    Compacted,
    /// Only reachable in broken variants.
    Deleted,
}

/// Ghost (history) variables per transaction; never read by the protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// Every transition of the coordinator record, in order.
    pub history: Vec<Step>,
    /// Someone (client or participant) was told `Aborted`.
    pub told_aborted: bool,
    /// A participant resolved an in-doubt entry from a `QueryReply`.
    pub resolved_by_query: bool,
    /// `Decide(COMMIT)` applied without every participant `PREPARED` (INV-A2).
    pub a2_broken: bool,
    /// A `PREPARED` entry left without the matching decided outcome (INV-A4).
    pub a4_broken: bool,
    /// Someone was told `Aborted` while the record was not `ABORTED` (INV-A5).
    pub a5_broken: bool,
    /// A client was told `Committed{C}` while the txn was not decided commit
    /// at `C` (INV-A7).
    pub a7_broken: bool,
    /// A participant's P-8/P-9 assertion fired (commit on a non-prepared
    /// entry, abort on a committed one): INV-A1 broke.
    pub assert_fired: bool,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Coordinator group, replicated.
    pub records: [Record; TXNS_MAX],
    /// Coordinator leader, volatile.
    pub attempts: [Option<Attempt>; TXNS_MAX],
    /// Participant groups, replicated: `entries[group][txn]`.
    pub entries: [[Entry; TXNS_MAX]; GROUPS_MAX],
    pub clients: [ClientView; TXNS_MAX],
    pub net: BTreeSet<Msg>,
    pub failovers_left: u8,
    pub drops_left: u8,
    pub ghost: [Ghost; TXNS_MAX],
}

/// Everything that can happen next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver one copy of an in-flight message (it stays in flight).
    Deliver(Msg),
    /// Lose a message (fault budget).
    Drop(Msg),
    /// Coordinator: `StartCommit` applies (C-1).
    ApplyStartCommit(Txn),
    /// Coordinator: all votes `Yes` → `Decide(COMMIT, C)` (C-2, C-3).
    DecideCommit(Txn),
    /// Coordinator: a `No` vote or `prepare_timeout` → `Decide(ABORT)` (C-4).
    DecideAbort(Txn),
    /// Coordinator retransmits `Prepare` to a group that has not voted.
    ResendPrepare(Txn, Group),
    /// Coordinator retransmits `Commit`/`Abort` until acked (C-6, REC-2).
    ResendDecision(Txn, Group),
    /// Coordinator: all acked → compact the record (REC-7(a)).
    Compact(Txn),
    /// Coordinator leader crash + new leader's recovery (REC-1, REC-2).
    CoordFailover,
    /// Participant: in-doubt timer fires, `QueryTxn` (REC-3).
    QueryInDoubt(Txn, Group),
    /// Broken variant `ParticipantTimeoutAbort` only.
    TimeoutAbort(Txn, Group),
    /// Broken variant `GcBeforeAllAcks` only.
    GcEarly(Txn),
    /// Client re-sends its commit request (after a loss).
    ClientRetry(Txn),
    /// Client asks `TxnStatus` (REC-6).
    ClientStatus(Txn),
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

impl CommitModel {
    pub fn new(cfg: Config) -> CommitModel {
        assert!(cfg.groups <= GROUPS_MAX && cfg.txns.len() <= TXNS_MAX);
        assert!(cfg.txns.iter().all(|&m| m != 0 && m < (1 << cfg.groups)));
        CommitModel { cfg }
    }

    fn request(&self, t: Txn) -> Msg {
        if self.cfg.is_1pc(t) {
            Msg::CommitLocal { txn: t }
        } else {
            Msg::CommitTxn { txn: t }
        }
    }

    fn single_group(&self, t: Txn) -> Group {
        self.cfg.txns[t as usize].trailing_zeros() as Group
    }

    /// Applies `action` in place. Guards live here: a disabled action leaves
    /// the state unchanged.
    pub fn step(&self, s: &mut State, action: Action) {
        let cfg = &self.cfg;
        match action {
            Action::Deliver(m) => self.deliver(s, m),
            Action::Drop(m) => {
                if s.drops_left > 0 && s.net.remove(&m) {
                    s.drops_left -= 1;
                }
            }
            Action::ApplyStartCommit(t) => {
                let ti = t as usize;
                let Some(att) = s.attempts[ti].as_mut() else {
                    return;
                };
                if !att.start_pending {
                    return;
                }
                att.start_pending = false;
                let rec = &mut s.records[ti];
                if rec.status == Status::Absent {
                    // C-1: record absent (no tombstone) → PREPARING.
                    rec.status = Status::Preparing;
                    s.ghost[ti].history.push(Step::Preparing);
                } else {
                    // A tombstone (or any record) blocks StartCommit: the
                    // attempt ends and reports the existing outcome.
                    s.attempts[ti] = None;
                    if let Some(o) = outcome_of(rec.status) {
                        s.net.insert(Msg::ClientReply { txn: t, outcome: o });
                    }
                }
            }
            Action::DecideCommit(t) => {
                let ti = t as usize;
                let Some(att) = s.attempts[ti] else {
                    return;
                };
                if att.start_pending || s.records[ti].status != Status::Preparing {
                    return;
                }
                let mut c: Ts = 0;
                let mut all_yes = true;
                let mut any_yes = false;
                let mut any_no = false;
                for g in cfg.participants(t) {
                    match att.votes[g as usize] {
                        Some(Vote::Yes(p)) => {
                            c = c.max(p);
                            any_yes = true;
                        }
                        Some(Vote::No) => any_no = true,
                        None => all_yes = false,
                    }
                }
                let may_commit = if cfg.bug(Bug::CommitWithoutAllYes) {
                    any_yes && !any_no
                } else {
                    all_yes && !any_no
                };
                if !may_commit {
                    return;
                }
                // INV-A2, checked at the decision point: every participant
                // applied PREPARED{P} with P ≤ C, and C > read_ts (= 0).
                let valid = c > 0
                    && cfg
                        .participants(t)
                        .all(|g| matches!(s.entries[g as usize][ti], Entry::Prepared(p) if p <= c));
                if !valid {
                    s.ghost[ti].a2_broken = true;
                }
                s.records[ti].status = Status::Committed(c);
                s.ghost[ti].history.push(Step::Committed(c));
                s.attempts[ti] = None;
                // C-5 reply, C-6 phase two.
                s.net.insert(Msg::ClientReply { txn: t, outcome: Outcome::Committed(c) });
                for g in cfg.participants(t) {
                    s.net.insert(Msg::Commit { txn: t, group: g, ts: c });
                }
            }
            Action::DecideAbort(t) => {
                let ti = t as usize;
                let Some(att) = s.attempts[ti] else {
                    return;
                };
                if att.start_pending || s.records[ti].status != Status::Preparing {
                    return;
                }
                let all_yes = cfg
                    .participants(t)
                    .all(|g| matches!(att.votes[g as usize], Some(Vote::Yes(_))));
                if all_yes {
                    // C-4: only a No or a missing vote (timeout) aborts.
                    return;
                }
                self.decide_abort(s, t, false);
                s.attempts[ti] = None;
                s.net.insert(Msg::ClientReply { txn: t, outcome: Outcome::Aborted });
            }
            Action::ResendPrepare(t, g) => {
                if let Some(att) = s.attempts[t as usize] {
                    if att.votes[g as usize].is_none() && cfg.touches(t, g) {
                        s.net.insert(Msg::Prepare { txn: t, group: g });
                    }
                }
            }
            Action::ResendDecision(t, g) => {
                let rec = s.records[t as usize];
                if rec.tombstone || rec.compacted || rec.acked & (1 << g) != 0 {
                    return;
                }
                if !cfg.touches(t, g) {
                    return;
                }
                match rec.status {
                    Status::Committed(c) => {
                        s.net.insert(Msg::Commit { txn: t, group: g, ts: c });
                    }
                    Status::Aborted => {
                        s.net.insert(Msg::Abort { txn: t, group: g });
                    }
                    Status::Absent | Status::Preparing => {}
                }
            }
            Action::Compact(t) => {
                let ti = t as usize;
                let rec = &mut s.records[ti];
                let decided = matches!(rec.status, Status::Committed(_) | Status::Aborted);
                if !decided || rec.tombstone || rec.compacted || rec.acked != cfg.txns[ti] {
                    return;
                }
                if cfg.bug(Bug::DeleteRecordAfterAcks) {
                    *rec = Record::default();
                    s.ghost[ti].history.push(Step::Deleted);
                } else {
                    // REC-7(a) + spec D-4: keep the outcome as a stub.
                    rec.compacted = true;
                    rec.acked = 0;
                    s.ghost[ti].history.push(Step::Compacted);
                }
            }
            Action::CoordFailover => {
                if s.failovers_left == 0 {
                    return;
                }
                s.failovers_left -= 1;
                // All leader-volatile state is lost, including a StartCommit
                // still in flight (its later entries are lost with it).
                s.attempts = [None; TXNS_MAX];
                for t in cfg.txn_ids() {
                    let ti = t as usize;
                    match s.records[ti].status {
                        // REC-1: abort every undecided record (spec D-2).
                        Status::Preparing => self.decide_abort(s, t, true),
                        // REC-2: re-send decisions not yet acked.
                        Status::Committed(_) | Status::Aborted => {
                            for g in cfg.participants(t) {
                                self.step(s, Action::ResendDecision(t, g));
                            }
                        }
                        Status::Absent => {}
                    }
                }
            }
            Action::QueryInDoubt(t, g) => {
                if cfg.bug(Bug::NoInDoubtQuery) {
                    return;
                }
                if matches!(s.entries[g as usize][t as usize], Entry::Prepared(_)) {
                    s.net.insert(Msg::QueryTxn { txn: t, group: g });
                }
            }
            Action::TimeoutAbort(t, g) => {
                if !cfg.bug(Bug::ParticipantTimeoutAbort) {
                    return;
                }
                if matches!(s.entries[g as usize][t as usize], Entry::Prepared(_)) {
                    // The bug: a unilateral abort (no outcome from anyone).
                    self.leave_prepared(s, t, g, None);
                }
            }
            Action::GcEarly(t) => {
                let ti = t as usize;
                if !cfg.bug(Bug::GcBeforeAllAcks) {
                    return;
                }
                let rec = s.records[ti];
                if matches!(rec.status, Status::Committed(_)) && rec.acked != cfg.txns[ti] {
                    s.records[ti] = Record::default();
                    s.ghost[ti].history.push(Step::Deleted);
                }
            }
            Action::ClientRetry(t) => {
                if s.clients[t as usize] == ClientView::Waiting {
                    s.net.insert(self.request(t));
                }
            }
            Action::ClientStatus(t) => {
                if s.clients[t as usize] == ClientView::Waiting && !cfg.is_1pc(t) {
                    s.net.insert(Msg::TxnStatus { txn: t });
                }
            }
        }
    }

    /// `Decide(ABORT)` applies (C-4 or REC-1): PREPARING → ABORTED, `Abort` to
    /// every listed participant.
    fn decide_abort(&self, s: &mut State, t: Txn, by_recovery: bool) {
        let ti = t as usize;
        s.records[ti].status = Status::Aborted;
        s.ghost[ti].history.push(Step::Aborted { by_recovery });
        for g in self.cfg.participants(t) {
            s.net.insert(Msg::Abort { txn: t, group: g });
        }
    }

    /// A `PREPARED` entry is resolved. `told` is the outcome the participant
    /// was told (`None`: nobody told it anything — the unilateral-abort bug).
    /// Checks INV-A4 at the moment it happens.
    fn leave_prepared(&self, s: &mut State, t: Txn, g: Group, told: Option<Outcome>) {
        let ti = t as usize;
        let status = s.records[ti].status;
        let matches_decision = match told {
            Some(Outcome::Committed(c)) => s.ghost[ti].history.contains(&Step::Committed(c)),
            Some(Outcome::Aborted) => status == Status::Aborted,
            None => false,
        };
        if !matches_decision {
            s.ghost[ti].a4_broken = true;
        }
        s.entries[g as usize][ti] = match told {
            Some(Outcome::Committed(c)) => Entry::Committed(c),
            Some(Outcome::Aborted) | None => Entry::Aborted,
        };
    }

    /// Someone is told `Aborted` for a 2PC txn: INV-A5 requires an applied
    /// `ABORTED` record (decided or tombstone) at this moment.
    fn told_aborted(&self, s: &mut State, t: Txn) {
        let ti = t as usize;
        s.ghost[ti].told_aborted = true;
        if s.records[ti].status != Status::Aborted {
            s.ghost[ti].a5_broken = true;
        }
    }

    /// P-2/P-5 conflict check at group `g` for txn `t` (one key per group,
    /// every `read_ts` is 0, so any other intent or committed version there
    /// conflicts).
    fn conflicts(&self, s: &State, t: Txn, g: Group) -> bool {
        self.cfg.txn_ids().any(|u| {
            u != t
                && self.cfg.touches(u, g)
                && matches!(
                    s.entries[g as usize][u as usize],
                    Entry::Prepared(_) | Entry::Committed(_)
                )
        })
    }

    /// P-3 abstracted: a timestamp above every entry the group holds.
    fn prepare_ts(&self, s: &State, g: Group) -> Ts {
        let held = s.entries[g as usize].iter().filter(|e| **e != Entry::Absent).count();
        held as Ts + 1
    }

    /// REC-4 answer table for `QueryTxn`/`TxnStatus` (spec §5.2). `None` is
    /// `Pending` (not sent).
    fn rec4_answer(&self, s: &mut State, t: Txn) -> Option<Outcome> {
        let ti = t as usize;
        match s.records[ti].status {
            Status::Committed(c) => Some(Outcome::Committed(c)),
            Status::Aborted => Some(Outcome::Aborted),
            // A PREPARING record always has a live attempt here (REC-1 aborts
            // the others at failover); the attempt's deadline is the
            // DecideAbort action.
            Status::Preparing => None,
            Status::Absent => {
                if s.attempts[ti].is_some_and(|a| a.start_pending) {
                    // StartCommit in flight in leader memory → Pending.
                    return None;
                }
                if !self.cfg.bug(Bug::AbortWithoutTombstone) {
                    // Presumed abort, tombstone FIRST (INV-A5).
                    s.records[ti] = Record {
                        status: Status::Aborted,
                        tombstone: true,
                        acked: 0,
                        compacted: false,
                    };
                    s.ghost[ti].history.push(Step::Tombstone);
                    s.attempts[ti] = None;
                }
                Some(Outcome::Aborted)
            }
        }
    }

    fn deliver(&self, s: &mut State, m: Msg) {
        let cfg = &self.cfg;
        match m {
            // --- at the coordinator leader ---------------------------------
            Msg::CommitTxn { txn: t } => {
                let ti = t as usize;
                match s.records[ti].status {
                    Status::Committed(_) | Status::Aborted => {
                        // C-1 idempotency: reply with the outcome.
                        let o = outcome_of(s.records[ti].status).expect("decided");
                        s.net.insert(Msg::ClientReply { txn: t, outcome: o });
                    }
                    // Attach to the live attempt.
                    Status::Preparing => {}
                    Status::Absent => {
                        if s.attempts[ti].is_none() {
                            // C-1: propose StartCommit and send Prepares in
                            // parallel.
                            s.attempts[ti] =
                                Some(Attempt { start_pending: true, votes: [None; GROUPS_MAX] });
                            for g in cfg.participants(t) {
                                s.net.insert(Msg::Prepare { txn: t, group: g });
                            }
                        }
                    }
                }
            }
            Msg::TxnStatus { txn: t } => {
                if let Some(o) = self.rec4_answer(s, t) {
                    s.net.insert(Msg::ClientReply { txn: t, outcome: o });
                }
            }
            Msg::Vote { txn: t, group: g, vote } => {
                // §4.5: first vote per group wins; no attempt → ignore. Votes
                // carry no attempt number (D-10): stale ones count.
                if let Some(att) = s.attempts[t as usize].as_mut() {
                    let slot = &mut att.votes[g as usize];
                    if slot.is_none() {
                        *slot = Some(vote);
                    }
                }
            }
            Msg::Ack { txn: t, group: g } => {
                // §4.8 RecordAck.
                let rec = &mut s.records[t as usize];
                let decided = matches!(rec.status, Status::Committed(_) | Status::Aborted);
                if decided && !rec.tombstone && !rec.compacted {
                    rec.acked |= 1 << g;
                }
            }
            Msg::QueryTxn { txn: t, group: g } => {
                if let Some(o) = self.rec4_answer(s, t) {
                    s.net.insert(Msg::QueryReply { txn: t, group: g, outcome: o });
                }
            }

            // --- at a participant leader -----------------------------------
            Msg::Prepare { txn: t, group: g } => {
                let (ti, gi) = (t as usize, g as usize);
                let vote = match s.entries[gi][ti] {
                    Entry::Absent => {
                        // P-5 at apply.
                        if self.conflicts(s, t, g) {
                            s.entries[gi][ti] = Entry::Rejected;
                            Vote::No
                        } else {
                            let p = self.prepare_ts(s, g);
                            s.entries[gi][ti] = Entry::Prepared(p);
                            Vote::Yes(p)
                        }
                    }
                    // Duplicate Prepare: answer from txn_table (§4.4).
                    Entry::Prepared(p) => Vote::Yes(p),
                    Entry::Rejected | Entry::Aborted => Vote::No,
                    Entry::Committed(_) => return,
                };
                s.net.insert(Msg::Vote { txn: t, group: g, vote });
            }
            Msg::Commit { txn: t, group: g, ts: c } => {
                let (ti, gi) = (t as usize, g as usize);
                match s.entries[gi][ti] {
                    Entry::Prepared(_) => self.leave_prepared(s, t, g, Some(Outcome::Committed(c))),
                    Entry::Committed(c2) if c2 == c => {}
                    // P-8: commit on a non-prepared entry → assert.
                    _ => {
                        s.ghost[ti].assert_fired = true;
                        return;
                    }
                }
                s.net.insert(Msg::Ack { txn: t, group: g });
            }
            Msg::Abort { txn: t, group: g } => {
                let (ti, gi) = (t as usize, g as usize);
                self.told_aborted(s, t);
                match s.entries[gi][ti] {
                    Entry::Prepared(_) => self.leave_prepared(s, t, g, Some(Outcome::Aborted)),
                    // P-9: tombstone against a late Prepare.
                    Entry::Absent => s.entries[gi][ti] = Entry::Aborted,
                    Entry::Rejected | Entry::Aborted => {}
                    Entry::Committed(_) => {
                        s.ghost[ti].assert_fired = true;
                        return;
                    }
                }
                s.net.insert(Msg::Ack { txn: t, group: g });
            }
            Msg::QueryReply { txn: t, group: g, outcome } => {
                let (ti, gi) = (t as usize, g as usize);
                if outcome == Outcome::Aborted {
                    self.told_aborted(s, t);
                }
                if matches!(s.entries[gi][ti], Entry::Prepared(_)) {
                    self.leave_prepared(s, t, g, Some(outcome));
                    s.ghost[ti].resolved_by_query = true;
                }
            }
            Msg::CommitLocal { txn: t } => {
                // OPC-1, deduplicated by txn_id / (client_id, seq) (OPC-2).
                let (ti, gi) = (t as usize, self.single_group(t) as usize);
                let outcome = match s.entries[gi][ti] {
                    Entry::Absent => {
                        if self.conflicts(s, t, gi as Group) {
                            s.entries[gi][ti] = Entry::Rejected;
                            Outcome::Aborted
                        } else {
                            let c = self.prepare_ts(s, gi as Group);
                            s.entries[gi][ti] = Entry::Committed(c);
                            Outcome::Committed(c)
                        }
                    }
                    Entry::Committed(c) => Outcome::Committed(c),
                    Entry::Rejected => Outcome::Aborted,
                    // A 1PC entry is never PREPARED/ABORTED: nobody sends
                    // Prepare/Abort for it. Treat it as a failed assertion.
                    Entry::Prepared(_) | Entry::Aborted => {
                        s.ghost[ti].assert_fired = true;
                        return;
                    }
                };
                s.net.insert(Msg::ClientReply { txn: t, outcome });
            }

            // --- at the client ----------------------------------------------
            Msg::ClientReply { txn: t, outcome } => {
                let ti = t as usize;
                if s.clients[ti] != ClientView::Waiting {
                    return;
                }
                if cfg.is_1pc(t) {
                    let g = self.single_group(t) as usize;
                    let entry = s.entries[g][ti];
                    let agrees = match outcome {
                        Outcome::Committed(c) => entry == Entry::Committed(c),
                        Outcome::Aborted => entry == Entry::Rejected,
                    };
                    if !agrees {
                        s.ghost[ti].a7_broken = true;
                    }
                } else {
                    match outcome {
                        Outcome::Committed(c) => {
                            if s.records[ti].status != Status::Committed(c) {
                                s.ghost[ti].a7_broken = true;
                            }
                        }
                        Outcome::Aborted => self.told_aborted(s, t),
                    }
                }
                s.clients[ti] = ClientView::Told(outcome);
            }
        }
    }

    /// State-space reduction: removes in-flight messages whose delivery can
    /// no longer change anything, so states that differ only in such
    /// messages become one state. Sound because delivering them is a no-op in
    /// every future state:
    ///
    /// - after a record is compacted (all participants acked, so every entry
    ///   applied the decided outcome, and the record never changes again):
    ///   `Prepare`/`Vote` (no attempt can start for a non-absent record),
    ///   `Commit`/`Abort` (answered with an `Ack`), `Ack`, `QueryTxn` and
    ///   `QueryReply` (the participants are final; anyone told `Aborted` was
    ///   already told by the `Abort` it acked);
    /// - once a decision is applied (and the variant never deletes records):
    ///   `Vote`s (no attempt can start again), and the client's `CommitTxn` /
    ///   `TxnStatus` once the client was told (they only produce replies);
    /// - once the client was told an outcome: every `ClientReply` (a told
    ///   client ignores them), and for 1PC its `CommitLocal`.
    ///
    /// Variants that delete records never compact, so the first rule never
    /// fires there, and the second is switched off for them.
    fn drop_dead_messages(&self, s: &mut State) {
        let dead = |m: &Msg| -> bool {
            let t = match *m {
                Msg::CommitTxn { txn }
                | Msg::TxnStatus { txn }
                | Msg::CommitLocal { txn }
                | Msg::ClientReply { txn, .. }
                | Msg::Prepare { txn, .. }
                | Msg::Vote { txn, .. }
                | Msg::Commit { txn, .. }
                | Msg::Abort { txn, .. }
                | Msg::Ack { txn, .. }
                | Msg::QueryTxn { txn, .. }
                | Msg::QueryReply { txn, .. } => txn as usize,
            };
            let told = s.clients[t] != ClientView::Waiting;
            if self.cfg.is_1pc(t as Txn) || matches!(m, Msg::ClientReply { .. }) {
                return told;
            }
            let rec = s.records[t];
            let decided = matches!(rec.status, Status::Committed(_) | Status::Aborted);
            let permanent = decided && !self.cfg.deletes_records();
            match m {
                Msg::Vote { .. } => permanent,
                Msg::CommitTxn { .. } | Msg::TxnStatus { .. } => told && permanent,
                _ => rec.compacted,
            }
        };
        if s.net.iter().any(dead) {
            s.net.retain(|m| !dead(m));
        }
    }

    // -----------------------------------------------------------------------
    // INV-A8: the fault-free run
    // -----------------------------------------------------------------------

    /// INV-A8 as checked: from `s`, lose every in-flight message (the worst
    /// last fault), then let the system run fault-free — no failover, no loss,
    /// no client action (clients may have disappeared), every timer fires each
    /// round and every in-flight message is delivered each round — until
    /// nothing changes. Then every participant entry must be resolved, every
    /// record decided, and every decided record compacted.
    pub fn fault_free_run_resolves(&self, s: &State) -> bool {
        let mut s = s.clone();
        s.net.clear();
        let mut timers = Vec::new();
        for _round in 0..QUIESCENCE_ROUNDS_MAX {
            let before = s.clone();
            timers.clear();
            self.timer_actions(&s, &mut timers);
            for &a in &timers {
                self.step(&mut s, a);
            }
            let in_flight: Vec<Msg> = s.net.iter().copied().collect();
            for m in in_flight {
                self.deliver(&mut s, m);
            }
            if s == before {
                // Fixpoint. The coordinator's prepare_timeout is the last
                // timer to fire (C-4): only if an attempt is still undecided.
                let mut stuck = false;
                for t in self.cfg.txn_ids() {
                    let before_abort = s.records[t as usize];
                    self.step(&mut s, Action::DecideAbort(t));
                    stuck |= s.records[t as usize] != before_abort;
                }
                if !stuck {
                    return self.resolved(&s);
                }
            }
        }
        false
    }

    /// Retransmission and internal progress, in a fixed order (no faults,
    /// no client actions, no bug actions, no `prepare_timeout`).
    fn timer_actions(&self, s: &State, out: &mut Vec<Action>) {
        for t in self.cfg.txn_ids() {
            out.push(Action::ApplyStartCommit(t));
            out.push(Action::DecideCommit(t));
            let any_no = s.attempts[t as usize].is_some_and(|a| a.votes.contains(&Some(Vote::No)));
            if any_no {
                out.push(Action::DecideAbort(t));
            }
            for g in self.cfg.participants(t) {
                out.push(Action::ResendPrepare(t, g));
                out.push(Action::ResendDecision(t, g));
                out.push(Action::QueryInDoubt(t, g));
            }
            out.push(Action::Compact(t));
        }
    }

    /// Nothing in doubt, nothing undecided, nothing left to clean up.
    pub fn resolved(&self, s: &State) -> bool {
        self.cfg.txn_ids().all(|t| {
            let ti = t as usize;
            let rec = s.records[ti];
            let entries_final = self
                .cfg
                .participants(t)
                .all(|g| !matches!(s.entries[g as usize][ti], Entry::Prepared(_)));
            let record_final = match rec.status {
                Status::Absent => true,
                Status::Preparing => false,
                Status::Committed(_) | Status::Aborted => rec.tombstone || rec.compacted,
            };
            entries_final && record_final && s.attempts[ti].is_none()
        })
    }
}

fn outcome_of(status: Status) -> Option<Outcome> {
    match status {
        Status::Committed(c) => Some(Outcome::Committed(c)),
        Status::Aborted => Some(Outcome::Aborted),
        Status::Absent | Status::Preparing => None,
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

pub const A1_AGREEMENT: &str = "INV-A1 agreement";
pub const A2_VALIDITY: &str = "INV-A2 validity";
pub const A3_STABILITY: &str = "INV-A3 decision stability";
pub const A4_NO_UNILATERAL_ABORT: &str = "INV-A4 no unilateral abort";
pub const A5_TOMBSTONE_FIRST: &str = "INV-A5 told aborted only with an applied ABORTED record";
pub const A5_NEVER_CONTRADICTS: &str = "INV-A5 told aborted never for a decided-commit txn";
pub const A7_CLIENT_ACK: &str = "INV-A7 client ack implies decided";
pub const A8_TERMINATION: &str = "INV-A8 fault-free run resolves everything";
pub const SOMETIMES_COMMIT: &str = "sometimes a 2PC txn commits everywhere";
pub const SOMETIMES_ABORT: &str = "sometimes a prepared 2PC txn aborts";
pub const SOMETIMES_1PC: &str = "sometimes a 1PC txn commits";
pub const SOMETIMES_TOMBSTONE: &str = "sometimes presumed abort writes a tombstone";
pub const SOMETIMES_RECOVERY_ABORT: &str = "sometimes a new leader aborts an undecided record";
pub const SOMETIMES_QUERY: &str = "sometimes an in-doubt participant resolves by query";
pub const SOMETIMES_COMPACTED: &str = "sometimes a record is compacted after all acks";

/// INV-A1: no participant committed while another aborted/rejected; one C.
fn agreement(m: &CommitModel, s: &State) -> bool {
    m.cfg.txn_ids().all(|t| {
        let ti = t as usize;
        if s.ghost[ti].assert_fired {
            return false;
        }
        let mut commit_ts: Option<Ts> = None;
        let mut aborted = false;
        for g in m.cfg.participants(t) {
            match s.entries[g as usize][ti] {
                Entry::Committed(c) => {
                    if commit_ts.is_some_and(|c0| c0 != c) {
                        return false;
                    }
                    commit_ts = Some(c);
                }
                Entry::Aborted | Entry::Rejected => aborted = true,
                Entry::Absent | Entry::Prepared(_) => {}
            }
        }
        match (commit_ts, s.records[ti].status) {
            (Some(_), _) if aborted => false,
            (Some(_), Status::Aborted) => false,
            (Some(c), Status::Committed(rc)) => c == rc,
            _ => true,
        }
    })
}

/// INV-A3: the record history is a path through spec §3.1, C never changes.
fn valid_history(h: &[Step]) -> bool {
    use Step::*;
    let decided = |s: &Step| matches!(s, Committed(_) | Aborted { .. });
    match h {
        [] | [Preparing] | [Tombstone] => true,
        [Preparing, d] => decided(d),
        [Preparing, d, Compacted] => decided(d),
        _ => false,
    }
}

impl Model for CommitModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut net = BTreeSet::new();
        for t in self.cfg.txn_ids() {
            net.insert(self.request(t));
        }
        vec![State {
            records: Default::default(),
            attempts: [None; TXNS_MAX],
            entries: Default::default(),
            clients: Default::default(),
            net,
            failovers_left: self.cfg.failovers,
            drops_left: self.cfg.drops,
            ghost: Default::default(),
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        let cfg = &self.cfg;
        for &m in &s.net {
            out.push(Action::Deliver(m));
        }
        if s.drops_left > 0 {
            for &m in &s.net {
                out.push(Action::Drop(m));
            }
        }
        if s.failovers_left > 0 {
            out.push(Action::CoordFailover);
        }
        for t in cfg.txn_ids() {
            let ti = t as usize;
            if let Some(att) = s.attempts[ti] {
                if att.start_pending {
                    out.push(Action::ApplyStartCommit(t));
                } else {
                    out.push(Action::DecideCommit(t));
                    out.push(Action::DecideAbort(t));
                }
                for g in cfg.participants(t) {
                    if att.votes[g as usize].is_none()
                        && !s.net.contains(&Msg::Prepare { txn: t, group: g })
                    {
                        out.push(Action::ResendPrepare(t, g));
                    }
                }
            }
            let rec = s.records[ti];
            let decided = matches!(rec.status, Status::Committed(_) | Status::Aborted);
            if decided && !rec.tombstone && !rec.compacted {
                if rec.acked == cfg.txns[ti] {
                    out.push(Action::Compact(t));
                }
                for g in cfg.participants(t) {
                    if rec.acked & (1 << g) == 0 {
                        out.push(Action::ResendDecision(t, g));
                    }
                }
                if cfg.bug(Bug::GcBeforeAllAcks) {
                    out.push(Action::GcEarly(t));
                }
            }
            for g in cfg.participants(t) {
                if matches!(s.entries[g as usize][ti], Entry::Prepared(_)) {
                    out.push(Action::QueryInDoubt(t, g));
                    if cfg.bug(Bug::ParticipantTimeoutAbort) {
                        out.push(Action::TimeoutAbort(t, g));
                    }
                }
            }
            if s.clients[ti] == ClientView::Waiting {
                out.push(Action::ClientRetry(t));
                if !cfg.is_1pc(t) {
                    out.push(Action::ClientStatus(t));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        self.step(&mut s, action);
        self.drop_dead_messages(&mut s);
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut props = vec![
            Property::always(A1_AGREEMENT, agreement),
            Property::always(A2_VALIDITY, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| !s.ghost[t as usize].a2_broken)
            }),
            Property::always(A3_STABILITY, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| valid_history(&s.ghost[t as usize].history))
            }),
            Property::always(A4_NO_UNILATERAL_ABORT, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| !s.ghost[t as usize].a4_broken)
            }),
            Property::always(A5_TOMBSTONE_FIRST, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| !s.ghost[t as usize].a5_broken)
            }),
            Property::always(A5_NEVER_CONTRADICTS, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| {
                    let g = &s.ghost[t as usize];
                    let ever_committed = g.history.iter().any(|h| matches!(h, Step::Committed(_)));
                    !(g.told_aborted && ever_committed)
                })
            }),
            Property::always(A7_CLIENT_ACK, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().all(|t| !s.ghost[t as usize].a7_broken)
            }),
            Property::sometimes(SOMETIMES_COMMIT, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| {
                    !m.cfg.is_1pc(t)
                        && m.cfg.participants(t).all(|g| {
                            matches!(s.entries[g as usize][t as usize], Entry::Committed(_))
                        })
                })
            }),
            Property::sometimes(SOMETIMES_ABORT, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| {
                    s.ghost[t as usize].history.iter().any(|h| matches!(h, Step::Aborted { .. }))
                        && m.cfg
                            .participants(t)
                            .any(|g| s.entries[g as usize][t as usize] == Entry::Aborted)
                })
            }),
            Property::sometimes(SOMETIMES_TOMBSTONE, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| s.records[t as usize].tombstone)
            }),
            Property::sometimes(SOMETIMES_QUERY, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| s.ghost[t as usize].resolved_by_query)
            }),
            Property::sometimes(SOMETIMES_COMPACTED, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| s.records[t as usize].compacted)
            }),
        ];
        if self.cfg.failovers > 0 {
            props.push(Property::sometimes(
                SOMETIMES_RECOVERY_ABORT,
                |m: &CommitModel, s: &State| {
                    m.cfg.txn_ids().any(|t| {
                        s.ghost[t as usize].history.contains(&Step::Aborted { by_recovery: true })
                    })
                },
            ));
        }
        if self.cfg.txns.iter().any(|m| m.count_ones() == 1) {
            props.push(Property::sometimes(SOMETIMES_1PC, |m: &CommitModel, s: &State| {
                m.cfg.txn_ids().any(|t| {
                    m.cfg.is_1pc(t)
                        && matches!(s.clients[t as usize], ClientView::Told(Outcome::Committed(_)))
                })
            }));
        }
        if self.cfg.check_termination {
            props.push(Property::always(A8_TERMINATION, |m: &CommitModel, s: &State| {
                m.fault_free_run_resolves(s)
            }));
        }
        props
    }
}
