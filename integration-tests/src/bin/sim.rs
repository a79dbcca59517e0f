//! `sim`: run the deterministic simulator for one seed (replay) or a sweep of seeds.
//!
//! ```text
//! cargo run --release -p decree-sim --bin sim -- --seed 1234            # replay one seed
//! cargo run --release -p decree-sim --bin sim -- --seed 1234 --verbose  # ... printing every event
//! cargo run --release -p decree-sim --bin sim -- --seeds 1000 --start 5000
//! ```
//!
//! Exits non-zero if any seed fails; each failure prints the command that replays it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use decree_sim::sim::mutation_by_name;
use decree_sim::{run, SimConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// decree's deterministic whole-cluster simulator.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Run exactly this seed (replay); prints the trace hash.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --start.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of a sweep.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Number of groups (default: 2 or 3, by seed).
    #[arg(long)]
    groups: Option<usize>,
    /// Length of the faulty phase in simulated ms (default: 4-20 s, by seed).
    #[arg(long)]
    faulty_ms: Option<u64>,
    /// Bound for convergence after healing, simulated ms.
    #[arg(long, default_value_t = 30_000)]
    heal_bound_ms: u64,
    /// Run without faults.
    #[arg(long)]
    no_faults: bool,
    /// Print every event of the run (single seed only).
    #[arg(long)]
    verbose: bool,
    /// Deliberately break durability (crashed nodes restart with empty disks) to check that
    /// the checkers catch it: seeds are expected to fail.
    #[arg(long)]
    amnesia: bool,
    /// Keep proposing while healing: lagging replicas must catch up under load.
    #[arg(long)]
    steady_load: bool,
    /// Register groups hosted beside the command-log groups (a second kind of machine).
    #[arg(long, default_value_t = 0)]
    register_groups: usize,
    /// Deliberately break one rule of the Raft core to check that the checkers catch it:
    /// commit-old-term, no-election-restriction or truncate-on-duplicate-append.
    #[arg(long, default_value = "none")]
    mutation: String,
    /// `log` (the replicated-log workload) or `bank` (transactions: participant and
    /// coordinator groups, transfers and audits; `--groups` participant groups).
    #[arg(long, default_value = "log")]
    workload: String,
    /// Bank workload: measure recovery after one coordinator leader crash, no other fault.
    #[arg(long)]
    recovery: bool,
    /// Bank workload: Raft heartbeat and minimum election timeout, ms (`50,300`), instead of
    /// the product's defaults.
    #[arg(long, value_delimiter = ',')]
    timeouts_ms: Vec<u64>,
    /// Coordinator groups of the bank workload.
    #[arg(long, default_value_t = 1)]
    coordinator_groups: usize,
}

/// The bank workload: every seed's outcome on a failure (or for one seed), then a summary
/// with the recovery times measured after coordinator leader crashes.
fn bank_main(args: &Args, start: u64, count: u64) -> ExitCode {
    use decree_sim::bank::{self, BankConfig};
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut recoveries = Vec::new();
    let mut points = std::collections::BTreeMap::new();
    let (mut committed, mut audits, mut crashes) = (0, 0, 0);
    for seed in start..start.saturating_add(count) {
        let mut config = BankConfig::new(seed);
        config.nodes = args.nodes;
        config.participant_groups = args.groups.unwrap_or(3);
        config.coordinator_groups = args.coordinator_groups;
        config.faults = !args.no_faults && !args.recovery;
        config.recovery = args.recovery;
        config.amnesia = args.amnesia;
        if let [heartbeat, election] = args.timeouts_ms[..] {
            config.timeouts_ms = Some((heartbeat, election));
        }
        config.verbose = args.verbose && count == 1;
        if let Some(ms) = args.faulty_ms {
            config.faulty_ms = ms;
        }
        let outcome = bank::run(&config);
        if count == 1 || !outcome.passed() {
            println!("{outcome}");
        }
        committed += outcome.committed;
        audits += outcome.audits;
        crashes += outcome.coordinator_crashes;
        recoveries.extend(outcome.recoveries.iter().copied());
        for point in &outcome.crash_points {
            *points.entry(*point).or_insert(0u64) += 1;
        }
        if !outcome.passed() {
            failures.push(outcome);
        }
        let done = seed - start + 1;
        if count > 1 && done % 100 == 0 {
            eprintln!("{done}/{count} seeds, {} failed", failures.len());
        }
    }
    println!(
        "{} passed, {} failed ({count} seeds in {:.1} s); {committed} transfers committed, \
         {audits} audits, {crashes} coordinator leader crashes mid-commit",
        count - failures.len() as u64,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for (point, seeds) in &points {
        println!("crash point reached in {seeds} seeds: {point}");
    }
    if !recoveries.is_empty() {
        let pct = |v: &mut Vec<u64>, p: usize| {
            v.sort_unstable();
            v[(v.len() * p / 100).min(v.len() - 1)] / 1_000_000
        };
        let mut total: Vec<u64> = recoveries.iter().map(|r| r.1).collect();
        let mut election: Vec<u64> = recoveries.iter().map(|r| r.0).collect();
        let mut resolution: Vec<u64> = recoveries.iter().map(|r| r.1 - r.0).collect();
        println!(
            "recovery after a coordinator leader crash ({} samples), ms: total p50 {} p99 {} \
             max {}; election p50 {} p99 {} max {}; resolution p50 {} p99 {} max {}",
            recoveries.len(),
            pct(&mut total, 50),
            pct(&mut total, 99),
            pct(&mut total, 100),
            pct(&mut election, 50),
            pct(&mut election, 99),
            pct(&mut election, 100),
            pct(&mut resolution, 50),
            pct(&mut resolution, 99),
            pct(&mut resolution, 100),
        );
    }
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("replay failures with:");
    for f in &failures {
        let invariant = f.violation.as_ref().map(|v| v.invariant).unwrap_or("");
        println!("  {}   # {invariant}", f.config.replay_command());
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(mutation) = mutation_by_name(&args.mutation) else {
        eprintln!("unknown --mutation {}", args.mutation);
        return ExitCode::FAILURE;
    };
    let config = |seed| SimConfig {
        seed,
        nodes: args.nodes,
        groups: args.groups,
        faulty_ms: args.faulty_ms,
        heal_bound_ms: args.heal_bound_ms,
        faults: !args.no_faults,
        verbose: args.verbose && args.seeds.is_none(),
        amnesia: args.amnesia,
        steady_load: args.steady_load,
        register_groups: args.register_groups,
        mutation,
    };
    if args.nodes < 1 {
        eprintln!("--nodes must be at least 1");
        return ExitCode::FAILURE;
    }
    let (start, count) = match (args.seed, args.seeds) {
        (Some(seed), _) => (seed, 1),
        (None, Some(n)) => (args.start, n),
        (None, None) => (args.start, 1),
    };
    if args.workload == "bank" {
        return bank_main(&args, start, count);
    }
    if args.workload != "log" {
        eprintln!("--workload is log or bank");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let bar = if count > 1 {
        let bar = ProgressBar::new(count);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds, {elapsed} elapsed, eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut failures = Vec::new();
    for seed in start..start.saturating_add(count) {
        let outcome = run(&config(seed));
        if count == 1 {
            println!("{outcome}");
        } else if !outcome.passed() {
            // `println` on a hidden bar (no terminal: CI logs) prints nothing.
            if bar.is_hidden() {
                println!("{outcome}");
            } else {
                bar.println(outcome.to_string());
            }
        }
        if !outcome.passed() {
            failures.push(outcome);
            bar.set_message(format!("{} failed", failures.len()));
        }
        let done = seed - start + 1;
        if count > 1 && bar.is_hidden() && done % 100 == 0 {
            eprintln!(
                "{done}/{count} seeds, {} failed, {:.0} s",
                failures.len(),
                started.elapsed().as_secs_f64()
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} passed, {} failed ({count} seeds in {secs:.1} s)",
        count - failures.len() as u64,
        failures.len()
    );
    if failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("replay failures with:");
    for f in &failures {
        println!(
            "  {}   # {}",
            f.config.replay_command(),
            f.violation.as_ref().map(|v| v.invariant).unwrap_or("")
        );
    }
    ExitCode::FAILURE
}
