//! ReadIndex reads (RAFT-3), on the leader and on followers that ask the leader (Follower
//! Reads).
//!
//! The leader (1) waits until it has committed an entry of its term (its no-op), (2) records
//! its commit index as the read index, (3) confirms it is still the leader with a heartbeat
//! round that a majority acknowledges — every AppendEntries carries the round number
//! `read_seq` and followers echo it — and then (4) emits a [`ReadState`] (or answers the
//! follower that asked). The reader serves once its replica applied the read index (5).

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
}

impl RaftCore {
    /// Asks for a linearizable read index for the reader `ctx`. The answer comes in a later
    /// [`Ready`](crate::Ready): a `ReadState { ctx, index }` (serve once applied ≥ index) or
    /// `ctx` in `failed_reads` (retry). A follower forwards the request to its leader.
    pub fn read_index(&mut self, _now_ns: u64, ctx: u64) -> Result<(), ReadIndexError> {
        match self.role {
            Role::Leader => {
                if self.pending_read_count() >= self.config.max_pending_reads {
                    return Err(ReadIndexError::TooManyPendingReads);
                }
                self.leader_read(Reader::Local, ctx);
                Ok(())
            }
            _ => {
                let Some(leader) = self.leader else { return Err(ReadIndexError::NoLeader) };
                if self.forwarded_reads.len() >= self.config.max_pending_reads {
                    return Err(ReadIndexError::TooManyPendingReads);
                }
                self.forwarded_reads.insert(ctx);
                self.send(leader, Message::ReadIndexRequest { term: self.term, ctx });
                Ok(())
            }
        }
    }

    fn pending_read_count(&self) -> usize {
        self.pending_reads.len() + self.reads_before_term_commit.len()
    }

    fn leader_read(&mut self, reader: Reader, ctx: u64) {
        // (1) Only once an entry of our term is committed does our commit index cover every
        // entry committed by earlier leaders.
        if self.log.term_at(self.log.commit()) != Some(self.term) {
            self.reads_before_term_commit.push((reader, ctx));
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
        self.pending_reads.push_back(PendingRead { reader, ctx, index, seq: self.read_seq });
    }

    pub(super) fn release_reads_waiting_for_term_commit(&mut self) {
        for (reader, ctx) in std::mem::take(&mut self.reads_before_term_commit) {
            self.leader_read(reader, ctx);
        }
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
        from: NodeId,
        ctx: u64,
    ) -> Result<(), Ignored> {
        if self.role != Role::Leader || self.pending_read_count() >= self.config.max_pending_reads {
            self.send(from, Message::ReadIndexResponse { term: self.term, ctx, index: None });
            return Ok(());
        }
        self.leader_read(Reader::Follower(from), ctx);
        Ok(())
    }

    pub(super) fn handle_read_index_response(
        &mut self,
        ctx: u64,
        index: Option<LogIndex>,
    ) -> Result<(), Ignored> {
        if !self.forwarded_reads.remove(&ctx) {
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
            .chain(std::mem::take(&mut self.reads_before_term_commit))
            .collect();
        for (reader, ctx) in waiting {
            self.answer_read(reader, ctx, None);
        }
        self.failed_reads.extend(std::mem::take(&mut self.forwarded_reads));
    }
}
