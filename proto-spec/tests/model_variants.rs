//! Broken variants of the commit protocol: each deliberate bug must be caught
//! by the property that guards against it (`VERIFICATION.md`, "Broken
//! variants"). The checker stops as soon as every expected property has a
//! counterexample.

mod model;

use std::collections::BTreeSet;

use model::{Bug, CommitModel, Config};
use stateright::{Checker, HasDiscoveries, Model};

/// Runs `cfg` with `bug` and asserts that every property in `expected` has a
/// counterexample. Returns the length of the shortest one found for the first.
fn assert_violates(cfg: Config, bug: Bug, expected: &[&'static str]) -> usize {
    let checker = CommitModel::new(cfg.with_bug(bug))
        .checker()
        .threads(2)
        .finish_when(HasDiscoveries::AllOf(expected.iter().copied().collect::<BTreeSet<_>>()))
        .spawn_bfs()
        .join();
    let mut first_len = 0;
    for (i, name) in expected.iter().enumerate() {
        let path = checker.discovery(name);
        assert!(path.is_some(), "{bug:?}: expected a counterexample for {name:?}");
        let path = path.unwrap();
        println!("{bug:?} violates {name:?}: {} steps\n{path}", path.clone().into_actions().len());
        if i == 0 {
            first_len = path.into_actions().len();
        }
    }
    first_len
}

/// (a) REC-4 answers `Aborted` for an unknown txn without a tombstone: after a
/// failover lost `StartCommit`, a participant is told `Aborted`, then the
/// client's retried `CommitTxn` starts a fresh attempt that counts the stale
/// `Yes` votes and commits.
#[test]
fn abort_without_tombstone_violates_presumed_abort_and_agreement() {
    assert_violates(
        Config::default_bounds(),
        Bug::AbortWithoutTombstone,
        &[model::A5_TOMBSTONE_FIRST, model::A1_AGREEMENT],
    );
}

/// (b) A committed record deleted before every participant acked: the
/// participant still in doubt asks, finds nothing, and presumed abort answers
/// `Aborted`.
#[test]
fn gc_before_all_acks_violates_agreement_and_presumed_abort() {
    assert_violates(
        Config::default_bounds(),
        Bug::GcBeforeAllAcks,
        &[model::A1_AGREEMENT, model::A5_NEVER_CONTRADICTS],
    );
}

/// (c) A participant aborts a prepared txn on a timeout.
#[test]
fn participant_timeout_abort_violates_no_unilateral_abort_and_agreement() {
    assert_violates(
        Config::default_bounds(),
        Bug::ParticipantTimeoutAbort,
        &[model::A4_NO_UNILATERAL_ABORT, model::A1_AGREEMENT],
    );
}

/// (d) The coordinator decides commit with a vote still missing.
#[test]
fn commit_without_all_yes_violates_validity() {
    assert_violates(
        Config::default_bounds(),
        Bug::CommitWithoutAllYes,
        &[model::A2_VALIDITY, model::A1_AGREEMENT],
    );
}

/// (e) protocol.md's literal REC-7(a): delete the record after all acks. A
/// client's `TxnStatus` (or a delayed duplicate `QueryTxn`) then finds
/// nothing and is told `Aborted` for a committed txn — why the spec keeps an
/// outcome stub (D-4).
#[test]
fn delete_record_after_acks_violates_presumed_abort_and_stability() {
    assert_violates(
        Config::default_bounds(),
        Bug::DeleteRecordAfterAcks,
        &[model::A5_NEVER_CONTRADICTS, model::A3_STABILITY],
    );
}

/// (f) Participants never query (no REC-3): a participant prepared for a txn
/// whose `StartCommit` died with the coordinator leader waits forever. Only
/// the termination check (INV-A8) can see this.
#[test]
fn no_in_doubt_query_violates_termination() {
    assert_violates(Config::default_bounds(), Bug::NoInDoubtQuery, &[model::A8_TERMINATION]);
}
