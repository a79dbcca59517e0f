//! The world of a simulation: N real [`Host`]s (each with its Raft node, WAL and machines),
//! the seeded network, disks, per-node monotonic and physical clocks, the fault schedule, the
//! event queue, and the Raft-level checkers (election safety, leader append-only, log
//! matching, leader completeness, the commit rule, state machine safety, liveness after
//! healing, and leadership transfer once healed). It knows nothing of what the
//! machines do: a [`Workload`](crate::workload::Workload) sends the client requests, reads the
//! answers and checks what they promise.
//!
//! Snapshots are encoded as the node shell does, off the host's iteration: a snapshot job the
//! host hands out is completed (encoded and handed back) by an event after a seeded delay, so
//! applies, role changes, restores and crashes fall between a job and its completion in every
//! order the seeds find.
//!
//! The world talks to its workload through [`Note`]s: answers to client requests, leaders
//! seen, nodes gone down, entries applied, and the moments the workload is due (its client
//! tick, its own timers, the heal check). The driver ([`crate::sim::drive`]) hands them over
//! after every event. One hook runs inside an event: after every host iteration, before its
//! output leaves, the workload sees the [`Iteration`] and may crash the node there
//! ([`CrashCut`]: part of the output left, the rest dies with the node), which is how protocol
//! crash points are placed without the world knowing the protocol.

use std::collections::BTreeMap;

use decree_host::{
    ClientTag, Directory, Fatal, GroupSpec, Host, HostConfig, HostEnvelope, HostIo,
    ReplicatedMachine, SnapshotJob,
};
use decree_proto::ErrorResponse;
use decree_raft::core::{ReplicationState, Role};
use decree_raft::disk::MemDisk;
use decree_raft::node::{NodeConfig, Output};
use decree_raft::EntryPayload;
use decree_types::{ClientId, DetRng, GroupId, HlcTimestamp, LogIndex, NodeId};
use serde::Serialize;

use crate::check::commit_rule::CommitRule;
use crate::check::election_safety::ElectionSafety;
use crate::check::leader_append_only::LeaderAppendOnly;
use crate::check::leader_completeness::CommittedEntries;
use crate::check::liveness::{self, ReplicaView};
use crate::check::state_machine_safety::StateMachineSafety;
use crate::check::transfer_completes::TransferCompletes;
use crate::check::{leader_completeness, log_matching, LogSummary, Violation};
use crate::clock::SimClock;
use crate::faults::{CrashKind, Fault, FaultPlan};
use crate::network::{Arrival, Network};
use crate::sim::SimConfig;
use crate::trace::{Trace, TraceEvent, Traffic};

/// How a node's `tick` is paced, in global ns.
pub const TICK_NS: u64 = 10_000_000;
/// How often logs are compared (INV-R3), in global ns.
pub(crate) const LOG_CHECK_NS: u64 = 250_000_000;
/// How often convergence is checked while healing, in global ns.
const HEAL_CHECK_NS: u64 = 50_000_000;
/// A clogged batch is retried this often, in global ns.
const CLOG_RETRY_NS: u64 = 20_000_000;
/// The most a node waits between an input and the `process` call that handles it, in ns: the
/// inputs that arrive meanwhile share one iteration (and one fsync).
const PROCESS_DELAY_MAX_NS: u64 = 300_000;
/// How often each host probes its peers' clocks (HLC-6), ns.
const CLOCK_PROBE_INTERVAL_NS: u64 = 100_000_000;
/// How long an offset measurement counts (ten probe rounds), plus a round of slack, ns.
const MEASUREMENT_LIFE_NS: u64 = 11 * CLOCK_PROBE_INTERVAL_NS;
/// One delivery in this many is replayed by an impostor during the faulty phase.
const FORGERY_ONE_IN: u64 = 500;
/// How long a physical clock stays out of its bound, ns (range).
const WALL_VIOLATION_NS: (u64, u64) = (500_000_000, 4_000_000_000);
/// The most a snapshot job waits before its encoded bytes come back to the host, ns: long
/// enough for entries, elections and snapshot installs to happen meanwhile.
const SNAPSHOT_ENCODE_DELAY_MAX_NS: u64 = 200_000_000;
/// Mixed into the seed for the stream of snapshot delays, so that the other streams draw
/// what they drew before snapshots were encoded off the iteration.
const SNAPSHOT_STREAM: u64 = 0x736e_6170_7669_6577;

/// Reads the `(index, digest)` of every command an encoded snapshot holds.
pub type SnapshotContents = fn(&[u8]) -> Result<Vec<(LogIndex, u64)>, String>;

/// A fresh machine for a group, each time a node starts.
pub type MachineFactory<M> = Box<dyn Fn(GroupId) -> M>;

/// The workload's look at one host iteration before its output leaves (see the module docs):
/// may crash the node right there.
pub type IterationHook<'a, M> =
    dyn FnMut(&World<M>, usize, &Iteration<M>) -> Result<Option<CrashCut>, Violation> + 'a;

/// A crash placed inside an iteration: only part of its output leaves, then the node is
/// killed (its disk keeps what it synced) and restarts after `down_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashCut {
    /// How many of the iteration's batches (in send order) leave before the crash.
    pub batches_kept: usize,
    /// Do the iteration's answers to clients leave?
    pub replies_kept: bool,
    /// How long the node stays down, ns.
    pub down_ns: u64,
}

/// What the world tells its workload.
#[derive(Debug)]
pub enum Note<M: ReplicatedMachine> {
    /// The workload's client tick is due ([`World::schedule_client`] sets the next one).
    ClientDue,
    /// Time to check convergence after healing ([`World::heal_check`]).
    HealCheckDue,
    /// Node `node` answered the client request `tag`.
    Reply {
        /// The node (index).
        node: usize,
        /// The request.
        tag: ClientTag,
        /// The node's HLC reading.
        clock: HlcTimestamp,
        /// The answer.
        response: M::Response,
        /// What the host had applied of each group when it answered.
        applied: Vec<(GroupId, LogIndex)>,
    },
    /// Node `node`'s host refused request `tag` without asking a machine.
    Refused {
        /// The node (index).
        node: usize,
        /// The request.
        tag: ClientTag,
        /// The node's HLC reading.
        clock: HlcTimestamp,
        /// Why.
        error: ErrorResponse,
    },
    /// A replica names `leader` as the leader of `group`.
    LeaderSeen {
        /// The group.
        group: GroupId,
        /// Its leader.
        leader: NodeId,
    },
    /// Node `node` went down: requests waiting on it have unknown outcomes.
    NodeDown(usize),
    /// Node `node` applied entries in its last iteration (whose output has left).
    Applied {
        /// The node (index).
        node: usize,
    },
    /// A timer the workload set ([`World::schedule_wake`]) is due.
    Wake {
        /// What the workload said it is for.
        token: u64,
    },
}

/// The phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Faults strike.
    Faulty,
    /// Faults off, links healed, every node up: the cluster must converge.
    Healing {
        /// When healing began (global ns).
        since_ns: u64,
    },
    /// Converged.
    Done,
}

/// What happens next. `SnapshotEncoded` hands a snapshot job of node `node`'s host back to it,
/// encoded (dropped if that incarnation is gone).
#[derive(Debug)]
pub(crate) enum Event<M: ReplicatedMachine> {
    Deliver { from: usize, to: usize, batch: Vec<HostEnvelope<M>> },
    WallStep { node: usize, delta_ns: i64 },
    Tick { node: usize, incarnation: u64 },
    Process { node: usize, incarnation: u64 },
    Restart { node: usize },
    Fault(Fault),
    NextFault,
    Unpartition { generation: u64 },
    Clog { node: usize, on: bool },
    Client,
    Wake(u64),
    LogCheck,
    Heal,
    HealCheck,
    SnapshotEncoded { node: usize, incarnation: u64, job: SnapshotJob<M> },
}

struct Slot<M: ReplicatedMachine> {
    id: NodeId,
    node: Option<Host<MemDisk, M>>,
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

/// The seeded shape of a world, decided before it is built.
#[derive(Debug)]
pub struct Shape {
    /// The groups, each with a replica on every node.
    pub groups: Vec<GroupId>,
    /// The Raft and WAL settings.
    pub node_config: NodeConfig,
    /// Take a snapshot every this many applied entries (`None`: never).
    pub snapshot_every: Option<u64>,
    /// The fault schedule.
    pub plan: FaultPlan,
    /// Length of the faulty phase, ns.
    pub faulty_ns: u64,
}

/// The world: see the module docs.
pub struct World<M: ReplicatedMachine> {
    pub(crate) config: SimConfig,
    pub(crate) now_ns: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event<M>>,
    net: Network,
    slots: Vec<Slot<M>>,
    groups: Vec<(GroupId, Vec<NodeId>)>,
    /// A fresh machine for a group.
    machine: MachineFactory<M>,
    node_config: NodeConfig,
    snapshot_every: Option<u64>,
    plan: FaultPlan,
    faulty_end_ns: u64,
    phase: Phase,
    partition_generation: u64,
    pub(crate) crashes: usize,
    pub(crate) refused_starts: usize,
    pub(crate) wall_violations: usize,
    pub(crate) clock_stops: usize,
    /// Batches replayed by an impostor (and refused).
    pub(crate) forgeries: usize,
    fault_rng: DetRng,
    wall_rng: DetRng,
    /// Until when an HLC-6 stop is expected: the end of the last physical clock violation,
    /// plus the life of the measurements taken during it.
    wall_suspect_until_ns: u64,
    sched_rng: DetRng,
    /// Delays of snapshot encodings (a stream of its own).
    snapshot_rng: DetRng,
    pub(crate) trace: Trace,
    pub(crate) election_safety: ElectionSafety,
    sms: StateMachineSafety,
    append_only: LeaderAppendOnly,
    commit_rule: CommitRule,
    /// What leaders declared committed (INV-R4 keyed on commit).
    leader_commits: CommittedEntries,
    transfers: TransferCompletes,
    /// The identity of an entry's payload for the Raft checkers (the workload's encoding).
    entry_digest: fn(&EntryPayload) -> u64,
    /// The `(index, digest)` of every command a snapshot holds (the workload's encoding).
    snapshot_contents: SnapshotContents,
    notes: Vec<Note<M>>,
}

impl<M: ReplicatedMachine> World<M>
where
    M::Request: Serialize,
    M::Response: Serialize,
{
    /// A world of `config.nodes` nodes with `shape`, whose groups run the machines `machine`
    /// makes (a fresh one each time a node starts). `rngs` are the world's streams, forked
    /// from the seed by the caller in a fixed order: network, faults, scheduling, nodes,
    /// physical clocks.
    #[allow(clippy::too_many_arguments, reason = "the world's parts, each named")]
    pub(crate) fn new(
        config: SimConfig,
        shape: Shape,
        machine: MachineFactory<M>,
        net: Network,
        fault_rng: DetRng,
        sched_rng: DetRng,
        mut node_rng: DetRng,
        mut wall_rng: DetRng,
        entry_digest: fn(&EntryPayload) -> u64,
        snapshot_contents: SnapshotContents,
    ) -> Self {
        let n = config.nodes;
        let voters: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let groups = shape.groups.iter().map(|&g| (g, voters.clone())).collect();
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
        let verbose = config.verbose;
        World {
            now_ns: 0,
            seq: 0,
            queue: BTreeMap::new(),
            net,
            slots,
            groups,
            machine,
            node_config: shape.node_config,
            snapshot_every: shape.snapshot_every,
            plan: shape.plan,
            faulty_end_ns: shape.faulty_ns,
            phase: Phase::Faulty,
            partition_generation: 0,
            crashes: 0,
            refused_starts: 0,
            wall_violations: 0,
            clock_stops: 0,
            forgeries: 0,
            fault_rng,
            wall_rng,
            wall_suspect_until_ns: 0,
            sched_rng,
            snapshot_rng: DetRng::new(config.seed ^ SNAPSHOT_STREAM),
            trace: Trace::new(verbose),
            election_safety: ElectionSafety::default(),
            sms: StateMachineSafety::default(),
            append_only: LeaderAppendOnly::default(),
            commit_rule: CommitRule::default(),
            leader_commits: CommittedEntries::default(),
            transfers: TransferCompletes::default(),
            entry_digest,
            snapshot_contents,
            notes: Vec::new(),
            config,
        }
    }

    /// Starts every node and schedules the first of everything.
    pub(crate) fn start(&mut self) -> Result<(), Violation> {
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
        Ok(())
    }

    /// Runs the next event, showing every host iteration to `hook` before its output leaves;
    /// `Ok(false)` once the run is over.
    pub(crate) fn step(&mut self, hook: &mut IterationHook<'_, M>) -> Result<bool, Violation> {
        if self.phase == Phase::Done {
            return Ok(false);
        }
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return Err(Violation { invariant: "simulator", detail: "event queue ran dry".into() });
        };
        debug_assert!(at >= self.now_ns, "time never goes back");
        self.now_ns = at;
        match event {
            Event::Process { node, incarnation } => {
                if self.slots[node].incarnation == incarnation {
                    self.slots[node].process_scheduled = false;
                    self.process(node, hook)?;
                }
            }
            other => self.handle(other)?,
        }
        Ok(true)
    }

    /// What happened for the workload since the last call.
    pub(crate) fn take_notes(&mut self) -> Vec<Note<M>> {
        std::mem::take(&mut self.notes)
    }

    fn schedule(&mut self, at_ns: u64, event: Event<M>) {
        self.seq += 1;
        self.queue.insert((at_ns, self.seq), event);
    }

    // ----- what a workload may use -----

    /// Global simulated time, ns.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The phase of the run.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The run's settings.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The longest election timeout of the run's Raft settings, ns.
    pub fn election_timeout_max_ns(&self) -> u64 {
        duration_ns(self.node_config.raft.election_timeout_max)
    }

    /// Leadership transfers that completed after healing (RAFT-6).
    pub fn transfers_completed(&self) -> usize {
        self.transfers.completed()
    }

    /// The scheduling stream (client gaps, read choices share it with process delays).
    pub fn sched_rng(&mut self) -> &mut DetRng {
        &mut self.sched_rng
    }

    /// The groups, in order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.groups.iter().map(|g| g.0).collect()
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.slots.len()
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.slots[i].id
    }

    /// Node `i`'s host, if it is up.
    pub fn host(&self, i: usize) -> Option<&Host<MemDisk, M>> {
        self.slots[i].node.as_ref()
    }

    /// Every live host, with its node index.
    pub fn hosts(&self) -> impl Iterator<Item = (usize, &Host<MemDisk, M>)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.node.as_ref().map(|h| (i, h)))
    }

    /// The entries known committed (INV-R5), for checkers of what clients were told.
    pub fn committed(&self) -> &StateMachineSafety {
        &self.sms
    }

    /// Records an event in the trace.
    pub fn record(&mut self, event: &TraceEvent<'_>) {
        self.trace.record(self.now_ns, event);
    }

    /// The workload's next client tick, at global time `at_ns`.
    pub fn schedule_client(&mut self, at_ns: u64) {
        self.schedule(at_ns, Event::Client);
    }

    /// A [`Note::Wake`] with `token` at global time `at_ns`.
    pub fn schedule_wake(&mut self, at_ns: u64, token: u64) {
        self.schedule(at_ns, Event::Wake(token));
    }

    /// Crashes node `i` (if up) the way `kind` says, for the workload (`why` goes to the
    /// trace); it restarts after `down_ns`. Healing restarts it sooner.
    pub fn crash_node(&mut self, i: usize, kind: CrashKind, down_ns: u64, why: &str) {
        if self.slots[i].node.is_none() {
            return;
        }
        let what = format!("crash n{} ({kind:?}, {} ms): {why}", i + 1, down_ns / 1_000_000);
        self.trace.record(self.now_ns, &TraceEvent::Fault { what: &what });
        self.crash(i, kind, down_ns);
    }

    /// A client request to node `i`'s host, carrying the client's clock; `false` if the
    /// node is down (nothing was sent).
    pub fn client_request(
        &mut self,
        i: usize,
        tag: ClientTag,
        clock: HlcTimestamp,
        group: GroupId,
        request: M::Request,
    ) -> bool {
        let (local, wall) = (self.local_ns(i), self.wall_ns(i));
        let Some(host) = self.slots[i].node.as_mut() else { return false };
        host.handle_client_request(local, wall, ClientId(1), tag, clock, group, request);
        self.want_process(i);
        true
    }

    pub(crate) fn handle(&mut self, event: Event<M>) -> Result<(), Violation> {
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
            // `step` runs the iterations, with the workload's hook.
            Event::Process { .. } => Ok(()),
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
            Event::Client => {
                self.notes.push(Note::ClientDue);
                Ok(())
            }
            Event::Wake(token) => {
                self.notes.push(Note::Wake { token });
                Ok(())
            }
            Event::LogCheck => {
                self.check_logs()?;
                for i in 0..self.slots.len() {
                    self.observe_leader(i, true)?;
                }
                self.schedule(self.now_ns + LOG_CHECK_NS, Event::LogCheck);
                Ok(())
            }
            Event::SnapshotEncoded { node, incarnation, job } => {
                self.snapshot_encoded(node, incarnation, job)
            }
            Event::Heal => self.heal(),
            Event::HealCheck => {
                self.notes.push(Note::HealCheckDue);
                Ok(())
            }
        }
    }

    // ----- nodes -----

    pub(crate) fn local_ns(&self, node: usize) -> u64 {
        self.slots[node].clock.local_ns(self.now_ns)
    }

    pub(crate) fn wall_ns(&self, node: usize) -> u64 {
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
                machine: (self.machine)(*group),
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
        self.notes.push(Note::NodeDown(i));
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

    fn process(&mut self, i: usize, hook: &mut IterationHook<'_, M>) -> Result<(), Violation> {
        let (local, wall) = (self.local_ns(i), self.wall_ns(i));
        let Some(host) = self.slots[i].node.as_mut() else { return Ok(()) };
        let mut io = Iteration::default();
        // What was sent and answered before a failure stands: it really left the node.
        let result = host.process(local, wall, &mut io);
        let more = host.has_work();
        // Each message must be one the wire accepts (the QUIC shell encodes it with these
        // bounds and drops what fails: a message built over a bound would be lost every time
        // it is retried).
        for (to, batch) in &io.sent {
            for envelope in batch {
                if let Err(e) = envelope.payload.validate_transport() {
                    return Err(Violation {
                        invariant: "every message a node sends is one the wire accepts",
                        detail: format!("{} to {to}: {e}", self.slots[i].id),
                    });
                }
            }
        }
        // A crash the workload places here decides how much of the output leaves; a node
        // that stopped on its own is not crashed again.
        let cut = if result.is_ok() { hook(self, i, &io)? } else { None };
        let (batches_kept, replies_kept) =
            cut.map_or((usize::MAX, true), |c| (c.batches_kept, c.replies_kept));
        let sent = std::mem::take(&mut io.sent);
        for (to, batch) in sent.into_iter().take(batches_kept) {
            self.send(i, to, batch);
        }
        let applied_any = io.observed.iter().any(|o| matches!(o, Output::Apply { .. }));
        self.handle_outputs(i, io.observed)?;
        if !replies_kept {
            io.replies.clear();
        }
        let incarnation = self.slots[i].incarnation;
        for job in std::mem::take(&mut io.snapshots) {
            let delay = self.snapshot_rng.range(0, SNAPSHOT_ENCODE_DELAY_MAX_NS);
            self.schedule(
                self.now_ns + delay,
                Event::SnapshotEncoded { node: i, incarnation, job },
            );
        }
        // What the host had applied when it answered (it may be gone by the time the
        // workload reads the note: a fatal error below).
        let applied: Vec<(GroupId, LogIndex)> = match self.slots[i].node.as_ref() {
            Some(host) if !io.replies.is_empty() => self
                .groups
                .iter()
                .map(|(g, _)| (*g, host.applied(*g).unwrap_or_default()))
                .collect(),
            _ => Vec::new(),
        };
        for (tag, clock, response) in io.replies {
            let applied = applied.clone();
            self.notes.push(Note::Reply { node: i, tag, clock, response, applied });
        }
        for (tag, clock, error) in io.refusals {
            self.notes.push(Note::Refused { node: i, tag, clock, error });
        }
        match result {
            Ok(()) => {
                self.observe_leader(i, false)?;
                if let Some(cut) = cut {
                    self.crash_node(i, CrashKind::Kill, cut.down_ns, "a crash point");
                    return Ok(());
                }
                if applied_any {
                    self.notes.push(Note::Applied { node: i });
                }
                if more {
                    self.want_process(i);
                }
                Ok(())
            }
            Err(fatal) => self.on_fatal(i, &fatal),
        }
    }

    /// A snapshot job's bytes, back to the host that handed it out. The node may refuse them
    /// (the group restored a newer snapshot meanwhile); storing them may hit an injected
    /// disk failure.
    fn snapshot_encoded(
        &mut self,
        i: usize,
        incarnation: u64,
        job: SnapshotJob<M>,
    ) -> Result<(), Violation> {
        if self.slots[i].incarnation != incarnation {
            return Ok(());
        }
        let Some(host) = self.slots[i].node.as_mut() else { return Ok(()) };
        match host.snapshot_encoded(job.group, job.index, job.encode()) {
            Ok(_) => Ok(()),
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

    fn send(&mut self, from: usize, to: NodeId, batch: Vec<HostEnvelope<M>>) {
        let to_i = (to.0 as usize).wrapping_sub(1);
        if to_i >= self.slots.len() {
            return;
        }
        let arrivals = self.net.plan(self.now_ns, from, to_i);
        let ev = Traffic::Send {
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
        batch: Vec<HostEnvelope<M>>,
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
            Traffic::Deliver { from: self.slots[from].id, to: self.slots[to].id, batch: &batch };
        self.trace.record(self.now_ns, &ev);
        let (local, wall) = (self.local_ns(to), self.wall_ns(to));
        let from_id = self.slots[from].id;
        // Now and then in the faulty phase, a peer with a valid certificate replays the
        // batch claiming to be another node: the host must refuse every envelope of it.
        let forge = self.config.faults
            && self.phase == Phase::Faulty
            && self.slots.len() > 2
            && self.wall_rng.chance(1, FORGERY_ONE_IN);
        let n_nodes = self.slots.len() as u64;
        if let Some(n) = self.slots[to].node.as_mut() {
            // A host that stopped (HLC-6 in its timer, before the world saw it) takes nothing
            // and counts nothing: the forgery would prove nothing there.
            if forge && n.stopped().is_none() {
                let impostor = NodeId(from_id.0 % n_nodes + 1);
                let impostor =
                    if impostor == n.id() { NodeId(impostor.0 % n_nodes + 1) } else { impostor };
                let before = n.stats().refused;
                for envelope in &batch {
                    n.handle_envelope(local, wall, impostor, envelope.clone());
                }
                if n.stats().refused != before + batch.len() as u64 {
                    return Err(Violation {
                        invariant: "an envelope is taken only from the node its certificate names",
                        detail: format!("{to} took envelopes of {from_id} from {impostor}"),
                    });
                }
                self.forgeries += 1;
            }
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
                        self.notes.push(Note::LeaderSeen { group, leader });
                    }
                    if state.is_leader {
                        self.election_safety.on_leader(group, state.term, id)?;
                        let log = self.log_summary(i, group);
                        leader_completeness::check_new_leader(
                            group,
                            state.term,
                            &log,
                            &self.sms,
                            &self.leader_commits,
                        )?;
                        self.transfers.on_leader(group, id);
                    }
                    self.check_group_logs(group)?;
                }
                Output::Restore { group, meta, data } => {
                    let ev = TraceEvent::Restore { node: id, group, index: meta.last_index };
                    self.trace.record(self.now_ns, &ev);
                    let contents = (self.snapshot_contents)(&data).map_err(|e| Violation {
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
                        let digest = (self.entry_digest)(&entry.payload);
                        self.sms.on_apply(id, group, entry.index, entry.term, digest)?;
                    }
                }
                // The host serves reads; the client checks what it was told.
                Output::Read { .. } | Output::ReadFailed { .. } => {}
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
                .map(|e| (e.index, e.term, (self.entry_digest)(&e.payload)))
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
        let Some(host) = slot.node.as_ref() else { return Ok(()) };
        for (group, _) in &self.groups {
            let Some(core) = host.node().core(*group) else { continue };
            self.append_only.observe(slot.id, *group, core, full, self.entry_digest)?;
            self.commit_rule.observe(slot.id, *group, core)?;
            self.leader_commits.observe(slot.id, *group, core, self.entry_digest)?;
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
            // An fsync failure armed on a node that has not synced since (a partitioned
            // follower) would strike after the faults stopped: disarm it.
            if std::mem::take(&mut self.slots[i].fsync_armed) {
                self.slots[i].disk.fail_nth_sync(0);
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i].node.is_none() {
                self.start_node(i)?;
            }
        }
        self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
        Ok(())
    }

    /// Is every group converged (one leader, every replica at `required(group)`) and has the
    /// workload `settled` what it checks while healing (its pending answers came)? Then each
    /// group's leader hands leadership to a caught-up follower, which must lead within an
    /// election timeout (RAFT-6); the run ends once every transfer completed. Fails when the
    /// bound passed.
    pub(crate) fn heal_check(
        &mut self,
        required: impl Fn(GroupId) -> Option<LogIndex>,
        settled: Result<(), Violation>,
    ) -> Result<(), Violation> {
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
                        is_leader: st.role == Role::Leader,
                        applied: host.applied(*group).unwrap_or_default(),
                    })
                })
                .collect();
            if views.len() != self.slots.len() {
                pending = Some((*group, "a node is down".to_string()));
                break;
            }
            if let Err(why) = liveness::converged(*group, &views, required(*group)) {
                pending = Some((*group, why));
                break;
            }
        }
        self.transfers.check(self.now_ns)?;
        let out_of_time = self.now_ns - since_ns > self.config.heal_bound_ms * 1_000_000;
        match pending {
            // The workload's check comes before the transfers, whose leader changes would
            // fail what is still waiting.
            None if !self.transfers.started() && settled.is_err() => {
                if out_of_time {
                    return settled;
                }
                self.schedule(self.now_ns + HEAL_CHECK_NS, Event::HealCheck);
                Ok(())
            }
            None if !self.transfers.started() && self.now_ns <= self.wall_suspect_until_ns => {
                // A node whose physical clock was stepped ahead issued HLC timestamps ahead
                // of every other clock; until physical time catches up, its peers refuse its
                // messages (HLC-3), votes of a transfer included. Transfers wait for that.
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
        let bound_ns = self.election_timeout_max_ns();
        let n = self.slots.len();
        for g in 0..self.groups.len() {
            let group = self.groups[g].0;
            let Some((leader, status)) = (0..n).find_map(|i| {
                let status = self.slots[i].node.as_ref()?.node().status(group)?;
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
            let Some(host) = self.slots[leader].node.as_mut() else { continue };
            if host.transfer_leadership(local, group, target_id).is_ok() {
                self.transfers.on_start(group, target_id, self.now_ns + bound_ns);
                self.want_process(leader);
            }
        }
    }

    /// End of run: log matching, and replicas that applied the same entries agree.
    pub(crate) fn final_checks(&self) -> Result<(), Violation> {
        self.check_logs()?;
        for (group, _) in &self.groups {
            let mut digests: BTreeMap<LogIndex, (NodeId, u64)> = BTreeMap::new();
            for slot in &self.slots {
                let Some(host) = slot.node.as_ref() else { continue };
                let (Some(applied), Some(machine)) = (host.applied(*group), host.machine(*group))
                else {
                    continue;
                };
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
            }
        }
        Ok(())
    }
}

impl<M: ReplicatedMachine> std::fmt::Debug for World<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now_ns", &self.now_ns)
            .field("phase", &self.phase)
            .field("nodes", &self.slots.len())
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Every host output of one `process` call.
#[derive(Debug)]
pub struct Iteration<M: ReplicatedMachine> {
    /// Batches to send, by destination, in send order.
    pub sent: Vec<(NodeId, Vec<HostEnvelope<M>>)>,
    /// Answers to clients.
    pub replies: Vec<(ClientTag, HlcTimestamp, M::Response)>,
    /// Client requests the host refused.
    pub refusals: Vec<(ClientTag, HlcTimestamp, ErrorResponse)>,
    /// The node's outputs (roles, restores, applied entries).
    pub observed: Vec<Output>,
    /// Envelopes the host delivered to its own node (they never reach the network).
    pub local: Vec<HostEnvelope<M>>,
    /// Snapshot jobs, completed by the world after a seeded delay.
    pub snapshots: Vec<SnapshotJob<M>>,
}

impl<M: ReplicatedMachine> Default for Iteration<M> {
    fn default() -> Self {
        Iteration {
            sent: Vec::new(),
            replies: Vec::new(),
            refusals: Vec::new(),
            observed: Vec::new(),
            local: Vec::new(),
            snapshots: Vec::new(),
        }
    }
}

impl<M: ReplicatedMachine> HostIo<M> for Iteration<M> {
    fn snapshot(&mut self, job: SnapshotJob<M>) {
        self.snapshots.push(job);
    }

    fn send(&mut self, to: NodeId, envelopes: Vec<HostEnvelope<M>>) {
        self.sent.push((to, envelopes));
    }

    fn reply(&mut self, client: ClientTag, clock: HlcTimestamp, response: M::Response) {
        self.replies.push((client, clock, response));
    }

    fn refuse(&mut self, client: ClientTag, clock: HlcTimestamp, error: ErrorResponse) {
        self.refusals.push((client, clock, error));
    }

    fn observe(&mut self, output: &Output) {
        self.observed.push(output.clone());
    }

    fn observe_local(&mut self, envelope: &HostEnvelope<M>) {
        self.local.push(envelope.clone());
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
