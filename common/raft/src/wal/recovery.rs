//! [`super::Wal::open`]'s recovery: replay every segment, cut a torn tail, refuse corruption.
//! The numbered steps are in the `wal` module docs.

use std::collections::{BTreeMap, BTreeSet};

use decree_types::{GroupId, LogIndex};

use super::record::{self, Frame, Record};
use super::snapshot;
use super::{
    segment_path, Corruption, FatalError, GroupLog, GroupState, Recovered, Segment, TornTail,
    WAL_DIR,
};
use crate::disk::Disk;
use crate::msg::{Entry, HardState, SnapshotMeta};

/// Everything recovery rebuilt.
pub(super) struct Found {
    pub segments: Vec<Segment>,
    pub groups: BTreeMap<GroupId, GroupLog>,
    pub recovered: Recovered,
}

pub(super) fn recover<D: Disk>(disk: &mut D) -> Result<Found, FatalError> {
    // Step 1: the segments, consecutive.
    let seqs = list_segments(disk)?;
    let mut replay: BTreeMap<GroupId, ReplayGroup> = BTreeMap::new();
    let mut segments = Vec::with_capacity(seqs.len());
    let mut torn_tail = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = segment_path(seq);
        let bytes = disk.read(&path).map_err(FatalError::Disk)?;
        let corrupt = |offset: usize, what| FatalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            what,
        };
        let mut segment = Segment::new(seq, true);
        // Step 2: every record, in order.
        let mut off = 0;
        let mut cut = None;
        while off < bytes.len() {
            let bad = match record::read_frame(&bytes, off) {
                Frame::Valid { kind, payload, end } => {
                    let rec = record::decode(kind, payload).map_err(|w| corrupt(off, w))?;
                    apply(&mut replay, &mut segment, off, end, rec).map_err(|w| corrupt(off, w))?;
                    off = end;
                    continue;
                }
                Frame::Partial => Corruption::Truncated,
                Frame::BadLength(len) => Corruption::BadLength(len),
                Frame::BadCrc => Corruption::BadCrc,
            };
            // Step 3: a torn tail, or (step 4) corruption.
            if is_last && !valid_record_after(&bytes, off + 1) {
                cut = Some(off);
                break;
            }
            return Err(corrupt(off, bad));
        }
        if segment.start_end.is_none() && !is_last {
            return Err(corrupt(0, Corruption::BadSegmentStart));
        }
        let len = cut.unwrap_or(bytes.len());
        if let Some(cut) = cut {
            tracing::warn!(%path, offset = cut, dropped = bytes.len() - cut, "WAL torn tail cut");
            disk.truncate(&path, cut as u64).map_err(FatalError::Disk)?;
            torn_tail = Some(TornTail {
                path: path.clone(),
                offset: cut as u64,
                bytes_dropped: (bytes.len() - cut) as u64,
            });
        }
        segment.written = len as u64;
        segment.durable = len as u64;
        segments.push(segment);
    }
    // Step 5: what we read (possibly from the page cache of a crashed process) is durable.
    if let Some(last) = segments.last() {
        disk.sync(&last.path).map_err(FatalError::SyncFailed)?;
    }
    disk.sync_dir(WAL_DIR).map_err(FatalError::SyncFailed)?;

    // Step 6: snapshot files.
    let snap_names: BTreeSet<String> =
        disk.list(snapshot::SNAP_DIR).map_err(FatalError::Disk)?.into_iter().collect();
    let mut referenced = BTreeSet::new();
    let mut groups = BTreeMap::new();
    let mut recovered = Recovered { groups: BTreeMap::new(), torn_tail };
    let last_path = segments.last().map_or_else(|| WAL_DIR.to_string(), |s| s.path.clone());
    for (group, g) in replay {
        let snapshot = match &g.snapshot {
            None => None,
            Some(meta) => {
                let path = snapshot::path(group, meta.last_index);
                let corrupt = |what| FatalError::Corrupt { path: path.clone(), offset: 0, what };
                let name = path.rsplit('/').next().unwrap_or(&path).to_string();
                if !snap_names.contains(&name) {
                    return Err(corrupt(Corruption::SnapshotMissing));
                }
                let bytes = disk.read(&path).map_err(FatalError::Disk)?;
                let data = snapshot::decode(&bytes, group, meta).map_err(corrupt)?;
                referenced.insert(name);
                Some((meta.clone(), data))
            }
        };
        let base = g.snapshot.as_ref().map_or(LogIndex(0), |m| m.last_index);
        if let Some(first) = g.entries.first() {
            if first.index != base.next() {
                let what = Corruption::LogGap { group, expected: base.next(), found: first.index };
                return Err(FatalError::Corrupt { path: last_path.clone(), offset: 0, what });
            }
        }
        let mut log = GroupLog {
            hard_state: g.hard_state,
            snapshot: g.snapshot.clone(),
            last_index: base,
            runs: Vec::new(),
        };
        log.append(&g.entries);
        groups.insert(group, log);
        recovered
            .groups
            .insert(group, GroupState { hard_state: g.hard_state, snapshot, entries: g.entries });
    }
    let mut removed_orphan = false;
    for name in snap_names.difference(&referenced) {
        let path = format!("{}/{name}", snapshot::SNAP_DIR);
        tracing::info!(%path, "removing unreferenced snapshot file");
        disk.remove(&path).map_err(FatalError::Disk)?;
        removed_orphan = true;
    }
    if removed_orphan || !snap_names.is_empty() {
        disk.sync_dir(snapshot::SNAP_DIR).map_err(FatalError::SyncFailed)?;
    }
    Ok(Found { segments, groups, recovered })
}

/// Segment seqs in `wal/`, sorted and checked consecutive. Files not ending in `.log` are
/// ignored.
fn list_segments<D: Disk>(disk: &D) -> Result<Vec<u64>, FatalError> {
    let mut seqs = Vec::new();
    for name in disk.list(WAL_DIR).map_err(FatalError::Disk)? {
        let Some(stem) = name.strip_suffix(".log") else { continue };
        let seq = (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse::<u64>().ok())
            .flatten();
        let Some(seq) = seq else {
            let path = format!("{WAL_DIR}/{name}");
            return Err(FatalError::Corrupt { path, offset: 0, what: Corruption::BadFileName });
        };
        seqs.push(seq);
    }
    seqs.sort_unstable();
    for w in seqs.windows(2) {
        if w[1] != w[0] + 1 {
            let missing = w[0] + 1;
            let what = Corruption::MissingSegment { missing };
            return Err(FatalError::Corrupt { path: segment_path(missing), offset: 0, what });
        }
    }
    Ok(seqs)
}

/// Bytes of CRC work the torn-tail scan may do per byte it scans (plus a fixed allowance):
/// bytes crafted so that every offset claims a long record would otherwise make the scan
/// quadratic.
const SCAN_CRC_BYTES_PER_BYTE: usize = 64;
const SCAN_CRC_BYTES_BASE: usize = 64 << 20;

/// Is there a valid, decodable record starting anywhere at or after `from`? If so, a bad
/// frame before it is not a torn tail. Past its work budget the scan answers yes: refusing to
/// start is the safe side (nothing acknowledged is dropped).
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    let tail = bytes.len().saturating_sub(from);
    let mut budget =
        SCAN_CRC_BYTES_BASE.saturating_add(tail.saturating_mul(SCAN_CRC_BYTES_PER_BYTE));
    for p in from..bytes.len() {
        if let Some(len) = record::claimed_len(bytes, p) {
            budget = budget.saturating_sub(len);
            if budget == 0 {
                tracing::error!(
                    offset = from,
                    "torn-tail scan over budget; treating as corruption"
                );
                return true;
            }
        }
        if let Frame::Valid { kind, payload, .. } = record::read_frame(bytes, p) {
            if record::decode(kind, payload).is_ok() {
                return true;
            }
        }
    }
    false
}

/// A group's state while replaying.
#[derive(Default)]
struct ReplayGroup {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    /// Consecutive entries above the snapshot. While replaying they may start above
    /// snapshot + 1 (the entries between were in deleted segments and are covered by a later
    /// snapshot record); the end of recovery checks that they do not.
    entries: Vec<Entry>,
}

impl ReplayGroup {
    fn apply_entries(&mut self, group: GroupId, batch: Vec<Entry>) -> Result<(), Corruption> {
        let base = self.snapshot.as_ref().map_or(LogIndex(0), |m| m.last_index);
        let batch: Vec<Entry> = batch.into_iter().filter(|e| e.index > base).collect();
        let Some(at) = batch.first().map(|e| e.index) else { return Ok(()) };
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else {
            self.entries = batch;
            return Ok(());
        };
        let (first, last) = (first.index, last.index);
        if at > last.next() {
            return Err(Corruption::LogGap { group, expected: last.next(), found: at });
        }
        if at <= first {
            self.entries = batch;
        } else {
            // Raft log truncation: the batch replaces the tail from `at` on.
            self.entries.truncate((at.0 - first.0) as usize);
            self.entries.extend(batch);
        }
        Ok(())
    }

    fn apply_snapshot(&mut self, meta: SnapshotMeta, log_kept: bool) {
        if self.snapshot.as_ref().is_some_and(|cur| meta.last_index < cur.last_index) {
            return;
        }
        if log_kept {
            self.entries.retain(|e| e.index > meta.last_index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(meta);
    }
}

/// Applies one decoded record found at `off..end` of `segment`.
fn apply(
    replay: &mut BTreeMap<GroupId, ReplayGroup>,
    segment: &mut Segment,
    off: usize,
    end: usize,
    rec: Record,
) -> Result<(), Corruption> {
    let is_start = matches!(rec, Record::SegmentStart(_));
    if (off == 0) != is_start {
        return Err(if off == 0 {
            Corruption::BadSegmentStart
        } else {
            Corruption::UnexpectedSegmentStart
        });
    }
    match rec {
        Record::SegmentStart(start) => {
            if start.seq != segment.seq {
                return Err(Corruption::BadSegmentStart);
            }
            for (group, hard_state) in start.hard_states {
                replay.entry(group).or_default().hard_state = hard_state;
            }
            for (group, meta) in start.snapshots {
                replay.entry(group).or_default().apply_snapshot(meta, true);
            }
            segment.start_end = Some(end as u64);
        }
        Record::Entries { group, entries } => {
            // Invariant: decode() refuses an empty batch.
            let last = entries.last().map_or(LogIndex(0), |e| e.index);
            let max = segment.group_max.entry(group).or_default();
            *max = (*max).max(last);
            replay.entry(group).or_default().apply_entries(group, entries)?;
        }
        Record::HardState { group, hard_state } => {
            replay.entry(group).or_default().hard_state = hard_state;
        }
        Record::Snapshot { group, meta, log_kept } => {
            replay.entry(group).or_default().apply_snapshot(meta, log_kept);
        }
    }
    Ok(())
}
