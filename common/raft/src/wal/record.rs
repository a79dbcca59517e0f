//! Record framing and the record kinds (see the on-disk format in the `wal` module docs).
//!
//! Decoding is total: any byte string yields a record or a [`Corruption`], never a panic.

use decree_types::{GroupId, LogIndex};
use serde::{Deserialize, Serialize};

use super::Corruption;
use crate::msg::{Entry, HardState, SnapshotMeta};

/// `[len u32][crc32c u32][kind u8]`.
pub(super) const HEADER_BYTES: usize = 9;

/// Largest payload of one record. An entry batch larger than this is split over several
/// records; a single entry larger than this is refused.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// First bytes of every segment's first record payload.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"DECREWAL";
/// Version of the segment format written by this code.
pub(super) const SEGMENT_VERSION: u16 = 1;

const KIND_SEGMENT_START: u8 = 1;
const KIND_ENTRIES: u8 = 2;
const KIND_HARD_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;

/// A decoded record.
#[derive(Debug, PartialEq)]
pub(super) enum Record {
    /// First record of every segment: who it is, and a checkpoint of every group's hard state
    /// and snapshot marker as of the moment the segment was started, so older segments can be
    /// deleted without losing them.
    SegmentStart(SegmentStart),
    /// A batch of consecutive entries of one group. If the first index is at or below the
    /// group's last index, the batch replaces the group's tail from there on.
    Entries { group: GroupId, entries: Vec<Entry> },
    /// A group's new hard state.
    HardState { group: GroupId, hard_state: HardState },
    /// A snapshot of `group` at `meta.last_index` is durable. Entries at or below it are
    /// obsolete; entries above it are kept if `log_kept`, else the whole log is discarded
    /// (RAFT-8: the snapshot did not describe a prefix of the log).
    Snapshot { group: GroupId, meta: SnapshotMeta, log_kept: bool },
}

/// Payload of [`Record::SegmentStart`] after the magic and version.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct SegmentStart {
    pub seq: u64,
    pub hard_states: Vec<(GroupId, HardState)>,
    pub snapshots: Vec<(GroupId, SnapshotMeta)>,
}

/// The outcome of reading one frame at an offset.
#[derive(Debug)]
pub(super) enum Frame<'a> {
    /// A frame whose CRC matches.
    Valid { kind: u8, payload: &'a [u8], end: usize },
    /// The frame (header or body) runs past the end of the bytes.
    Partial,
    /// The length field is larger than any record we write.
    BadLength(u32),
    /// The CRC does not match.
    BadCrc,
}

/// Reads the frame that starts at `off`.
pub(super) fn read_frame(bytes: &[u8], off: usize) -> Frame<'_> {
    let Some(header) = bytes.get(off..off.saturating_add(HEADER_BYTES)) else {
        return Frame::Partial;
    };
    // `header` is exactly HEADER_BYTES long (`get` above), `body` at least the kind byte.
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Frame::BadLength(len);
    }
    let end = off + HEADER_BYTES + len as usize;
    let Some(body) = bytes.get(off + HEADER_BYTES - 1..end) else {
        return Frame::Partial;
    };
    if crc32c::crc32c(body) != crc {
        return Frame::BadCrc;
    }
    Frame::Valid { kind: body[0], payload: &body[1..], end }
}

/// The payload length a frame at `off` claims, if its header and body fit in `bytes` (the
/// amount of CRC work reading it costs).
pub(super) fn claimed_len(bytes: &[u8], off: usize) -> Option<usize> {
    let header = bytes.get(off..off.saturating_add(HEADER_BYTES))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    (len <= RECORD_PAYLOAD_BYTES_MAX && off + HEADER_BYTES + len <= bytes.len()).then_some(len)
}

/// Appends one framed record to `out`.
pub(super) fn frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    // Invariant: callers never build a payload over RECORD_PAYLOAD_BYTES_MAX (16 MiB), so the
    // length fits in u32.
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "WAL record payload over the limit");
    let len = payload.len() as u32;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// postcard encoding of a value of ours.
fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard serialization fails only for sequences of unknown length or a
    // failing `Serialize` impl; every type written here is a derived struct of known shape.
    postcard::to_stdvec(value).expect("postcard encoding of WAL types is infallible")
}

/// A framed segment start record.
pub(super) fn encode_segment_start(start: &SegmentStart) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&SEGMENT_MAGIC);
    payload.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    payload.extend_from_slice(&to_bytes(start));
    let mut out = Vec::with_capacity(payload.len() + HEADER_BYTES);
    frame(KIND_SEGMENT_START, &payload, &mut out);
    out
}

/// A framed hard state record.
pub(super) fn encode_hard_state(group: GroupId, hard_state: &HardState) -> Vec<u8> {
    let mut out = Vec::new();
    frame(KIND_HARD_STATE, &to_bytes(&(group, hard_state)), &mut out);
    out
}

/// A framed snapshot marker record.
pub(super) fn encode_snapshot(group: GroupId, meta: &SnapshotMeta, log_kept: bool) -> Vec<u8> {
    let mut out = Vec::new();
    frame(KIND_SNAPSHOT, &to_bytes(&(group, meta, log_kept)), &mut out);
    out
}

/// One framed entries record and the last index it carries.
pub(super) type EntriesRecord = (Vec<u8>, LogIndex);

/// Frames `entries` (consecutive, validated by the caller) into as few records as the payload
/// limit allows. Fails with the index and size of an entry too large for any record.
pub(super) fn encode_entries(
    group: GroupId,
    entries: &[Entry],
) -> Result<Vec<EntriesRecord>, (LogIndex, usize)> {
    let group_bytes = to_bytes(&group);
    let mut records = Vec::new();
    let mut payload = group_bytes.clone();
    let mut last = None;
    for e in entries {
        let bytes = to_bytes(e);
        if group_bytes.len() + bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err((e.index, bytes.len()));
        }
        if let Some(prev) = last {
            if payload.len() + bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
                let mut out = Vec::with_capacity(payload.len() + HEADER_BYTES);
                frame(KIND_ENTRIES, &payload, &mut out);
                records.push((out, prev));
                payload.clone_from(&group_bytes);
            }
        }
        payload.extend_from_slice(&bytes);
        last = Some(e.index);
    }
    if let Some(last) = last {
        let mut out = Vec::with_capacity(payload.len() + HEADER_BYTES);
        frame(KIND_ENTRIES, &payload, &mut out);
        records.push((out, last));
    }
    Ok(records)
}

/// Decodes a record whose frame was valid.
pub(super) fn decode(kind: u8, payload: &[u8]) -> Result<Record, Corruption> {
    match kind {
        KIND_SEGMENT_START => {
            let (magic, rest) = payload.split_at(SEGMENT_MAGIC.len().min(payload.len()));
            if magic != SEGMENT_MAGIC {
                return Err(Corruption::BadMagic);
            }
            let Some((version, rest)) = rest.split_first_chunk::<2>() else {
                return Err(Corruption::Undecodable("segment start too short"));
            };
            let version = u16::from_le_bytes(*version);
            if version != SEGMENT_VERSION {
                return Err(Corruption::UnsupportedVersion(version));
            }
            Ok(Record::SegmentStart(exact(rest, "segment start")?))
        }
        KIND_ENTRIES => {
            let (group, mut rest) = postcard::take_from_bytes::<GroupId>(payload)
                .map_err(|_| Corruption::Undecodable("entries group"))?;
            let mut entries = Vec::new();
            while !rest.is_empty() {
                let (e, r) = postcard::take_from_bytes::<Entry>(rest)
                    .map_err(|_| Corruption::Undecodable("entry"))?;
                entries.push(e);
                rest = r;
            }
            let contiguous = entries.windows(2).all(|w| w[1].index == w[0].index.next());
            if entries.is_empty() || !contiguous {
                return Err(Corruption::Undecodable("entry batch not contiguous"));
            }
            Ok(Record::Entries { group, entries })
        }
        KIND_HARD_STATE => {
            let (group, hard_state) = exact(payload, "hard state")?;
            Ok(Record::HardState { group, hard_state })
        }
        KIND_SNAPSHOT => {
            let (group, meta, log_kept) = exact(payload, "snapshot marker")?;
            Ok(Record::Snapshot { group, meta, log_kept })
        }
        other => Err(Corruption::UnknownKind(other)),
    }
}

/// Decodes a value that must use every byte.
fn exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T, Corruption> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(Corruption::Undecodable(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::EntryPayload;
    use decree_types::{NodeId, Term};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(vec![7; 3]),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let start = SegmentStart {
            seq: 3,
            hard_states: vec![(GroupId(1), HardState::default())],
            snapshots: vec![(GroupId(1), SnapshotMeta::default())],
        };
        let hs = HardState { term: Term(2), vote: Some(NodeId(1)), commit: LogIndex(4) };
        let meta = SnapshotMeta { last_index: LogIndex(9), last_term: Term(2), voters: vec![] };
        let mut bytes = encode_segment_start(&start);
        bytes.extend(encode_hard_state(GroupId(5), &hs));
        bytes.extend(encode_snapshot(GroupId(5), &meta, true));
        for (rec, _) in encode_entries(GroupId(5), &[entry(1, 1), entry(2, 1)]).unwrap() {
            bytes.extend(rec);
        }
        let mut off = 0;
        let mut got = Vec::new();
        while off < bytes.len() {
            let Frame::Valid { kind, payload, end } = read_frame(&bytes, off) else {
                panic!("bad frame at {off}")
            };
            got.push(decode(kind, payload).unwrap());
            off = end;
        }
        assert_eq!(
            got,
            vec![
                Record::SegmentStart(start),
                Record::HardState { group: GroupId(5), hard_state: hs },
                Record::Snapshot { group: GroupId(5), meta, log_kept: true },
                Record::Entries { group: GroupId(5), entries: vec![entry(1, 1), entry(2, 1)] },
            ]
        );
    }

    #[test]
    fn partial_and_corrupt_frames_are_classified() {
        let rec = encode_hard_state(GroupId(1), &HardState::default());
        for cut in 0..rec.len() {
            assert!(matches!(read_frame(&rec[..cut], 0), Frame::Partial), "cut {cut}");
        }
        let mut bad = rec.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(read_frame(&bad, 0), Frame::BadCrc));
        let mut huge = rec;
        huge[3] = 0xff;
        assert!(matches!(read_frame(&huge, 0), Frame::BadLength(_)));
    }

    #[test]
    fn unknown_kind_and_garbage_payloads_are_errors_not_panics() {
        assert_eq!(decode(9, &[]), Err(Corruption::UnknownKind(9)));
        for kind in 1..=4u8 {
            for len in 0..40usize {
                let junk: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) ^ kind).collect();
                let _ = decode(kind, &junk);
            }
        }
    }
}
