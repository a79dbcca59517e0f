//! Participant leader changes: LC-2 exactly as commit-protocol.md §6 writes it, and the reset of
//! leader-only state on every role event (DESIGN.md §3).

mod common;

use common::*;
use decree_host::{Admission, ReplicatedMachine, RoleEvent};
use decree_participant::ParticipantCommand;
use decree_proto::{ErrorResponse, Response};
use decree_types::{HlcTimestamp, NodeId, Term};

#[test]
fn lc2_the_wait_is_two_max_offsets_plus_the_drift_margin() {
    let c = config();
    assert_eq!(c.lc2_wait_ns(), 2 * MAX_OFFSET_NS + 2 * MAX_OFFSET_NS / 1000);
    let mut h = replica(1, WALL0, config());
    h.now_ns = 7_000;
    h.become_ready_leader(Term(1));
    assert_eq!(h.machine.lc2_gate_open_ns(), Some(7_000 + c.lc2_wait_ns()));
}

#[test]
fn lc2_no_prepare_or_commit_local_is_evaluated_before_the_wait() {
    let mut h = replica(1, WALL0, config());
    h.become_ready_leader(Term(1));
    let gate = h.machine.lc2_gate_open_ns().unwrap();
    let t = now(&mut h);
    let (_, a1) = h.admit(COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    let (_, a2) = h.admit(CLIENT, local_req(2, 1, 1, t, vec![put("l", "v")], vec![]));
    assert!(is_later(&a1) && is_later(&a2), "held, not evaluated");
    assert_eq!(h.machine.pending_prepares(), 0, "no P picked, nothing in the lock table");
    assert!(h.take_effects().is_empty());
    // Reads are served during the wait (they are not prepares).
    assert_eq!(value(get(&mut h, "k", t, None)), (None, None));
    h.advance_to(gate - 1);
    assert!(proposals(&h.take_effects()).is_empty());
    h.advance_to(gate);
    let proposed = proposals(&h.effects);
    assert_eq!(proposed.len(), 2, "evaluated in arrival order once the wait is over");
    assert!(matches!(proposed[0], ParticipantCommand::Prepare(ref p) if p.prepare_ts > t));
    assert!(matches!(proposed[1], ParticipantCommand::CommitLocal(ref c) if c.commit_ts > t));
    let replies = h.commit_proposals();
    assert_eq!(replies.len(), 2);
}

#[test]
fn lc2_nothing_is_served_before_the_leaders_no_op_applied_requests_wait_for_it() {
    // Commit-protocol.md §5.3.
    let mut h = replica(1, WALL0, config());
    h.role = decree_host::Role::Leader { term: Term(1), ready: false };
    h.on_role(RoleEvent::Leader { term: Term(1) });
    let t = now(&mut h);
    let (get_to, get) = h.admit(CLIENT, get_req("k", t, None));
    let (commit_to, commit) = h.admit(COORD_NODE, commit_req(9, t));
    assert!(is_later(&get) && is_later(&commit), "held, neither served nor redirected");
    assert!(h.take_effects().is_empty());
    // A later deadline changes nothing while the no-op is not applied.
    assert!(!h.advance_to(h.now_ns + 10 * MAX_OFFSET_NS));
    // Once it is, both are admitted again in arrival order and answered: the read (nothing
    // there), and the Commit of a transaction this group never saw (D-10: acknowledged).
    h.role = decree_host::Role::Leader { term: Term(1), ready: true };
    h.on_role(RoleEvent::LeaderReady { term: Term(1) });
    let answered: Vec<_> = h
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            decree_host::Effect::Reply(to, Ok(response)) => Some((to, response)),
            _ => None,
        })
        .collect();
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert_eq!(answered[0].0, get_to);
    assert!(matches!(answered[0].1, Response::Value(_)), "{:?}", answered[0].1);
    assert_eq!(answered[1].0, commit_to);
    assert!(matches!(answered[1].1, Response::Ack(_)), "{:?}", answered[1].1);
}

#[test]
fn lc2_every_new_prepare_ts_exceeds_every_read_the_old_leader_served() {
    // The old leader's physical clock is max_offset ahead of the new leader's: the worst case
    // HLC-6 allows.
    let old_base = WALL0 + MAX_OFFSET_NS;
    let mut old = replica(1, old_base, config());
    // Physical time of a harness: its start plus its monotonic time (they advance together).
    let wall = |h: &H, base: u64| base + h.now_ns;
    old.become_ready_leader(Term(1));
    pass_gate(&mut old);
    write_1pc(&mut old, 1, vec![put("k", "v")]);
    // It serves reads up to the highest timestamp HLC-3 lets in: its physical time + max_offset.
    let mut served = Vec::new();
    for ahead_ns in [0, MAX_OFFSET_NS / 2, MAX_OFFSET_NS] {
        let t = HlcTimestamp::new(wall(&old, old_base) + ahead_ns, 0);
        value(get(&mut old, "k", t, None));
        served.push(t);
    }
    let highest = *served.iter().max().unwrap();
    assert_eq!(old.machine.max_read_ts(), highest);
    // A read further ahead is refused (HLC-3).
    let too_far = HlcTimestamp::new(wall(&old, old_base) + MAX_OFFSET_NS + 1, 0);
    assert!(matches!(get(&mut old, "k", too_far, None), Err(ErrorResponse::ClockRejected { .. })));

    // The election: the old leader steps down, node 2 (clock max_offset behind) wins at once.
    let snapshot = ParticipantGroupSnapshot::encode(&old);
    old.become_follower(Term(2), Some(NodeId(2)));
    assert_eq!(old.machine.max_read_ts(), HlcTimestamp::ZERO, "leader-only state dropped");
    let new_base = wall(&old, old_base) - MAX_OFFSET_NS;
    let mut new = replica(2, new_base, config());
    new.machine.restore(&snapshot).unwrap();
    new.become_ready_leader(Term(2));
    // Without the wait a prepare could pick P at or below a served read: the new clock is behind.
    assert!(new.clock.hlc().last() < highest && wall(&new, new_base) < highest.wall_ns);
    // A coordinator's prepare arrives at once, with a read_ts from a client on node 2's clock.
    let read_ts = now(&mut new);
    let (_, admission) =
        new.admit(COORD_NODE, prepare_req(5, read_ts, vec![put("l", "x")], vec![]));
    assert!(is_later(&admission), "LC-2: held through the wait");
    let gate = new.machine.lc2_gate_open_ns().unwrap();
    new.advance_to(gate);
    let proposed = proposals(&new.effects);
    let [ParticipantCommand::Prepare(cmd)] = proposed.as_slice() else { panic!("{proposed:?}") };
    for t in &served {
        assert!(cmd.prepare_ts > *t, "P {} must exceed served read {t}", cmd.prepare_ts);
    }
    // And every later prepare too (P grows with the clock).
    new.commit_proposals();
    let read_ts = now(&mut new);
    let p = yes(prepare(&mut new, 6, read_ts, vec![put("m", "y")], vec![]));
    assert!(p > highest);
}

#[test]
fn every_role_event_but_leader_ready_drops_leader_only_state() {
    let mut h = leader();
    let t = now(&mut h);
    let t_ahead = t.add_wall_ns(1_000);
    let _ = get(&mut h, "k", t_ahead, None);
    let _ = admit_proposal(&mut h, COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    let t2 = now(&mut h);
    let (_, parked) = h.admit(CLIENT, get_req("k", t2, None));
    assert!(is_later(&parked));
    assert!(h.machine.max_read_ts() > HlcTimestamp::ZERO);
    assert_eq!(h.machine.pending_prepares(), 1);
    assert_eq!(h.machine.waiting_requests(), 1);
    let digest = h.machine.digest();
    h.become_follower(Term(2), None);
    assert_eq!(h.machine.max_read_ts(), HlcTimestamp::ZERO);
    assert_eq!(h.machine.pending_prepares(), 0);
    assert_eq!(h.machine.waiting_requests(), 0);
    assert_eq!(h.machine.lc2_gate_open_ns(), None);
    assert_eq!(h.machine.digest(), digest, "leader-only state is not replicated state");
    // Leader again: a fresh LC-2 wait and a fresh max_read_ts.
    h.now_ns += 1_000;
    h.become_ready_leader(Term(3));
    assert_eq!(h.machine.max_read_ts(), HlcTimestamp::ZERO);
    assert_eq!(h.machine.lc2_gate_open_ns(), Some(h.now_ns + config().lc2_wait_ns()));
}

#[test]
fn a_prepare_of_an_earlier_term_applied_before_the_no_op_is_visible_to_the_new_leader() {
    // Commit-protocol.md §5.3: an old leader's pending prepare either applies before the new
    // leader's no-op or never; if it applied, reads see its intent and a retransmitted Prepare
    // is answered from txn_table.
    let mut h = leader();
    let t = now(&mut h);
    let command =
        admit_proposal(&mut h, COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    h.become_follower(Term(2), Some(NodeId(2)));
    let at = now(&mut h);
    assert!(matches!(h.apply(at, command), Some(Ok(Response::Vote(_)))));
    h.become_ready_leader(Term(3));
    pass_gate(&mut h);
    let (_, admission) = h.admit(COORD_NODE, prepare_req(1, t, vec![put("k", "v")], vec![]));
    assert!(matches!(admission, Admission::Reply(Ok(Response::Vote(_)))));
    let t = now(&mut h);
    let (_, read) = h.admit(CLIENT, get_req("k", t, None));
    assert!(is_later(&read), "the intent blocks a read above its P");
}

/// Snapshot bytes of a harness's machine.
struct ParticipantGroupSnapshot;

impl ParticipantGroupSnapshot {
    fn encode(h: &H) -> Vec<u8> {
        decree_participant::ParticipantGroup::encode_snapshot(&h.machine.snapshot())
    }
}
