//! Helpers shared by the participant's scenario tests: a one-replica leader on the host's
//! `Harness`, request builders and answer unpackers.

#![allow(dead_code)]

use decree_host::testing::Harness;
use decree_host::{Admission, Effect, ReplyTo, Requester};
use decree_participant::{
    ParticipantCommand, ParticipantConfig, ParticipantGroup, ParticipantResponse,
};
use decree_proto::txn::{
    Abort, Commit, CommitLocal, Get, Isolation, Prepare, Scan, TxnOutcome, Vote, Write,
};
use decree_proto::{Request, Response};
use decree_types::{ClientId, GroupId, HlcTimestamp, Key, KeyRange, NodeId, Term, TxnId};

/// The participant group under test.
pub const G: GroupId = GroupId(7);
/// The coordinator group named in prepares.
pub const COORD: GroupId = GroupId(100);
/// `max_offset` of the harness clock, ns (the default, 250 ms).
pub const MAX_OFFSET_NS: u64 = 250_000_000;
/// Physical time at the start of every test, ns since the epoch.
pub const WALL0: u64 = 1_800_000_000_000_000_000;
/// A client.
pub const CLIENT: Requester = Requester::Client(ClientId(1));
/// The coordinator's node.
pub const COORD_NODE: Requester = Requester::Node(NodeId(9));

pub type H = Harness<ParticipantGroup>;

/// The test configuration: defaults, without periodic entries (tests propose those by hand).
pub fn config() -> ParticipantConfig {
    ParticipantConfig {
        close_interval_ms: 0,
        gc_interval_ms: 0,
        expire_scan_interval_ms: 0,
        ..ParticipantConfig::default()
    }
}

/// The group's range: `["a", "n")`.
pub fn range() -> KeyRange {
    KeyRange::bounded("a", "n")
}

pub fn machine_with(config: ParticipantConfig) -> ParticipantGroup {
    ParticipantGroup::new(G, range(), 3, config)
}

/// A replica of node `node` at physical time `wall_ns`, follower of term 0.
pub fn replica(node: u64, wall_ns: u64, config: ParticipantConfig) -> H {
    Harness::new(machine_with(config), G, NodeId(node), MAX_OFFSET_NS, wall_ns)
}

/// A ready leader of term 1 past its LC-2 wait.
pub fn leader() -> H {
    leader_with(config())
}

pub fn leader_with(config: ParticipantConfig) -> H {
    let mut h = replica(1, WALL0, config);
    h.become_ready_leader(Term(1));
    pass_gate(&mut h);
    h
}

/// Advances time to the end of the LC-2 wait.
pub fn pass_gate(h: &mut H) {
    let gate = h.machine.lc2_gate_open_ns().expect("leader");
    if h.now_ns < gate {
        h.advance_to(gate);
    }
}

pub fn k(s: &str) -> Key {
    Key::from(s)
}

pub fn put(key: &str, value: &str) -> Write {
    Write { key: k(key), value: Some(value.as_bytes().to_vec()) }
}

pub fn del(key: &str) -> Write {
    Write { key: k(key), value: None }
}

pub fn span(a: &str, b: &str) -> KeyRange {
    KeyRange::bounded(a, b)
}

/// A fresh HLC reading of the harness's clock (what a client at the same clock would use).
pub fn now(h: &mut H) -> HlcTimestamp {
    h.clock.now()
}

pub fn get_req(key: &str, read_ts: HlcTimestamp, limit: Option<HlcTimestamp>) -> Request {
    Request::Get(Get { key: k(key), read_ts, uncertainty_limit: limit })
}

pub fn scan_req(span: KeyRange, read_ts: HlcTimestamp, limit: u32) -> Request {
    Request::Scan(Scan { span, read_ts, uncertainty_limit: None, limit })
}

pub fn prepare_req(
    txn: u128,
    read_ts: HlcTimestamp,
    writes: Vec<Write>,
    spans: Vec<KeyRange>,
) -> Request {
    Request::Prepare(Prepare {
        txn_id: TxnId(txn),
        coord_group: COORD,
        read_ts,
        writes,
        read_spans: spans,
    })
}

pub fn local_req(
    txn: u128,
    client: u64,
    seq: u64,
    read_ts: HlcTimestamp,
    writes: Vec<Write>,
    spans: Vec<KeyRange>,
) -> Request {
    Request::CommitLocal(CommitLocal {
        txn_id: TxnId(txn),
        client_id: ClientId(client),
        seq,
        read_ts,
        writes,
        read_spans: spans,
        isolation: Isolation::Serializable,
    })
}

pub fn commit_req(txn: u128, commit_ts: HlcTimestamp) -> Request {
    Request::Commit(Commit { txn_id: TxnId(txn), commit_ts })
}

pub fn abort_req(txn: u128) -> Request {
    Request::Abort(Abort { txn_id: TxnId(txn) })
}

/// A read answered at once.
pub fn get(
    h: &mut H,
    key: &str,
    read_ts: HlcTimestamp,
    limit: Option<HlcTimestamp>,
) -> ParticipantResponse {
    h.request(CLIENT, get_req(key, read_ts, limit)).expect("a read that does not block is answered")
}

/// The value and version of a `Value` answer.
pub fn value(response: ParticipantResponse) -> (Option<String>, Option<HlcTimestamp>) {
    match response {
        Ok(Response::Value(v)) => {
            (v.value.map(|b| String::from_utf8(b).expect("utf-8 test values")), v.version_ts)
        }
        other => panic!("expected a Value, got {other:?}"),
    }
}

/// Prepares and returns the vote (applied at once, one-replica log).
pub fn prepare(
    h: &mut H,
    txn: u128,
    read_ts: HlcTimestamp,
    writes: Vec<Write>,
    spans: Vec<KeyRange>,
) -> Vote {
    match h.request(COORD_NODE, prepare_req(txn, read_ts, writes, spans)) {
        Some(Ok(Response::Vote(v))) => {
            assert_eq!(v.txn_id, TxnId(txn));
            v.vote
        }
        other => panic!("expected a Vote, got {other:?}"),
    }
}

/// The `P` of a `Yes`.
pub fn yes(vote: Vote) -> HlcTimestamp {
    match vote {
        Vote::Yes { prepare_ts } => prepare_ts,
        Vote::No { reason } => panic!("expected Yes, got No({reason:?})"),
    }
}

/// Commits `txn` at a fresh clock reading (above its P) and returns `C`.
pub fn commit(h: &mut H, txn: u128) -> HlcTimestamp {
    let c = now(h);
    commit_at(h, txn, c);
    c
}

pub fn commit_at(h: &mut H, txn: u128, c: HlcTimestamp) {
    match h.request(COORD_NODE, commit_req(txn, c)) {
        Some(Ok(Response::Ack(a))) => assert_eq!(a.txn_id, TxnId(txn)),
        other => panic!("expected an Ack, got {other:?}"),
    }
}

pub fn abort(h: &mut H, txn: u128) {
    match h.request(COORD_NODE, abort_req(txn)) {
        Some(Ok(Response::Ack(a))) => assert_eq!(a.txn_id, TxnId(txn)),
        other => panic!("expected an Ack, got {other:?}"),
    }
}

/// A 1PC commit at a fresh read timestamp; returns `C`.
pub fn write_1pc(h: &mut H, txn: u128, writes: Vec<Write>) -> HlcTimestamp {
    let read_ts = now(h);
    match local(h, txn, txn as u64, 1, read_ts, writes, vec![]) {
        TxnOutcome::Committed { commit_ts } => commit_ts,
        other => panic!("expected Committed, got {other:?}"),
    }
}

pub fn local(
    h: &mut H,
    txn: u128,
    client: u64,
    seq: u64,
    read_ts: HlcTimestamp,
    writes: Vec<Write>,
    spans: Vec<KeyRange>,
) -> TxnOutcome {
    match h.request(CLIENT, local_req(txn, client, seq, read_ts, writes, spans)) {
        Some(Ok(Response::Outcome(o))) => o.outcome,
        other => panic!("expected an Outcome, got {other:?}"),
    }
}

/// Admits `request` and returns the command it proposes (not applied).
pub fn admit_proposal(h: &mut H, requester: Requester, request: Request) -> ParticipantCommand {
    match h.admit(requester, request).1 {
        Admission::Propose { command, .. } => command,
        other => panic!("expected a proposal, got {other:?}"),
    }
}

/// The commands proposed among `effects`.
pub fn proposals(effects: &[Effect<ParticipantGroup>]) -> Vec<ParticipantCommand> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose { command, .. } => Some(command.clone()),
            _ => None,
        })
        .collect()
}

/// The replies among `effects`.
pub fn replies(effects: &[Effect<ParticipantGroup>]) -> Vec<ParticipantResponse> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(_, r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn is_later(admission: &Admission<ParticipantGroup>) -> bool {
    matches!(admission, Admission::Later)
}

pub fn term(n: u64) -> Term {
    Term(n)
}

/// Like `Harness::request`, but returns every reply produced (to this request and to parked
/// ones), with the `ReplyTo` of this request first.
pub fn request_all(
    h: &mut H,
    requester: Requester,
    request: Request,
) -> (ReplyTo, Vec<(ReplyTo, ParticipantResponse)>) {
    let (reply_to, admission) = h.admit(requester, request);
    let replies = match admission {
        Admission::Reply(r) => vec![(reply_to, r)],
        Admission::Later => h.commit_proposals(),
        Admission::Propose { command, on_lost } => {
            h.effects.insert(0, Effect::Propose { command, waiter: Some((reply_to, on_lost)) });
            h.commit_proposals()
        }
        Admission::Read(_) => panic!("the participant admits no ReadIndex reads"),
    };
    (reply_to, replies)
}

/// The answer `to` got among `replies`.
pub fn answer_for(
    replies: &[(ReplyTo, ParticipantResponse)],
    to: ReplyTo,
) -> Option<ParticipantResponse> {
    replies.iter().find(|(t, _)| *t == to).map(|(_, r)| r.clone())
}
