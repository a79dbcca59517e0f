//! Snapshot reads through leader admission (R-1..R-5): scans, their limits and resume keys,
//! scans blocked by intents and pending prepares, uncertainty restarts, QueryPrepared, and
//! snapshot-isolation 1PC commits.

mod common;

use common::*;
use decree_host::Admission;
use decree_proto::txn::{Isolation, PreparedState, QueryPrepared, Scan, TxnOutcome};
use decree_proto::{Request, Response};
use decree_types::{ClientId, TxnId};

fn rows(
    response: decree_participant::ParticipantResponse,
) -> (Vec<(String, String)>, Option<String>) {
    match response {
        Ok(Response::ScanRows(s)) => (
            s.rows
                .into_iter()
                .map(|r| (r.key.escaped(), String::from_utf8(r.value).unwrap()))
                .collect(),
            s.resume_from.map(|k| k.escaped()),
        ),
        other => panic!("expected ScanRows, got {other:?}"),
    }
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn r5_scan_returns_visible_rows_in_key_order_and_resumes_at_the_limit() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("b", "1"), put("c", "1"), put("d", "1")]);
    let t_mid = now(&mut h);
    write_1pc(&mut h, 2, vec![put("c", "2"), del("d"), put("e", "2")]);
    let t = now(&mut h);
    let all = rows(h.request(CLIENT, scan_req(span("a", "n"), t, 100)).unwrap());
    assert_eq!(all, (vec![pair("b", "1"), pair("c", "2"), pair("e", "2")], None));
    let old = rows(h.request(CLIENT, scan_req(span("a", "n"), t_mid, 100)).unwrap());
    assert_eq!(old, (vec![pair("b", "1"), pair("c", "1"), pair("d", "1")], None));
    let first = rows(h.request(CLIENT, scan_req(span("a", "n"), t, 2)).unwrap());
    assert_eq!(first, (vec![pair("b", "1"), pair("c", "2")], Some("e".to_string())));
    let rest = rows(h.request(CLIENT, scan_req(span("e", "n"), t, 2)).unwrap());
    assert_eq!(rest, (vec![pair("e", "2")], None));
}

#[test]
fn r4_r5_a_scan_waits_on_pending_prepares_and_intents_in_its_span_only() {
    let mut h = leader();
    write_1pc(&mut h, 1, vec![put("b", "1")]);
    let t0 = now(&mut h);
    let command =
        admit_proposal(&mut h, COORD_NODE, prepare_req(2, t0, vec![put("g", "x")], vec![]));
    let t = now(&mut h);
    // Outside the span: served.
    assert_eq!(
        rows(h.request(CLIENT, scan_req(span("a", "f"), t, 10)).unwrap()).0,
        vec![pair("b", "1")]
    );
    // Inside: waits for the pending prepare, then for the intent.
    let (scan, admission) = h.admit(CLIENT, scan_req(span("a", "n"), t, 10));
    assert!(is_later(&admission));
    let at = now(&mut h);
    h.apply(at, command);
    assert!(h.commit_proposals().is_empty(), "blocked by the intent now");
    let c = now(&mut h);
    let (_, replies) = request_all(&mut h, COORD_NODE, commit_req(2, c));
    assert!(c > t);
    let (found, _) = rows(answer_for(&replies, scan).expect("answered at the commit"));
    assert_eq!(found, vec![pair("b", "1")], "committed above t: invisible");
}

#[test]
fn r5_a_scan_meeting_a_version_in_its_uncertainty_window_restarts() {
    let mut h = leader();
    let t = now(&mut h);
    let c = write_1pc(&mut h, 1, vec![put("c", "1")]);
    let scan = Request::Scan(Scan {
        span: span("a", "n"),
        read_ts: t,
        uncertainty_limit: Some(t.add_wall_ns(MAX_OFFSET_NS)),
        limit: 10,
    });
    match h.request(CLIENT, scan) {
        Some(Ok(Response::UncertaintyRestart(r))) => assert_eq!(r.new_read_ts, c),
        other => panic!("expected UncertaintyRestart, got {other:?}"),
    }
}

#[test]
fn query_prepared_answers_from_applied_state() {
    let mut h = leader();
    let t = now(&mut h);
    let p = yes(prepare(&mut h, 1, t, vec![put("b", "v")], vec![]));
    abort(&mut h, 2);
    let ask = |h: &mut H, txn: u128| match h.request(
        COORD_NODE,
        Request::QueryPrepared(QueryPrepared { txn_id: TxnId(txn), prevent: false }),
    ) {
        Some(Ok(Response::Prepared(r))) => r.state,
        other => panic!("{other:?}"),
    };
    assert_eq!(ask(&mut h, 1), PreparedState::Prepared { prepare_ts: p });
    assert_eq!(ask(&mut h, 2), PreparedState::Aborted);
    assert_eq!(ask(&mut h, 3), PreparedState::Unknown);
    let c = commit(&mut h, 1);
    assert_eq!(ask(&mut h, 1), PreparedState::Committed { commit_ts: c });
}

#[test]
fn snapshot_isolation_1pc_does_not_validate_or_lock_read_spans() {
    let mut h = leader();
    let t = now(&mut h);
    write_1pc(&mut h, 1, vec![put("c", "newer")]);
    let mut request = local_req(2, 2, 1, t, vec![put("b", "v")], vec![span("c", "d")]);
    // Serializable: the newer version in the read span is a stale read.
    let serializable = h.request(CLIENT, request.clone());
    assert!(matches!(
        serializable,
        Some(Ok(Response::Outcome(o))) if matches!(o.outcome, TxnOutcome::Aborted { .. })
    ));
    if let Request::CommitLocal(local) = &mut request {
        local.txn_id = TxnId(3);
        local.client_id = ClientId(3);
        local.isolation = Isolation::Snapshot;
    }
    assert!(matches!(
        h.request(CLIENT, request),
        Some(Ok(Response::Outcome(o))) if matches!(o.outcome, TxnOutcome::Committed { .. })
    ));
}

#[test]
fn a_refused_prepare_blocks_no_read() {
    let mut h = leader();
    let t = now(&mut h);
    let _first = admit_proposal(&mut h, COORD_NODE, prepare_req(1, t, vec![put("b", "x")], vec![]));
    let _refused = admit_proposal(
        &mut h,
        COORD_NODE,
        prepare_req(2, t, vec![put("b", "y"), put("c", "y")], vec![]),
    );
    let t = now(&mut h);
    // c is written only by the refused one: the read does not wait.
    assert!(matches!(h.admit(CLIENT, get_req("c", t, None)).1, Admission::Reply(Ok(_))));
    assert!(is_later(&h.admit(CLIENT, get_req("b", t, None)).1));
}
