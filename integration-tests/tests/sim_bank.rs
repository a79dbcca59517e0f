//! The bank workload in the simulator (TESTING.md "The bank check"): participant and
//! coordinator groups on every node, transfers and audits under faults, the transaction
//! checkers. A fixed regression set plus fresh seeds; `scripts/sim.sh --workload bank` sweeps.

use std::collections::BTreeSet;

use decree_sim::bank::{self, BankConfig};

/// Fresh seeds run by default (`DECREE_BANK_SEEDS` overrides), from `DECREE_BANK_SEED_START`.
const FRESH_SEEDS: u64 = 300;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs every config; fails with every failure's replay command. Returns the crash points
/// reached.
fn run_all(configs: Vec<BankConfig>) -> BTreeSet<&'static str> {
    let mut failed = Vec::new();
    let mut reached = BTreeSet::new();
    for config in configs {
        let outcome = bank::run(&config);
        reached.extend(outcome.crash_points.iter().copied());
        if !outcome.passed() {
            failed.push(outcome.to_string());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    reached
}

#[test]
fn bank_regression_and_fresh_seeds_pass_every_checker() {
    let start = env("DECREE_BANK_SEED_START", 1);
    let n = env("DECREE_BANK_SEEDS", FRESH_SEEDS);
    let mut configs: Vec<BankConfig> =
        bank::REGRESSION_SEEDS.iter().map(|(s, _)| BankConfig::new(*s)).collect();
    configs.extend((start..start + n).map(BankConfig::new));
    let reached = run_all(configs);
    // Every crash point is hit by at least one seed of the set.
    for point in bank::CRASH_POINTS {
        assert!(reached.contains(point), "no seed reached the crash point: {point}");
    }
}

#[test]
fn bank_variants_two_coordinator_groups_and_five_nodes() {
    let mut two = BankConfig::new(7);
    two.coordinator_groups = 2;
    let mut five = BankConfig::new(8);
    five.nodes = 5;
    run_all(vec![two, five]);
}

#[test]
fn bank_quiet_run_commits_transfers_and_audits() {
    let mut config = BankConfig::new(1);
    config.faults = false;
    let outcome = bank::run(&config);
    assert!(outcome.passed(), "{outcome}");
    assert!(outcome.committed > 20, "{outcome}");
    assert!(outcome.audits > 3, "{outcome}");
}

#[test]
fn the_checkers_catch_a_cluster_that_forgets_its_disk() {
    // A checker that cannot fail proves nothing: with crashed nodes coming back empty,
    // committed transfers and votes are lost and some seed must fail a checker.
    let caught = (1..=40).any(|seed| {
        let mut config = BankConfig::new(seed);
        config.amnesia = true;
        !bank::run(&config).passed()
    });
    assert!(caught, "no checker caught a cluster that forgets its disk");
}

#[test]
fn a_bank_seed_replays_exactly() {
    let config = BankConfig::new(42);
    let (a, b) = (bank::run(&config), bank::run(&config));
    let shape = |o: &bank::BankOutcome| {
        (o.sim_ms, o.committed, o.aborted, o.audits, o.crashes, o.recoveries.clone())
    };
    assert_eq!(shape(&a), shape(&b));
    assert!(a.passed(), "{a}");
}
