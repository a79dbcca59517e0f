//! A simulation run: the world ([`crate::world`]) with a workload plug-in
//! ([`crate::workload::Workload`]) on it — by default the replicated-log workload
//! ([`crate::replicated_log`]). See the crate docs for the loop.

use std::fmt;
use std::time::Duration;

use decree_raft::core::{Mutation, RaftConfig};
use decree_raft::node::NodeConfig;
use decree_raft::wal::WalConfig;
use decree_types::DetRng;

use crate::check::Violation;
use crate::faults::FaultPlan;
use crate::network::{NetParams, Network};
use crate::replicated_log::ReplicatedLog;
use crate::workload::Workload;
use crate::world::{Iteration, Note, Shape, World};

pub use crate::replicated_log::{SimCommand, SimEnvelope, SimMachine, SimRequest, SimResponse};

/// What a run does. `None` fields are decided by the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Decides everything else.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of groups, each with a replica on every node; `None`: 2 or 3 by seed.
    pub groups: Option<usize>,
    /// Length of the faulty phase in simulated ms; `None`: 4–20 s by seed.
    pub faulty_ms: Option<u64>,
    /// The healing phase must converge within this many simulated ms.
    pub heal_bound_ms: u64,
    /// Inject faults in the faulty phase (off: a quiet run, for smoke tests).
    pub faults: bool,
    /// Print every event.
    pub verbose: bool,
    /// Deliberately break durability: a crashed node comes back with an empty disk. Used only
    /// to show that the checkers catch lost data (a checker that cannot fail proves nothing).
    pub amnesia: bool,
    /// Keep the client proposing while healing, instead of quiescing each group once it
    /// acknowledged a post-heal proposal: lagging replicas must catch up under load.
    pub steady_load: bool,
    /// Register groups hosted beside the command-log groups (the second kind of machine).
    pub register_groups: usize,
    /// Deliberately break one rule of the Raft core (see [`Mutation`]), to show that the
    /// checkers catch it.
    pub mutation: Mutation,
}

impl SimConfig {
    /// The defaults for `seed`: 3 nodes, everything else by seed.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: 3,
            groups: None,
            faulty_ms: None,
            heal_bound_ms: 30_000,
            faults: true,
            verbose: false,
            amnesia: false,
            steady_load: false,
            register_groups: 0,
            mutation: Mutation::None,
        }
    }

    /// The one command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd =
            format!("cargo run --release -p decree-sim --bin sim -- --seed {}", self.seed);
        let d = SimConfig::new(self.seed);
        if self.nodes != d.nodes {
            cmd += &format!(" --nodes {}", self.nodes);
        }
        if let Some(g) = self.groups {
            cmd += &format!(" --groups {g}");
        }
        if let Some(ms) = self.faulty_ms {
            cmd += &format!(" --faulty-ms {ms}");
        }
        if self.heal_bound_ms != d.heal_bound_ms {
            cmd += &format!(" --heal-bound-ms {}", self.heal_bound_ms);
        }
        if !self.faults {
            cmd += " --no-faults";
        }
        if self.amnesia {
            cmd += " --amnesia";
        }
        if self.steady_load {
            cmd += " --steady-load";
        }
        if self.register_groups > 0 {
            cmd += &format!(" --register-groups {}", self.register_groups);
        }
        if self.mutation != Mutation::None {
            cmd += &format!(" --mutation {}", mutation_name(self.mutation));
        }
        cmd
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What ran.
    pub config: SimConfig,
    /// The trace hash: equal for equal seeds.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end, ms.
    pub sim_ms: u64,
    /// (group, term) pairs that had a leader.
    pub elections: usize,
    /// Acknowledged proposals.
    pub acked: usize,
    /// Entries applied somewhere, over all groups.
    pub committed: usize,
    /// Linearizable reads served and checked.
    pub reads: usize,
    /// Crashes and fsync failures injected.
    pub crashes: usize,
    /// Times a node refused to start (an injected fsync failure hit its recovery).
    pub refused_starts: usize,
    /// Physical clocks stepped out of their bound.
    pub wall_violations: usize,
    /// Nodes that stopped because their clock was off from a majority (HLC-6).
    pub clock_stops: usize,
    /// Leadership transfers to a caught-up follower that completed after healing (RAFT-6).
    pub transfers: usize,
    /// Batches an impostor replayed under another node's name (all refused).
    pub forgeries: usize,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
}

impl Outcome {
    /// Did every checker pass?
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} — {} events, {} ms simulated, {} elections, {} acked, {} committed, \
             {} reads, {} crashes, trace {:016x}",
            self.config.seed,
            if self.passed() { "ok" } else { "FAILED" },
            self.events,
            self.sim_ms,
            self.elections,
            self.acked,
            self.committed,
            self.reads,
            self.crashes,
            self.trace_hash
        )?;
        if let Some(v) = &self.violation {
            write!(f, "\n  {v}\n  replay: {}", self.config.replay_command())?;
        }
        Ok(())
    }
}

/// Runs one simulation of the replicated-log workload to the end.
pub fn run(config: &SimConfig) -> Outcome {
    // Every random stream is forked from the seed in a fixed order.
    let mut rng = DetRng::new(config.seed);
    let mut shape_rng = rng.fork();
    let net_rng = rng.fork();
    let mut fault_rng = rng.fork();
    let client_rng = rng.fork();
    let sched_rng = rng.fork();
    let node_rng = rng.fork();
    // Forked after the others, so that the streams above keep their meaning.
    let wall_rng = rng.fork();

    let n = config.nodes;
    let group_count = config.groups.unwrap_or_else(|| 2 + shape_rng.range(0, 2) as usize).max(1);
    let faulty_ms = config.faulty_ms.unwrap_or_else(|| shape_rng.range(4_000, 20_000));
    // Timeouts scaled down by seed (the core checks only their relations), so that a short
    // simulated run still sees many elections.
    let heartbeat_ms = shape_rng.range(10, 101);
    let election_min_ms = heartbeat_ms * shape_rng.range(3, 11);
    let raft = RaftConfig {
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout_min: Duration::from_millis(election_min_ms),
        election_timeout_max: Duration::from_millis(2 * election_min_ms),
        max_inflight_appends: shape_rng.range(1, 17) as usize,
        max_append_bytes: [64, 1024, 1 << 20][shape_rng.range(0, 3) as usize],
        max_apply_bytes: [64, 1 << 20][shape_rng.range(0, 2) as usize],
        snapshot_chunk_bytes: [32, 256, 1 << 20][shape_rng.range(0, 3) as usize],
        pre_vote: shape_rng.chance(3, 4),
        check_quorum: shape_rng.chance(3, 4),
        mutation: config.mutation,
        ..RaftConfig::default()
    };
    let wal = WalConfig { segment_bytes: [512, 4096, 64 << 20][shape_rng.range(0, 3) as usize] };
    let snapshot_every = [None, Some(5), Some(20), Some(100)][shape_rng.range(0, 4) as usize];
    let plan =
        if config.faults { FaultPlan::seeded(n, &mut fault_rng) } else { FaultPlan::none(n) };
    let mut net = Network::new(n, net_rng);
    if config.faults && plan.any() {
        net.set_params(NetParams::faulty(&mut fault_rng));
    }

    let mut workload =
        ReplicatedLog::new(n, group_count, config.register_groups, config.steady_load, client_rng);
    let groups = workload.groups();
    let machines = workload.machines();
    let shape = Shape {
        groups,
        node_config: NodeConfig { raft, wal },
        snapshot_every,
        plan,
        faulty_ns: faulty_ms * 1_000_000,
    };
    let mut world = World::new(
        config.clone(),
        shape,
        machines,
        net,
        fault_rng,
        sched_rng,
        node_rng,
        wall_rng,
        ReplicatedLog::entry_digest,
        ReplicatedLog::snapshot_contents,
    );
    let violation = drive(&mut world, &mut workload).err();
    Outcome {
        config: config.clone(),
        trace_hash: world.trace.hash(),
        events: world.trace.events(),
        sim_ms: world.now_ns / 1_000_000,
        elections: world.election_safety.elections(),
        acked: workload.acked(),
        committed: world.committed().total_committed(),
        reads: workload.reads(),
        crashes: world.crashes,
        refused_starts: world.refused_starts,
        wall_violations: world.wall_violations,
        clock_stops: world.clock_stops,
        transfers: world.transfers_completed(),
        forgeries: world.forgeries,
        violation,
    }
}

/// Runs `workload` on `world` to the end: every event, then the notes it left for the
/// workload, until the cluster converged after healing; then the final checks of both.
pub fn drive<W: Workload>(world: &mut World<W::Machine>, workload: &mut W) -> Result<(), Violation>
where
    <W::Machine as decree_host::ReplicatedMachine>::Request: serde::Serialize,
    <W::Machine as decree_host::ReplicatedMachine>::Response: serde::Serialize,
{
    world.start()?;
    workload.start(world)?;
    loop {
        for note in world.take_notes() {
            match note {
                Note::HealCheckDue => {
                    let settled = workload.heal_settled(world);
                    let targets: Vec<_> = world
                        .groups()
                        .into_iter()
                        .map(|g| (g, workload.heal_target(world, g)))
                        .collect();
                    let target = |g| targets.iter().find(|t| t.0 == g).and_then(|t| t.1);
                    world.heal_check(target, settled)?;
                }
                other => workload.on_note(world, other)?,
            }
        }
        let mut hook = |w: &World<W::Machine>, i: usize, it: &Iteration<W::Machine>| {
            workload.on_iteration(w, i, it)
        };
        if !world.step(&mut hook)? {
            break;
        }
    }
    world.final_checks()?;
    workload.final_checks(world)
}

/// The command-line name of a mutation (`sim --mutation NAME`).
pub fn mutation_name(m: Mutation) -> &'static str {
    match m {
        Mutation::None => "none",
        Mutation::CommitOldTermByCounting => "commit-old-term",
        Mutation::NoElectionRestriction => "no-election-restriction",
        Mutation::TruncateOnDuplicateAppend => "truncate-on-duplicate-append",
    }
}

/// The mutation named `name` by [`mutation_name`].
pub fn mutation_by_name(name: &str) -> Option<Mutation> {
    [
        Mutation::None,
        Mutation::CommitOldTermByCounting,
        Mutation::NoElectionRestriction,
        Mutation::TruncateOnDuplicateAppend,
    ]
    .into_iter()
    .find(|&m| mutation_name(m) == name)
}
