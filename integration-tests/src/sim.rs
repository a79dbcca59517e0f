//! The simulation: N real [`Node`]s, a seeded network, disks and clocks, a client, checkers,
//! and the event loop that drives them. See the crate docs for the loop.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use decree_raft::core::{Mutation, RaftConfig, ReplicationState, Role};
use decree_raft::disk::MemDisk;
use decree_raft::node::{
    Batch, CommandList, Fatal, Node, NodeConfig, Outbox, Output, SnapshotRequestError,
};
use decree_raft::wal::WalConfig;
use decree_raft::EntryPayload;
use decree_types::{DetRng, GroupId, LogIndex, NodeId};

use crate::check::acked_not_lost::AckedNotLost;
use crate::check::commit_rule::CommitRule;
use crate::check::election_safety::ElectionSafety;
use crate::check::leader_append_only::LeaderAppendOnly;
use crate::check::leader_completeness::CommittedEntries;
use crate::check::linearizable_reads::LinearizableReads;
use crate::check::liveness::{self, ReplicaView};
use crate::check::reads_resolve::ReadsResolve;
use crate::check::state_machine_safety::StateMachineSafety;
use crate::check::transfer_completes::TransferCompletes;
use crate::check::{leader_completeness, log_matching, payload_digest, LogSummary, Violation};
use crate::clock::SimClock;
use crate::faults::{CrashKind, Fault, FaultPlan};
use crate::network::{Arrival, NetParams, Network};
use crate::trace::{Trace, TraceEvent};
use crate::workload::Client;

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
        violation,
    }
}

#[derive(Debug)]
enum Event {
    Deliver { from: usize, to: usize, batch: Batch },
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
    node: Option<Node<MemDisk>>,
    disk: MemDisk,
    clock: SimClock,
    machines: BTreeMap<GroupId, CommandList>,
    /// Applied index at the last snapshot, per group.
    snapshotted: BTreeMap<GroupId, LogIndex>,
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
    fault_rng: DetRng,
    sched_rng: DetRng,
    trace: Trace,
    election_safety: ElectionSafety,
    sms: StateMachineSafety,
    acked: AckedNotLost,
    reads: LinearizableReads,
    next_read_ctx: u64,
    append_only: LeaderAppendOnly,
    commit_rule: CommitRule,
    committed: CommittedEntries,
    reads_resolve: ReadsResolve,
    transfers: TransferCompletes,
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

        let n = config.nodes;
        let group_count =
            config.groups.unwrap_or_else(|| 2 + shape_rng.range(0, 2) as usize).max(1);
        let faulty_ms = config.faulty_ms.unwrap_or_else(|| shape_rng.range(4_000, 20_000));
        let voters: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let groups: Vec<(GroupId, Vec<NodeId>)> =
            (1..=group_count as u64).map(|g| (GroupId(g), voters.clone())).collect();
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
            mutation: config.mutation,
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
                    SimClock::seeded(&mut node_rng)
                } else {
                    SimClock::perfect()
                },
                machines: BTreeMap::new(),
                snapshotted: BTreeMap::new(),
                incarnation: 0,
                process_scheduled: false,
                fsync_armed: false,
                fsync_down_ns: 0,
                rng: node_rng.fork(),
            })
            .collect();
        let group_ids: Vec<GroupId> = groups.iter().map(|g| g.0).collect();
        let verbose = config.verbose;
        Sim {
            now_ns: 0,
            seq: 0,
            queue: BTreeMap::new(),
            net,
            slots,
            groups,
            node_config: NodeConfig { raft, wal },
            snapshot_every,
            plan,
            faulty_end_ns: faulty_ms * 1_000_000,
            phase: Phase::Faulty,
            partition_generation: 0,
            client: Client::new(n, &group_ids, client_rng),
            probes: BTreeMap::new(),
            crashes: 0,
            fault_rng,
            sched_rng,
            trace: Trace::new(verbose),
            election_safety: ElectionSafety::default(),
            sms: StateMachineSafety::default(),
            acked: AckedNotLost::default(),
            reads: LinearizableReads::default(),
            next_read_ctx: 1,
            append_only: LeaderAppendOnly::default(),
            commit_rule: CommitRule::default(),
            committed: CommittedEntries::default(),
            reads_resolve: ReadsResolve::default(),
            transfers: TransferCompletes::default(),
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
            Event::Tick { node, incarnation } => {
                if self.slots[node].incarnation != incarnation || self.slots[node].node.is_none() {
                    return Ok(());
                }
                let jitter = self.sched_rng.range(0, 1_000_000);
                self.schedule(self.now_ns + TICK_NS + jitter, Event::Tick { node, incarnation });
                let local = self.local_ns(node);
                if let Some(n) = self.slots[node].node.as_mut() {
                    n.tick(local);
                    if n.has_ready() {
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
                for i in 0..self.slots.len() {
                    self.observe_leader(i, true)?;
                }
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

    fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let local = self.local_ns(i);
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.process_scheduled = false;
        let rng = slot.rng.fork();
        let opened = Node::open(
            slot.id,
            self.groups.clone(),
            slot.disk.clone(),
            self.node_config.clone(),
            rng,
            local,
        );
        let node = match opened {
            Ok(node) => node,
            Err(e) if slot.fsync_armed && e.is_disk_failure() => {
                // The injected fsync failure hit recovery's own fsync: refusing to start is
                // right. The process exits again and retries later.
                slot.fsync_armed = false;
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
        slot.machines = self.groups.iter().map(|g| (g.0, CommandList::new())).collect();
        slot.snapshotted = self.groups.iter().map(|g| (g.0, LogIndex(0))).collect();
        for (g, _) in &self.groups {
            self.sms.on_restart(slot.id, *g, LogIndex(0));
        }
        let incarnation = slot.incarnation;
        let what = format!("start n{} (incarnation {incarnation})", i + 1);
        self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
        let jitter = self.sched_rng.range(0, TICK_NS);
        self.schedule(self.now_ns + jitter, Event::Tick { node: i, incarnation });
        self.want_process(i);
        // INV-R3 with the log the node recovered from its WAL.
        self.check_logs()
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
        self.client.node_down(id);
        self.reads.node_down(id);
        self.reads_resolve.node_down(id);
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
        let Some(node) = self.slots[i].node.as_mut() else { return Ok(()) };
        let mut outbox = Outbox::default();
        // Outputs handed out before the iteration's fsync stand even if that fsync fails: the
        // client may already have its answer (the QUIC shell sends it at once).
        let mut outputs = Vec::new();
        let result = node.process_with(&mut outbox, &mut |o| outputs.push(o));
        // Whatever was sent before a failure really left the node. Each message must be one
        // the wire accepts (the QUIC shell encodes it with these bounds and drops what fails:
        // a message the node builds over a bound would be lost every time it is retried).
        for (to, batch) in outbox.sent {
            for (group, msg) in &batch {
                if let Err(e) = decree_proto::raft::validate(msg) {
                    return Err(Violation {
                        invariant: "every message a node sends is one the wire accepts",
                        detail: format!("{} to {to} for {group}: {e}", self.slots[i].id),
                    });
                }
            }
            self.send(i, to, batch);
        }
        match result {
            Ok(late) => {
                outputs.extend(late);
                self.handle_outputs(i, outputs)?;
                self.observe_leader(i, false)?;
                self.maybe_snapshot(i)
            }
            Err(fatal) => {
                self.handle_outputs(i, outputs)?;
                self.on_fatal(i, &fatal)
            }
        }
    }

    fn on_fatal(&mut self, i: usize, fatal: &Fatal) -> Result<(), Violation> {
        let what = fatal.to_string();
        self.trace.record(self.now_ns, &TraceEvent::Fatal { node: self.slots[i].id, error: &what });
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

    fn send(&mut self, from: usize, to: NodeId, batch: Batch) {
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

    fn deliver(&mut self, from: usize, to: usize, batch: Batch) -> Result<(), Violation> {
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
        let local = self.local_ns(to);
        let from_id = self.slots[from].id;
        if let Some(n) = self.slots[to].node.as_mut() {
            for (group, msg) in batch {
                n.step(local, from_id, group, msg);
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
                        leader_completeness::check_new_leader(
                            group,
                            state.term,
                            &log,
                            &self.sms,
                            &self.committed,
                        )?;
                        self.transfers.on_leader(group, id);
                    }
                    self.check_group_logs(group)?;
                }
                Output::Restore { group, meta, data } => {
                    let ev = TraceEvent::Restore { node: id, group, index: meta.last_index };
                    self.trace.record(self.now_ns, &ev);
                    let machine = self.slots[i].machines.entry(group).or_default();
                    machine.restore(&data).map_err(|e| Violation {
                        invariant: "snapshots restore the state machine",
                        detail: format!("{id} {group}: {e}"),
                    })?;
                    if machine.applied() != meta.last_index {
                        return Err(Violation {
                            invariant: "snapshots restore the state machine",
                            detail: format!(
                                "{id} {group}: snapshot meta says {} but its state applied {}",
                                meta.last_index,
                                machine.applied()
                            ),
                        });
                    }
                    let contents: Vec<(LogIndex, u64)> = machine
                        .commands()
                        .iter()
                        .map(|(i, c)| (*i, payload_digest(&EntryPayload::Command(c.clone()))))
                        .collect();
                    self.sms.on_restore(id, group, meta.last_index, &contents)?;
                    self.slots[i].snapshotted.insert(group, meta.last_index);
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
                        self.slots[i].machines.entry(group).or_default().apply(entry);
                        if let Some(ack) = self.client.applied(id, group, entry) {
                            let ev =
                                TraceEvent::Ack { group, command: ack.command, index: ack.index };
                            self.trace.record(self.now_ns, &ev);
                            self.acked.on_ack(group, ack.index, digest, &self.sms)?;
                            if let Phase::Healing { since_ns } = self.phase {
                                if ack.proposed_at_ns >= since_ns
                                    && !self.probes.contains_key(&group)
                                {
                                    // Every replica must reach everything acknowledged so far.
                                    let target = ack.index.max(self.acked.max_index(group));
                                    self.probes.insert(group, target);
                                    if !self.config.steady_load {
                                        self.client.retire(group);
                                    }
                                }
                            }
                        }
                    }
                }
                Output::Read { group, ctx, index } => {
                    let applied =
                        self.slots[i].machines.get(&group).map(|m| m.applied()).unwrap_or_default();
                    self.reads.on_served(ctx, group, id, index, applied)?;
                    self.reads_resolve.on_outcome(ctx);
                }
                Output::ReadFailed { ctx, .. } => {
                    self.reads.forget(ctx);
                    self.reads_resolve.on_outcome(ctx);
                }
            }
        }
        Ok(())
    }

    /// Takes a snapshot of each group whose state machine applied `snapshot_every` entries
    /// since the last one (log compaction, RAFT-8).
    fn maybe_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let Some(every) = self.snapshot_every else { return Ok(()) };
        let groups: Vec<GroupId> = self.groups.iter().map(|g| g.0).collect();
        for group in groups {
            let slot = &mut self.slots[i];
            // Invariant: `start_node` gives every slot a machine and a snapshot mark per group.
            let machine = &slot.machines[&group];
            let applied = machine.applied();
            if applied.0 < slot.snapshotted[&group].0 + every {
                continue;
            }
            let data = machine.snapshot();
            let Some(node) = slot.node.as_mut() else { return Ok(()) };
            match node.snapshot(group, applied, data) {
                Ok(()) => {
                    slot.snapshotted.insert(group, applied);
                }
                Err(SnapshotRequestError::Refused(_)) => {}
                Err(SnapshotRequestError::Fatal(f)) => return self.on_fatal(i, &f),
                Err(e @ SnapshotRequestError::UnknownGroup(_)) => {
                    return Err(Violation {
                        invariant: "simulator",
                        detail: format!("snapshot refused: {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    fn log_summary(&self, i: usize, group: GroupId) -> LogSummary {
        let slot = &self.slots[i];
        let Some(core) = slot.node.as_ref().and_then(|n| n.core(group)) else {
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
            self.check_group_logs(*group)?;
        }
        Ok(())
    }

    /// INV-R3 between the logs of `group` on every node that is up.
    fn check_group_logs(&self, group: GroupId) -> Result<(), Violation> {
        let logs: Vec<LogSummary> = (0..self.slots.len())
            .filter(|&i| self.slots[i].node.is_some())
            .map(|i| self.log_summary(i, group))
            .collect();
        log_matching::check(group, &logs)
    }

    /// Shows node `i`'s replicas to the checkers that watch leaders (INV-R2, INV-R4 keyed
    /// on commit, INV-R7); `full` compares a leader's whole log, not only its ends.
    fn observe_leader(&mut self, i: usize, full: bool) -> Result<(), Violation> {
        let slot = &self.slots[i];
        let Some(node) = slot.node.as_ref() else { return Ok(()) };
        for (group, _) in &self.groups {
            let Some(core) = node.core(*group) else { continue };
            self.append_only.observe(slot.id, *group, core, full)?;
            self.commit_rule.observe(slot.id, *group, core)?;
            self.committed.observe(slot.id, *group, core)?;
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
            Fault::Crash { node, kind, down_ns } => {
                self.crash(node, kind, down_ns);
                self.check_logs()?;
            }
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
        let local = self.local_ns(p.node);
        let slot = &mut self.slots[p.node];
        let id = slot.id;
        let Some(node) = slot.node.as_mut() else {
            self.client.refused(&p, &decree_raft::node::ProposeError::Stopped("down".into()));
            return Ok(());
        };
        let result = node.propose(local, p.group, p.payload.clone());
        let ev = TraceEvent::Propose {
            node: id,
            group: p.group,
            command: p.command,
            index: result.as_ref().ok().copied(),
        };
        self.trace.record(self.now_ns, &ev);
        match result {
            Ok(index) => {
                self.client.accepted(p, id, index, self.now_ns);
                self.want_process(ev_node(id));
            }
            Err(e) => self.client.refused(&p, &e),
        }
        Ok(())
    }

    /// A linearizable read (RAFT-3) of a random group at a random live node: leaders answer
    /// after a heartbeat round, followers ask their leader for the index.
    fn issue_read(&mut self) {
        let group = self.groups[self.sched_rng.range(0, self.groups.len() as u64) as usize].0;
        let i = self.sched_rng.range(0, self.slots.len() as u64) as usize;
        let local = self.local_ns(i);
        let floor = self.acked.max_index(group);
        let ctx = self.next_read_ctx;
        let id = self.slots[i].id;
        let Some(node) = self.slots[i].node.as_mut() else { return };
        if node.read_index(local, group, ctx).is_ok() {
            self.next_read_ctx += 1;
            self.reads.on_issue(ctx, group, id, floor);
            self.reads_resolve.on_issue(ctx, group, id, self.now_ns);
            self.want_process(i);
        }
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
                    let st = s.node.as_ref()?.status(*group)?;
                    Some(ReplicaView {
                        node: s.id,
                        term: st.term,
                        leader: st.leader,
                        is_leader: st.role == decree_raft::core::Role::Leader,
                        applied: s.machines.get(group).map(|m| m.applied()).unwrap_or_default(),
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
        self.transfers.check(self.now_ns)?;
        // RAFT-3: once converged, every read issued before the last two election timeouts
        // must have been served or failed (`reads_resolve`) — before the transfers below,
        // whose leader changes would fail the reads still waiting. Under steady load a
        // replica may stay behind the head of the log, and a read it was given an index for
        // waits until it applied that far: there only the reads issued before the heal count.
        let read_bound_ns = if self.config.steady_load {
            self.now_ns - since_ns
        } else {
            2 * duration_ns(self.node_config.raft.election_timeout_max)
        };
        let reads = self.reads_resolve.check(self.now_ns, read_bound_ns);
        let out_of_time = self.now_ns - since_ns > self.config.heal_bound_ms * 1_000_000;
        match pending {
            None if !self.transfers.started() && reads.is_err() => {
                if out_of_time {
                    return reads;
                }
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
            None if !self.transfers.started() => {
                // RAFT-6: converged, so the targets are reachable and caught up.
                self.trace.record(self.now_ns, &TraceEvent::Fault { what: "converged" });
                self.start_transfers();
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
            None if self.transfers.settled() => {
                self.phase = Phase::Done;
                self.trace.record(self.now_ns, &TraceEvent::Fault { what: "transferred" });
                Ok(())
            }
            None if out_of_time => Err(Violation {
                invariant: "liveness after heal",
                detail: "leadership transfers did not settle".into(),
            }),
            None => {
                // Converged, waiting for the transfers (bounded by their own deadlines).
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
            Some((group, why)) if out_of_time => {
                Err(liveness::timed_out(group, self.config.heal_bound_ms, why))
            }
            Some(_) => {
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
        }
    }

    /// Asks each group's leader to hand leadership to a caught-up follower (the first after
    /// it in node order whose log the leader replicates up to its commit index, not by
    /// snapshot), which must lead within an election timeout (`transfer_completes`).
    fn start_transfers(&mut self) {
        self.transfers.mark_started();
        let bound_ns = duration_ns(self.node_config.raft.election_timeout_max);
        let n = self.slots.len();
        for g in 0..self.groups.len() {
            let group = self.groups[g].0;
            let Some((leader, status)) = (0..n).find_map(|i| {
                let status = self.slots[i].node.as_ref()?.status(group)?;
                (status.role == Role::Leader).then_some((i, status))
            }) else {
                continue;
            };
            let caught_up = |i: usize| {
                status.progress.get(&self.slots[i].id).is_some_and(|&(matched, state)| {
                    state == ReplicationState::Replicate && matched >= status.commit
                })
            };
            let Some(target) = (1..n).map(|k| (leader + k) % n).find(|&i| caught_up(i)) else {
                continue;
            };
            let target_id = self.slots[target].id;
            let local = self.local_ns(leader);
            let Some(node) = self.slots[leader].node.as_mut() else { continue };
            if node.transfer_leadership(local, group, target_id).is_ok() {
                self.transfers.on_start(group, target_id, self.now_ns + bound_ns);
                self.want_process(leader);
            }
        }
    }

    fn final_checks(&self) -> Result<(), Violation> {
        self.check_logs()?;
        for slot in &self.slots {
            for (group, machine) in &slot.machines {
                let contents: BTreeMap<LogIndex, u64> = machine
                    .commands()
                    .iter()
                    .map(|(i, c)| (*i, payload_digest(&EntryPayload::Command(c.clone()))))
                    .collect();
                self.acked.check_replica(slot.id, *group, machine.applied(), &contents)?;
            }
        }
        Ok(())
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

fn ev_node(id: NodeId) -> usize {
    (id.0 as usize).wrapping_sub(1)
}
