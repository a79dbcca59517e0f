//! The default model check of the commit protocol (spec
//! `proto-spec/spec/commit-protocol.md`, `VERIFICATION.md`).

mod model;

use std::time::Instant;

use model::{CommitModel, Config};
use stateright::{Checker, Model};

#[test]
fn default_bounds_hold_every_property() {
    let started = Instant::now();
    let checker =
        CommitModel::new(Config::default_bounds()).checker().threads(2).spawn_bfs().join();
    println!(
        "default bounds: {} unique states, {} generated, max depth {}, {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 0);
}
