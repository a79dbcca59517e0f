//! The bank workload, a [`Workload`] plug-in of the simulated [`World`]: participant groups
//! and coordinator groups on every node (`Either<ParticipantGroup, CoordinatorGroup>` hosts),
//! simulated clients doing transfers and audits, the crash points of the commit protocol, and
//! the transaction checkers (TESTING.md "The bank check").
//!
//! # The run
//!
//! 1. From the seed: `participant_groups` participant groups (the key space split so that the
//!    accounts spread over all of them) and `coordinator_groups` coordinator groups, each with
//!    a replica on every node; the Raft timeouts are the product's defaults (or
//!    `timeouts_ms`).
//! 2. Faulty phase: clients transfer money — read both balances at `read_ts` from the
//!    participant leaders, then `CommitLocal` (one group, 1PC) or `CommitTxn` to the
//!    coordinator [`coordinator_for`](decree_coordinator::coordinator_for) picks; a lost or
//!    ambiguous answer is resolved (the same `CommitLocal` again, deduplicated by OPC-2, or
//!    `TxnStatus`) before the client decides anything. Audits read every account at one
//!    `read_ts`. The world's faults strike (network loss, duplication and delay, partitions,
//!    clogging, crashes, torn writes, fsync failures, clock jumps and skew, leadership
//!    transfers), and the workload adds its own: crashes at the protocol's crash points
//!    ([`CRASH_POINTS`]), placed through the world's iteration hook
//!    ([`Workload::on_iteration`]) or on an applied entry ([`Note::Applied`]).
//! 3. Healing: the world's liveness check (one leader per group that every replica follows,
//!    every replica at the group's highest applied index), and the workload's: every
//!    transfer's outcome is known, and the `healed` checker. Then the world's leadership
//!    transfers (RAFT-6), its final checks, and the workload's.
//!
//! Checkers, one file each in [`crate::check`]: `bank_conservation` (every audit),
//! `p6_vote_after_apply` (every iteration), `atomicity` (INV-A1 across participant replicas,
//! at the end), `acked_commits` (the final balances are exactly what the known outcomes give),
//! `healed` (no intent, every coordinator record compacted to a stub, one leader, equal
//! digests); and every Raft-level checker of the world, which identifies an entry by the
//! digest of its bytes.
//!
//! Recovery mode (`recovery`): no other fault; once, mid-load, the coordinator leader crashes
//! right after a `StartCommit` applied with its prepares out, and the time until a new leader
//! is ready (election) and until its group has no transaction in doubt is measured.

mod client;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use decree_client::bank::{decode_balance, Bank};
use decree_coordinator::{
    ClusterMap, CoordinatorCommand, CoordinatorConfig, CoordinatorGroup, Record,
};
use decree_host::{ClientTag, Either, EitherCommand, HostEnvelope, ReplicatedMachine, Role};
use decree_participant::{ParticipantConfig, ParticipantGroup, TxnState};
use decree_proto::envelope::Payload;
use decree_proto::txn::{Vote, VoteReply};
use decree_proto::{ErrorResponse, Response};
use decree_raft::node::{NodeConfig, Output};
use decree_raft::EntryPayload;
use decree_types::{DetRng, GroupId, HlcTimestamp, Key, KeyRange, LogIndex, NodeId, RangeMap};

use crate::check::{command_digest, Violation};
use crate::faults::{CrashKind, FaultPlan};
use crate::network::{NetParams, Network};
use crate::sim::{drive, SimConfig};
use crate::trace::TraceEvent;
use crate::workload::Workload;
use crate::world::{CrashCut, Iteration, MachineFactory, Note, Phase, Shape, World};

pub use client::{Clients, TransferOutcome};

/// What every node hosts.
pub type BankMachine = Either<ParticipantGroup, CoordinatorGroup>;
/// What hosts send each other.
pub type BankEnvelope = HostEnvelope<BankMachine>;
/// What a group answers.
pub type BankResponse = Result<Response, ErrorResponse>;

/// Accounts per participant group, and their first balance.
const ACCOUNTS_PER_GROUP: usize = 4;
const INITIAL_BALANCE: i64 = 100;
/// The first coordinator group's id (participant groups are 1..).
const COORD_GROUP_BASE: u64 = 100;
/// Every node snapshots each group this often (entries), so restores are exercised.
const SNAPSHOT_EVERY_ENTRIES: u64 = 200;
/// Simulated clients.
const CLIENTS: usize = 3;
/// The clients start once the groups had time to elect, global ns.
const CLIENT_START_NS: u64 = 100_000_000;
/// Gap between two client rounds, global ns (bounds).
const CLIENT_GAP_NS: (u64, u64) = (1_000_000, 20_000_000);
/// The workload's first crash comes in this window, global ns.
const FIRST_CRASH_NS: (u64, u64) = (500_000_000, 2_000_000_000);
/// Gap between two of the workload's crashes (or armings), global ns.
const CRASH_GAP_NS: (u64, u64) = (400_000_000, 3_000_000_000);
/// How often the recovery after a coordinator leader crash is looked at, ns.
const RECOVERY_CHECK_NS: u64 = 1_000_000;
/// A recovery not done in this long is not measured, ns.
const RECOVERY_GIVE_UP_NS: u64 = 30_000_000_000;
/// [`Note::Wake`] tokens.
const WAKE_CRASH: u64 = 1;
const WAKE_RECOVERY: u64 = 2;

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
    // Every random stream is forked from the seed in a fixed order.
    let mut rng = DetRng::new(config.seed ^ 0xba4c_0000_0000_0000);
    let net_rng = rng.fork();
    let mut fault_rng = rng.fork();
    let client_rng = rng.fork();
    let sched_rng = rng.fork();
    let node_rng = rng.fork();
    let wall_rng = rng.fork();
    let crash_rng = rng.fork();

    let n = config.nodes;
    let mut node_config = NodeConfig::default();
    if let Some((heartbeat, election)) = config.timeouts_ms {
        node_config.raft.heartbeat_interval = Duration::from_millis(heartbeat);
        node_config.raft.election_timeout_min = Duration::from_millis(election);
        node_config.raft.election_timeout_max = Duration::from_millis(2 * election);
    }
    let plan =
        if config.faults { FaultPlan::seeded(n, &mut fault_rng) } else { FaultPlan::none(n) };
    let mut net = Network::new(n, net_rng);
    if config.faults {
        net.set_params(NetParams::faulty(&mut fault_rng));
    }
    let mut workload = BankWorkload::new(config.clone(), client_rng, crash_rng);
    let shape = Shape {
        groups: workload.groups(),
        node_config,
        snapshot_every: Some(SNAPSHOT_EVERY_ENTRIES),
        plan,
        faulty_ns: config.faulty_ms * 1_000_000,
    };
    let world_config = SimConfig {
        nodes: n,
        heal_bound_ms: config.heal_bound_ms,
        faults: config.faults,
        verbose: config.verbose,
        amnesia: config.amnesia,
        ..SimConfig::new(config.seed)
    };
    let mut world = World::new(
        world_config,
        shape,
        workload.machines(),
        net,
        fault_rng,
        sched_rng,
        node_rng,
        wall_rng,
        BankWorkload::entry_digest,
        BankWorkload::snapshot_contents,
    );
    let violation = drive(&mut world, &mut workload).err();
    BankOutcome {
        config: config.clone(),
        sim_ms: world.now_ns() / 1_000_000,
        committed: workload.clients.count(TransferOutcome::Committed),
        aborted: workload.clients.count(TransferOutcome::Aborted),
        audits: workload.clients.audits(),
        crashes: world.crashes,
        coordinator_crashes: workload.coordinator_crashes,
        recoveries: workload.recoveries.clone(),
        crash_points: workload.crash_points.clone(),
        violation,
    }
}

/// A coordinator leader crash being timed: when, which group, who led.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    group: GroupId,
    crashed_at: u64,
    old_leader: NodeId,
    elected_at: Option<u64>,
}

/// The bank workload. See the module docs.
#[derive(Debug)]
pub struct BankWorkload {
    config: BankConfig,
    participants: Vec<GroupId>,
    coordinators: Vec<GroupId>,
    ranges: RangeMap,
    map: ClusterMap,
    bank: Bank,
    clients: Clients,
    /// The workload's crashes: when, where, how long.
    crash_rng: DetRng,
    coordinator_crashes: usize,
    recovery: Option<Recovery>,
    recoveries: Vec<(u64, u64)>,
    crash_points: BTreeSet<&'static str>,
    /// Crash the coordinator leader once a `StartCommit` applied with its prepares out
    /// (crash point (a), checked on every applied entry).
    armed_start_commit: bool,
    /// Another crash point armed, waiting for an iteration that reaches it.
    armed: Option<&'static str>,
}

impl BankWorkload {
    /// The bank of `config`, its clients drawing from `client_rng`, its crashes from
    /// `crash_rng`.
    pub fn new(config: BankConfig, client_rng: DetRng, crash_rng: DetRng) -> Self {
        let voters: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
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
        let replicas =
            participants.iter().chain(&coordinators).map(|g| (*g, voters.clone())).collect();
        let addrs = voters.iter().map(|v| (*v, format!("{v}"))).collect();
        // Invariant: every group has voters and every coordinator group is listed.
        let map = ClusterMap::new(ranges.clone(), replicas, addrs, coordinators.clone())
            .expect("a valid bootstrap map");
        let clients = Clients::new(
            CLIENTS,
            bank.clone(),
            ranges.clone(),
            coordinators.clone(),
            voters,
            client_rng,
        );
        BankWorkload {
            config,
            participants,
            coordinators,
            ranges,
            map,
            bank,
            clients,
            crash_rng,
            coordinator_crashes: 0,
            recovery: None,
            recoveries: Vec::new(),
            crash_points: BTreeSet::new(),
            armed_start_commit: false,
            armed: None,
        }
    }

    /// Every group: the participant groups, then the coordinator groups.
    pub fn groups(&self) -> Vec<GroupId> {
        self.participants.iter().chain(&self.coordinators).copied().collect()
    }

    /// One client round: every idle client starts something (not while healing), every
    /// request due is sent.
    fn client_step(&mut self, world: &mut World<BankMachine>) -> Result<(), Violation> {
        if world.phase() == Phase::Done {
            return Ok(());
        }
        let now = world.now_ns();
        if now < CLIENT_START_NS {
            world.schedule_client(CLIENT_START_NS);
            return Ok(());
        }
        let quiesce = matches!(world.phase(), Phase::Healing { .. });
        for (node, tag, group, request) in self.clients.step(now, quiesce)? {
            let i = (node.0 as usize).wrapping_sub(1);
            let sent = i < world.nodes() && {
                world.record(&TraceEvent::Request { node, group, tag, read: false });
                world.client_request(i, ClientTag(tag), self.clients.clock(), group, request)
            };
            if !sent {
                // Connection refused: the client learns of it at once.
                self.clients.unreachable(tag);
            }
        }
        let gap = world.sched_rng().range(CLIENT_GAP_NS.0, CLIENT_GAP_NS.1);
        world.schedule_client(now + gap);
        Ok(())
    }

    /// The workload's own crash, every few hundred ms of the faulty phase: the node leading
    /// both a coordinator and a participant group (else the coordinator leader) now, or a
    /// crash point armed for later. Recovery mode arms crash point (a) once, and nothing else.
    fn crash_due(&mut self, world: &mut World<BankMachine>) {
        if world.phase() != Phase::Faulty {
            return;
        }
        if self.config.recovery {
            self.armed_start_commit = true;
            return;
        }
        if self.crash_rng.chance(1, 2) {
            let both = leader_of_both(world, self.coordinators[0], &self.participants);
            if let Some(i) = both.or_else(|| leader_index(world, self.coordinators[0])) {
                let point =
                    if both.is_some() { CRASH_LEADER_OF_BOTH } else { CRASH_COORDINATOR_LEADER };
                self.crash_points.insert(point);
                let down = self.crash_rng.range(100_000_000, 2_000_000_000);
                world.crash_node(i, CrashKind::Kill, down, point);
            }
        } else {
            let point = ARMED_POINTS[self.crash_rng.range(0, ARMED_POINTS.len() as u64) as usize];
            if point == CRASH_AFTER_START_COMMIT {
                self.armed_start_commit = true;
            } else {
                self.armed = Some(point);
            }
        }
        let gap = self.crash_rng.range(CRASH_GAP_NS.0, CRASH_GAP_NS.1);
        world.schedule_wake(world.now_ns() + gap, WAKE_CRASH);
    }

    /// Has node `i`, in `iteration`, reached the armed crash point?
    fn crash_point_reached(
        &self,
        world: &World<BankMachine>,
        i: usize,
        iteration: &Iteration<BankMachine>,
    ) -> Option<&'static str> {
        let point = self.armed?;
        if world.phase() != Phase::Faulty {
            return None;
        }
        if point == CRASH_PARTICIPANT_AFTER_YES {
            let sent = iteration.sent.iter().flat_map(|(_, b)| b);
            let voted = sent.chain(&iteration.local).any(|e| {
                self.participants.contains(&e.group)
                    && matches!(
                        &e.payload,
                        Payload::Response {
                            response: Ok(Response::Vote(VoteReply { vote: Vote::Yes { .. }, .. })),
                            ..
                        }
                    )
            });
            return voted.then_some(point);
        }
        // (b), (c), (d): this node leads a coordinator group and applied a Decide of it.
        let decided = decides(iteration).any(|g| leader_index(world, g) == Some(i));
        (decided && !iteration.sent.is_empty()).then_some(point)
    }

    /// Crash point (a): the coordinator leader applied a `StartCommit` and sent prepares.
    fn maybe_crash_coordinator(&mut self, world: &mut World<BankMachine>) {
        if !self.armed_start_commit || world.phase() != Phase::Faulty {
            return;
        }
        let group = self.coordinators[0];
        let Some(i) = leader_index(world, group) else { return };
        let preparing = match world.host(i).and_then(|h| h.machine(group)) {
            Some(Either::Right(c)) => {
                c.log().iter().any(|(_, r)| matches!(r, Record::Preparing { .. }))
            }
            _ => false,
        };
        if !preparing {
            return;
        }
        self.armed_start_commit = false;
        self.coordinator_crashes += 1;
        self.crash_points.insert(CRASH_AFTER_START_COMMIT);
        let old_leader = world.node_id(i);
        let down = self.crash_rng.range(500_000_000, 3_000_000_000);
        world.crash_node(i, CrashKind::Kill, down, CRASH_AFTER_START_COMMIT);
        if self.recovery.is_none() {
            let now = world.now_ns();
            self.recovery = Some(Recovery { group, crashed_at: now, old_leader, elected_at: None });
            world.schedule_wake(now + RECOVERY_CHECK_NS, WAKE_RECOVERY);
        }
    }

    /// Times the recovery after a coordinator leader crash: the election (a new ready
    /// leader), then the last transaction in doubt at the crash resolved.
    fn recovery_check(&mut self, world: &mut World<BankMachine>) {
        let Some(mut r) = self.recovery else { return };
        let now = world.now_ns();
        let leader = world.hosts().find_map(|(_, h)| match h.role(r.group)? {
            Role::Leader { ready: true, .. }
                if h.id() != r.old_leader || r.elected_at.is_some() =>
            {
                Some(h)
            }
            _ => None,
        });
        if let Some(h) = leader {
            if r.elected_at.is_none() {
                r.elected_at = Some(now);
            }
            let in_doubt = match h.machine(r.group) {
                Some(Either::Right(c)) => !c.in_doubt(HlcTimestamp::ZERO).is_empty(),
                _ => true,
            };
            if !in_doubt {
                let elected = r.elected_at.unwrap_or(now) - r.crashed_at;
                self.recoveries.push((elected, now - r.crashed_at));
                self.recovery = None;
                return;
            }
        }
        if now - r.crashed_at > RECOVERY_GIVE_UP_NS {
            self.recovery = None;
            return;
        }
        self.recovery = Some(r);
        world.schedule_wake(now + RECOVERY_CHECK_NS, WAKE_RECOVERY);
    }

    fn participant_views<'a>(
        &self,
        world: &'a World<BankMachine>,
    ) -> Vec<(NodeId, GroupId, &'a ParticipantGroup)> {
        let mut out = Vec::new();
        for (_, h) in world.hosts() {
            for g in &self.participants {
                if let Some(Either::Left(p)) = h.machine(*g) {
                    out.push((h.id(), *g, p));
                }
            }
        }
        out
    }

    /// Every account's balance on the first live replica of its group, as applied (after
    /// healing every replica is equal).
    fn final_balances(&self, world: &World<BankMachine>) -> Result<BTreeMap<Key, i64>, Violation> {
        let mut out = BTreeMap::new();
        for account in self.bank.accounts() {
            let group = self.ranges.group_for(account);
            let view = world
                .hosts()
                .filter_map(|(_, h)| match h.machine(group) {
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

impl Workload for BankWorkload {
    type Machine = BankMachine;

    fn machines(&self) -> MachineFactory<BankMachine> {
        let participants = self.participants.clone();
        let ranges = self.ranges.clone();
        let map = self.map.clone();
        Box::new(move |group| {
            if participants.contains(&group) {
                let range = ranges
                    .iter()
                    .find(|(_, g)| *g == group)
                    .map(|(r, _)| r.clone())
                    .unwrap_or_else(KeyRange::full);
                let config = ParticipantConfig::default();
                Either::Left(ParticipantGroup::new(group, range, map.version(), config))
            } else {
                Either::Right(CoordinatorGroup::new(
                    group,
                    CoordinatorConfig::default(),
                    map.clone(),
                ))
            }
        })
    }

    fn entry_digest(payload: &EntryPayload) -> u64 {
        match payload {
            EntryPayload::Noop => 0,
            // The stamped command's bytes are its identity.
            EntryPayload::Command(bytes) => command_digest(bytes),
        }
    }

    fn snapshot_contents(data: &[u8]) -> Result<Vec<(LogIndex, u64)>, String> {
        // A participant's or coordinator's snapshot holds state, not commands: its replicas
        // are compared by digest (the world's final check and `healed`). `Either` tags a
        // snapshot with its kind: 1 participant, 2 coordinator.
        match data.first() {
            Some(1 | 2) => Ok(Vec::new()),
            _ => Err("snapshot of an unknown kind".into()),
        }
    }

    fn start(&mut self, world: &mut World<BankMachine>) -> Result<(), Violation> {
        if self.config.faults || self.config.recovery {
            let at = self.crash_rng.range(FIRST_CRASH_NS.0, FIRST_CRASH_NS.1);
            world.schedule_wake(at, WAKE_CRASH);
        }
        Ok(())
    }

    fn on_iteration(
        &mut self,
        world: &World<BankMachine>,
        node: usize,
        iteration: &Iteration<BankMachine>,
    ) -> Result<Option<CrashCut>, Violation> {
        if let Some(host) = world.host(node) {
            for (_, batch) in &iteration.sent {
                crate::check::p6_vote_after_apply::check(host.id(), batch, |g| host.machine(g))?;
            }
            // Votes to a coordinator group led on the same node never leave the host.
            crate::check::p6_vote_after_apply::check(host.id(), &iteration.local, |g| {
                host.machine(g)
            })?;
        }
        let Some(point) = self.crash_point_reached(world, node, iteration) else {
            return Ok(None);
        };
        self.armed = None;
        self.crash_points.insert(point);
        // How much of the iteration leaves before the crash.
        let (batches_kept, replies_kept) = match point {
            CRASH_AFTER_DECIDE => (0, false),
            CRASH_AFTER_REPLY => (0, true),
            CRASH_DURING_PHASE_TWO => (1, true),
            _ => (usize::MAX, true),
        };
        let down_ns = self.crash_rng.range(300_000_000, 3_000_000_000);
        Ok(Some(CrashCut { batches_kept, replies_kept, down_ns }))
    }

    fn on_note(
        &mut self,
        world: &mut World<BankMachine>,
        note: Note<BankMachine>,
    ) -> Result<(), Violation> {
        match note {
            Note::ClientDue => self.client_step(world),
            Note::Reply { tag, clock, response, .. } => {
                self.clients.on_reply(world.now_ns(), tag.0, clock, Ok(response))
            }
            Note::Refused { tag, clock, error, .. } => {
                self.clients.on_reply(world.now_ns(), tag.0, clock, Err(error))
            }
            Note::NodeDown(node) => {
                self.clients.node_down(world.node_id(node));
                Ok(())
            }
            Note::Applied { .. } => {
                self.maybe_crash_coordinator(world);
                Ok(())
            }
            Note::Wake { token: WAKE_CRASH } => {
                self.crash_due(world);
                Ok(())
            }
            Note::Wake { token: WAKE_RECOVERY } => {
                self.recovery_check(world);
                Ok(())
            }
            // The clients learn leaders from redirects; the driver runs the heal check.
            Note::LeaderSeen { .. } | Note::Wake { .. } | Note::HealCheckDue => Ok(()),
        }
    }

    fn heal_target(&self, world: &World<BankMachine>, group: GroupId) -> Option<LogIndex> {
        // Quiesced, a group's log stops growing: every replica must reach its furthest one.
        world.hosts().filter_map(|(_, h)| h.applied(group)).max()
    }

    fn heal_settled(&self, world: &World<BankMachine>) -> Result<(), Violation> {
        if !self.clients.all_resolved() {
            return Err(Violation {
                invariant: "healed: every transfer's outcome is known",
                detail: self.clients.unresolved_detail(),
            });
        }
        let mut hosts = Vec::new();
        for i in 0..world.nodes() {
            let Some(h) = world.host(i) else {
                return Err(Violation {
                    invariant: "healed: every node up",
                    detail: format!("{}", world.node_id(i)),
                });
            };
            hosts.push(h);
        }
        let views: Vec<_> = self
            .groups()
            .into_iter()
            .map(|g| {
                let replicas = hosts
                    .iter()
                    .filter_map(|h| Some((h.id(), h.machine(g)?, h.role(g)?, h.applied(g)?)))
                    .collect();
                (g, replicas)
            })
            .collect();
        crate::check::healed::check(&views)
    }

    fn final_checks(&self, world: &World<BankMachine>) -> Result<(), Violation> {
        crate::check::atomicity::check(&self.participant_views(world))?;
        crate::check::acked_commits::check(&self.clients, &self.final_balances(world)?)
    }

    fn acked(&self) -> usize {
        self.clients.count(TransferOutcome::Committed)
    }

    fn reads(&self) -> usize {
        self.clients.audits()
    }
}

/// The node index leading `group`, if a live node believes it does.
fn leader_index(world: &World<BankMachine>, group: GroupId) -> Option<usize> {
    world.hosts().find(|(_, h)| h.role(group).is_some_and(|r| r.is_leader())).map(|(i, _)| i)
}

/// The node leading `coordinator` and some participant group, if one does.
fn leader_of_both(
    world: &World<BankMachine>,
    coordinator: GroupId,
    participants: &[GroupId],
) -> Option<usize> {
    let c = leader_index(world, coordinator)?;
    participants.iter().any(|p| leader_index(world, *p) == Some(c)).then_some(c)
}

/// The groups of which `iteration` applied a `Decide` entry.
fn decides(iteration: &Iteration<BankMachine>) -> impl Iterator<Item = GroupId> + '_ {
    type Stamped = (HlcTimestamp, <BankMachine as ReplicatedMachine>::Command);
    iteration.observed.iter().flat_map(|output| {
        let (group, entries) = match output {
            Output::Apply { group, entries } => (Some(*group), entries.as_slice()),
            _ => (None, &[][..]),
        };
        entries.iter().filter_map(move |entry| {
            let EntryPayload::Command(bytes) = &entry.payload else { return None };
            match postcard::from_bytes::<Stamped>(bytes) {
                Ok((_, EitherCommand::Right(CoordinatorCommand::Decide { .. }))) => group,
                _ => None,
            }
        })
    })
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

/// Bank seeds that once failed, kept as regression tests, with what each found.
pub const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (
        45,
        "a leadership transfer to a crashed node: the leader refused the proposal of a \
         CommitLocal it had admitted, its lock-table entry stayed, and every later request \
         for those keys waited on it forever (the host now redirects requests while a \
         transfer is under way and holds machines' proposals until it ends)",
    ),
    (619, "the same, on another group"),
    (
        100324,
        "HLC-6: a clock echo held up 2.6 s in the network carried a reading from while the \
         peer's clock was stepped back, and with only that peer measured the node stopped \
         itself (round trips beyond 2 x max_offset are no longer kept)",
    ),
    (
        104895,
        "an fsync failure armed on a partitioned follower struck after the faults stopped, \
         during the leadership transfers of the healing phase (healing now disarms it)",
    ),
    (
        903610,
        "a node's clock stepped 1.75 s ahead just before healing: its HLC stayed ahead of \
         every peer's clock, they refused its transfer votes (HLC-3), and the transfer timed \
         out (transfers now wait until the stepped clock's effects are over)",
    ),
];
