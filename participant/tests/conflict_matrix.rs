//! The conflict matrix of protocol.md §3.3, one test per cell, named `<existing>_x_<incoming>`.
//!
//! Rows (what exists on key `k`): a committed version at or below / above the reader's `t`, a
//! prepared intent of another transaction, a pending prepare in the leader's lock table, a read
//! lock of another transaction. Columns: a snapshot read at `t`, a prepare that writes `k`, a
//! prepare that reads `k` (serializable). The two "—" cells (a committed version above `t`
//! against a prepare) are the "ok if `v.ts ≤ read_ts`, else No" cells of the first row seen from
//! the prepare's `read_ts`; they have no test of their own.

mod common;

use common::*;
use decree_host::Admission;
use decree_proto::txn::{NoReason, Vote};
use decree_proto::Response;

// --- committed version v.ts ≤ t ----------------------------------------------------------------

#[test]
fn committed_at_or_below_t_x_read_is_visible_newest_wins() {
    let mut h = leader();
    let c1 = write_1pc(&mut h, 1, vec![put("k", "one")]);
    let c2 = write_1pc(&mut h, 2, vec![put("k", "two")]);
    let t = now(&mut h);
    assert_eq!(value(get(&mut h, "k", t, None)), (Some("two".into()), Some(c2)));
    assert_eq!(value(get(&mut h, "k", c2, None)), (Some("two".into()), Some(c2)));
    assert_eq!(value(get(&mut h, "k", c1, None)), (Some("one".into()), Some(c1)));
}

#[test]
fn committed_at_or_below_read_ts_x_prepare_write_is_ok_else_no_write_too_old() {
    let mut h = leader();
    let before = now(&mut h);
    write_1pc(&mut h, 1, vec![put("k", "v")]);
    let after = now(&mut h);
    // v.ts ≤ read_ts: Yes.
    yes(prepare(&mut h, 10, after, vec![put("k", "w")], vec![]));
    abort(&mut h, 10);
    // v.ts > read_ts: No (first committer wins, P-2).
    assert_eq!(
        prepare(&mut h, 11, before, vec![put("k", "w")], vec![]),
        Vote::No { reason: NoReason::WriteTooOld }
    );
}

#[test]
fn committed_at_or_below_read_ts_x_prepare_read_is_ok_else_no_stale_read() {
    let mut h = leader();
    let before = now(&mut h);
    write_1pc(&mut h, 1, vec![put("k", "v")]);
    let after = now(&mut h);
    yes(prepare(&mut h, 10, after, vec![put("b", "w")], vec![span("k", "l")]));
    abort(&mut h, 10);
    assert_eq!(
        prepare(&mut h, 11, before, vec![put("b", "w")], vec![span("k", "l")]),
        Vote::No { reason: NoReason::StaleRead }
    );
}

// --- committed version v.ts > t ----------------------------------------------------------------

#[test]
fn committed_above_t_x_read_is_invisible_unless_within_uncertainty() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("k", "old")]);
    let t = now(&mut h);
    let c = write_1pc(&mut h, 2, vec![put("k", "new")]);
    // Without an uncertainty limit the newer version is invisible.
    assert_eq!(value(get(&mut h, "k", t, None)).0, Some("old".into()));
    // U below C: still invisible.
    assert_eq!(value(get(&mut h, "k", t, Some(t))).0, Some("old".into()));
    // t < C ≤ U: uncertainty restart at C (R-5, §5.3).
    let u = t.add_wall_ns(MAX_OFFSET_NS);
    match get(&mut h, "k", t, Some(u)) {
        Ok(Response::UncertaintyRestart(r)) => assert_eq!(r.new_read_ts, c),
        other => panic!("expected UncertaintyRestart, got {other:?}"),
    }
}

// --- prepared intent P (other txn) -------------------------------------------------------------

#[test]
fn prepared_intent_x_read_is_ignored_above_the_limit_and_waited_on_at_or_below() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("k", "old")]);
    let t = now(&mut h);
    let p = yes(prepare(&mut h, 10, t, vec![put("k", "new")], vec![]));
    assert!(p > t);
    // P > t (no uncertainty limit): ignored, the read returns the committed value.
    assert_eq!(value(get(&mut h, "k", t, None)).0, Some("old".into()));
    // P ≤ U: the read waits for the decision (R-5, RI-2) ...
    let (r1, admission) = h.admit(CLIENT, get_req("k", t, Some(t.add_wall_ns(MAX_OFFSET_NS))));
    assert!(is_later(&admission));
    // ... and a read at t' ≥ P too.
    let t2 = now(&mut h);
    let (r2, admission) = h.admit(CLIENT, get_req("k", t2, None));
    assert!(is_later(&admission));
    assert_eq!(h.machine.waiting_requests(), 2);
    // The commit answers both.
    let c = now(&mut h);
    let (_, answers) = request_all(&mut h, COORD_NODE, commit_req(10, c));
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(
        matches!(answer_for(&answers, r1), Some(Ok(Response::UncertaintyRestart(r))) if r.new_read_ts == c)
    );
    assert!(c > t2);
    assert_eq!(value(answer_for(&answers, r2).unwrap()).0, Some("old".into()), "C > t2: invisible");
    assert_eq!(h.machine.waiting_requests(), 0);
}

#[test]
fn prepared_intent_x_prepare_write_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 10, t, vec![put("k", "a")], vec![]));
    let t = now(&mut h);
    assert_eq!(
        prepare(&mut h, 11, t, vec![put("k", "b")], vec![]),
        Vote::No { reason: NoReason::IntentConflict }
    );
}

#[test]
fn prepared_intent_x_prepare_read_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 10, t, vec![put("k", "a")], vec![]));
    let t = now(&mut h);
    assert_eq!(
        prepare(&mut h, 11, t, vec![put("b", "b")], vec![span("j", "l")]),
        Vote::No { reason: NoReason::IntentConflict }
    );
}

// --- pending prepare (leader lock table, P-4) ----------------------------------------------------

#[test]
fn pending_prepare_x_read_waits_for_apply_when_p_at_or_below_t() {
    let mut h = leader();
    let t0 = now(&mut h);
    let (to, admission) = h.admit(COORD_NODE, prepare_req(10, t0, vec![put("k", "a")], vec![]));
    let Admission::Propose { command, .. } = admission else { panic!("expected a proposal") };
    assert_eq!(h.machine.pending_prepares(), 1);
    // A read below P does not wait.
    assert_eq!(value(get(&mut h, "k", t0, None)), (None, None));
    // A read at t ≥ P waits until the prepare applies ...
    let t = now(&mut h);
    let (read, admission) = h.admit(CLIENT, get_req("k", t, None));
    assert!(is_later(&admission));
    // ... and after it applied it waits on the intent, answered by the decision.
    let p0 = h.clock.now();
    let vote = h.apply(p0, command);
    assert!(matches!(vote, Some(Ok(Response::Vote(_)))), "{to:?}");
    assert_eq!(h.machine.pending_prepares(), 0, "P-7: the lock table entry went at apply");
    assert!(replies(&h.take_effects()).is_empty(), "still blocked, now by the intent");
    let (_, answers) = request_all(&mut h, COORD_NODE, abort_req(10));
    assert_eq!(value(answer_for(&answers, read).expect("answered at the abort")), (None, None));
}

#[test]
fn pending_prepare_x_prepare_write_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    let _pending =
        admit_proposal(&mut h, COORD_NODE, prepare_req(10, t, vec![put("k", "a")], vec![]));
    let t = now(&mut h);
    assert_eq!(
        prepare(&mut h, 11, t, vec![put("k", "b")], vec![]),
        Vote::No { reason: NoReason::PendingPrepareConflict }
    );
}

#[test]
fn pending_prepare_x_prepare_read_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    let _pending =
        admit_proposal(&mut h, COORD_NODE, prepare_req(10, t, vec![put("k", "a")], vec![]));
    let t = now(&mut h);
    assert_eq!(
        prepare(&mut h, 11, t, vec![put("b", "b")], vec![span("a", "m")]),
        Vote::No { reason: NoReason::PendingPrepareConflict }
    );
}

// --- read lock (other txn) -----------------------------------------------------------------------

#[test]
fn read_lock_x_read_has_no_conflict() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("k", "v")]);
    let t = now(&mut h);
    yes(prepare(&mut h, 10, t, vec![put("b", "w")], vec![span("k", "l")]));
    let t = now(&mut h);
    assert_eq!(value(get(&mut h, "k", t, None)).0, Some("v".into()));
}

#[test]
fn read_lock_x_prepare_write_votes_no() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 10, t, vec![put("b", "w")], vec![span("k", "l")]));
    let t = now(&mut h);
    assert_eq!(
        prepare(&mut h, 11, t, vec![put("k", "x")], vec![]),
        Vote::No { reason: NoReason::ReadLockConflict }
    );
    // Released at the decision (P-8/P-9): the same write is then fine.
    abort(&mut h, 10);
    let t = now(&mut h);
    yes(prepare(&mut h, 12, t, vec![put("k", "x")], vec![]));
}

#[test]
fn read_lock_x_prepare_read_has_no_conflict() {
    let mut h = leader();
    let t = now(&mut h);
    yes(prepare(&mut h, 10, t, vec![put("b", "w")], vec![span("k", "l")]));
    let t = now(&mut h);
    yes(prepare(&mut h, 11, t, vec![put("c", "x")], vec![span("j", "m")]));
}
