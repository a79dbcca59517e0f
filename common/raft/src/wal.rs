//! The write-ahead log every replica persists to: one per node, shared by all its groups.
//!
//! # Why one log per node
//!
//! DESIGN.md §5 sketches append-only segment files *per group*. We deliberately keep **one
//! WAL per node**, whose records are tagged with their [`GroupId`]: everything that the node's
//! driver loop appends in one iteration — entries and hard states of every group it hosts —
//! is then made durable by **one fsync** (group commit across groups). With per-group files a
//! node hosting 64 groups would pay up to 64 fsyncs per iteration; here it pays one, whatever
//! the number of groups. The price is that compaction must consider every group that has
//! records in a segment (see "Low-water mark" below).
//!
//! # On-disk format
//!
//! ```text
//! wal/<seq:020>.log       segments, seq = 1, 2, 3, ... consecutive; the last one is active
//! snap/<group:020>-<index:020>.snap   newest complete snapshot of each group
//!
//! record  = [len u32 LE][crc32c u32 LE][kind u8][payload: len bytes]
//!           crc32c covers kind + payload; len <= RECORD_PAYLOAD_BYTES_MAX (16 MiB)
//! kind 1  segment start: "DECREWAL" ++ version u16 LE ++ postcard{seq, hard states,
//!         snapshot metas of every group}; always the first record of a segment
//! kind 2  entries:    postcard(group) ++ postcard(entry)*   (consecutive indices)
//! kind 3  hard state: postcard(group, HardState)
//! kind 4  snapshot:   postcard(group, SnapshotMeta, log_kept: bool)
//!
//! snapshot file = "DECRSNAP" ++ version u16 LE ++ crc32c(body) u32 LE ++ body
//!                 body = postcard(group, SnapshotMeta, data)
//! ```
//!
//! Replaying a group's records in order rebuilds its state: an entries record whose first
//! index is at or below the group's last index replaces the tail from there on (Raft log
//! truncation); a snapshot record makes entries at or below its index obsolete and keeps the
//! entries above it only if the snapshot described a prefix of the log (RAFT-8).
//!
//! Because every segment starts with a checkpoint of all hard states and snapshot markers,
//! any suffix of the segment sequence replays to the same hard states and snapshots.
//!
//! # Durability path (RAFT-1)
//!
//! [`Wal::append`], [`Wal::set_hard_state`] only encode records into an in-memory buffer.
//! [`Wal::sync`] makes them durable:
//!
//! 1. For each segment with buffered bytes, oldest first: one `Disk::append` of the buffer.
//! 2. `Disk::sync` of that segment (the fsync). A segment is never created before its
//!    predecessor's bytes are fsynced, so only the *last* segment can ever have a torn tail.
//! 3. If the segment is new, `Disk::sync_dir("wal")` so its directory entry survives.
//! 4. Only now is a [`SyncToken`] created; the driver releases the messages that acknowledge
//!    the appended state with it. No fsync error is ever ignored: a failed step poisons the
//!    WAL and every later call returns [`FatalError::Poisoned`].
//!
//! [`Wal::save_snapshot`] (RAFT-8, DESIGN.md §5):
//!
//! 1. `write` the snapshot to `snap/<g>-<i>.snap.tmp`; 2. `sync` it;
//! 3. `rename` it to `snap/<g>-<i>.snap`; 4. `sync_dir("snap")`;
//! 5. append a snapshot record and run [`Wal::sync`] (steps above), so on return the
//!    snapshot and the marker that makes recovery use it are durable;
//! 6. `remove` the group's previous snapshot file (a crash before this leaves an orphan that
//!    the next [`Wal::open`] removes).
//!
//! A crash before step 5's fsync leaves the old marker, so recovery uses the old snapshot.
//!
//! # Recovery ([`Wal::open`])
//!
//! 1. List `wal/`; segment numbers must be consecutive (a gap is corruption).
//! 2. Read each segment in order; every record must have a valid frame and CRC, decode, and
//!    fit the log (no gaps). The first record must be the segment start with the file's seq.
//! 3. A bad frame in the **last** segment with no valid record anywhere after it is a
//!    **torn tail**: the file is truncated there and fsynced. The "no valid record after it"
//!    check keeps a flipped bit in a length field from being mistaken for a tear (which would
//!    silently drop acknowledged records behind it). The scan's CRC work is bounded (64 MiB
//!    plus 64 bytes per scanned byte); past that bound the tail counts as corrupt.
//! 4. Any other bad frame, an undecodable record, an unknown kind, or a record in a
//!    non-last segment that runs past its end: [`FatalError::Corrupt`] naming the file and
//!    byte offset. The replica refuses to start.
//! 5. The last segment and the `wal/` and `snap/` directories are fsynced, so state read back
//!    from the page cache after a process crash is durable before anything depends on it.
//! 6. Each group's current snapshot file is read and CRC-checked (a corrupt or missing one is
//!    refused); snapshot files no marker refers to (orphans, temp files) are removed.
//!
//! ## What recovery cannot tell apart
//!
//! - A flipped bit in the very last record of the last segment looks exactly like a torn
//!   write, so that record is cut (and reported in [`Recovered::torn_tail`] and the log).
//! - A torn write is taken to leave a *prefix* of the last write. If a power loss persisted
//!   later sectors of the last unsynced write but not earlier ones, or the tear lands inside a
//!   command whose bytes happen to embed a valid WAL record, a valid record follows the
//!   damaged one and recovery refuses to start. That is the fail-safe side: nothing
//!   acknowledged is dropped, and the error names the file and offset so an operator can
//!   inspect and truncate.
//!
//! # Driver loop
//!
//! ```text
//! for each group's Ready, in any group order:
//!     if let Some((meta, data)) = snapshot { wal.save_snapshot(group, meta, &data)? }  // first
//!     if let Some(hs) = hard_state         { wal.set_hard_state(group, hs)? }
//!     wal.append(group, &entries)?
//! let token = wal.sync_for_ack()?;      // one fsync for every group (group commit);
//!                                      // none if only commit indexes changed
//! send persisted_messages.release(&token) of every group
//! now and then, after snapshots:  wal.compact()?
//! ```
//!
//! A [`WalError::Fatal`] from any call stops the replica; a [`WalError::Invalid`] is a bug in
//! the caller (an append that would leave a gap, a vote changed within a term, ...) and
//! writes nothing.
//!
//! # Low-water mark
//!
//! For each segment the WAL tracks, per group, the highest entry index the segment holds
//! (recomputed on recovery). [`Wal::compact`] deletes the oldest segments while every group
//! with entries in the segment has a durable snapshot at or above them, the segment is not
//! the active one, and the next segment's start record (the checkpoint) is durable. Each
//! deletion is `remove` + `sync_dir`, oldest first, so a crash never leaves a gap.
//!
//! The per-segment maximum is not lowered when a later record truncates or discards a
//! group's log, so a segment may be kept longer than needed, never deleted too early. A group
//! the node stops hosting keeps pinning the segments with its entries until it has a covering
//! snapshot (there is no "forget group" record yet).
//!
//! # Limits
//!
//! One record carries at most [`RECORD_PAYLOAD_BYTES_MAX`]; larger entry batches are split.
//! The WAL keeps in memory only per-group metadata (hard state, snapshot meta, last index and
//! one `(index, term)` pair per term change) and per-segment metadata; entries are not kept.
//! `segment_bytes` may change between runs. A segment start record lists every group, so it
//! bounds a node to roughly 400,000 groups (16 MiB / ~40 bytes per group).

use std::collections::BTreeMap;

use decree_types::{GroupId, LogIndex, Term};

use crate::disk::{Disk, DiskError};
use crate::msg::{Entry, HardState, SnapshotMeta};
use crate::ready::{SyncToken, WalPosition};

mod record;
mod recovery;
mod snapshot;
#[cfg(test)]
mod tests;

pub use record::RECORD_PAYLOAD_BYTES_MAX;

/// Directory of the segment files.
const WAL_DIR: &str = "wal";

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// A segment rolls over once appending the next record would take it past this size
    /// (a segment always holds at least one record after its start record). DESIGN.md §10.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { segment_bytes: 64 << 20 }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default, PartialEq)]
pub struct Recovered {
    /// Every group the WAL holds records of.
    pub groups: BTreeMap<GroupId, GroupState>,
    /// The torn tail that was cut off the last segment, if any.
    pub torn_tail: Option<TornTail>,
}

/// The durable state of one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupState {
    /// Last hard state written (default if none).
    pub hard_state: HardState,
    /// The newest snapshot and its data.
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The entries after the snapshot (or from index 1), consecutive.
    pub entries: Vec<Entry>,
}

/// A torn tail truncated by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: String,
    /// Where it was cut.
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
}

/// Counters for monitoring and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files, active included.
    pub segments: usize,
    /// Seq of the active (last) segment.
    pub active_segment: Option<u64>,
    /// Bytes in all segments, buffered bytes included.
    pub bytes: u64,
    /// Bytes appended but not yet fsynced.
    pub pending_bytes: u64,
    /// Segment fsyncs done by this WAL (snapshot-file and directory fsyncs not included).
    pub fsyncs: u64,
    /// Segments deleted by [`Wal::compact`].
    pub segments_removed: u64,
    /// Groups known to the WAL.
    pub groups: usize,
}

/// Errors of the WAL, split as STYLE.md principle 5 asks.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The request breaks the log's rules; nothing was written. The caller has a bug or must
    /// fix its input; the WAL stays usable.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The replica must stop: corruption, or a failed disk operation (never retried).
    #[error(transparent)]
    Fatal(#[from] FatalError),
}

impl WalError {
    /// Is this a fatal error?
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::Fatal(_))
    }
}

/// A request that would break the log; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// Entries in one append must have consecutive indices and non-decreasing terms.
    #[error("{group}: entries not consecutive at {index}")]
    NotConsecutive { group: GroupId, index: LogIndex },
    /// The first entry would leave a hole after the last one.
    #[error("{group}: append at {first} leaves a gap after last index {last}")]
    Gap { group: GroupId, first: LogIndex, last: LogIndex },
    /// Entries at or below the snapshot index are obsolete and cannot be rewritten.
    #[error("{group}: append at {first} is at or below the snapshot index {snapshot}")]
    BelowSnapshot { group: GroupId, first: LogIndex, snapshot: LogIndex },
    /// An entry's term is lower than the term of the entry before it.
    #[error("{group}: entry {index} has term {term}, below the previous entry's {previous}")]
    TermRegression { group: GroupId, index: LogIndex, term: Term, previous: Term },
    /// One entry does not fit in a record.
    #[error("{group}: entry {index} is {bytes} bytes, over the record limit")]
    EntryTooLarge { group: GroupId, index: LogIndex, bytes: usize },
    /// The term went down, or the vote changed within a term (two leaders in one term).
    #[error("{group}: hard state {new:?} would replace {old:?}")]
    HardStateRegression { group: GroupId, old: HardState, new: HardState },
    /// A snapshot older than the current one.
    #[error("{group}: snapshot at {index} is older than the current one at {current}")]
    StaleSnapshot { group: GroupId, index: LogIndex, current: LogIndex },
}

/// An error that stops the replica.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// Bytes on disk are not what the WAL wrote. Refuses to start (or to continue).
    #[error("corrupt {path} at byte {offset}: {what}")]
    Corrupt { path: String, offset: u64, what: Corruption },
    /// A disk operation other than fsync failed.
    #[error("disk: {0}")]
    Disk(DiskError),
    /// An fsync failed: the state of the file is unknown, so nothing may depend on it.
    #[error("fsync failed: {0}")]
    SyncFailed(DiskError),
    /// An earlier fatal error stopped this WAL.
    #[error("WAL stopped by an earlier fatal error: {cause}")]
    Poisoned { cause: String },
}

/// What is wrong with corrupt bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// CRC mismatch.
    #[error("CRC mismatch")]
    BadCrc,
    /// A record length no writer produces.
    #[error("record length {0} over the limit")]
    BadLength(u32),
    /// A record runs past the end of a segment that is not the last one.
    #[error("record cut short")]
    Truncated,
    /// Unknown record kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A record or file whose CRC matches but whose content does not decode.
    #[error("undecodable {0}")]
    Undecodable(&'static str),
    /// Not a decree WAL segment or snapshot.
    #[error("bad magic")]
    BadMagic,
    /// Written by an unknown format version.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// A segment does not begin with its start record, or its seq differs from its name.
    #[error("missing or mismatched segment start")]
    BadSegmentStart,
    /// A segment start record in the middle of a segment.
    #[error("unexpected segment start")]
    UnexpectedSegmentStart,
    /// A segment file name that is not `<seq>.log`.
    #[error("bad segment file name")]
    BadFileName,
    /// Segment `missing` is absent between two present segments.
    #[error("segment {missing} missing")]
    MissingSegment { missing: u64 },
    /// Entries that do not follow the group's log.
    #[error("{group}: entry {found} does not follow {expected}")]
    LogGap { group: GroupId, expected: LogIndex, found: LogIndex },
    /// The snapshot file a marker refers to is missing.
    #[error("snapshot file missing")]
    SnapshotMissing,
    /// The snapshot file is shorter than its header.
    #[error("snapshot file truncated")]
    SnapshotTruncated,
    /// The snapshot file is for another group or index than the marker says.
    #[error("snapshot file does not match its marker")]
    SnapshotMismatch,
}

/// The node's write-ahead log. See the module docs.
#[derive(Debug)]
pub struct Wal<D: Disk> {
    disk: D,
    config: WalConfig,
    /// Oldest first; the last one is active. Invariant: seqs are consecutive.
    segments: Vec<Segment>,
    groups: BTreeMap<GroupId, GroupLog>,
    /// Set by the first fatal error; every later call fails with it.
    poisoned: Option<String>,
    /// Is a record buffered or written that must be durable before the next acknowledgement
    /// (anything but a commit-index-only hard state)? Cleared by a successful `sync`.
    ack_pending: bool,
    /// Record bytes taken since open (the WAL's position).
    position: u64,
    /// The position at the end of the last record an acknowledgement depends on.
    ack_position: u64,
    /// Everything up to this position is durable. Invariant: `durable_position <= position`.
    durable_position: u64,
    fsyncs: u64,
    segments_removed: u64,
}

impl<D: Disk> Wal<D> {
    /// Opens (or creates) the WAL on `disk` and recovers every group's durable state.
    pub fn open(mut disk: D, config: WalConfig) -> Result<(Wal<D>, Recovered), WalError> {
        let found = recovery::recover(&mut disk)?;
        let wal = Wal {
            disk,
            config,
            segments: found.segments,
            groups: found.groups,
            poisoned: None,
            ack_pending: false,
            position: 0,
            ack_position: 0,
            durable_position: 0,
            fsyncs: 0,
            segments_removed: 0,
        };
        Ok((wal, found.recovered))
    }

    /// Appends entries of `group` (durable at the next [`Wal::sync`]). If the first index is
    /// at or below the group's last index, the group's tail from there on is replaced.
    pub fn append(&mut self, group: GroupId, entries: &[Entry]) -> Result<(), WalError> {
        self.check_poisoned()?;
        if entries.is_empty() {
            return Ok(());
        }
        match self.groups.get(&group) {
            Some(log) => log.check_append(group, entries)?,
            None => GroupLog::default().check_append(group, entries)?,
        }
        let records = record::encode_entries(group, entries)
            .map_err(|(index, bytes)| InvalidRequest::EntryTooLarge { group, index, bytes })?;
        for (bytes, last_index) in records {
            self.push_record(&bytes, Some((group, last_index)), Durability::BeforeAck);
        }
        self.groups.entry(group).or_default().append(entries);
        Ok(())
    }

    /// The last hard state recorded for `group` (default if none), durable or not.
    pub fn hard_state(&self, group: GroupId) -> HardState {
        self.groups.get(&group).map(|g| g.hard_state).unwrap_or_default()
    }

    /// Records `group`'s new hard state (durable at the next [`Wal::sync`]). A change of the
    /// commit index alone does not make [`Wal::sync_for_ack`] fsync; see there.
    pub fn set_hard_state(
        &mut self,
        group: GroupId,
        hard_state: HardState,
    ) -> Result<(), WalError> {
        self.check_poisoned()?;
        let old = self.hard_state(group);
        if old == hard_state {
            return Ok(());
        }
        let vote_changed = old.vote.is_some() && hard_state.vote != old.vote;
        if hard_state.term < old.term || (hard_state.term == old.term && vote_changed) {
            return Err(InvalidRequest::HardStateRegression { group, old, new: hard_state }.into());
        }
        // Persisting the commit index is an optimisation only (a restarted replica relearns
        // it from its leader), so a commit-only change need not hold up an acknowledgement.
        let durability = if hard_state.changes_term_or_vote(&old) {
            Durability::BeforeAck
        } else {
            Durability::Lazy
        };
        self.push_record(&record::encode_hard_state(group, &hard_state), None, durability);
        self.groups.entry(group).or_default().hard_state = hard_state;
        Ok(())
    }

    /// Makes `group`'s snapshot durable (RAFT-8); see the module docs for the steps. Entries
    /// at or below `meta.last_index` become obsolete; the entries above it are kept if the
    /// log holds `(meta.last_index, meta.last_term)`, else the group's log is discarded. Also
    /// makes everything appended before it durable. Call it before appending the entries that
    /// follow an installed snapshot (they would leave a gap before it).
    pub fn save_snapshot(
        &mut self,
        group: GroupId,
        meta: SnapshotMeta,
        data: &[u8],
    ) -> Result<(), WalError> {
        self.check_poisoned()?;
        let log = self.groups.get(&group).cloned().unwrap_or_default();
        let current = log.snapshot_index();
        if log.snapshot.is_some() && meta.last_index < current {
            let index = meta.last_index;
            return Err(InvalidRequest::StaleSnapshot { group, index, current }.into());
        }
        // Steps 1-4: the file, durable under its final name.
        let path = snapshot::path(group, meta.last_index);
        let tmp = format!("{path}{}", snapshot::TMP_SUFFIX);
        let bytes = snapshot::encode(group, &meta, data);
        self.disk_op(|d| d.write(&tmp, &bytes))?;
        self.sync_op(|d| d.sync(&tmp))?;
        self.disk_op(|d| d.rename(&tmp, &path))?;
        self.sync_op(|d| d.sync_dir(snapshot::SNAP_DIR))?;
        // Step 5: the marker, durable.
        let log_kept = log.term_at(meta.last_index) == Some(meta.last_term);
        self.push_record(
            &record::encode_snapshot(group, &meta, log_kept),
            None,
            Durability::BeforeAck,
        );
        let old_path = log.snapshot.as_ref().map(|m| snapshot::path(group, m.last_index));
        self.groups.entry(group).or_default().install_snapshot(meta, log_kept);
        self.sync()?;
        // Step 6: the previous file is garbage now.
        if let Some(old) = old_path.filter(|p| *p != path) {
            self.disk_op(|d| d.remove(&old))?;
        }
        Ok(())
    }

    /// One fsync covering everything appended since the last sync (more only when a segment
    /// rolled over). With nothing pending it does no I/O and still returns a token.
    pub fn sync(&mut self) -> Result<SyncToken, WalError> {
        self.check_poisoned()?;
        let Some(first) = self.segments.iter().position(Segment::needs_sync) else {
            self.ack_pending = false;
            self.durable_position = self.position;
            return Ok(SyncToken::after_fsync(WalPosition(self.durable_position)));
        };
        for i in first..self.segments.len() {
            let path = self.segments[i].path.clone();
            let mut buf = std::mem::take(&mut self.segments[i].buf);
            if !buf.is_empty() {
                self.disk_op(|d| d.append(&path, &buf))?;
                self.segments[i].written += buf.len() as u64;
                if i + 1 == self.segments.len() {
                    // The active segment keeps its allocation for the next iteration.
                    buf.clear();
                    self.segments[i].buf = buf;
                }
            }
            if self.segments[i].durable < self.segments[i].written {
                self.sync_op(|d| d.sync(&path))?;
                self.fsyncs += 1;
                self.segments[i].durable = self.segments[i].written;
            }
            if !self.segments[i].dir_synced {
                self.sync_op(|d| d.sync_dir(WAL_DIR))?;
                self.segments[i].dir_synced = true;
            }
        }
        self.ack_pending = false;
        self.durable_position = self.position;
        Ok(SyncToken::after_fsync(WalPosition(self.durable_position)))
    }

    /// The sync a driver needs before it sends acknowledgements (RAFT-1): [`Wal::sync`] if
    /// anything but a commit-index-only hard state is pending, else no I/O at all.
    ///
    /// Those commit-only records stay buffered, in order, and reach the disk with the next
    /// sync. That is safe because the commit index is an optimisation: a replica that loses
    /// it on a crash restarts from the commit index it did persist (never above the entries
    /// it holds: every earlier record precedes it in the log) and learns the rest from its
    /// leader. Entries, terms, votes and snapshot markers, which acknowledgements and votes
    /// depend on, are always durable when this returns a token. This saves a second fsync
    /// per acknowledgement: an entry is durable in one iteration and its commit, learned a
    /// round trip later, would otherwise need an fsync of its own.
    pub fn sync_for_ack(&mut self) -> Result<SyncToken, WalError> {
        self.check_poisoned()?;
        if self.ack_pending {
            self.sync()
        } else {
            // Only commit-index records are pending, if anything: every record an
            // acknowledgement depends on is durable already.
            debug_assert!(self.durable_position >= self.ack_position);
            Ok(SyncToken::after_fsync(WalPosition(self.ack_position.max(self.durable_position))))
        }
    }

    /// The position at the end of the last record an acknowledgement depends on (every
    /// record but a commit-index-only hard state): what a [`SyncToken`] from
    /// [`Wal::sync_for_ack`] covers.
    pub fn ack_position(&self) -> WalPosition {
        WalPosition(self.ack_position)
    }

    /// Deletes the oldest segments below the low-water mark (see the module docs). Returns
    /// how many were deleted.
    pub fn compact(&mut self) -> Result<usize, WalError> {
        self.check_poisoned()?;
        let mut removed = 0;
        while self.segments.len() >= 2 && self.is_below_low_water_mark(&self.segments[0]) {
            let next = &self.segments[1];
            let next_start_durable = next.start_end.is_some_and(|end| next.durable >= end);
            if !next_start_durable {
                break;
            }
            let path = self.segments[0].path.clone();
            self.disk_op(|d| d.remove(&path))?;
            self.sync_op(|d| d.sync_dir(WAL_DIR))?;
            self.segments.remove(0);
            self.segments_removed += 1;
            removed += 1;
        }
        Ok(removed)
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        WalStats {
            segments: self.segments.len(),
            active_segment: self.segments.last().map(|s| s.seq),
            bytes: self.segments.iter().map(|s| s.written + s.buf.len() as u64).sum(),
            pending_bytes: self
                .segments
                .iter()
                .map(|s| s.written - s.durable + s.buf.len() as u64)
                .sum(),
            fsyncs: self.fsyncs,
            segments_removed: self.segments_removed,
            groups: self.groups.len(),
        }
    }

    /// The disk (for the simulator and tests).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(cause) => Err(FatalError::Poisoned { cause: cause.clone() }.into()),
            None => Ok(()),
        }
    }

    /// Runs a disk operation; a failure poisons the WAL.
    fn disk_op(
        &mut self,
        op: impl FnOnce(&mut D) -> Result<(), DiskError>,
    ) -> Result<(), WalError> {
        op(&mut self.disk).map_err(|e| self.poison(FatalError::Disk(e)))
    }

    /// Runs an fsync; a failure poisons the WAL (an fsync error is never retried: the kernel
    /// may have dropped the dirty pages, so a retry could "succeed" without the data).
    fn sync_op(
        &mut self,
        op: impl FnOnce(&mut D) -> Result<(), DiskError>,
    ) -> Result<(), WalError> {
        op(&mut self.disk).map_err(|e| self.poison(FatalError::SyncFailed(e)))
    }

    fn poison(&mut self, e: FatalError) -> WalError {
        tracing::error!(error = %e, "WAL stopped");
        self.poisoned = Some(e.to_string());
        WalError::Fatal(e)
    }

    fn is_below_low_water_mark(&self, segment: &Segment) -> bool {
        segment.group_max.iter().all(|(group, max)| {
            self.groups
                .get(group)
                .is_some_and(|g| g.snapshot.is_some() && *max <= g.snapshot_index())
        })
    }

    /// Buffers one framed record, rolling over to a new segment first if needed; the new
    /// segment begins with a checkpoint of every group's hard state and snapshot.
    fn push_record(
        &mut self,
        bytes: &[u8],
        entries_of: Option<(GroupId, LogIndex)>,
        durability: Durability,
    ) {
        self.position += bytes.len() as u64;
        if durability == Durability::BeforeAck {
            self.ack_pending = true;
            self.ack_position = self.position;
        }
        let segment_bytes = self.config.segment_bytes;
        let roll = match self.segments.last() {
            None => true,
            Some(s) => s.start_end.is_some_and(|start_end| {
                s.len() > start_end && s.len() + bytes.len() as u64 > segment_bytes
            }),
        };
        if roll {
            let seq = self.segments.last().map_or(1, |s| s.seq + 1);
            self.segments.push(Segment::new(seq, false));
        }
        if self.segments.last().is_some_and(|s| s.start_end.is_none()) {
            let start = self.segment_start();
            // Invariant: a segment was pushed above if there was none.
            let seg = self.segments.last_mut().expect("an active segment exists");
            let mut start =
                record::encode_segment_start(&record::SegmentStart { seq: seg.seq, ..start });
            seg.buf.append(&mut start);
            seg.start_end = Some(seg.len());
        }
        // Invariant: the active segment exists (pushed above when missing).
        let seg = self.segments.last_mut().expect("an active segment exists");
        seg.buf.extend_from_slice(bytes);
        if let Some((group, last)) = entries_of {
            let max = seg.group_max.entry(group).or_default();
            *max = (*max).max(last);
        }
    }

    fn segment_start(&self) -> record::SegmentStart {
        record::SegmentStart {
            seq: 0,
            hard_states: self
                .groups
                .iter()
                .filter(|(_, g)| g.hard_state != HardState::default())
                .map(|(id, g)| (*id, g.hard_state))
                .collect(),
            snapshots: self
                .groups
                .iter()
                .filter_map(|(id, g)| g.snapshot.clone().map(|m| (*id, m)))
                .collect(),
        }
    }
}

/// Must a record be durable before the next acknowledgement?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Entries, term and vote, snapshot markers: [`Wal::sync_for_ack`] fsyncs them.
    BeforeAck,
    /// A commit-index-only hard state: written with the next fsync, whenever that is.
    Lazy,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: String,
    /// Bytes handed to the disk.
    written: u64,
    /// Bytes fsynced. Invariant: `durable <= written`.
    durable: u64,
    /// Bytes not yet handed to the disk.
    buf: Vec<u8>,
    /// End offset of the segment start record; `None` until it is buffered.
    start_end: Option<u64>,
    /// Is the directory entry durable?
    dir_synced: bool,
    /// Highest entry index per group in this segment (for the low-water mark).
    group_max: BTreeMap<GroupId, LogIndex>,
}

impl Segment {
    fn new(seq: u64, dir_synced: bool) -> Self {
        Segment {
            seq,
            path: segment_path(seq),
            written: 0,
            durable: 0,
            buf: Vec::new(),
            start_end: None,
            dir_synced,
            group_max: BTreeMap::new(),
        }
    }

    fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn needs_sync(&self) -> bool {
        !self.buf.is_empty() || self.durable < self.written || !self.dir_synced
    }
}

fn segment_path(seq: u64) -> String {
    format!("{WAL_DIR}/{seq:020}.log")
}

/// What the WAL remembers about a group's log (entries themselves are not kept).
#[derive(Clone, Debug, Default)]
struct GroupLog {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    /// Last index in the log (the snapshot index if the log is empty).
    last_index: LogIndex,
    /// `(first index, term)` of each run of equal terms in (snapshot index, last_index].
    runs: Vec<(LogIndex, Term)>,
}

impl GroupLog {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(LogIndex(0), |m| m.last_index)
    }

    /// Term of the entry at `index`, if the log (or the snapshot) knows it.
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        let snap = self.snapshot_index();
        if index == snap {
            return Some(self.snapshot.as_ref().map_or(Term(0), |m| m.last_term));
        }
        if index < snap || index > self.last_index {
            return None;
        }
        self.runs.iter().rev().find(|(start, _)| *start <= index).map(|(_, t)| *t)
    }

    fn check_append(&self, group: GroupId, entries: &[Entry]) -> Result<(), InvalidRequest> {
        for w in entries.windows(2) {
            if w[1].index != w[0].index.next() || w[1].term < w[0].term {
                return Err(InvalidRequest::NotConsecutive { group, index: w[1].index });
            }
        }
        // Invariant: `Wal::append` returns early on an empty slice, so entries[0] exists.
        let (first, last) = (entries[0].index, self.last_index);
        let snapshot = self.snapshot_index();
        if first <= snapshot || first == LogIndex(0) {
            return Err(InvalidRequest::BelowSnapshot { group, first, snapshot });
        }
        if first > last.next() {
            return Err(InvalidRequest::Gap { group, first, last });
        }
        if let Some(previous) = self.term_at(first.prev()) {
            if entries[0].term < previous {
                let (index, term) = (first, entries[0].term);
                return Err(InvalidRequest::TermRegression { group, index, term, previous });
            }
        }
        Ok(())
    }

    /// Applies a checked append.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.runs.retain(|(start, _)| *start < first.index);
        for e in entries {
            if self.runs.last().map(|(_, t)| *t) != Some(e.term) {
                self.runs.push((e.index, e.term));
            }
        }
        self.last_index = entries[entries.len() - 1].index;
    }

    /// Applies a snapshot marker (the same rule recovery applies).
    fn install_snapshot(&mut self, meta: SnapshotMeta, log_kept: bool) {
        let index = meta.last_index;
        if log_kept && self.last_index > index {
            let next = index.next();
            // `next` is in the log (last_index > index), so term_at knows it; the fallback
            // is never taken.
            let next_term = self.term_at(next).unwrap_or(meta.last_term);
            self.runs.retain(|(start, _)| *start > next);
            self.runs.insert(0, (next, next_term));
        } else {
            self.runs.clear();
            self.last_index = index;
        }
        self.snapshot = Some(meta);
    }
}
