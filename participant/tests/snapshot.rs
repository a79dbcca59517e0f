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
fn a_view_is_the_state_as_of_when_it_was_taken_whatever_is_applied_after() {
    // Enough keys that the maps are trees of several levels, so later writes copy shared
    // nodes rather than the roots only.
    let mut h = busy_leader();
    for batch in 0..4u128 {
        let writes =
            (0..500).map(|i| put(&format!("c{:03}{i:04}", batch), "old")).collect::<Vec<_>>();
        write_1pc(&mut h, 100 + batch, writes);
    }
    // Phase 1: the view, and a replica stopped at that index (restored from bytes encoded at
    // once).
    let view = h.machine.snapshot();
    let digest_at_view = h.machine.digest();
    let state_at_view = h.machine.state().clone();
    let mut stopped = replica(2, WALL0, config());
    stopped.machine.restore(&ParticipantGroup::encode_snapshot(&h.machine.snapshot())).unwrap();

    // Phase 2: apply touches every map: versions (new and overwritten keys), intents and read
    // locks (a commit, a prepare), txn_table, sessions, the closed timestamp, GC.
    commit(&mut h, 2);
    write_1pc(&mut h, 200, vec![put("c0000001", "new"), put("c0030499", "new"), put("m", "x")]);
    let t = now(&mut h);
    yes(prepare(&mut h, 201, t, vec![put("c0010007", "p")], vec![span("e", "f")]));
    local(&mut h, 202, 61, 1, t, vec![put("j", "w")], vec![]);
    let at = now(&mut h);
    h.apply(at, ParticipantCommand::CloseTimestamp { closed_ts: t });
    h.apply(at, ParticipantCommand::Gc);
    assert_ne!(h.machine.digest(), digest_at_view, "the live state moved on");

    // Phase 3: the view, encoded only now, is the state as of phase 1.
    let bytes = ParticipantGroup::encode_snapshot(&view);
    let mut restored = replica(3, WALL0, config());
    restored.machine.restore(&bytes).unwrap();
    assert_eq!(restored.machine.digest(), digest_at_view);
    assert_eq!(restored.machine.digest(), stopped.machine.digest());
    assert_eq!(restored.machine.state(), &state_at_view);
    assert_eq!(restored.machine.state(), stopped.machine.state());
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

mod replicas {
    //! A leader and a follower fed the same entries, with periodic entries (closed timestamps,
    //! GC, expiry) on: equal digests after every step, and the follower never answers or sends.

    use super::*;
    use decree_host::Effect;
    use decree_participant::ParticipantConfig;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Prepare { key: usize, back_ms: u64 },
        Decide { i: usize, commit: bool },
        OnePc { key: usize },
        Advance { ms: u64 },
    }

    const KEYS: [&str; 3] = ["b", "c", "d"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..KEYS.len(), 0..300u64).prop_map(|(key, back_ms)| Op::Prepare { key, back_ms }),
            (0..4usize, any::<bool>()).prop_map(|(i, commit)| Op::Decide { i, commit }),
            (0..KEYS.len()).prop_map(|key| Op::OnePc { key }),
            (1..1500u64).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn periodic_config() -> ParticipantConfig {
        ParticipantConfig {
            close_interval_ms: 100,
            gc_interval_ms: 700,
            expire_scan_interval_ms: 500,
            max_txn_lifetime_ms: 2_000,
            mvcc_gc_ttl_ms: 3_000,
            ..ParticipantConfig::default()
        }
    }

    /// Applies every proposal the leader made, on both replicas, with the same stamp.
    fn pump(leader: &mut H, follower: &mut H) {
        let mut queue = leader.take_effects();
        while !queue.is_empty() {
            let effect = queue.remove(0);
            if let Effect::Propose { command, .. } = effect {
                let at = leader.clock.now();
                leader.apply(at, command.clone());
                follower.apply(at, command);
                queue.extend(leader.take_effects());
            }
        }
        assert!(follower.take_effects().is_empty(), "a follower answers and sends nothing");
    }

    fn submit(
        leader: &mut H,
        follower: &mut H,
        requester: decree_host::Requester,
        request: Request,
    ) {
        let (reply_to, admission) = leader.admit(requester, request);
        if let Admission::Propose { command, on_lost } = admission {
            leader
                .effects
                .insert(0, Effect::Propose { command, waiter: Some((reply_to, on_lost)) });
        }
        pump(leader, follower);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn a_leader_and_a_follower_applying_the_same_entries_have_equal_digests(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let mut l = leader_with(periodic_config());
            let mut f = replica(2, WALL0, periodic_config());
            f.become_follower(Term(1), Some(NodeId(1)));
            pump(&mut l, &mut f);
            let mut prepared: Vec<u128> = Vec::new();
            let mut next = 0u128;
            for op in ops {
                match op {
                    Op::Prepare { key, back_ms } => {
                        next += 1;
                        let t = now(&mut l);
                        let read_ts = decree_types::HlcTimestamp::new(t.wall_ns - back_ms * 1_000_000, 0);
                        let req = prepare_req(next, read_ts, vec![put(KEYS[key], "v")], vec![span("b", "c")]);
                        submit(&mut l, &mut f, COORD_NODE, req);
                        if matches!(l.machine.state().txn(TxnId(next)).map(|e| &e.state), Some(TxnState::Prepared { .. })) {
                            prepared.push(next);
                        }
                    }
                    Op::Decide { i, commit } => {
                        if !prepared.is_empty() {
                            let txn = prepared.remove(i % prepared.len());
                            let req = if commit { commit_req(txn, now(&mut l)) } else { abort_req(txn) };
                            submit(&mut l, &mut f, COORD_NODE, req);
                        }
                    }
                    Op::OnePc { key } => {
                        next += 1;
                        let t = now(&mut l);
                        let req = local_req(next, next as u64, 1, t, vec![put(KEYS[key], "w")], vec![]);
                        submit(&mut l, &mut f, CLIENT, req);
                    }
                    Op::Advance { ms } => {
                        let to = l.now_ns + ms * 1_000_000;
                        l.advance_to(to);
                        f.advance_to(to);
                        pump(&mut l, &mut f);
                    }
                }
                prop_assert_eq!(l.machine.digest(), f.machine.digest());
            }
            prop_assert_eq!(l.machine.state(), f.machine.state());
        }
    }
}
