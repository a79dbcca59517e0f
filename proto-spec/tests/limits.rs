//! Every bound of `decree_proto::limits` is enforced: a value one past the bound is refused on
//! encode (we never send it) and on decode (a peer that skips validation cannot get it past
//! us), and a value exactly at the bound passes (STYLE.md principle 6).

use decree_proto::admin::{
    ClusterStatus, ClusterStatusReply, GroupLeader, InDoubtTxn, NodeAddr, RangeMapReply,
};
use decree_proto::codec::{DecodeError, EncodeError};
use decree_proto::envelope::NODE_GROUP;
use decree_proto::error::ErrorResponse;
use decree_proto::limits::*;
use decree_proto::raft::{Entry, EntryPayload, RaftMessage, SnapshotMeta};
use decree_proto::txn::{
    CommitTxn, Get, GroupWork, Isolation, Prepare, Row, Scan, ScanRows, TxnMode, ValueReply, Write,
};
use decree_proto::{decode_body, encode_frame, Envelope, Payload, Request, RequestId, Response};
use decree_types::{GroupId, HlcTimestamp, Key, KeyRange, LogIndex, NodeId, Term, TxnId};

fn env(payload: Payload) -> Envelope {
    Envelope { from: NodeId(1), group: GroupId(1), sender_clock: HlcTimestamp::ZERO, payload }
}
fn req(request: Request) -> Envelope {
    env(Payload::Request { request_id: RequestId(1), request })
}
fn resp(response: Response) -> Envelope {
    env(Payload::Response { request_id: RequestId(1), response })
}
fn all() -> KeyRange {
    KeyRange { start: Key(vec![]), end: None }
}
fn commit_txn(groups: usize, writes_each: usize, spans_each: usize) -> Envelope {
    let work = |g: usize| GroupWork {
        group: GroupId(g as u64),
        writes: vec![Write { key: Key(vec![]), value: None }; writes_each],
        read_spans: vec![all(); spans_each],
    };
    req(Request::CommitTxn(CommitTxn {
        txn_id: TxnId(1),
        read_ts: HlcTimestamp::ZERO,
        per_group: (0..groups).map(work).collect(),
        mode: TxnMode {
            isolation: Isolation::Serializable,
            commit_wait: false,
            parallel_commit: false,
        },
    }))
}

/// An envelope carrying `n` of whatever `bound` counts.
fn with(bound: Bound, n: usize) -> Envelope {
    match bound {
        Bound::KeyBytes => req(Request::Get(Get {
            key: Key(vec![b'k'; n]),
            read_ts: HlcTimestamp::ZERO,
            uncertainty_limit: None,
        })),
        Bound::ValueBytes => {
            resp(Response::Value(ValueReply { value: Some(vec![7; n]), version_ts: None }))
        }
        // Two groups, so the test also shows the count is summed across groups.
        Bound::WritesPerTxn => commit_txn(2, n / 2, 0).tap(|e| top_up_writes(e, n % 2)),
        Bound::ReadSpansPerTxn => req(Request::Prepare(Prepare {
            txn_id: TxnId(1),
            coord_group: GroupId(0),
            read_ts: HlcTimestamp::ZERO,
            writes: vec![],
            read_spans: vec![all(); n],
        })),
        Bound::GroupsPerTxn => commit_txn(n, 0, 0),
        Bound::ScanRows => req(Request::Scan(Scan {
            span: all(),
            read_ts: HlcTimestamp::ZERO,
            uncertainty_limit: None,
            limit: n as u32,
        })),
        Bound::Ranges => resp(Response::RangeMap(RangeMapReply {
            version: 1,
            ranges: vec![(all(), GroupId(1)); n],
            coordinator_group: GroupId(0),
            leaders: vec![],
            nodes: vec![],
            coordinator_groups: vec![],
        })),
        Bound::GroupsReported => resp(Response::RangeMap(RangeMapReply {
            version: 1,
            ranges: vec![],
            coordinator_group: GroupId(0),
            leaders: vec![],
            nodes: vec![NodeAddr { node: NodeId(1), addr: String::new() }; n],
            coordinator_groups: vec![],
        })),
        Bound::InDoubtReported => resp(Response::ClusterStatus(ClusterStatusReply {
            groups: vec![],
            in_doubt: vec![
                InDoubtTxn {
                    txn_id: TxnId(1),
                    group: GroupId(1),
                    coord_group: GroupId(0),
                    prepare_ts: None,
                    age_ms: 0,
                    blocking: decree_proto::admin::BlockingReason::AwaitingDecision,
                };
                n
            ],
            in_doubt_omitted: 0,
        })),
        Bound::RaftEntriesPerAppend => env(Payload::Raft(RaftMessage::AppendEntries {
            term: Term(1),
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![
                Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Noop };
                n
            ],
            leader_commit: LogIndex(0),
            read_seq: 0,
        })),
        Bound::SnapshotChunkBytes => env(Payload::Raft(RaftMessage::InstallSnapshot {
            term: Term(1),
            meta: SnapshotMeta::default(),
            offset: 0,
            data: vec![0; n],
            done: true,
        })),
        Bound::Voters => resp(Response::RangeMap(RangeMapReply {
            version: 1,
            ranges: vec![],
            coordinator_group: GroupId(0),
            leaders: vec![GroupLeader {
                group: GroupId(1),
                leader: None,
                term: Term(1),
                replicas: vec![NodeId(1); n],
            }],
            nodes: vec![],
            coordinator_groups: vec![],
        })),
        Bound::AddrBytes => resp(Response::RangeMap(RangeMapReply {
            version: 1,
            ranges: vec![],
            coordinator_group: GroupId(0),
            leaders: vec![],
            nodes: vec![NodeAddr { node: NodeId(1), addr: "a".repeat(n) }],
            coordinator_groups: vec![],
        })),
        Bound::ErrorDetailBytes => env(Payload::Error {
            in_reply_to: None,
            error: ErrorResponse::Unavailable { detail: "d".repeat(n) },
        }),
        Bound::RaftBatchMessages => Envelope {
            group: NODE_GROUP,
            ..env(Payload::RaftBatch(vec![
                (GroupId(1), RaftMessage::TimeoutNow { term: Term(1) });
                n
            ]))
        },
    }
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Envelope {}

fn top_up_writes(e: &mut Envelope, extra: usize) {
    if let Payload::Request { request: Request::CommitTxn(c), .. } = &mut e.payload {
        c.per_group[0].writes.extend(vec![Write { key: Key(vec![]), value: None }; extra]);
    }
}

const BOUNDS: &[Bound] = &[
    Bound::KeyBytes,
    Bound::ValueBytes,
    Bound::WritesPerTxn,
    Bound::ReadSpansPerTxn,
    Bound::GroupsPerTxn,
    Bound::ScanRows,
    Bound::Ranges,
    Bound::GroupsReported,
    Bound::InDoubtReported,
    Bound::RaftEntriesPerAppend,
    Bound::SnapshotChunkBytes,
    Bound::Voters,
    Bound::AddrBytes,
    Bound::ErrorDetailBytes,
    Bound::RaftBatchMessages,
];

#[test]
fn every_bound_is_enforced_on_encode_and_decode() {
    for &bound in BOUNDS {
        let max = bound.max();
        let at = with(bound, max);
        let frame = encode_frame(&at).unwrap_or_else(|e| panic!("{bound} at its max: {e}"));
        assert!(frame.len() <= decree_proto::FRAME_BYTES_MAX + 6);

        let over = with(bound, max + 1);
        let want = LimitError { bound, got: max as u64 + 1, max: max as u64 };
        assert_eq!(encode_frame(&over), Err(EncodeError::Limit(want)), "{bound}");
        let raw = postcard::to_allocvec(&over).expect("postcard encodes anything");
        if bound == Bound::RaftBatchMessages {
            // Refused while decoding, before the message past the bound is built.
            assert!(matches!(decode_body(&raw), Err(DecodeError::Body(_))), "{bound}");
        } else {
            assert_eq!(decode_body(&raw), Err(DecodeError::Limit(want)), "{bound}");
        }
        assert_eq!(
            ErrorResponse::from(DecodeError::Limit(want)),
            ErrorResponse::LimitExceeded(want)
        );
    }
}

#[test]
fn row_count_and_in_doubt_request_bounds() {
    let rows =
        vec![Row { key: Key(vec![]), value: vec![], version_ts: HlcTimestamp::ZERO }; 10_001];
    let over = resp(Response::ScanRows(ScanRows { rows, resume_from: None }));
    assert!(matches!(
        encode_frame(&over),
        Err(EncodeError::Limit(LimitError { bound: Bound::ScanRows, .. }))
    ));
    let over = req(Request::ClusterStatus(ClusterStatus {
        in_doubt_max: IN_DOUBT_REPORTED_MAX as u32 + 1,
    }));
    assert!(matches!(
        encode_frame(&over),
        Err(EncodeError::Limit(LimitError { bound: Bound::InDoubtReported, .. }))
    ));
}

#[test]
fn request_id_is_found_for_requests_only() {
    let r = req(Request::Abort(decree_proto::txn::Abort { txn_id: TxnId(3) }));
    assert_eq!(r.payload.request_id(), Some(RequestId(1)));
    let a = resp(Response::Ack(decree_proto::txn::Ack { txn_id: TxnId(3) }));
    assert_eq!(a.payload.request_id(), None);
}

/// A frame may hold millions of 3-byte Raft messages; a `RaftBatch` claiming that many is
/// refused once the decoder has built `RAFT_BATCH_MESSAGES_MAX` of them, never more.
#[test]
fn raft_batch_far_past_its_bound_is_refused_while_decoding() {
    let tiny = (GroupId(1), RaftMessage::TimeoutNow { term: Term(1) });
    let over = Envelope { group: NODE_GROUP, ..env(Payload::RaftBatch(vec![tiny; 1_000_000])) };
    let raw = postcard::to_allocvec(&over).expect("postcard encodes anything");
    assert!(raw.len() < decree_proto::FRAME_BYTES_MAX, "fits one frame: {} bytes", raw.len());
    assert!(matches!(decode_body(&raw), Err(DecodeError::Body(_))));
    // The same refusal from a length prefix the bytes cannot back.
    let mut lying =
        postcard::to_allocvec(&Envelope { group: NODE_GROUP, ..env(Payload::RaftBatch(vec![])) })
            .expect("encodes");
    // The empty batch's length prefix (0) is the body's last byte; claim 2^28 instead.
    lying.pop();
    lying.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(matches!(decode_body(&lying), Err(DecodeError::Body(_))));
}
