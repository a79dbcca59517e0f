//! The default model check of the commit protocol
//! (`proto-spec/spec/commit-protocol.md`; what is checked: `VERIFICATION.md`).
//!
//! Two participant groups, a 2PC transaction over both and a conflicting 1PC
//! transaction on group 0, one coordinator failover, one lost message,
//! unbounded duplication and reordering. Every `always` property (INV-A1..A5,
//! A7, and INV-A8 through the fault-free run) must hold in every reachable
//! state and every `sometimes` property must have an example.

mod model;

use std::time::Instant;

use model::{CommitModel, Config};
use stateright::{Checker, Model};

/// The number of distinct states the default bound reaches. A change to the
/// model changes this number; update it together with `VERIFICATION.md`.
const DEFAULT_UNIQUE_STATES: usize = 127_575;

#[test]
fn default_bound_holds_every_property() {
    let started = Instant::now();
    let checker =
        CommitModel::new(Config::default_bounds()).checker().threads(2).spawn_bfs().join();
    println!(
        "default bound: {} unique states, {} generated, max depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), DEFAULT_UNIQUE_STATES);
}

/// The INV-A8 helper on the hardest hand-picked state: both participants
/// prepared, then a failover lost `StartCommit`, so the coordinator has never
/// heard of the transaction. The fault-free run must still resolve it (REC-3
/// queries, REC-4 tombstone, `Aborted` answers).
#[test]
fn fault_free_run_resolves_prepares_orphaned_by_a_failover() {
    use model::{Action, Entry, Msg};
    let model = CommitModel::new(Config::default_bounds());
    let mut s = model.init_states().remove(0);
    for action in [
        Action::Deliver(Msg::CommitTxn { txn: 0 }),
        Action::Deliver(Msg::Prepare { txn: 0, group: 0 }),
        Action::Deliver(Msg::Prepare { txn: 0, group: 1 }),
        Action::CoordFailover,
    ] {
        s = model.next_state(&s, action).expect("action is enabled");
    }
    assert!(matches!(s.entries[0][0], Entry::Prepared(_)));
    assert!(matches!(s.entries[1][0], Entry::Prepared(_)));
    assert!(s.attempts[0].is_none());
    assert!(!model.resolved(&s));
    assert!(model.fault_free_run_resolves(&s));
}
