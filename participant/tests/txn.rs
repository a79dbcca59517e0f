//! Prepare, commit, abort and 1PC at one participant group: P-6 (the vote is apply's answer),
//! P-8/P-9 idempotency, the P-9 tombstone, INV-A2, OPC-1/OPC-2 dedupe, D-3 expiry, and the
//! in-doubt queries of REC-3 and RI-3.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::*;
use decree_host::{Admission, Destination, Effect, PeerError};
use decree_participant::{ParticipantCommand, ParticipantConfig, TxnState};
use decree_proto::txn::{
    AbortReason, CoordinatorState, NoReason, QueryTxn, TxnOutcome, TxnStateReply, Vote,
};
use decree_proto::{ErrorResponse, Request, Response};
use decree_types::{ClientId, HlcTimestamp, NodeId, TxnId};

#[test]
fn p6_no_vote_before_apply() {
    let mut h = leader();
    let t = now(&mut h);
    let (_, admission) = h.admit(COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    // Admission proposes; it answers nothing and sends nothing.
    let Admission::Propose { command, on_lost } = admission else {
        panic!("a prepare is proposed, never answered at admission")
    };
    assert!(matches!(on_lost, Err(ErrorResponse::Unavailable { .. })), "lost: vote unknown");
    assert!(h.take_effects().is_empty());
    assert!(h.machine.state().txn(TxnId(1)).is_none());
    // The vote is apply's return value.
    let at = now(&mut h);
    let reply = h.apply(at, command);
    let Some(Ok(Response::Vote(v))) = reply else { panic!("apply answers the vote: {reply:?}") };
    assert!(matches!(v.vote, Vote::Yes { .. }));
    assert!(matches!(h.machine.state().txn(TxnId(1)).unwrap().state, TxnState::Prepared { .. }));
}

#[test]
fn p6_a_pending_conflict_no_is_also_a_vote_after_apply() {
    let mut h = leader();
    let t = now(&mut h);
    let _first = admit_proposal(&mut h, COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    let t = now(&mut h);
    let (_, admission) = h.admit(COORD_NODE, prepare_req(2, t, vec![put("k", "w")], vec![]));
    let Admission::Propose { command: ParticipantCommand::Prepare(cmd), .. } = admission else {
        panic!("even a No is proposed")
    };
    assert_eq!(cmd.refused, Some(NoReason::PendingPrepareConflict));
    let at = now(&mut h);
    let reply = h.apply(at, ParticipantCommand::Prepare(cmd));
    assert!(matches!(
        reply,
        Some(Ok(Response::Vote(v))) if v.vote == Vote::No { reason: NoReason::PendingPrepareConflict }
    ));
    assert_eq!(
        h.machine.state().txn(TxnId(2)).unwrap().state,
        TxnState::Rejected { reason: NoReason::PendingPrepareConflict }
    );
}

#[test]
fn p3_prepare_ts_is_above_read_ts_and_every_served_read() {
    let mut h = leader();
    let t = now(&mut h);
    // A read at a timestamp ahead of the leader's clock (within max_offset).
    let ahead = t.add_wall_ns(MAX_OFFSET_NS / 2);
    value(get(&mut h, "j", ahead, None));
    assert_eq!(h.machine.max_read_ts(), ahead);
    let p = yes(prepare(&mut h, 1, t, vec![put("j", "v")], vec![]));
    assert!(p > ahead && p > t, "TS-3: P {p} above max_read_ts {ahead} and read_ts {t}");
}

#[test]
fn duplicate_prepare_while_pending_gets_the_same_vote() {
    let mut h = leader();
    let t = now(&mut h);
    let req = prepare_req(1, t, vec![put("k", "v")], vec![]);
    let (first, admission) = h.admit(COORD_NODE, req.clone());
    let Admission::Propose { command, on_lost } = admission else { panic!() };
    let (second, admission) = h.admit(COORD_NODE, req.clone());
    assert!(is_later(&admission), "attached to the pending proposal, not proposed twice");
    h.effects.insert(0, Effect::Propose { command, waiter: Some((first, on_lost)) });
    let replies = h.commit_proposals();
    assert_eq!(replies.len(), 2);
    assert_eq!(answer_for(&replies, first), answer_for(&replies, second));
    // After apply a duplicate is answered from txn_table at admission (D-7).
    let (_, admission) = h.admit(COORD_NODE, req);
    let Admission::Reply(again) = admission else { panic!("answered from txn_table") };
    assert_eq!(Some(again), answer_for(&replies, first));
}

#[test]
fn p8_commit_makes_versions_at_c_and_is_idempotent() {
    let mut h = leader();
    let t = now(&mut h);
    let p = yes(prepare(&mut h, 1, t, vec![put("k", "v"), del("l")], vec![span("a", "b")]));
    let c = now(&mut h);
    assert!(c > p);
    commit_at(&mut h, 1, c);
    let state = h.machine.state();
    assert_eq!(state.txn(TxnId(1)).unwrap().state, TxnState::Committed { commit_ts: c });
    assert_eq!(state.mvcc().intent_count(), 0);
    assert_eq!(state.mvcc().read_lock_holders(), 0);
    assert_eq!(state.mvcc().versions(&k("k")).len(), 1);
    assert_eq!(state.mvcc().versions(&k("k"))[0].ts, c);
    assert_eq!(state.mvcc().versions(&k("l"))[0].value, None);
    // Again: acked at admission, nothing proposed, nothing changes.
    let digest = decree_host::ReplicatedMachine::digest(&h.machine);
    let (_, admission) = h.admit(COORD_NODE, commit_req(1, c));
    assert!(matches!(admission, Admission::Reply(Ok(Response::Ack(_)))));
    // And a duplicate CommitCmd at apply is a no-op.
    let at = now(&mut h);
    let reply = h.apply(at, ParticipantCommand::Commit { txn_id: TxnId(1), commit_ts: c });
    assert!(matches!(reply, Some(Ok(Response::Ack(_)))));
    assert_eq!(decree_host::ReplicatedMachine::digest(&h.machine), digest);
}

#[test]
fn p9_abort_removes_intents_and_is_idempotent() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![span("a", "b")]));
    abort(&mut h, 1);
    let state = h.machine.state();
    assert_eq!(state.txn(TxnId(1)).unwrap().state, TxnState::Aborted);
    assert_eq!(state.mvcc().intent_count(), 0);
    assert_eq!(state.mvcc().read_lock_holders(), 0);
    assert!(state.mvcc().versions(&k("k")).is_empty());
    let digest = decree_host::ReplicatedMachine::digest(&h.machine);
    abort(&mut h, 1);
    let at = now(&mut h);
    h.apply(at, ParticipantCommand::Abort { txn_id: TxnId(1) });
    assert_eq!(decree_host::ReplicatedMachine::digest(&h.machine), digest);
}

#[test]
fn p9_abort_of_an_unknown_txn_leaves_a_tombstone_and_a_late_prepare_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    abort(&mut h, 5);
    assert_eq!(h.machine.state().txn(TxnId(5)).unwrap().state, TxnState::Aborted);
    // The late prepare is answered from the tombstone at admission ...
    assert_eq!(
        prepare(&mut h, 5, t, vec![put("k", "v")], vec![]),
        Vote::No { reason: NoReason::AlreadyAborted }
    );
    // ... and a PrepareCmd already in the log votes No at apply (P-5 dedupe).
    let at = now(&mut h);
    let cmd = decree_participant::PrepareCmd {
        txn_id: TxnId(5),
        coord_group: COORD,
        read_ts: t,
        prepare_ts: at,
        writes: vec![put("k", "v")],
        read_spans: vec![],
        refused: None,
    };
    let reply = h.apply(at, ParticipantCommand::Prepare(cmd));
    assert!(matches!(
        reply,
        Some(Ok(Response::Vote(v))) if v.vote == Vote::No { reason: NoReason::AlreadyAborted }
    ));
    assert_eq!(h.machine.state().mvcc().intent_count(), 0);
}

#[test]
fn abort_of_a_rejected_txn_keeps_it_rejected() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    let t = now(&mut h);
    prepare(&mut h, 2, t, vec![put("k", "w")], vec![]);
    abort(&mut h, 2);
    assert_eq!(
        h.machine.state().txn(TxnId(2)).unwrap().state,
        TxnState::Rejected { reason: NoReason::IntentConflict }
    );
}

/// Runs `f`, which must stop the replica with a message naming `rule`.
fn assert_stops(rule: &str, f: impl FnOnce()) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    let payload = result.expect_err("the replica must stop");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(message.contains(rule), "stop message {message:?} should name {rule}");
}

#[test]
fn inv_a2_commit_without_a_yes_stops_the_replica_at_apply_and_is_refused_at_admission() {
    let mut h = leader();
    let t = now(&mut h);
    // Admission refuses it as bad input: nothing is proposed.
    let (_, admission) = h.admit(COORD_NODE, commit_req(9, t));
    assert!(matches!(admission, Admission::Reply(Err(ErrorResponse::InvalidArgument { .. }))));
    // A rejected txn too.
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    let t2 = now(&mut h);
    prepare(&mut h, 2, t2, vec![put("k", "w")], vec![]);
    let c = now(&mut h);
    let (_, admission) = h.admit(COORD_NODE, commit_req(2, c));
    assert!(matches!(admission, Admission::Reply(Err(ErrorResponse::InvalidArgument { .. }))));
    // At apply (a CommitCmd in the log) it is a protocol violation: the replica stops.
    for txn in [9u128, 2] {
        let mut replica = leader();
        if txn == 2 {
            let t = now(&mut replica);
            prepare(&mut replica, 2, t, vec![put("k", "w")], vec![]);
            abort(&mut replica, 2);
        }
        let at = now(&mut replica);
        assert_stops("INV-A2", || {
            replica.apply(at, ParticipantCommand::Commit { txn_id: TxnId(txn), commit_ts: at });
        });
    }
    // A second C for a committed txn is INV-A1.
    let c1 = commit(&mut h, 1);
    let c2 = now(&mut h);
    assert!(matches!(
        h.admit(COORD_NODE, commit_req(1, c2)).1,
        Admission::Reply(Err(ErrorResponse::InvalidArgument { .. }))
    ));
    assert_stops("INV-A1", || {
        h.apply(c2, ParticipantCommand::Commit { txn_id: TxnId(1), commit_ts: c2 });
    });
    let _ = c1;
}

#[test]
fn abort_of_a_committed_txn_is_refused_and_stops_the_replica_at_apply() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    commit(&mut h, 1);
    assert!(matches!(
        h.admit(COORD_NODE, abort_req(1)).1,
        Admission::Reply(Err(ErrorResponse::InvalidArgument { .. }))
    ));
    let at = now(&mut h);
    assert_stops("INV-A1", || {
        h.apply(at, ParticipantCommand::Abort { txn_id: TxnId(1) });
    });
}

// --- 1PC -----------------------------------------------------------------------------------------

#[test]
fn opc1_commit_local_writes_versions_at_c_equal_p_in_one_entry() {
    let mut h = leader();
    let t = now(&mut h);
    let index_before = h.last_index;
    let outcome = local(&mut h, 1, 1, 1, t, vec![put("k", "v")], vec![span("a", "c")]);
    let TxnOutcome::Committed { commit_ts } = outcome else { panic!("{outcome:?}") };
    assert_eq!(h.last_index.0, index_before.0 + 1, "one entry");
    assert!(commit_ts > t);
    let state = h.machine.state();
    assert_eq!(state.mvcc().intent_count(), 0, "no intents");
    assert_eq!(state.mvcc().versions(&k("k"))[0].ts, commit_ts);
    assert_eq!(state.txn(TxnId(1)).unwrap().state, TxnState::Committed { commit_ts });
}

#[test]
fn opc2_commit_local_is_deduplicated_by_session_and_txn_id() {
    let mut h = leader();
    let t = now(&mut h);
    let first = local(&mut h, 1, 7, 1, t, vec![put("k", "v")], vec![]);
    let index = h.last_index;
    // Same (client, seq, txn): the stored result, no new entry.
    assert_eq!(local(&mut h, 1, 7, 1, t, vec![put("k", "v")], vec![]), first);
    assert_eq!(h.last_index, index);
    // Same txn_id from another session: the stored result.
    assert_eq!(local(&mut h, 1, 8, 1, t, vec![put("k", "v")], vec![]), first);
    // Same (client, seq), another txn_id: the session's result (OPC-2).
    assert_eq!(local(&mut h, 2, 7, 1, t, vec![put("k", "v2")], vec![]), first);
    assert_eq!(h.machine.state().mvcc().versions(&k("k")).len(), 1, "committed once");
    // A duplicate already in the log is deduplicated at apply too.
    let at = now(&mut h);
    let cmd = decree_participant::CommitLocalCmd {
        txn_id: TxnId(1),
        client_id: ClientId(7),
        seq: 1,
        read_ts: t,
        commit_ts: at,
        writes: vec![put("k", "v")],
        read_spans: vec![],
        refused: None,
    };
    let reply = h.apply(at, ParticipantCommand::CommitLocal(cmd));
    assert!(matches!(reply, Some(Ok(Response::Outcome(o))) if o.outcome == first));
    assert_eq!(h.machine.state().mvcc().versions(&k("k")).len(), 1);
    // An older seq is refused.
    let t2 = now(&mut h);
    let _ = local(&mut h, 3, 7, 2, t2, vec![put("b", "x")], vec![]);
    let stale = h.request(CLIENT, local_req(4, 7, 1, t2, vec![put("b", "y")], vec![]));
    // seq 1 is below the session's 2: the txn_table has no txn 4, so it is refused.
    assert!(matches!(stale, Some(Err(ErrorResponse::InvalidArgument { .. }))), "{stale:?}");
}

#[test]
fn opc1_a_conflicting_commit_local_is_rejected_and_remembered() {
    let mut h = leader();
    let t = now(&mut h);
    write_1pc(&mut h, 1, vec![put("k", "new")]);
    let outcome = local(&mut h, 2, 2, 1, t, vec![put("k", "stale")], vec![]);
    assert_eq!(
        outcome,
        TxnOutcome::Aborted {
            reason: AbortReason::VotedNo { group: G, reason: NoReason::WriteTooOld },
            retryable: true
        }
    );
    assert_eq!(
        h.machine.state().txn(TxnId(2)).unwrap().state,
        TxnState::Rejected { reason: NoReason::WriteTooOld }
    );
    assert_eq!(h.machine.state().session(ClientId(2)).unwrap().outcome, outcome);
}

#[test]
fn opc1_a_2pc_prepare_conflicting_with_a_1pc_version_votes_no() {
    // Commit-protocol.md §7: the 1PC version is newer than the 2PC txn's read_ts.
    let mut h = leader();
    let t = now(&mut h);
    write_1pc(&mut h, 1, vec![put("k", "v")]);
    assert_eq!(
        prepare(&mut h, 2, t, vec![put("k", "w")], vec![]),
        Vote::No { reason: NoReason::WriteTooOld }
    );
}

// --- D-3 expiry ----------------------------------------------------------------------------------

#[test]
fn d3_expire_removes_final_entries_and_sessions_after_max_txn_lifetime_only() {
    let mut h = leader();
    let lifetime_ns = h.machine.config().max_txn_lifetime_ns();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    yes(prepare(&mut h, 2, t, vec![put("l", "v")], vec![]));
    abort(&mut h, 2);
    abort(&mut h, 3);
    local(&mut h, 4, 40, 1, t, vec![put("b", "v")], vec![]);
    let created = h.machine.state().txn(TxnId(3)).unwrap().created_at;
    let ids = vec![TxnId(1), TxnId(2), TxnId(3), TxnId(4)];
    // Not yet expired: nothing goes.
    let early = created.add_wall_ns(lifetime_ns);
    h.apply(
        early,
        ParticipantCommand::Expire { txn_ids: ids.clone(), client_ids: vec![ClientId(40)] },
    );
    assert_eq!(h.machine.state().txns().count(), 4);
    // Past the lifetime: final entries and the session go; the PREPARED one never does.
    let late = created.add_wall_ns(lifetime_ns + 1_000_000_000);
    h.apply(late, ParticipantCommand::Expire { txn_ids: ids, client_ids: vec![ClientId(40)] });
    let left: Vec<TxnId> = h.machine.state().txns().map(|(id, _)| *id).collect();
    assert_eq!(left, vec![TxnId(1)]);
    assert!(h.machine.state().session(ClientId(40)).is_none());
}

#[test]
fn d3_requests_older_than_max_txn_lifetime_are_rejected_at_apply() {
    let config = ParticipantConfig { max_txn_lifetime_ms: 1_000, ..config() };
    let mut h = leader_with(config);
    let old = now(&mut h);
    let at = old.add_wall_ns(2_000_000_000);
    let prepare = decree_participant::PrepareCmd {
        txn_id: TxnId(1),
        coord_group: COORD,
        read_ts: old,
        prepare_ts: at,
        writes: vec![put("k", "v")],
        read_spans: vec![],
        refused: None,
    };
    let reply = h.apply(at, ParticipantCommand::Prepare(prepare));
    assert!(matches!(
        reply,
        Some(Ok(Response::Vote(v))) if v.vote == Vote::No { reason: NoReason::TxnTooOld }
    ));
    let local = decree_participant::CommitLocalCmd {
        txn_id: TxnId(2),
        client_id: ClientId(1),
        seq: 1,
        read_ts: old,
        commit_ts: at,
        writes: vec![put("k", "v")],
        read_spans: vec![],
        refused: None,
    };
    let reply = h.apply(at, ParticipantCommand::CommitLocal(local));
    assert!(matches!(
        reply,
        Some(Ok(Response::Outcome(o)))
            if o.outcome == TxnOutcome::Aborted { reason: AbortReason::TxnTooOld, retryable: true }
    ));
}

#[test]
fn d3_the_leader_proposes_expire_for_old_entries_from_its_periodic_scan() {
    let config =
        ParticipantConfig { max_txn_lifetime_ms: 1_000, expire_scan_interval_ms: 500, ..config() };
    let mut h = leader_with(config);
    abort(&mut h, 1);
    let start = h.now_ns;
    h.advance_to(start + 2_000_000_000);
    let proposed = proposals(&h.take_effects());
    assert_eq!(
        proposed,
        vec![ParticipantCommand::Expire { txn_ids: vec![TxnId(1)], client_ids: vec![] }]
    );
}

// --- REC-3 / RI-3: asking the coordinator ---------------------------------------------------------

fn sent_queries(
    effects: &[Effect<decree_participant::ParticipantGroup>],
) -> Vec<(decree_proto::RequestId, QueryTxn)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { request_id, to, request: Request::QueryTxn(q) } => {
                assert_eq!(*to, Destination::LeaderOf(COORD), "asks the intent's coordinator");
                Some((*request_id, *q))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn rec3_a_leader_holding_a_prepared_txn_asks_its_coordinator_with_backoff_and_never_decides_alone()
{
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    h.take_effects();
    let start = h.now_ns;
    let after_ms = h.machine.config().in_doubt_query_after_ms * 1_000_000;
    // Nothing before in_doubt_query_after.
    h.advance_to(start + after_ms - 1);
    assert!(sent_queries(&h.take_effects()).is_empty());
    // Then a query; then backoff doubling.
    let mut sent_at = Vec::new();
    let mut last_id = None;
    for step in 1..=40u64 {
        h.advance_to(start + step * 1_000_000_000);
        let sent = sent_queries(&h.take_effects());
        if let Some((id, q)) = sent.first() {
            assert_eq!(q.txn_id, TxnId(1));
            assert_eq!(q.read_ts, t);
            sent_at.push(step);
            last_id = Some(*id);
        }
    }
    assert_eq!(sent_at, vec![2, 4, 8, 16, 32], "2 s, then exponential backoff");
    // Pending: nothing changes; the participant never decides alone.
    let reply = TxnStateReply { txn_id: TxnId(1), state: CoordinatorState::Pending };
    h.respond(last_id.unwrap(), NodeId(9), Ok(Ok(Response::TxnState(reply))));
    assert!(proposals(&h.take_effects()).is_empty());
    assert!(matches!(h.machine.state().txn(TxnId(1)).unwrap().state, TxnState::Prepared { .. }));
    // An unreachable coordinator: nothing changes either.
    h.advance_to(start + 64_000_000_000);
    let (id, _) = sent_queries(&h.take_effects())[0];
    h.respond(id, NodeId(9), Err(PeerError::NoRoute(COORD)));
    assert!(proposals(&h.take_effects()).is_empty());
    // Committed{C}: the decided outcome is applied.
    h.advance_to(start + 128_000_000_000);
    let (id, _) = sent_queries(&h.take_effects())[0];
    let c = now(&mut h);
    let reply =
        TxnStateReply { txn_id: TxnId(1), state: CoordinatorState::Committed { commit_ts: c } };
    h.respond(id, NodeId(9), Ok(Ok(Response::TxnState(reply))));
    let proposed = proposals(&h.effects);
    assert_eq!(proposed, vec![ParticipantCommand::Commit { txn_id: TxnId(1), commit_ts: c }]);
    h.commit_proposals();
    assert_eq!(
        h.machine.state().txn(TxnId(1)).unwrap().state,
        TxnState::Committed { commit_ts: c }
    );
    assert!(h.machine.in_doubt_queries().is_empty());
}

#[test]
fn rec3_an_aborted_answer_aborts_the_prepared_txn() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    let start = h.now_ns;
    h.advance_to(start + 2_000_000_000);
    let (id, _) = sent_queries(&h.take_effects())[0];
    let reply = TxnStateReply { txn_id: TxnId(1), state: CoordinatorState::Aborted };
    h.respond(id, NodeId(9), Ok(Ok(Response::TxnState(reply))));
    h.commit_proposals();
    assert_eq!(h.machine.state().txn(TxnId(1)).unwrap().state, TxnState::Aborted);
    assert_eq!(h.machine.state().mvcc().intent_count(), 0);
}

#[test]
fn rec3_a_new_leader_rearms_queries_for_every_prepared_txn() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    h.become_follower(term(2), Some(NodeId(2)));
    assert!(h.machine.in_doubt_queries().is_empty(), "leader-only state dropped");
    h.become_ready_leader(term(3));
    assert_eq!(h.machine.in_doubt_queries(), vec![TxnId(1)]);
}

#[test]
fn ri3_a_blocked_read_asks_the_coordinator_after_a_short_wait_and_is_answered_at_resolution() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("k", "v")], vec![]));
    let t = now(&mut h);
    let (read, admission) = h.admit(CLIENT, get_req("k", t, None));
    assert!(is_later(&admission));
    let start = h.now_ns;
    let wait_ns = h.machine.config().read_wait_before_query_ms * 1_000_000;
    h.advance_to(start + wait_ns - 1);
    assert!(sent_queries(&h.take_effects()).is_empty(), "RI-2: wait first");
    h.advance_to(start + wait_ns);
    let sent = sent_queries(&h.take_effects());
    assert_eq!(sent.len(), 1, "RI-3: then ask");
    let reply = TxnStateReply { txn_id: TxnId(1), state: CoordinatorState::Aborted };
    h.respond(sent[0].0, NodeId(9), Ok(Ok(Response::TxnState(reply))));
    let replies = h.commit_proposals();
    assert_eq!(value(answer_for(&replies, read).expect("answered")), (None, None));
}

#[test]
fn a_prepare_beyond_prepared_txns_max_votes_no() {
    let config = ParticipantConfig { prepared_txns_max: 2, ..config() };
    let mut h = leader_with(config);
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("b", "v")], vec![]));
    yes(prepare(&mut h, 2, t, vec![put("c", "v")], vec![]));
    assert_eq!(
        prepare(&mut h, 3, t, vec![put("d", "v")], vec![]),
        Vote::No { reason: NoReason::TooManyPrepared }
    );
}

#[test]
fn inv_m4_a_prepare_at_or_below_the_closed_timestamp_is_rejected_at_apply() {
    let mut h = leader();
    let t = now(&mut h);
    let closed = now(&mut h);
    h.apply(closed, ParticipantCommand::CloseTimestamp { closed_ts: closed });
    // A lower close never lowers it.
    h.apply(closed, ParticipantCommand::CloseTimestamp { closed_ts: t });
    assert_eq!(h.machine.state().closed_ts(), closed);
    let cmd = decree_participant::PrepareCmd {
        txn_id: TxnId(1),
        coord_group: COORD,
        read_ts: t,
        prepare_ts: closed,
        writes: vec![put("k", "v")],
        read_spans: vec![],
        refused: None,
    };
    let reply = h.apply(closed, ParticipantCommand::Prepare(cmd));
    assert!(matches!(
        reply,
        Some(Ok(Response::Vote(v))) if v.vote == Vote::No { reason: NoReason::BelowClosedTimestamp }
    ));
    // The leader's own P is above it (P-3).
    assert!(yes(prepare(&mut h, 2, t, vec![put("k", "v")], vec![])) > closed);
}

#[test]
fn f1_the_leader_proposes_closed_timestamps_below_every_pending_prepare() {
    let config = ParticipantConfig { close_interval_ms: 100, ..config() };
    let mut h = leader_with(config);
    h.commit_proposals();
    // A pending prepare caps the next closed timestamp below its P.
    let t = now(&mut h);
    let ParticipantCommand::Prepare(pending) =
        admit_proposal(&mut h, COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]))
    else {
        panic!()
    };
    let start = h.now_ns;
    h.advance_to(start + 2_000_000_000);
    let proposed = proposals(&h.take_effects());
    let [ParticipantCommand::CloseTimestamp { closed_ts }] = proposed.as_slice() else {
        panic!("{proposed:?}")
    };
    let lag_ns = h.machine.config().closed_ts_lag_ms * 1_000_000;
    assert!(closed_ts.wall_ns <= h.clock.hlc().last().wall_ns - lag_ns);
    assert!(*closed_ts < pending.prepare_ts);
    // Applied, the pending prepare still passes P-5, and the next P is above the close.
    let closed_ts = *closed_ts;
    let at = now(&mut h);
    h.apply(at, ParticipantCommand::CloseTimestamp { closed_ts });
    let reply = h.apply(at, ParticipantCommand::Prepare(pending));
    assert!(matches!(reply, Some(Ok(Response::Vote(v))) if matches!(v.vote, Vote::Yes { .. })));
    let t = now(&mut h);
    assert!(yes(prepare(&mut h, 2, t, vec![put("b", "v")], vec![])) > closed_ts);
    let _ = HlcTimestamp::ZERO;
}
