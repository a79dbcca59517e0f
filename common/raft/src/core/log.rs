//! The in-memory Raft log of one replica: entries from the last snapshot on, plus the
//! pointers that say how far they are committed, handed to the driver, persisted and applied.
//!
//! ```text
//!   snapshot_index   applied <= handed_to_apply <= commit <= last_index
//!   |                                                     |
//!   [ compacted ... ][ entries (in memory) ...............]
//!                                 persisted <= last_index, unstable_from <= last_index + 1
//! ```
//!
//! Invariants (asserted where they change, on in release builds):
//! - `entries[i].index == snapshot_index + 1 + i` (the log is contiguous);
//! - `snapshot_index <= commit <= last_index` and commit never decreases;
//! - `applied <= handed_to_apply <= commit`, and applied never decreases (INV-R9);
//! - no entry at or below `commit` is ever overwritten (Log Matching + Leader Completeness).

use decree_types::{LogIndex, Term};

use crate::msg::{Entry, EntryPayload};

/// Bytes an entry costs on the wire, for batching limits (payload plus a fixed header).
pub(crate) fn entry_bytes(entry: &Entry) -> u64 {
    const HEADER_BYTES: u64 = 24;
    HEADER_BYTES + payload_bytes(&entry.payload)
}

/// Bytes of an entry's payload.
pub(crate) fn payload_bytes(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(data) => data.len() as u64,
    }
}

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Index of the last entry covered by the latest snapshot (0 when there is none).
    snapshot_index: LogIndex,
    /// Term of that entry.
    snapshot_term: Term,
    /// Entries after `snapshot_index`, contiguous.
    entries: Vec<Entry>,
    /// Highest committed entry.
    commit: LogIndex,
    /// Highest committed entry already handed to the driver to apply.
    handed_to_apply: LogIndex,
    /// Highest entry the state machine reports as applied.
    applied: LogIndex,
    /// Highest entry the driver reports as durable.
    persisted: LogIndex,
    /// First entry not yet handed to the driver to persist.
    unstable_from: LogIndex,
}

impl RaftLog {
    /// A log restored from a snapshot point and the entries after it (already validated).
    pub(crate) fn restore(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
        applied: LogIndex,
    ) -> Self {
        let last = LogIndex(snapshot_index.0 + entries.len() as u64);
        assert!(snapshot_index <= applied && applied <= commit && commit <= last);
        let log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries,
            commit,
            handed_to_apply: applied,
            applied,
            persisted: last,
            unstable_from: last.next(),
        };
        log.assert_contiguous();
        log
    }

    fn assert_contiguous(&self) {
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index.0, self.snapshot_index.0 + 1 + i as u64, "log is contiguous");
        }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index.0 + self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    pub(crate) fn commit(&self) -> LogIndex {
        self.commit
    }

    pub(crate) fn applied(&self) -> LogIndex {
        self.applied
    }

    pub(crate) fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`, if the log still knows it (it knows the snapshot's
    /// last entry, and index 0 has term 0).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        let offset = usize::try_from(index.0 - self.snapshot_index.0 - 1).ok()?;
        self.entries.get(offset)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Entries `from..=to`, at most `max_bytes` of them but always at least one if any exist.
    /// `None` if `from` was compacted away.
    pub(crate) fn slice(&self, from: LogIndex, to: LogIndex, max_bytes: u64) -> Option<Vec<Entry>> {
        if from <= self.snapshot_index {
            return None;
        }
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= to {
            let entry = self.entry(index)?;
            bytes += entry_bytes(entry);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        Some(out)
    }

    /// Is a log ending at `(last_term, last_index)` at least as up to date as ours (§5.4.1)?
    pub(crate) fn is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends one new entry at the end (the leader's own proposals).
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next(), "leader appends at the end");
        assert!(entry.term >= self.last_term(), "terms never decrease along the log");
        self.entries.push(entry);
    }

    /// Replaces the log from `entries[0].index` on with `entries` (a follower accepting the
    /// leader's suffix). The caller made sure the first entry is above `commit`.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        // Invariant: a committed entry is never overwritten (Leader Completeness, INV-R4).
        assert!(
            first.index > self.commit,
            "overwrite at {} below commit {}",
            first.index,
            self.commit
        );
        assert!(first.index <= self.last_index().next(), "no gap before appended entries");
        let keep = usize::try_from(first.index.0 - self.snapshot_index.0 - 1)
            .expect("index above snapshot fits in usize (the log is in memory)");
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        self.persisted = self.persisted.min(first.index.prev());
        self.unstable_from = self.unstable_from.min(first.index);
        // Invariant: contiguous (checked on the appended part only: the rest was checked when
        // it was appended, and this runs on every append).
        for (i, e) in self.entries[keep..].iter().enumerate() {
            assert_eq!(
                e.index.0,
                self.snapshot_index.0 + 1 + (keep + i) as u64,
                "log is contiguous"
            );
        }
    }

    /// Advances the commit index; it never moves back.
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.commit = index;
        true
    }

    /// The entries the driver has not been asked to persist yet; marks them handed over.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self.slice(from, self.last_index(), u64::MAX).unwrap_or_default();
        self.unstable_from = self.last_index().next();
        out
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// The driver made entries up to `index` (whose term is `term`) durable.
    pub(crate) fn persisted_to(&mut self, index: LogIndex, term: Term) -> bool {
        // A report about entries that a later truncation replaced is stale: the term differs.
        if index <= self.persisted
            || index >= self.unstable_from
            || self.term_at(index) != Some(term)
        {
            return false;
        }
        self.persisted = index;
        true
    }

    pub(crate) fn has_to_apply(&self) -> bool {
        self.handed_to_apply < self.commit
    }

    /// Committed entries not yet handed to the driver to apply; marks them handed over.
    pub(crate) fn take_to_apply(&mut self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_to_apply() {
            return Vec::new();
        }
        let out =
            self.slice(self.handed_to_apply.next(), self.commit, max_bytes).unwrap_or_default();
        if let Some(last) = out.last() {
            self.handed_to_apply = last.index;
        }
        out
    }

    /// The state machine applied everything up to `index`.
    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        // Invariant: applied never exceeds what was handed out, which never exceeds commit.
        assert!(
            index <= self.handed_to_apply,
            "applied {index} beyond handed-out {}",
            self.handed_to_apply
        );
        self.applied = self.applied.max(index);
    }

    /// Drops entries up to `index` (a snapshot covers them). The caller checked
    /// `snapshot_index < index <= applied`.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        assert!(index > self.snapshot_index && index <= self.applied);
        let term = self.term_at(index).expect("index between snapshot and applied is in the log");
        let drop = usize::try_from(index.0 - self.snapshot_index.0)
            .expect("index above snapshot fits in usize (the log is in memory)");
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.assert_contiguous();
    }

    /// Replaces the whole log by a snapshot received from the leader (RAFT-8). The caller
    /// checked that `index > commit` and that the log does not already hold `(index, term)`.
    pub(crate) fn install_snapshot(&mut self, index: LogIndex, term: Term) {
        // Invariant: applied never decreases, also across snapshot install (INV-R9).
        assert!(index > self.commit && self.commit >= self.applied);
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = index;
        self.handed_to_apply = index;
        self.applied = index;
        self.persisted = index;
        self.unstable_from = index.next();
    }

    /// The first index of the run of entries with `term` that ends at `index` (fast
    /// back-tracking hint); never below the first index the log holds.
    pub(crate) fn first_index_of_term(&self, term: Term, index: LogIndex) -> LogIndex {
        let mut first = index;
        while first > self.first_index() && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index at or below `index` whose term is `term`, if the log holds one.
    pub(crate) fn last_index_of_term(&self, term: Term, index: LogIndex) -> Option<LogIndex> {
        let mut i = index.min(self.last_index());
        loop {
            match self.term_at(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                Some(_) if i > self.snapshot_index => i = i.prev(),
                _ => return None,
            }
        }
    }
}
