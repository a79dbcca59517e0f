//! The simulator in the normal test suite: determinism, a quiet run, the regression seeds and
//! a sweep of at least 200 seeds (TESTING.md §3).
//!
//! The sweep's seeds start at `DECREE_SIM_SEED_START` (default 0), so CI can run fresh seeds
//! while any failure still prints the one command that replays it.

use decree_sim::{run, SimConfig, REGRESSION_SEEDS, STEADY_LOAD_REGRESSION_SEEDS};

/// Seeds per sweep test: four tests, 2000 seeds, run in parallel on the harness threads.
const SEEDS_PER_SWEEP: u64 = 500;

fn seed_start() -> u64 {
    std::env::var("DECREE_SIM_SEED_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn sweep(part: u64) {
    let first = seed_start() + part * SEEDS_PER_SWEEP;
    let mut failures = Vec::new();
    for seed in first..first + SEEDS_PER_SWEEP {
        let outcome = run(&SimConfig::new(seed));
        if !outcome.passed() {
            failures.push(outcome.to_string());
        }
    }
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn sweep_part_0() {
    sweep(0);
}

#[test]
fn sweep_part_1() {
    sweep(1);
}

#[test]
fn sweep_part_2() {
    sweep(2);
}

#[test]
fn sweep_part_3() {
    sweep(3);
}

#[test]
fn regression_seeds_pass() {
    for &(seed, found) in REGRESSION_SEEDS {
        let outcome = run(&SimConfig::new(seed));
        assert!(outcome.passed(), "regression seed {seed} ({found}) fails again:\n{outcome}");
    }
    // The recovery-fsync seeds still reach the path they were kept for.
    for seed in [387, 625, 713] {
        let outcome = run(&SimConfig::new(seed));
        assert!(
            outcome.refused_starts > 0,
            "seed {seed} no longer hits a recovery fsync: {outcome}"
        );
    }
}

#[test]
fn two_kinds_of_machine_share_each_host() {
    // Register groups beside the command-log groups, on the same nodes and WALs: both kinds
    // acknowledge writes and serve linearizable reads under faults.
    for seed in [1, 7, 42, 100, 387] {
        let outcome = run(&SimConfig { register_groups: 2, ..SimConfig::new(seed) });
        assert!(outcome.passed(), "{outcome}");
        assert!(outcome.acked > 0 && outcome.reads > 0, "{outcome}");
    }
}

#[test]
fn physical_clock_violations_stop_the_node_that_is_off() {
    // Seeds that step a physical clock out of its bound see HLC-6 stop nodes, and pass.
    let outcomes: Vec<_> = (0..60).map(|s| run(&SimConfig::new(s))).collect();
    assert!(outcomes.iter().all(|o| o.passed()));
    assert!(outcomes.iter().map(|o| o.wall_violations).sum::<usize>() > 5);
    assert!(outcomes.iter().map(|o| o.clock_stops).sum::<usize>() > 0);
}

#[test]
fn same_seed_same_trace_and_different_seeds_differ() {
    let a = run(&SimConfig::new(7));
    let b = run(&SimConfig::new(7));
    let c = run(&SimConfig::new(8));
    assert!(a.passed() && c.passed(), "{a}\n{c}");
    assert_eq!(a.trace_hash, b.trace_hash, "replaying a seed must give the same trace");
    assert_eq!(a.events, b.events);
    assert_ne!(a.trace_hash, c.trace_hash, "different seeds must take different paths");
}

#[test]
fn quiet_cluster_elects_and_commits() {
    let mut config = SimConfig::new(1);
    config.faults = false;
    config.faulty_ms = Some(3_000);
    let outcome = run(&config);
    assert!(outcome.passed(), "{outcome}");
    assert!(outcome.acked > 50, "a quiet cluster acknowledges steadily: {outcome}");
    assert!(outcome.reads > 10, "linearizable reads are served: {outcome}");
    assert_eq!(outcome.crashes, 0);
}

#[test]
fn sweeps_exercise_faults_and_elections() {
    // A run that never crashed or elected twice proves little: check the generator bites.
    let outcomes: Vec<_> = (100..110).map(|s| run(&SimConfig::new(s))).collect();
    assert!(
        outcomes.iter().all(|o| o.passed()),
        "{:?}",
        outcomes.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert!(outcomes.iter().map(|o| o.crashes).sum::<usize>() > 0);
    assert!(outcomes.iter().any(|o| o.elections > 2 * 3));
    assert!(outcomes.iter().all(|o| o.acked > 0));
}

#[test]
fn five_nodes_run() {
    let mut config = SimConfig::new(11);
    config.nodes = 5;
    let outcome = run(&config);
    assert!(outcome.passed(), "{outcome}");
}

#[test]
fn checkers_catch_a_cluster_that_forgets_acknowledged_writes() {
    // Nodes that restart with empty disks break durability; the checkers must notice within a
    // few seeds (acknowledged entries lost, or two different entries applied at one index).
    let caught: Vec<String> = (0..40)
        .map(|seed| run(&SimConfig { amnesia: true, ..SimConfig::new(seed) }))
        .filter_map(|o| o.violation.map(|v| v.invariant.to_string()))
        .collect();
    assert!(caught.len() >= 3, "only {} of 40 broken runs were caught: {caught:?}", caught.len());
}

#[test]
fn lagging_replicas_catch_up_under_steady_load() {
    // The client keeps proposing while healing; a replica that needs a snapshot must still
    // catch up (regression seeds first, then a short sweep).
    let seeds = STEADY_LOAD_REGRESSION_SEEDS.iter().copied().chain(1000..1030);
    let failures: Vec<String> = seeds
        .map(|seed| run(&SimConfig { steady_load: true, ..SimConfig::new(seed) }))
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
