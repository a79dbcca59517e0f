//! The normal path of two-phase commit at the coordinator (protocol.md §3.2, C-1..C-7;
//! commit-protocol.md §4.1-§4.8), phase by phase, with exact effects.

mod common;

use common::*;
use decree_coordinator::{Answer, CoordinatorCommand, Decision, Outcome, Record};
use decree_host::{ReplicatedMachine, RoleEvent};
use decree_proto::txn::{
    Abort, AbortReason, Commit, NoReason, Prepare, Redirect, TxnOutcome, Vote, VoteReply,
};
use decree_proto::{ErrorResponse, Request, Response};
use decree_types::{HlcTimestamp, NodeId, Term, TxnId};

#[test]
fn c1_c2_c3_c5_c6_c7_happy_path_commit_with_exact_effects() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);

    // Phase 1 (C-1): StartCommit proposed and Prepare sent to both groups, in parallel.
    let client = admit_later(&mut h, commit_txn(1, read_ts));
    let out = take(&mut h);
    assert_eq!(
        out.proposals,
        vec![(
            CoordinatorCommand::StartCommit {
                txn_id: TxnId(1),
                read_ts,
                participants: vec![G1, G2]
            },
            None
        )]
    );
    assert_eq!(out.sends.len(), 2);
    for (i, group) in [G1, G2].into_iter().enumerate() {
        let (_, to, Request::Prepare(Prepare { txn_id, coord_group, read_ts: r, writes, .. })) =
            &out.sends[i]
        else {
            panic!("expected a Prepare, got {:?}", out.sends[i]);
        };
        assert_eq!(
            (*to, *txn_id, *coord_group, *r, writes.len()),
            (group, TxnId(1), COORD, read_ts, 1)
        );
    }
    assert!(out.replies.is_empty() && out.hints.is_empty());

    // StartCommit applies: the record is PREPARING, nobody is answered yet.
    h.effects
        .push(decree_host::Effect::Propose { command: out.proposals[0].0.clone(), waiter: None });
    let (replies, rest) = commit(&mut h);
    assert!(replies.is_empty() && rest.is_empty());
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Preparing { .. })));

    // Votes: the first Yes decides nothing; the second proposes Decide(COMMIT) with the
    // client as its waiter (C-3, C-5).
    let p1 = prepare_ts(&h, 3);
    let p2 = prepare_ts(&h, 7);
    h.respond(out.sends[0].0, NodeId(2), Ok(yes(1, p1)));
    assert!(take(&mut h).is_empty());
    h.respond(out.sends[1].0, NodeId(3), Ok(yes(1, p2)));
    let decide = take(&mut h);
    assert_eq!(
        decide.proposals,
        vec![(
            CoordinatorCommand::Decide {
                txn_id: TxnId(1),
                decision: Decision::Commit { prepare_ts_max: p2 },
                answer: Answer::Outcome
            },
            Some(client)
        )]
    );
    assert!(decide.replies.is_empty(), "C-5: no answer before Decide applied");

    // Decide applies: the client learns Committed{C} with C = max(P..., clock) (C-2), and
    // Commit{C} goes to every participant (C-6).
    h.effects.push(decree_host::Effect::Propose {
        command: decide.proposals[0].0.clone(),
        waiter: Some((client, outcome(1, TxnOutcome::Ambiguous))),
    });
    let clock_before = h.clock.hlc().last();
    let (replies, phase_two) = commit(&mut h);
    let commit_ts = match &replies[..] {
        [(to, Ok(Response::Outcome(o)))] if *to == client => match o.outcome {
            TxnOutcome::Committed { commit_ts } => commit_ts,
            other => panic!("expected Committed, got {other:?}"),
        },
        other => panic!("expected one reply to the client, got {other:?}"),
    };
    assert!(commit_ts >= p2 && commit_ts >= p1, "C-2: C >= every P");
    assert!(commit_ts > read_ts, "INV-A2: C > read_ts");
    assert!(commit_ts > clock_before, "C-2: C is a fresh reading of the coordinator's clock");
    assert_eq!(h.machine.live_attempts(), 0, "the attempt ended");
    let expected = Request::Commit(Commit { txn_id: TxnId(1), commit_ts });
    assert_eq!(
        phase_two.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, expected.clone()), (G2, expected)]
    );
    assert!(phase_two.proposals.is_empty());

    // Acks within one batch window share one RecordAcks entry (C-7), whose apply proposes
    // Compact: the record becomes an outcome stub (REC-7(a), D-4).
    h.respond(phase_two.sends[0].0, NodeId(2), Ok(ack(1)));
    h.respond(phase_two.sends[1].0, NodeId(3), Ok(ack(1)));
    assert!(take(&mut h).is_empty(), "acks wait for the batch");
    let now = h.now_ns;
    assert!(h.advance_to(now + MS));
    let flush = take(&mut h);
    assert_eq!(
        flush.proposals,
        vec![(CoordinatorCommand::RecordAcks { acks: vec![(TxnId(1), G1), (TxnId(1), G2)] }, None)]
    );
    for (command, _) in flush.proposals {
        h.effects.push(decree_host::Effect::Propose { command, waiter: None });
    }
    let (_, rest) = commit(&mut h);
    assert!(rest.is_empty());
    assert_eq!(
        h.machine.log().get(TxnId(1)),
        Some(&Record::Stub {
            outcome: Outcome::Committed { commit_ts },
            created_at: h.machine.log().get(TxnId(1)).expect("stub").created_at()
        })
    );
    assert_eq!(h.machine.phase_two_in_flight(), 0);
    assert!(h.machine.in_doubt(h.clock.hlc().last()).is_empty());
}

#[test]
fn c4_a_no_vote_aborts_at_once_and_abort_goes_to_every_participant() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let client = admit_later(&mut h, commit_txn(2, read_ts));
    let start = take(&mut h);
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    commit(&mut h);

    // G1 refuses; G2 has not answered. The abort does not wait for it.
    let no = Ok(Response::Vote(VoteReply {
        txn_id: TxnId(2),
        vote: Vote::No { reason: NoReason::WriteTooOld },
    }));
    h.respond(start.to(G1)[0], NodeId(2), Ok(no));
    let out = take(&mut h);
    let reason = AbortReason::VotedNo { group: G1, reason: NoReason::WriteTooOld };
    assert_eq!(
        out.proposals,
        vec![(
            CoordinatorCommand::Decide {
                txn_id: TxnId(2),
                decision: Decision::Abort { reason },
                answer: Answer::Outcome
            },
            Some(client)
        )]
    );
    h.effects.push(decree_host::Effect::Propose {
        command: out.proposals[0].0.clone(),
        waiter: Some((client, outcome(2, TxnOutcome::Ambiguous))),
    });
    let (replies, phase_two) = commit(&mut h);
    assert_eq!(
        replies,
        vec![(client, outcome(2, TxnOutcome::Aborted { reason, retryable: true }))]
    );
    // C-4: Abort to all participants, including the one that never voted.
    let abort = Request::Abort(Abort { txn_id: TxnId(2) });
    assert_eq!(
        phase_two.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, abort.clone()), (G2, abort)]
    );
    // A late Yes from G2 changes nothing.
    h.respond(start.to(G2)[0], NodeId(3), Ok(yes(2, prepare_ts(&h, 1))));
    assert!(take(&mut h).is_empty());
}

#[test]
fn c4_prepare_timeout_aborts_after_retransmitting_prepare_with_backoff() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let client = admit_later(&mut h, commit_txn(3, read_ts));
    let start = take(&mut h);
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    h.respond(start.to(G1)[0], NodeId(2), Ok(yes(3, prepare_ts(&h, 1))));
    assert!(take(&mut h).is_empty());

    // Retransmission to the silent group only: 200 ms, then 400 ms later.
    assert_eq!(h.machine.poll_timeout(), Some(200 * MS));
    assert!(h.advance_to(200 * MS));
    let resend = take(&mut h);
    assert_eq!(resend.sends.len(), 1);
    assert!(
        matches!(&resend.sends[0], (_, g, Request::Prepare(p)) if *g == G2 && p.txn_id == TxnId(3))
    );
    assert!(!h.advance_to(500 * MS));
    assert!(h.advance_to(600 * MS));
    assert_eq!(take(&mut h).to(G2).len(), 1);

    // prepare_timeout (5 s): Decide(ABORT, PrepareTimeout) with the client as waiter.
    let mut fired = false;
    while h.now_ns < 5_000 * MS {
        let next = h.machine.poll_timeout().expect("a deadline is set");
        fired |= h.advance_to(next);
        let out = take(&mut h);
        if let Some((command, waiter)) = out.proposals.first() {
            assert_eq!(h.now_ns, 5_000 * MS, "the abort comes at the deadline, not before");
            assert_eq!(
                *command,
                CoordinatorCommand::Decide {
                    txn_id: TxnId(3),
                    decision: Decision::Abort { reason: AbortReason::PrepareTimeout },
                    answer: Answer::Outcome
                }
            );
            assert_eq!(*waiter, Some(client));
            h.effects.push(decree_host::Effect::Propose {
                command: command.clone(),
                waiter: Some((client, outcome(3, TxnOutcome::Ambiguous))),
            });
        }
    }
    assert!(fired);
    let (replies, phase_two) = commit(&mut h);
    assert_eq!(
        replies,
        vec![(
            client,
            outcome(
                3,
                TxnOutcome::Aborted { reason: AbortReason::PrepareTimeout, retryable: true }
            )
        )]
    );
    assert_eq!(phase_two.to(G1).len() + phase_two.to(G2).len(), 2);
}

#[test]
fn c6_commit_is_retransmitted_until_acked_then_compacted_and_a_late_ack_is_harmless() {
    let mut h = leader();
    let (commit_ts, phase_two) = commit_through_decision(&mut h, 4);
    let first_g1 = phase_two.to(G1)[0];
    let t0 = h.now_ns;

    // Nobody acks: both get Commit{C} again after 200 ms.
    assert!(h.advance_to(t0 + 200 * MS));
    let again = take(&mut h);
    let commit_req = Request::Commit(Commit { txn_id: TxnId(4), commit_ts });
    assert_eq!(
        again.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, commit_req.clone()), (G2, commit_req.clone())]
    );
    // G1 acks the retransmission; the next round (400 ms later) goes to G2 only.
    h.respond(again.to(G1)[0], NodeId(2), Ok(ack(4)));
    assert!(h.advance_to(t0 + 201 * MS), "ack batch flushed");
    let flush = take(&mut h);
    assert_eq!(flush.proposals.len(), 1);
    for (command, _) in flush.proposals {
        h.effects.push(decree_host::Effect::Propose { command, waiter: None });
    }
    let (_, rest) = commit(&mut h);
    assert!(rest.is_empty(), "not every participant acked: no Compact (INV-A6)");
    assert!(matches!(h.machine.log().get(TxnId(4)), Some(Record::Decided { .. })));
    assert!(h.advance_to(t0 + 600 * MS));
    let round = take(&mut h);
    assert_eq!(round.sends.len(), 1);
    assert_eq!(round.to(G2).len(), 1);

    // G2's participant was failing over: it redirects, then acks at the new leader.
    h.respond(
        round.sends[0].0,
        NodeId(3),
        Ok(Ok(Response::Redirect(Redirect { leader: Some(NodeId(1)) }))),
    );
    let follow = take(&mut h);
    assert_eq!(follow.hints, vec![(G2, NodeId(1))]);
    assert_eq!(follow.sends.len(), 1);
    assert_eq!(follow.sends[0].2, commit_req);
    h.respond(follow.sends[0].0, NodeId(1), Ok(ack(4)));
    let now = h.now_ns;
    assert!(h.advance_to(now + MS));
    let flush = take(&mut h);
    assert_eq!(
        flush.proposals,
        vec![(CoordinatorCommand::RecordAcks { acks: vec![(TxnId(4), G2)] }, None)]
    );
    for (command, _) in flush.proposals {
        h.effects.push(decree_host::Effect::Propose { command, waiter: None });
    }
    let (_, rest) = commit(&mut h);
    assert!(rest.is_empty());
    assert!(matches!(h.machine.log().get(TxnId(4)), Some(Record::Stub { .. })));
    assert_eq!(h.machine.phase_two_in_flight(), 0);

    // A Commit retransmitted before the compaction is acknowledged late: ignored.
    h.respond(first_g1, NodeId(2), Ok(ack(4)));
    assert!(take(&mut h).is_empty());
    // Even a RecordAcks for the stub (a duplicate entry) changes nothing.
    let digest = decree_host::ReplicatedMachine::digest(&h.machine);
    let at = h.clock.now();
    h.apply(at, CoordinatorCommand::RecordAcks { acks: vec![(TxnId(4), G1)] });
    assert!(take(&mut h).is_empty());
    assert_eq!(decree_host::ReplicatedMachine::digest(&h.machine), digest);
    // And no timer is left for it.
    assert!(
        h.machine.poll_timeout().is_some_and(|t| t > h.now_ns + 5_000 * MS),
        "only the expire scan"
    );
}

#[test]
fn c1_a_duplicate_commit_txn_attaches_and_never_commits_twice() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let first = admit_later(&mut h, commit_txn(5, read_ts));
    let start = take(&mut h);
    // The retry (a new connection) attaches: no second StartCommit, no second Prepare.
    let second = admit_later(&mut h, commit_txn(5, read_ts));
    assert!(take(&mut h).is_empty());
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    // Duplicate votes (a retransmitted Prepare answered twice) count once.
    let p = prepare_ts(&h, 2);
    h.respond(start.to(G1)[0], NodeId(2), Ok(yes(5, p)));
    h.respond(start.to(G2)[0], NodeId(2), Ok(yes(5, p)));
    let decide = take(&mut h);
    assert_eq!(decide.proposals.len(), 1);
    assert_eq!(decide.proposals[0].1, Some(first));
    h.effects.push(decree_host::Effect::Propose {
        command: decide.proposals[0].0.clone(),
        waiter: Some((first, outcome(5, TxnOutcome::Ambiguous))),
    });
    let (replies, _) = commit(&mut h);
    // Both connections learn the same outcome: the waiter from apply, the other by a reply.
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].1, replies[1].1);
    assert!(
        replies.iter().any(|(to, _)| *to == first) && replies.iter().any(|(to, _)| *to == second)
    );
    let committed = replies[0].1.clone();
    // A retry after the decision is answered from the record, at once.
    assert_eq!(admit_reply(&mut h, commit_txn(5, read_ts)), committed);
    assert!(take(&mut h).is_empty());
    // One record, one decision.
    assert_eq!(h.machine.log().len(), 1);
}

#[test]
fn redirects_are_followed_once_per_hint_and_peer_errors_wait_for_the_timer() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(6, read_ts));
    let start = take(&mut h);
    let (g1, g2) = (start.to(G1)[0], start.to(G2)[0]);

    // NotLeader with a hint: tell the host, resend at once.
    h.respond(
        g1,
        NodeId(2),
        Ok(Err(ErrorResponse::NotLeader { hint: Some(NodeId(3)), term: Term(4) })),
    );
    let out = take(&mut h);
    assert_eq!(out.hints, vec![(G1, NodeId(3))]);
    assert_eq!(out.sends.len(), 1);
    assert!(
        matches!(&out.sends[0], (_, g, Request::Prepare(p)) if *g == G1 && p.txn_id == TxnId(6))
    );
    // The same hint again (a confused replica): no ping-pong, the timer resends.
    h.respond(
        out.sends[0].0,
        NodeId(3),
        Ok(Ok(Response::Redirect(Redirect { leader: Some(NodeId(3)) }))),
    );
    assert!(take(&mut h).is_empty());
    // No hint, no route, or a refusal: nothing now.
    h.respond(g2, NodeId(2), Ok(Err(ErrorResponse::NotLeader { hint: None, term: Term(4) })));
    assert!(take(&mut h).is_empty());
    // An answer to an unknown request id is ignored.
    h.respond(decree_proto::RequestId(999), NodeId(2), Ok(yes(6, prepare_ts(&h, 1))));
    assert!(take(&mut h).is_empty());
    // The timer resends to both groups, still unanswered.
    assert!(h.advance_to(200 * MS));
    let resend = take(&mut h);
    assert_eq!((resend.to(G1).len(), resend.to(G2).len()), (1, 1));
}

#[test]
fn requests_before_the_leaders_noop_applied_are_held_then_answered() {
    let mut h = follower();
    h.role = decree_host::Role::Leader { term: Term(1), ready: false };
    h.on_role(RoleEvent::Leader { term: Term(1) });
    let fetch = Request::FetchRangeMap(decree_proto::admin::FetchRangeMap { known_version: 0 });
    let to = admit_later(&mut h, fetch);
    let read_ts = fresh_read_ts(&h);
    let status = admit_later(
        &mut h,
        Request::TxnStatus(decree_proto::txn::TxnStatus { txn_id: TxnId(9), read_ts }),
    );
    assert!(take(&mut h).is_empty(), "REC-1 step 1: nothing is answered before the no-op applied");
    h.role = decree_host::Role::Leader { term: Term(1), ready: true };
    h.on_role(RoleEvent::LeaderReady { term: Term(1) });
    let out = take(&mut h);
    let [(reply_to, Ok(Response::RangeMap(map)))] = &out.replies[..] else {
        panic!("expected the range map, got {:?}", out.replies);
    };
    assert_eq!(*reply_to, to);
    assert_eq!(map.validate(), Ok(()));
    assert_eq!(map.version, 1);
    assert_eq!(map.coordinator_group, COORD);
    let own = map.leaders.iter().find(|l| l.group == COORD).expect("own group listed");
    assert_eq!((own.leader, own.term), (Some(NodeId(1)), Term(1)));
    // The TxnStatus for an unknown transaction proposes a tombstone with itself as waiter.
    assert_eq!(
        out.proposals,
        vec![(
            CoordinatorCommand::Tombstone {
                txn_id: TxnId(9),
                reason: AbortReason::PresumedAbort,
                answer: Answer::Outcome
            },
            Some(status)
        )]
    );
}

#[test]
fn requests_a_coordinator_does_not_serve_are_refused_with_a_typed_error() {
    let mut h = leader();
    let get = Request::Get(decree_proto::txn::Get {
        key: decree_types::Key::from("a"),
        read_ts: HlcTimestamp::ZERO,
        uncertainty_limit: None,
    });
    assert!(matches!(admit_reply(&mut h, get), Err(ErrorResponse::InvalidArgument { .. })));
    // A CommitTxn naming a group that serves no range.
    let Request::CommitTxn(mut bad) = commit_txn(8, fresh_read_ts(&h)) else { unreachable!() };
    bad.per_group[1].group = COORD;
    assert!(matches!(
        admit_reply(&mut h, Request::CommitTxn(bad.clone())),
        Err(ErrorResponse::InvalidArgument { .. })
    ));
    // A CommitTxn listing a group twice.
    bad.per_group[1].group = G1;
    assert!(matches!(
        admit_reply(&mut h, Request::CommitTxn(bad)),
        Err(ErrorResponse::InvalidArgument { .. })
    ));
    // HLC-3: a read_ts far ahead of our clock is refused and starts nothing.
    let far = HlcTimestamp::new(WALL0_NS + 60_000 * MS, 0);
    assert!(matches!(
        admit_reply(&mut h, commit_txn(8, far)),
        Err(ErrorResponse::ClockRejected { .. })
    ));
    assert!(take(&mut h).is_empty());
    assert_eq!(h.machine.live_attempts(), 0);
}

#[test]
fn d3_d5_a_commit_txn_older_than_max_txn_lifetime_is_expired_or_aborted_through_a_tombstone() {
    let mut h = leader();
    let life_ns = h.machine.config().max_txn_lifetime_ns();
    // Already too old at admission: its outcome may be forgotten, so it is neither retried
    // nor presumed aborted (D-5).
    let ancient = HlcTimestamp::new(WALL0_NS - life_ns - 1_000 * MS, 0);
    assert_eq!(admit_reply(&mut h, commit_txn(10, ancient)), outcome(10, TxnOutcome::Expired));
    assert!(take(&mut h).is_empty());
    // Young enough at admission, too old when StartCommit applies (D-3).
    let old = HlcTimestamp::new(WALL0_NS - life_ns + 100 * MS, 0);
    let client = admit_later(&mut h, commit_txn(11, old));
    let start = take(&mut h);
    h.clock.set_wall_ns(WALL0_NS + 1_000 * MS);
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    // StartCommit is refused at apply; the leader proposes a tombstone with the client as its
    // waiter (the one-replica harness applies that follow-up at once), and the client is told
    // only once the tombstone applied (INV-A5).
    let (replies, out) = commit(&mut h);
    assert!(out.is_empty());
    assert_eq!(
        replies,
        vec![(
            client,
            outcome(11, TxnOutcome::Aborted { reason: AbortReason::TxnTooOld, retryable: true })
        )]
    );
    assert!(matches!(h.machine.log().get(TxnId(11)), Some(Record::Tombstone { .. })));
    // Late votes for it are ignored.
    h.respond(start.to(G1)[0], NodeId(2), Ok(yes(11, prepare_ts(&h, 1))));
    assert!(take(&mut h).is_empty());
}

#[test]
fn wrong_coordinator_group_refuses_client_requests_for_a_transaction_it_does_not_own() {
    let map = cluster_map(vec![COORD, decree_types::GroupId(11)]);
    let machine = decree_coordinator::CoordinatorGroup::new(COORD, Default::default(), map);
    let mut h = decree_host::testing::Harness::new(
        machine,
        COORD,
        NodeId(1),
        decree_types::limits::MAX_OFFSET_NS,
        WALL0_NS,
    );
    h.become_ready_leader(Term(1));
    let groups = [COORD, decree_types::GroupId(11)];
    let foreign = (0..100u128)
        .find(|t| decree_coordinator::coordinator_for(TxnId(*t), &groups) != Some(COORD))
        .expect("some txn is g11's");
    let own = (0..100u128)
        .find(|t| decree_coordinator::coordinator_for(TxnId(*t), &groups) == Some(COORD))
        .expect("some txn is ours");
    let read_ts = fresh_read_ts(&h);
    assert!(matches!(
        admit_reply(&mut h, commit_txn(foreign, read_ts)),
        Err(ErrorResponse::InvalidArgument { .. })
    ));
    let status =
        Request::TxnStatus(decree_proto::txn::TxnStatus { txn_id: TxnId(foreign), read_ts });
    assert!(matches!(admit_reply(&mut h, status), Err(ErrorResponse::InvalidArgument { .. })));
    admit_later(&mut h, commit_txn(own, read_ts));
}

#[test]
fn c3_votes_before_start_commit_applied_decide_when_it_applies() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let client = admit_later(&mut h, commit_txn(12, read_ts));
    let start = take(&mut h);
    // Both Yes votes arrive while StartCommit is still in flight: no Decide yet (the model's
    // guard: a decision needs the record).
    let p = prepare_ts(&h, 2);
    for (id, _, _) in &start.sends {
        h.respond(*id, NodeId(2), Ok(yes(12, p)));
    }
    assert!(take(&mut h).is_empty());
    // StartCommit applies; the leader proposes Decide(COMMIT) from apply, with the client as
    // waiter; the one-replica harness applies it at once.
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    let (replies, phase_two) = commit(&mut h);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, client);
    assert!(matches!(
        &replies[0].1,
        Ok(Response::Outcome(o)) if matches!(o.outcome, TxnOutcome::Committed { commit_ts } if commit_ts >= p)
    ));
    assert_eq!(phase_two.sends.len(), 2);
}

#[test]
fn c4_a_deadline_passed_before_start_commit_applied_aborts_when_it_applies_without_spinning() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let client = admit_later(&mut h, commit_txn(13, read_ts));
    let start = take(&mut h);
    // The log is stuck for longer than prepare_timeout (no quorum, say).
    let mut t = 0;
    while t < 5_000 * MS {
        t = h.machine.poll_timeout().expect("deadline armed");
        h.advance_to(t);
        assert!(take(&mut h).proposals.is_empty(), "no Decide before StartCommit applied");
    }
    // The abort is wanted; no timer of the attempt fires again (no busy loop).
    assert!(h.machine.poll_timeout().is_some_and(|next| next > 5_000 * MS));
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    let (replies, _) = commit(&mut h);
    assert_eq!(
        replies,
        vec![(
            client,
            outcome(
                13,
                TxnOutcome::Aborted { reason: AbortReason::PrepareTimeout, retryable: true }
            )
        )]
    );
}

#[test]
fn limits_attempts_and_held_requests_are_bounded_with_busy() {
    use decree_coordinator::{CoordinatorConfig, CoordinatorGroup};
    let config = CoordinatorConfig { attempts_max: 1, held_requests_max: 1, ..Default::default() };
    let machine = CoordinatorGroup::new(COORD, config, cluster_map(vec![COORD]));
    let mut h = decree_host::testing::Harness::new(
        machine,
        COORD,
        NodeId(1),
        decree_types::limits::MAX_OFFSET_NS,
        WALL0_NS,
    );
    // Before the no-op applied: one request is held, the next is told to come back.
    h.role = decree_host::Role::Leader { term: Term(1), ready: false };
    h.on_role(RoleEvent::Leader { term: Term(1) });
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(1, read_ts));
    assert!(matches!(admit_reply(&mut h, commit_txn(2, read_ts)), Err(ErrorResponse::Busy { .. })));
    // Ready: the held CommitTxn starts the one attempt allowed; a second transaction is Busy,
    // a retry of the first still attaches.
    h.role = decree_host::Role::Leader { term: Term(1), ready: true };
    h.on_role(RoleEvent::LeaderReady { term: Term(1) });
    assert_eq!(take(&mut h).sends.len(), 2);
    assert_eq!(h.machine.live_attempts(), 1);
    assert!(matches!(admit_reply(&mut h, commit_txn(2, read_ts)), Err(ErrorResponse::Busy { .. })));
    admit_later(&mut h, commit_txn(1, read_ts));
}

#[test]
fn rec2_phase_two_beyond_its_bound_is_resumed_by_the_periodic_sweep() {
    use decree_coordinator::{CoordinatorConfig, CoordinatorGroup};
    let config = CoordinatorConfig { phase_two_max: 1, ..Default::default() };
    let machine = CoordinatorGroup::new(COORD, config, cluster_map(vec![COORD]));
    let mut h = decree_host::testing::Harness::new(
        machine,
        COORD,
        NodeId(1),
        decree_types::limits::MAX_OFFSET_NS,
        WALL0_NS,
    );
    h.become_ready_leader(Term(1));
    let (_, first) = commit_through_decision(&mut h, 1);
    assert_eq!(first.sends.len(), 2);
    // The second decision finds phase two full: no Commit yet.
    let (_, second) = commit_through_decision(&mut h, 2);
    assert!(second.sends.is_empty());
    // The first completes (acks applied, compacted).
    for (id, _, _) in &first.sends {
        h.respond(*id, NodeId(2), Ok(ack(1)));
    }
    let now = h.now_ns;
    h.advance_to(now + MS);
    commit(&mut h);
    assert!(matches!(h.machine.log().get(TxnId(1)), Some(Record::Stub { .. })));
    // The sweep (with the expire scan) picks the second up.
    let mut resumed = Vec::new();
    while resumed.is_empty() {
        let next = h.machine.poll_timeout().expect("timers armed");
        assert!(next <= 10_001 * MS);
        h.advance_to(next);
        resumed = take(&mut h).sends;
    }
    assert_eq!(resumed.len(), 2);
    assert!(resumed
        .iter()
        .all(|(_, _, r)| matches!(r, Request::Commit(c) if c.txn_id == TxnId(2))));
}

#[test]
fn snapshot_isolation_sends_no_read_spans() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    let Request::CommitTxn(mut commit) = commit_txn(14, read_ts) else { unreachable!() };
    commit.per_group[0].read_spans = vec![decree_types::KeyRange::bounded("a", "b")];
    commit.mode.isolation = decree_proto::txn::Isolation::Snapshot;
    admit_later(&mut h, Request::CommitTxn(commit.clone()));
    let out = take(&mut h);
    assert!(out
        .sends
        .iter()
        .all(|(_, _, r)| matches!(r, Request::Prepare(p) if p.read_spans.is_empty())));
    // Serializable keeps them (§6.1).
    commit.txn_id = TxnId(15);
    commit.mode.isolation = decree_proto::txn::Isolation::Serializable;
    admit_later(&mut h, Request::CommitTxn(commit));
    let out = take(&mut h);
    assert!(matches!(&out.sends[0].2, Request::Prepare(p) if p.read_spans.len() == 1));
}

#[test]
fn redirect_ping_pong_between_confused_replicas_is_cut_after_three_hops() {
    let mut h = leader();
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(16, read_ts));
    let mut id = take(&mut h).to(G1)[0];
    // n2 and n3 each name the other as leader (an election in progress).
    let mut follows = 0;
    for hint in [3, 2, 3, 2, 3] {
        let not_leader = ErrorResponse::NotLeader { hint: Some(NodeId(hint)), term: Term(2) };
        h.respond(id, NodeId(5 - hint), Ok(Err(not_leader)));
        let out = take(&mut h);
        match out.sends.first() {
            Some((next, _, _)) => {
                id = *next;
                follows += 1;
            }
            None => break,
        }
    }
    assert_eq!(follows, 3, "three redirects followed at once, then the timer's turn");
}

#[test]
fn c1_c6_a_new_participant_leader_seen_on_this_node_gets_what_is_missing_at_once() {
    let mut h = leader();
    // Txn 20 waits for G2's vote; txn 21 is decided and waits for both acks.
    let read_ts = fresh_read_ts(&h);
    admit_later(&mut h, commit_txn(20, read_ts));
    let start = take(&mut h);
    h.effects
        .push(decree_host::Effect::Propose { command: start.proposals[0].0.clone(), waiter: None });
    commit(&mut h);
    h.respond(start.to(G1)[0], NodeId(2), Ok(yes(20, prepare_ts(&h, 1))));
    assert!(take(&mut h).is_empty());
    let (commit_ts, _) = commit_through_decision(&mut h, 21);
    let deadline = h.machine.poll_timeout();

    // G2's new leader: its vote and its Commit are sent again now, not at the next timer.
    h.leader_seen(G2, NodeId(3));
    let resent = take(&mut h);
    let mut to_g2: Vec<_> = resent.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect();
    to_g2.sort_by_key(|(_, r)| matches!(r, Request::Commit(_)));
    assert!(matches!(&to_g2[0], (G2, Request::Prepare(p)) if p.txn_id == TxnId(20)), "{to_g2:?}");
    assert_eq!(to_g2[1], (G2, Request::Commit(Commit { txn_id: TxnId(21), commit_ts })));
    assert_eq!(to_g2.len(), 2, "nothing for G1, which voted and whose leader did not change");
    assert_eq!(h.machine.poll_timeout(), deadline, "the backoff timers are left as they are");

    // G1's new leader: only txn 21's Commit is missing there (txn 20's vote is in).
    h.leader_seen(G1, NodeId(2));
    let resent = take(&mut h);
    assert_eq!(
        resent.sends.iter().map(|(_, g, r)| (*g, r.clone())).collect::<Vec<_>>(),
        vec![(G1, Request::Commit(Commit { txn_id: TxnId(21), commit_ts }))]
    );

    // A follower replica drives nothing, so it resends nothing.
    let mut f = follower();
    f.leader_seen(G2, NodeId(3));
    assert!(take(&mut f).is_empty());
}
