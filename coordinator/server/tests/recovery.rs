//! Presumed abort and the REC-4 answer table (commit-protocol.md §5.2), coordinator failover
//! (REC-1, REC-2, §5.1), expiry (D-3), the operator's in-doubt view, and snapshots.

mod common;

use common::*;
use decree_coordinator::{Answer, CoordinatorCommand, CoordinatorGroup, Decision, Outcome, Record};
use decree_host::{Admission, Effect, ReplicatedMachine};
use decree_proto::admin::{BlockingReason, ClusterStatus};
use decree_proto::txn::{
    Abort, AbortReason, Commit, CoordinatorState, QueryTxn, TxnOutcome, TxnStateReply, TxnStatus,
};
use decree_proto::{ErrorResponse, Request, Response};
use decree_types::{HlcTimestamp, NodeId, Term, TxnId};

fn status(txn: u128, read_ts: HlcTimestamp) -> Request {
    Request::TxnStatus(TxnStatus { txn_id: TxnId(txn), read_ts })
}

fn query(txn: u128) -> Request {
    Request::QueryTxn(QueryTxn {
        txn_id: TxnId(txn),
        read_ts: HlcTimestamp::ZERO,
        push_above: None,
    })
}

fn state(txn: u128, state: CoordinatorState) -> decree_coordinator::Reply {
    Ok(Response::TxnState(TxnStateReply { txn_id: TxnId(txn), state }))
}

fn start(txn: u128, read_ts: HlcTimestamp) -> CoordinatorCommand {
    CoordinatorCommand::StartCommit { txn_id: TxnId(txn), read_ts, participants: vec![G1, G2] }
}

fn decide(txn: u128, decision: Decision) -> CoordinatorCommand {
    CoordinatorCommand::Decide { txn_id: TxnId(txn), decision, answer: Answer::Outcome }
}

/// Applies `command` as the next entry, stamped with a fresh reading of the harness clock.
fn apply(h: &mut H, command: CoordinatorCommand) -> Option<decree_coordinator::Reply> {
    let at = h.clock.now();
    h.apply(at, command)
}

#[test]
fn rec4_every_row_of_the_answer_table_for_txn_status_and_query_txn() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let aborted = |reason| TxnOutcome::Aborted { reason, retryable: true };

    // Row: COMMITTED{C}, as a record and as a stub.
    let (commit_ts, _) = commit_through_decision(&mut h, 1);
    assert_eq!(
        h.request(CLIENT, status(1, read_ts)),
        Some(outcome(1, TxnOutcome::Committed { commit_ts }))
    );
    assert_eq!(
        h.request(CLIENT, query(1)),
        Some(state(1, CoordinatorState::Committed { commit_ts }))
    );
    apply(&mut h, CoordinatorCommand::RecordAcks { acks: vec![(TxnId(1), G1), (TxnId(1), G2)] });
    h.commit_proposals(); // the Compact the leader proposed
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Stub { .. })));
    assert_eq!(
        h.request(CLIENT, status(1, read_ts)),
        Some(outcome(1, TxnOutcome::Committed { commit_ts }))
    );
    assert_eq!(
        h.request(CLIENT, query(1)),
        Some(state(1, CoordinatorState::Committed { commit_ts }))
    );
    take(&mut h);

    // Row: ABORTED (a decided record; tombstones and stubs below).
    apply(&mut h, start(2, read_ts));
    apply(&mut h, decide(2, Decision::Abort { reason: AbortReason::ClientRollback }));
    take(&mut h);
    assert_eq!(
        h.request(CLIENT, status(2, read_ts)),
        Some(outcome(
            2,
            TxnOutcome::Aborted { reason: AbortReason::ClientRollback, retryable: false }
        ))
    );
    assert_eq!(h.request(CLIENT, query(2)), Some(state(2, CoordinatorState::Aborted)));

    // Row: PREPARING with a live attempt before its deadline → Pending, nothing proposed.
    let client = admit_later(&mut h, commit_txn(3, read_ts));
    let started = take(&mut h);
    h.effects.push(Effect::Propose { command: started.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    assert_eq!(admit_reply(&mut h, status(3, read_ts)), outcome(3, TxnOutcome::Pending));
    assert_eq!(admit_reply(&mut h, query(3)), state(3, CoordinatorState::Pending));
    assert!(take(&mut h).is_empty());

    // Row: PREPARING past the deadline (timer not run yet) → Decide(ABORT), answered after
    // it applied; the attempt's own client learns the same outcome.
    h.now_ns += 6_000 * MS;
    let (to, admission) = h.admit(CLIENT, query(3));
    let Admission::Propose { command, on_lost } = admission else { panic!("expected a proposal") };
    assert_eq!(
        command,
        CoordinatorCommand::Decide {
            txn_id: TxnId(3),
            decision: Decision::Abort { reason: AbortReason::PrepareTimeout },
            answer: Answer::TxnState
        }
    );
    assert!(matches!(on_lost, Err(ErrorResponse::Unavailable { .. })));
    h.effects.push(Effect::Propose { command, waiter: Some((to, on_lost)) });
    let (replies, phase_two) = commit(&mut h);
    assert_eq!(
        replies,
        vec![
            (to, state(3, CoordinatorState::Aborted)),
            (client, outcome(3, aborted(AbortReason::PrepareTimeout))),
        ]
    );
    assert_eq!(phase_two.sends.len(), 2, "Abort to both participants");

    // Row: PREPARING without a live attempt (a record of an earlier leader) → Decide(ABORT).
    apply(&mut h, start(4, read_ts));
    take(&mut h);
    assert_eq!(
        h.request(CLIENT, status(4, read_ts)),
        Some(outcome(4, aborted(AbortReason::CoordinatorFailover)))
    );
    assert!(matches!(h.machine.log().get(TxnId(4)), Some(Record::Decided { .. })));
    take(&mut h);

    // Row: absent, StartCommit in flight → Pending.
    admit_later(&mut h, commit_txn(5, read_ts));
    take(&mut h);
    assert_eq!(admit_reply(&mut h, status(5, read_ts)), outcome(5, TxnOutcome::Pending));
    assert_eq!(admit_reply(&mut h, query(5)), state(5, CoordinatorState::Pending));

    // Row: absent otherwise → Tombstone proposed with the request as waiter, answered once
    // applied (presumed abort, INV-A5).
    let (to, admission) = h.admit(CLIENT, status(6, read_ts));
    let Admission::Propose { command, on_lost } = admission else { panic!("expected a tombstone") };
    assert_eq!(
        command,
        CoordinatorCommand::Tombstone {
            txn_id: TxnId(6),
            reason: AbortReason::PresumedAbort,
            answer: Answer::Outcome
        }
    );
    assert_eq!(on_lost, outcome(6, TxnOutcome::Ambiguous));
    assert!(h.machine.log().get(TxnId(6)).is_none(), "nobody is told before the tombstone applied");
    h.effects.push(Effect::Propose { command, waiter: Some((to, on_lost)) });
    let (replies, _) = commit(&mut h);
    assert_eq!(replies, vec![(to, outcome(6, aborted(AbortReason::PresumedAbort)))]);
    assert_eq!(h.request(CLIENT, query(7)), Some(state(7, CoordinatorState::Aborted)));
    assert!(matches!(h.machine.log().get(TxnId(7)), Some(Record::Tombstone { .. })));
    // ABORTED as a tombstone, again: answered from the record, nothing proposed.
    assert_eq!(admit_reply(&mut h, query(6)), state(6, CoordinatorState::Aborted));

    // Row: TxnStatus whose read_ts is older than max_txn_lifetime → Expired (D-5), never
    // Aborted; QueryTxn has no such row.
    let life = h.machine.config().max_txn_lifetime_ns();
    let old = HlcTimestamp::new(WALL0_NS - life - 1_000 * MS, 0);
    assert_eq!(admit_reply(&mut h, status(1, old)), outcome(1, TxnOutcome::Expired));
    assert_eq!(admit_reply(&mut h, status(99, old)), outcome(99, TxnOutcome::Expired));
    assert!(h.machine.log().get(TxnId(99)).is_none());
}

#[test]
fn inv_a5_a_late_decide_commit_after_a_presumed_abort_tombstone_never_applies() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    // A participant asks about a transaction nobody here knows: tombstone, Aborted.
    assert_eq!(h.request(CLIENT, query(1)), Some(state(1, CoordinatorState::Aborted)));
    // An old leader's StartCommit and Decide(COMMIT) arrive late in the log: both no-ops.
    assert_eq!(apply(&mut h, start(1, read_ts)), None);
    let p = prepare_ts(&h, 1);
    let late = apply(&mut h, decide(1, Decision::Commit { prepare_ts_max: p }));
    assert_eq!(
        late,
        Some(outcome(
            1,
            TxnOutcome::Aborted { reason: AbortReason::PresumedAbort, retryable: true }
        ))
    );
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Tombstone { .. })));
    assert!(take(&mut h).is_empty(), "no phase two for a tombstone");
    // A client retrying CommitTxn is told Aborted from the tombstone.
    assert_eq!(
        admit_reply(&mut h, commit_txn(1, read_ts)),
        outcome(1, TxnOutcome::Aborted { reason: AbortReason::PresumedAbort, retryable: true })
    );
}

#[test]
fn inv_a5_a_tombstone_proposed_before_start_commit_ends_the_attempt_with_aborted() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    // TxnStatus (say, from a client that lost its connection) races the CommitTxn.
    let (asker, admission) = h.admit(CLIENT, status(1, read_ts));
    let Admission::Propose { command: tombstone, on_lost } = admission else { panic!() };
    let client = admit_later(&mut h, commit_txn(1, read_ts));
    let started = take(&mut h);
    // Log order: Tombstone, then StartCommit.
    h.effects.push(Effect::Propose { command: tombstone, waiter: Some((asker, on_lost)) });
    h.effects.push(Effect::Propose { command: started.proposals[0].0.clone(), waiter: None });
    let (replies, rest) = commit(&mut h);
    let aborted =
        outcome(1, TxnOutcome::Aborted { reason: AbortReason::PresumedAbort, retryable: true });
    assert_eq!(replies, vec![(asker, aborted.clone()), (client, aborted)]);
    assert!(rest.is_empty());
    assert_eq!(h.machine.live_attempts(), 0);
    // Votes that arrive now are ignored: nothing can commit it.
    for (id, _, _) in &started.sends {
        h.respond(*id, NodeId(2), Ok(yes(1, prepare_ts(&h, 1))));
    }
    assert!(take(&mut h).is_empty());
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Tombstone { .. })));
}

#[test]
fn rec1_rec2_a_new_leader_aborts_preparing_records_and_resends_unacknowledged_decisions() {
    // Phase 1: as a follower, apply an earlier leader's entries.
    let mut h = follower();
    let read_ts = fresh_read_ts(&h);
    apply(&mut h, start(1, read_ts)); // PREPARING
    apply(&mut h, start(2, read_ts));
    let c2 = prepare_ts(&h, 5);
    apply(&mut h, decide(2, Decision::Commit { prepare_ts_max: c2 })); // decided, G2 acked
    apply(&mut h, CoordinatorCommand::RecordAcks { acks: vec![(TxnId(2), G2)] });
    apply(&mut h, start(3, read_ts));
    apply(&mut h, decide(3, Decision::Abort { reason: AbortReason::PrepareTimeout }));
    apply(&mut h, CoordinatorCommand::RecordAcks { acks: vec![(TxnId(3), G1), (TxnId(3), G2)] });
    assert!(take(&mut h).is_empty(), "a follower drives nothing");
    let Some(Record::Decided { outcome: Outcome::Committed { commit_ts }, .. }) =
        h.machine.log().get(TxnId(2)).cloned()
    else {
        panic!("txn 2 committed")
    };

    // Phase 2: it becomes leader; at LeaderReady it runs recovery.
    h.become_ready_leader(Term(2));
    let out = take(&mut h);
    assert_eq!(
        out.proposals,
        vec![
            // REC-1, D-2: the undecided record is aborted.
            (decide(1, Decision::Abort { reason: AbortReason::CoordinatorFailover }), None),
            // Its Compact was lost with the old leader: proposed again.
            (CoordinatorCommand::Compact { txn_ids: vec![TxnId(3)] }, None),
        ]
    );
    // REC-2: the committed record's unacknowledged participant gets Commit{C} again.
    assert_eq!(
        out.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, Request::Commit(Commit { txn_id: TxnId(2), commit_ts }))]
    );
    assert!(h.clock.hlc().last() >= commit_ts, "HLC-4: the Commit's envelope clock is >= C");

    // Phase 3: the abort applies; Abort goes to every listed participant.
    for (command, _) in out.proposals {
        h.effects.push(Effect::Propose { command, waiter: None });
    }
    let (_, after) = commit(&mut h);
    let abort = Request::Abort(Abort { txn_id: TxnId(1) });
    assert_eq!(
        after.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, abort.clone()), (G2, abort)]
    );
    assert!(matches!(h.machine.log().get(TxnId(3)), Some(Record::Stub { .. })));
    let in_doubt = h.machine.in_doubt(h.clock.hlc().last());
    assert_eq!(in_doubt.len(), 2);
    assert!(in_doubt.iter().all(|r| r.blocking == BlockingReason::AwaitingAcks));
    assert_eq!(
        in_doubt.iter().find(|r| r.txn_id == TxnId(2)).map(|r| r.unacked.clone()),
        Some(vec![G1])
    );
}

#[test]
fn role_changes_drop_every_piece_of_driver_state() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(1, read_ts));
    let started = take(&mut h);
    h.effects.push(Effect::Propose { command: started.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    let (_, phase_two) = commit_through_decision(&mut h, 2);
    assert_eq!((h.machine.live_attempts(), h.machine.phase_two_in_flight()), (1, 1));

    // Leadership is lost: attempts, retransmissions and timers are gone.
    h.become_follower(Term(2), Some(NodeId(2)));
    assert_eq!((h.machine.live_attempts(), h.machine.phase_two_in_flight()), (0, 0));
    assert_eq!(h.machine.poll_timeout(), None);
    // Late answers to the old leader's requests are ignored.
    for (id, _, _) in started.sends.iter().chain(&phase_two.sends) {
        h.respond(*id, NodeId(2), Ok(yes(1, prepare_ts(&h, 1))));
        h.respond(*id, NodeId(2), Ok(ack(2)));
    }
    assert!(take(&mut h).is_empty());
    // Replicated state is untouched by the role change.
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Preparing { .. })));

    // Leading again, it rebuilds from the log alone (REC-1, REC-2).
    h.become_ready_leader(Term(3));
    let out = take(&mut h);
    assert_eq!(
        out.proposals,
        vec![(decide(1, Decision::Abort { reason: AbortReason::CoordinatorFailover }), None)]
    );
    assert_eq!(out.sends.len(), 2, "Commit{{C}} to both participants of txn 2");
}

#[test]
fn d3_expire_scan_removes_tombstones_and_stubs_after_max_txn_lifetime() {
    let mut h = leader();
    assert_eq!(h.request(CLIENT, query(1)), Some(state(1, CoordinatorState::Aborted)));
    take(&mut h);
    let scan_ns = h.machine.config().expire_scan_interval_ms * MS;
    assert_eq!(h.machine.poll_timeout(), Some(scan_ns));
    // The first scan finds nothing old enough.
    assert!(h.advance_to(scan_ns));
    assert!(take(&mut h).proposals.is_empty());
    // After max_txn_lifetime the next scan proposes Expire; apply re-checks and removes.
    let life_ns = h.machine.config().max_txn_lifetime_ns();
    let mut expired = false;
    while !expired {
        let next = h.machine.poll_timeout().expect("the scan is periodic");
        assert!(next <= scan_ns + life_ns + 2 * scan_ns);
        h.advance_to(next);
        let out = take(&mut h);
        if let Some((command, _)) = out.proposals.first() {
            assert_eq!(*command, CoordinatorCommand::Expire { txn_ids: vec![TxnId(1)] });
            h.effects.push(Effect::Propose { command: command.clone(), waiter: None });
            commit(&mut h);
            expired = true;
        }
    }
    assert!(h.machine.log().is_empty());
}

#[test]
fn cluster_status_lists_in_doubt_transactions_oldest_first_with_their_blocking_reason() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    // Awaiting acks: decided, phase two not acknowledged.
    commit_through_decision(&mut h, 1);
    h.now_ns += 3_000 * MS;
    h.clock.set_wall_ns(WALL0_NS + 3_000 * MS);
    // Awaiting votes: StartCommit applied, votes missing.
    admit_later(&mut h, commit_txn(2, read_ts));
    let started = take(&mut h);
    h.effects.push(Effect::Propose { command: started.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    // Awaiting votes, StartCommit not applied yet.
    admit_later(&mut h, commit_txn(3, read_ts));
    take(&mut h);
    h.now_ns += 1_000 * MS;
    h.clock.set_wall_ns(WALL0_NS + 4_000 * MS);

    let list =
        h.machine.in_doubt(h.clock.hlc().last().max(HlcTimestamp::new(WALL0_NS + 4_000 * MS, 0)));
    let summary: Vec<(TxnId, BlockingReason, Vec<_>)> =
        list.iter().map(|r| (r.txn_id, r.blocking, r.participants.clone())).collect();
    assert_eq!(
        summary,
        vec![
            (TxnId(1), BlockingReason::AwaitingAcks, vec![G1, G2]),
            (TxnId(2), BlockingReason::AwaitingVotes, vec![G1, G2]),
            (TxnId(3), BlockingReason::AwaitingVotes, vec![G1, G2]),
        ]
    );
    let ages: Vec<u64> = list.iter().map(|r| r.age_ms).collect();
    assert!((3_990..=4_000).contains(&ages[0]), "{ages:?}");
    assert!((990..=1_000).contains(&ages[1]) && (990..=1_000).contains(&ages[2]), "{ages:?}");

    let reply = admit_reply(&mut h, Request::ClusterStatus(ClusterStatus { in_doubt_max: 2 }));
    let Ok(Response::ClusterStatus(status)) = reply else { panic!("expected a status") };
    assert_eq!(status.validate(), Ok(()));
    assert_eq!(status.in_doubt.len(), 2);
    assert_eq!(status.in_doubt_omitted, 1);
    assert_eq!(status.in_doubt[0].txn_id, TxnId(1));
    assert_eq!(status.in_doubt[0].coord_group, COORD);
}

#[test]
fn snapshot_encode_restore_round_trips_exactly_and_bad_bytes_are_refused() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    commit_through_decision(&mut h, 1);
    assert_eq!(h.request(CLIENT, query(2)), Some(state(2, CoordinatorState::Aborted)));
    apply(&mut h, start(3, read_ts));
    take(&mut h);

    let bytes = CoordinatorGroup::encode_snapshot(&h.machine.snapshot());
    let mut other = machine();
    assert_ne!(other.digest(), h.machine.digest());
    other.restore(&bytes).expect("a snapshot restores");
    assert_eq!(other.digest(), h.machine.digest());
    assert_eq!(other.snapshot(), h.machine.snapshot());
    assert_eq!(CoordinatorGroup::encode_snapshot(&other.snapshot()), bytes);
    // The digest is a function of replicated state only: driver state does not count.
    assert!(h.machine.live_attempts() + h.machine.phase_two_in_flight() > 0);

    // Corrupt or foreign bytes: refused, state unchanged.
    let before = other.digest();
    assert!(other.restore(&[]).is_err());
    assert!(other.restore(&[9, 1, 2, 3]).is_err());
    assert!(other.restore(&bytes[..bytes.len() / 2]).is_err());
    assert_eq!(other.digest(), before);

    // Two replicas that apply the same entries agree (digest), whatever their role.
    let mut follower_h = follower();
    let mut leader_h = leader();
    for h in [&mut follower_h, &mut leader_h] {
        let at = HlcTimestamp::new(WALL0_NS, 5);
        h.apply(at, start(7, read_ts));
        h.apply(at.next(), decide(7, Decision::Commit { prepare_ts_max: at }));
        h.apply(
            at.next().next(),
            CoordinatorCommand::Tombstone {
                txn_id: TxnId(8),
                reason: AbortReason::PresumedAbort,
                answer: Answer::TxnState,
            },
        );
    }
    assert_eq!(follower_h.machine.digest(), leader_h.machine.digest());
}

#[test]
fn fetch_range_map_reports_the_bootstrap_map_and_learned_leaders() {
    let mut h = leader();
    // A vote from n2 teaches the leader of G1.
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(1, read_ts));
    let started = take(&mut h);
    h.respond(started.to(G1)[0], NodeId(2), Ok(yes(1, prepare_ts(&h, 1))));
    let fetch = Request::FetchRangeMap(decree_proto::admin::FetchRangeMap { known_version: 0 });
    let Ok(Response::RangeMap(map)) = admit_reply(&mut h, fetch) else { panic!("expected a map") };
    assert_eq!(map.validate(), Ok(()));
    assert_eq!(map.ranges.len(), 2);
    assert_eq!(map.ranges[0].1, G1);
    assert_eq!(map.nodes.len(), 3);
    let leader_of = |g| map.leaders.iter().find(|l| l.group == g).and_then(|l| l.leader);
    assert_eq!(
        (leader_of(G1), leader_of(G2), leader_of(COORD)),
        (Some(NodeId(2)), None, Some(NodeId(1)))
    );
}

#[test]
fn replace_cluster_map_is_a_replicated_compare_and_set() {
    let mut h = follower();
    let next = cluster_map(vec![COORD, decree_types::GroupId(11)]);
    apply(&mut h, CoordinatorCommand::ReplaceClusterMap { expected_version: 5, map: next.clone() });
    assert_eq!(h.machine.cluster_map().version(), 1, "stale version: refused");
    apply(&mut h, CoordinatorCommand::ReplaceClusterMap { expected_version: 1, map: next });
    assert_eq!(h.machine.cluster_map().version(), 2);
    assert_eq!(h.machine.cluster_map().coordinator_groups().len(), 2);
}
