//! The sans-I/O Raft core: one replica of one group as a deterministic state machine.
//!
//! [`RaftCore`] performs no I/O, reads no clock and draws randomness only from the
//! [`DetRng`] it is given. Time enters as `now_ns` (monotonic nanoseconds from any origin the
//! driver chooses, never decreasing). Everything it wants done comes out as a [`Ready`].
//!
//! # Inputs
//!
//! - [`RaftCore::step`]: a message from a peer of this group.
//! - [`RaftCore::tick`]: time passed; elections, heartbeats, check-quorum, transfer and read
//!   deadlines are compared with `now_ns` (call it at least every heartbeat interval, or at
//!   [`RaftCore::next_deadline_ns`]).
//! - [`RaftCore::propose`], [`RaftCore::read_index`], [`RaftCore::transfer_leadership`],
//!   [`RaftCore::campaign`]: requests from the application.
//! - [`RaftCore::on_persisted`], [`RaftCore::on_applied`], [`RaftCore::snapshot_created`]:
//!   what the driver made durable, applied or snapshotted.
//!
//! # The driver loop
//!
//! ```text
//! let mut core = RaftCore::new(config, my_id, voters, restored_from_wal, rng, now)?;
//! loop {
//!     // 1. feed inputs
//!     for (from, msg) in inbox { let _ = core.step(now, from, msg); }
//!     core.tick(now);
//!     for cmd in proposals { core.propose(now, cmd)?; }
//!     if !core.has_ready() { continue; }
//!     let ready = core.ready();
//!     let mark = ready.persist_mark();
//!     // 2. send ready.messages now: appends and heartbeats of a leader may overlap its own
//!     //    fsync (Raft thesis §10.2.1), they acknowledge nothing.
//!     // 3. persist ready.hard_state, ready.snapshot (replaces the whole log), ready.entries
//!     //    (replace the tail from their first index on) through the WAL, then fsync:
//!     let token: SyncToken = wal.sync_for_ack()?;  // an fsync error is fatal; a change of
//!     //    the commit index alone needs none (it is an optimisation to persist)
//!     // 4. now, and only now, the durable acknowledgements may leave (RAFT-1):
//!     send(ready.persisted_messages.release(&token));
//!     if let Some((index, term)) = mark { core.on_persisted(index, term); }
//!     // 5. install ready.snapshot if any, apply ready.committed_entries in order, then
//!     core.on_applied(last_applied_index);
//!     //    and serve ready.read_states whose index <= applied; answer ready.failed_reads
//!     //    with "retry".
//!     // 6. from time to time: core.snapshot_created(applied, state_bytes) and drop WAL
//!     //    segments wholly below it (Low-Water Mark).
//! }
//! ```
//!
//! A leader counts its own log towards commit only up to what `on_persisted` reported, and a
//! candidate's vote requests leave only after its new term and self-vote are durable (they are
//! `persisted_messages`), so a crash can never make a replica forget a vote it gave or counted.
//! Everything that acknowledges durable state — vote grants, append and snapshot
//! acknowledgements, vote requests, replies carrying a newly adopted term — is a
//! persisted message; a `Ready` that carries only persisted messages still needs its (cheap)
//! fsync token. Pre-votes, ReadIndex traffic, intermediate snapshot-chunk answers and a
//! leader's appends and heartbeats are plain messages.
//!
//! Several groups' `Ready`s may share one fsync (group commit): take each group's `Ready`,
//! write them all, fsync once, then do steps 4-6 for each. A core must not be asked for its
//! next `Ready` before the previous one went through step 4.
//!
//! # Timers
//!
//! A leader's heartbeats fall on a grid: at the multiples of `heartbeat_interval` of `now_ns`
//! (the first one after its election comes at the next grid point, while its no-op append
//! leaves at once). Cores driven with the same clock — every group of one node — are
//! therefore due at the same instants, and a driver that ticks them together sends all their
//! heartbeats in one iteration, which lets it coalesce them per peer. Election timeouts stay
//! randomized per replica, and check-quorum counts an election timeout from the election.
//!
//! # Peers are not trusted with the core's safety
//!
//! [`RaftCore::step`] never panics on a message's content: a malformed or stale message is
//! dropped and `step` returns the reason ([`Ignored`]). The `assert!`s that stay on in release
//! builds guard the core's own invariants — the commit index never decreases, applied never
//! exceeds what was handed out, no entry at or below the commit index is overwritten, terms
//! never decrease — and fire only on a bug in the core or a driver breaking this contract.
//!
//! # What is implemented (protocol.md §8)
//!
//! Elections with randomized timeouts and pre-vote (RAFT-5), the leader lease for vote
//! requests (RAFT-5), check-quorum (RAFT-4), a no-op entry on election and the commit rule
//! (RAFT-2, INV-R7), pipelined replication with probe/replicate modes and fast back-tracking,
//! ReadIndex on leaders and followers (RAFT-3), leadership transfer (RAFT-6) and chunked
//! snapshots (RAFT-8). The voter set is fixed (membership changes, RAFT-7, come later).

mod config;
mod election;
mod log;
mod progress;
mod read;
mod replication;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use decree_types::{DetRng, LogIndex, NodeId, Term};

#[doc(hidden)]
pub use self::config::Mutation;
pub use self::config::{
    AppendError, ConfigError, Ignored, RaftConfig, ReadIndexError, RestoreError, SnapshotError,
    TransferError,
};
use self::log::RaftLog;
use self::progress::Progress;
pub use self::progress::ReplicationState;
use self::read::{EarlyRead, ForwardedReads, PendingRead};
use self::snapshot::IncomingSnapshot;
use crate::msg::{Entry, EntryPayload, HardState, Message, SnapshotMeta};
use crate::ready::{AfterSync, ReadState, Ready, SoftState};

/// The role a replica plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for pre-votes before starting an election (RAFT-5); its term is unchanged.
    PreCandidate,
    /// Has incremented its term and voted for itself; asks for votes.
    Candidate,
    /// Leads its term.
    Leader,
}

/// The durable state a replica restarts from, as recovered by the WAL.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    /// Last persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The latest snapshot: its metadata and bytes (the core sends them to followers that
    /// are too far behind).
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Recovered entries, in order. Entries at or below the snapshot index are skipped.
    pub entries: Vec<Entry>,
    /// The index the state machine has applied when the core starts: usually the snapshot's
    /// last index, since the state machine is rebuilt from the snapshot (0 without one).
    pub applied: LogIndex,
}

/// A summary of a replica's state, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This replica.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest committed entry.
    pub commit: LogIndex,
    /// Highest applied entry.
    pub applied: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// Index of the latest snapshot (0 if none).
    pub snapshot_index: LogIndex,
    /// Leader only: each follower's match index and replication mode.
    pub progress: BTreeMap<NodeId, (LogIndex, ReplicationState)>,
}

/// One replica of one Raft group. See the module docs for the driver contract.
#[derive(Debug)]
pub struct RaftCore {
    id: NodeId,
    config: RaftConfig,
    /// Fixed voter set (stored as a set; membership changes are a later milestone).
    voters: BTreeSet<NodeId>,
    rng: DetRng,

    role: Role,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    log: RaftLog,

    /// Follower/candidate: start an election at this time.
    election_deadline_ns: u64,
    /// When we last heard from the current leader (the lease of RAFT-5).
    leader_contact_ns: Option<u64>,
    /// Pre-vote or vote answers in the current campaign.
    votes: BTreeMap<NodeId, bool>,

    // Leader state.
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_deadline_ns: u64,
    check_quorum_deadline_ns: u64,
    transfer: Option<Transfer>,
    /// ReadIndex confirmation round counter (RAFT-3); echoed by followers in `read_seq`.
    read_seq: u64,
    /// Reads waiting for a heartbeat round, oldest first.
    pending_reads: VecDeque<PendingRead>,
    /// Reads waiting for the leader's first commit in its term.
    reads_before_term_commit: Vec<EarlyRead>,
    /// A heartbeat round must go out for new reads.
    read_round_needed: bool,
    /// The commit index moved: followers with nothing new to receive get an empty append.
    commit_broadcast_needed: bool,
    /// Bytes of this leader's own entries above the commit index (flow control).
    uncommitted_bytes: u64,

    // Follower state.
    /// Reads forwarded to the leader, by context.
    forwarded_reads: ForwardedReads,
    incoming_snapshot: Option<IncomingSnapshot>,

    /// The latest snapshot (ours or installed from a leader), to send to lagging followers.
    /// Shared with the transfers that send it (see `snapshot.rs`).
    /// Invariant: `Some` with `meta.last_index == log.snapshot_index()` whenever that is > 0.
    snapshot: Option<(SnapshotMeta, Arc<[u8]>)>,

    // Output not yet taken by `ready()`.
    msgs: Vec<(NodeId, Message)>,
    msgs_after_sync: Vec<(NodeId, Message)>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,
    snapshot_to_install: Option<(SnapshotMeta, Vec<u8>)>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
}

/// Terms and indexes from peers must stay below this bound, so that our arithmetic on them
/// (`+ 1`, `+ entries.len()`) can never overflow. Real values are far smaller: 2^62 entries
/// at a million per second take 146,000 years.
const TERM_OR_INDEX_BOUND: u64 = 1 << 62;

fn within_bounds(msg: &Message) -> bool {
    let ok = |v: u64| v < TERM_OR_INDEX_BOUND;
    ok(msg.term().0)
        && match msg {
            Message::PreVote { last_log_index, last_log_term, .. }
            | Message::RequestVote { last_log_index, last_log_term, .. } => {
                ok(last_log_index.0) && ok(last_log_term.0)
            }
            Message::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                ok(prev_log_index.0)
                    && ok(prev_log_term.0)
                    && ok(leader_commit.0)
                    && entries.iter().all(|e| ok(e.index.0) && ok(e.term.0))
            }
            Message::AppendResponse { match_index, reject_hint, .. } => {
                ok(match_index.0)
                    && reject_hint.is_none_or(|h| {
                        ok(h.last_index.0)
                            && ok(h.conflict_first_index.0)
                            && h.conflict_term.is_none_or(|t| ok(t.0))
                    })
            }
            Message::InstallSnapshot { meta, .. } => ok(meta.last_index.0) && ok(meta.last_term.0),
            Message::InstallSnapshotResponse { last_index, .. } => ok(last_index.0),
            Message::ReadIndexResponse { index, .. } => index.is_none_or(|i| ok(i.0)),
            Message::PreVoteResponse { .. }
            | Message::VoteResponse { .. }
            | Message::TimeoutNow { .. }
            | Message::ReadIndexRequest { .. } => true,
        }
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    target: NodeId,
    deadline_ns: u64,
    timeout_now_sent: bool,
}

impl RaftCore {
    /// A replica restarting from `restored` (all defaults for a brand-new replica).
    pub fn new(
        config: RaftConfig,
        id: NodeId,
        voters: Vec<NodeId>,
        restored: Restored,
        rng: DetRng,
        now_ns: u64,
    ) -> Result<RaftCore, RestoreError> {
        config.validate()?;
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        if voters.is_empty() {
            return Err(RestoreError::NoVoters);
        }
        if voters.len() > decree_types::limits::VOTERS_MAX {
            return Err(RestoreError::TooManyVoters(voters.len()));
        }
        let Restored { hard_state, snapshot, entries, applied } = restored;
        let (snap_index, snap_term) = match &snapshot {
            Some((meta, _)) if meta.last_index == LogIndex(0) => {
                return Err(RestoreError::InvalidSnapshot(meta.last_index));
            }
            Some((meta, _)) => (meta.last_index, meta.last_term),
            None => (LogIndex(0), Term(0)),
        };
        let term = hard_state.term.max(snap_term);
        let mut kept = Vec::with_capacity(entries.len());
        let mut expected = snap_index.next();
        let mut prev_term = snap_term;
        for entry in entries {
            if entry.index < expected && kept.is_empty() {
                continue; // covered by the snapshot
            }
            if entry.index != expected {
                return Err(RestoreError::EntriesNotContiguous { expected, found: entry.index });
            }
            if entry.term < prev_term || entry.term > term {
                return Err(RestoreError::EntryTermOutOfOrder {
                    index: entry.index,
                    term: entry.term,
                });
            }
            prev_term = entry.term;
            expected = expected.next();
            kept.push(entry);
        }
        let last = expected.prev();
        let applied = applied.max(snap_index);
        if applied > last {
            return Err(RestoreError::AppliedBeyondLog { applied, last });
        }
        // The persisted commit may exceed what survived a torn tail; commit is an optimisation.
        let commit = hard_state.commit.clamp(applied, last);
        let log = RaftLog::restore(snap_index, snap_term, kept, commit, applied);
        let last_hard_state = HardState { term, vote: hard_state.vote, commit };
        let mut core = RaftCore {
            id,
            config,
            voters,
            rng,
            role: Role::Follower,
            term,
            vote: if term == hard_state.term { hard_state.vote } else { None },
            leader: None,
            log,
            election_deadline_ns: now_ns,
            leader_contact_ns: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            heartbeat_deadline_ns: now_ns,
            check_quorum_deadline_ns: now_ns,
            transfer: None,
            read_seq: 0,
            pending_reads: VecDeque::new(),
            reads_before_term_commit: Vec::new(),
            read_round_needed: false,
            commit_broadcast_needed: false,
            uncommitted_bytes: 0,
            forwarded_reads: ForwardedReads::default(),
            incoming_snapshot: None,
            snapshot: snapshot.map(|(meta, data)| (meta, Arc::from(data))),
            msgs: Vec::new(),
            msgs_after_sync: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            snapshot_to_install: None,
            last_hard_state,
            last_soft_state: SoftState { term, leader: None, is_leader: false },
        };
        core.reset_election_deadline(now_ns);
        Ok(core)
    }

    // ----- introspection -----

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader it knows of in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whom it voted for in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The voters of the group.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    /// Highest committed entry.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit()
    }

    /// Highest entry the state machine has applied (as reported by `on_applied`).
    pub fn applied(&self) -> LogIndex {
        self.log.applied()
    }

    /// Last index of the log.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// Index of the latest snapshot (0 if none); the log holds entries above it.
    pub fn snapshot_index(&self) -> LogIndex {
        self.log.snapshot_index()
    }

    /// The term of the entry at `index`, if the log holds it (or it is the snapshot point).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The entries held in memory, from the one after the snapshot to the last.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.log.entries()
    }

    /// The current hard state (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit() }
    }

    /// The current leadership-transfer target, if a transfer is under way.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.target)
    }

    /// The earliest time at which `tick` has something to do.
    pub fn next_deadline_ns(&self) -> u64 {
        let deadline = match self.role {
            Role::Leader => {
                let mut d = self.heartbeat_deadline_ns;
                if self.config.check_quorum {
                    d = d.min(self.check_quorum_deadline_ns);
                }
                if let Some(t) = self.transfer {
                    d = d.min(t.deadline_ns);
                }
                d
            }
            _ => self.election_deadline_ns,
        };
        self.next_read_deadline_ns().map_or(deadline, |r| r.min(deadline))
    }

    /// A summary for status output.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit(),
            applied: self.log.applied(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            progress: self.progress.iter().map(|(id, p)| (*id, (p.match_index, p.state))).collect(),
        }
    }

    // ----- inputs -----

    /// Handles a message from peer `from`. `Err` says why it had no effect (besides perhaps
    /// a reply carrying our term); peers' messages never make the core panic.
    pub fn step(&mut self, now_ns: u64, from: NodeId, msg: Message) -> Result<(), Ignored> {
        if from == self.id || !self.voters.contains(&from) {
            return Err(Ignored::UnknownPeer);
        }
        if !within_bounds(&msg) {
            return Err(Ignored::Malformed("term or index beyond 2^62"));
        }
        let msg_term = msg.term();
        if msg_term > self.term {
            match &msg {
                // RAFT-5: pre-votes travel with the candidate's *next* term; they never
                // change ours, and neither does a granted answer to our own pre-vote.
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true, .. } => {}
                // RAFT-5: within the lease of a live leader a vote request is ignored, unless
                // it is a leadership transfer.
                Message::RequestVote { transfer: false, .. } if self.in_lease(now_ns) => {
                    return Err(Ignored::InLease);
                }
                Message::AppendEntries { .. }
                | Message::InstallSnapshot { .. }
                | Message::TimeoutNow { .. } => self.become_follower(now_ns, msg_term, Some(from)),
                _ => self.become_follower(now_ns, msg_term, None),
            }
        } else if msg_term < self.term {
            return self.step_stale(from, &msg);
        }
        match msg {
            Message::PreVote { term, last_log_index, last_log_term } => {
                self.handle_pre_vote(now_ns, from, term, last_log_index, last_log_term)
            }
            Message::PreVoteResponse { term, granted } => {
                self.handle_pre_vote_response(now_ns, from, term, granted)
            }
            Message::RequestVote { last_log_index, last_log_term, .. } => {
                self.handle_request_vote(now_ns, from, last_log_index, last_log_term)
            }
            Message::VoteResponse { granted, .. } => {
                self.handle_vote_response(now_ns, from, granted)
            }
            Message::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                ..
            } => {
                self.accept_leader(now_ns, from)?;
                self.handle_append(
                    from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                )
            }
            Message::AppendResponse { success, match_index, reject_hint, read_seq, .. } => {
                self.handle_append_response(from, success, match_index, reject_hint, read_seq)
            }
            Message::InstallSnapshot { meta, offset, data, done, .. } => {
                self.accept_leader(now_ns, from)?;
                self.handle_snapshot_chunk(from, meta, offset, data, done)
            }
            Message::InstallSnapshotResponse { last_index, next_offset, done, .. } => {
                self.handle_snapshot_response(from, last_index, next_offset, done)
            }
            Message::TimeoutNow { .. } => self.handle_timeout_now(now_ns, from),
            Message::ReadIndexRequest { ctx, .. } => {
                self.handle_read_index_request(now_ns, from, ctx)
            }
            Message::ReadIndexResponse { ctx, index, .. } => {
                self.handle_read_index_response(ctx, index)
            }
        }
    }

    /// Time passed: fires the election, heartbeat, check-quorum, transfer and read deadlines
    /// that are due at `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        self.expire_reads(now_ns);
        match self.role {
            Role::Leader => self.tick_leader(now_ns),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now_ns >= self.election_deadline_ns {
                    self.campaign(now_ns);
                }
            }
        }
    }

    /// Appends a command to the log (leader only) and returns its index. The entry is
    /// committed once a majority persisted it; watch `committed_entries` for it (its term
    /// tells whether it is the same entry: a new leader may have replaced it).
    pub fn propose(&mut self, _now_ns: u64, data: Vec<u8>) -> Result<LogIndex, AppendError> {
        if self.role != Role::Leader {
            return Err(AppendError::NotLeader { leader_hint: self.leader });
        }
        if let Some(t) = self.transfer {
            // RAFT-6: no new proposals while the leadership moves.
            return Err(AppendError::TransferInProgress { target: t.target });
        }
        let payload = EntryPayload::Command(data);
        let bytes = log::payload_bytes(&payload);
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(bytes) > self.config.max_uncommitted_bytes
        {
            return Err(AppendError::TooManyUncommitted {
                uncommitted_bytes: self.uncommitted_bytes,
            });
        }
        Ok(self.append_own(payload))
    }

    /// The driver made the log durable up to `index`, whose entry has `term` (use
    /// [`Ready::persist_mark`]). Stale reports about replaced entries are ignored.
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        if self.log.persisted_to(index, term) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The state machine applied every committed entry up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
    }

    /// Is there anything for the driver to do?
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.msgs_after_sync.is_empty()
            || self.hard_state() != self.last_hard_state
            || self.soft_state() != self.last_soft_state
            || self.snapshot_to_install.is_some()
            || self.log.has_unstable()
            || self.log.has_to_apply()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    /// Takes everything the driver must do now; see the module docs for the order.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.send_appends();
        }
        let hard_state = self.hard_state();
        let hard_state = (hard_state != self.last_hard_state).then(|| {
            // Invariant: term and commit index never decrease in what we ask to persist.
            assert!(hard_state.term >= self.last_hard_state.term);
            assert!(hard_state.commit >= self.last_hard_state.commit);
            self.last_hard_state = hard_state;
            hard_state
        });
        let soft_state = self.soft_state();
        let soft_state = (soft_state != self.last_soft_state).then(|| {
            self.last_soft_state = soft_state;
            soft_state
        });
        Ready {
            messages: std::mem::take(&mut self.msgs),
            hard_state,
            snapshot: self.snapshot_to_install.take(),
            entries: self.log.take_unstable(),
            persisted_messages: AfterSync::new(std::mem::take(&mut self.msgs_after_sync)),
            committed_entries: self.log.take_to_apply(self.config.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
            failed_reads: std::mem::take(&mut self.failed_reads),
            soft_state,
        }
    }

    // ----- helpers shared by the submodules -----

    fn soft_state(&self) -> SoftState {
        SoftState { term: self.term, leader: self.leader, is_leader: self.role == Role::Leader }
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn peers(&self) -> Vec<NodeId> {
        self.voters.iter().copied().filter(|&v| v != self.id).collect()
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.msgs.push((to, msg));
    }

    /// Queues a message that acknowledges durable state: it leaves after the fsync (RAFT-1).
    fn send_after_sync(&mut self, to: NodeId, msg: Message) {
        self.msgs_after_sync.push((to, msg));
    }

    fn reset_election_deadline(&mut self, now_ns: u64) {
        let min = self.config.election_min_ns();
        let max = self.config.election_max_ns();
        self.election_deadline_ns = now_ns.saturating_add(self.rng.range(min, max));
    }

    /// RAFT-5: have we heard from a live leader within the minimum election timeout?
    fn in_lease(&self, now_ns: u64) -> bool {
        match self.leader {
            Some(l) if l == self.id => self.role == Role::Leader,
            Some(_) => self
                .leader_contact_ns
                .is_some_and(|t| now_ns < t.saturating_add(self.config.election_min_ns())),
            None => false,
        }
    }

    /// A message from an older term: answer so a deposed leader or a stale candidate learns
    /// our term, otherwise drop it.
    fn step_stale(&mut self, from: NodeId, msg: &Message) -> Result<(), Ignored> {
        match msg {
            Message::AppendEntries { .. } | Message::InstallSnapshot { .. } => {
                let reply = Message::AppendResponse {
                    term: self.term,
                    success: false,
                    match_index: LogIndex(0),
                    reject_hint: None,
                    read_seq: 0,
                };
                self.send_after_sync(from, reply);
            }
            Message::PreVote { .. } => {
                self.send(from, Message::PreVoteResponse { term: self.term, granted: false });
            }
            Message::RequestVote { .. } => {
                self.send_after_sync(
                    from,
                    Message::VoteResponse { term: self.term, granted: false },
                );
            }
            Message::ReadIndexRequest { ctx, .. } => {
                let reply = Message::ReadIndexResponse { term: self.term, ctx: *ctx, index: None };
                self.send(from, reply);
            }
            _ => {}
        }
        Err(Ignored::StaleTerm)
    }
}
