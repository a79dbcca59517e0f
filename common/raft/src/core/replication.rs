//! Log replication (§5.3): the leader's pipelined appends and heartbeats, the follower's
//! consistency check with fast back-tracking, the commit rule (RAFT-2), check-quorum (RAFT-4)
//! and leadership transfer (RAFT-6).

use std::sync::Arc;

use decree_types::{LogIndex, NodeId, Term};

use super::{log, Ignored, Mutation, RaftCore, ReplicationState, Role, Transfer, TransferError};
use crate::msg::{Entry, EntryPayload, Message, RejectHint};

impl RaftCore {
    /// RAFT-6: hands leadership to `to`. Proposals are refused until the transfer ends; the
    /// target is caught up, then sent `TimeoutNow`; the transfer is abandoned after an
    /// election timeout. Transferring to ourselves is a no-op.
    pub fn transfer_leadership(&mut self, now_ns: u64, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader_hint: self.leader });
        }
        if !self.voters.contains(&to) {
            return Err(TransferError::NotAVoter(to));
        }
        if to == self.id {
            self.transfer = None;
            return Ok(());
        }
        if self.transfer.is_some_and(|t| t.target == to) {
            return Ok(());
        }
        let deadline_ns = now_ns.saturating_add(self.config.election_min_ns());
        self.transfer = Some(Transfer { target: to, deadline_ns, timeout_now_sent: false });
        let last_index = self.log.last_index();
        if let Some(p) = self.progress.get_mut(&to) {
            // Catch the target up now rather than after the next heartbeat notices a gap.
            if p.state != ReplicationState::Snapshot && p.match_index < last_index {
                let next = p.match_index.next();
                p.become_probe(next);
            }
        }
        self.maybe_send_timeout_now();
        Ok(())
    }

    /// Appends an entry of our term at the end of the leader's log.
    pub(super) fn append_own(&mut self, payload: EntryPayload) -> LogIndex {
        assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index().next();
        self.uncommitted_bytes =
            self.uncommitted_bytes.saturating_add(log::payload_bytes(&payload));
        self.log.push(Entry { term: self.term, index, payload });
        if self.voters.len() == 1 {
            // Nothing to wait for but our own fsync (reported via on_persisted).
            self.maybe_commit();
        }
        index
    }

    pub(super) fn tick_leader(&mut self, now_ns: u64) {
        if self.config.check_quorum && now_ns >= self.check_quorum_deadline_ns {
            // RAFT-4: without a majority heard from for an election timeout, step down so
            // clients stop waiting on a partitioned leader.
            let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
            if active < self.quorum() {
                tracing::info!(id = %self.id, term = %self.term, "check-quorum failed; stepping down");
                self.become_follower(now_ns, self.term, None);
                return;
            }
            for p in self.progress.values_mut() {
                if p.state == ReplicationState::Snapshot && !p.recent_active {
                    // RAFT-8: a follower silent for a whole round is lost for now: release the
                    // snapshot its transfer holds. When it answers again it gets our current
                    // snapshot.
                    let next = p.match_index.next();
                    p.become_probe(next);
                }
                p.recent_active = false;
            }
            self.check_quorum_deadline_ns = now_ns.saturating_add(self.config.election_min_ns());
        }
        if let Some(t) = self.transfer {
            if now_ns >= t.deadline_ns {
                tracing::info!(id = %self.id, target = %t.target, "leadership transfer timed out");
                self.transfer = None;
            }
        }
        if now_ns >= self.heartbeat_deadline_ns {
            self.heartbeat_deadline_ns = self.next_heartbeat_ns(now_ns);
            self.broadcast_heartbeat();
        }
    }

    /// The next heartbeat time after `now_ns`: the next multiple of the heartbeat interval on
    /// the driver's clock, not `now + interval`. Every group of a node shares that clock, so
    /// every group the node leads falls due at the same instants and their heartbeats leave
    /// in the same driver iteration, one batch per peer (coalesced heartbeats). The gap to
    /// the next heartbeat is never more than one interval.
    pub(super) fn next_heartbeat_ns(&self, now_ns: u64) -> u64 {
        let interval = self.config.heartbeat_ns().max(1);
        (now_ns / interval).saturating_add(1).saturating_mul(interval)
    }

    /// One heartbeat to every follower: an empty append at the follower's match index, which
    /// carries the commit index (High-Water Mark) and the current ReadIndex round. It also
    /// resumes a paused probe, retransmits a snapshot chunk, and notices lost pipelined
    /// appends (no progress for a whole heartbeat interval).
    pub(super) fn broadcast_heartbeat(&mut self) {
        self.read_round_needed = false;
        if let Some(t) = self.transfer.as_mut() {
            // RAFT-6: a lost TimeoutNow is sent again on the target's next acknowledgement.
            // A target that got it campaigns in a higher term, which ends our leadership (a
            // copy arriving after that is ignored), so at most one goes out per interval.
            t.timeout_now_sent = false;
        }
        for peer in self.peers() {
            let last_index = self.log.last_index();
            let Some(p) = self.progress.get_mut(&peer) else { continue };
            match p.state {
                ReplicationState::Probe => p.probe_paused = false,
                ReplicationState::Replicate => {
                    if p.match_index == p.match_at_heartbeat
                        && p.match_index < last_index
                        && !p.inflight.is_empty()
                    {
                        let next = p.match_index.next();
                        p.become_probe(next);
                    }
                }
                ReplicationState::Snapshot => {
                    if let Some(send) = p.snapshot.as_mut() {
                        send.awaiting = false;
                    }
                }
            }
            p.match_at_heartbeat = p.match_index;
            self.send_heartbeat(peer);
        }
    }

    fn send_heartbeat(&mut self, peer: NodeId) {
        let Some(p) = self.progress.get(&peer) else { return };
        // If the match point was compacted, index 0 (term 0) matches every log.
        let (prev, prev_term) = match self.log.term_at(p.match_index) {
            Some(t) => (p.match_index, t),
            None => (LogIndex(0), Term(0)),
        };
        let msg = Message::AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.commit(),
            read_seq: self.read_seq,
        };
        self.send(peer, msg);
    }

    /// Would `send_appends` send anything?
    pub(super) fn has_appends_to_send(&self) -> bool {
        if self.read_round_needed {
            return true;
        }
        let last = self.log.last_index();
        self.progress.values().any(|p| match p.state {
            ReplicationState::Probe => {
                !p.probe_paused && (p.next_index <= last || self.commit_broadcast_needed)
            }
            ReplicationState::Replicate => {
                p.inflight.len() < self.config.max_inflight_appends
                    && (p.next_index <= last || self.commit_broadcast_needed)
            }
            ReplicationState::Snapshot => p.snapshot.as_ref().is_some_and(|s| !s.awaiting),
        })
    }

    /// Sends each follower what flow control allows. Called when a `Ready` is built, so every
    /// proposal made since the previous `Ready` shares one AppendEntries per follower.
    pub(super) fn send_appends(&mut self) {
        let broadcast_commit = std::mem::take(&mut self.commit_broadcast_needed);
        let read_round = std::mem::take(&mut self.read_round_needed);
        for peer in self.peers() {
            let sent = self.send_appends_to(peer, broadcast_commit);
            if read_round && !sent {
                self.send_heartbeat(peer);
            }
        }
    }

    /// Returns whether an AppendEntries was sent (it carries the current `read_seq`).
    fn send_appends_to(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let Some(p) = self.progress.get(&peer) else { return false };
        let last = self.log.last_index();
        match p.state {
            ReplicationState::Snapshot => {
                self.send_snapshot_chunk(peer);
                false
            }
            ReplicationState::Probe => {
                if p.probe_paused || (p.next_index > last && !allow_empty) {
                    return false;
                }
                let next = p.next_index;
                if !self.send_append_from(peer, next) {
                    return false;
                }
                if let Some(p) = self.progress.get_mut(&peer) {
                    p.probe_paused = true;
                }
                true
            }
            ReplicationState::Replicate => {
                let mut sent = false;
                loop {
                    let Some(p) = self.progress.get(&peer) else { return sent };
                    if p.state != ReplicationState::Replicate
                        || p.inflight.len() >= self.config.max_inflight_appends
                        || (p.next_index > last && (sent || !allow_empty))
                    {
                        return sent;
                    }
                    let next = p.next_index;
                    if !self.send_append_from(peer, next) {
                        return sent;
                    }
                    sent = true;
                }
            }
        }
    }

    /// Sends entries from `next` on (possibly none); switches the follower to snapshot mode
    /// when they were compacted. Returns whether an AppendEntries was sent.
    fn send_append_from(&mut self, peer: NodeId, next: LogIndex) -> bool {
        let prev = next.prev();
        let (Some(prev_term), Some(entries)) = (
            self.log.term_at(prev),
            if next > self.log.last_index() {
                Some(Vec::new())
            } else {
                // Cut at the byte budget and at the wire's entry count, whichever comes first.
                let room = self.config.max_append_entries.saturating_sub(1) as u64;
                let last = self.log.last_index().min(LogIndex(next.0.saturating_add(room)));
                self.log.slice(next, last, self.config.max_append_bytes)
            },
        ) else {
            // RAFT-8: the follower needs entries we compacted: send our current snapshot. The
            // transfer keeps it until the follower has it, even if we compact again.
            let Some((meta, data)) = self.snapshot.as_ref() else {
                tracing::error!(id = %self.id, %peer, "log compacted but no snapshot to send");
                return false;
            };
            let (meta, data) = (meta.clone(), Arc::clone(data));
            if let Some(p) = self.progress.get_mut(&peer) {
                p.become_snapshot(meta, data);
            }
            self.send_snapshot_chunk(peer);
            return false;
        };
        let last_sent = entries.last().map_or(prev, |e| e.index);
        if let Some(p) = self.progress.get_mut(&peer) {
            if p.state == ReplicationState::Replicate && last_sent > prev {
                p.inflight.push_back(last_sent);
                p.next_index = last_sent.next();
            }
        }
        let msg = Message::AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.commit(),
            read_seq: self.read_seq,
        };
        self.send(peer, msg);
        true
    }

    /// Follower side of AppendEntries (§5.3), after `accept_leader`.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_seq: u64,
    ) -> Result<(), Ignored> {
        check_entries(self.term, prev_log_index, prev_log_term, &entries)?;
        let commit = self.log.commit();
        // Entries at or below our commit index already match the leader's (Leader
        // Completeness): skip them, and check from our commit point instead.
        let (prev, prev_term, entries) = if prev_log_index < commit {
            let skip = usize::try_from(commit.0 - prev_log_index.0).unwrap_or(usize::MAX);
            if let Some(e) = entries.get(skip.saturating_sub(1)).filter(|_| skip > 0) {
                if self.log.term_at(e.index).is_some_and(|t| t != e.term) {
                    return Err(Ignored::Malformed("contradicts a committed entry"));
                }
            }
            let rest = entries.into_iter().skip(skip).collect::<Vec<_>>();
            // Invariant: commit >= snapshot index, so the log knows the term at commit.
            (commit, self.log.term_at(commit).unwrap_or_default(), rest)
        } else {
            (prev_log_index, prev_log_term, entries)
        };
        if self.log.term_at(prev) != Some(prev_term) {
            let hint = self.reject_hint(prev);
            let reply = Message::AppendResponse {
                term: self.term,
                success: false,
                match_index: prev_log_index,
                reject_hint: Some(hint),
                read_seq,
            };
            self.send_after_sync(from, reply);
            return Ok(());
        }
        let last_new = LogIndex(prev.0 + entries.len() as u64);
        if let Some(pos) = entries.iter().position(|e| self.log.term_at(e.index) != Some(e.term)) {
            if entries[pos].index <= self.log.commit() {
                return Err(Ignored::Malformed("would overwrite a committed entry"));
            }
            self.log.truncate_and_append(&entries[pos..]);
        } else if self.config.mutation == Mutation::TruncateOnDuplicateAppend {
            // (Entries at or below the commit index were skipped above.)
            self.log.truncate_and_append(&entries);
        }
        self.log.commit_to(leader_commit.min(last_new));
        // RAFT-1: the acknowledgement leaves only after the appended entries are durable.
        let reply = Message::AppendResponse {
            term: self.term,
            success: true,
            match_index: last_new,
            reject_hint: None,
            read_seq,
        };
        self.send_after_sync(from, reply);
        Ok(())
    }

    /// Fast back-tracking: tell the leader where our log could diverge from its at `prev`.
    fn reject_hint(&self, prev: LogIndex) -> RejectHint {
        let last_index = self.log.last_index();
        match self.log.term_at(prev) {
            Some(term) if prev <= last_index => RejectHint {
                last_index,
                conflict_term: Some(term),
                conflict_first_index: self.log.first_index_of_term(term, prev),
            },
            _ => RejectHint {
                last_index,
                conflict_term: None,
                conflict_first_index: last_index.next(),
            },
        }
    }

    /// Leader side of an AppendEntries answer.
    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        reject_hint: Option<RejectHint>,
        read_seq: u64,
    ) -> Result<(), Ignored> {
        if self.role != Role::Leader {
            return Err(Ignored::WrongRole);
        }
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return Err(Ignored::UnknownPeer) };
        p.recent_active = true;
        if read_seq > p.read_seq_acked && read_seq <= self.read_seq {
            p.read_seq_acked = read_seq;
        }
        if success {
            if match_index > last_index {
                return Err(Ignored::Malformed("acknowledges entries we never sent"));
            }
            let moved = p.ack(match_index);
            match p.state {
                ReplicationState::Probe => p.become_replicate(),
                ReplicationState::Snapshot if p.snapshot_arrived() => p.become_replicate(),
                _ => {}
            }
            if moved {
                self.maybe_commit();
            }
            // RAFT-6: any acknowledgement may show the target caught up, also one that does
            // not move its match index (it may have moved with a snapshot acknowledgement).
            self.maybe_send_timeout_now();
        } else {
            // `match_index` of a rejection is the `prev_log_index` that did not match.
            let rejected = match_index;
            if rejected > last_index {
                return Err(Ignored::Malformed("rejects an index we never sent"));
            }
            if rejected <= p.match_index {
                self.confirm_reads();
                return Err(Ignored::Stale);
            }
            if p.state == ReplicationState::Probe && rejected != p.next_index.prev() {
                self.confirm_reads();
                return Err(Ignored::Stale);
            }
            let next = match reject_hint {
                None => rejected,
                Some(RejectHint { last_index: follower_last, conflict_term: None, .. }) => {
                    follower_last.next()
                }
                Some(RejectHint { conflict_term: Some(term), conflict_first_index, .. }) => {
                    match self.log.last_index_of_term(term, rejected) {
                        Some(ours) => ours.next(),
                        None => conflict_first_index,
                    }
                }
            };
            // Back up at least one step, never below what is known to match.
            let next = next.min(rejected).max(LogIndex(1));
            if let Some(p) = self.progress.get_mut(&from) {
                p.become_probe(next);
            }
        }
        self.confirm_reads();
        Ok(())
    }

    /// RAFT-2 / INV-R7: the commit index advances only to an entry of the current term that a
    /// majority (counting our own log only as far as it is persisted) holds.
    pub(super) fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self.progress.values().map(|p| p.match_index).collect();
        matches.push(self.log.persisted().min(self.log.last_index()));
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[self.quorum() - 1];
        let counts = self.log.term_at(candidate) == Some(self.term)
            || self.config.mutation == Mutation::CommitOldTermByCounting;
        if candidate <= self.log.commit() || !counts {
            return;
        }
        let old_commit = self.log.commit();
        let first_commit_in_term = self.log.term_at(old_commit) != Some(self.term);
        let committed_bytes: u64 = (old_commit.0 + 1..=candidate.0)
            .filter_map(|i| self.log.entry(LogIndex(i)))
            .filter(|e| e.term == self.term)
            .map(|e| log::payload_bytes(&e.payload))
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed_bytes);
        self.log.commit_to(candidate);
        self.commit_broadcast_needed = true;
        if first_commit_in_term {
            self.release_reads_waiting_for_term_commit();
        }
    }

    /// RAFT-6: once the target's log matches ours, tell it to campaign.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = self.transfer else { return };
        if t.timeout_now_sent {
            return;
        }
        let caught_up =
            self.progress.get(&t.target).is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(t.target, Message::TimeoutNow { term: self.term });
            self.transfer = Some(Transfer { timeout_now_sent: true, ..t });
        }
    }
}

/// An AppendEntries must carry a contiguous run of entries right after `prev`, with terms
/// that never decrease, start at or above `prev_term` and never exceed the sender's term.
fn check_entries(
    term: Term,
    prev: LogIndex,
    prev_term: Term,
    entries: &[Entry],
) -> Result<(), Ignored> {
    let mut expected = prev.next();
    let mut last_term = prev_term;
    if prev_term > term {
        return Err(Ignored::Malformed("prev_log_term above the sender's term"));
    }
    for e in entries {
        if e.index != expected {
            return Err(Ignored::Malformed("entries not contiguous"));
        }
        if e.term < last_term || e.term > term {
            return Err(Ignored::Malformed("entry terms out of order"));
        }
        last_term = e.term;
        expected = expected.next();
    }
    Ok(())
}
