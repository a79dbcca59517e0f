//! ReadIndex reads (RAFT-3), on the leader and on followers that ask the leader (Follower
//! Reads).
//!
//! The leader (1) waits until it has committed an entry of its term (its no-op), (2) records
//! its commit index as the read index, (3) confirms it is still the leader with a heartbeat
//! round that a majority acknowledges — every AppendEntries carries the round number
//! `read_seq` and followers echo it — and then (4) emits a [`ReadState`] (or answers the
//! follower that asked). The reader serves once its replica applied the read index (5).
//!
//! Every read is answered or failed within an election timeout (the minimum): a read whose
//! confirmation round does not complete in that time, or whose request to the leader or
//! answer from it is lost, fails and the reader retries. Without the bound a lost
//! `ReadIndexRequest` or `ReadIndexResponse` would hold its reader, and its slot among
//! `max_pending_reads`, for as long as the leader lives.

use std::collections::{BTreeMap, BTreeSet};

use decree_types::{LogIndex, NodeId};

use super::{Ignored, RaftCore, ReadIndexError, Role};
use crate::msg::Message;
use crate::ready::ReadState;

/// Who asked for a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reader {
    /// The application on this replica.
    Local,
    /// A follower, on behalf of one of its readers.
    Follower(NodeId),
}

/// A read waiting for its heartbeat round to be acknowledged by a majority.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRead {
    pub(super) reader: Reader,
    pub(super) ctx: u64,
    pub(super) index: LogIndex,
    pub(super) seq: u64,
    /// The read fails if its round has not completed by then.
    pub(super) deadline_ns: u64,
}

/// A leader's read waiting for the first commit of its term: `(reader, ctx, deadline_ns)`.
pub(super) type EarlyRead = (Reader, u64, u64);

/// Reads a follower forwarded to its leader and waits to hear about, with their deadlines.
#[derive(Debug, Default)]
pub(super) struct ForwardedReads {
    by_ctx: BTreeMap<u64, u64>,
    /// `(deadline_ns, ctx)` of every entry of `by_ctx`.
    by_deadline: BTreeSet<(u64, u64)>,
}

impl ForwardedReads {
    pub(super) fn len(&self) -> usize {
        self.by_ctx.len()
    }

    fn insert(&mut self, ctx: u64, deadline_ns: u64) {
        if let Some(old) = self.by_ctx.insert(ctx, deadline_ns) {
            self.by_deadline.remove(&(old, ctx));
        }
        self.by_deadline.insert((deadline_ns, ctx));
    }

    fn remove(&mut self, ctx: u64) -> bool {
        match self.by_ctx.remove(&ctx) {
            Some(deadline_ns) => self.by_deadline.remove(&(deadline_ns, ctx)),
            None => false,
        }
    }

    /// Removes and returns every read, in `ctx` order.
    fn take_all(&mut self) -> Vec<u64> {
        self.by_deadline.clear();
        std::mem::take(&mut self.by_ctx).into_keys().collect()
    }

    /// Removes and returns the reads whose deadline is at or before `now_ns`.
    fn take_expired(&mut self, now_ns: u64) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(deadline_ns, ctx)) = self.by_deadline.first() {
            if deadline_ns > now_ns {
                break;
            }
            self.by_deadline.pop_first();
            self.by_ctx.remove(&ctx);
            out.push(ctx);
        }
        out
    }

    pub(super) fn next_deadline_ns(&self) -> Option<u64> {
        self.by_deadline.first().map(|&(d, _)| d)
    }
}

impl RaftCore {
    /// Asks for a linearizable read index for the reader `ctx`. The answer comes in a later
    /// [`Ready`](crate::Ready): a `ReadState { ctx, index }` (serve once applied ≥ index) or
    /// `ctx` in `failed_reads` (retry). A follower forwards the request to its leader.
    /// One of the two comes within the minimum election timeout.
    pub fn read_index(&mut self, now_ns: u64, ctx: u64) -> Result<(), ReadIndexError> {
        let deadline_ns = now_ns.saturating_add(self.config.election_min_ns());
        match self.role {
            Role::Leader => {
                if self.pending_read_count() >= self.config.max_pending_reads {
                    return Err(ReadIndexError::TooManyPendingReads);
                }
                self.leader_read(Reader::Local, ctx, deadline_ns);
                Ok(())
            }
            _ => {
                let Some(leader) = self.leader else { return Err(ReadIndexError::NoLeader) };
                if self.forwarded_reads.len() >= self.config.max_pending_reads {
                    return Err(ReadIndexError::TooManyPendingReads);
                }
                self.forwarded_reads.insert(ctx, deadline_ns);
                self.send(leader, Message::ReadIndexRequest { term: self.term, ctx });
                Ok(())
            }
        }
    }

    fn pending_read_count(&self) -> usize {
        self.pending_reads.len() + self.reads_before_term_commit.len()
    }

    fn leader_read(&mut self, reader: Reader, ctx: u64, deadline_ns: u64) {
        // (1) Only once an entry of our term is committed does our commit index cover every
        // entry committed by earlier leaders.
        if self.log.term_at(self.log.commit()) != Some(self.term) {
            self.reads_before_term_commit.push((reader, ctx, deadline_ns));
            return;
        }
        // (2) record the read index, (3) start a confirmation round.
        let index = self.log.commit();
        if self.voters.len() == 1 {
            self.answer_read(reader, ctx, Some(index));
            return;
        }
        if !self.read_round_needed {
            self.read_seq += 1;
            self.read_round_needed = true;
        }
        let seq = self.read_seq;
        self.pending_reads.push_back(PendingRead { reader, ctx, index, seq, deadline_ns });
    }

    pub(super) fn release_reads_waiting_for_term_commit(&mut self) {
        for (reader, ctx, deadline_ns) in std::mem::take(&mut self.reads_before_term_commit) {
            self.leader_read(reader, ctx, deadline_ns);
        }
    }

    /// Fails every read whose deadline passed: a leader's reads whose round found no
    /// majority in time, a follower's reads whose request or answer was lost.
    pub(super) fn expire_reads(&mut self, now_ns: u64) {
        // Reads enter both leader queues in the order of their deadlines.
        while self.pending_reads.front().is_some_and(|r| r.deadline_ns <= now_ns) {
            if let Some(r) = self.pending_reads.pop_front() {
                self.answer_read(r.reader, r.ctx, None);
            }
        }
        let expired = self.reads_before_term_commit.partition_point(|r| r.2 <= now_ns);
        let early: Vec<EarlyRead> = self.reads_before_term_commit.drain(..expired).collect();
        for (reader, ctx, _) in early {
            self.answer_read(reader, ctx, None);
        }
        let forwarded = self.forwarded_reads.take_expired(now_ns);
        self.failed_reads.extend(forwarded);
    }

    /// The earliest deadline of a waiting read.
    pub(super) fn next_read_deadline_ns(&self) -> Option<u64> {
        let leader = [
            self.pending_reads.front().map(|r| r.deadline_ns),
            self.reads_before_term_commit.first().map(|r| r.2),
        ];
        leader.into_iter().flatten().chain(self.forwarded_reads.next_deadline_ns()).min()
    }

    /// (4) Releases every pending read whose round a majority has acknowledged.
    pub(super) fn confirm_reads(&mut self) {
        while let Some(read) = self.pending_reads.front().copied() {
            let acks = 1 + self.progress.values().filter(|p| p.read_seq_acked >= read.seq).count();
            if acks < self.quorum() {
                break;
            }
            self.pending_reads.pop_front();
            self.answer_read(read.reader, read.ctx, Some(read.index));
        }
    }

    fn answer_read(&mut self, reader: Reader, ctx: u64, index: Option<LogIndex>) {
        match (reader, index) {
            (Reader::Local, Some(index)) => self.read_states.push(ReadState { ctx, index }),
            (Reader::Local, None) => self.failed_reads.push(ctx),
            (Reader::Follower(to), index) => {
                self.send(to, Message::ReadIndexResponse { term: self.term, ctx, index });
            }
        }
    }

    pub(super) fn handle_read_index_request(
        &mut self,
        now_ns: u64,
        from: NodeId,
        ctx: u64,
    ) -> Result<(), Ignored> {
        if self.role != Role::Leader || self.pending_read_count() >= self.config.max_pending_reads {
            self.send(from, Message::ReadIndexResponse { term: self.term, ctx, index: None });
            return Ok(());
        }
        // The follower gives up after an election timeout of its own; answering later is
        // harmless (it ignores an answer it no longer waits for).
        let deadline_ns = now_ns.saturating_add(self.config.election_min_ns());
        self.leader_read(Reader::Follower(from), ctx, deadline_ns);
        Ok(())
    }

    pub(super) fn handle_read_index_response(
        &mut self,
        ctx: u64,
        index: Option<LogIndex>,
    ) -> Result<(), Ignored> {
        if !self.forwarded_reads.remove(ctx) {
            return Err(Ignored::Stale);
        }
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.failed_reads.push(ctx),
        }
        Ok(())
    }

    /// Leadership changed: reads waiting on the old leadership can no longer be answered.
    pub(super) fn fail_reads_on_leader_change(&mut self) {
        let waiting: Vec<(Reader, u64)> = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .map(|r| (r.reader, r.ctx))
            .chain(
                std::mem::take(&mut self.reads_before_term_commit).into_iter().map(|r| (r.0, r.1)),
            )
            .collect();
        for (reader, ctx) in waiting {
            self.answer_read(reader, ctx, None);
        }
        let forwarded = self.forwarded_reads.take_all();
        self.failed_reads.extend(forwarded);
    }
}
