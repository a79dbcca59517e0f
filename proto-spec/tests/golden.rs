//! Golden encodings (STYLE.md principle 10): the frozen bytes of one representative value of
//! every message variant, in `tests/golden/messages.txt`.
//!
//! A change to any encoding fails this test with a diff naming each changed message. If the
//! change is intended, rewrite the file on purpose:
//!
//! ```text
//! DECREE_BLESS=1 cargo test -p decree-proto --test golden
//! ```
//!
//! and, if an old peer could no longer decode the new bytes (or would decode them wrongly),
//! bump `PROTOCOL_VERSION` in the same commit.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use decree_proto::admin::{
    BlockingReason, ClusterStatus, ClusterStatusReply, FetchRangeMap, GroupLeader, GroupRole,
    GroupStatus, InDoubtTxn, NodeAddr, RangeMapReply,
};
use decree_proto::envelope::{all_kinds, NODE_GROUP};
use decree_proto::error::ErrorResponse;
use decree_proto::limits::{Bound, LimitError};
use decree_proto::raft::{Entry, EntryPayload, RaftMessage, RejectHint, SnapshotMeta};
use decree_proto::txn::{
    Abort, AbortReason, Ack, Commit, CommitLocal, CommitTxn, CoordinatorState, Get, GroupWork,
    Isolation, NoReason, OutcomeReply, Prepare, PreparedReply, PreparedState, QueryPrepared,
    QueryTxn, Redirect, Row, Scan, ScanRows, TxnMode, TxnOutcome, TxnStateReply, TxnStatus,
    UncertaintyRestart, ValueReply, Vote, VoteReply, Write,
};
use decree_proto::{decode_frame, encode_frame, Envelope, Payload, Request, RequestId, Response};
use decree_types::{ClientId, GroupId, HlcTimestamp, Key, KeyRange, LogIndex, NodeId, Term, TxnId};

const GOLDEN_FILE: &str = "tests/golden/messages.txt";
const HEADER: &str = "\
# Frozen wire encodings: `<label> <hex of the whole frame: header + postcard body>`.
# Checked by proto-spec/tests/golden.rs; rewrite on purpose with
#   DECREE_BLESS=1 cargo test -p decree-proto --test golden
# and bump PROTOCOL_VERSION if old peers cannot decode the new bytes.
";

#[test]
fn golden_encodings_are_unchanged() {
    let samples = samples();
    let mut text = String::from(HEADER);
    for (label, env) in &samples {
        let frame = encode_frame(env).unwrap_or_else(|e| panic!("{label}: {e}"));
        writeln!(text, "{label} {}", hex(&frame)).expect("writing to a String cannot fail");
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN_FILE);
    if std::env::var_os("DECREE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).expect("write golden file");
    }
    let frozen = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; create it with DECREE_BLESS=1", path.display())
    });
    if frozen != text {
        panic!(
            "wire encodings changed ({}):\n{}\nIf intended, rerun with DECREE_BLESS=1 and bump \
             PROTOCOL_VERSION when old peers cannot read the new bytes.",
            path.display(),
            diff(&frozen, &text)
        );
    }
    // The frozen bytes also decode to the very values they were made from (the decoder did
    // not drift either).
    let frozen = parse(&frozen);
    for (label, env) in samples {
        let Some(bytes) = frozen.iter().find(|(l, _)| *l == label).map(|(_, b)| b) else {
            panic!("{label} has no golden encoding; rerun with DECREE_BLESS=1");
        };
        assert_eq!(decode_frame(bytes).as_ref(), Ok(&env), "{label}");
    }
}

/// A changed encoding is reported by label, with the old and new bytes.
#[test]
fn a_changed_encoding_is_reported_by_label() {
    let frozen = "# c\nRequest::Abort 0a0b\nRequest::Commit 0c\n";
    let now = "# c\nRequest::Abort 0a0c\nResponse::Ack 0d\n";
    let d = diff(frozen, now);
    assert!(d.contains("~ changed Request::Abort\n    was 0a0b\n    now 0a0c"), "{d}");
    assert!(d.contains("- removed Request::Commit"), "{d}");
    assert!(d.contains("+ added   Response::Ack"), "{d}");
}

/// Every variant of every family has a golden sample.
#[test]
fn every_variant_has_a_golden_sample() {
    let covered: BTreeSet<&str> = samples().iter().map(|(_, env)| env.kind()).collect();
    let missing: Vec<&str> = all_kinds().into_iter().filter(|k| !covered.contains(k)).collect();
    assert!(missing.is_empty(), "no golden sample for {missing:?}");
    let labels: BTreeSet<String> = samples().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels.len(), samples().len(), "labels must be unique");
}

// --- the samples ---------------------------------------------------------------------------

fn ts(wall_ns: u64, logical: u32) -> HlcTimestamp {
    HlcTimestamp::new(wall_ns, logical)
}

fn key(s: &str) -> Key {
    Key(s.as_bytes().to_vec())
}

fn span(start: &str, end: Option<&str>) -> KeyRange {
    KeyRange { start: key(start), end: end.map(key) }
}

const TXN: TxnId = TxnId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);

fn envelope(payload: Payload) -> Envelope {
    Envelope {
        from: NodeId(3),
        group: GroupId(7),
        sender_clock: ts(1_700_000_000_123_456_789, 42),
        payload,
    }
}

fn raft(m: RaftMessage) -> Payload {
    Payload::Raft(m)
}

fn req(request: Request) -> Payload {
    Payload::Request { request_id: RequestId(9), request }
}

fn resp(response: Response) -> Payload {
    Payload::Response { request_id: RequestId(9), response }
}

fn err(error: ErrorResponse) -> Payload {
    Payload::Error { in_reply_to: Some(RequestId(9)), error }
}

/// One value per variant (and per variant of the enums inside replies), labelled.
fn samples() -> Vec<(String, Envelope)> {
    let writes = vec![
        Write { key: key("acct/1"), value: Some(b"100".to_vec()) },
        Write { key: key("acct/2"), value: None },
    ];
    let spans = vec![span("acct/1", Some("acct/2")), span("z", None)];
    let entries = vec![
        Entry { term: Term(2), index: LogIndex(11), payload: EntryPayload::Noop },
        Entry { term: Term(2), index: LogIndex(12), payload: EntryPayload::Command(vec![1, 2]) },
    ];
    let p = ts(1_700_000_000_100_000_000, 1);
    let c = ts(1_700_000_000_200_000_000, 0);

    let mut out: Vec<(&str, Payload)> = vec![
        // Raft
        (
            "Raft::PreVote",
            raft(RaftMessage::PreVote {
                term: Term(5),
                last_log_index: LogIndex(10),
                last_log_term: Term(4),
            }),
        ),
        (
            "Raft::PreVoteResponse",
            raft(RaftMessage::PreVoteResponse { term: Term(5), granted: true }),
        ),
        (
            "Raft::RequestVote",
            raft(RaftMessage::RequestVote {
                term: Term(5),
                last_log_index: LogIndex(10),
                last_log_term: Term(4),
                transfer: true,
            }),
        ),
        ("Raft::VoteResponse", raft(RaftMessage::VoteResponse { term: Term(5), granted: false })),
        (
            "Raft::AppendEntries",
            raft(RaftMessage::AppendEntries {
                term: Term(2),
                prev_log_index: LogIndex(10),
                prev_log_term: Term(1),
                entries,
                leader_commit: LogIndex(9),
                read_seq: 77,
            }),
        ),
        (
            "Raft::AppendResponse",
            raft(RaftMessage::AppendResponse {
                term: Term(2),
                success: false,
                match_index: LogIndex(0),
                reject_hint: Some(RejectHint {
                    last_index: LogIndex(8),
                    conflict_term: Some(Term(1)),
                    conflict_first_index: LogIndex(5),
                }),
                read_seq: 77,
            }),
        ),
        (
            "Raft::InstallSnapshot",
            raft(RaftMessage::InstallSnapshot {
                term: Term(3),
                meta: SnapshotMeta {
                    last_index: LogIndex(100),
                    last_term: Term(2),
                    voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                },
                offset: 4096,
                data: vec![0xde, 0xad, 0xbe, 0xef],
                done: false,
            }),
        ),
        (
            "Raft::InstallSnapshotResponse",
            raft(RaftMessage::InstallSnapshotResponse {
                term: Term(3),
                last_index: LogIndex(100),
                next_offset: 4100,
                done: false,
            }),
        ),
        ("Raft::TimeoutNow", raft(RaftMessage::TimeoutNow { term: Term(6) })),
        ("Raft::ReadIndexRequest", raft(RaftMessage::ReadIndexRequest { term: Term(6), ctx: 12 })),
        (
            "Raft::ReadIndexResponse",
            raft(RaftMessage::ReadIndexResponse {
                term: Term(6),
                ctx: 12,
                index: Some(LogIndex(99)),
            }),
        ),
        // Requests
        (
            "Request::Get",
            req(Request::Get(Get {
                key: key("acct/1"),
                read_ts: p,
                uncertainty_limit: Some(ts(1_700_000_000_350_000_000, 0)),
            })),
        ),
        (
            "Request::Scan",
            req(Request::Scan(Scan {
                span: span("acct/", Some("acct0")),
                read_ts: p,
                uncertainty_limit: None,
                limit: 500,
            })),
        ),
        (
            "Request::CommitTxn",
            req(Request::CommitTxn(CommitTxn {
                txn_id: TXN,
                read_ts: p,
                per_group: vec![
                    GroupWork {
                        group: GroupId(1),
                        writes: writes.clone(),
                        read_spans: spans.clone(),
                    },
                    GroupWork { group: GroupId(2), writes: vec![], read_spans: vec![] },
                ],
                mode: TxnMode {
                    isolation: Isolation::Serializable,
                    commit_wait: false,
                    parallel_commit: true,
                },
            })),
        ),
        ("Request::TxnStatus", req(Request::TxnStatus(TxnStatus { txn_id: TXN, read_ts: p }))),
        (
            "Request::CommitLocal",
            req(Request::CommitLocal(CommitLocal {
                txn_id: TXN,
                client_id: ClientId(55),
                seq: 8,
                read_ts: p,
                writes: writes.clone(),
                read_spans: spans.clone(),
                isolation: Isolation::Snapshot,
            })),
        ),
        (
            "Request::Prepare",
            req(Request::Prepare(Prepare {
                txn_id: TXN,
                coord_group: GroupId(0),
                read_ts: p,
                writes,
                read_spans: spans,
            })),
        ),
        ("Request::Commit", req(Request::Commit(Commit { txn_id: TXN, commit_ts: c }))),
        ("Request::Abort", req(Request::Abort(Abort { txn_id: TXN }))),
        (
            "Request::QueryPrepared",
            req(Request::QueryPrepared(QueryPrepared { txn_id: TXN, prevent: true })),
        ),
        (
            "Request::QueryTxn",
            req(Request::QueryTxn(QueryTxn { txn_id: TXN, read_ts: p, push_above: Some(p) })),
        ),
        ("Request::FetchRangeMap", req(Request::FetchRangeMap(FetchRangeMap { known_version: 4 }))),
        (
            "Request::ClusterStatus",
            req(Request::ClusterStatus(ClusterStatus { in_doubt_max: 100 })),
        ),
        // Responses
        (
            "Response::Value",
            resp(Response::Value(ValueReply { value: Some(b"100".to_vec()), version_ts: Some(c) })),
        ),
        (
            "Response::Value/absent",
            resp(Response::Value(ValueReply { value: None, version_ts: None })),
        ),
        (
            "Response::ScanRows",
            resp(Response::ScanRows(ScanRows {
                rows: vec![Row { key: key("acct/1"), value: b"100".to_vec(), version_ts: c }],
                resume_from: Some(key("acct/2")),
            })),
        ),
        (
            "Response::UncertaintyRestart",
            resp(Response::UncertaintyRestart(UncertaintyRestart { new_read_ts: c })),
        ),
        ("Response::Redirect", resp(Response::Redirect(Redirect { leader: Some(NodeId(2)) }))),
    ];
    let outcomes = [
        ("committed", TxnOutcome::Committed { commit_ts: c }),
        (
            "aborted",
            TxnOutcome::Aborted {
                reason: AbortReason::VotedNo { group: GroupId(2), reason: NoReason::WriteTooOld },
                retryable: true,
            },
        ),
        ("ambiguous", TxnOutcome::Ambiguous),
        ("pending", TxnOutcome::Pending),
        ("expired", TxnOutcome::Expired),
    ];
    let outcome_labels = [
        "Response::Outcome/committed",
        "Response::Outcome/aborted",
        "Response::Outcome/ambiguous",
        "Response::Outcome/pending",
    ];
    for ((_, outcome), label) in outcomes.into_iter().zip(outcome_labels) {
        out.push((label, resp(Response::Outcome(OutcomeReply { txn_id: TXN, outcome }))));
    }
    out.extend([
        (
            "Response::Vote/yes",
            resp(Response::Vote(VoteReply { txn_id: TXN, vote: Vote::Yes { prepare_ts: p } })),
        ),
        (
            "Response::Vote/no",
            resp(Response::Vote(VoteReply {
                txn_id: TXN,
                vote: Vote::No { reason: NoReason::IntentConflict },
            })),
        ),
        ("Response::Ack", resp(Response::Ack(Ack { txn_id: TXN }))),
    ]);
    let prepared = [
        ("Response::Prepared/prepared", PreparedState::Prepared { prepare_ts: p }),
        ("Response::Prepared/prevented", PreparedState::Prevented),
        ("Response::Prepared/committed", PreparedState::Committed { commit_ts: c }),
        ("Response::Prepared/aborted", PreparedState::Aborted),
        ("Response::Prepared/unknown", PreparedState::Unknown),
    ];
    for (label, state) in prepared {
        out.push((label, resp(Response::Prepared(PreparedReply { txn_id: TXN, state }))));
    }
    let coord = [
        ("Response::TxnState/committed", CoordinatorState::Committed { commit_ts: c }),
        ("Response::TxnState/aborted", CoordinatorState::Aborted),
        ("Response::TxnState/pending", CoordinatorState::Pending),
        ("Response::TxnState/pushed", CoordinatorState::Pushed { min_commit_ts: c }),
        ("Response::TxnState/staging", CoordinatorState::Staging),
    ];
    for (label, state) in coord {
        out.push((label, resp(Response::TxnState(TxnStateReply { txn_id: TXN, state }))));
    }
    out.extend([
        (
            "Response::RangeMap",
            resp(Response::RangeMap(RangeMapReply {
                version: 4,
                ranges: vec![(span("", Some("m")), GroupId(1)), (span("m", None), GroupId(2))],
                coordinator_group: GroupId(0),
                leaders: vec![GroupLeader {
                    group: GroupId(1),
                    leader: Some(NodeId(2)),
                    term: Term(3),
                    replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
                }],
                nodes: vec![NodeAddr { node: NodeId(2), addr: "127.0.0.1:7002".to_string() }],
                coordinator_groups: vec![GroupId(0)],
            })),
        ),
        (
            "Response::ClusterStatus",
            resp(Response::ClusterStatus(ClusterStatusReply {
                groups: vec![
                    GroupStatus {
                        group: GroupId(0),
                        role: GroupRole::Coordinator,
                        replica: NodeId(3),
                        leader: Some(NodeId(3)),
                        term: Term(4),
                        commit_index: LogIndex(120),
                        applied_index: LogIndex(119),
                    },
                    GroupStatus {
                        group: GroupId(1),
                        role: GroupRole::Participant { range: span("", Some("m")) },
                        replica: NodeId(3),
                        leader: None,
                        term: Term(2),
                        commit_index: LogIndex(40),
                        applied_index: LogIndex(40),
                    },
                ],
                in_doubt: vec![InDoubtTxn {
                    txn_id: TXN,
                    group: GroupId(1),
                    coord_group: GroupId(0),
                    prepare_ts: Some(p),
                    age_ms: 2_500,
                    blocking: BlockingReason::CoordinatorUnreachable,
                }],
                in_doubt_omitted: 0,
            })),
        ),
        // Errors
        (
            "Error::NotLeader",
            err(ErrorResponse::NotLeader { hint: Some(NodeId(2)), term: Term(4) }),
        ),
        ("Error::UnknownGroup", err(ErrorResponse::UnknownGroup { group: GroupId(99) })),
        ("Error::KeyOutOfRange", err(ErrorResponse::KeyOutOfRange { key: key("zz") })),
        (
            "Error::ClockRejected",
            err(ErrorResponse::ClockRejected {
                remote: ts(1_700_000_001_000_000_000, 0),
                ahead_ns: 600_000_000,
                max_offset_ns: 250_000_000,
            }),
        ),
        ("Error::Malformed", err(ErrorResponse::malformed("body does not decode"))),
        (
            "Error::UnsupportedVersion",
            err(ErrorResponse::UnsupportedVersion { got: 2, supported: 1 }),
        ),
        ("Error::TooLarge", err(ErrorResponse::TooLarge { len: 20_000_000, max: 16_777_216 })),
        (
            "Error::LimitExceeded",
            err(ErrorResponse::LimitExceeded(LimitError {
                bound: Bound::WritesPerTxn,
                got: 10_001,
                max: 10_000,
            })),
        ),
        ("Error::InvalidArgument", err(ErrorResponse::invalid_argument("group listed twice"))),
        ("Error::BelowGcThreshold", err(ErrorResponse::BelowGcThreshold { gc_threshold: p })),
        ("Error::Busy", err(ErrorResponse::Busy { retry_after_ms: 50 })),
        ("Error::Unavailable", err(ErrorResponse::unavailable("no quorum"))),
        (
            "Error::Malformed/no-request",
            Payload::Error {
                in_reply_to: None,
                error: ErrorResponse::malformed("2 bytes cannot hold the 6-byte frame header"),
            },
        ),
    ]);
    out.push((
        "Error::LimitExceeded/raft-batch",
        err(ErrorResponse::LimitExceeded(LimitError {
            bound: Bound::RaftBatchMessages,
            got: 4_097,
            max: 4_096,
        })),
    ));
    let mut samples: Vec<(String, Envelope)> =
        out.into_iter().map(|(label, payload)| (label.to_string(), envelope(payload))).collect();
    // Coalesced Raft traffic of several groups, addressed to the node.
    let batch = vec![
        (
            GroupId(1),
            RaftMessage::AppendEntries {
                term: Term(2),
                prev_log_index: LogIndex(10),
                prev_log_term: Term(2),
                entries: vec![],
                leader_commit: LogIndex(10),
                read_seq: 3,
            },
        ),
        (
            GroupId(2),
            RaftMessage::AppendResponse {
                term: Term(4),
                success: true,
                match_index: LogIndex(20),
                reject_hint: None,
                read_seq: 0,
            },
        ),
        (GroupId(3), RaftMessage::VoteResponse { term: Term(6), granted: true }),
        (GroupId(4), RaftMessage::ReadIndexRequest { term: Term(1), ctx: 12 }),
    ];
    samples.push((
        "RaftBatch".to_string(),
        Envelope { group: NODE_GROUP, ..envelope(Payload::RaftBatch(batch)) },
    ));
    let probe = Payload::ClockProbe { sent_pt: 1_795_400_000_123_456_789 };
    samples.push(("ClockProbe".to_string(), Envelope { group: NODE_GROUP, ..envelope(probe) }));
    let echo = Payload::ClockEcho {
        sent_pt: 1_795_400_000_123_456_789,
        remote_pt: 1_795_400_000_223_456_789,
    };
    samples.push(("ClockEcho".to_string(), Envelope { group: NODE_GROUP, ..envelope(echo) }));
    samples
}

// --- helpers --------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        write!(s, "{b:02x}").expect("writing to a String cannot fail");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("golden file holds hex"))
        .collect()
}

/// `(label, bytes)` for every non-comment line.
fn parse(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (label, hex) = l.split_once(' ').expect("line is `<label> <hex>`");
            (label.to_string(), unhex(hex.trim()))
        })
        .collect()
}

/// A per-message diff: changed, removed and added labels.
fn diff(frozen: &str, now: &str) -> String {
    let old = parse(frozen);
    let new = parse(now);
    let mut out = String::new();
    for (label, bytes) in &old {
        match new.iter().find(|(l, _)| l == label) {
            None => writeln!(out, "- removed {label}").expect("String write"),
            Some((_, b)) if b != bytes => {
                writeln!(out, "~ changed {label}\n    was {}\n    now {}", hex(bytes), hex(b))
                    .expect("String write")
            }
            Some(_) => {}
        }
    }
    for (label, bytes) in &new {
        if !old.iter().any(|(l, _)| l == label) {
            writeln!(out, "+ added   {label}\n    now {}", hex(bytes)).expect("String write");
        }
    }
    if out.is_empty() {
        out.push_str("(only comments or line order differ)\n");
    }
    out
}
