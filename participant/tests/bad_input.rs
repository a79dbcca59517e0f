//! Bad input (DESIGN.md §1): every case is a typed error and the group keeps serving.

mod common;

use common::*;
use decree_host::ReplicatedMachine;
use decree_participant::ParticipantCommand;
use decree_proto::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX, WRITES_PER_TXN_MAX};
use decree_proto::txn::{QueryPrepared, Write};
use decree_proto::{Bound, ErrorResponse, Request, Response};
use decree_types::{HlcTimestamp, Key, KeyRange, TxnId};

fn refused(h: &mut H, request: Request) -> ErrorResponse {
    let before = h.machine.digest();
    let index = h.last_index;
    let answer = h.request(CLIENT, request);
    assert_eq!(h.last_index, index, "nothing proposed");
    assert_eq!(h.machine.digest(), before, "nothing changed");
    match answer {
        Some(Err(e)) => e,
        other => panic!("expected a typed error, got {other:?}"),
    }
}

/// After all the bad input, the group still serves.
fn still_serving(h: &mut H) {
    write_1pc(h, 999, vec![put("b", "fine")]);
    let t = now(h);
    assert_eq!(value(get(h, "b", t, None)).0, Some("fine".into()));
}

#[test]
fn keys_outside_the_range_are_refused_with_key_out_of_range() {
    let mut h = leader();
    let t = now(&mut h);
    let out = |key: &str| ErrorResponse::KeyOutOfRange { key: k(key) };
    assert_eq!(refused(&mut h, get_req("z", t, None)), out("z"));
    assert_eq!(refused(&mut h, get_req("0", t, None)), out("0"));
    assert_eq!(
        refused(&mut h, prepare_req(1, t, vec![put("b", "v"), put("n", "v")], vec![])),
        out("n")
    );
    assert_eq!(
        refused(&mut h, local_req(1, 1, 1, t, vec![put("b", "v")], vec![span("m", "p")])),
        out("n")
    );
    assert_eq!(refused(&mut h, scan_req(span("0", "c"), t, 10)), out("0"));
    assert_eq!(refused(&mut h, scan_req(KeyRange::from_start("b"), t, 10)), out("n"));
    still_serving(&mut h);
}

#[test]
fn too_many_keys_is_limit_exceeded() {
    let mut h = leader();
    let t = now(&mut h);
    let writes: Vec<Write> =
        (0..=WRITES_PER_TXN_MAX).map(|i| put(&format!("b{i:05}"), "v")).collect();
    let e = refused(&mut h, prepare_req(1, t, writes.clone(), vec![]));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::WritesPerTxn));
    let e = refused(&mut h, local_req(1, 1, 1, t, writes, vec![]));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::WritesPerTxn));
    let spans = vec![span("b", "c"); WRITES_PER_TXN_MAX + 1];
    let e = refused(&mut h, prepare_req(1, t, vec![], spans));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::ReadSpansPerTxn));
    still_serving(&mut h);
}

#[test]
fn oversize_keys_and_values_are_limit_exceeded() {
    let mut h = leader();
    let t = now(&mut h);
    let long = format!("b{}", "x".repeat(KEY_BYTES_MAX));
    let e = refused(&mut h, get_req(&long, t, None));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::KeyBytes));
    let e = refused(&mut h, prepare_req(1, t, vec![put(&long, "v")], vec![]));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::KeyBytes));
    let big = Write { key: k("b"), value: Some(vec![0; VALUE_BYTES_MAX + 1]) };
    let e = refused(&mut h, prepare_req(1, t, vec![big], vec![]));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::ValueBytes));
    still_serving(&mut h);
}

#[test]
fn empty_keys_inverted_spans_duplicate_writes_and_zero_limits_are_invalid_arguments() {
    // A group whose range starts at the empty key, so "" is in range and refused for itself.
    let mut h = leader_with(config());
    h.machine = decree_participant::ParticipantGroup::new(G, KeyRange::full(), 1, config());
    h.become_ready_leader(decree_types::Term(2));
    pass_gate(&mut h);
    let t = now(&mut h);
    let invalid = |e: ErrorResponse| matches!(e, ErrorResponse::InvalidArgument { .. });
    assert!(invalid(refused(
        &mut h,
        Request::Get(decree_proto::txn::Get { key: Key::MIN, read_ts: t, uncertainty_limit: None })
    )));
    let empty = Write { key: Key::MIN, value: Some(b"v".to_vec()) };
    assert!(invalid(refused(&mut h, prepare_req(1, t, vec![empty], vec![]))));
    assert!(invalid(refused(&mut h, prepare_req(1, t, vec![], vec![span("c", "b")]))));
    assert!(invalid(refused(
        &mut h,
        prepare_req(1, t, vec![put("b", "1"), put("b", "2")], vec![])
    )));
    assert!(invalid(refused(&mut h, scan_req(span("c", "b"), t, 10))));
    assert!(invalid(refused(&mut h, scan_req(span("a", "b"), t, 0))));
    assert!(invalid(refused(&mut h, get_req("b", t, Some(HlcTimestamp::ZERO)))));
    // Requests meant for a coordinator.
    let status = Request::TxnStatus(decree_proto::txn::TxnStatus { txn_id: TxnId(1), read_ts: t });
    assert!(invalid(refused(&mut h, status)));
    // Parallel commit's prevent is reserved (D-9).
    let q = Request::QueryPrepared(QueryPrepared { txn_id: TxnId(1), prevent: true });
    assert!(invalid(refused(&mut h, q)));
    still_serving(&mut h);
}

#[test]
fn a_scan_limit_above_the_bound_is_limit_exceeded() {
    let mut h = leader();
    let t = now(&mut h);
    let e = refused(&mut h, scan_req(span("b", "c"), t, u32::MAX));
    assert!(matches!(e, ErrorResponse::LimitExceeded(l) if l.bound == Bound::ScanRows));
    still_serving(&mut h);
}

#[test]
fn a_read_below_the_gc_threshold_is_below_gc_threshold() {
    let mut h = leader();
    let t = now(&mut h);
    let ttl = h.machine.config().mvcc_gc_ttl_ns();
    let later = t.add_wall_ns(ttl + 1_000);
    h.apply(later, ParticipantCommand::Gc);
    let threshold = h.machine.state().mvcc().gc_threshold();
    assert!(threshold > t);
    assert_eq!(
        refused(&mut h, get_req("b", t, None)),
        ErrorResponse::BelowGcThreshold { gc_threshold: threshold }
    );
    assert_eq!(
        refused(&mut h, scan_req(span("b", "c"), t, 5)),
        ErrorResponse::BelowGcThreshold { gc_threshold: threshold }
    );
    // A transaction whose read_ts is below the threshold votes No at apply.
    assert_eq!(
        local(&mut h, 5, 5, 1, t, vec![put("b", "v")], vec![]),
        decree_proto::txn::TxnOutcome::Aborted {
            reason: decree_proto::txn::AbortReason::VotedNo {
                group: G,
                reason: decree_proto::txn::NoReason::BelowGcThreshold
            },
            retryable: true
        }
    );
    // Once the clock is past the threshold, fresh transactions and reads go through.
    let now_ns = h.now_ns;
    h.advance_to(now_ns + ttl + 2_000_000_000);
    still_serving(&mut h);
}

#[test]
fn a_read_ts_too_far_in_the_future_is_clock_rejected() {
    let mut h = leader();
    let t = now(&mut h);
    let future = t.add_wall_ns(MAX_OFFSET_NS + 1_000_000);
    let e = refused(&mut h, get_req("b", future, None));
    assert!(matches!(e, ErrorResponse::ClockRejected { remote, .. } if remote == future));
    assert!(h.clock.hlc().last() < future, "HLC-3: the clock did not move");
    let e = refused(&mut h, prepare_req(1, future, vec![put("b", "v")], vec![]));
    assert!(matches!(e, ErrorResponse::ClockRejected { .. }));
    let e = refused(&mut h, local_req(1, 1, 1, future, vec![put("b", "v")], vec![]));
    assert!(matches!(e, ErrorResponse::ClockRejected { .. }));
    still_serving(&mut h);
}

#[test]
fn busy_when_too_many_requests_wait() {
    let config = decree_participant::ParticipantConfig { waiting_requests_max: 1, ..config() };
    let mut h = leader_with(config);
    let t = now(&mut h);
    yes(prepare(&mut h, 1, t, vec![put("b", "v")], vec![]));
    let t = now(&mut h);
    let (_, first) = h.admit(CLIENT, get_req("b", t, None));
    assert!(is_later(&first));
    let (_, second) = h.admit(CLIENT, get_req("b", t, None));
    assert!(matches!(second, decree_host::Admission::Reply(Err(ErrorResponse::Busy { .. }))));
    let _ = Response::Ack(decree_proto::txn::Ack { txn_id: TxnId(0) });
}
