//! Snapshots and digests (RAFT-8, REC-8): a restored replica has exactly the state it was taken
//! from (equal digests: intents, read locks, txn_table, sessions, closed timestamp, GC
//! threshold), replicas that apply the same entries have equal digests whatever their role, and
//! a damaged snapshot is refused.

mod common;

use common::*;
use decree_host::{Admission, ReplicatedMachine};
use decree_participant::{ParticipantCommand, ParticipantGroup, TxnState};
use decree_proto::Request;
use decree_types::{ClientId, GroupId, KeyRange, NodeId, Term, TxnId};

/// Drives `request` on the leader and applies whatever it proposes on every follower too,
/// stamped with the same `proposed_at`: a three-replica log played by hand.
fn replicate(
    leader: &mut H,
    followers: &mut [H],
    requester: decree_host::Requester,
    request: Request,
) {
    let (reply_to, admission) = leader.admit(requester, request);
    let Admission::Propose { command, .. } = admission else { return };
    let at = leader.clock.now();
    leader.apply(at, command.clone());
    for f in followers.iter_mut() {
        f.apply(at, command.clone());
    }
    let _ = reply_to;
}

/// A state with every kind of thing in it.
fn busy_leader() -> H {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("b", "one"), put("c", "two")]);
    let t = now(&mut h);
    yes(prepare(&mut h, 2, t, vec![put("d", "x"), del("b")], vec![span("e", "g")]));
    yes(prepare(&mut h, 3, t, vec![put("h", "y")], vec![]));
    commit(&mut h, 3);
    abort(&mut h, 4);
    let t = now(&mut h);
    prepare(&mut h, 5, t, vec![put("d", "z")], vec![]); // rejected: intent of 2
    local(&mut h, 6, 60, 9, t, vec![put("i", "w")], vec![]);
    let at = now(&mut h);
    h.apply(at, ParticipantCommand::CloseTimestamp { closed_ts: t });
    h
}

#[test]
fn snapshot_restore_round_trips_exactly() {
    let h = busy_leader();
    let state = h.machine.state();
    assert_eq!(state.mvcc().intent_count(), 2);
    assert_eq!(state.txns().count(), 6);
    assert_eq!(state.sessions().count(), 2);
    let bytes = ParticipantGroup::encode_snapshot(&h.machine.snapshot());
    let mut restored = replica(2, WALL0, config());
    restored.machine.restore(&bytes).unwrap();
    assert_eq!(restored.machine.digest(), h.machine.digest());
    assert_eq!(restored.machine.state(), h.machine.state(), "intents, txn_table, sessions alike");
    assert!(matches!(
        restored.machine.state().txn(TxnId(2)).unwrap().state,
        TxnState::Prepared { .. }
    ));
    assert_eq!(restored.machine.state().session(ClientId(60)).unwrap().seq, 9);
    // Snapshot of the restored one: the same bytes.
    assert_eq!(ParticipantGroup::encode_snapshot(&restored.machine.snapshot()), bytes);
}

#[test]
fn a_restored_replica_continues_like_the_original() {
    let mut a = busy_leader();
    let bytes = ParticipantGroup::encode_snapshot(&a.machine.snapshot());
    let mut b = replica(2, WALL0, config());
    b.machine.restore(&bytes).unwrap();
    // The prepared txn commits on both; digests stay equal.
    let c = now(&mut a);
    for h in [&mut a, &mut b] {
        h.apply(c, ParticipantCommand::Commit { txn_id: TxnId(2), commit_ts: c });
    }
    assert_eq!(a.machine.digest(), b.machine.digest());
    assert_eq!(a.machine.state().mvcc().intent_count(), 0);
}

#[test]
fn replicas_applying_the_same_entries_have_equal_digests() {
    let mut l = leader();
    let mut followers = vec![replica(2, WALL0 + 5, config()), replica(3, WALL0 - 5, config())];
    followers[0].become_follower(Term(1), Some(NodeId(1)));
    let t = now(&mut l);
    let requests = vec![
        local_req(1, 1, 1, t, vec![put("b", "v")], vec![]),
        prepare_req(2, t, vec![put("c", "v")], vec![span("d", "e")]),
        prepare_req(3, t, vec![put("c", "w")], vec![]),
        abort_req(9),
    ];
    for r in requests {
        replicate(&mut l, &mut followers, CLIENT, r);
    }
    let c = now(&mut l);
    replicate(&mut l, &mut followers, COORD_NODE, commit_req(2, c));
    for f in &mut followers {
        assert!(f.take_effects().is_empty(), "followers answer nothing, send nothing");
        assert_eq!(f.machine.digest(), l.machine.digest());
        assert_eq!(f.machine.state(), l.machine.state());
    }
    // A different history has a different digest.
    let mut other = replica(4, WALL0, config());
    other.apply(c, ParticipantCommand::Abort { txn_id: TxnId(9) });
    assert_ne!(other.machine.digest(), l.machine.digest());
}

#[test]
fn a_damaged_or_foreign_snapshot_is_refused_and_leaves_the_state_alone() {
    let h = busy_leader();
    let bytes = ParticipantGroup::encode_snapshot(&h.machine.snapshot());
    let mut target = leader();
    write_1pc(&mut target, 1, vec![put("m", "keep")]);
    let digest = target.machine.digest();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [flipped, bytes[..bytes.len() - 1].to_vec(), b"junk".to_vec(), Vec::new()] {
        assert!(target.machine.restore(&bad).is_err());
        assert_eq!(target.machine.digest(), digest);
    }
    let mut foreign = ParticipantGroup::new(GroupId(8), KeyRange::full(), 1, config());
    assert!(foreign.restore(&bytes).is_err(), "a snapshot of another group");
}

#[test]
fn gc_threshold_is_part_of_the_snapshot() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("b", "one")]);
    write_1pc(&mut h, 2, vec![put("b", "two")]);
    let ttl = h.machine.config().mvcc_gc_ttl_ns();
    let later = now(&mut h).add_wall_ns(ttl + 1);
    h.apply(later, ParticipantCommand::Gc);
    assert_eq!(h.machine.state().mvcc().versions(&k("b")).len(), 1, "the shadowed version went");
    let bytes = ParticipantGroup::encode_snapshot(&h.machine.snapshot());
    let mut r = replica(2, WALL0, config());
    r.machine.restore(&bytes).unwrap();
    assert_eq!(r.machine.state().mvcc().gc_threshold(), h.machine.state().mvcc().gc_threshold());
    assert_eq!(r.machine.digest(), h.machine.digest());
}
