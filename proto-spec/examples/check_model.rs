//! Runs the commit-protocol model (`proto-spec/tests/model/`) at a chosen
//! bound and prints the state count, depth, time and every discovery.
//!
//! ```text
//! cargo run --release -p decree-proto --example check_model -- [default|two-2pc|large] [threads]
//! ```
//!
//! Environment overrides: `DROPS=n`, `FAILOVERS=n`, `TERMINATION=0` (skip the
//! INV-A8 run, which dominates the time per state).
//!
//! `two-2pc` is two conflicting 2PC transactions without failover.
//! `large` is the bound `VERIFICATION.md` reports as the large check: three
//! groups, a 2PC transaction over all three and a conflicting 1PC
//! transaction, two coordinator failovers, one lost message.

#[path = "../tests/model/mod.rs"]
mod model;

use std::time::Instant;

use model::{CommitModel, Config};
use stateright::{Checker, Expectation, Model};

fn main() {
    let mut args = std::env::args().skip(1);
    let bound = args.next().unwrap_or_else(|| "large".to_string());
    let threads: usize =
        args.next().map(|t| t.parse().expect("threads must be a number")).unwrap_or(2);
    let cfg = match bound.as_str() {
        "default" => Config::default_bounds(),
        "two-2pc" => Config::two_2pc(),
        "large" => Config::large_bounds(),
        other => {
            eprintln!("unknown bound {other:?}; use default, two-2pc or large");
            std::process::exit(2);
        }
    };
    let env_num = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u8>().expect(name));
    let mut cfg = cfg;
    if let Some(d) = env_num("DROPS") {
        cfg.drops = d;
    }
    if let Some(f) = env_num("FAILOVERS") {
        cfg.failovers = f;
    }
    if env_num("TERMINATION") == Some(0) {
        cfg.check_termination = false;
    }
    println!("checking {bound}: {cfg:?} on {threads} threads");
    let started = Instant::now();
    let checker = CommitModel::new(cfg).checker().threads(threads).spawn_bfs().join();
    let elapsed = started.elapsed();
    println!(
        "{} unique states ({} generated), max depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        elapsed
    );
    let mut failed = false;
    for p in checker.model().properties() {
        let found = checker.discovery(p.name).is_some();
        let ok = match p.expectation {
            Expectation::Sometimes => found,
            Expectation::Always | Expectation::Eventually => !found,
        };
        failed |= !ok;
        println!("  {:4} {:?} {}", if ok { "ok" } else { "FAIL" }, p.expectation, p.name);
        if !ok {
            if let Some(path) = checker.discovery(p.name) {
                println!("{path}");
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
