//! MVCC invariants under random workloads (protocol.md §9, commit-protocol.md §8):
//!
//! - INV-M1: per key at most one intent; versions appear in increasing commit-timestamp order
//!   (each new version is appended after every older one), and an intent's `P` is above the
//!   key's newest version.
//! - INV-M2: a read at `t` returns the same result forever, under concurrent (pending and
//!   prepared) transactions and participant leader changes with the worst clock skew LC-2
//!   allows.
//! - INV-M3: a read returns a version only if its transaction committed at `C ≤ t`: checked
//!   against a model of committed writes; prepared values are never returned.
//!
//! After every step the state is also snapshotted and restored into a checker replica, which
//! must have the same digest (RAFT-8, REC-8).

mod common;

use std::collections::BTreeMap;

use common::*;
use decree_host::{Admission, ReplicatedMachine};
use decree_participant::{ParticipantCommand, ParticipantGroup, TxnState};
use decree_proto::txn::{TxnOutcome, Vote, Write};
use decree_proto::Response;
use decree_types::{HlcTimestamp, Term, TxnId};
use proptest::prelude::*;

const KEYS: [&str; 4] = ["b", "c", "d", "e"];

#[derive(Clone, Debug)]
enum Op {
    /// A read of `KEYS[key]` at the clock minus `back_ms`.
    Read { key: usize, back_ms: u64 },
    /// A prepare (applied at once) with read_ts = clock − `back_ms`.
    Prepare { keys: Vec<usize>, back_ms: u64, reads: Option<usize> },
    /// A prepare admitted but not applied yet (in the lock table).
    PendingPrepare { keys: Vec<usize> },
    /// The oldest pending prepare applies.
    ApplyPending,
    /// The i-th undecided prepared transaction commits, at `C = P` (a coordinator whose clock
    /// is behind, C-2) or at a fresh clock reading.
    Commit { i: usize, at_p: bool },
    /// The i-th undecided prepared transaction aborts.
    Abort(usize),
    /// A 1PC transaction (deletes the first key if `delete`).
    OnePc { keys: Vec<usize>, back_ms: u64, delete: bool },
    /// Time passes.
    Advance { ms: u64 },
    /// The leader changes to the other node, whose clock is `max_offset` away; the old leader's
    /// pending prepares either apply before the new no-op or are lost.
    LeaderChange { apply_pending: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let keys = proptest::collection::btree_set(0..KEYS.len(), 1..3)
        .prop_map(|s| s.into_iter().collect::<Vec<_>>());
    prop_oneof![
        4 => (0..KEYS.len(), prop_oneof![Just(0u64), 0..1500u64])
            .prop_map(|(key, back_ms)| Op::Read { key, back_ms }),
        3 => (keys.clone(), prop_oneof![Just(0u64), 0..500u64], proptest::option::of(0..KEYS.len()))
            .prop_map(|(keys, back_ms, reads)| Op::Prepare { keys, back_ms, reads }),
        2 => keys.clone().prop_map(|keys| Op::PendingPrepare { keys }),
        2 => Just(Op::ApplyPending),
        3 => (0..8usize, any::<bool>()).prop_map(|(i, at_p)| Op::Commit { i, at_p }),
        1 => (0..8usize).prop_map(Op::Abort),
        3 => (keys, prop_oneof![Just(0u64), 0..500u64], any::<bool>())
            .prop_map(|(keys, back_ms, delete)| Op::OnePc { keys, back_ms, delete }),
        2 => (1..300u64).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|apply_pending| Op::LeaderChange { apply_pending }),
    ]
}

type Model = BTreeMap<&'static str, BTreeMap<HlcTimestamp, Option<String>>>;
type ReadResult = (Option<String>, Option<HlcTimestamp>);
/// A key's versions as `(ts, value)`.
type VersionList = Vec<(HlcTimestamp, Option<Vec<u8>>)>;

struct World {
    h: H,
    /// Physical time of the leader's node at its harness's monotonic 0.
    base: u64,
    /// Is the leader the node whose clock is ahead?
    fast: bool,
    term: u64,
    next_txn: u128,
    /// Committed writes, by key and commit timestamp (the INV-M3 model).
    model: Model,
    /// Prepared, undecided transactions.
    prepared: Vec<(u128, Vec<Write>)>,
    /// Admitted, not applied prepares.
    pending: Vec<ParticipantCommand>,
    /// Every read served: `(key, t) -> result` (INV-M2).
    served: Vec<(usize, HlcTimestamp, ReadResult)>,
    /// The versions of each key at the last check (INV-M1: only appended to).
    last_versions: BTreeMap<usize, VersionList>,
}

impl World {
    fn new() -> Self {
        World {
            h: leader(),
            base: WALL0,
            fast: true,
            term: 1,
            next_txn: 1,
            model: Model::new(),
            prepared: Vec::new(),
            pending: Vec::new(),
            served: Vec::new(),
            last_versions: BTreeMap::new(),
        }
    }

    fn txn(&mut self) -> u128 {
        self.next_txn += 1;
        self.next_txn
    }

    fn ts_back(&mut self, back_ms: u64) -> HlcTimestamp {
        let now = now(&mut self.h);
        if back_ms == 0 {
            now
        } else {
            HlcTimestamp::new(now.wall_ns - back_ms * 1_000_000, 0)
        }
    }

    fn writes(&self, txn: u128, keys: &[usize], delete: bool) -> Vec<Write> {
        keys.iter()
            .enumerate()
            .map(
                |(i, &k)| {
                    if delete && i == 0 {
                        del(KEYS[k])
                    } else {
                        put(KEYS[k], &format!("t{txn}"))
                    }
                },
            )
            .collect()
    }

    fn record_commit(&mut self, writes: &[Write], c: HlcTimestamp) {
        for w in writes {
            let key = KEYS.iter().find(|k| k.as_bytes() == w.key.as_bytes()).unwrap();
            let value = w.value.as_ref().map(|v| String::from_utf8(v.clone()).unwrap());
            self.model.entry(key).or_default().insert(c, value);
        }
    }

    fn expected(&self, key: usize, t: HlcTimestamp) -> ReadResult {
        match self.model.get(KEYS[key]).and_then(|vs| vs.range(..=t).next_back()) {
            Some((ts, v)) => (v.clone(), Some(*ts)),
            None => (None, None),
        }
    }

    /// A read that must be answered at once; `None` if it waits (blocked by an intent).
    fn read(&mut self, key: usize, t: HlcTimestamp) -> Option<ReadResult> {
        match self.h.admit(CLIENT, get_req(KEYS[key], t, None)).1 {
            Admission::Reply(r) => Some(value(r)),
            Admission::Later => None,
            Admission::Propose { .. } => panic!("a read proposes nothing"),
            Admission::Read(_) => panic!("the participant admits no ReadIndex reads"),
        }
    }

    fn note_vote(
        &mut self,
        txn: u128,
        writes: Vec<Write>,
        reply: Option<decree_participant::ParticipantResponse>,
    ) {
        if let Some(Ok(Response::Vote(v))) = reply {
            if let Vote::Yes { .. } = v.vote {
                self.prepared.push((txn, writes));
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Read { key, back_ms } => {
                let t = self.ts_back(back_ms);
                if let Some(result) = self.read(key, t) {
                    // INV-M3: the committed version at or below t, nothing else.
                    assert_eq!(
                        result,
                        self.expected(key, t),
                        "INV-M3: read of {} at {t}",
                        KEYS[key]
                    );
                    self.served.push((key, t, result));
                }
            }
            Op::Prepare { keys, back_ms, reads } => {
                let txn = self.txn();
                let read_ts = self.ts_back(back_ms);
                let writes = self.writes(txn, &keys, false);
                let spans = reads.map(|r| vec![span(KEYS[r], "f")]).unwrap_or_default();
                let reply =
                    self.h.request(COORD_NODE, prepare_req(txn, read_ts, writes.clone(), spans));
                self.note_vote(txn, writes, reply);
            }
            Op::PendingPrepare { keys } => {
                let txn = self.txn();
                let read_ts = now(&mut self.h);
                let writes = self.writes(txn, &keys, false);
                if let (_, Admission::Propose { command, .. }) =
                    self.h.admit(COORD_NODE, prepare_req(txn, read_ts, writes, vec![]))
                {
                    self.pending.push(command);
                }
            }
            Op::ApplyPending => self.apply_pending(),
            Op::Commit { i, at_p } => {
                if !self.prepared.is_empty() {
                    let (txn, writes) = self.prepared.remove(i % self.prepared.len());
                    // C-2: C = max(P, the coordinator's clock), here the leader's clock.
                    let Some(TxnState::Prepared { prepare_ts, .. }) =
                        self.h.machine.state().txn(TxnId(txn)).map(|e| e.state.clone())
                    else {
                        panic!("undecided txn {txn} is prepared")
                    };
                    let c = if at_p { prepare_ts } else { now(&mut self.h).max(prepare_ts) };
                    commit_at(&mut self.h, txn, c);
                    self.record_commit(&writes, c);
                }
            }
            Op::Abort(i) => {
                if !self.prepared.is_empty() {
                    let (txn, _) = self.prepared.remove(i % self.prepared.len());
                    abort(&mut self.h, txn);
                }
            }
            Op::OnePc { keys, back_ms, delete } => {
                let txn = self.txn();
                let read_ts = self.ts_back(back_ms);
                let writes = self.writes(txn, &keys, delete);
                let outcome =
                    local(&mut self.h, txn, txn as u64, 1, read_ts, writes.clone(), vec![]);
                if let TxnOutcome::Committed { commit_ts } = outcome {
                    self.record_commit(&writes, commit_ts);
                }
            }
            Op::Advance { ms } => {
                let to = self.h.now_ns + ms * 1_000_000;
                self.h.advance_to(to);
                self.h.commit_proposals();
                self.h.take_effects();
            }
            Op::LeaderChange { apply_pending } => {
                if apply_pending {
                    while !self.pending.is_empty() {
                        self.apply_pending();
                    }
                } else {
                    self.pending.clear();
                }
                let snapshot = ParticipantGroup::encode_snapshot(&self.h.machine.snapshot());
                self.term += 1;
                self.h.become_follower(Term(self.term), None);
                // The other node's clock is max_offset behind (or ahead of) this one.
                let wall = self.base + self.h.now_ns;
                let base = if self.fast { wall - MAX_OFFSET_NS } else { wall + MAX_OFFSET_NS };
                let mut next = replica(self.term, base, config());
                next.machine.restore(&snapshot).unwrap();
                self.term += 1;
                next.become_ready_leader(Term(self.term));
                pass_gate(&mut next);
                self.h = next;
                self.base = base;
                self.fast = !self.fast;
            }
        }
    }

    fn apply_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let command = self.pending.remove(0);
        let ParticipantCommand::Prepare(cmd) = &command else { unreachable!("only prepares pend") };
        let (txn, writes) = (cmd.txn_id.0, cmd.writes.clone());
        let at = now(&mut self.h);
        let reply = self.h.apply(at, command);
        self.note_vote(txn, writes, reply);
    }

    fn check(&mut self) {
        let state = self.h.machine.state();
        for (i, key) in KEYS.iter().enumerate() {
            let versions: VersionList =
                state.mvcc().versions(&k(key)).iter().map(|v| (v.ts, v.value.clone())).collect();
            // INV-M1: strictly increasing, and only ever appended to.
            assert!(versions.windows(2).all(|w| w[0].0 < w[1].0), "INV-M1: {key} out of order");
            let before = self.last_versions.get(&i).cloned().unwrap_or_default();
            assert!(
                versions.starts_with(&before),
                "INV-M1: {key} changed below its newest version"
            );
            if let (Some(intent), Some(newest)) = (state.mvcc().intent(&k(key)), versions.last()) {
                assert!(intent.prepare_ts > newest.0, "INV-M1: intent at or below a version");
            }
            // The store equals the model of committed writes (INV-M3's ground truth).
            let model: VersionList = self
                .model
                .get(key)
                .map(|vs| {
                    vs.iter().map(|(ts, v)| (*ts, v.clone().map(String::into_bytes))).collect()
                })
                .unwrap_or_default();
            assert_eq!(versions, model, "versions of {key}");
            self.last_versions.insert(i, versions);
        }
        // INV-M2: every read served so far gives the same answer now, at once. Asked of a
        // replica restored from the current state, so that re-reading does not move the
        // leader's clock (which would hide a missing LC-2 wait).
        let snapshot = ParticipantGroup::encode_snapshot(&self.h.machine.snapshot());
        let mut checker = replica(99, self.base + self.h.now_ns + MAX_OFFSET_NS, config());
        checker.machine.restore(&snapshot).unwrap();
        // RAFT-8 / REC-8: the restored replica is the same state, to the digest.
        assert_eq!(checker.machine.digest(), self.h.machine.digest());
        assert_eq!(checker.machine.state(), self.h.machine.state());
        checker.become_ready_leader(Term(1));
        for (key, t, result) in &self.served {
            let again = match checker.admit(CLIENT, get_req(KEYS[*key], *t, None)).1 {
                Admission::Reply(r) => Some(value(r)),
                _ => None,
            };
            assert_eq!(
                again.as_ref(),
                Some(result),
                "INV-M2: read of {} at {t} changed",
                KEYS[*key]
            );
        }
    }
}

/// Reads served (and re-checked) over all cases: the property test must exercise INV-M2.
static READS_CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn inv_m1_m2_m3_hold_under_concurrent_prepares_and_leader_changes(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut world = World::new();
        for op in ops {
            world.step(op);
            world.check();
        }
        READS_CHECKED.fetch_add(world.served.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn inv_m2_a_read_keeps_its_answer_across_a_commit_above_it_and_a_leader_change() {
    let mut world = World::new();
    world.step(Op::OnePc { keys: vec![0], back_ms: 0, delete: false });
    world.step(Op::Read { key: 0, back_ms: 0 });
    world.step(Op::PendingPrepare { keys: vec![0, 1] });
    world.step(Op::Read { key: 1, back_ms: 0 }); // waits (pending P ≤ t): not recorded
    world.step(Op::Read { key: 0, back_ms: 100 });
    world.step(Op::LeaderChange { apply_pending: true });
    world.step(Op::Commit { i: 0, at_p: true });
    world.step(Op::OnePc { keys: vec![0, 1], back_ms: 0, delete: true });
    world.check();
    assert!(world.served.len() >= 2);
    assert_eq!(world.model["b"].len(), 3, "1PC, the 2PC commit, the 1PC delete");
}

#[test]
fn inv_m3_prepared_values_are_never_read_and_aborted_ones_vanish() {
    let mut h = leader();
    let t0 = now(&mut h);
    yes(prepare(&mut h, 1, t0, vec![put("b", "prepared")], vec![]));
    // Below P: the intent is ignored, nothing committed yet.
    assert_eq!(value(get(&mut h, "b", t0, None)), (None, None));
    // At or above P: waits, never returns the intent's value.
    let t1 = now(&mut h);
    let (read, admission) = h.admit(CLIENT, get_req("b", t1, None));
    assert!(is_later(&admission));
    let (_, replies) = request_all(&mut h, COORD_NODE, abort_req(1));
    assert_eq!(value(answer_for(&replies, read).unwrap()), (None, None), "aborted: gone");
    assert_eq!(h.machine.state().mvcc().intent_count(), 0);
    // Committed at C: visible exactly at t ≥ C.
    let t2 = now(&mut h);
    yes(prepare(&mut h, 2, t2, vec![put("b", "committed")], vec![]));
    let c = commit(&mut h, 2);
    assert_eq!(value(get(&mut h, "b", c, None)), (Some("committed".into()), Some(c)));
    let before_c = HlcTimestamp::new(c.wall_ns - 1, 0);
    assert_eq!(value(get(&mut h, "b", before_c.max(t2), None)), (None, None));
}
