//! The envelope: what every frame body is (HLC-4).
//!
//! ```text
//! Envelope { from: NodeId, group: GroupId, sender_clock: HlcTimestamp, payload: Payload }
//! Payload  = Raft(RaftMessage)                                  -- replica <-> replica
//!          | Request  { request_id, request: Request }           -- asks for an answer
//!          | Response { request_id, response: Response }         -- the answer
//!          | Error    { in_reply_to: Option<RequestId>, error }  -- the refusal
//!          | RaftBatch(Vec<(GroupId, RaftMessage)>)            -- node <-> node, many groups
//!          | ClockProbe { sent_pt } | ClockEcho { sent_pt, remote_pt }  -- node <-> node, HLC-6
//! ```
//!
//! - `from` is the sending node. The transport checks it against the peer's TLS certificate;
//!   the receiver uses it to address replies and Raft responses.
//! - `group` is the Raft group the message is for (the participant group of a read or prepare,
//!   the coordinator group of a `CommitTxn`); a receiver routes on it. A `RaftBatch` is for
//!   the node, not one group: its `group` is [`NODE_GROUP`] and each message names its own.
//! - `sender_clock` is `sender.now()` taken *after* every timestamp in the payload was chosen,
//!   so it is at least every one of them (HLC-4, INV-H4). The receiver calls
//!   `hlc.update(sender_clock)` before anything else and answers
//!   [`ErrorResponse::ClockRejected`] if that fails (HLC-3).
//! - `request_id` is chosen by the requester, unique among its outstanding requests; the reply
//!   echoes it so replies can be matched without relying on streams (the simulator has none).
//!   Transaction replies also repeat the `txn_id`.
//!
//! The protocol version is not here: it is in the frame header ([`crate::frame`]).

use decree_types::{GroupId, HlcTimestamp, NodeId};
use serde::{Deserialize, Serialize};

use crate::admin::{ClusterStatus, ClusterStatusReply, FetchRangeMap, RangeMapReply};
use crate::error::ErrorResponse;
use crate::limits::LimitError;
use crate::raft::{self, RaftBatch, RaftMessage};
use crate::txn::{
    Abort, Ack, Commit, CommitLocal, CommitTxn, Get, OutcomeReply, Prepare, PreparedReply,
    QueryPrepared, QueryTxn, Redirect, Scan, ScanRows, TxnStateReply, TxnStatus,
    UncertaintyRestart, ValueReply, VoteReply,
};

/// The `group` of an envelope addressed to the receiving node rather than to one of its
/// groups ([`Payload::RaftBatch`]). No Raft group has this id.
pub const NODE_GROUP: GroupId = GroupId(u64::MAX);

/// Every frame body. Generic over the request and response types so that a host whose
/// machines speak their own requests (a test machine, the replicated-log node) uses the same
/// envelope; the defaults are the product's [`Request`] and [`Response`], whose encodings the
/// golden files freeze.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<Rq = Request, Rs = Response> {
    /// The sending node.
    pub from: NodeId,
    /// The Raft group the payload is for.
    pub group: GroupId,
    /// The sender's HLC reading, at least every timestamp in `payload` (HLC-4).
    pub sender_clock: HlcTimestamp,
    /// The message.
    pub payload: Payload<Rq, Rs>,
}

/// Matches a reply to its request; chosen by the requester.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// What an envelope carries: one of the four families. New variants go at the end, so the
/// encodings of the existing ones never change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<Rq = Request, Rs = Response> {
    /// Raft traffic between replicas of `group` (RAFT-*).
    Raft(RaftMessage),
    /// A request that expects exactly one [`Payload::Response`] or [`Payload::Error`].
    Request {
        /// Echoed by the reply.
        request_id: RequestId,
        /// The request.
        request: Rq,
    },
    /// The answer to a request.
    Response {
        /// The request's id.
        request_id: RequestId,
        /// The answer.
        response: Rs,
    },
    /// A refusal, with the reason.
    Error {
        /// The refused request's id; `None` if the refused frame was not a request or could
        /// not be decoded far enough to find one.
        in_reply_to: Option<RequestId>,
        /// Why.
        error: ErrorResponse,
    },
    /// Raft traffic of many groups between two nodes, in one envelope (RAFT-*, coalesced
    /// heartbeats): `(group, message)` pairs, in send order, at most
    /// [`crate::limits::RAFT_BATCH_MESSAGES_MAX`]. The envelope's `group` is [`NODE_GROUP`].
    RaftBatch(#[serde(deserialize_with = "raft::deserialize_batch")] RaftBatch),
    /// HLC-6, node -> node on the node stream: "what does your physical clock read?"
    /// `sent_pt` is the asker's physical clock (ns since the Unix epoch) when it asked; the
    /// peer answers at once with [`Payload::ClockEcho`].
    ClockProbe {
        /// The asker's physical time at sending.
        sent_pt: u64,
    },
    /// HLC-6: the answer to a [`Payload::ClockProbe`]: its `sent_pt`, and the answering node's
    /// physical clock when it answered. The asker brackets `remote_pt` between `sent_pt` and
    /// its own time of arrival: one offset measurement with half the round trip as uncertainty.
    ClockEcho {
        /// The probe's `sent_pt`, echoed.
        sent_pt: u64,
        /// The answering node's physical time.
        remote_pt: u64,
    },
}

/// Every request (protocol.md §3.1, DESIGN.md §9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// client -> participant: read one key. Replies: `Value`, `UncertaintyRestart`, `Redirect`.
    Get(Get),
    /// client -> participant: read a span. Replies: `ScanRows`, `UncertaintyRestart`,
    /// `Redirect`.
    Scan(Scan),
    /// client -> coordinator leader: commit a multi-group transaction. Reply: `Outcome`.
    CommitTxn(CommitTxn),
    /// client -> coordinator: outcome of a transaction. Reply: `Outcome`.
    TxnStatus(TxnStatus),
    /// client -> participant leader: 1PC commit. Reply: `Outcome`.
    CommitLocal(CommitLocal),
    /// coordinator -> participant leader: phase one. Reply: `Vote`.
    Prepare(Prepare),
    /// coordinator -> participant leader: phase two, commit. Reply: `Ack`.
    Commit(Commit),
    /// coordinator -> participant leader: phase two, abort. Reply: `Ack`.
    Abort(Abort),
    /// coordinator (recovery) -> participant leader. Reply: `Prepared`.
    QueryPrepared(QueryPrepared),
    /// participant or reader -> coordinator leader. Reply: `TxnState`.
    QueryTxn(QueryTxn),
    /// client -> coordinator: range map and leaders. Reply: `RangeMap`.
    FetchRangeMap(FetchRangeMap),
    /// operator -> any node: status. Reply: `ClusterStatus`.
    ClusterStatus(ClusterStatus),
}

/// Every successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Get`.
    Value(ValueReply),
    /// Answer to `Scan`.
    ScanRows(ScanRows),
    /// Answer to `Get`/`Scan`: restart above an uncertain version (§5.3).
    UncertaintyRestart(UncertaintyRestart),
    /// Answer to `Get`/`Scan` from a replica that cannot serve the read (F-3).
    Redirect(Redirect),
    /// Answer to `CommitTxn`, `TxnStatus`, `CommitLocal`.
    Outcome(OutcomeReply),
    /// Answer to `Prepare`.
    Vote(VoteReply),
    /// Answer to `Commit` and `Abort`.
    Ack(Ack),
    /// Answer to `QueryPrepared`.
    Prepared(PreparedReply),
    /// Answer to `QueryTxn`.
    TxnState(TxnStateReply),
    /// Answer to `FetchRangeMap`.
    RangeMap(RangeMapReply),
    /// Answer to `ClusterStatus`.
    ClusterStatus(ClusterStatusReply),
}

impl Envelope {
    /// Checks the payload against [`crate::limits`]. Called by the codec on every decode and
    /// every encode.
    pub fn validate(&self) -> Result<(), LimitError> {
        match &self.payload {
            Payload::Raft(msg) => raft::validate(msg),
            Payload::Request { request, .. } => request.validate(),
            Payload::Response { response, .. } => response.validate(),
            Payload::Error { error, .. } => error.validate(),
            Payload::RaftBatch(batch) => raft::validate_batch(batch),
            Payload::ClockProbe { .. } | Payload::ClockEcho { .. } => Ok(()),
        }
    }

    /// A short name for the payload's variant, e.g. `"Request::Prepare"`.
    pub fn kind(&self) -> &'static str {
        self.payload.kind()
    }
}

impl<Rq, Rs> Payload<Rq, Rs> {
    /// The id a reply to this payload must carry: `Some` for a request, `None` otherwise.
    /// A node refusing a frame puts this in [`Payload::Error::in_reply_to`].
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Payload::Request { request_id, .. } => Some(*request_id),
            Payload::Raft(_)
            | Payload::Response { .. }
            | Payload::Error { .. }
            | Payload::RaftBatch(_)
            | Payload::ClockProbe { .. }
            | Payload::ClockEcho { .. } => None,
        }
    }

    /// Checks the parts of the payload whose bounds this crate knows (Raft traffic and
    /// errors); a request or response of another type is bounded by the frame size alone.
    pub fn validate_transport(&self) -> Result<(), LimitError> {
        match self {
            Payload::Raft(msg) => raft::validate(msg),
            Payload::Error { error, .. } => error.validate(),
            Payload::RaftBatch(batch) => raft::validate_batch(batch),
            Payload::Request { .. }
            | Payload::Response { .. }
            | Payload::ClockProbe { .. }
            | Payload::ClockEcho { .. } => Ok(()),
        }
    }
}

impl Payload {
    /// A short name for the variant, e.g. `"Response::Vote"` (for logs, metrics and the golden
    /// file). [`all_kinds`] lists every name.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Raft(msg) => raft::kind(msg),
            Payload::Request { request, .. } => request.kind(),
            Payload::Response { response, .. } => response.kind(),
            Payload::Error { error, .. } => error.kind(),
            Payload::RaftBatch(_) => RAFT_BATCH_KIND,
            Payload::ClockProbe { .. } => CLOCK_PROBE_KIND,
            Payload::ClockEcho { .. } => CLOCK_ECHO_KIND,
        }
    }
}

impl Request {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Request::Get(m) => m.validate(),
            Request::Scan(m) => m.validate(),
            Request::CommitTxn(m) => m.validate(),
            Request::CommitLocal(m) => m.validate(),
            Request::Prepare(m) => m.validate(),
            Request::ClusterStatus(m) => m.validate(),
            Request::TxnStatus(_)
            | Request::Commit(_)
            | Request::Abort(_)
            | Request::QueryPrepared(_)
            | Request::QueryTxn(_)
            | Request::FetchRangeMap(_) => Ok(()),
        }
    }

    /// A short name for the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Get(_) => "Request::Get",
            Request::Scan(_) => "Request::Scan",
            Request::CommitTxn(_) => "Request::CommitTxn",
            Request::TxnStatus(_) => "Request::TxnStatus",
            Request::CommitLocal(_) => "Request::CommitLocal",
            Request::Prepare(_) => "Request::Prepare",
            Request::Commit(_) => "Request::Commit",
            Request::Abort(_) => "Request::Abort",
            Request::QueryPrepared(_) => "Request::QueryPrepared",
            Request::QueryTxn(_) => "Request::QueryTxn",
            Request::FetchRangeMap(_) => "Request::FetchRangeMap",
            Request::ClusterStatus(_) => "Request::ClusterStatus",
        }
    }
}

impl Response {
    /// Checks [`crate::limits`].
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Response::Value(m) => m.validate(),
            Response::ScanRows(m) => m.validate(),
            Response::RangeMap(m) => m.validate(),
            Response::ClusterStatus(m) => m.validate(),
            Response::UncertaintyRestart(_)
            | Response::Redirect(_)
            | Response::Outcome(_)
            | Response::Vote(_)
            | Response::Ack(_)
            | Response::Prepared(_)
            | Response::TxnState(_) => Ok(()),
        }
    }

    /// A short name for the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Value(_) => "Response::Value",
            Response::ScanRows(_) => "Response::ScanRows",
            Response::UncertaintyRestart(_) => "Response::UncertaintyRestart",
            Response::Redirect(_) => "Response::Redirect",
            Response::Outcome(_) => "Response::Outcome",
            Response::Vote(_) => "Response::Vote",
            Response::Ack(_) => "Response::Ack",
            Response::Prepared(_) => "Response::Prepared",
            Response::TxnState(_) => "Response::TxnState",
            Response::RangeMap(_) => "Response::RangeMap",
            Response::ClusterStatus(_) => "Response::ClusterStatus",
        }
    }
}

/// Every name [`Request::kind`] can return.
pub const REQUEST_KINDS: &[&str] = &[
    "Request::Get",
    "Request::Scan",
    "Request::CommitTxn",
    "Request::TxnStatus",
    "Request::CommitLocal",
    "Request::Prepare",
    "Request::Commit",
    "Request::Abort",
    "Request::QueryPrepared",
    "Request::QueryTxn",
    "Request::FetchRangeMap",
    "Request::ClusterStatus",
];

/// Every name [`Response::kind`] can return.
pub const RESPONSE_KINDS: &[&str] = &[
    "Response::Value",
    "Response::ScanRows",
    "Response::UncertaintyRestart",
    "Response::Redirect",
    "Response::Outcome",
    "Response::Vote",
    "Response::Ack",
    "Response::Prepared",
    "Response::TxnState",
    "Response::RangeMap",
    "Response::ClusterStatus",
];

/// The name [`Payload::kind`] gives a [`Payload::RaftBatch`].
pub const RAFT_BATCH_KIND: &str = "RaftBatch";
/// The name [`Payload::kind`] gives a [`Payload::ClockProbe`].
pub const CLOCK_PROBE_KIND: &str = "ClockProbe";
/// The name [`Payload::kind`] gives a [`Payload::ClockEcho`].
pub const CLOCK_ECHO_KIND: &str = "ClockEcho";

/// Every name [`Payload::kind`] can return, family by family.
pub fn all_kinds() -> Vec<&'static str> {
    let mut kinds = Vec::new();
    kinds.extend_from_slice(raft::KINDS);
    kinds.extend_from_slice(REQUEST_KINDS);
    kinds.extend_from_slice(RESPONSE_KINDS);
    kinds.extend_from_slice(crate::error::KINDS);
    kinds.push(RAFT_BATCH_KIND);
    kinds.push(CLOCK_PROBE_KIND);
    kinds.push(CLOCK_ECHO_KIND);
    kinds
}
