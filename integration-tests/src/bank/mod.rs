//! The bank workload: participant groups and coordinator groups on every node
//! (`Either<ParticipantGroup, CoordinatorGroup>` hosts), simulated clients doing transfers
//! and audits, faults, and the transaction checkers (TESTING.md "The bank check").
//!
//! # The run
//!
//! 1. From the seed: `participant_groups` participant groups (the key space split so that the
//!    accounts spread over all of them) and `coordinator_groups` coordinator groups, each with
//!    a replica on every node; the Raft timeouts are the product's defaults.
//! 2. Faulty phase: clients transfer money — read both balances at `read_ts` from the
//!    participant leaders, then `CommitLocal` (one group, 1PC) or `CommitTxn` to the
//!    coordinator [`coordinator_for`] picks; a lost or ambiguous answer is resolved (the same
//!    `CommitLocal` again, deduplicated by OPC-2, or `TxnStatus`) before the client decides
//!    anything. Audits read every account at one `read_ts`. Faults: loss, duplication and
//!    delay on the network, partitions, crashes of random nodes, and crashes of the
//!    coordinator leader right after its `StartCommit` applied and its prepares left.
//! 3. Healing: faults off, every node up; the run waits until every transfer's outcome is
//!    known, no intent is left, every coordinator record is a stub, and every group has one
//!    leader and equal digests on its replicas.
//!
//! Checkers, one file each in [`crate::check`]: `bank_conservation` (every audit),
//! `atomicity` (INV-A1 across participant replicas), `acked_commits` (the final balances are
//! exactly what the known outcomes give), `healed` (no intent, records compacted, one leader,
//! equal digests).

mod client;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use decree_client::bank::{decode_balance, Bank};
use decree_coordinator::{
    ClusterMap, CoordinatorCommand, CoordinatorConfig, CoordinatorGroup, Record,
};
use decree_host::ReplicatedMachine;
use decree_host::{ClientTag, Directory, Either, Fatal, GroupSpec, Host, HostConfig, HostEnvelope};
use decree_host::{HostIo, Role};
use decree_participant::{ParticipantConfig, ParticipantGroup, TxnState};
use decree_proto::{ErrorResponse, Request, Response};
use decree_raft::disk::MemDisk;
use decree_raft::node::{NodeConfig, Output};
use decree_types::{DetRng, GroupId, HlcTimestamp, Key, NodeId, RangeMap};

use crate::check::Violation;
use crate::clock::SimClock;
use crate::faults::CrashKind;
use crate::network::{Arrival, NetParams, Network, Partition};

pub use client::{Clients, TransferOutcome};

/// What every node hosts.
pub type BankMachine = Either<ParticipantGroup, CoordinatorGroup>;
/// What hosts send each other.
pub type BankEnvelope = HostEnvelope<BankMachine>;
type BankHost = Host<MemDisk, BankMachine>;
/// What a group answers.
pub type BankResponse = Result<Response, ErrorResponse>;

const TICK_NS: u64 = 10_000_000;
const PROCESS_DELAY_MAX_NS: u64 = 300_000;
const CLOG_RETRY_NS: u64 = 20_000_000;
const HEAL_CHECK_NS: u64 = 50_000_000;
/// Accounts per participant group, and their first balance.
const ACCOUNTS_PER_GROUP: usize = 4;
const INITIAL_BALANCE: i64 = 100;
/// The first coordinator group's id (participant groups are 1..).
const COORD_GROUP_BASE: u64 = 100;

/// What a bank run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankConfig {
    /// Decides everything else.
    pub seed: u64,
    /// Nodes (every group has a replica on each).
    pub nodes: usize,
    /// Participant groups (≥ 1).
    pub participant_groups: usize,
    /// Coordinator groups (≥ 1).
    pub coordinator_groups: usize,
    /// Length of the faulty phase, simulated ms.
    pub faulty_ms: u64,
    /// The healing phase must converge within this many simulated ms.
    pub heal_bound_ms: u64,
    /// Inject faults.
    pub faults: bool,
    /// Print every event.
    pub verbose: bool,
    /// Recovery-time mode: no other fault; once, mid-load, the coordinator leader crashes
    /// right after a `StartCommit` applied with its prepares out, and the time until its group
    /// has no transaction in doubt is measured (issue 11 §8).
    pub recovery: bool,
    /// Raft timeouts other than the product's defaults: `(heartbeat, election minimum)` in
    /// ms (the election timeout is drawn from `[min, 2·min)`), to compare settings.
    pub timeouts_ms: Option<(u64, u64)>,
    /// Deliberately break durability: a crashed node comes back with an empty disk. Only to
    /// show that the checkers catch lost transactions.
    pub amnesia: bool,
}

impl BankConfig {
    /// The defaults for `seed`: 3 nodes, 3 participant groups, 1 coordinator group.
    pub fn new(seed: u64) -> Self {
        BankConfig {
            seed,
            nodes: 3,
            participant_groups: 3,
            coordinator_groups: 1,
            faulty_ms: 8_000,
            heal_bound_ms: 60_000,
            faults: true,
            verbose: false,
            recovery: false,
            timeouts_ms: None,
            amnesia: false,
        }
    }

    /// The one command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p decree-sim --bin sim -- --workload bank --seed {} --nodes {} \
             --groups {} --coordinator-groups {}{}",
            self.seed,
            self.nodes,
            self.participant_groups,
            self.coordinator_groups,
            if self.faults { "" } else { " --no-faults" }
        ) + if self.recovery { " --recovery" } else { "" }
            + if self.amnesia { " --amnesia" } else { "" }
    }
}

/// The result of one bank run.
#[derive(Clone, Debug)]
pub struct BankOutcome {
    /// What ran.
    pub config: BankConfig,
    /// Simulated time at the end, ms.
    pub sim_ms: u64,
    /// Transfers committed, aborted, and given up (outcome never learned before the end).
    pub committed: usize,
    /// Transfers aborted.
    pub aborted: usize,
    /// Audits checked.
    pub audits: usize,
    /// Crashes injected.
    pub crashes: usize,
    /// Crashes of a coordinator leader with a `StartCommit` applied and prepares out.
    pub coordinator_crashes: usize,
    /// Recovery times after a coordinator leader crash (ns): (election, last in-doubt
    /// transaction of its group resolved), both from the crash.
    pub recoveries: Vec<(u64, u64)>,
    /// The crash points this run reached ([`CRASH_POINTS`]).
    pub crash_points: BTreeSet<&'static str>,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
}

/// Crash point: the coordinator leader, right after a `StartCommit` applied on it and its
/// prepares left (2PC crash point (a)).
pub const CRASH_AFTER_START_COMMIT: &str = "coordinator leader after StartCommit, prepares out";
/// Crash point: the node leading a coordinator group and a participant group at once.
pub const CRASH_LEADER_OF_BOTH: &str = "the node leading a coordinator and a participant group";
/// Crash point: the coordinator leader at a random moment.
pub const CRASH_COORDINATOR_LEADER: &str = "coordinator leader, any moment";
/// Crash point (b): the coordinator leader applied `Decide`; neither the client's answer nor
/// phase two left.
pub const CRASH_AFTER_DECIDE: &str = "coordinator leader after Decide applied, before the reply";
/// Crash point (c): the client's answer left, phase two did not.
pub const CRASH_AFTER_REPLY: &str = "coordinator leader after the reply, before phase two";
/// Crash point (d): part of phase two left.
pub const CRASH_DURING_PHASE_TWO: &str = "coordinator leader during phase two";
/// Crash point: a participant leader right after its `Yes` vote left.
pub const CRASH_PARTICIPANT_AFTER_YES: &str = "participant leader after voting yes";
/// Every crash point the bank workload aims at.
pub const CRASH_POINTS: &[&str] = &[
    CRASH_AFTER_START_COMMIT,
    CRASH_AFTER_DECIDE,
    CRASH_AFTER_REPLY,
    CRASH_DURING_PHASE_TWO,
    CRASH_PARTICIPANT_AFTER_YES,
    CRASH_LEADER_OF_BOTH,
    CRASH_COORDINATOR_LEADER,
];

/// The crash points armed by the fault plan (the others are reached directly).
const ARMED_POINTS: &[&str] = &[
    CRASH_AFTER_START_COMMIT,
    CRASH_AFTER_DECIDE,
    CRASH_AFTER_REPLY,
    CRASH_DURING_PHASE_TWO,
    CRASH_PARTICIPANT_AFTER_YES,
];

impl BankOutcome {
    /// Did every checker pass?
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

impl fmt::Display for BankOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bank seed {}: {} — {} ms simulated, {} committed, {} aborted, {} audits, {} crashes \
             ({} coordinator leaders mid-commit)",
            self.config.seed,
            if self.passed() { "ok" } else { "FAILED" },
            self.sim_ms,
            self.committed,
            self.aborted,
            self.audits,
            self.crashes,
            self.coordinator_crashes,
        )?;
        if let Some(v) = &self.violation {
            write!(f, "\n  {v}\n  replay: {}", self.config.replay_command())?;
        }
        Ok(())
    }
}

/// Runs one bank simulation to the end.
pub fn run(config: &BankConfig) -> BankOutcome {
    let mut sim = BankSim::new(config.clone());
    let violation = sim.run_to_end().err();
    BankOutcome {
        config: config.clone(),
        sim_ms: sim.now_ns / 1_000_000,
        committed: sim.clients.count(TransferOutcome::Committed),
        aborted: sim.clients.count(TransferOutcome::Aborted),
        audits: sim.clients.audits(),
        crashes: sim.crashes,
        coordinator_crashes: sim.coordinator_crashes,
        recoveries: sim.recoveries.clone(),
        crash_points: sim.crash_points.clone(),
        violation,
    }
}

#[derive(Debug)]
enum Event {
    Deliver { from: usize, to: usize, batch: Vec<BankEnvelope> },
    Tick { node: usize, incarnation: u64 },
    Process { node: usize, incarnation: u64 },
    Restart { node: usize },
    Fault,
    Unpartition,
    Client,
    Heal,
    HealCheck,
    RecoveryCheck,
    SnapshotEncoded { node: usize, incarnation: u64, job: Box<BankSnapshotJob> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faulty,
    Healing,
    Done,
}

struct Slot {
    id: NodeId,
    host: Option<BankHost>,
    disk: MemDisk,
    clock: SimClock,
    incarnation: u64,
    process_scheduled: bool,
    rng: DetRng,
}

/// A coordinator leader crash being timed: when, which group, who led.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    group: GroupId,
    crashed_at: u64,
    old_leader: NodeId,
    elected_at: Option<u64>,
}

struct BankSim {
    config: BankConfig,
    now_ns: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    net: Network,
    slots: Vec<Slot>,
    groups: Vec<(GroupId, Vec<NodeId>)>,
    participants: Vec<GroupId>,
    coordinators: Vec<GroupId>,
    ranges: RangeMap,
    map: ClusterMap,
    bank: Bank,
    phase: Phase,
    fault_rng: DetRng,
    sched_rng: DetRng,
    clients: Clients,
    crashes: usize,
    coordinator_crashes: usize,
    recovery: Option<Recovery>,
    recoveries: Vec<(u64, u64)>,
    heal_started_ns: u64,
    crash_points: BTreeSet<&'static str>,
    /// A crash point armed by the fault plan, waiting to be reached.
    armed: Option<&'static str>,
    /// Delays of snapshot encodings (a stream of its own; see `schedule_snapshot_jobs`).
    snapshot_rng: DetRng,
}

impl BankSim {
    fn new(config: BankConfig) -> Self {
        let mut rng = DetRng::new(config.seed ^ 0xba4c_0000_0000_0000);
        let net_rng = rng.fork();
        let mut fault_rng = rng.fork();
        let client_rng = rng.fork();
        let sched_rng = rng.fork();
        let mut node_rng = rng.fork();
        let n = config.nodes;
        let voters: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let participants: Vec<GroupId> =
            (1..=config.participant_groups.max(1) as u64).map(GroupId).collect();
        let coordinators: Vec<GroupId> = (0..config.coordinator_groups.max(1) as u64)
            .map(|c| GroupId(COORD_GROUP_BASE + c))
            .collect();
        let prefixes: Vec<String> = participants.iter().map(|g| format!("g{}/", g.0)).collect();
        let splits: Vec<Key> = prefixes.iter().skip(1).map(|p| Key::new(p.as_bytes())).collect();
        // Invariant: the splits ascend ("g2/" < "g3/" ... for fewer than 10 groups).
        let ranges = RangeMap::split_at(splits, participants.clone()).expect("ascending splits");
        let prefix_refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let bank = Bank::new(&prefix_refs, ACCOUNTS_PER_GROUP, INITIAL_BALANCE);
        let groups: Vec<(GroupId, Vec<NodeId>)> =
            participants.iter().chain(&coordinators).map(|g| (*g, voters.clone())).collect();
        let replicas = groups.iter().cloned().collect();
        let addrs = voters.iter().map(|v| (*v, format!("{v}"))).collect();
        let map = ClusterMap::new(ranges.clone(), replicas, addrs, coordinators.clone())
            .expect("a valid bootstrap map");
        let mut net = Network::new(n, net_rng);
        if config.faults {
            net.set_params(NetParams::faulty(&mut fault_rng));
        }
        let slots = (0..n)
            .map(|i| Slot {
                id: NodeId(i as u64 + 1),
                host: None,
                disk: MemDisk::new(),
                clock: if config.faults {
                    let mut clock = SimClock::seeded(&mut node_rng);
                    clock.skew_wall(&mut node_rng);
                    clock
                } else {
                    SimClock::perfect()
                },
                incarnation: 0,
                process_scheduled: false,
                rng: node_rng.fork(),
            })
            .collect();
        let clients = Clients::new(
            3,
            bank.clone(),
            ranges.clone(),
            coordinators.clone(),
            voters.clone(),
            client_rng,
        );
        BankSim {
            now_ns: 0,
            seq: 0,
            queue: BTreeMap::new(),
            net,
            slots,
            groups,
            participants,
            coordinators,
            ranges,
            map,
            bank,
            phase: Phase::Faulty,
            fault_rng,
            sched_rng,
            clients,
            crashes: 0,
            coordinator_crashes: 0,
            recovery: None,
            recoveries: Vec::new(),
            heal_started_ns: 0,
            snapshot_rng: DetRng::new(config.seed ^ SNAPSHOT_STREAM),
            crash_points: BTreeSet::new(),
            armed: None,
            config,
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.verbose {
            println!("{:>8.3} ms {}", self.now_ns as f64 / 1e6, what());
        }
    }

    fn run_to_end(&mut self) -> Result<(), Violation> {
        for i in 0..self.slots.len() {
            self.start_node(i)?;
        }
        self.schedule(100_000_000, Event::Client);
        if self.config.faults || self.config.recovery {
            let at = 500_000_000 + self.fault_rng.range(0, 1_500_000_000);
            self.schedule(at, Event::Fault);
        }
        self.schedule(self.config.faulty_ms * 1_000_000, Event::Heal);
        while self.phase != Phase::Done {
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return Err(Violation { invariant: "simulator", detail: "no events left".into() });
            };
            self.now_ns = at;
            self.handle(event)?;
        }
        Ok(())
    }

    fn schedule(&mut self, at_ns: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at_ns, self.seq), event);
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::SnapshotEncoded { node, incarnation, job } => {
                self.snapshot_encoded(node, incarnation, job)
            }
            Event::Deliver { from, to, batch } => self.deliver(from, to, batch),
            Event::Tick { node, incarnation } => {
                if self.slots[node].incarnation != incarnation {
                    return Ok(());
                }
                let (local, wall) = self.times(node);
                if let Some(h) = self.slots[node].host.as_mut() {
                    h.handle_timeout(local, wall);
                }
                self.want_process(node);
                self.schedule(self.now_ns + TICK_NS, Event::Tick { node, incarnation });
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
                if self.slots[node].host.is_none() {
                    self.start_node(node)?;
                }
                Ok(())
            }
            Event::Fault => {
                if self.phase == Phase::Faulty && self.config.recovery {
                    self.arm_coordinator_crash();
                } else if self.phase == Phase::Faulty {
                    self.inject_fault();
                    let next = self.fault_rng.range(200_000_000, 1_500_000_000);
                    self.schedule(self.now_ns + next, Event::Fault);
                }
                Ok(())
            }
            Event::Unpartition => {
                self.net.heal();
                Ok(())
            }
            Event::Client => {
                if self.phase == Phase::Done {
                    return Ok(());
                }
                let quiesce = self.phase == Phase::Healing;
                let sends = self.clients.step(self.now_ns, quiesce)?;
                for (node, tag, group, request) in sends {
                    self.client_request(node, tag, group, request);
                }
                let gap = self.sched_rng.range(1_000_000, 20_000_000);
                self.schedule(self.now_ns + gap, Event::Client);
                Ok(())
            }
            Event::Heal => {
                self.phase = Phase::Healing;
                self.heal_started_ns = self.now_ns;
                self.net.heal();
                self.net.set_params(NetParams::quiet());
                for i in 0..self.slots.len() {
                    if self.slots[i].host.is_none() {
                        self.start_node(i)?;
                    }
                }
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
            Event::HealCheck => self.heal_check(),
            Event::RecoveryCheck => {
                self.recovery_check();
                Ok(())
            }
        }
    }

    fn times(&self, i: usize) -> (u64, u64) {
        let c = &self.slots[i].clock;
        (c.local_ns(self.now_ns), c.wall_ns(self.now_ns))
    }

    fn host_config(&self) -> HostConfig {
        // The product's defaults, except snapshots: often, so restores are exercised.
        let mut node = NodeConfig::default();
        if let Some((heartbeat, election)) = self.config.timeouts_ms {
            node.raft.heartbeat_interval = std::time::Duration::from_millis(heartbeat);
            node.raft.election_timeout_min = std::time::Duration::from_millis(election);
            node.raft.election_timeout_max = std::time::Duration::from_millis(2 * election);
        }
        HostConfig { node, snapshot_every_entries: 200, ..HostConfig::default() }
    }

    fn start_node(&mut self, i: usize) -> Result<(), Violation> {
        let (local, wall) = self.times(i);
        let host_config = self.host_config();
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.process_scheduled = false;
        let rng = slot.rng.fork();
        let specs = self
            .groups
            .iter()
            .map(|(group, voters)| {
                let machine = if self.participants.contains(group) {
                    let range = self
                        .ranges
                        .iter()
                        .find(|(_, g)| g == group)
                        .map(|(r, _)| r.clone())
                        .unwrap_or_else(decree_types::KeyRange::full);
                    Either::Left(ParticipantGroup::new(
                        *group,
                        range,
                        self.map.version(),
                        ParticipantConfig::default(),
                    ))
                } else {
                    Either::Right(CoordinatorGroup::new(
                        *group,
                        CoordinatorConfig::default(),
                        self.map.clone(),
                    ))
                };
                GroupSpec { group: *group, voters: voters.clone(), machine }
            })
            .collect();
        let opened = Host::open(
            slot.id,
            host_config,
            specs,
            Directory::new(self.groups.clone()),
            slot.disk.clone(),
            rng,
            local,
            wall,
        );
        match opened {
            Ok(host) => slot.host = Some(host),
            Err(e) => {
                return Err(Violation {
                    invariant: "a crashed node restarts from its WAL",
                    detail: format!("{} failed to open: {e}", slot.id),
                })
            }
        }
        let incarnation = slot.incarnation;
        let jitter = self.sched_rng.range(0, TICK_NS);
        self.schedule(self.now_ns + jitter, Event::Tick { node: i, incarnation });
        self.want_process(i);
        self.trace(|| format!("start n{}", i + 1));
        Ok(())
    }

    fn crash(&mut self, i: usize, kind: CrashKind, down_ns: u64) {
        let slot = &mut self.slots[i];
        if slot.host.take().is_none() {
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
        self.crashes += 1;
        self.clients.node_down(slot.id);
        self.trace(|| format!("crash n{} ({kind:?})", i + 1));
        self.schedule(self.now_ns + down_ns, Event::Restart { node: i });
    }

    fn want_process(&mut self, i: usize) {
        if self.slots[i].process_scheduled || self.slots[i].host.is_none() {
            return;
        }
        self.slots[i].process_scheduled = true;
        let delay = self.sched_rng.range(0, PROCESS_DELAY_MAX_NS);
        let incarnation = self.slots[i].incarnation;
        self.schedule(self.now_ns + delay, Event::Process { node: i, incarnation });
    }

    fn process(&mut self, i: usize) -> Result<(), Violation> {
        let (local, wall) = self.times(i);
        let id = self.slots[i].id;
        let Some(host) = self.slots[i].host.as_mut() else { return Ok(()) };
        let mut io = BankIo::default();
        let result = host.process(local, wall, &mut io);
        let more = host.has_work();
        let jobs = std::mem::take(&mut io.snapshots);
        for (_, batch) in &io.sent {
            crate::check::p6_vote_after_apply::check(id, batch, |g| host.machine(g))?;
        }
        // A crash point armed for this iteration decides how much of its output leaves.
        let point = self.crash_point_reached(i, &io);
        let (keep_sends, keep_replies) = match point {
            Some(CRASH_AFTER_DECIDE) => (0, false),
            Some(CRASH_AFTER_REPLY) => (0, true),
            Some(CRASH_DURING_PHASE_TWO) => (1, true),
            _ => (usize::MAX, true),
        };
        let replies = if keep_replies { io.replies } else { Vec::new() };
        for (to, batch) in io.sent.into_iter().take(keep_sends) {
            self.send(i, to, batch);
        }
        for (tag, clock, response) in replies {
            self.clients.on_reply(self.now_ns, tag.0, clock, Ok(response))?;
        }
        if let Some(point) = point {
            self.armed = None;
            self.crash_points.insert(point);
            let down = self.fault_rng.range(300_000_000, 3_000_000_000);
            self.crash(i, CrashKind::Kill, down);
            for (tag, clock, error) in io.refusals {
                self.clients.on_reply(self.now_ns, tag.0, clock, Err(error))?;
            }
            return Ok(());
        }
        for (tag, clock, error) in io.refusals {
            self.clients.on_reply(self.now_ns, tag.0, clock, Err(error))?;
        }
        self.schedule_snapshot_jobs(i, jobs);
        if io.prepares_applied {
            self.maybe_crash_coordinator();
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

    // ----- snapshot jobs: encoded off the iteration, as the node shell does -----

    /// Completes each job after a seeded delay, so applies, elections, restores and crashes
    /// fall between a job and its completion (a crashed incarnation's jobs are dropped).
    fn schedule_snapshot_jobs(&mut self, i: usize, jobs: Vec<BankSnapshotJob>) {
        let incarnation = self.slots[i].incarnation;
        for job in jobs {
            let at = self.now_ns + self.snapshot_rng.range(0, SNAPSHOT_ENCODE_DELAY_MAX_NS);
            self.schedule(at, Event::SnapshotEncoded { node: i, incarnation, job: Box::new(job) });
        }
    }

    fn snapshot_encoded(
        &mut self,
        i: usize,
        incarnation: u64,
        job: Box<BankSnapshotJob>,
    ) -> Result<(), Violation> {
        if self.slots[i].incarnation != incarnation {
            return Ok(());
        }
        let Some(host) = self.slots[i].host.as_mut() else { return Ok(()) };
        match host.snapshot_encoded(job.group, job.index, job.encode()) {
            Ok(_) => Ok(()),
            Err(fatal) => self.on_fatal(i, &fatal),
        }
    }

    fn on_fatal(&mut self, i: usize, fatal: &Fatal) -> Result<(), Violation> {
        if fatal.is_clock_offset() {
            // HLC-6 stops a node whose clock is off; the operator fixes it and restarts.
            self.crash(i, CrashKind::Kill, 500_000_000);
            return Ok(());
        }
        Err(Violation {
            invariant: "a node stops only on an injected fault",
            detail: format!("{} stopped: {fatal}", self.slots[i].id),
        })
    }

    fn send(&mut self, from: usize, to: NodeId, batch: Vec<BankEnvelope>) {
        let to_i = (to.0 as usize).wrapping_sub(1);
        if to_i >= self.slots.len() {
            return;
        }
        for at in self.net.plan(self.now_ns, from, to_i) {
            self.schedule(at, Event::Deliver { from, to: to_i, batch: batch.clone() });
        }
    }

    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        batch: Vec<BankEnvelope>,
    ) -> Result<(), Violation> {
        match self.net.arrive(from, to) {
            Arrival::Defer => {
                self.schedule(self.now_ns + CLOG_RETRY_NS, Event::Deliver { from, to, batch });
                return Ok(());
            }
            Arrival::Drop => return Ok(()),
            Arrival::Deliver => {}
        }
        let (local, wall) = self.times(to);
        let from_id = self.slots[from].id;
        let Some(h) = self.slots[to].host.as_mut() else { return Ok(()) };
        for envelope in batch {
            h.handle_envelope(local, wall, from_id, envelope);
        }
        self.want_process(to);
        Ok(())
    }

    fn client_request(&mut self, node: NodeId, tag: u64, group: GroupId, request: Request) {
        let i = (node.0 as usize).wrapping_sub(1);
        if i >= self.slots.len() {
            return;
        }
        let (local, wall) = self.times(i);
        let clock = self.clients.clock();
        let Some(h) = self.slots[i].host.as_mut() else {
            // Connection refused: the client learns of it at once.
            self.clients.unreachable(tag);
            return;
        };
        let client = decree_types::ClientId(7);
        h.handle_client_request(local, wall, client, ClientTag(tag), clock, group, request);
        self.want_process(i);
    }

    // ----- faults -----

    fn inject_fault(&mut self) {
        let n = self.slots.len();
        match self.fault_rng.range(0, 10) {
            0..=3 => {
                let i = self.fault_rng.range(0, n as u64) as usize;
                let kind = [CrashKind::Kill, CrashKind::PowerLoss, CrashKind::TornWrite]
                    [self.fault_rng.range(0, 3) as usize];
                let down = self.fault_rng.range(50_000_000, 2_000_000_000);
                self.crash(i, kind, down);
            }
            4..=5 => {
                let p = Partition::minority(n, &mut self.fault_rng);
                self.trace(|| format!("partition {}", p.name));
                self.net.set_partition(p);
                let hold = self.fault_rng.range(200_000_000, 3_000_000_000);
                self.schedule(self.now_ns + hold, Event::Unpartition);
            }
            6..=7 => {
                // Crash the leader of the node leading both a coordinator and a participant
                // group, if one does: else the coordinator leader.
                let both = self.leader_of_both();
                if let Some(i) = both.or_else(|| self.leader_index(self.coordinators[0])) {
                    self.crash_points.insert(if both.is_some() {
                        CRASH_LEADER_OF_BOTH
                    } else {
                        CRASH_COORDINATOR_LEADER
                    });
                    let down = self.fault_rng.range(100_000_000, 2_000_000_000);
                    self.crash(i, CrashKind::Kill, down);
                }
            }
            _ => self.arm_crash_point(),
        }
    }

    /// The node index leading `group`, if a live node believes it does.
    fn leader_index(&self, group: GroupId) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.host.as_ref().is_some_and(|h| h.role(group).is_some_and(|r| r.is_leader()))
        })
    }

    fn leader_of_both(&self) -> Option<usize> {
        let c = self.leader_index(self.coordinators[0])?;
        self.participants.iter().any(|p| self.leader_index(*p) == Some(c)).then_some(c)
    }

    fn arm_coordinator_crash(&mut self) {
        self.clients.armed_coordinator_crash = true;
    }

    /// Arms one of the crash points at random (recovery mode arms (a) only).
    fn arm_crash_point(&mut self) {
        let point = ARMED_POINTS[self.fault_rng.range(0, ARMED_POINTS.len() as u64) as usize];
        if point == CRASH_AFTER_START_COMMIT {
            self.arm_coordinator_crash();
        } else {
            self.armed = Some(point);
        }
    }

    /// Has node `i`, in the iteration that produced `io`, reached the armed crash point?
    fn crash_point_reached(&self, i: usize, io: &BankIo) -> Option<&'static str> {
        let point = self.armed?;
        if self.phase != Phase::Faulty {
            return None;
        }
        if point == CRASH_PARTICIPANT_AFTER_YES {
            let voted = io.sent.iter().flat_map(|(_, b)| b).any(|e| {
                self.participants.contains(&e.group)
                    && matches!(
                        &e.payload,
                        decree_proto::envelope::Payload::Response {
                            response: Ok(Response::Vote(decree_proto::txn::VoteReply {
                                vote: decree_proto::txn::Vote::Yes { .. },
                                ..
                            })),
                            ..
                        }
                    )
            });
            return voted.then_some(point);
        }
        // (b), (c), (d): this node leads a coordinator group and applied a Decide of it.
        let decided = io.decides.iter().any(|g| self.leader_index(*g) == Some(i));
        (decided && !io.sent.is_empty()).then_some(point)
    }

    /// Crash point (a): the coordinator leader applied a `StartCommit` and sent prepares.
    fn maybe_crash_coordinator(&mut self) {
        if !self.clients.armed_coordinator_crash || self.phase != Phase::Faulty {
            return;
        }
        let group = self.coordinators[0];
        let Some(i) = self.leader_index(group) else { return };
        let preparing = self.slots[i]
            .host
            .as_ref()
            .and_then(|h| h.machine(group))
            .and_then(|m| match m {
                Either::Right(c) => {
                    Some(c.log().iter().any(|(_, r)| matches!(r, Record::Preparing { .. })))
                }
                Either::Left(_) => None,
            })
            .unwrap_or(false);
        if !preparing {
            return;
        }
        self.clients.armed_coordinator_crash = false;
        self.coordinator_crashes += 1;
        self.crash_points.insert(CRASH_AFTER_START_COMMIT);
        let old_leader = self.slots[i].id;
        let down = self.fault_rng.range(500_000_000, 3_000_000_000);
        self.crash(i, CrashKind::Kill, down);
        if self.recovery.is_none() {
            self.recovery =
                Some(Recovery { group, crashed_at: self.now_ns, old_leader, elected_at: None });
            self.schedule(self.now_ns + 1_000_000, Event::RecoveryCheck);
        }
    }

    /// Times the recovery after a coordinator leader crash: the election (a new ready
    /// leader), then the last transaction in doubt at the crash resolved.
    fn recovery_check(&mut self) {
        let Some(mut r) = self.recovery else { return };
        let leader = self.slots.iter().find_map(|s| {
            let h = s.host.as_ref()?;
            match h.role(r.group)? {
                Role::Leader { ready: true, .. }
                    if s.id != r.old_leader || r.elected_at.is_some() =>
                {
                    Some(h)
                }
                _ => None,
            }
        });
        if let Some(h) = leader {
            if r.elected_at.is_none() {
                r.elected_at = Some(self.now_ns);
            }
            let in_doubt = match h.machine(r.group) {
                Some(Either::Right(c)) => !c.in_doubt(HlcTimestamp::ZERO).is_empty(),
                _ => true,
            };
            if !in_doubt {
                let elected = r.elected_at.unwrap_or(self.now_ns) - r.crashed_at;
                self.recoveries.push((elected, self.now_ns - r.crashed_at));
                self.recovery = None;
                return;
            }
        }
        if self.now_ns - r.crashed_at > 30_000_000_000 {
            self.recovery = None;
            return;
        }
        self.recovery = Some(r);
        self.schedule(self.now_ns + 1_000_000, Event::RecoveryCheck);
    }

    // ----- healing and the final checks -----

    fn heal_check(&mut self) -> Result<(), Violation> {
        let waited = self.now_ns - self.heal_started_ns;
        let result = self.healed();
        match result {
            Ok(()) => {
                self.phase = Phase::Done;
                crate::check::atomicity::check(&self.participant_views())?;
                crate::check::acked_commits::check(&self.clients, &self.final_balances()?)?;
                Ok(())
            }
            Err(v) if waited > self.config.heal_bound_ms * 1_000_000 => Err(v),
            Err(_) => {
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
        }
    }

    fn participant_views(&self) -> Vec<(NodeId, GroupId, &ParticipantGroup)> {
        let mut out = Vec::new();
        for s in &self.slots {
            let Some(h) = &s.host else { continue };
            for g in &self.participants {
                if let Some(Either::Left(p)) = h.machine(*g) {
                    out.push((s.id, *g, p));
                }
            }
        }
        out
    }

    fn healed(&self) -> Result<(), Violation> {
        if !self.clients.all_resolved() {
            return Err(Violation {
                invariant: "healed: every transfer's outcome is known",
                detail: self.clients.unresolved_detail(),
            });
        }
        let mut hosts = Vec::new();
        for s in &self.slots {
            let Some(h) = &s.host else {
                return Err(Violation {
                    invariant: "healed: every node up",
                    detail: format!("{}", s.id),
                });
            };
            hosts.push((s.id, h));
        }
        let mut views = Vec::new();
        for (g, _) in &self.groups {
            let mut machines = Vec::new();
            for (id, h) in &hosts {
                let (Some(m), Some(role), Some(applied)) =
                    (h.machine(*g), h.role(*g), h.applied(*g))
                else {
                    continue;
                };
                machines.push((*id, m, role, applied));
            }
            views.push((*g, machines));
        }
        crate::check::healed::check(&views)
    }

    /// Every account's balance on the leader of its group, as applied (after healing every
    /// replica is equal).
    fn final_balances(&self) -> Result<BTreeMap<Key, i64>, Violation> {
        let mut out = BTreeMap::new();
        for account in self.bank.accounts() {
            let group = self.ranges.group_for(account);
            let view = self
                .slots
                .iter()
                .filter_map(|s| s.host.as_ref())
                .filter_map(|h| match h.machine(group) {
                    Some(Either::Left(p)) => Some(p),
                    _ => None,
                })
                .next();
            let Some(p) = view else { continue };
            let top = HlcTimestamp::new(u64::MAX, 0);
            let value = match p.state().mvcc().read(account, top, top) {
                decree_participant::mvcc::ReadOutcome::Value { value, .. } => {
                    value.map(<[u8]>::to_vec)
                }
                other => {
                    return Err(Violation {
                        invariant: "healed: no intent remains",
                        detail: format!("{} reads {other:?} after healing", account.escaped()),
                    })
                }
            };
            let balance = match value {
                None => INITIAL_BALANCE,
                Some(bytes) => decode_balance(&bytes).unwrap_or(i64::MIN),
            };
            out.insert(account.clone(), balance);
        }
        Ok(out)
    }
}

/// Is `state` an intent (a prepared transaction)?
pub(crate) fn is_intent(state: &TxnState) -> bool {
    matches!(state, TxnState::Prepared { .. })
}

/// The groups a participant replica's decided transactions touched, for INV-A1.
pub(crate) fn decided(p: &ParticipantGroup) -> BTreeMap<decree_types::TxnId, bool> {
    p.state()
        .txns()
        .filter_map(|(id, e)| match e.state {
            TxnState::Committed { .. } => Some((*id, true)),
            TxnState::Aborted | TxnState::Rejected { .. } => Some((*id, false)),
            TxnState::Prepared { .. } => None,
        })
        .collect()
}

/// Outputs of one `process` call that the simulation acts on.
#[derive(Default)]
struct BankIo {
    sent: Vec<(NodeId, Vec<BankEnvelope>)>,
    replies: Vec<(ClientTag, HlcTimestamp, BankResponse)>,
    refusals: Vec<(ClientTag, HlcTimestamp, ErrorResponse)>,
    /// Some entry was applied (a crash point may have been reached).
    prepares_applied: bool,
    /// Coordinator groups that applied a `Decide` entry in this iteration.
    decides: Vec<GroupId>,
    snapshots: Vec<BankSnapshotJob>,
}

impl HostIo<BankMachine> for BankIo {
    fn snapshot(&mut self, job: BankSnapshotJob) {
        self.snapshots.push(job);
    }

    fn send(&mut self, to: NodeId, envelopes: Vec<BankEnvelope>) {
        self.sent.push((to, envelopes));
    }

    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: BankResponse) {
        self.replies.push((client, clock, response));
    }

    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse) {
        self.refusals.push((client, clock, error));
    }

    fn observe(&mut self, output: &Output) {
        let Output::Apply { group, entries } = output else { return };
        self.prepares_applied = true;
        for entry in entries {
            let decree_raft::EntryPayload::Command(bytes) = &entry.payload else { continue };
            type Stamped = (HlcTimestamp, <BankMachine as ReplicatedMachine>::Command);
            if let Ok((_, decree_host::EitherCommand::Right(CoordinatorCommand::Decide { .. }))) =
                postcard::from_bytes::<Stamped>(bytes)
            {
                self.decides.push(*group);
            }
        }
    }
}

/// A snapshot job of a bank host, handed back by `Event::SnapshotEncoded` (see
/// `schedule_snapshot_jobs`).
type BankSnapshotJob = decree_host::SnapshotJob<BankMachine>;
/// The most a snapshot job waits before its bytes come back to the host, ns.
const SNAPSHOT_ENCODE_DELAY_MAX_NS: u64 = 200_000_000;
/// Mixed into the seed for the stream of snapshot delays, so the other streams are unchanged.
const SNAPSHOT_STREAM: u64 = 0x736e_6170_7669_6577;

/// Bank seeds that once failed, kept as regression tests, with what each found.
pub const REGRESSION_SEEDS: &[(u64, &str)] = &[];
