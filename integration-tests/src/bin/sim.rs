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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
