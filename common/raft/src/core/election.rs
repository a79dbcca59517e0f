//! Elections: pre-vote (RAFT-5), votes (§5.2, §5.4.1), role changes, and the no-op a new
//! leader appends (RAFT-2).

use decree_types::{LogIndex, NodeId, Term};

use super::{Ignored, Mutation, Progress, RaftCore, Role};
use crate::msg::{EntryPayload, Message};

impl RaftCore {
    /// Starts an election now, as if the election timeout had fired: a pre-vote round first
    /// when `pre_vote` is on. A leader or a replica that is not a voter does nothing.
    pub fn campaign(&mut self, now_ns: u64) {
        self.start_election(now_ns, false);
    }

    pub(super) fn start_election(&mut self, now_ns: u64, transfer: bool) {
        if self.role == Role::Leader || !self.voters.contains(&self.id) {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate(now_ns);
        } else {
            self.become_candidate(now_ns, transfer);
        }
    }

    /// RAFT-5: ask whether a majority would vote for us in the next term, without changing
    /// our term (so a node rejoining from a partition cannot depose a healthy leader).
    fn become_pre_candidate(&mut self, now_ns: u64) {
        self.start_campaign(now_ns, Role::PreCandidate);
        if self.votes_granted() >= self.quorum() {
            self.become_candidate(now_ns, false);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term.next();
        for peer in self.peers() {
            self.send(peer, Message::PreVote { term, last_log_index, last_log_term });
        }
    }

    /// §5.2: increment the term, vote for ourselves, ask everyone. The requests are
    /// `persisted_messages`: they leave only once the new term and self-vote are durable, so
    /// no vote can be counted for a term this replica could forget in a crash (RAFT-1).
    fn become_candidate(&mut self, now_ns: u64, transfer: bool) {
        self.start_campaign(now_ns, Role::Candidate);
        if self.votes_granted() >= self.quorum() {
            self.become_leader(now_ns);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term;
        for peer in self.peers() {
            let msg = Message::RequestVote { term, last_log_index, last_log_term, transfer };
            self.send_after_sync(peer, msg);
        }
    }

    /// What a pre-vote and a real election both begin with: no leader, our own vote counted,
    /// a fresh randomized timeout; a real election also moves to the next term and votes for
    /// itself.
    fn start_campaign(&mut self, now_ns: u64, role: Role) {
        // The refusals of waiting reads carry the term we had until now.
        self.fail_reads_on_leader_change();
        if role == Role::Candidate {
            self.term = self.term.next();
            self.vote = Some(self.id);
        }
        self.role = role;
        self.leader = None;
        self.leader_contact_ns = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_deadline(now_ns);
    }

    pub(super) fn become_follower(&mut self, now_ns: u64, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "terms never decrease");
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role != Role::Follower || self.leader != leader {
            self.fail_reads_on_leader_change();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.leader_contact_ns = leader.map(|_| now_ns);
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.reset_election_deadline(now_ns);
    }

    /// §5.2 and RAFT-2: take the lead and append a no-op, whose commit commits every older
    /// entry and lets ReadIndex start (RAFT-3).
    fn become_leader(&mut self, now_ns: u64) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.leader_contact_ns = None;
        self.votes.clear();
        self.transfer = None;
        self.read_seq = 0;
        self.read_round_needed = false;
        self.commit_broadcast_needed = false;
        self.uncommitted_bytes = 0;
        let next = self.log.last_index().next();
        self.progress = self.peers().into_iter().map(|p| (p, Progress::new(next))).collect();
        // The no-op below goes out at once; heartbeats follow on the node-wide grid.
        self.heartbeat_deadline_ns = self.next_heartbeat_ns(now_ns);
        self.check_quorum_deadline_ns = now_ns.saturating_add(self.config.election_min_ns());
        self.append_own(EntryPayload::Noop);
    }

    /// §5.4.1: is a candidate's log ending at `(last_log_term, last_log_index)` at least as
    /// up to date as ours?
    fn log_is_up_to_date(&self, last_log_term: Term, last_log_index: LogIndex) -> bool {
        self.config.mutation == Mutation::NoElectionRestriction
            || self.log.is_up_to_date(last_log_term, last_log_index)
    }

    fn votes_granted(&self) -> usize {
        self.votes.values().filter(|&&g| g).count()
    }

    fn votes_rejected(&self) -> usize {
        self.votes.values().filter(|&&g| !g).count()
    }

    pub(super) fn handle_pre_vote(
        &mut self,
        now_ns: u64,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> Result<(), Ignored> {
        // RAFT-5: grant only for a future term, an up-to-date log (§5.4.1), and when no live
        // leader is known (we have not heard from one within the minimum election timeout).
        let granted = term > self.term
            && self.log_is_up_to_date(last_log_term, last_log_index)
            && !self.in_lease(now_ns);
        let reply_term = if granted { term } else { self.term };
        self.send(from, Message::PreVoteResponse { term: reply_term, granted });
        Ok(())
    }

    pub(super) fn handle_pre_vote_response(
        &mut self,
        now_ns: u64,
        from: NodeId,
        term: Term,
        granted: bool,
    ) -> Result<(), Ignored> {
        if self.role != Role::PreCandidate {
            return Err(Ignored::WrongRole);
        }
        if granted && term != self.term.next() {
            return Err(Ignored::Stale);
        }
        self.votes.entry(from).or_insert(granted);
        if self.votes_granted() >= self.quorum() {
            self.become_candidate(now_ns, false);
        } else if self.votes_rejected() >= self.quorum() {
            self.become_follower(now_ns, self.term, None);
        }
        Ok(())
    }

    pub(super) fn handle_request_vote(
        &mut self,
        now_ns: u64,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> Result<(), Ignored> {
        // §5.2: one vote per term (a repeated request from the same candidate gets the same
        // answer); §5.4.1: only for a log at least as up to date as ours.
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log_is_up_to_date(last_log_term, last_log_index);
        if granted {
            self.vote = Some(from);
            self.reset_election_deadline(now_ns);
        }
        // RAFT-1: the grant leaves only after the vote is durable.
        self.send_after_sync(from, Message::VoteResponse { term: self.term, granted });
        Ok(())
    }

    pub(super) fn handle_vote_response(
        &mut self,
        now_ns: u64,
        from: NodeId,
        granted: bool,
    ) -> Result<(), Ignored> {
        if self.role != Role::Candidate {
            return Err(Ignored::WrongRole);
        }
        self.votes.entry(from).or_insert(granted);
        if self.votes_granted() >= self.quorum() {
            self.become_leader(now_ns);
        } else if self.votes_rejected() >= self.quorum() {
            self.become_follower(now_ns, self.term, None);
        }
        Ok(())
    }

    /// A message only a leader of our term sends: acknowledge it as leader, stepping down
    /// from a candidacy.
    pub(super) fn accept_leader(&mut self, now_ns: u64, from: NodeId) -> Result<(), Ignored> {
        match self.role {
            Role::Leader => Err(Ignored::Malformed("a second leader in our term")),
            Role::PreCandidate | Role::Candidate => {
                self.become_follower(now_ns, self.term, Some(from));
                Ok(())
            }
            Role::Follower => {
                if self.leader != Some(from) {
                    self.fail_reads_on_leader_change();
                    self.leader = Some(from);
                }
                self.leader_contact_ns = Some(now_ns);
                self.reset_election_deadline(now_ns);
                Ok(())
            }
        }
    }

    /// RAFT-6: the leader asks us to start an election at once, bypassing pre-vote and the
    /// followers' leader lease.
    pub(super) fn handle_timeout_now(&mut self, now_ns: u64, from: NodeId) -> Result<(), Ignored> {
        if self.leader != Some(from) || self.role != Role::Follower {
            return Err(Ignored::WrongRole);
        }
        self.start_election(now_ns, true);
        Ok(())
    }
}
