//! WAL tests: round trips, crashes at every byte of the tail, corruption, fsync failure,
//! segments and the low-water mark, snapshots, and a model-based property test.
//!
//! Names cite the rule each test guards: RAFT-1 (durable before acknowledged), RAFT-8
//! (snapshots), DESIGN.md §5 (torn tail vs corruption, low-water mark).

use std::collections::BTreeMap;

use decree_types::{GroupId, LogIndex, NodeId, Term};

use super::record;
use super::*;
use crate::disk::{DiskEvent, MemDisk};
use crate::msg::EntryPayload;

type Groups = BTreeMap<GroupId, GroupState>;

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);
const G3: GroupId = GroupId(3);

fn e(index: u64, term: u64) -> Entry {
    let payload = EntryPayload::Command(format!("cmd {index} of term {term}").into_bytes());
    Entry { term: Term(term), index: LogIndex(index), payload }
}

fn es(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| e(i, term)).collect()
}

fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term: Term(term), vote: vote.map(NodeId), commit: LogIndex(commit) }
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta { last_index: LogIndex(index), last_term: Term(term), voters: vec![NodeId(1)] }
}

fn big() -> WalConfig {
    WalConfig::default()
}

fn small() -> WalConfig {
    WalConfig { segment_bytes: 300 }
}

fn open(disk: &MemDisk, config: WalConfig) -> (Wal<MemDisk>, Recovered) {
    match Wal::open(disk.clone(), config) {
        Ok(x) => x,
        Err(err) => panic!("open failed: {err}"),
    }
}

fn open_err(disk: &MemDisk) -> FatalError {
    match Wal::open(disk.clone(), big()) {
        Ok(_) => panic!("open succeeded on a corrupt WAL"),
        Err(WalError::Fatal(f)) => f,
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Groups in the form a model keeps them, without empty groups.
fn non_empty(groups: &BTreeMap<GroupId, GroupState>) -> BTreeMap<GroupId, GroupState> {
    groups
        .iter()
        .filter(|(_, g)| **g != GroupState::default())
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

fn state(
    hard_state: HardState,
    snapshot: Option<(SnapshotMeta, &[u8])>,
    entries: Vec<Entry>,
) -> GroupState {
    GroupState { hard_state, snapshot: snapshot.map(|(m, d)| (m, d.to_vec())), entries }
}

// ---------------------------------------------------------------- round trips

#[test]
fn raft1_round_trip_of_several_groups() {
    let disk = MemDisk::new();
    let (mut wal, rec) = open(&disk, big());
    assert_eq!(rec, Recovered::default());
    wal.append(G1, &es(1..=3, 1)).unwrap();
    wal.set_hard_state(G1, hs(1, Some(1), 2)).unwrap();
    wal.append(G2, &es(1..=2, 4)).unwrap();
    wal.set_hard_state(G3, hs(7, None, 0)).unwrap();
    wal.append(G1, &es(4..=5, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();

    let (_, rec) = open(&disk, big());
    let want = BTreeMap::from([
        (G1, state(hs(1, Some(1), 2), None, es(1..=5, 1))),
        (G2, state(HardState::default(), None, es(1..=2, 4))),
        (G3, state(hs(7, None, 0), None, vec![])),
    ]);
    assert_eq!(rec.groups, want);
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn raft1_unsynced_records_are_lost_on_crash_and_synced_ones_are_not() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=2, 1)).unwrap();
    wal.sync().unwrap();
    wal.append(G1, &es(3..=4, 1)).unwrap();
    wal.set_hard_state(G1, hs(1, Some(2), 0)).unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1], state(HardState::default(), None, es(1..=2, 1)));
}

#[test]
fn raft1_sync_for_ack_skips_the_fsync_for_a_commit_index_alone() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=2, 1)).unwrap();
    wal.set_hard_state(G1, hs(1, Some(1), 0)).unwrap();
    wal.sync_for_ack().unwrap();
    assert_eq!(disk.syncs(), 1, "entries, term and vote: one fsync");

    // A commit-only change waits for the next fsync.
    wal.set_hard_state(G1, hs(1, Some(1), 2)).unwrap();
    wal.sync_for_ack().unwrap();
    assert_eq!(disk.syncs(), 1, "the commit index alone: no fsync");
    assert!(wal.stats().pending_bytes > 0, "the commit record is still buffered");
    drop(wal);
    disk.crash();
    let (mut wal, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1], state(hs(1, Some(1), 0), None, es(1..=2, 1)));

    // Buffered behind it, the commit record becomes durable with the next entries' fsync.
    wal.set_hard_state(G1, hs(1, Some(1), 2)).unwrap();
    wal.append(G1, &es(3..=3, 1)).unwrap();
    let syncs = disk.syncs();
    wal.sync_for_ack().unwrap();
    assert_eq!(disk.syncs() - syncs, 1);
    // A new term or vote is never lazy.
    wal.set_hard_state(G1, hs(2, None, 2)).unwrap();
    wal.sync_for_ack().unwrap();
    assert_eq!(disk.syncs() - syncs, 2, "a term change is fsynced before any acknowledgement");
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1], state(hs(2, None, 2), None, es(1..=3, 1)));
}

#[test]
fn raft_log_truncation_survives_restart() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=5, 1)).unwrap();
    wal.append(G2, &es(1..=2, 1)).unwrap();
    wal.sync().unwrap();
    // A new leader overwrites the tail from index 3.
    wal.append(G1, &es(3..=4, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();

    let (mut wal, rec) = open(&disk, big());
    let mut want = es(1..=2, 1);
    want.extend(es(3..=4, 2));
    assert_eq!(rec.groups[&G1].entries, want);
    assert_eq!(rec.groups[&G2].entries, es(1..=2, 1));

    // The recovered WAL keeps the log's shape: it appends after 4 and truncates again.
    wal.append(G1, &es(5..=6, 2)).unwrap();
    wal.append(G1, &es(6..=6, 3)).unwrap();
    assert_eq!(
        wal.append(G1, &es(8..=8, 3)).unwrap_err().to_string(),
        InvalidRequest::Gap { group: G1, first: LogIndex(8), last: LogIndex(6) }.to_string()
    );
    wal.sync().unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    want.push(e(5, 2));
    want.push(e(6, 3));
    assert_eq!(rec.groups[&G1].entries, want);
}

#[test]
fn raft1_sync_is_one_fsync_for_all_groups_and_orders_dir_sync_after_a_new_segment() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    disk.record_events(true);
    for g in 1..=10 {
        wal.append(GroupId(g), &es(1..=3, 1)).unwrap();
        wal.set_hard_state(GroupId(g), hs(1, Some(g), 0)).unwrap();
    }
    let _token = wal.sync().unwrap();
    let seg = "wal/00000000000000000001.log".to_string();
    let events = disk.take_events();
    assert!(
        matches!(&events[..], [
        DiskEvent::Append { path: a, .. },
        DiskEvent::Sync { path: s },
        DiskEvent::SyncDir { dir },
    ] if *a == seg && *s == seg && dir == "wal"),
        "{events:?}"
    );

    // The segment's directory entry is durable now: the next sync is one append + one fsync.
    wal.append(G1, &es(4..=4, 1)).unwrap();
    wal.sync().unwrap();
    let events = disk.take_events();
    assert!(
        matches!(&events[..], [DiskEvent::Append { .. }, DiskEvent::Sync { .. }]),
        "{events:?}"
    );

    // Nothing pending: a token without I/O.
    let syncs = disk.syncs();
    wal.sync().unwrap();
    assert_eq!(disk.syncs(), syncs);
    assert!(disk.take_events().is_empty());
    assert_eq!(wal.stats().fsyncs, 2);
}

/// The on-disk format is frozen: a change to these bytes is a format change (bump
/// `SEGMENT_VERSION` and keep reading the old one). On purpose, update `GOLDEN_SEGMENT_HEX`
/// with the hex the failure prints.
#[test]
fn golden_segment_bytes() {
    const GOLDEN_SNAPSHOT_HEX: &str = "44454352534e415001007707820702050101010173";
    const GOLDEN_SEGMENT_HEX: &str = "0d000000d6554c5d01444543524557414c010001000004000000dc09f65e0201010100070000003530752a020101020102abcd05000000d753adf603010101020106000000d27ea07604020501010100";
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &[Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Noop }])
        .unwrap();
    wal.append(
        G1,
        &[Entry {
            term: Term(1),
            index: LogIndex(2),
            payload: EntryPayload::Command(vec![0xab, 0xcd]),
        }],
    )
    .unwrap();
    wal.set_hard_state(G1, hs(1, Some(2), 1)).unwrap();
    wal.save_snapshot(G2, meta(5, 1), b"s").unwrap();
    let bytes = disk.read("wal/00000000000000000001.log").unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_SEGMENT_HEX, "segment bytes changed; new hex:\n{hex}");
    let snap = disk.read("snap/00000000000000000002-00000000000000000005.snap").unwrap();
    let hex: String = snap.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_SNAPSHOT_HEX, "snapshot bytes changed; new hex:\n{hex}");
}

// ---------------------------------------------------------------- torn tails

/// Builds a WAL with synced records, then leaves `pending` records written but unsynced
/// (their fsync fails). Returns the disk and the recovered state expected after `k` of the
/// pending records survive, for every k, with the byte offset where record k ends.
fn torn_scenario() -> (MemDisk, Vec<(usize, Groups)>) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=3, 1)).unwrap();
    wal.set_hard_state(G1, hs(1, Some(1), 1)).unwrap();
    wal.append(G2, &es(1..=1, 1)).unwrap();
    wal.sync().unwrap();

    let mut model = BTreeMap::from([
        (G1, state(hs(1, Some(1), 1), None, es(1..=3, 1))),
        (G2, state(HardState::default(), None, es(1..=1, 1))),
    ]);
    let mut expect = vec![(0, model.clone())];
    let mut end = 0;
    // Pending record 1: G1 entries 4..5.
    wal.append(G1, &es(4..=5, 1)).unwrap();
    end += record::encode_entries(G1, &es(4..=5, 1)).unwrap()[0].0.len();
    model.get_mut(&G1).unwrap().entries.extend(es(4..=5, 1));
    expect.push((end, model.clone()));
    // Pending record 2: G1 hard state.
    wal.set_hard_state(G1, hs(2, Some(3), 5)).unwrap();
    end += record::encode_hard_state(G1, &hs(2, Some(3), 5)).len();
    model.get_mut(&G1).unwrap().hard_state = hs(2, Some(3), 5);
    expect.push((end, model.clone()));
    // Pending record 3: G2 truncation + entries.
    let batch = vec![e(1, 2), e(2, 2), e(3, 2)];
    wal.append(G2, &batch).unwrap();
    end += record::encode_entries(G2, &batch).unwrap()[0].0.len();
    model.get_mut(&G2).unwrap().entries = batch;
    expect.push((end, model));

    disk.fail_next_sync();
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::Fatal(FatalError::SyncFailed(_))), "{err}");
    assert_eq!(disk.last_unsynced_len(), end);
    (disk, expect)
}

#[test]
fn torn_tail_crash_at_every_byte_offset_recovers_exactly_the_whole_records() {
    let total = torn_scenario().1.last().unwrap().0;
    for keep in 0..=total {
        let (disk, expect) = torn_scenario();
        let synced_len = disk.len("wal/00000000000000000001.log").unwrap() - total;
        disk.crash_torn_at(keep);
        let (mut wal, rec) = open(&disk, big());
        // Exactly the records that fit entirely in the surviving bytes.
        let (end, want) = expect.iter().rev().find(|(end, _)| *end <= keep).unwrap();
        assert_eq!(non_empty(&rec.groups), *want, "keep {keep}");
        if *end == keep {
            assert_eq!(rec.torn_tail, None, "keep {keep}");
        } else {
            let torn = rec.torn_tail.clone().unwrap();
            assert_eq!(torn.offset as usize, synced_len + end, "keep {keep}");
            assert_eq!(torn.bytes_dropped as usize, keep - end, "keep {keep}");
        }
        // The cut was made durable, and the WAL appends cleanly after it.
        wal.set_hard_state(G3, hs(9, None, 0)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        disk.crash();
        let (_, again) = open(&disk, big());
        assert_eq!(again.torn_tail, None, "keep {keep}");
        let mut want = want.clone();
        want.insert(G3, state(hs(9, None, 0), None, vec![]));
        assert_eq!(non_empty(&again.groups), want, "keep {keep}");
    }
}

#[test]
fn torn_tail_of_a_fresh_segment_start_is_cut_and_the_segment_reused() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=1, 1)).unwrap();
    disk.fail_next_sync();
    assert!(wal.sync().is_err());
    drop(wal);
    // The segment file exists (its directory entry reached the disk) but holds a few bytes.
    let path = "wal/00000000000000000001.log";
    let mut d = disk.clone();
    d.sync_dir("wal").unwrap();
    disk.crash_torn_at(5);
    assert_eq!(disk.len(path), Some(5));
    let (mut wal, rec) = open(&disk, big());
    assert!(rec.groups.is_empty());
    assert_eq!(rec.torn_tail.map(|t| (t.offset, t.bytes_dropped)), Some((0, 5)));
    wal.append(G1, &es(1..=1, 2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1].entries, es(1..=1, 2));
}

#[test]
fn crash_while_a_sync_spans_a_segment_roll_recovers_a_prefix() {
    for fail_at in 1..=2 {
        for keep in [0, 7, 40, usize::MAX] {
            let disk = MemDisk::new();
            let (mut wal, _) = open(&disk, small());
            wal.append(G1, &es(1..=2, 1)).unwrap();
            wal.sync().unwrap();
            // One iteration's worth of records that rolls over to new segments.
            for i in 3..=12 {
                wal.append(G1, &es(i..=i, 1)).unwrap();
            }
            assert!(wal.stats().segments >= 2);
            // 1: the old segment's fsync fails; 2: the new segment's fsync fails.
            disk.fail_nth_sync(fail_at);
            assert!(wal.sync().unwrap_err().is_fatal());
            drop(wal);
            disk.crash_torn_at(keep);
            let (_, rec) = open(&disk, small());
            let got = &rec.groups[&G1].entries;
            assert!(got.len() >= 2 && *got == es(1..=got.len() as u64, 1), "{fail_at}/{keep}");
        }
    }
}

// ---------------------------------------------------------------- corruption

/// A synced log of 60 records (several segments with `small()`).
fn synced_log(config: WalConfig) -> MemDisk {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, config);
    for i in 1..=30 {
        wal.append(G1, &es(i..=i, 1)).unwrap();
        wal.set_hard_state(G1, hs(1, Some(1), i)).unwrap();
        wal.sync().unwrap();
    }
    disk
}

/// Offsets of the records in a segment.
fn record_offsets(disk: &MemDisk, path: &str) -> Vec<usize> {
    let bytes = disk.read(path).unwrap();
    let mut offsets = Vec::new();
    let mut off = 0;
    while let record::Frame::Valid { end, .. } = record::read_frame(&bytes, off) {
        offsets.push(off);
        off = end;
    }
    assert_eq!(off, bytes.len());
    offsets
}

#[test]
fn flipped_bit_mid_log_is_refused_naming_file_and_offset() {
    let disk = synced_log(big());
    let path = "wal/00000000000000000001.log";
    let offsets = record_offsets(&disk, path);
    // A bit in the payload of the third record (not the tail).
    let target = offsets[3];
    assert!(disk.flip_bit(path, target + record::HEADER_BYTES + 1, 3));
    match open_err(&disk) {
        FatalError::Corrupt { path: p, offset, what } => {
            assert_eq!((p.as_str(), offset, what), (path, target as u64, Corruption::BadCrc));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn flipped_bit_in_a_length_field_mid_log_is_refused_not_taken_for_a_torn_tail() {
    let disk = synced_log(big());
    let path = "wal/00000000000000000001.log";
    let offsets = record_offsets(&disk, path);
    let target = offsets[offsets.len() - 4];
    // Make the length huge, so the record seems to run past the end of the file.
    assert!(disk.flip_bit(path, target + 2, 6));
    let err = open_err(&disk);
    assert!(
        matches!(&err, FatalError::Corrupt { offset, .. } if *offset == target as u64),
        "{err}"
    );
}

#[test]
fn flipped_bit_in_an_older_segment_is_refused_even_at_its_tail() {
    let disk = synced_log(small());
    let path = "wal/00000000000000000001.log";
    let offsets = record_offsets(&disk, path);
    assert!(disk.len("wal/00000000000000000003.log").is_some());
    let last = *offsets.last().unwrap();
    assert!(disk.flip_bit(path, disk.len(path).unwrap() - 1, 0));
    match open_err(&disk) {
        FatalError::Corrupt { path: p, offset, what } => {
            assert_eq!((p.as_str(), offset, what), (path, last as u64, Corruption::BadCrc));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_record_kind_and_missing_segment_are_refused() {
    // An unknown kind with a valid CRC, followed by a valid record.
    let disk = synced_log(big());
    let path = "wal/00000000000000000001.log";
    let mut bytes = disk.read(path).unwrap();
    let at = bytes.len();
    record::frame(77, b"future", &mut bytes);
    bytes.extend(record::encode_hard_state(G2, &hs(1, None, 0)));
    let mut d = disk.clone();
    d.write(path, &bytes).unwrap();
    match open_err(&disk) {
        FatalError::Corrupt { offset, what, .. } => {
            assert_eq!((offset, what), (at as u64, Corruption::UnknownKind(77)));
        }
        other => panic!("{other}"),
    }

    let disk = synced_log(small());
    let mut d = disk.clone();
    d.remove("wal/00000000000000000002.log").unwrap();
    match open_err(&disk) {
        FatalError::Corrupt { what, .. } => {
            assert_eq!(what, Corruption::MissingSegment { missing: 2 });
        }
        other => panic!("{other}"),
    }
}

#[test]
fn empty_or_renamed_segments_are_refused() {
    // An empty segment that is not the last one.
    let disk = synced_log(small());
    let mut d = disk.clone();
    d.write("wal/00000000000000000002.log", b"").unwrap();
    match open_err(&disk) {
        FatalError::Corrupt { path, offset, what } => assert_eq!(
            (path.as_str(), offset, what),
            ("wal/00000000000000000002.log", 0, Corruption::BadSegmentStart)
        ),
        other => panic!("{other}"),
    }
    // A segment whose start record names another seq (a file renamed by hand).
    let disk = synced_log(small());
    let mut d = disk.clone();
    let last = disk.list("wal").unwrap().len() as u64;
    let bytes = disk.read("wal/00000000000000000001.log").unwrap();
    d.write(&format!("wal/{:020}.log", last + 1), &bytes).unwrap();
    match open_err(&disk) {
        FatalError::Corrupt { offset, what, .. } => {
            assert_eq!((offset, what), (0, Corruption::BadSegmentStart));
        }
        other => panic!("{other}"),
    }
    // A file name that is not a seq.
    let disk = synced_log(small());
    let mut d = disk.clone();
    d.write("wal/notes.log", b"").unwrap();
    assert!(matches!(open_err(&disk), FatalError::Corrupt { what: Corruption::BadFileName, .. }));
}

#[test]
fn crafted_tail_cannot_make_the_torn_tail_scan_quadratic() {
    let disk = synced_log(big());
    let path = "wal/00000000000000000001.log";
    let mut bytes = disk.read(path).unwrap();
    // 256 KiB in which every offset claims a record running almost to the end of the file.
    let tail: usize = 256 << 10;
    let start = bytes.len();
    for i in 0..tail / 4 {
        let remaining = (tail - i * 4).saturating_sub(record::HEADER_BYTES) as u32;
        bytes.extend_from_slice(&remaining.to_le_bytes());
    }
    let mut d = disk.clone();
    d.write(path, &bytes).unwrap();
    let t = std::time::Instant::now();
    let result = Wal::open(disk.clone(), big());
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    // Over budget means "refuse": the error names where the damage starts.
    match result {
        Err(WalError::Fatal(FatalError::Corrupt { offset, .. })) => {
            assert_eq!(offset, start as u64)
        }
        Ok((_, rec)) => assert_eq!(rec.torn_tail.map(|t| t.offset), Some(start as u64)),
        Err(other) => panic!("{other}"),
    }
}

// ---------------------------------------------------------------- fsync failure

#[test]
fn raft1_failed_fsync_is_fatal_and_poisons_the_wal() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=2, 1)).unwrap();
    wal.sync().unwrap();
    wal.set_hard_state(G1, hs(2, Some(2), 0)).unwrap();
    disk.fail_next_sync();
    let syncs = disk.syncs();
    // No token: the vote cannot be released.
    let err = wal.sync().unwrap_err();
    assert!(err.is_fatal());
    assert!(matches!(err, WalError::Fatal(FatalError::SyncFailed(_))), "{err}");
    assert_eq!(disk.syncs(), syncs);
    // Every later call fails too, a retried sync included (it never pretends).
    let later = [
        wal.append(G1, &es(3..=3, 2)).unwrap_err(),
        wal.set_hard_state(G1, hs(3, None, 0)).unwrap_err(),
        wal.sync().unwrap_err(),
        wal.compact().unwrap_err(),
        wal.save_snapshot(G1, meta(1, 1), b"s").unwrap_err(),
    ];
    for err in later {
        assert!(matches!(err, WalError::Fatal(FatalError::Poisoned { .. })), "{err}");
    }
    assert_eq!(disk.syncs(), syncs);
}

#[test]
fn invalid_requests_are_refused_and_leave_the_wal_usable() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=3, 2)).unwrap();
    wal.set_hard_state(G1, hs(2, Some(1), 0)).unwrap();
    let cases = [
        (wal.append(G1, &es(5..=5, 2)), "gap"),
        (wal.append(G1, &[e(4, 2), e(6, 2)]), "not consecutive"),
        (wal.append(G1, &[e(4, 1)]), "term regression"),
        (wal.append(G1, &es(0..=0, 2)), "index 0"),
        (wal.set_hard_state(G1, hs(1, None, 0)), "term down"),
        (wal.set_hard_state(G1, hs(2, Some(3), 0)), "second vote in a term"),
    ];
    for (result, what) in cases {
        assert!(matches!(result, Err(WalError::Invalid(_))), "{what}: {result:?}");
    }
    wal.save_snapshot(G1, meta(2, 2), b"s").unwrap();
    let stale = wal.save_snapshot(G1, meta(1, 2), b"s");
    assert!(matches!(stale, Err(WalError::Invalid(InvalidRequest::StaleSnapshot { .. }))));
    let below = wal.append(G1, &es(2..=2, 2));
    assert!(matches!(below, Err(WalError::Invalid(InvalidRequest::BelowSnapshot { .. }))));
    wal.append(G1, &es(4..=4, 3)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    let mut want = es(3..=3, 2);
    want.push(e(4, 3));
    assert_eq!(rec.groups[&G1].entries, want);
    assert_eq!(rec.groups[&G1].hard_state, hs(2, Some(1), 0));
}

// ---------------------------------------------------------------- segments, low-water mark

#[test]
fn segments_roll_over_and_the_low_water_mark_deletes_only_covered_ones() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small());
    // G3's hard state is written once, in segment 1 only.
    wal.set_hard_state(G3, hs(5, Some(5), 0)).unwrap();
    for i in 1..=30 {
        wal.append(G1, &es(i..=i, 1)).unwrap();
        if i <= 10 {
            wal.append(G2, &es(i..=i, 1)).unwrap();
        }
        wal.sync().unwrap();
    }
    let segments = wal.stats().segments;
    assert!(segments >= 5, "{:?}", wal.stats());
    // No snapshot: everything is needed.
    assert_eq!(wal.compact().unwrap(), 0);
    // G1 is covered up to 25 but G2's entries pin the segments that hold them.
    wal.save_snapshot(G1, meta(25, 1), b"g1 at 25").unwrap();
    let removed_g1_only = wal.compact().unwrap();
    assert_eq!(removed_g1_only, 0, "segment 1 holds G2's entries");
    wal.save_snapshot(G2, meta(10, 1), b"g2 at 10").unwrap();
    let removed = wal.compact().unwrap();
    assert!(removed >= 1 && removed < segments, "removed {removed} of {segments}");
    assert_eq!(wal.stats().segments_removed, removed as u64);
    assert!(!disk.exists("wal/00000000000000000001.log"));
    // The active segment always remains.
    assert!(wal.stats().segments >= 1);
    wal.append(G1, &es(31..=31, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    disk.crash();

    let (_, rec) = open(&disk, small());
    assert_eq!(rec.groups[&G1].snapshot, Some((meta(25, 1), b"g1 at 25".to_vec())));
    assert_eq!(rec.groups[&G1].entries, es(26..=31, 1));
    assert_eq!(rec.groups[&G2].snapshot, Some((meta(10, 1), b"g2 at 10".to_vec())));
    assert!(rec.groups[&G2].entries.is_empty());
    // Kept by the checkpoint in each segment start.
    assert_eq!(rec.groups[&G3].hard_state, hs(5, Some(5), 0));
}

#[test]
fn compaction_right_after_recovery_keeps_the_log_consistent() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small());
    for i in 1..=20 {
        wal.append(G1, &es(i..=i, 1)).unwrap();
        wal.sync().unwrap();
    }
    wal.save_snapshot(G1, meta(18, 1), b"x").unwrap();
    drop(wal);
    disk.crash();
    // Recovery recomputes each segment's per-group maximum.
    let (mut wal, _) = open(&disk, small());
    assert!(wal.compact().unwrap() >= 1);
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, small());
    assert_eq!(rec.groups[&G1].entries, es(19..=20, 1));
}

#[test]
fn low_water_mark_deletion_interrupted_by_a_crash_leaves_no_gap() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small());
    for i in 1..=30 {
        wal.append(G1, &es(i..=i, 1)).unwrap();
        wal.sync().unwrap();
    }
    wal.save_snapshot(G1, meta(28, 1), b"x").unwrap();
    // The directory fsync after the first removal fails: the removal is not durable.
    disk.fail_next_sync_dir();
    assert!(wal.compact().unwrap_err().is_fatal());
    drop(wal);
    disk.crash();
    assert!(disk.exists("wal/00000000000000000001.log"));
    let (mut wal, rec) = open(&disk, small());
    assert_eq!(rec.groups[&G1].entries, es(29..=30, 1));
    // Done again, every removal is durable before the next one starts.
    disk.record_events(true);
    let removed = wal.compact().unwrap();
    assert!(removed >= 2);
    let events = disk.take_events();
    let expect: Vec<DiskEvent> = (1..=removed as u64)
        .flat_map(|seq| {
            [
                DiskEvent::Remove { path: format!("wal/{seq:020}.log") },
                DiskEvent::SyncDir { dir: "wal".into() },
            ]
        })
        .collect();
    assert_eq!(events, expect);
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, small());
    assert_eq!(rec.groups[&G1].entries, es(29..=30, 1));
}

// ---------------------------------------------------------------- snapshots (RAFT-8)

#[test]
fn raft8_snapshot_keeps_the_suffix_when_it_describes_a_prefix_of_the_log() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=5, 1)).unwrap();
    wal.append(G1, &es(6..=8, 2)).unwrap();
    wal.save_snapshot(G1, meta(6, 2), b"six").unwrap();
    drop(wal);
    disk.crash();
    let (mut wal, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1].snapshot, Some((meta(6, 2), b"six".to_vec())));
    assert_eq!(rec.groups[&G1].entries, es(7..=8, 2));
    // The log continues after 8 with the right term check.
    wal.append(G1, &es(9..=9, 2)).unwrap();
    assert!(matches!(wal.append(G1, &es(10..=10, 1)), Err(WalError::Invalid(_))));
}

#[test]
fn raft8_snapshot_that_conflicts_with_the_log_discards_it() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=8, 1)).unwrap();
    // Installed from a leader: entry 6 has term 3 there, so our log is not a prefix.
    wal.save_snapshot(G1, meta(6, 3), b"leader's").unwrap();
    wal.append(G1, &es(7..=7, 3)).unwrap();
    wal.sync().unwrap();
    // And one beyond the end of the log.
    wal.save_snapshot(G2, meta(40, 3), b"far").unwrap();
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1].entries, es(7..=7, 3));
    assert_eq!(rec.groups[&G2], state(HardState::default(), Some((meta(40, 3), b"far")), vec![]));
}

#[test]
fn raft8_snapshot_durable_steps_in_order() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=3, 1)).unwrap();
    wal.save_snapshot(G1, meta(1, 1), b"one").unwrap();
    disk.record_events(true);
    wal.save_snapshot(G1, meta(3, 1), b"three").unwrap();
    let snap1 = "snap/00000000000000000001-00000000000000000001.snap";
    let snap3 = "snap/00000000000000000001-00000000000000000003.snap";
    let tmp = format!("{snap3}.tmp");
    let seg = "wal/00000000000000000001.log";
    let names: Vec<String> = disk
        .take_events()
        .into_iter()
        .map(|e| match e {
            DiskEvent::Write { path, .. } => format!("write {path}"),
            DiskEvent::Sync { path } => format!("sync {path}"),
            DiskEvent::Rename { from, to } => format!("rename {from} {to}"),
            DiskEvent::SyncDir { dir } => format!("sync_dir {dir}"),
            DiskEvent::Append { path, .. } => format!("append {path}"),
            DiskEvent::Remove { path } => format!("remove {path}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            format!("write {tmp}"),
            format!("sync {tmp}"),
            format!("rename {tmp} {snap3}"),
            "sync_dir snap".to_string(),
            format!("append {seg}"),
            format!("sync {seg}"),
            format!("remove {snap1}"),
        ]
    );
}

#[test]
fn raft8_crash_before_the_snapshot_is_complete_uses_the_old_one() {
    // Crash before sync_dir: the rename is lost.
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=5, 1)).unwrap();
    wal.save_snapshot(G1, meta(2, 1), b"old").unwrap();
    disk.fail_next_sync_dir();
    assert!(wal.save_snapshot(G1, meta(4, 1), b"new").unwrap_err().is_fatal());
    drop(wal);
    disk.crash();
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1].snapshot, Some((meta(2, 1), b"old".to_vec())));
    assert_eq!(rec.groups[&G1].entries, es(3..=5, 1));
    assert_eq!(disk.list("snap").unwrap().len(), 1);

    // Crash after the file is durable but before its marker is: the new file is an orphan,
    // the old snapshot is used, and the orphan is removed.
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=5, 1)).unwrap();
    wal.save_snapshot(G1, meta(2, 1), b"old").unwrap();
    disk.fail_nth_sync(2); // 1: the temp file, 2: the segment with the marker
    assert!(wal.save_snapshot(G1, meta(4, 1), b"new").unwrap_err().is_fatal());
    drop(wal);
    disk.crash();
    assert_eq!(disk.list("snap").unwrap().len(), 2);
    let (_, rec) = open(&disk, big());
    assert_eq!(rec.groups[&G1].snapshot, Some((meta(2, 1), b"old".to_vec())));
    assert_eq!(rec.groups[&G1].entries, es(3..=5, 1));
    assert_eq!(
        disk.list("snap").unwrap(),
        vec!["00000000000000000001-00000000000000000002.snap".to_string()]
    );
}

#[test]
fn raft8_corrupt_or_missing_snapshot_is_refused() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, big());
    wal.append(G1, &es(1..=5, 1)).unwrap();
    wal.save_snapshot(G1, meta(3, 1), b"the state machine").unwrap();
    drop(wal);
    let path = "snap/00000000000000000001-00000000000000000003.snap";
    let len = disk.len(path).unwrap();
    assert!(disk.flip_bit(path, len - 2, 4));
    match open_err(&disk) {
        FatalError::Corrupt { path: p, what, .. } => {
            assert_eq!((p.as_str(), what), (path, Corruption::BadCrc))
        }
        other => panic!("{other}"),
    }
    let mut d = disk.clone();
    d.remove(path).unwrap();
    match open_err(&disk) {
        FatalError::Corrupt { path: p, what, .. } => {
            assert_eq!((p.as_str(), what), (path, Corruption::SnapshotMissing));
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------- arbitrary bytes

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Segment contents are input too: recovery returns an error or a state, never panics.
    #[test]
    fn arbitrary_segment_bytes_never_panic_recovery(
        first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        splice in 0usize..400,
    ) {
        let disk = synced_log(small());
        let mut d = disk.clone();
        // A valid log with garbage spliced in, and a garbage segment after it.
        let path = "wal/00000000000000000002.log";
        let mut bytes = disk.read(path).unwrap();
        let at = splice.min(bytes.len());
        bytes.splice(at..at, garbage.iter().copied());
        d.write(path, &bytes).unwrap();
        let _ = Wal::open(disk.clone(), small());
        let seqs = disk.list("wal").unwrap().len() as u64;
        d.write(&format!("wal/{:020}.log", seqs + 1), &first).unwrap();
        let _ = Wal::open(disk, small());
    }

    /// DESIGN.md §5: a flipped bit anywhere but in the very last record is refused, with the
    /// file and offset of the damaged record.
    #[test]
    fn any_flipped_bit_before_the_last_record_is_refused(pick in 0usize..100_000, bit in 0u8..8) {
        let disk = synced_log(small());
        let names = disk.list("wal").unwrap();
        let mut records = Vec::new();
        for name in &names {
            let path = format!("wal/{name}");
            let offsets = record_offsets(&disk, &path);
            let len = disk.len(&path).unwrap();
            for (i, off) in offsets.iter().enumerate() {
                let end = offsets.get(i + 1).copied().unwrap_or(len);
                records.push((path.clone(), *off, end));
            }
        }
        records.pop(); // the last record: a flip there is indistinguishable from a tear
        let total: usize = records.iter().map(|(_, off, end)| end - off).sum();
        let mut at = pick % total;
        let (path, off, _) = records
            .iter()
            .find(|(_, off, end)| {
                let fits = at < end - off;
                if !fits {
                    at -= end - off;
                }
                fits
            })
            .unwrap();
        assert!(disk.flip_bit(path, off + at, bit));
        match Wal::open(disk.clone(), small()) {
            Err(WalError::Fatal(FatalError::Corrupt { path: p, offset, .. })) => {
                proptest::prop_assert_eq!((p.as_str(), offset as usize), (path.as_str(), *off));
            }
            Err(other) => proptest::prop_assert!(false, "unexpected error {}", other),
            Ok(_) => proptest::prop_assert!(false, "flip at {} + {} accepted", path, off + at),
        }
    }
}

// ---------------------------------------------------------------- model-based property test

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    pub(super) enum Op {
        /// Append `count` entries to group `g`, starting `back` entries before the end
        /// (a Raft log truncation when `back > 0`), with the term raised if `bump`.
        Append {
            g: u64,
            back: u64,
            count: u64,
            bump: bool,
        },
        HardState {
            g: u64,
            vote: Option<u64>,
        },
        Sync,
        /// Snapshot at an index picked by `pick` (sometimes past the log: discards it).
        Snapshot {
            g: u64,
            pick: u64,
        },
        Compact,
        /// Drop the process and lose power; if `torn` is set, the last write was in
        /// flight (its fsync failed) and `keep` of its bytes survive.
        Crash {
            torn: bool,
            keep: u64,
        },
    }

    pub(super) fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1..4u64, 0..4u64, 1..4u64, any::<bool>())
                .prop_map(|(g, back, count, bump)| Op::Append { g, back, count, bump }),
            2 => (1..4u64, proptest::option::of(1..4u64)).prop_map(|(g, vote)| Op::HardState { g, vote }),
            4 => Just(Op::Sync),
            2 => (1..4u64, any::<u64>()).prop_map(|(g, pick)| Op::Snapshot { g, pick }),
            2 => Just(Op::Compact),
            2 => (any::<bool>(), any::<u64>()).prop_map(|(torn, keep)| Op::Crash { torn, keep }),
        ]
    }

    type Model = Groups;

    fn last_index(g: &GroupState) -> u64 {
        g.entries
            .last()
            .map(|e| e.index.0)
            .unwrap_or_else(|| g.snapshot.as_ref().map_or(0, |s| s.0.last_index.0))
    }

    fn last_term(g: &GroupState) -> u64 {
        g.entries
            .last()
            .map(|e| e.term.0)
            .unwrap_or_else(|| g.snapshot.as_ref().map_or(0, |s| s.0.last_term.0))
    }

    pub(super) fn run(ops: Vec<Op>) {
        let disk = MemDisk::new();
        let config = WalConfig { segment_bytes: 160 };
        let (mut wal, _) = open(&disk, config.clone());
        // `durable`: what a crash must recover. `prefixes`: the states after each record
        // appended since (a torn crash may recover any of them, in order).
        let mut durable: Model = BTreeMap::new();
        let mut current: Model = BTreeMap::new();
        let mut prefixes: Vec<Model> = Vec::new();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append { g, back, count, bump } => {
                    let group = current.entry(GroupId(g)).or_default();
                    let snap = group.snapshot.as_ref().map_or(0, |s| s.0.last_index.0);
                    let start = (last_index(group) + 1).saturating_sub(back).max(snap + 1);
                    let term = last_term(group).max(1) + u64::from(bump);
                    counter += 1;
                    let batch: Vec<Entry> = (start..start + count)
                        .map(|i| Entry {
                            term: Term(term),
                            index: LogIndex(i),
                            payload: EntryPayload::Command(counter.to_le_bytes().to_vec()),
                        })
                        .collect();
                    wal.append(GroupId(g), &batch).unwrap();
                    group.entries.retain(|e| e.index.0 < start);
                    group.entries.extend(batch);
                    prefixes.push(current.clone());
                }
                Op::HardState { g, vote } => {
                    let group = current.entry(GroupId(g)).or_default();
                    let new = hs(group.hard_state.term.0 + 1, vote, 0);
                    wal.set_hard_state(GroupId(g), new).unwrap();
                    group.hard_state = new;
                    prefixes.push(current.clone());
                }
                Op::Sync => {
                    wal.sync().unwrap();
                    durable = current.clone();
                    prefixes.clear();
                }
                Op::Snapshot { g, pick } => {
                    let group = current.entry(GroupId(g)).or_default();
                    let snap = group.snapshot.as_ref().map_or(0, |s| s.0.last_index.0);
                    let last = last_index(group);
                    let index = snap + pick % (last - snap + 3);
                    if index == 0 {
                        continue;
                    }
                    let term = group
                        .entries
                        .iter()
                        .find(|e| e.index.0 == index)
                        .map(|e| e.term.0)
                        .or_else(|| {
                            group
                                .snapshot
                                .as_ref()
                                .filter(|s| s.0.last_index.0 == index)
                                .map(|s| s.0.last_term.0)
                        })
                        .unwrap_or(last_term(group) + 1);
                    let kept = index <= last;
                    let m = meta(index, term);
                    let data = format!("{g}@{index}").into_bytes();
                    wal.save_snapshot(GroupId(g), m.clone(), &data).unwrap();
                    if kept {
                        group.entries.retain(|e| e.index.0 > index);
                    } else {
                        group.entries.clear();
                    }
                    group.snapshot = Some((m, data));
                    durable = current.clone();
                    prefixes.clear();
                }
                Op::Compact => {
                    wal.compact().unwrap();
                }
                Op::Crash { torn, keep } => {
                    if torn {
                        disk.fail_next_sync();
                        let _ = wal.sync();
                        let unsynced = disk.last_unsynced_len() as u64;
                        disk.crash_torn_at((keep % (unsynced + 1)) as usize);
                    } else {
                        disk.crash();
                    }
                    drop(wal);
                    let (reopened, rec) = open(&disk, config.clone());
                    wal = reopened;
                    let got = non_empty(&rec.groups);
                    if torn {
                        let mut candidates = vec![non_empty(&durable)];
                        candidates.extend(prefixes.iter().map(non_empty));
                        assert!(candidates.contains(&got), "torn crash recovered {got:?}");
                    } else {
                        assert_eq!(got, non_empty(&durable));
                    }
                    current = rec.groups;
                    durable = current.clone();
                    prefixes.clear();
                }
            }
        }
        // A final clean restart recovers what was last synced.
        wal.sync().unwrap();
        drop(wal);
        disk.crash();
        let (_, rec) = open(&disk, config);
        assert_eq!(non_empty(&rec.groups), non_empty(&current));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]

    #[test]
    fn model_recovered_log_equals_what_was_synced(ops in proptest::collection::vec(model::op(), 1..100)) {
        model::run(ops);
    }
}
