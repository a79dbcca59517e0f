//! proptest strategies for every message type, shared by the codec tests.
//!
//! Sizes stay small (a few elements, short keys) so a case is cheap; the limits themselves
//! are tested with hand-built values.

#![allow(dead_code)]

use decree_proto::admin::{
    BlockingReason, ClusterStatus, ClusterStatusReply, FetchRangeMap, GroupLeader, GroupRole,
    GroupStatus, InDoubtTxn, NodeAddr, RangeMapReply,
};
use decree_proto::error::ErrorResponse;
use decree_proto::limits::{Bound, LimitError};
use decree_proto::raft::{Entry, EntryPayload, RaftMessage, RejectHint, SnapshotMeta};
use decree_proto::txn::{
    Abort, AbortReason, Ack, Commit, CommitLocal, CommitTxn, CoordinatorState, Get, GroupWork,
    Isolation, NoReason, OutcomeReply, Prepare, PreparedReply, PreparedState, QueryPrepared,
    QueryTxn, Redirect, Row, Scan, ScanRows, TxnMode, TxnOutcome, TxnStateReply, TxnStatus,
    UncertaintyRestart, ValueReply, Vote, VoteReply, Write,
};
use decree_proto::{Envelope, Payload, Request, RequestId, Response};
use decree_types::{ClientId, GroupId, HlcTimestamp, Key, KeyRange, LogIndex, NodeId, Term, TxnId};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn node() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId)
}
pub fn group() -> impl Strategy<Value = GroupId> {
    any::<u64>().prop_map(GroupId)
}
pub fn term() -> impl Strategy<Value = Term> {
    any::<u64>().prop_map(Term)
}
pub fn index() -> impl Strategy<Value = LogIndex> {
    any::<u64>().prop_map(LogIndex)
}
pub fn txn_id() -> impl Strategy<Value = TxnId> {
    any::<u128>().prop_map(TxnId)
}
pub fn ts() -> impl Strategy<Value = HlcTimestamp> {
    (any::<u64>(), any::<u32>()).prop_map(|(w, l)| HlcTimestamp::new(w, l))
}
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..12)
}
pub fn key() -> impl Strategy<Value = Key> {
    bytes().prop_map(Key)
}
pub fn range() -> impl Strategy<Value = KeyRange> {
    (key(), option::of(key())).prop_map(|(start, end)| KeyRange { start, end })
}
pub fn text() -> impl Strategy<Value = String> {
    "[ -~é]{0,16}"
}

// --- Raft ---

pub fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![Just(EntryPayload::Noop), bytes().prop_map(EntryPayload::Command)];
    (term(), index(), payload).prop_map(|(term, index, payload)| Entry { term, index, payload })
}

pub fn raft_message() -> impl Strategy<Value = RaftMessage> {
    let hint = (index(), option::of(term()), index()).prop_map(|(l, t, f)| RejectHint {
        last_index: l,
        conflict_term: t,
        conflict_first_index: f,
    });
    let meta = (index(), term(), vec(node(), 0..4))
        .prop_map(|(last_index, last_term, voters)| SnapshotMeta { last_index, last_term, voters });
    prop_oneof![
        (term(), index(), term()).prop_map(|(term, last_log_index, last_log_term)| {
            RaftMessage::PreVote { term, last_log_index, last_log_term }
        }),
        (term(), any::<bool>())
            .prop_map(|(term, granted)| RaftMessage::PreVoteResponse { term, granted }),
        (term(), index(), term(), any::<bool>()).prop_map(
            |(term, last_log_index, last_log_term, transfer)| RaftMessage::RequestVote {
                term,
                last_log_index,
                last_log_term,
                transfer
            }
        ),
        (term(), any::<bool>())
            .prop_map(|(term, granted)| RaftMessage::VoteResponse { term, granted }),
        (term(), index(), term(), vec(entry(), 0..4), index(), any::<u64>()).prop_map(
            |(term, prev_log_index, prev_log_term, entries, leader_commit, read_seq)| {
                RaftMessage::AppendEntries {
                    term,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                }
            }
        ),
        (term(), any::<bool>(), index(), option::of(hint), any::<u64>()).prop_map(
            |(term, success, match_index, reject_hint, read_seq)| RaftMessage::AppendResponse {
                term,
                success,
                match_index,
                reject_hint,
                read_seq
            }
        ),
        (term(), meta, any::<u64>(), bytes(), any::<bool>()).prop_map(
            |(term, meta, offset, data, done)| RaftMessage::InstallSnapshot {
                term,
                meta,
                offset,
                data,
                done
            }
        ),
        (term(), index(), any::<u64>(), any::<bool>()).prop_map(
            |(term, last_index, next_offset, done)| RaftMessage::InstallSnapshotResponse {
                term,
                last_index,
                next_offset,
                done
            }
        ),
        term().prop_map(|term| RaftMessage::TimeoutNow { term }),
        (term(), any::<u64>()).prop_map(|(term, ctx)| RaftMessage::ReadIndexRequest { term, ctx }),
        (term(), any::<u64>(), option::of(index()))
            .prop_map(|(term, ctx, index)| RaftMessage::ReadIndexResponse { term, ctx, index }),
    ]
}

// --- transactions ---

pub fn write() -> impl Strategy<Value = Write> {
    (key(), option::of(bytes())).prop_map(|(key, value)| Write { key, value })
}
pub fn writes() -> impl Strategy<Value = Vec<Write>> {
    vec(write(), 0..4)
}
pub fn spans() -> impl Strategy<Value = Vec<KeyRange>> {
    vec(range(), 0..4)
}
pub fn isolation() -> impl Strategy<Value = Isolation> {
    prop_oneof![Just(Isolation::Serializable), Just(Isolation::Snapshot)]
}
pub fn no_reason() -> impl Strategy<Value = NoReason> {
    prop_oneof![
        Just(NoReason::IntentConflict),
        Just(NoReason::PendingPrepareConflict),
        Just(NoReason::ReadLockConflict),
        Just(NoReason::WriteTooOld),
        Just(NoReason::StaleRead),
        Just(NoReason::AlreadyAborted),
        Just(NoReason::Prevented),
        Just(NoReason::BelowClosedTimestamp),
        Just(NoReason::BelowTermFloor),
        Just(NoReason::TxnTooOld),
        Just(NoReason::BelowGcThreshold),
        Just(NoReason::TooManyPrepared),
    ]
}
pub fn abort_reason() -> impl Strategy<Value = AbortReason> {
    prop_oneof![
        (group(), no_reason()).prop_map(|(group, reason)| AbortReason::VotedNo { group, reason }),
        Just(AbortReason::PrepareTimeout),
        Just(AbortReason::CoordinatorFailover),
        Just(AbortReason::PresumedAbort),
        Just(AbortReason::Prevented),
        Just(AbortReason::TxnTooOld),
        Just(AbortReason::ClientRollback),
    ]
}
pub fn outcome() -> impl Strategy<Value = TxnOutcome> {
    prop_oneof![
        ts().prop_map(|commit_ts| TxnOutcome::Committed { commit_ts }),
        (abort_reason(), any::<bool>())
            .prop_map(|(reason, retryable)| TxnOutcome::Aborted { reason, retryable }),
        Just(TxnOutcome::Ambiguous),
        Just(TxnOutcome::Pending),
        Just(TxnOutcome::Expired),
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    let mode = (isolation(), any::<bool>(), any::<bool>()).prop_map(
        |(isolation, commit_wait, parallel_commit)| TxnMode {
            isolation,
            commit_wait,
            parallel_commit,
        },
    );
    let group_work = (group(), writes(), spans())
        .prop_map(|(group, writes, read_spans)| GroupWork { group, writes, read_spans });
    prop_oneof![
        (key(), ts(), option::of(ts())).prop_map(|(key, read_ts, uncertainty_limit)| {
            Request::Get(Get { key, read_ts, uncertainty_limit })
        }),
        (range(), ts(), option::of(ts()), 0u32..=10_000).prop_map(
            |(span, read_ts, uncertainty_limit, limit)| Request::Scan(Scan {
                span,
                read_ts,
                uncertainty_limit,
                limit
            })
        ),
        (txn_id(), ts(), vec(group_work, 0..3), mode).prop_map(
            |(txn_id, read_ts, per_group, mode)| Request::CommitTxn(CommitTxn {
                txn_id,
                read_ts,
                per_group,
                mode
            })
        ),
        (txn_id(), ts())
            .prop_map(|(txn_id, read_ts)| Request::TxnStatus(TxnStatus { txn_id, read_ts })),
        (txn_id(), any::<u64>(), any::<u64>(), ts(), writes(), spans(), isolation()).prop_map(
            |(txn_id, client, seq, read_ts, writes, read_spans, isolation)| {
                Request::CommitLocal(CommitLocal {
                    txn_id,
                    client_id: ClientId(client),
                    seq,
                    read_ts,
                    writes,
                    read_spans,
                    isolation,
                })
            }
        ),
        (txn_id(), group(), ts(), writes(), spans()).prop_map(
            |(txn_id, coord_group, read_ts, writes, read_spans)| Request::Prepare(Prepare {
                txn_id,
                coord_group,
                read_ts,
                writes,
                read_spans
            })
        ),
        (txn_id(), ts())
            .prop_map(|(txn_id, commit_ts)| Request::Commit(Commit { txn_id, commit_ts })),
        txn_id().prop_map(|txn_id| Request::Abort(Abort { txn_id })),
        (txn_id(), any::<bool>()).prop_map(|(txn_id, prevent)| Request::QueryPrepared(
            QueryPrepared { txn_id, prevent }
        )),
        (txn_id(), ts(), option::of(ts())).prop_map(|(txn_id, read_ts, push_above)| {
            Request::QueryTxn(QueryTxn { txn_id, read_ts, push_above })
        }),
        any::<u64>()
            .prop_map(|known_version| Request::FetchRangeMap(FetchRangeMap { known_version })),
        (0u32..=10_000)
            .prop_map(|in_doubt_max| Request::ClusterStatus(ClusterStatus { in_doubt_max })),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    let row =
        (key(), bytes(), ts()).prop_map(|(key, value, version_ts)| Row { key, value, version_ts });
    let vote = prop_oneof![
        ts().prop_map(|prepare_ts| Vote::Yes { prepare_ts }),
        no_reason().prop_map(|reason| Vote::No { reason }),
    ];
    let prepared = prop_oneof![
        ts().prop_map(|prepare_ts| PreparedState::Prepared { prepare_ts }),
        Just(PreparedState::Prevented),
        ts().prop_map(|commit_ts| PreparedState::Committed { commit_ts }),
        Just(PreparedState::Aborted),
        Just(PreparedState::Unknown),
    ];
    let coord = prop_oneof![
        ts().prop_map(|commit_ts| CoordinatorState::Committed { commit_ts }),
        Just(CoordinatorState::Aborted),
        Just(CoordinatorState::Pending),
        ts().prop_map(|min_commit_ts| CoordinatorState::Pushed { min_commit_ts }),
        Just(CoordinatorState::Staging),
    ];
    prop_oneof![
        (option::of(bytes()), option::of(ts()))
            .prop_map(|(value, version_ts)| Response::Value(ValueReply { value, version_ts })),
        (vec(row, 0..4), option::of(key()))
            .prop_map(|(rows, resume_from)| Response::ScanRows(ScanRows { rows, resume_from })),
        ts().prop_map(|new_read_ts| Response::UncertaintyRestart(UncertaintyRestart {
            new_read_ts
        })),
        option::of(node()).prop_map(|leader| Response::Redirect(Redirect { leader })),
        (txn_id(), outcome())
            .prop_map(|(txn_id, outcome)| Response::Outcome(OutcomeReply { txn_id, outcome })),
        (txn_id(), vote).prop_map(|(txn_id, vote)| Response::Vote(VoteReply { txn_id, vote })),
        txn_id().prop_map(|txn_id| Response::Ack(Ack { txn_id })),
        (txn_id(), prepared)
            .prop_map(|(txn_id, state)| Response::Prepared(PreparedReply { txn_id, state })),
        (txn_id(), coord)
            .prop_map(|(txn_id, state)| Response::TxnState(TxnStateReply { txn_id, state })),
        range_map_reply().prop_map(Response::RangeMap),
        cluster_status_reply().prop_map(Response::ClusterStatus),
    ]
}

pub fn range_map_reply() -> impl Strategy<Value = RangeMapReply> {
    let leader = (group(), option::of(node()), term(), vec(node(), 0..4))
        .prop_map(|(group, leader, term, replicas)| GroupLeader { group, leader, term, replicas });
    let addr = (node(), text()).prop_map(|(node, addr)| NodeAddr { node, addr });
    (
        any::<u64>(),
        vec((range(), group()), 0..4),
        group(),
        vec(leader, 0..3),
        vec(addr, 0..3),
        vec(group(), 0..3),
    )
        .prop_map(
            |(version, ranges, coordinator_group, leaders, nodes, coordinator_groups)| {
                RangeMapReply {
                    version,
                    ranges,
                    coordinator_group,
                    leaders,
                    nodes,
                    coordinator_groups,
                }
            },
        )
}

pub fn cluster_status_reply() -> impl Strategy<Value = ClusterStatusReply> {
    let role = prop_oneof![
        Just(GroupRole::Coordinator),
        range().prop_map(|range| GroupRole::Participant { range }),
    ];
    let status = (group(), role, node(), option::of(node()), term(), index(), index()).prop_map(
        |(group, role, replica, leader, term, commit_index, applied_index)| GroupStatus {
            group,
            role,
            replica,
            leader,
            term,
            commit_index,
            applied_index,
        },
    );
    let blocking = prop_oneof![
        Just(BlockingReason::AwaitingVotes),
        Just(BlockingReason::AwaitingDecision),
        Just(BlockingReason::CoordinatorUnreachable),
        Just(BlockingReason::AwaitingAcks),
        Just(BlockingReason::StagingRecovery),
    ];
    let in_doubt = (txn_id(), group(), group(), option::of(ts()), any::<u64>(), blocking).prop_map(
        |(txn_id, group, coord_group, prepare_ts, age_ms, blocking)| InDoubtTxn {
            txn_id,
            group,
            coord_group,
            prepare_ts,
            age_ms,
            blocking,
        },
    );
    (vec(status, 0..3), vec(in_doubt, 0..3), any::<u64>()).prop_map(
        |(groups, in_doubt, in_doubt_omitted)| ClusterStatusReply {
            groups,
            in_doubt,
            in_doubt_omitted,
        },
    )
}

pub fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![
        Just(Bound::KeyBytes),
        Just(Bound::ValueBytes),
        Just(Bound::WritesPerTxn),
        Just(Bound::ReadSpansPerTxn),
        Just(Bound::GroupsPerTxn),
        Just(Bound::ScanRows),
        Just(Bound::Ranges),
        Just(Bound::GroupsReported),
        Just(Bound::InDoubtReported),
        Just(Bound::RaftEntriesPerAppend),
        Just(Bound::SnapshotChunkBytes),
        Just(Bound::Voters),
        Just(Bound::AddrBytes),
        Just(Bound::ErrorDetailBytes),
        Just(Bound::RaftBatchMessages),
    ]
}

pub fn error_response() -> impl Strategy<Value = ErrorResponse> {
    prop_oneof![
        (option::of(node()), term())
            .prop_map(|(hint, term)| ErrorResponse::NotLeader { hint, term }),
        group().prop_map(|group| ErrorResponse::UnknownGroup { group }),
        key().prop_map(|key| ErrorResponse::KeyOutOfRange { key }),
        (ts(), any::<u64>(), any::<u64>()).prop_map(|(remote, ahead_ns, max_offset_ns)| {
            ErrorResponse::ClockRejected { remote, ahead_ns, max_offset_ns }
        }),
        text().prop_map(ErrorResponse::malformed),
        (any::<u16>(), any::<u16>())
            .prop_map(|(got, supported)| ErrorResponse::UnsupportedVersion { got, supported }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| ErrorResponse::TooLarge { len, max }),
        (bound(), any::<u64>(), any::<u64>()).prop_map(|(bound, got, max)| {
            ErrorResponse::LimitExceeded(LimitError { bound, got, max })
        }),
        text().prop_map(ErrorResponse::invalid_argument),
        ts().prop_map(|gc_threshold| ErrorResponse::BelowGcThreshold { gc_threshold }),
        any::<u64>().prop_map(|retry_after_ms| ErrorResponse::Busy { retry_after_ms }),
        text().prop_map(ErrorResponse::unavailable),
    ]
}

pub fn payload() -> impl Strategy<Value = Payload> {
    let request_id = || any::<u64>().prop_map(RequestId);
    prop_oneof![
        raft_message().prop_map(Payload::Raft),
        (request_id(), request())
            .prop_map(|(request_id, request)| Payload::Request { request_id, request }),
        (request_id(), response())
            .prop_map(|(request_id, response)| Payload::Response { request_id, response }),
        (option::of(request_id()), error_response())
            .prop_map(|(in_reply_to, error)| Payload::Error { in_reply_to, error }),
        vec((group(), raft_message()), 0..8).prop_map(Payload::RaftBatch),
        any::<u64>().prop_map(|sent_pt| Payload::ClockProbe { sent_pt }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(sent_pt, remote_pt)| Payload::ClockEcho { sent_pt, remote_pt }),
    ]
}

pub fn envelope() -> impl Strategy<Value = Envelope> {
    (node(), group(), ts(), payload()).prop_map(|(from, group, sender_clock, payload)| Envelope {
        from,
        group,
        sender_clock,
        payload,
    })
}
