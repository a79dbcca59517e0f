//! The log node's state machine and the tables of clients waiting on it.
//!
//! Both are plain data, driven only by the shell loop (the one task that owns the node), and
//! unit-tested here without any I/O.
//!
//! - [`AppliedLog`]: the trivial state machine, an append-only list of commands per group.
//!   It is rebuilt on every start by re-applying the log (the node hands committed entries
//!   out again from the WAL), so it needs no storage of its own.
//! - [`Waiters`]: proposals waiting to be applied, keyed by `(group, index)` together with the
//!   term they were appended in, and reads waiting for their read index to be applied.

use std::collections::BTreeMap;

use decree_raft::{Entry, EntryPayload};
use decree_types::{GroupId, LogIndex, Term};

use super::rpc::{LogResponse, Refusal, READ_REPLY_BYTES_MAX, READ_REPLY_COMMANDS_MAX};

/// Most proposals and reads one node keeps waiting at once; more are refused with
/// [`Refusal::Overloaded`].
pub const WAITERS_MAX: usize = 16 * 1024;

/// The applied state of every hosted group.
#[derive(Debug, Default)]
pub struct AppliedLog {
    groups: BTreeMap<GroupId, GroupLog>,
}

/// One group's applied list.
#[derive(Debug, Default)]
pub struct GroupLog {
    /// Index of the last applied entry (commands and no-ops alike).
    pub applied: LogIndex,
    /// Applied commands, in log order.
    pub commands: Vec<Vec<u8>>,
}

impl AppliedLog {
    /// A state machine hosting `groups`, all empty.
    pub fn new(groups: impl IntoIterator<Item = GroupId>) -> Self {
        AppliedLog { groups: groups.into_iter().map(|g| (g, GroupLog::default())).collect() }
    }

    /// The group's applied list, if hosted.
    pub fn group(&self, group: GroupId) -> Option<&GroupLog> {
        self.groups.get(&group)
    }

    /// Replaces `group`'s state with a snapshot's (RAFT-8): after a restart on a compacted log,
    /// or when the leader sent one because this replica was too far behind.
    pub fn restore(
        &mut self,
        group: GroupId,
        applied: LogIndex,
        data: &[u8],
    ) -> Result<(), String> {
        let commands: Vec<Vec<u8>> = postcard::from_bytes(data)
            .map_err(|e| format!("{group}: snapshot does not decode: {e}"))?;
        self.groups.insert(group, GroupLog { applied, commands });
        Ok(())
    }

    /// `group`'s state as snapshot bytes (the command list; the index is the snapshot's).
    pub fn snapshot(&self, group: GroupId) -> Option<(LogIndex, Vec<u8>)> {
        let log = self.groups.get(&group)?;
        // Invariant: postcard serialisation of a list of byte strings into a Vec cannot fail.
        let bytes = postcard::to_stdvec(&log.commands).expect("postcard encodes byte lists");
        Some((log.applied, bytes))
    }

    /// Applies one committed entry. Entries must come in log order without gaps; an entry at
    /// or below the applied index (a replay) is ignored.
    ///
    /// Returns `true` if the entry advanced the state machine.
    pub fn apply(&mut self, group: GroupId, entry: &Entry) -> bool {
        let Some(log) = self.groups.get_mut(&group) else {
            return false;
        };
        if entry.index <= log.applied {
            return false;
        }
        // Invariant (state machine safety): the node applies each group's entries in index
        // order without gaps. A gap would mean a lost committed entry; stop rather than serve it.
        assert_eq!(
            entry.index,
            log.applied.next(),
            "group {group}: applied {} then {} (gap in applied entries)",
            log.applied,
            entry.index
        );
        log.applied = entry.index;
        if let EntryPayload::Command(cmd) = &entry.payload {
            log.commands.push(cmd.clone());
        }
        true
    }

    /// The read reply for `group` from position `from`, cut to the reply limits.
    pub fn read_reply(&self, group: GroupId, read_index: LogIndex, from: u64) -> LogResponse {
        let Some(log) = self.groups.get(&group) else {
            return LogResponse::Refused(Refusal::UnknownGroup(group));
        };
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(log.commands.len());
        let mut commands = Vec::new();
        let mut bytes = 0usize;
        for cmd in &log.commands[start..] {
            if commands.len() >= READ_REPLY_COMMANDS_MAX
                || (bytes + cmd.len() > READ_REPLY_BYTES_MAX && !commands.is_empty())
            {
                break;
            }
            bytes += cmd.len();
            commands.push(cmd.clone());
        }
        let more = start + commands.len() < log.commands.len();
        LogResponse::Commands { group, read_index, from, commands, more }
    }
}

/// A read waiting for its read index, then for that index to be applied.
#[derive(Debug)]
struct WaitingRead<R> {
    group: GroupId,
    from: u64,
    /// Set once the leader confirmed the read index (RAFT-3).
    index: Option<LogIndex>,
    reply: R,
}

/// Clients waiting on the state machine. `R` is the reply handle (a oneshot sender in the
/// shell, a plain value in tests).
#[derive(Debug)]
pub struct Waiters<R> {
    /// Proposals by `(group, index)`, with the term they were appended in.
    proposals: BTreeMap<(GroupId, LogIndex), (Term, R)>,
    /// Reads by context number.
    reads: BTreeMap<u64, WaitingRead<R>>,
    next_read_ctx: u64,
}

impl<R> Default for Waiters<R> {
    fn default() -> Self {
        Waiters { proposals: BTreeMap::new(), reads: BTreeMap::new(), next_read_ctx: 1 }
    }
}

impl<R> Waiters<R> {
    /// Proposals and reads waiting.
    pub fn len(&self) -> usize {
        self.proposals.len() + self.reads.len()
    }

    /// `true` if nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` if another waiter would exceed [`WAITERS_MAX`].
    pub fn is_full(&self) -> bool {
        self.len() >= WAITERS_MAX
    }

    /// Records a proposal appended at `(group, index)` in `term`.
    ///
    /// If a waiter already sits at that index (its entry was overwritten by this leader's
    /// entry before we learned of it), it is returned so the caller can refuse it.
    pub fn add_proposal(
        &mut self,
        group: GroupId,
        index: LogIndex,
        term: Term,
        reply: R,
    ) -> Option<(R, LogResponse)> {
        self.proposals
            .insert((group, index), (term, reply))
            .map(|(_, old)| (old, LogResponse::Refused(Refusal::Superseded { index })))
    }

    /// Registers a read and returns the context number to hand to `read_index`.
    pub fn add_read(&mut self, group: GroupId, from: u64, reply: R) -> u64 {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.reads.insert(ctx, WaitingRead { group, from, index: None, reply });
        ctx
    }

    /// Withdraws a read that the node refused at once (e.g. no leader known).
    pub fn remove_read(&mut self, ctx: u64) -> Option<R> {
        self.reads.remove(&ctx).map(|r| r.reply)
    }

    /// The leader confirmed `ctx`'s read index. Unknown contexts are ignored (a confirmation
    /// for a read we already answered).
    pub fn read_confirmed(&mut self, ctx: u64, index: LogIndex) {
        if let Some(read) = self.reads.get_mut(&ctx) {
            read.index = Some(index);
        }
    }

    /// Answers every waiter that the applied state now settles, after `group` applied `entry`:
    /// the proposal at that index (applied if the term matches, superseded otherwise).
    pub fn on_applied(&mut self, group: GroupId, entry: &Entry) -> Option<(R, LogResponse)> {
        let (term, reply) = self.proposals.remove(&(group, entry.index))?;
        // A leader appends exactly one entry per (term, index), and entries are identified by
        // it (Log Matching): same term means this is our entry.
        let response = if term == entry.term {
            LogResponse::Applied { index: entry.index, term }
        } else {
            LogResponse::Refused(Refusal::Superseded { index: entry.index })
        };
        Some((reply, response))
    }

    /// Takes every read whose index is confirmed and applied, with its reply.
    pub fn ready_reads(&mut self, state: &AppliedLog) -> Vec<(R, LogResponse)> {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| match (r.index, state.group(r.group)) {
                (Some(index), Some(log)) => log.applied >= index,
                _ => false,
            })
            .map(|(ctx, _)| *ctx)
            .collect();
        ready
            .into_iter()
            .filter_map(|ctx| self.reads.remove(&ctx))
            .map(|r| {
                // Invariant: `ready` holds only reads whose index is set.
                let index = r.index.expect("filtered on a confirmed read index");
                (r.reply, state.read_reply(r.group, index, r.from))
            })
            .collect()
    }

    /// Refuses every read of `group` still waiting for its read index (leadership changed, so
    /// the confirmation may never come).
    pub fn abort_unconfirmed_reads(&mut self, group: GroupId) -> Vec<(R, LogResponse)> {
        let aborted: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.group == group && r.index.is_none())
            .map(|(ctx, _)| *ctx)
            .collect();
        aborted
            .into_iter()
            .filter_map(|ctx| self.reads.remove(&ctx))
            .map(|r| (r.reply, LogResponse::Refused(Refusal::ReadAborted)))
            .collect()
    }

    /// Forgets waiters whose client went away (`keep` returns `false` for them), so a proposal
    /// that will never be settled (its index is never reached) cannot pin a slot forever.
    pub fn retain(&mut self, keep: impl Fn(&R) -> bool) {
        self.proposals.retain(|_, (_, r)| keep(r));
        self.reads.retain(|_, r| keep(&r.reply));
    }

    /// Empties the tables, answering everyone with `ShuttingDown`.
    pub fn drain(&mut self) -> Vec<(R, LogResponse)> {
        let proposals = std::mem::take(&mut self.proposals).into_values().map(|(_, r)| r);
        let reads = std::mem::take(&mut self.reads).into_values().map(|r| r.reply);
        proposals.chain(reads).map(|r| (r, LogResponse::Refused(Refusal::ShuttingDown))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(term: u64, index: u64, bytes: &[u8]) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(bytes.to_vec()),
        }
    }

    fn noop(term: u64, index: u64) -> Entry {
        Entry { term: Term(term), index: LogIndex(index), payload: EntryPayload::Noop }
    }

    #[test]
    fn applies_commands_in_order_and_ignores_replays() {
        let g = GroupId(1);
        let mut s = AppliedLog::new([g]);
        assert!(s.apply(g, &noop(1, 1)));
        assert!(s.apply(g, &cmd(1, 2, b"a")));
        assert!(!s.apply(g, &cmd(1, 2, b"a")), "replay of an applied index is ignored");
        assert!(s.apply(g, &cmd(1, 3, b"b")));
        let log = s.group(g).unwrap();
        assert_eq!(log.applied, LogIndex(3));
        assert_eq!(log.commands, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(!s.apply(GroupId(9), &cmd(1, 1, b"x")), "unknown group");
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let g = GroupId(1);
        let mut s = AppliedLog::new([g]);
        s.apply(g, &cmd(1, 1, b"a"));
        s.apply(g, &noop(2, 2));
        let (index, bytes) = s.snapshot(g).unwrap();
        let mut t = AppliedLog::new([g]);
        t.restore(g, index, &bytes).unwrap();
        assert_eq!(t.group(g).unwrap().applied, LogIndex(2));
        assert_eq!(t.group(g).unwrap().commands, vec![b"a".to_vec()]);
        assert!(t.restore(g, index, &[0xff, 0xff]).is_err());
    }

    #[test]
    fn proposal_is_answered_applied_only_for_its_own_term() {
        let g = GroupId(1);
        let mut w: Waiters<&str> = Waiters::default();
        assert!(w.add_proposal(g, LogIndex(2), Term(1), "p1").is_none());
        assert!(w.add_proposal(g, LogIndex(3), Term(1), "p2").is_none());
        // Index 2 applied with our term: acknowledged.
        let (who, resp) = w.on_applied(g, &cmd(1, 2, b"a")).unwrap();
        assert_eq!((who, resp), ("p1", LogResponse::Applied { index: LogIndex(2), term: Term(1) }));
        // Index 3 applied with a newer leader's term: our entry is gone for good.
        let (who, resp) = w.on_applied(g, &cmd(2, 3, b"z")).unwrap();
        assert_eq!(
            (who, resp),
            ("p2", LogResponse::Refused(Refusal::Superseded { index: LogIndex(3) }))
        );
        assert!(w.is_empty());
    }

    #[test]
    fn reads_wait_for_confirmation_and_then_for_apply() {
        let g = GroupId(1);
        let mut s = AppliedLog::new([g]);
        let mut w: Waiters<&str> = Waiters::default();
        let ctx = w.add_read(g, 0, "r");
        assert!(w.ready_reads(&s).is_empty(), "not confirmed yet");
        w.read_confirmed(ctx, LogIndex(2));
        s.apply(g, &cmd(1, 1, b"a"));
        assert!(w.ready_reads(&s).is_empty(), "confirmed at 2, applied only 1");
        s.apply(g, &cmd(1, 2, b"b"));
        let ready = w.ready_reads(&s);
        assert_eq!(ready.len(), 1);
        assert_eq!(
            ready[0].1,
            LogResponse::Commands {
                group: g,
                read_index: LogIndex(2),
                from: 0,
                commands: vec![b"a".to_vec(), b"b".to_vec()],
                more: false
            }
        );
    }

    #[test]
    fn unconfirmed_reads_are_aborted_and_drain_answers_everyone() {
        let g = GroupId(1);
        let mut w: Waiters<u32> = Waiters::default();
        let c1 = w.add_read(g, 0, 1);
        let _c2 = w.add_read(g, 0, 2);
        w.read_confirmed(c1, LogIndex(5));
        let aborted = w.abort_unconfirmed_reads(g);
        assert_eq!(aborted, vec![(2, LogResponse::Refused(Refusal::ReadAborted))]);
        w.add_proposal(g, LogIndex(1), Term(1), 3);
        let drained = w.drain();
        assert_eq!(drained.len(), 2);
        assert!(drained.iter().all(|(_, r)| *r == LogResponse::Refused(Refusal::ShuttingDown)));
    }

    #[test]
    fn read_reply_pages() {
        let g = GroupId(1);
        let mut s = AppliedLog::new([g]);
        for i in 1..=3 {
            s.apply(g, &cmd(1, i, &[i as u8]));
        }
        match s.read_reply(g, LogIndex(3), 2) {
            LogResponse::Commands { commands, more, .. } => {
                assert_eq!(commands, vec![vec![3u8]]);
                assert!(!more);
            }
            other => panic!("unexpected {other:?}"),
        }
        match s.read_reply(g, LogIndex(3), 99) {
            LogResponse::Commands { commands, .. } => assert!(commands.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
