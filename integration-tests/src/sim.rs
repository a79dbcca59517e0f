//! The simulation: N real [`Host`]s (each with its Raft node, WAL and machines), a seeded
//! network, disks and clocks, a client, checkers, and the event loop that drives them. See the
//! crate docs for the loop.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use decree_host::machines::{CommandLog, Either, LogRequest, LogResponse, Register, Tagged};
use decree_host::machines::{RegisterRequest, RegisterResponse};
use decree_host::{ClientTag, Directory, Fatal, GroupSpec, Host, HostConfig, HostEnvelope, HostIo};
use decree_proto::ErrorResponse;
use decree_raft::core::RaftConfig;
use decree_raft::disk::MemDisk;
use decree_raft::node::{NodeConfig, Output};
use decree_raft::wal::WalConfig;
use decree_types::{ClientId, DetRng, GroupId, HlcTimestamp, LogIndex, NodeId};

use crate::check::acked_not_lost::AckedNotLost;
use crate::check::election_safety::ElectionSafety;
use crate::check::linearizable_reads::LinearizableReads;
use crate::check::liveness::{self, ReplicaView};
use crate::check::state_machine_safety::StateMachineSafety;
use crate::check::{
    command_digest, leader_completeness, log_matching, payload_digest, LogSummary, Violation,
};
use crate::clock::SimClock;
use crate::faults::{CrashKind, Fault, FaultPlan};
use crate::network::{Arrival, NetParams, Network};
use crate::trace::{Trace, TraceEvent};
use crate::workload::{Answer, Client, GroupKind};

/// The machine every simulated host runs: command logs and registers side by side.
pub type SimMachine = Either<CommandLog, Register>;
/// A command in a simulated group's log.
pub type SimCommand = Tagged<Vec<u8>, u64>;
/// A request to a simulated group.
pub type SimRequest = Tagged<LogRequest, RegisterRequest>;
/// An answer from a simulated group.
pub type SimResponse = Tagged<LogResponse, RegisterResponse>;
/// What simulated hosts send each other.
pub type SimEnvelope = HostEnvelope<SimMachine>;
type SimHost = Host<MemDisk, SimMachine>;

/// How often each host probes its peers' clocks (HLC-6), ns.
const CLOCK_PROBE_INTERVAL_NS: u64 = 100_000_000;
/// How long an offset measurement counts (ten probe rounds), plus a round of slack, ns.
const MEASUREMENT_LIFE_NS: u64 = 11 * CLOCK_PROBE_INTERVAL_NS;
/// How long a physical clock stays out of its bound, ns (range).
const WALL_VIOLATION_NS: (u64, u64) = (500_000_000, 4_000_000_000);

/// How a node's `tick` is paced, in global ns.
pub const TICK_NS: u64 = 10_000_000;
/// How often the client tries to propose, in global ns (bounds).
const CLIENT_GAP_NS: (u64, u64) = (2_000_000, 40_000_000);
/// How often logs are compared (INV-R3), in global ns.
const LOG_CHECK_NS: u64 = 250_000_000;
/// How often convergence is checked while healing, in global ns.
const HEAL_CHECK_NS: u64 = 50_000_000;
/// A clogged batch is retried this often, in global ns.
const CLOG_RETRY_NS: u64 = 20_000_000;
/// The most a node waits between an input and the `process` call that handles it, in ns: the
/// inputs that arrive meanwhile share one iteration (and one fsync).
const PROCESS_DELAY_MAX_NS: u64 = 300_000;

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

/// Runs one simulation to the end.
pub fn run(config: &SimConfig) -> Outcome {
    let mut sim = Sim::new(config.clone());
    let violation = sim.run_to_end().err();
    Outcome {
        config: config.clone(),
        trace_hash: sim.trace.hash(),
        events: sim.trace.events(),
        sim_ms: sim.now_ns / 1_000_000,
        elections: sim.election_safety.elections(),
        acked: sim.acked.count(),
        committed: sim.sms.total_committed(),
        reads: sim.reads.served(),
        crashes: sim.crashes,
        refused_starts: sim.refused_starts,
        wall_violations: sim.wall_violations,
        clock_stops: sim.clock_stops,
        violation,
    }
}

#[derive(Debug)]
enum Event {
    Deliver { from: usize, to: usize, batch: Vec<SimEnvelope> },
    WallStep { node: usize, delta_ns: i64 },
    Tick { node: usize, incarnation: u64 },
    Process { node: usize, incarnation: u64 },
    Restart { node: usize },
    Fault(Fault),
    NextFault,
    Unpartition { generation: u64 },
    Clog { node: usize, on: bool },
    Client,
    LogCheck,
    Heal,
    HealCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faulty,
    Healing { since_ns: u64 },
    Done,
}

struct Slot {
    id: NodeId,
    node: Option<SimHost>,
    disk: MemDisk,
    clock: SimClock,
    incarnation: u64,
    process_scheduled: bool,
    /// An fsync failure was injected and not yet hit.
    fsync_armed: bool,
    /// How long the node stays down once the injected fsync failure stopped it.
    fsync_down_ns: u64,
    rng: DetRng,
}

struct Sim {
    config: SimConfig,
    now_ns: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    net: Network,
    slots: Vec<Slot>,
    groups: Vec<(GroupId, Vec<NodeId>)>,
    kinds: BTreeMap<GroupId, GroupKind>,
    node_config: NodeConfig,
    /// Take a snapshot every this many applied entries (`None`: never).
    snapshot_every: Option<u64>,
    plan: FaultPlan,
    faulty_end_ns: u64,
    phase: Phase,
    partition_generation: u64,
    client: Client,
    /// First acknowledgement per group of a command proposed after the heal.
    probes: BTreeMap<GroupId, LogIndex>,
    crashes: usize,
    refused_starts: usize,
    wall_violations: usize,
    clock_stops: usize,
    fault_rng: DetRng,
    wall_rng: DetRng,
    /// Until when an HLC-6 stop is expected: the end of the last physical clock violation,
    /// plus the life of the measurements taken during it.
    wall_suspect_until_ns: u64,
    /// The client's HLC: the latest reading any answer carried.
    client_clock: HlcTimestamp,
    sched_rng: DetRng,
    trace: Trace,
    election_safety: ElectionSafety,
    sms: StateMachineSafety,
    acked: AckedNotLost,
    reads: LinearizableReads,
}

impl Sim {
    fn new(config: SimConfig) -> Self {
        // Every random stream is forked from the seed in a fixed order.
        let mut rng = DetRng::new(config.seed);
        let mut shape_rng = rng.fork();
        let net_rng = rng.fork();
        let mut fault_rng = rng.fork();
        let client_rng = rng.fork();
        let sched_rng = rng.fork();
        let mut node_rng = rng.fork();
        // Forked after the others, so that the streams above keep their meaning.
        let mut wall_rng = rng.fork();

        let n = config.nodes;
        let group_count =
            config.groups.unwrap_or_else(|| 2 + shape_rng.range(0, 2) as usize).max(1);
        let faulty_ms = config.faulty_ms.unwrap_or_else(|| shape_rng.range(4_000, 20_000));
        let voters: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let groups: Vec<(GroupId, Vec<NodeId>)> = (1..=(group_count + config.register_groups)
            as u64)
            .map(|g| (GroupId(g), voters.clone()))
            .collect();
        let kinds: BTreeMap<GroupId, GroupKind> = groups
            .iter()
            .map(|(g, _)| {
                let kind =
                    if g.0 as usize > group_count { GroupKind::Register } else { GroupKind::Log };
                (*g, kind)
            })
            .collect();
        // Timeouts scaled down by seed (the core checks only their relations), so that a
        // short simulated run still sees many elections.
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
            ..RaftConfig::default()
        };
        let wal =
            WalConfig { segment_bytes: [512, 4096, 64 << 20][shape_rng.range(0, 3) as usize] };
        let snapshot_every = [None, Some(5), Some(20), Some(100)][shape_rng.range(0, 4) as usize];
        let plan =
            if config.faults { FaultPlan::seeded(n, &mut fault_rng) } else { FaultPlan::none(n) };

        let mut net = Network::new(n, net_rng);
        if config.faults && plan.any() {
            net.set_params(NetParams::faulty(&mut fault_rng));
        }
        let slots = (0..n)
            .map(|i| Slot {
                id: NodeId(i as u64 + 1),
                node: None,
                disk: MemDisk::new(),
                clock: if config.faults {
                    let mut clock = SimClock::seeded(&mut node_rng);
                    clock.skew_wall(&mut wall_rng);
                    clock
                } else {
                    SimClock::perfect()
                },
                incarnation: 0,
                process_scheduled: false,
                fsync_armed: false,
                fsync_down_ns: 0,
                rng: node_rng.fork(),
            })
            .collect();
        let kinds_list: Vec<(GroupId, GroupKind)> = kinds.iter().map(|(&g, &k)| (g, k)).collect();
        let verbose = config.verbose;
        Sim {
            now_ns: 0,
            seq: 0,
            queue: BTreeMap::new(),
            net,
            slots,
            groups,
            kinds,
            node_config: NodeConfig { raft, wal },
            snapshot_every,
            plan,
            faulty_end_ns: faulty_ms * 1_000_000,
            phase: Phase::Faulty,
            partition_generation: 0,
            client: Client::new(n, &kinds_list, client_rng),
            probes: BTreeMap::new(),
            crashes: 0,
            refused_starts: 0,
            wall_violations: 0,
            clock_stops: 0,
            fault_rng,
            wall_rng,
            wall_suspect_until_ns: 0,
            client_clock: HlcTimestamp::ZERO,
            sched_rng,
            trace: Trace::new(verbose),
            election_safety: ElectionSafety::default(),
            sms: StateMachineSafety::default(),
            acked: AckedNotLost::default(),
            reads: LinearizableReads::default(),
            config,
        }
    }

    fn run_to_end(&mut self) -> Result<(), Violation> {
        let what = format!(
            "start: {} nodes, {} groups, faulty phase {} ms, snapshot every {:?}, {:?}, {:?}",
            self.config.nodes,
            self.groups.len(),
            self.faulty_end_ns / 1_000_000,
            self.snapshot_every,
            self.node_config.raft,
            self.plan
        );
        self.trace.record(0, &TraceEvent::Fault { what: &what });
        for i in 0..self.slots.len() {
            self.start_node(i)?;
        }
        self.schedule(0, Event::Client);
        self.schedule(LOG_CHECK_NS, Event::LogCheck);
        self.schedule(0, Event::NextFault);
        self.schedule_wall_violation();
        self.schedule(self.faulty_end_ns, Event::Heal);
        while self.phase != Phase::Done {
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return Err(Violation {
                    invariant: "simulator",
                    detail: "event queue ran dry".into(),
                });
            };
            debug_assert!(at >= self.now_ns, "time never goes back");
            self.now_ns = at;
            self.handle(event)?;
        }
        self.final_checks()
    }

    fn schedule(&mut self, at_ns: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at_ns, self.seq), event);
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver { from, to, batch } => self.deliver(from, to, batch),
            Event::WallStep { node, delta_ns } => {
                if delta_ns != 0 && self.phase != Phase::Faulty {
                    return Ok(());
                }
                self.slots[node].clock.step_wall(delta_ns);
                let what = format!("n{} physical clock steps {delta_ns} ns out of bound", node + 1);
                self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
                Ok(())
            }
            Event::Tick { node, incarnation } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].node.is_none() {
                    return Ok(());
                }
                let jitter = self.sched_rng.range(0, 1_000_000);
                self.schedule(self.now_ns + TICK_NS + jitter, Event::Tick { node, incarnation });
                let (local, wall) = (self.local_ns(node), self.wall_ns(node));
                if let Some(n) = self.slots[node].node.as_mut() {
                    n.handle_timeout(local, wall);
                    if n.has_work() || n.stopped().is_some() {
                        self.want_process(node);
                    }
                }
                Ok(())
            }
            Event::Process { node, incarnation } => {
                if self.slots[node].incarnation != incarnation {
                    return Ok(());
                }
                self.slots[node].process_scheduled = false;
                self.process(node)
            }
            Event::Restart { node } => {
                if self.slots[node].node.is_none() {
                    self.start_node(node)?;
                }
                Ok(())
            }
            Event::Fault(fault) => self.inject(fault),
            Event::NextFault => {
                if self.phase != Phase::Faulty {
                    return Ok(());
                }
                if let Some((wait_ns, fault)) = self.plan.next(&mut self.fault_rng) {
                    self.schedule(self.now_ns + wait_ns, Event::Fault(fault));
                    self.schedule(self.now_ns + wait_ns, Event::NextFault);
                }
                Ok(())
            }
            Event::Unpartition { generation } => {
                if generation == self.partition_generation && self.phase == Phase::Faulty {
                    self.net.set_partition(crate::network::Partition::healed(self.slots.len()));
                    self.trace.record(self.now_ns, &TraceEvent::Fault { what: "partition lifted" });
                }
                Ok(())
            }
            Event::Clog { node, on } => {
                if self.phase == Phase::Faulty || !on {
                    self.net.set_clogged(node, on);
                    let what = format!("{} n{}", if on { "clog" } else { "unclog" }, node + 1);
                    self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
                }
                Ok(())
            }
            Event::Client => self.client_step(),
            Event::LogCheck => {
                self.check_logs()?;
                self.schedule(self.now_ns + LOG_CHECK_NS, Event::LogCheck);
                Ok(())
            }
            Event::Heal => self.heal(),
            Event::HealCheck => self.heal_check(),
        }
    }

    // ----- nodes -----

    fn local_ns(&self, node: usize) -> u64 {
        self.slots[node].clock.local_ns(self.now_ns)
    }

    fn wall_ns(&self, node: usize) -> u64 {
        self.slots[node].clock.wall_ns(self.now_ns)
    }

    /// Occasionally (by seed, from its own stream) one node's physical clock steps out of its
    /// bound for a while: HLC-3 refusals, and the node stops when it measures itself off from
    /// a majority (HLC-6).
    fn schedule_wall_violation(&mut self) {
        if !self.config.faults || !self.wall_rng.chance(1, 3) {
            return;
        }
        let node = self.wall_rng.range(0, self.slots.len() as u64) as usize;
        let at = self.wall_rng.range(0, self.faulty_end_ns.max(1));
        let hold = self.wall_rng.range(WALL_VIOLATION_NS.0, WALL_VIOLATION_NS.1);
        let size = self.wall_rng.range(2, 9) * decree_types::limits::MAX_OFFSET_NS;
        // `size` is at most a few seconds: the cast is exact.
        let delta_ns = if self.wall_rng.chance(1, 2) { size as i64 } else { -(size as i64) };
        self.wall_violations += 1;
        // A measurement taken during the violation is stamped with the stepped clock: it
        // may live `size` longer than the others.
        self.wall_suspect_until_ns = at + hold + MEASUREMENT_LIFE_NS + size;
        self.schedule(at, Event::WallStep { node, delta_ns });
        self.schedule(at + hold, Event::WallStep { node, delta_ns: 0 });
    }

    fn host_config(&self) -> HostConfig {
        HostConfig {
            node: self.node_config.clone(),
            max_offset_ns: decree_types::limits::MAX_OFFSET_NS,
            clock_probe_interval_ns: CLOCK_PROBE_INTERVAL_NS,
            snapshot_every_entries: self.snapshot_every.unwrap_or(u64::MAX),
        }
    }

    fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let local = self.local_ns(i);
        let config = self.host_config();
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.process_scheduled = false;
        let rng = slot.rng.fork();
        let specs = self
            .groups
            .iter()
            .map(|(group, voters)| GroupSpec {
                group: *group,
                voters: voters.clone(),
                machine: match self.kinds[group] {
                    GroupKind::Log => Either::A(CommandLog::new()),
                    GroupKind::Register => Either::B(Register::default()),
                },
            })
            .collect();
        let wall = slot.clock.wall_ns(self.now_ns);
        let opened = Host::open(
            slot.id,
            config,
            specs,
            Directory::new(self.groups.clone()),
            slot.disk.clone(),
            rng,
            local,
            wall,
        );
        let node = match opened {
            Ok(node) => node,
            Err(e) if slot.fsync_armed && e.is_disk_failure() => {
                // The injected fsync failure hit recovery's own fsync: refusing to start is
                // right. The process exits again and retries later.
                slot.fsync_armed = false;
                self.refused_starts += 1;
                let what = format!("{} refused to start: {e}", slot.id);
                self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
                let down_ns = self.sched_rng.range(10_000_000, 500_000_000);
                self.schedule(self.now_ns + down_ns, Event::Restart { node: i });
                return Ok(());
            }
            Err(e) => {
                return Err(Violation {
                    invariant: "a crashed node restarts from its WAL",
                    detail: format!("{} failed to open: {e}", slot.id),
                })
            }
        };
        slot.node = Some(node);
        for (g, _) in &self.groups {
            self.sms.on_restart(slot.id, *g, LogIndex(0));
        }
        let incarnation = slot.incarnation;
        let what = format!("start n{} (incarnation {incarnation})", i + 1);
        self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
        let jitter = self.sched_rng.range(0, TICK_NS);
        self.schedule(self.now_ns + jitter, Event::Tick { node: i, incarnation });
        self.want_process(i);
        Ok(())
    }

    /// Node `i` goes down (see [`CrashKind`]) and restarts after `down_ns`.
    fn crash(&mut self, i: usize, kind: CrashKind, down_ns: u64) {
        let slot = &mut self.slots[i];
        if slot.node.take().is_none() {
            return;
        }
        match kind {
            CrashKind::Kill => {}
            CrashKind::PowerLoss => slot.disk.crash(),
            CrashKind::TornWrite => slot.disk.crash_torn(&mut slot.rng),
        }
        if self.config.amnesia {
            slot.disk = MemDisk::new();
        }
        slot.incarnation += 1;
        let id = slot.id;
        self.client.node_down(i);
        self.reads.node_down(id);
        self.crashes += 1;
        self.schedule(self.now_ns + down_ns, Event::Restart { node: i });
    }

    fn want_process(&mut self, i: usize) {
        if self.slots[i].process_scheduled || self.slots[i].node.is_none() {
            return;
        }
        self.slots[i].process_scheduled = true;
        let delay = self.sched_rng.range(0, PROCESS_DELAY_MAX_NS);
        let incarnation = self.slots[i].incarnation;
        self.schedule(self.now_ns + delay, Event::Process { node: i, incarnation });
    }

    fn process(&mut self, i: usize) -> Result<(), Violation> {
        let (local, wall) = (self.local_ns(i), self.wall_ns(i));
        let Some(host) = self.slots[i].node.as_mut() else { return Ok(()) };
        let mut io = SimIo::default();
        // What was sent and answered before a failure stands: it really left the node.
        let result = host.process(local, wall, &mut io);
        let more = host.has_work();
        // Each message must be one the wire accepts (the QUIC shell encodes it with these
        // bounds and drops what fails: a message built over a bound would be lost every time
        // it is retried).
        for (to, batch) in io.sent {
            for envelope in &batch {
                if let Err(e) = decree_proto::encode_body_of(envelope) {
                    return Err(Violation {
                        invariant: "every message a node sends is one the wire accepts",
                        detail: format!("{} to {to}: {e}", self.slots[i].id),
                    });
                }
            }
            self.send(i, to, batch);
        }
        self.handle_outputs(i, io.observed)?;
        for (tag, clock, response) in io.replies {
            self.on_reply(i, tag, clock, &response)?;
        }
        for (tag, clock, error) in io.refusals {
            self.client_clock = self.client_clock.max(clock);
            let ev = TraceEvent::Reply { node: self.slots[i].id, tag: tag.0, ok: false };
            self.trace.record(self.now_ns, &ev);
            self.client.refused(tag.0, matches!(error, ErrorResponse::Busy { .. }));
            self.reads.forget(tag.0);
        }
        match result {
            Ok(()) => {
                if more {
                    self.want_process(i);
                }
                Ok(())
            }
            Err(fatal) => self.on_fatal(i, &fatal),
        }
    }

    fn on_fatal(&mut self, i: usize, fatal: &Fatal) -> Result<(), Violation> {
        let what = fatal.to_string();
        self.trace.record(self.now_ns, &TraceEvent::Fatal { node: self.slots[i].id, error: &what });
        if self.now_ns <= self.wall_suspect_until_ns && fatal.is_clock_offset() {
            // HLC-6 did its job: a node whose clock left its bound stopped — or a node that
            // could measure only that one (a strict majority of the peers it measured was
            // off). The operator fixes the clock; the node comes back once it is right.
            self.clock_stops += 1;
            let down_ns = WALL_VIOLATION_NS.1 + self.sched_rng.range(0, 500_000_000);
            self.crash(i, CrashKind::Kill, down_ns);
            return Ok(());
        }
        if !(self.slots[i].fsync_armed && fatal.is_disk_failure()) {
            return Err(Violation {
                invariant: "a node stops only on an injected disk failure",
                detail: format!("{} stopped: {what}", self.slots[i].id),
            });
        }
        self.slots[i].fsync_armed = false;
        // The node stopped as it must: the process exits. Whether its unsynced writes are
        // still in the page cache when it restarts, or lost to a power cut meanwhile, the
        // seed decides; it restarts later from its disk either way.
        let down_ns = self.slots[i].fsync_down_ns;
        let kind = if self.sched_rng.chance(1, 2) { CrashKind::Kill } else { CrashKind::PowerLoss };
        self.crash(i, kind, down_ns);
        Ok(())
    }

    fn send(&mut self, from: usize, to: NodeId, batch: Vec<SimEnvelope>) {
        let to_i = (to.0 as usize).wrapping_sub(1);
        if to_i >= self.slots.len() {
            return;
        }
        let arrivals = self.net.plan(self.now_ns, from, to_i);
        let ev = TraceEvent::Send {
            from: self.slots[from].id,
            to,
            copies: arrivals.len() as u8,
            batch: &batch,
        };
        self.trace.record(self.now_ns, &ev);
        for at in arrivals {
            self.schedule(at, Event::Deliver { from, to: to_i, batch: batch.clone() });
        }
    }

    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        batch: Vec<SimEnvelope>,
    ) -> Result<(), Violation> {
        match self.net.arrive(from, to) {
            Arrival::Defer => {
                let at = self.now_ns + CLOG_RETRY_NS;
                self.schedule(at, Event::Deliver { from, to, batch });
                return Ok(());
            }
            Arrival::Drop => {
                let ev = TraceEvent::Drop { from: self.slots[from].id, to: self.slots[to].id };
                self.trace.record(self.now_ns, &ev);
                return Ok(());
            }
            Arrival::Deliver => {}
        }
        if self.slots[to].node.is_none() {
            return Ok(());
        }
        let ev =
            TraceEvent::Deliver { from: self.slots[from].id, to: self.slots[to].id, batch: &batch };
        self.trace.record(self.now_ns, &ev);
        let (local, wall) = (self.local_ns(to), self.wall_ns(to));
        let from_id = self.slots[from].id;
        if let Some(n) = self.slots[to].node.as_mut() {
            for envelope in batch {
                n.handle_envelope(local, wall, from_id, envelope);
            }
        }
        self.want_process(to);
        Ok(())
    }

    // ----- outputs, state machines, snapshots -----

    fn handle_outputs(&mut self, i: usize, outputs: Vec<Output>) -> Result<(), Violation> {
        let id = self.slots[i].id;
        for output in outputs {
            match output {
                Output::Role { group, state } => {
                    let ev = TraceEvent::Role {
                        node: id,
                        group,
                        term: state.term,
                        leader: state.leader,
                        is_leader: state.is_leader,
                    };
                    self.trace.record(self.now_ns, &ev);
                    if let Some(leader) = state.leader {
                        self.client.leader_seen(group, leader);
                    }
                    if state.is_leader {
                        self.election_safety.on_leader(group, state.term, id)?;
                        let log = self.log_summary(i, group);
                        leader_completeness::check_new_leader(group, state.term, &log, &self.sms)?;
                    }
                }
                Output::Restore { group, meta, data } => {
                    let ev = TraceEvent::Restore { node: id, group, index: meta.last_index };
                    self.trace.record(self.now_ns, &ev);
                    let contents = snapshot_contents(&data).map_err(|e| Violation {
                        invariant: "snapshots restore the state machine",
                        detail: format!("{id} {group}: {e}"),
                    })?;
                    self.sms.on_restore(id, group, meta.last_index, &contents)?;
                }
                Output::Apply { group, entries } => {
                    for entry in &entries {
                        let ev = TraceEvent::Apply {
                            node: id,
                            group,
                            index: entry.index,
                            term: entry.term,
                        };
                        self.trace.record(self.now_ns, &ev);
                        let digest = payload_digest(&entry.payload);
                        self.sms.on_apply(id, group, entry.index, entry.term, digest)?;
                    }
                }
                // The host serves reads; the client checks what it was told.
                Output::Read { .. } | Output::ReadFailed { .. } => {}
            }
        }
        Ok(())
    }

    /// A client's answer from node `i`'s host.
    fn on_reply(
        &mut self,
        i: usize,
        tag: ClientTag,
        clock: HlcTimestamp,
        response: &SimResponse,
    ) -> Result<(), Violation> {
        self.client_clock = self.client_clock.max(clock);
        let id = self.slots[i].id;
        match self.client.answered(tag.0, response) {
            Answer::Ack(ack) => {
                let ev = TraceEvent::Reply { node: id, tag: tag.0, ok: true };
                self.trace.record(self.now_ns, &ev);
                let ev =
                    TraceEvent::Ack { group: ack.group, command: ack.command, index: ack.index };
                self.trace.record(self.now_ns, &ev);
                self.acked.on_ack(ack.group, ack.index, ack.digest, &self.sms)?;
                if let Phase::Healing { since_ns } = self.phase {
                    if ack.proposed_at_ns >= since_ns && !self.probes.contains_key(&ack.group) {
                        // Every replica must reach everything acknowledged so far.
                        let target = ack.index.max(self.acked.max_index(ack.group));
                        self.probes.insert(ack.group, target);
                        if !self.config.steady_load {
                            self.client.retire(ack.group);
                        }
                    }
                }
            }
            Answer::Read { read_index } => {
                let ev = TraceEvent::Reply { node: id, tag: tag.0, ok: true };
                self.trace.record(self.now_ns, &ev);
                let group = self.reads.group_of(tag.0);
                let applied = group
                    .and_then(|g| self.slots[i].node.as_ref().and_then(|h| h.applied(g)))
                    .unwrap_or_default();
                if let Some(group) = group {
                    self.reads.on_served(tag.0, group, id, read_index, applied)?;
                }
            }
            Answer::Other => {
                let ev = TraceEvent::Reply { node: id, tag: tag.0, ok: false };
                self.trace.record(self.now_ns, &ev);
                self.reads.forget(tag.0);
            }
        }
        Ok(())
    }

    fn log_summary(&self, i: usize, group: GroupId) -> LogSummary {
        let slot = &self.slots[i];
        let Some(core) = slot.node.as_ref().and_then(|n| n.node().core(group)) else {
            return LogSummary { node: slot.id, ..LogSummary::default() };
        };
        LogSummary {
            node: slot.id,
            snapshot_index: core.snapshot_index(),
            entries: core
                .entries()
                .map(|e| (e.index, e.term, payload_digest(&e.payload)))
                .collect(),
        }
    }

    fn check_logs(&self) -> Result<(), Violation> {
        for (group, _) in &self.groups {
            let logs: Vec<LogSummary> = (0..self.slots.len())
                .filter(|&i| self.slots[i].node.is_some())
                .map(|i| self.log_summary(i, *group))
                .collect();
            log_matching::check(*group, &logs)?;
        }
        Ok(())
    }

    // ----- faults -----

    fn inject(&mut self, fault: Fault) -> Result<(), Violation> {
        if self.phase != Phase::Faulty {
            return Ok(());
        }
        let what = format!("{fault:?}");
        self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
        match fault {
            Fault::Crash { node, kind, down_ns } => self.crash(node, kind, down_ns),
            Fault::CrashAll { kind, down_ns } => {
                for i in 0..self.slots.len() {
                    self.crash(i, kind, down_ns);
                }
            }
            Fault::FsyncFailure { node, down_ns } => {
                if self.slots[node].node.is_some() {
                    self.slots[node].disk.fail_next_sync();
                    self.slots[node].fsync_armed = true;
                    self.slots[node].fsync_down_ns = down_ns;
                    self.crashes += 1;
                }
            }
            Fault::Partition { partition, hold_ns } => {
                self.partition_generation += 1;
                self.net.set_partition(partition);
                let generation = self.partition_generation;
                self.schedule(self.now_ns + hold_ns, Event::Unpartition { generation });
            }
            Fault::Swizzle { order, unclog_order, step_ns } => {
                let mut at = self.now_ns;
                for node in order {
                    self.schedule(at, Event::Clog { node, on: true });
                    at += step_ns;
                }
                for node in unclog_order {
                    self.schedule(at, Event::Clog { node, on: false });
                    at += step_ns;
                }
            }
            Fault::ClockJump { node, delta_ns } => self.slots[node].clock.jump(delta_ns),
            Fault::NetParams(params) => self.net.set_params(params),
            Fault::Transfer { group, target } => {
                let group = self.groups[group % self.groups.len()].0;
                let target_id = self.slots[target].id;
                for i in 0..self.slots.len() {
                    let local = self.local_ns(i);
                    let Some(node) = self.slots[i].node.as_mut() else { continue };
                    // Only the leader accepts; the others refuse, which is fine.
                    if node.transfer_leadership(local, group, target_id).is_ok() {
                        self.want_process(i);
                    }
                }
            }
        }
        Ok(())
    }

    // ----- client -----

    fn client_step(&mut self) -> Result<(), Violation> {
        if self.phase == Phase::Done {
            return Ok(());
        }
        let gap = self.sched_rng.range(CLIENT_GAP_NS.0, CLIENT_GAP_NS.1);
        self.schedule(self.now_ns + gap, Event::Client);
        self.client.expire(self.now_ns);
        if self.sched_rng.chance(1, 4) {
            self.issue_read();
            return Ok(());
        }
        let Some(p) = self.client.next_proposal() else { return Ok(()) };
        let id = self.slots[p.node].id;
        let ev = TraceEvent::Request { node: id, group: p.group, tag: p.command, read: false };
        self.trace.record(self.now_ns, &ev);
        if self.slots[p.node].node.is_none() {
            self.client.sent(&p, self.now_ns);
            self.client.refused(p.command, false);
            return Ok(());
        }
        self.client.sent(&p, self.now_ns);
        self.client_request(p.node, p.command, p.group, p.request);
        Ok(())
    }

    /// A request from the client to node `i`'s host, carrying the client's clock.
    fn client_request(&mut self, i: usize, tag: u64, group: GroupId, request: SimRequest) {
        let (local, wall) = (self.local_ns(i), self.wall_ns(i));
        let clock = self.client_clock;
        let Some(host) = self.slots[i].node.as_mut() else { return };
        host.handle_client_request(local, wall, ClientId(1), ClientTag(tag), clock, group, request);
        self.want_process(i);
    }

    /// A linearizable read (RAFT-3, ReadIndex) of a random group at the node the client
    /// believes leads it: the leader answers after a heartbeat round confirms it still leads.
    fn issue_read(&mut self) {
        let group = self.groups[self.sched_rng.range(0, self.groups.len() as u64) as usize].0;
        let floor = self.acked.max_index(group);
        let Some((i, tag, request)) = self.client.next_read(group) else { return };
        let id = self.slots[i].id;
        if self.slots[i].node.is_none() {
            self.client.refused(tag, false);
            return;
        }
        self.reads.on_issue(tag, group, id, floor);
        let ev = TraceEvent::Request { node: id, group, tag, read: true };
        self.trace.record(self.now_ns, &ev);
        self.client_request(i, tag, group, request);
    }

    // ----- healing -----

    fn heal(&mut self) -> Result<(), Violation> {
        self.phase = Phase::Healing { since_ns: self.now_ns };
        self.trace.record(
            self.now_ns,
            &TraceEvent::Fault { what: "heal: faults off, links healed, nodes up" },
        );
        self.net.heal();
        for i in 0..self.slots.len() {
            self.slots[i].clock.step_wall(0);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].node.is_none() {
                self.start_node(i)?;
            }
        }
        self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
        Ok(())
    }

    fn heal_check(&mut self) -> Result<(), Violation> {
        let Phase::Healing { since_ns } = self.phase else { return Ok(()) };
        let mut pending = None;
        for (group, _) in &self.groups {
            let views: Vec<ReplicaView> = self
                .slots
                .iter()
                .filter_map(|s| {
                    let host = s.node.as_ref()?;
                    let st = host.node().status(*group)?;
                    Some(ReplicaView {
                        node: s.id,
                        term: st.term,
                        leader: st.leader,
                        is_leader: st.role == decree_raft::core::Role::Leader,
                        applied: host.applied(*group).unwrap_or_default(),
                    })
                })
                .collect();
            if views.len() != self.slots.len() {
                pending = Some((*group, "a node is down".to_string()));
                break;
            }
            // Quiesced, a group's acknowledgements stop growing and every replica must hold
            // all of them; under steady load the target is what was acknowledged at the probe.
            let required = match self.probes.get(group) {
                Some(&p) if self.config.steady_load => Some(p),
                Some(&p) => Some(p.max(self.acked.max_index(*group))),
                None => None,
            };
            if let Err(why) = liveness::converged(*group, &views, required) {
                pending = Some((*group, why));
                break;
            }
        }
        match pending {
            None => {
                self.phase = Phase::Done;
                self.trace.record(self.now_ns, &TraceEvent::Fault { what: "converged" });
                Ok(())
            }
            Some((group, why))
                if self.now_ns - since_ns > self.config.heal_bound_ms * 1_000_000 =>
            {
                Err(liveness::timed_out(group, self.config.heal_bound_ms, why))
            }
            Some(_) => {
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
        }
    }

    fn final_checks(&self) -> Result<(), Violation> {
        self.check_logs()?;
        for (group, _) in &self.groups {
            // Replicas that applied the same entries hold the same state.
            let mut digests: BTreeMap<LogIndex, (NodeId, u64)> = BTreeMap::new();
            for slot in &self.slots {
                let Some(host) = slot.node.as_ref() else { continue };
                let (Some(applied), Some(machine)) = (host.applied(*group), host.machine(*group))
                else {
                    continue;
                };
                use decree_host::ReplicatedMachine;
                let digest = machine.digest();
                if let Some(&(other, d)) = digests.get(&applied) {
                    if d != digest {
                        return Err(Violation {
                            invariant: "INV-R5 replicas that applied the same entries agree",
                            detail: format!(
                                "{group}: {} and {other} applied up to {applied} but differ",
                                slot.id
                            ),
                        });
                    }
                }
                digests.insert(applied, (slot.id, digest));
                if let Either::A(log) = machine {
                    let contents: BTreeMap<LogIndex, u64> =
                        log.commands().iter().map(|(i, c)| (*i, command_digest(c))).collect();
                    self.acked.check_replica(slot.id, *group, applied, &contents)?;
                }
            }
        }
        Ok(())
    }
}

/// Every host output that concerns the client and the checkers, from one `process` call.
#[derive(Default)]
struct SimIo {
    sent: Vec<(NodeId, Vec<SimEnvelope>)>,
    replies: Vec<(ClientTag, HlcTimestamp, SimResponse)>,
    refusals: Vec<(ClientTag, HlcTimestamp, ErrorResponse)>,
    observed: Vec<Output>,
}

impl HostIo<SimMachine> for SimIo {
    fn send(&mut self, to: NodeId, envelopes: Vec<SimEnvelope>) {
        self.sent.push((to, envelopes));
    }

    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: SimResponse) {
        self.replies.push((client, clock, response));
    }

    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse) {
        self.refusals.push((client, clock, error));
    }

    fn observe(&mut self, output: &Output) {
        self.observed.push(output.clone());
    }
}

/// The commands a snapshot holds, as `(index, digest)` (registers hold none the checkers can
/// compare; their replicas are compared by digest).
fn snapshot_contents(data: &[u8]) -> Result<Vec<(LogIndex, u64)>, String> {
    match data.split_first() {
        Some((0, rest)) => {
            let log = CommandLog::decode_snapshot(rest).map_err(|e| e.to_string())?;
            Ok(log.commands().iter().map(|(i, c)| (*i, command_digest(c))).collect())
        }
        Some((1, _)) => Ok(Vec::new()),
        _ => Err("snapshot of an unknown kind".into()),
    }
}
