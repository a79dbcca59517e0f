//! Shared fixtures for the coordinator's scenario tests: a cluster map with two participant
//! groups and one coordinator group, a one-replica harness leading it, and helpers that sort
//! the machine's effects so tests can assert them exactly. The tests play the participants
//! by answering the machine's `Effect::Send`s.

#![allow(dead_code)]

use std::collections::BTreeMap;

use decree_coordinator::{
    ClusterMap, CoordinatorCommand, CoordinatorConfig, CoordinatorGroup, Reply,
};
use decree_host::testing::Harness;
use decree_host::{Admission, Destination, Effect, ReplyTo, Requester};
use decree_proto::txn::{
    Ack, CommitTxn, GroupWork, Isolation, OutcomeReply, TxnMode, TxnOutcome, Vote, VoteReply, Write,
};
use decree_proto::{Request, RequestId, Response};
use decree_types::limits::{MAX_OFFSET_NS, NS_PER_MS};
use decree_types::{ClientId, GroupId, HlcTimestamp, Key, NodeId, RangeMap, Term, TxnId};

pub const G1: GroupId = GroupId(1);
pub const G2: GroupId = GroupId(2);
pub const COORD: GroupId = GroupId(10);
pub const CLIENT: Requester = Requester::Client(ClientId(77));
/// Physical time at the start of every test, ns since the epoch (2023-11-14).
pub const WALL0_NS: u64 = 1_700_000_000_000_000_000;
pub const MS: u64 = NS_PER_MS;

pub type H = Harness<CoordinatorGroup>;

pub fn cluster_map(coordinators: Vec<GroupId>) -> ClusterMap {
    let ranges = RangeMap::split_at(vec![Key::from("m")], vec![G1, G2]).expect("valid split");
    let mut replicas = BTreeMap::from([
        (G1, vec![NodeId(1), NodeId(2), NodeId(3)]),
        (G2, vec![NodeId(1), NodeId(2), NodeId(3)]),
    ]);
    for g in &coordinators {
        replicas.insert(*g, vec![NodeId(1), NodeId(2), NodeId(3)]);
    }
    let addrs = (1..=3).map(|n| (NodeId(n), format!("127.0.0.1:{}", 7000 + n))).collect();
    ClusterMap::new(ranges, replicas, addrs, coordinators).expect("valid cluster map")
}

pub fn machine() -> CoordinatorGroup {
    // The backoff the tests walk through: 200 ms, doubling, capped at 5 s (not the defaults,
    // so that a change of default does not rewrite every expected instant).
    let config = CoordinatorConfig {
        retransmit_initial_ms: 200,
        retransmit_max_ms: 5_000,
        ..CoordinatorConfig::default()
    };
    CoordinatorGroup::new(COORD, config, cluster_map(vec![COORD]))
}

/// A follower replica of the coordinator group (term 0).
pub fn follower() -> H {
    Harness::new(machine(), COORD, NodeId(1), MAX_OFFSET_NS, WALL0_NS)
}

/// The ready leader of term 1.
pub fn leader() -> H {
    let mut h = follower();
    h.become_ready_leader(Term(1));
    assert!(h.take_effects().is_empty(), "an empty log needs no recovery");
    h
}

/// A `CommitTxn` writing one key in each of G1 and G2.
pub fn commit_txn(txn: u128, read_ts: HlcTimestamp) -> Request {
    let work = |group, key: &str| GroupWork {
        group,
        writes: vec![Write { key: Key::from(key), value: Some(b"v".to_vec()) }],
        read_spans: vec![],
    };
    Request::CommitTxn(CommitTxn {
        txn_id: TxnId(txn),
        read_ts,
        per_group: vec![work(G1, "a"), work(G2, "x")],
        mode: TxnMode {
            isolation: Isolation::Serializable,
            commit_wait: false,
            parallel_commit: false,
        },
    })
}

/// A read timestamp just below the harness's clock.
pub fn fresh_read_ts(h: &H) -> HlcTimestamp {
    HlcTimestamp::new(h.clock.hlc().last().wall_ns.max(WALL0_NS) - MS, 0)
}

/// The effects of one step, sorted by kind, in emission order.
#[derive(Debug, Default)]
pub struct Out {
    pub proposals: Vec<(CoordinatorCommand, Option<ReplyTo>)>,
    pub sends: Vec<(RequestId, GroupId, Request)>,
    pub replies: Vec<(ReplyTo, Reply)>,
    pub hints: Vec<(GroupId, NodeId)>,
}

impl Out {
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
            && self.sends.is_empty()
            && self.replies.is_empty()
            && self.hints.is_empty()
    }

    /// The request ids of the sends to `group`.
    pub fn to(&self, group: GroupId) -> Vec<RequestId> {
        self.sends.iter().filter(|(_, g, _)| *g == group).map(|(id, _, _)| *id).collect()
    }
}

pub fn take(h: &mut H) -> Out {
    let mut out = Out::default();
    for effect in h.take_effects() {
        match effect {
            Effect::Propose { command, waiter } => {
                out.proposals.push((command, waiter.map(|(w, _)| w)))
            }
            Effect::Send { request_id, to: Destination::LeaderOf(group), request } => {
                out.sends.push((request_id, group, request))
            }
            Effect::Send { to, .. } => {
                panic!("the coordinator only sends to group leaders, not {to:?}")
            }
            Effect::Reply(to, r) => out.replies.push((to, r)),
            Effect::LeaderHint { group, leader } => out.hints.push((group, leader)),
            Effect::Readmit { .. } => panic!("the harness admits handed-back requests itself"),
        }
    }
    out
}

/// Commits and applies every proposal in the effects (a one-replica log); returns the
/// replies produced and what else the apply caused.
pub fn commit(h: &mut H) -> (Vec<(ReplyTo, Reply)>, Out) {
    let replies = h.commit_proposals();
    (replies, take(h))
}

/// Admits `request`, expecting it to be kept; returns its `ReplyTo`.
pub fn admit_later(h: &mut H, request: Request) -> ReplyTo {
    let (to, admission) = h.admit(CLIENT, request);
    assert!(matches!(admission, Admission::Later), "expected Later, got {admission:?}");
    to
}

/// Admits `request`, expecting an immediate reply.
pub fn admit_reply(h: &mut H, request: Request) -> Reply {
    match h.admit(CLIENT, request) {
        (_, Admission::Reply(r)) => r,
        (_, other) => panic!("expected an immediate reply, got {other:?}"),
    }
}

pub fn yes(txn: u128, prepare_ts: HlcTimestamp) -> Reply {
    Ok(Response::Vote(VoteReply { txn_id: TxnId(txn), vote: Vote::Yes { prepare_ts } }))
}

pub fn ack(txn: u128) -> Reply {
    Ok(Response::Ack(Ack { txn_id: TxnId(txn) }))
}

pub fn outcome(txn: u128, outcome: TxnOutcome) -> Reply {
    Ok(Response::Outcome(OutcomeReply { txn_id: TxnId(txn), outcome }))
}

/// A prepare timestamp a little ahead of the harness's clock.
pub fn prepare_ts(h: &H, ahead_ms: u64) -> HlcTimestamp {
    HlcTimestamp::new(h.clock.hlc().last().wall_ns.max(WALL0_NS) + ahead_ms * MS, 0)
}

/// Runs a transaction through to its decision with two `Yes` votes; returns the commit
/// timestamp and the phase-two sends (G1's first).
pub fn commit_through_decision(h: &mut H, txn: u128) -> (HlcTimestamp, Out) {
    let read_ts = fresh_read_ts(h);
    let client = admit_later(h, commit_txn(txn, read_ts));
    let start = take(h);
    h.effects.clear();
    // StartCommit first.
    for (command, _) in start.proposals {
        h.effects.push(Effect::Propose { command, waiter: None });
    }
    let (_, rest) = commit(h);
    assert!(rest.is_empty());
    let p = prepare_ts(h, 1);
    for (id, _, _) in &start.sends {
        h.respond(*id, NodeId(2), Ok(yes(txn, p)));
    }
    let (replies, phase_two) = commit(h);
    assert_eq!(replies.len(), 1);
    let (to, reply) = &replies[0];
    assert_eq!(*to, client);
    let Ok(Response::Outcome(OutcomeReply {
        outcome: TxnOutcome::Committed { commit_ts }, ..
    })) = reply
    else {
        panic!("expected Committed, got {reply:?}");
    };
    (*commit_ts, phase_two)
}
