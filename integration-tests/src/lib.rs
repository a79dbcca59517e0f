//! decree's deterministic whole-cluster simulator (TESTING.md §3).
//!
//! It runs the **real** [`decree_host::Host`] code of N nodes — the host with its machines,
//! proposal table, HLC and envelope checks, over the same Raft node, driver loop and
//! write-ahead log the shell runs — in one thread, and swaps only the world around them: the
//! network ([`network`]), the disks (`MemDisk`, which loses unsynced writes on a crash and
//! can tear the last write), and the clocks ([`clock`]: monotonic, and physical with bounded
//! skew and occasional violations). A single `u64` seed decides everything: every random
//! choice comes from a [`decree_types::DetRng`] forked from it in a fixed order, the event
//! queue is a `BTreeMap` ordered by (time, sequence number), and nothing reads the system
//! clock, spawns a thread or iterates a `HashMap`. Replaying a seed therefore replays the run
//! exactly, which the [`trace`] hash proves.
//!
//! # World and workloads
//!
//! [`world`] is reusable: events, network, disks, clocks, faults, and the Raft-level checkers
//! (election safety, leader append-only, log matching, leader completeness, the commit rule,
//! state machine safety, liveness, leadership transfer after healing). A
//! [`workload::Workload`] plugs into it: the machines the hosts run, the client, and the
//! checkers of what answers promise. [`replicated_log`] is the first plug-in: command-log
//! groups (and register groups beside them, a second kind of machine on the same hosts);
//! [`bank`] is the second: transactions.
//!
//! # The event loop ([`sim::run`])
//!
//! 1. Derive the run's shape from the seed: 2–3 groups with a replica on every node, Raft and
//!    WAL limits (tiny append, apply and snapshot-chunk sizes, small segments), how often the
//!    hosts snapshot, and the fault plan ([`faults`]).
//! 2. Open every host on an empty `MemDisk`; schedule ticks, the client, the first fault, the
//!    periodic log check and the end of the faulty phase.
//! 3. Pop the earliest event and handle it; every host input (delivered envelopes, a tick, a
//!    client request) schedules one `process` call shortly after, so inputs arriving
//!    meanwhile share its single fsync. `process` sends envelopes through the seeded network
//!    (delay, loss, duplication, reordering, partitions, clogging) and hands the world every
//!    node output (roles feed election safety, leader completeness and log matching; applied
//!    entries feed state machine safety) and the client its answers: "applied at index i" is
//!    an acknowledgement, checked against the entry committed at i. After each iteration a
//!    leader's log and commit index feed the append-only, commit-rule and committed-entries
//!    checkers; logs are also compared after every crash and restart (with the recovered WAL).
//! 4. Faulty phase: crashes (with or without a torn last write), fsync failures (the node must
//!    stop), partitions of every shape, swizzle-clogging, clock jumps, physical clocks out of
//!    bound (HLC-3 refusals; HLC-6 stops the nodes that are off), network changes.
//! 5. Healing phase: faults off, links healed, clocks right, every node restarted. Each group
//!    must elect exactly one leader that every replica follows, acknowledge a command sent
//!    after the heal, and every replica must apply every acknowledged entry — within a bound;
//!    the workload's pending answers must be in too (every read issued before the last two
//!    election timeouts, under steady load before the heal, served or failed: RAFT-3). Then
//!    each group's leader hands leadership to a caught-up follower, which must lead within an
//!    election timeout (RAFT-6).
//! 6. Final checks: log matching, replicas that applied the same entries have equal machine
//!    digests, and every acknowledged command is at its index in every replica's log.
//!
//! A failure names the broken invariant and prints the single command that replays the seed.
//!
//! # Running it
//!
//! ```text
//! cargo test -p decree-sim                                   # 2000 seeds + regressions (CI)
//! DECREE_SIM_SEED_START=100000 cargo test -p decree-sim      # ... other seeds
//! scripts/sim.sh --seeds 10000 --start 5000                  # a long sweep, in release
//! cargo run --release -p decree-sim --bin sim -- --seed 1234 [--verbose]   # replay one
//! ```
//!
//! # The bank workload ([`bank`])
//!
//! The second workload plug-in, on the same world and under the same faults: every node hosts
//! `Either<ParticipantGroup, CoordinatorGroup>`, deterministic clients transfer money and
//! audit, and the transaction checkers run (bank conservation, INV-A1 atomicity, acknowledged
//! commits kept, P-6, and after healing: no intent, records compacted, one leader, equal
//! digests) beside every Raft-level checker of the world. The workload places the crash points
//! of the commit protocol through the world's iteration hook.
//!
//! ```text
//! cargo test -p decree-sim --test sim_bank                 # regressions + 300 fresh seeds
//! scripts/sim.sh --workload bank --seeds 1000              # a sweep, in release
//! target/release/sim --workload bank --recovery --seeds 1000   # recovery-time figures
//! ```
//!
//! # Real processes
//!
//! [`processes`] is the other half of the crate: the same node code as real OS processes
//! (`decree-lognode`) over real QUIC, with a harness, a client, the leader-kill scenario and
//! the replication benchmark (TESTING.md §4).
//!
//! ```text
//! cargo test -p decree-sim --test 'process_*'   # leader SIGKILL loop, foreign CA, SIGTERM, fsync
//! scripts/demo.sh                               # the leader-kill demo, about a minute
//! scripts/bench.sh replication                  # throughput and latency, three processes
//! ```

pub mod bank;
pub mod check;
pub mod clock;
pub mod faults;
pub mod network;
pub mod processes;
pub mod replicated_log;
pub mod sim;
pub mod trace;
pub mod workload;
pub mod world;

pub use sim::{run, Outcome, SimConfig};

/// Seeds that once failed, kept as regression tests (see `tests/sim_seeds.rs`), with what
/// each one found. A seed's run depends on the simulator's version: after a change to how the
/// simulator draws random numbers, re-check that each still reaches the path it was kept for
/// (`sim --seed S --verbose`).
pub const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (387, "an fsync failure armed before a kill fires in the restarted node's recovery fsync"),
    (625, "the same, on another node and segment"),
    (713, "recovery refuses to start twice in a row"),
    (
        19033,
        "a torn iteration kept entries of a term above the durable hard state, and then (with \
         the hard state first) a commit index above the entries that replaced a stale tail",
    ),
    (
        3007040,
        "a forged batch delivered to a host that had just stopped itself (HLC-6, in its \
         timer): a stopped host takes and counts nothing, so the forgery check must skip it",
    ),
];

/// Seeds that failed in steady-load mode ([`SimConfig::steady_load`]): a follower needing a
/// snapshot never caught up, because each newer snapshot restarted the transfer from offset 0
/// (fixed in the Raft core: a transfer keeps the snapshot it started with until it is done).
pub const STEADY_LOAD_REGRESSION_SEEDS: &[u64] = &[2, 13, 23, 35, 179, 228, 300, 313];
